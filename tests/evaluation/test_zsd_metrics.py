"""ZSD protocol functions on hand-made detections and against a loop-based reference."""
import numpy as np
import pytest

from zsdet.evaluation import Detections, GroundTruth, evaluate_detections, harmonic_mean, macro_mean
from zsdet.evaluation.zsd_metrics import keep_top_k_per_image, match_detections

BOX = [0.0, 0.0, 10.0, 10.0]


def dets(*rows):
    """rows: (image, box, score, class)."""
    if not rows:
        return Detections(np.zeros(0), np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    image, box, score, cls = zip(*rows)
    return Detections(image, box, score, cls)


def gts(*rows):
    """rows: (image, box, class[, ignore])."""
    rows = [r if len(r) == 4 else (*r, False) for r in rows]
    image, box, cls, ignore = zip(*rows)
    return GroundTruth(image, box, cls, ignore)


def test_known_recall_and_ap_with_duplicate_and_background_detections():
    gt = gts((0, BOX, 0), (0, [20, 20, 30, 30], 0), (1, BOX, 0))
    d = dets((0, BOX, 0.9, 0), (0, BOX, 0.8, 0),  # duplicate of a matched GT -> FP
             (1, [50, 50, 60, 60], 0.7, 0), (1, BOX, 0.6, 0))
    m = evaluate_detections(d, gt, num_classes=1, iou_thresholds=(0.5,))
    # TP FP FP TP, N = 3: envelope precision 1 for R 1/3, 1/2 for R 2/3
    assert m.ap[0, 0] == pytest.approx(1 / 3 * 1 + 1 / 3 * 0.5)
    assert m.recall[0, 0] == pytest.approx(2 / 3)
    assert m.num_gt.tolist() == [3] and m.num_detections.tolist() == [4]


def test_best_gt_already_matched_is_fp_without_fallback():
    gt = gts((0, [0, 0, 10, 10], 0), (0, [0, 0, 10, 12], 0))
    d = dets((0, [0, 0, 10, 10], 0.9, 0),  # best GT 0 (IoU 1)
             (0, [0, 0, 10, 10.5], 0.8, 0))  # best GT 0 too (0.95), GT 1 has 0.875 -> still FP
    tp, fp = match_detections(d, gt, 1, [0.5])
    assert tp.tolist() == [[True, False]] and fp.tolist() == [[False, True]]
    assert evaluate_detections(d, gt, 1, (0.5,)).recall[0, 0] == pytest.approx(0.5)


def test_iou_thresholds_change_recall():
    gt = gts((0, BOX, 0), (1, BOX, 0))
    d = dets((0, [0, 0, 10, 5.5], 0.9, 0),  # IoU 0.55
             (1, [0, 0, 10, 4.5], 0.8, 0))  # IoU 0.45
    m = evaluate_detections(d, gt, 1, (0.4, 0.5, 0.6))
    np.testing.assert_allclose(m.recall[:, 0], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(m.ap[:, 0], [1.0, 0.5, 0.0])


def test_score_ties_are_one_threshold_independent_of_order():
    gt = gts((0, BOX, 0), (1, BOX, 0))
    fp_row, tp_row = (2, BOX, 0.5, 0), (1, BOX, 0.5, 0)
    for order in ((fp_row, tp_row), (tp_row, fp_row)):
        m = evaluate_detections(dets((0, BOX, 0.9, 0), *order), gt, 1, (0.5,))
        # points (R 1/2, P 1) and, after the tie, (R 1, P 2/3); the TP-first order would give 1
        assert m.ap[0, 0] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_equal_scores_in_one_image_claim_gt_in_input_order():
    gt = gts((0, BOX, 0))
    d = dets((0, [0, 0, 10, 9], 0.5, 0), (0, BOX, 0.5, 0))
    tp, fp = match_detections(d, gt, 1, [0.5])
    assert tp.tolist() == [[True, False]] and fp.tolist() == [[False, True]]


def test_crowd_boxes_neither_tp_nor_fp_and_not_counted():
    gt = gts((0, BOX, 0), (0, [50, 50, 100, 100], 0, True))
    d = dets((0, [50, 50, 100, 100], 0.9, 0),  # on the crowd box -> ignored
             (0, [50, 50, 100, 70], 0.85, 0),  # best GT is the crowd box but IoU 0.4 -> FP at 0.5
             (0, BOX, 0.8, 0))
    tp, fp = match_detections(d, gt, 1, [0.5])
    assert tp.tolist() == [[False, False, True]] and fp.tolist() == [[False, True, False]]
    m = evaluate_detections(d, gt, 1, (0.5,))
    assert m.num_gt.tolist() == [1]
    assert m.ap[0, 0] == pytest.approx(0.5) and m.recall[0, 0] == pytest.approx(1.0)
    # a class whose only GT is a crowd box has no GT: NaN, not 0
    m = evaluate_detections(d, gts((0, BOX, 1, True), (0, BOX, 0)), 2, (0.5,))
    assert np.isnan(m.ap[0, 1]) and np.isnan(m.recall[0, 1])


def test_images_without_gt_and_classes_without_detections():
    gt = gts((0, BOX, 0), (0, BOX, 1))
    d = dets((0, BOX, 0.9, 0), (5, BOX, 0.95, 0))  # image 5 has no GT: FP ranked first
    m = evaluate_detections(d, gt, 3, (0.5,))
    assert m.ap[0].tolist()[:2] == [pytest.approx(0.5), 0.0] and np.isnan(m.ap[0, 2])
    assert m.recall[0].tolist()[:2] == [1.0, 0.0]
    assert macro_mean(m.ap[0], m.num_gt) == pytest.approx(0.25)


def test_more_than_max_detections_per_image_are_cut_by_score():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.5, 1, 120)
    background = [(0, [200 + i, 200, 210 + i, 210], s, 0) for i, s in enumerate(scores)]
    d = dets(*background, (0, BOX, 0.1, 0), (1, BOX, 0.05, 0))
    gt = gts((0, BOX, 0), (1, BOX, 0))
    # the TP of image 0 ranks 121st and is cut; image 1 is unaffected
    assert evaluate_detections(d, gt, 1, (0.5,)).recall[0, 0] == pytest.approx(0.5)
    assert evaluate_detections(d, gt, 1, (0.5,), max_dets_per_image=200).recall[0, 0] == 1.0
    keep = keep_top_k_per_image(np.array([1, 0, 1, 1, 0]), np.array([0.2, 0.3, 0.9, 0.2, 0.1]), 2)
    assert keep.tolist() == [True, True, True, False, True]  # tie at the cut keeps the earlier row


def test_empty_inputs():
    m = evaluate_detections(dets(), gts((0, BOX, 0)), 1, (0.5,))
    assert m.ap[0, 0] == 0.0 and m.recall[0, 0] == 0.0
    empty_gt = GroundTruth(np.zeros(0), np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    m = evaluate_detections(dets((0, BOX, 0.9, 0)), empty_gt, 1, (0.5,))
    assert np.isnan(m.ap[0, 0])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="outside"):
        evaluate_detections(dets((0, BOX, 0.9, 3)), gts((0, BOX, 0)), 2)
    with pytest.raises(ValueError, match="IoU thresholds"):
        evaluate_detections(dets((0, BOX, 0.9, 0)), gts((0, BOX, 0)), 1, (0.0, 0.5))
    with pytest.raises(ValueError, match="NaN"):
        dets((0, BOX, float("nan"), 0))
    with pytest.raises(ValueError, match="different lengths"):
        Detections([0, 1], [BOX], [0.5], [0])


def test_harmonic_mean_and_macro_mean():
    assert harmonic_mean(57.7, 53.9) == pytest.approx(55.74, abs=0.005)  # the protocol's example
    assert harmonic_mean(0.0, 0.0) == 0.0 and np.isnan(harmonic_mean(float("nan"), 1.0))
    assert macro_mean(np.array([0.2, np.nan, 0.4]), np.array([1, 0, 3])) == pytest.approx(0.3)
    assert np.isnan(macro_mean(np.array([0.2]), np.array([0])))


# ---------------------------------------------------------------- loop-based reference (mmdet-like)
def iou_matrix(a, b):
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def reference_ap_recall(d, g, num_classes, t):
    ap, rec = np.full(num_classes, np.nan), np.full(num_classes, np.nan)
    for c in range(num_classes):
        n_gt = int(((g.classes == c) & ~g.ignore).sum())
        rows = []  # (score, tp, fp)
        for img in np.unique(np.concatenate([d.image_ids, g.image_ids])):
            di = np.flatnonzero((d.image_ids == img) & (d.classes == c))
            gi = np.flatnonzero((g.image_ids == img) & (g.classes == c))
            gi = np.concatenate([gi[~g.ignore[gi]], gi[g.ignore[gi]]])  # normal GT first
            di = di[np.argsort(-d.scores[di], kind="stable")]
            covered = np.zeros(gi.size, bool)
            ious = iou_matrix(d.boxes[di], g.boxes[gi]) if gi.size else None
            for k, i in enumerate(di):
                if gi.size == 0 or ious[k].max() < t:
                    rows.append((d.scores[i], 0, 1))
                    continue
                j = int(np.argmax(ious[k]))
                if g.ignore[gi[j]]:
                    continue
                rows.append((d.scores[i], int(not covered[j]), int(covered[j])))
                covered[j] = True
        if n_gt == 0:
            continue
        rows.sort(key=lambda r: -r[0])
        tp = np.cumsum([r[1] for r in rows])
        fp = np.cumsum([r[2] for r in rows])
        recalls = tp / n_gt
        precisions = tp / np.maximum(tp + fp, 1)
        mrec = np.concatenate([[0], recalls, [1]])
        mpre = np.concatenate([[0], precisions, [0]])
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = max(mpre[i - 1], mpre[i])
        steps = np.flatnonzero(mrec[1:] != mrec[:-1])
        ap[c] = np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1])
        rec[c] = recalls[-1] if rows else 0.0
    return ap, rec


