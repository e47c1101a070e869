"""tools/add_classes.py on the tiny shapes: a pipeline trained without ever naming "yellow cross"
gets it afterwards from its embedding alone, and the written config works unchanged with
tools/train_net.py --eval-only and tools/demo.py; tools/evaluate_zsd.py scores the same model's
COCO-format detections with the same figures; bad inputs are clear errors."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import DatasetEvaluator, inference_on_dataset
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.modeling import build_model

import zsdet
from zsdet.data.datasets.reindexed import write_class_list
from zsdet.engine import load_detector_weights

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "quick_schedules" / "zsd_shapes_tiny_instant_test.yaml"
NEW = "yellow cross"
TESTS = ("zsd_shapes_tiny_test_zsd", "zsd_shapes_tiny_test_gzsd")


def run(script, *args):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / script), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The tiny pipeline (up to the classifier stage) on the shapes re-indexed to 15 classes:
    "yellow cross" is in neither class list, its embedding is never read."""
    tmp = tmp_path_factory.mktemp("add_classes")
    meta = MetadataCatalog.get("zsd_shapes_tiny_train")
    thing = [c for c in meta.thing_classes if c != NEW]
    unseen = [c for c in meta.unseen_classes if c != NEW]
    splits = ("train", "test_zsd", "test_gzsd")
    write_class_list(str(tmp / "withheld.json"), thing, [c for c in thing if c not in unseen], unseen,
                     {f"tiny_wo_{s}": f"zsd_shapes_tiny_{s}" for s in splits})
    out = tmp / "run"
    run("train_net.py", "--config-file", CONFIG, "--stages", "detector,features,generator,classifier",
        "OUTPUT_DIR", out, "ZSD.CLASS_LIST", tmp / "withheld.json", "DATASETS.TRAIN", '("tiny_wo_train",)',
        "ZSD.TEST_ZSD", "tiny_wo_test_zsd", "ZSD.TEST_GZSD", "tiny_wo_test_gzsd",
        "MODEL.ROI_HEADS.NUM_CLASSES", "15")
    return out


@pytest.fixture(scope="module")
def embeddings():
    return MetadataCatalog.get("zsd_shapes_tiny_train").class_embeddings_file


@pytest.fixture(scope="module")
def added(run_dir, embeddings, load_script):
    tool = load_script("tools/add_classes.py")
    return tool.main(["--run-dir", str(run_dir), "--classes", NEW, "--embeddings", embeddings,
                      "--test-datasets", ",".join(TESTS)])


def test_added_detector_lists_the_new_class(run_dir, added):
    ckpt = torch.load(added["weights"], map_location="cpu", weights_only=True)
    classes = ckpt["zsd_classes"]
    assert classes["thing_classes"][-1] == NEW and len(classes["thing_classes"]) == 16
    assert NEW in classes["unseen_classes"] and classes["added_classes"] == [NEW]
    assert ckpt["model"]["roi_heads.box_predictor.cls_score.bias"].shape[0] == 17  # + background (any head)
    before = torch.load(run_dir / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    key = "roi_heads.box_head.fc1.weight"
    assert torch.equal(ckpt["model"][key], before[key])  # the detector itself is unchanged
    cfg = zsdet.get_zsdet_cfg(added["config"])
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 16
    meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
    assert meta.thing_classes == classes["thing_classes"] and meta.unseen_classes == classes["unseen_classes"]
    assert len(meta.class_embeddings) == 16


def test_eval_only_and_evaluate_zsd_agree(added, load_script, tmp_path):
    """The written config evaluates as is, the new class has GT there; evaluate_zsd.py on the same
    model's COCO-format detections gives the pipeline's figures."""
    run("train_net.py", "--config-file", added["config"], "--eval-only")
    out = Path(zsdet.get_zsdet_cfg(added["config"]).OUTPUT_DIR)
    metrics = json.loads((out / "metrics.json").read_text())["eval"]
    per_class = json.loads((out / "inference" / "eval_zsd" / "zsd_results.json").read_text())["per_class"]
    assert next(r for r in per_class if r["class"] == NEW)["num_gt"] > 0

    tool = load_script("tools/evaluate_zsd.py")
    gt_json = MetadataCatalog.get(TESTS[1]).json_file
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"unseen": MetadataCatalog.get(TESTS[1]).unseen_classes}))
    for mode in ("zsd", "gzsd"):
        results = tmp_path / f"{mode}.json"
        results.write_text(json.dumps(coco_detections(added["config"], mode, gt_json)))
        scored = tool.main([gt_json, str(results), "--split", str(split), "--mode", mode,
                            "--output", str(tmp_path / "tool"), "--method", "eval"])
        assert scored["eval"][mode] == metrics[mode]


class _CocoRows(DatasetEvaluator):
    def reset(self):
        self.rows = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            self.rows += instances_to_coco_json(out["instances"].to("cpu"), inp["image_id"])

    def evaluate(self):
        return {}


