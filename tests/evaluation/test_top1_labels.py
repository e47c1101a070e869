"""zsdet.evaluation.top1_labels: the top-1 label of each GT object, on hand-made detections."""
import math

import numpy as np
import pytest

from zsdet.evaluation.top1_labels import (
    GROUPS,
    OUTCOMES,
    plot_top1_confusion,
    top1_classes,
    top1_key,
    top1_labels,
)
from zsdet.evaluation.zsd_metrics import Detections, GroundTruth

# Classes 0, 1 seen; 2, 3 unseen.
IS_UNSEEN = np.array([False, False, True, True])
NAMES = ["red circle", "green circle", "green triangle", "yellow cross"]
BOX = [10.0, 10.0, 50.0, 50.0]
SHIFTED = [12.0, 10.0, 52.0, 50.0]  # IoU 0.905 with BOX
FAR = [60.0, 60.0, 90.0, 90.0]  # IoU 0 with BOX


def dets(*rows):
    """rows: (image, box, score, class)."""
    image_ids, boxes, scores, classes = zip(*rows)
    return Detections(image_ids, boxes, scores, classes)


def gt(*rows):
    """rows: (image, box, class[, crowd])."""
    rows = [r if len(r) == 4 else (*r, False) for r in rows]
    image_ids, boxes, classes, ignore = zip(*rows)
    return GroundTruth(image_ids, boxes, classes, ignore)


def outcome_of(top1, group):
    counts = top1.outcome_counts()[GROUPS.index(group)]
    return {o: int(c) for o, c in zip(OUTCOMES, counts) if c}


def test_object_with_two_labels_gets_the_higher_scoring_one():
    """An unseen object detected as a seen class (0.9) and as itself (0.6): labelled seen."""
    result = top1_labels(dets((0, BOX, 0.6, 2), (0, SHIFTED, 0.9, 1)), gt((0, BOX, 2)), IS_UNSEEN)
    assert outcome_of(result, "unseen") == {"other_group": 1}
    assert result.confusion[2, 1] == 1 and result.confusion.sum() == 1
    swapped = top1_labels(dets((0, BOX, 0.9, 2), (0, SHIFTED, 0.6, 1)), gt((0, BOX, 2)), IS_UNSEEN)
    assert outcome_of(swapped, "unseen") == {"correct": 1}


def test_wrong_class_of_the_same_group():
    result = top1_labels(dets((0, BOX, 0.8, 3), (1, BOX, 0.8, 1)),
                         gt((0, BOX, 2), (1, BOX, 0)), IS_UNSEEN)
    assert outcome_of(result, "unseen") == {"same_group": 1}
    assert outcome_of(result, "seen") == {"same_group": 1}


def test_object_without_a_detection_above_the_iou_threshold_is_absent():
    low_iou = [10.0, 10.0, 50.0, 25.0]  # IoU 0.375 with BOX
    result = top1_labels(dets((0, FAR, 0.9, 0), (0, low_iou, 0.9, 0), (1, BOX, 0.9, 0)),
                         gt((0, BOX, 0), (2, BOX, 3)), IS_UNSEEN)
    assert outcome_of(result, "seen") == {"absent": 1}  # image 0: nothing covers it
    assert outcome_of(result, "unseen") == {"absent": 1}  # image 2: no detection at all
    assert result.confusion[0, 4] == 1 and result.confusion[3, 4] == 1
    # A detection in another image never labels an object, even at the same coordinates.
    assert top1_classes(dets((1, BOX, 0.9, 0)), gt((0, BOX, 0))).tolist() == [-1]


def test_crowd_boxes_are_not_counted_and_do_not_block():
    result = top1_labels(dets((0, BOX, 0.9, 1), (0, FAR, 0.7, 0)),
                         gt((0, BOX, 1, True), (0, BOX, 1), (0, FAR, 3, True)), IS_UNSEEN)
    assert result.num_objects() == {"seen": 1, "unseen": 0}
    assert outcome_of(result, "seen") == {"correct": 1}
    summary = result.summary()
    assert summary[top1_key("seen", "correct")] == 100.0
    assert all(math.isnan(summary[top1_key("unseen", o)]) for o in OUTCOMES)


def test_ties_in_score_go_to_the_higher_iou_then_to_the_earlier_row():
    tie_on_score = dets((0, SHIFTED, 0.7, 1), (0, BOX, 0.7, 2))  # class 2 overlaps exactly
    assert top1_classes(tie_on_score, gt((0, BOX, 2))).tolist() == [2]
    tie_on_both = dets((0, BOX, 0.7, 3), (0, BOX, 0.7, 2))
    assert top1_classes(tie_on_both, gt((0, BOX, 2))).tolist() == [3]
    reordered = dets((0, BOX, 0.7, 2), (0, BOX, 0.7, 3))
    assert top1_classes(reordered, gt((0, BOX, 2))).tolist() == [2]


def test_one_detection_labels_every_object_it_covers():
    result = top1_labels(dets((0, BOX, 0.9, 0)), gt((0, BOX, 0), (0, SHIFTED, 1)), IS_UNSEEN)
    assert outcome_of(result, "seen") == {"correct": 1, "same_group": 1}


