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
from zsdet.utils.visualize import SEEN_COLOR, UNSEEN_COLOR, draw_zsd_detections, select_detections

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


def test_unseen_box_drawn_in_its_own_colour_with_unseen_label(metadata, monkeypatch):
    labels = []
    overlay = visualize.Visualizer.overlay_instances

    def recording_overlay(self, **kwargs):
        labels.extend(kwargs["labels"])
        return overlay(self, **kwargs)

    monkeypatch.setattr(visualize.Visualizer, "overlay_instances", recording_overlay)
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
    assert (drawn[10:14, 10:14] == 128).all()  # the low-score box is not drawn


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
        assert drawn.shape == original.shape
        # ZSD mode scores unseen classes only: every detection is unseen and drawn.
        assert s["seen"] == 0 and s["unseen"] > 0
        assert np.abs(drawn.astype(int) - original).max() > 50


def test_missing_input_names_it(demo, weights, images, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        demo.main(demo_args(demo, weights, [images / "a.png", images / "nope.png"], tmp_path))


def test_missing_weights_names_the_file(demo, images, tmp_path):
    missing = tmp_path / "absent_model.pth"
    with pytest.raises(FileNotFoundError, match="absent_model.pth"):
        demo.main(demo_args(demo, missing, [images / "a.png"], tmp_path / "out"))
