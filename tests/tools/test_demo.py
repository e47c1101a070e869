"""tools/demo.py and zsdet.utils.visualize: detections drawn, unseen marked, clear errors."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

import zsdet
from zsdet.utils import visualize
from zsdet.utils.visualize import (
    SEEN_COLOR,
    UNSEEN_COLOR,
    add_legend,
    draw_zsd_detections,
    one_label_per_object,
    place_labels,
    select_detections,
)

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "shapes" / "zsd_shapes_R18_FPN.yaml"
DATASET = "zsdet_test_demo_split"
CLASSES = ["red circle", "red square", "green circle", "green square"]
UNSEEN = ["red square", "green circle"]  # ids 1, 2


@pytest.fixture(scope="module")
def metadata():
    if DATASET not in DatasetCatalog.list():
        DatasetCatalog.register(DATASET, lambda: [])
        MetadataCatalog.get(DATASET).set(
            thing_classes=CLASSES, unseen_classes=UNSEEN,
            seen_classes=[c for c in CLASSES if c not in UNSEEN])
    return MetadataCatalog.get(DATASET)


@pytest.fixture(scope="module")
def demo(load_script):
    return load_script("tools/demo.py")


@pytest.fixture(scope="module")
def weights(metadata, tmp_path_factory):
    """Random detector weights for the test dataset's 4 classes."""
    cfg = get_cfg()
    zsdet.add_zsdet_config(cfg)
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(["DATASETS.TRAIN", (DATASET,), "MODEL.ROI_HEADS.NUM_CLASSES", 4])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "model.pth"
    torch.save({"model": build_model(cfg).state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.png": (96, 128), "b.jpg": (128, 112)}.items():
        img = np.full((h, w, 3), 90, np.uint8)
        cv2.circle(img, (w // 2, h // 2), 20, tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
        cv2.imwrite(str(folder / name), img)
    return folder


def demo_args(demo, weights, inputs, output, *extra):
    return demo.build_parser().parse_args(
        ["--config-file", str(CONFIG), "--input", *map(str, inputs), "--output", str(output),
         *extra,
         "--opts", "DATASETS.TRAIN", f"('{DATASET}',)", "MODEL.ROI_HEADS.NUM_CLASSES", "4",
         "MODEL.WEIGHTS", str(weights)])


def hand_made_instances():
    """One seen (class 0) box at the left, one unseen (class 2) box at the right, one low score."""
    inst = Instances((80, 160))
    inst.pred_boxes = Boxes(torch.tensor([[10.0, 20, 60, 70], [90, 20, 150, 70], [5, 5, 20, 20]]))
    inst.scores = torch.tensor([0.9, 0.8, 0.1])
    inst.pred_classes = torch.tensor([0, 2, 3])
    return inst


def test_select_detections_thresholds_and_marks_unseen():
    dets, unseen = select_detections(hand_made_instances(), [1, 2], score_threshold=0.5)
    assert dets.pred_classes.tolist() == [0, 2] and unseen.tolist() == [False, True]


def record_labels(monkeypatch):
    """The texts ``visualize`` writes on images, in drawing order."""
    texts = []
    put_text = visualize.cv2.putText

    def recording_put_text(image, text, *args, **kwargs):
        texts.append(text)
        return put_text(image, text, *args, **kwargs)

    monkeypatch.setattr(visualize.cv2, "putText", recording_put_text)
    return texts


def test_unseen_box_drawn_in_its_own_colour_with_unseen_label(metadata, monkeypatch):
    labels = record_labels(monkeypatch)
    image = np.full((80, 160, 3), 128, np.uint8)
    drawn = draw_zsd_detections(image, hand_made_instances(), metadata, [1, 2], score_threshold=0.5)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert labels == ["red circle 0.90", "UNSEEN: green circle 0.80"]
    # Left edges (x = 10 and x = 90, away from the labels) of the seen and the unseen box, in BGR.
    seen_px, unseen_px = drawn[45, 10].astype(int), drawn[45, 90].astype(int)
    expected = {name: 0.5 * 128 + 0.5 * 255 * np.array(rgb[::-1]) for name, rgb in
                (("seen", SEEN_COLOR), ("unseen", UNSEEN_COLOR))}  # edges are drawn at alpha 0.5
    assert np.abs(seen_px - expected["seen"]).max() < 40
    assert np.abs(unseen_px - expected["unseen"]).max() < 40
    assert np.abs(seen_px - unseen_px).max() > 100
    assert (drawn[10:14, 5:8] == 128).all()  # the low-score box (5, 5, 20, 20) is not drawn


def overlapping_instances():
    """Two objects, each detected three times: as a seen class, an unseen class and a seen class
    with a shifted box; the highest score differs per object."""
    inst = Instances((128, 128))
    left, right = [10.0, 20, 50, 60], [70.0, 60, 110, 100]
    inst.pred_boxes = Boxes(torch.tensor([left, left, [12.0, 22, 52, 60],
                                          right, right, [70.0, 58, 108, 100]]))
    inst.scores = torch.tensor([0.9, 0.7, 0.6, 0.5, 0.8, 0.4])
    inst.pred_classes = torch.tensor([0, 2, 3, 0, 1, 3])
    return inst


def test_one_label_per_object_keeps_the_best_of_overlapping_boxes():
    kept = one_label_per_object(overlapping_instances(), iou_threshold=0.5)
    assert kept.pred_classes.tolist() == [0, 1]
    assert kept.scores.tolist() == pytest.approx([0.9, 0.8])
    everything = one_label_per_object(overlapping_instances(), iou_threshold=1.0)
    assert len(everything) == 6
    with pytest.raises(ValueError, match="IoU threshold"):
        one_label_per_object(overlapping_instances(), iou_threshold=1.5)


def test_labels_of_boxes_at_the_same_place_do_not_overlap():
    boxes = np.array([[20.0, 20, 60, 60]] * 4 + [[25.0, 22, 62, 61], [0, 0, 300, 200]])
    sizes = np.array([[120, 16]] * 6)
    rects = place_labels(boxes, sizes, (200, 300))
    assert (rects[:, :2] >= 0).all() and (rects[:, 2] <= 300).all() and (rects[:, 3] <= 200).all()
    np.testing.assert_array_equal(rects[:, 2:] - rects[:, :2], sizes)
    inter_w = np.minimum(rects[:, None, 2], rects[None, :, 2]) - np.maximum(rects[:, None, 0],
                                                                           rects[None, :, 0])
    inter_h = np.minimum(rects[:, None, 3], rects[None, :, 3]) - np.maximum(rects[:, None, 1],
                                                                           rects[None, :, 1])
    overlapping = (inter_w > 0) & (inter_h > 0) & ~np.eye(len(rects), dtype=bool)
    assert not overlapping.any()
    assert rects[0].tolist() == [20, 4, 140, 20]  # the first label sits right above its box


def test_legend_names_both_colours_below_the_image():
    image = np.full((128, 400, 3), 128, np.uint8)
    out = add_legend(image, note="gzsd joint")
    assert out.shape[0] > image.shape[0] and out.shape[1:] == image.shape[1:]
    np.testing.assert_array_equal(out[:128], image)
    strip = out[128:].reshape(-1, 3).astype(int)
    for rgb in (SEEN_COLOR, UNSEEN_COLOR):
        assert (np.abs(strip - 255 * np.array(rgb[::-1])).max(axis=1) == 0).sum() > 20
    assert add_legend(image).shape == out.shape  # a short note shares the line
    assert add_legend(image, note="a long note " * 4).shape[0] > out.shape[0]  # second line


def test_demo_draws_one_label_per_object_by_default(demo, weights, images, tmp_path, monkeypatch):
    """Each object detected three times: one label each by default, all six on request."""
    monkeypatch.setattr(demo, "build_predictor",
                        lambda cfg: lambda image: {"instances": overlapping_instances()})
    labels = record_labels(monkeypatch)
    args = demo_args(demo, weights, [images / "a.png"], tmp_path / "one", "--mode", "gzsd")
    summary = demo.main(args)
    drawn = [t for t in labels if t[-3] == "."]  # labels end with a score, legend texts not
    assert drawn == ["red circle 0.90", "UNSEEN: red square 0.80"]
    assert summary[0]["seen"] == 1 and summary[0]["unseen"] == 1
    assert any("best label per object" in t for t in labels)
    labels.clear()
    demo.main(demo_args(demo, weights, [images / "a.png"], tmp_path / "all", "--mode", "gzsd",
                        "--all-detections", "--confidence-threshold", "0.0"))
    assert len([t for t in labels if t[-3] == "."]) == 6
    assert sum(t.startswith("UNSEEN: ") for t in labels) == 2


def test_scale_enlarges_the_output(metadata):
    image = np.full((80, 160, 3), 128, np.uint8)
    drawn = draw_zsd_detections(image, hand_made_instances(), metadata, [1, 2], 0.5, scale=3)
    assert drawn.shape == (240, 480, 3)
    left_edges = drawn[135, 30].astype(int), drawn[135, 270].astype(int)  # scaled by 3
    assert np.abs(left_edges[0] - left_edges[1]).max() > 100


def test_no_detection_leaves_image_unchanged(metadata):
    image = np.full((40, 50, 3), 77, np.uint8)
    drawn = draw_zsd_detections(image, hand_made_instances(), metadata, [1, 2], 0.95)
    np.testing.assert_array_equal(drawn, image)


def test_demo_draws_and_saves_every_input(demo, weights, images, tmp_path):
    out = tmp_path / "out"
    summary = demo.main(demo_args(demo, weights, [images / "a.png", str(images / "*.jpg")], out,
                                  "--confidence-threshold", "0.0", "--mode", "zsd"))
    assert [Path(s["output"]).name for s in summary] == ["a.png", "b.png"]
    for src, s in zip(["a.png", "b.jpg"], summary):
        original, drawn = cv2.imread(str(images / src)), cv2.imread(s["output"])
        height = original.shape[0]  # the legend strip follows
        assert drawn.shape[1:] == original.shape[1:] and drawn.shape[0] > height
        # ZSD mode scores unseen classes only: every label drawn is unseen.
        assert s["seen"] == 0 and s["unseen"] > 0
        assert np.abs(drawn[:height].astype(int) - original).max() > 50


def test_missing_input_names_it(demo, weights, images, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        demo.main(demo_args(demo, weights, [images / "a.png", images / "nope.png"], tmp_path))


def test_missing_weights_names_the_file(demo, images, tmp_path):
    missing = tmp_path / "absent_model.pth"
    with pytest.raises(FileNotFoundError, match="absent_model.pth"):
        demo.main(demo_args(demo, missing, [images / "a.png"], tmp_path / "out"))