def random_scene(rng, num_images=15, num_classes=3):
    g_rows, d_rows = [], []
    for img in range(num_images - 2):  # the last images have no GT
        for _ in range(rng.integers(0, 4)):
            xy = rng.uniform(0, 60, 2)
            g_rows.append((img, [*xy, *(xy + rng.uniform(5, 30, 2))], rng.integers(num_classes),
                           rng.random() < 0.15))
    for img in range(num_images):
        for _ in range(rng.integers(0, 12)):
            same = [r for r in g_rows if r[0] == img]
            cls = rng.integers(num_classes)
            if same and rng.random() < 0.7:  # jitter a GT box of this image, mostly its class
                target = same[rng.integers(len(same))]
                box = np.asarray(target[1]) + rng.normal(0, 3, 4)
                cls = target[2] if rng.random() < 0.8 else cls
            else:
                xy = rng.uniform(0, 60, 2)
                box = np.array([*xy, *(xy + rng.uniform(5, 30, 2))])
            d_rows.append((img, box, rng.random(), cls))
    return dets(*d_rows), gts(*g_rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_reference_on_random_scenes(seed):
    rng = np.random.default_rng(seed)
    d, g = random_scene(rng)
    m = evaluate_detections(d, g, 3, (0.4, 0.5, 0.6), max_dets_per_image=1000)
    for row, t in enumerate((0.4, 0.5, 0.6)):
        ap, rec = reference_ap_recall(d, g, 3, t)
        np.testing.assert_allclose(m.ap[row], ap, atol=1e-9, equal_nan=True)
        np.testing.assert_allclose(m.recall[row], rec, atol=1e-9, equal_nan=True)
    assert np.nanmax(m.recall) > 0  # the scene has matches, not only trivial zeros
