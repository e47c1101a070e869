"""COCO ZSD split construction on a tiny fake COCO json; the prepare script; registration."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from zsdet.data.datasets.coco_zsd import (
    COCO_THING_CLASSES, NAMED_SPLITS, TEST_IMAGE_IDS_65_15, class_split_file, load_class_split, make_zsd_splits,
    register_coco_zsd,
)
from zsdet.data.embeddings import load_class_embeddings
from zsdet.data.shipped import SHIPPED_DATA_DIR, resolve_data_path
from zsdet.data.zsd_split import ZeroShotSplit

# non-contiguous ids, listed out of order: the split jsons must keep all of them, sorted by id
CATEGORIES = [{"id": 6, "name": "bus"}, {"id": 1, "name": "dog"}, {"id": 4, "name": "cat"},
              {"id": 2, "name": "car"}]
NAMES = ["dog", "car", "cat", "bus"]  # category-id order
SPLIT = ZeroShotSplit.from_names(NAMES, ["cat"])  # seen: dog, car, bus
DOG, CAR, CAT, BUS = 1, 2, 4, 6


def _coco(images, annotations):
    """images: {id: (w, h)}; annotations: (image_id, category_id, bbox, iscrowd)."""
    return {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": w, "height": h}
                   for i, (w, h) in images.items()],
        "annotations": [{"id": k + 1, "image_id": i, "category_id": c, "bbox": list(b),
                         "area": float(b[2] * b[3]), "iscrowd": crowd,
                         "segmentation": [[0, 0, 1, 0, 1, 1]]}
                        for k, (i, c, b, crowd) in enumerate(annotations)],
        "categories": CATEGORIES,
    }


BOX = (10, 10, 20, 20)
TRAIN = _coco(
    {1: (100, 80), 2: (100, 80), 3: (100, 80), 4: (20, 100), 5: (100, 80), 6: (100, 80),
     7: (100, 80), **{i: (64, 64) for i in range(10, 60)}},
    [(1, DOG, BOX, 0), (1, CAR, BOX, 0),
     (2, DOG, BOX, 0), (2, CAT, BOX, 0),          # unseen object -> out of train
     (3, DOG, BOX, 0), (3, CAT, BOX, 1),          # unseen crowd -> out as well
     (4, DOG, BOX, 0),                            # min side 20 < 32 -> out
     (6, CAR, BOX, 1),                            # seen crowd only -> kept (mmdet rule)
     (7, DOG, (5, 5, 0.5, 10), 0), (7, BUS, BOX, 0),  # degenerate box: not in GT
     *[(i, DOG, BOX, 0) for i in range(10, 60)]],  # image 5 has no annotation -> out
)
TEST = _coco(
    {101: (100, 80), 102: (100, 80), 103: (100, 80), 104: (100, 80), 105: (20, 20),
     106: (100, 80)},
    [(101, CAT, BOX, 0), (101, DOG, BOX, 0),
     (102, DOG, BOX, 0),                          # no unseen -> not a test image
     (103, CAT, BOX, 1), (103, CAR, BOX, 0),      # unseen crowd only -> still a test image
     (104, CAT, BOX, 0), (104, CAT, (50, 40, 10, 10), 0),  # unseen only -> also unseen_real
     (105, CAT, BOX, 0),                          # small: test yes, unseen_real no
     (106, CAT, BOX, 0), (106, DOG, (1, 1, 10, 0), 0)],  # degenerate seen box
)


@pytest.fixture(scope="module")
def splits():
    return make_zsd_splits(TRAIN, TEST, SPLIT, val_fraction=0.1, seed=0)


def _image_ids(coco):
    return [im["id"] for im in coco["images"]]


def _anns(coco):
    return sorted((a["image_id"], a["category_id"], a["iscrowd"]) for a in coco["annotations"])


def test_train_is_seen_exclusive_and_val_is_carved_out(splits):
    train, val = splits["train"], splits["val"]
    assert len(val["images"]) == 5  # round(0.1 * 53 kept images)
    assert set(_image_ids(train)) | set(_image_ids(val)) == {1, 6, 7, *range(10, 60)}
    assert not set(_image_ids(train)) & set(_image_ids(val))
    assert _image_ids(train) == sorted(_image_ids(train))
    kept = {(i, c, crowd) for i, c, crowd in _anns(train) + _anns(val) if i < 10}
    assert kept == {(1, DOG, 0), (1, CAR, 0), (6, CAR, 1), (7, BUS, 0)}
    again = make_zsd_splits(TRAIN, TEST, SPLIT, val_fraction=0.1, seed=0)["val"]
    assert _image_ids(again) == _image_ids(val)
    other = make_zsd_splits(TRAIN, TEST, SPLIT, val_fraction=0.1, seed=1)["val"]
    assert _image_ids(other) != _image_ids(val)


def test_test_splits_are_inclusive_with_filtered_gt(splits):
    zsd, gzsd, real = splits["test_zsd"], splits["test_gzsd"], splits["unseen_real"]
    assert _image_ids(zsd) == _image_ids(gzsd) == [101, 103, 104, 105, 106]
    assert _anns(zsd) == [(101, CAT, 0), (103, CAT, 1), (104, CAT, 0), (104, CAT, 0),
                          (105, CAT, 0), (106, CAT, 0)]
    assert _anns(gzsd) == sorted(_anns(zsd) + [(101, DOG, 0), (103, CAR, 0)])
    assert _image_ids(real) == [104]
    assert {a["category_id"] for a in real["annotations"]} == {CAT}


def test_every_split_keeps_the_full_sorted_category_list(splits):
    for coco in splits.values():
        assert [c["id"] for c in coco["categories"]] == [1, 2, 4, 6]
        assert all("segmentation" not in a for a in coco["annotations"])
    kept = make_zsd_splits(TRAIN, TEST, SPLIT, keep_segmentation=True)["train"]
    assert all("segmentation" in a for a in kept["annotations"])


def test_classes_in_neither_group_leave_the_index_space():
    leftover = make_zsd_splits(TRAIN, TEST, ZeroShotSplit.from_names(["dog", "car", "cat"], ["cat"]), val_fraction=0)
    for coco in leftover.values():
        assert [c["name"] for c in coco["categories"]] == ["dog", "car", "cat"]
        assert BUS not in {a["category_id"] for a in coco["annotations"]}
    assert 7 not in _image_ids(leftover["train"])  # its bus is outside the seen group
    names = register_coco_zsd("leftover", root="unused", class_split={"seen": ["dog", "car"],
                              "unseen": ["cat"]}, thing_classes=NAMES)
    assert MetadataCatalog.get(names[0]).thing_classes == ["dog", "car", "cat"]


def test_class_split_files(tmp_path):
    tsv = tmp_path / "split.tsv"
    tsv.write_text("name\tsplit\ndog\tseen\ncar\tseen\ncat\tunseen\nbus\tseen\n")
    assert load_class_split(str(tsv), NAMES) == SPLIT
    js = tmp_path / "split.json"
    js.write_text(json.dumps({"seen": ["bus", "dog"], "unseen": ["cat"]}))
    assert load_class_split(str(js), NAMES) == ZeroShotSplit.from_names(["dog", "cat", "bus"], ["cat"])
    with pytest.raises(KeyError, match="zebra"):
        load_class_split({"seen": ["dog"], "unseen": ["zebra"]}, NAMES)
    with pytest.raises(ValueError, match="both seen and unseen"):
        load_class_split({"seen": ["dog", "cat"], "unseen": ["cat"]}, NAMES)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_class_split(str(tmp_path / "nope.json"), NAMES)
    (tmp_path / "bad.json").write_text('{"unseen": ["cat"] "seen": []}')
    with pytest.raises(ValueError, match=r"bad.json is not valid JSON \(Expecting ',' delimiter"):
        load_class_split(str(tmp_path / "bad.json"), NAMES)
    default = load_class_split()
    assert len(default.seen) == 65 and len(default.unseen) == 15 and "hot dog" in default.unseen
    with pytest.raises(KeyError, match="zebra"):  # the split's classes must exist in the jsons
        make_zsd_splits(TRAIN, TEST, ZeroShotSplit.from_names(["dog", "zebra"], ["zebra"]))
    swap = {"dog": "car", "car": "dog"}
    renamed = dict(TEST, categories=[dict(c, name=swap.get(c["name"], c["name"]))
                                     for c in CATEGORIES])
    with pytest.raises(ValueError, match="different category ids"):
        make_zsd_splits(TRAIN, renamed, SPLIT)


def test_shipped_named_splits():
    assert load_class_split("coco65_15") == load_class_split()  # the table = the built-in default
    assert class_split_file("coco65_15") == str(SHIPPED_DATA_DIR / "coco_zsd" / "split_65_15.tsv")
    assert class_split_file("my/split.tsv") == "my/split.tsv"  # not a name: a path, unchanged
    split_48_17 = load_class_split("coco48_17")
    assert (len(split_48_17.seen), len(split_48_17.unseen)) == (48, 17)
    assert "dog" in split_48_17.unseen and "person" in split_48_17.seen
    assert "hair drier" not in split_48_17.seen + split_48_17.unseen  # 'none': in neither list
    assert set(NAMED_SPLITS) == {"coco65_15", "coco48_17"}
    with pytest.raises(FileNotFoundError, match="zsdet://coco_zsd/nope.tsv"):
        resolve_data_path("zsdet://coco_zsd/nope.tsv")


def test_shipped_test_image_list_has_the_protocol_size():
    ids = np.loadtxt(resolve_data_path(TEST_IMAGE_IDS_65_15), dtype=np.int64)
    assert len(ids) == 10098 and np.all(np.diff(ids) > 0) and ids.min() > 0


def test_prepare_script_is_idempotent_and_feeds_registration(tmp_path, capsys, load_script):
    annotations = tmp_path / "coco" / "annotations"
    annotations.mkdir(parents=True)
    (annotations / "instances_train2014.json").write_text(json.dumps(TRAIN))
    (annotations / "instances_val2014.json").write_text(json.dumps(TEST))
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"unseen": ["cat"]}))
    table = tmp_path / "vec.tsv"
    rows = enumerate(["__background__", *NAMES])
    table.write_text("".join(f"{n}\t{i + 1}\t1\n" for i, n in rows))
    prepare = load_script("datasets/prepare_coco_zsd.py")
    argv = ["--root", str(tmp_path), "--tag", "toy", "--split-file", str(split_file),
            "--val-fraction", "0.1", "--embeddings", str(table)]
    counts = prepare.main(argv)
    assert counts["test_zsd"] == {"images": 5, "annotations": 6}
    out = tmp_path / "coco" / "zsd" / "toy"
    stamp = (out / "train.json").stat().st_mtime_ns
    capsys.readouterr()
    assert prepare.main(argv) == counts
    assert "up to date" in capsys.readouterr().out
    assert (out / "train.json").stat().st_mtime_ns == stamp

    names = register_coco_zsd("toy", root=str(tmp_path), class_split=str(split_file),
                              thing_classes=NAMES)
    assert names[2] == "coco_2014_zsd_toy_test_zsd"
    meta = MetadataCatalog.get(names[2])
    assert (meta.seen_classes, meta.unseen_classes) == (["dog", "car", "bus"], ["cat"])
    records = DatasetCatalog.get(names[2])
    assert [r["image_id"] for r in records] == [101, 103, 104, 105, 106]
    assert {a["category_id"] for r in records for a in r["annotations"]} == {NAMES.index("cat")}
    assert records[0]["file_name"] == str(tmp_path / "coco" / "val2014" / "000000000101.jpg")
    emb = load_class_embeddings(meta.class_embeddings_file, meta.thing_classes, normalize="none")
    np.testing.assert_array_equal(emb[:, 0], [2, 3, 4, 5])


def test_unprepared_split_names_the_missing_file_and_command(tmp_path):
    register_coco_zsd("missing", root=str(tmp_path))
    assert register_coco_zsd("missing", root=str(tmp_path))[0] == "coco_2014_zsd_missing_train"
    with pytest.raises(ValueError, match="other.*class_embeddings_file"):
        register_coco_zsd("missing", root=str(tmp_path), embeddings_file="other.tsv")
    names = register_coco_zsd("missing", root=str(tmp_path), embeddings_file="other.tsv",
                              prefix="coco_missing_other_emb")
    assert MetadataCatalog.get(names[0]).class_embeddings_file == os.path.abspath("other.tsv")
    message = r"missing/train.json.*prepare_coco_zsd.py --tag missing"
    with pytest.raises(FileNotFoundError, match=message):
        DatasetCatalog.get("coco_2014_zsd_missing_train")
    meta = MetadataCatalog.get("coco_2014_zsd_65_15_test_gzsd")
    assert meta.thing_classes == COCO_THING_CLASSES and meta.zsd_mode == "gzsd"
    assert meta.thing_dataset_id_to_contiguous_id[90] == 79


def test_real_coco_test_images_match_the_protocol_list():
    """Needs the official COCO json (not shipped): skipped without it."""
    val_json = os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "coco", "annotations",
                            "instances_val2014.json")
    if not os.path.isfile(val_json):
        pytest.skip(f"{val_json} is not present")
    with open(val_json) as f:
        val = json.load(f)
    splits = make_zsd_splits(val, val, load_class_split(), val_fraction=0.0)
    expected = np.loadtxt(resolve_data_path(TEST_IMAGE_IDS_65_15), dtype=np.int64)
    np.testing.assert_array_equal(_image_ids(splits["test_zsd"]), expected)


def test_prepare_script_names_a_malformed_json(tmp_path, load_script):
    """Regression (issue 10, item 12): a broken json gave json's bare `Expecting ',' delimiter`."""
    annotations = tmp_path / "coco" / "annotations"
    annotations.mkdir(parents=True)
    (annotations / "instances_train2014.json").write_text(json.dumps(TRAIN))
    broken = annotations / "instances_val2014.json"
    broken.write_text(json.dumps(TEST).replace("}, {", "} {", 1))  # a comma lost in a list
    prepare = load_script("datasets/prepare_coco_zsd.py")
    argv = ["--root", str(tmp_path), "--split-file", "unused.json"]
    with pytest.raises(ValueError, match=rf"{broken} is not valid JSON \(Expecting ',' delimiter"):
        prepare.main(argv)
    broken.write_text(json.dumps([TEST]))
    with pytest.raises(ValueError, match=rf"{broken}: expected a JSON object .* missing"):
        prepare.main(argv)
    script = os.path.join(os.path.dirname(__file__), "..", "..", "datasets", "prepare_coco_zsd.py")
    proc = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"error: {broken}: expected a JSON object")