def test_only_the_best_detections_of_an_image_label_objects():
    """Like Recall@100, only the ``max_dets_per_image`` highest-scoring detections count."""
    detections = dets((0, FAR, 0.9, 0), (0, BOX, 0.5, 2))
    assert outcome_of(top1_labels(detections, gt((0, BOX, 2)), IS_UNSEEN), "unseen") == {
        "correct": 1}
    assert outcome_of(top1_labels(detections, gt((0, BOX, 2)), IS_UNSEEN,
                                  max_dets_per_image=1), "unseen") == {"absent": 1}


def test_summary_gives_percent_of_each_group_adding_to_100():
    detections = dets((0, BOX, 0.9, 0), (1, BOX, 0.9, 2), (2, BOX, 0.9, 0), (3, BOX, 0.9, 2))
    result = top1_labels(detections, gt((0, BOX, 0), (1, BOX, 1), (2, BOX, 2), (3, BOX, 2),
                                        (4, BOX, 3)), IS_UNSEEN)
    summary = result.summary()
    assert set(summary) == {f"top1_{g}_{o}" for g in GROUPS for o in OUTCOMES}
    assert summary["top1_seen_correct"] == 50.0 and summary["top1_seen_other_group"] == 50.0
    assert summary["top1_unseen_correct"] == pytest.approx(100 / 3)
    assert summary["top1_unseen_other_group"] == pytest.approx(100 / 3)
    assert summary["top1_unseen_absent"] == pytest.approx(100 / 3)
    for g in GROUPS:
        assert sum(summary[top1_key(g, o)] for o in OUTCOMES) == pytest.approx(100.0)


def test_matches_a_per_object_reference_in_any_chunking():
    rng = np.random.default_rng(0)
    n_img, n_det, n_gt = 12, 300, 40
    xy = rng.uniform(0, 60, (n_det, 2))
    det_set = Detections(rng.integers(0, n_img, n_det),
                         np.hstack([xy, xy + rng.uniform(10, 40, (n_det, 2))]),
                         rng.integers(0, 20, n_det) / 20.0,  # many ties in score
                         rng.integers(0, 4, n_det))
    gxy = rng.uniform(0, 60, (n_gt, 2))
    gt_set = GroundTruth(rng.integers(0, n_img + 2, n_gt),
                         np.hstack([gxy, gxy + rng.uniform(10, 40, (n_gt, 2))]),
                         rng.integers(0, 4, n_gt), np.zeros(n_gt, bool))

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
        return inter / (area(a) + area(b) - inter)

    expected = []
    for g in range(n_gt):  # the reference: a plain loop over objects and detections
        best, best_key = -1, None
        for d in range(n_det):
            if det_set.image_ids[d] != gt_set.image_ids[g]:
                continue
            o = iou(det_set.boxes[d], gt_set.boxes[g])
            key = (-det_set.scores[d], -o, d)
            if o >= 0.5 - 1e-6 and (best_key is None or key < best_key):
                best, best_key = det_set.classes[d], key
        expected.append(best)
    assert 0 < sum(e >= 0 for e in expected) < n_gt
    for max_pairs in (1, 7, 1 << 22):
        assert top1_classes(det_set, gt_set, 0.5, max_pairs=max_pairs).tolist() == expected


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="class id 7"):
        top1_labels(dets((0, BOX, 0.9, 7)), gt((0, BOX, 0)), IS_UNSEEN)
    with pytest.raises(ValueError, match="IoU threshold"):
        top1_classes(dets((0, BOX, 0.9, 0)), gt((0, BOX, 0)), iou_threshold=0)


def test_confusion_plot_is_written(tmp_path):
    result = top1_labels(dets((0, BOX, 0.9, 1), (1, BOX, 0.9, 2)),
                         gt((0, BOX, 2), (1, BOX, 2), (2, BOX, 0)), IS_UNSEEN)
    path = tmp_path / "sub" / "top1.png"
    plot_top1_confusion(str(path), result, NAMES)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left


def test_gzsd_evaluation_reports_the_top1_figures(tmp_path):
    """The shared ZSD / GZSD evaluation adds the summary to GZSD figures and writes its files."""
    from zsdet.engine.zsd_report import format_results_table
    from zsdet.evaluation.zsd_evaluator import evaluate_and_write

    detections = dets((0, BOX, 0.9, 1), (0, SHIFTED, 0.6, 2), (1, BOX, 0.8, 0))
    truth = gt((0, BOX, 2), (1, BOX, 0))
    kwargs = dict(class_names=NAMES, is_unseen=IS_UNSEEN, output_dir=str(tmp_path), name="toy")
    gzsd = evaluate_and_write(truth, detections, mode="gzsd", **kwargs)["gzsd"]
    assert gzsd["top1_unseen_other_group"] == 100.0 and gzsd["top1_seen_correct"] == 100.0
    assert gzsd["unseen_recall@100_iou0.5"] == 100.0  # what Recall@100 does not see
    assert (tmp_path / "zsd_top1_confusion.png").is_file()
    assert (tmp_path / "zsd_top1_labels.json").is_file()
    zsd = evaluate_and_write(truth, detections, mode="zsd", **kwargs)["zsd"]
    assert not any(k.startswith("top1_") for k in zsd)
    table = format_results_table({"synthesis": {"zsd": zsd, "gzsd": gzsd}})
    assert "top-1 label" in table and "| synthesis |" in table.splitlines()[-1]
    assert "top-1" not in format_results_table({"synthesis": {"zsd": zsd}})