def coco_detections(config, mode, gt_json):
    """The model of ``config`` in ``mode`` on its test set, as COCO results with ``gt_json``'s ids."""
    cfg = zsdet.get_zsdet_cfg(config, ["MODEL.ZSD.MODE", mode])
    dataset = cfg.ZSD.TEST_ZSD if mode == "zsd" else cfg.ZSD.TEST_GZSD
    model = build_model(cfg)
    load_detector_weights(model, cfg.MODEL.WEIGHTS)
    rows = _CocoRows()
    inference_on_dataset(model, build_detection_test_loader(cfg, dataset), rows)
    names = MetadataCatalog.get(dataset).thing_classes
    with open(gt_json) as f:
        json_id = {c["name"]: c["id"] for c in json.load(f)["categories"]}
    return [dict(r, category_id=json_id[names[r["category_id"]]]) for r in rows.rows]


def test_demo_runs_with_the_written_config(added, load_script, tmp_path):
    demo = load_script("tools/demo.py")
    image = DatasetCatalog.get(TESTS[1])[0]["file_name"]
    args = demo.build_parser().parse_args(["--config-file", added["config"], "--input", image,
                                           "--output", str(tmp_path), "--mode", "zsd",
                                           "--confidence-threshold", "0.0"])
    summary = demo.main(args)
    assert Path(summary[0]["output"]).is_file()


def test_bad_inputs(run_dir, embeddings, load_script, tmp_path):
    tool = load_script("tools/add_classes.py")

    def add(classes, emb=embeddings, directory=run_dir):
        return tool.main(["--run-dir", str(directory), "--classes", classes, "--embeddings", str(emb),
                          "--output", str(tmp_path / "bad.pth")])

    with pytest.raises(ValueError, match=r"'green cross' \(unseen\) are already known"):
        add("green cross")
    with pytest.raises(ValueError, match=r"'red circle' \(seen\)"):
        add(f"{NEW},red circle")
    with pytest.raises(ValueError, match="more than once"):
        add(f"{NEW},{NEW}")
    with pytest.raises(KeyError, match=r"no vector for the class\(es\) \['purple star'\]"):
        add("purple star")
    short = tmp_path / "short.tsv"
    short.write_text(f"{NEW}\t0.1\t0.2\t0.3\n")
    with pytest.raises(ValueError, match="short.tsv: class vectors have dimension 3, expected 12"):
        add(NEW, emb=short)
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    shutil.copy(run_dir / "config.yaml", untrained)
    shutil.copy(run_dir / "model_final.pth", untrained)
    shutil.copytree(run_dir / "roi_bank", untrained / "roi_bank")
    with pytest.raises(FileNotFoundError, match="has no trained generator"):
        add(NEW, directory=untrained)
    with pytest.raises(FileNotFoundError, match="is not a pipeline run directory"):
        add(NEW, directory=tmp_path)
    assert not (tmp_path / "bad.pth").exists()


def test_new_rows_share_the_runs_spectral_scale(run_dir, embeddings):
    from zsdet.data.embeddings import load_class_embeddings
    from zsdet.data.zsd_split import class_embeddings_from_config, class_embeddings_of
    from zsdet.engine.add_classes import new_embedding_rows

    cfg = zsdet.get_zsdet_cfg(str(run_dir / "config.yaml"), ["ZSD.EMBEDDINGS_NORMALIZE", "spectral"])
    def scale(normalized, raw):  # per row: normalized = scale * raw
        return np.linalg.norm(normalized, axis=1) / np.linalg.norm(raw, axis=1)

    run_scale = scale(class_embeddings_from_config(cfg), class_embeddings_of(cfg.DATASETS.TRAIN[0], "", "none"))
    new_scale = scale(new_embedding_rows(cfg, embeddings, [NEW]),
                      load_class_embeddings(embeddings, [NEW], normalize="none"))
    assert run_scale == pytest.approx(run_scale[0], rel=1e-5)  # one factor for the whole matrix
    assert new_scale == pytest.approx(run_scale[0], rel=1e-5) and abs(run_scale[0] - 1) > 0.01


def test_reindexed_dataset_maps_annotations_by_name():
    from zsdet.data.datasets.reindexed import register_reindexed, root_source

    source = "zsd_shapes_tiny_test_gzsd"
    old = MetadataCatalog.get(source).thing_classes
    thing = ["yellow cross", "red circle", "green cross"]  # another order, 3 of 16 classes
    register_reindexed("tiny_reindexed_test", source, thing, ["red circle"], ["yellow cross", "green cross"])
    register_reindexed("tiny_reindexed_test", source, thing, ["red circle"], ["yellow cross", "green cross"])
    for rec, src in zip(DatasetCatalog.get("tiny_reindexed_test"), DatasetCatalog.get(source)):
        expected = [(a["bbox"], thing.index(old[a["category_id"]])) for a in src["annotations"]
                    if old[a["category_id"]] in thing]
        assert [(a["bbox"], a["category_id"]) for a in rec["annotations"]] == expected
    meta = MetadataCatalog.get("tiny_reindexed_test")
    assert meta.thing_classes == thing and meta.zsd_mode == "gzsd" and root_source("tiny_reindexed_test") == source
    src_emb = MetadataCatalog.get(source).class_embeddings
    assert meta.class_embeddings[0] == src_emb[old.index("yellow cross")]
    with pytest.raises(ValueError, match="already registered with another definition"):
        register_reindexed("tiny_reindexed_test", source, thing[:2], ["red circle"], ["yellow cross"])
    with pytest.raises(ValueError, match="must be exactly thing_classes"):
        register_reindexed("tiny_reindexed_bad", source, thing, ["red circle"], ["yellow cross"])
