"""The built-in synthetic shapes dataset: determinism, split rules, embeddings, registration."""
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from zsdet.data.datasets import shapes
from zsdet.data.datasets.generated import ensure_generated
from zsdet.data.datasets.shapes import ShapesConfig, register_zsd_shapes
from zsdet.data.embeddings import load_class_embeddings

from generated_datasets import assert_generation_is_deterministic, read_split

SMALL = dict(image_size=64, object_size=(10, 24), num_train=12, num_val=4, num_test=10)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    config = ShapesConfig(**SMALL)
    out = str(tmp_path_factory.mktemp("shapes") / "set")
    ensure_generated(out, config)
    return out, config


def test_same_seed_gives_identical_files(small_set, tmp_path):
    out, config = small_set
    assert_generation_is_deterministic(shapes.generate_shapes_dataset, out, config,
                                       ShapesConfig(**SMALL, seed=1), tmp_path, num_images=12 + 4 + 10)


def test_split_rules(small_set):
    out, config = small_set
    unseen = {i + 1 for i in config.unseen_ids}  # json category ids
    train, val = read_split(out, "train"), read_split(out, "val")
    zsd, gzsd = read_split(out, "test_zsd"), read_split(out, "test_gzsd")
    for split in (train, val):
        categories = {a["category_id"] for a in split["annotations"]}
        assert categories and not categories & unseen
    assert {a["category_id"] for a in zsd["annotations"]} <= unseen
    image_ids = {im["id"] for im in zsd["images"]}
    assert image_ids == {im["id"] for im in gzsd["images"]}
    assert image_ids == {a["image_id"] for a in zsd["annotations"]}  # each has an unseen box
    key = lambda a: (a["image_id"], a["category_id"], tuple(a["bbox"]))  # noqa: E731
    assert {key(a) for a in zsd["annotations"]} < {key(a) for a in gzsd["annotations"]}
    assert any(a["category_id"] not in unseen for a in gzsd["annotations"])  # mixed test images
    ids = [{im["id"] for im in s["images"]} for s in (train, val, zsd)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    for split in (train, zsd, gzsd):
        assert [c["name"] for c in split["categories"]] == config.class_names


def test_boxes_lie_inside_the_image_and_do_not_overlap(small_set):
    out, config = small_set
    gzsd = read_split(out, "test_gzsd")
    boxes = np.array([a["bbox"] for a in gzsd["annotations"]])
    assert (boxes[:, :2] >= 0).all() and (boxes[:, :2] + boxes[:, 2:] <= config.image_size).all()
    assert (boxes[:, 2:] >= config.object_size[0] * 0.8).all()
    for image in gzsd["images"]:
        b = np.array([a["bbox"] for a in gzsd["annotations"] if a["image_id"] == image["id"]])
        x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
        inter = (np.minimum(x1[:, None], x1) > np.maximum(x0[:, None], x0)) & (
            np.minimum(y1[:, None], y1) > np.maximum(y0[:, None], y0))
        assert inter.sum() == len(b)  # only each box with itself


def test_default_split_is_a_2x2_block_of_attributes_all_seen_elsewhere():
    config = ShapesConfig()
    assert len(config.class_names) == 16 and len(config.unseen_ids) == 4
    unseen_pairs = [config.class_pairs[i] for i in config.unseen_ids]
    seen_pairs = [config.class_pairs[i] for i in config.seen_ids]
    assert len({c for c, _ in unseen_pairs}) == 2 and len({s for _, s in unseen_pairs}) == 2
    assert {c for c, _ in unseen_pairs} <= {c for c, _ in seen_pairs}
    assert {s for _, s in unseen_pairs} <= {s for _, s in seen_pairs}
    with pytest.raises(ValueError, match="occur in no seen class"):
        ShapesConfig(unseen=[("red", s) for s in ("circle", "square", "triangle", "cross")])
    with pytest.raises(KeyError, match="purple"):
        ShapesConfig(colours=("red", "purple"))


def test_class_embeddings_come_from_attributes(small_set):
    out, config = small_set
    emb = shapes.shape_class_embeddings(config)
    assert emb.shape == (16, 4 + 4 + config.embedding_noise_dims) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)
    colour_part, shape_part = emb[:, :4].argmax(1), emb[:, 4:8].argmax(1)
    assert [(config.colours[c], config.shapes[s]) for c, s in zip(colour_part, shape_part)] == \
        config.class_pairs
    np.testing.assert_array_equal(emb, shapes.shape_class_embeddings(ShapesConfig(**SMALL)))
    from_file = load_class_embeddings(os.path.join(out, "class_embeddings.tsv"), config.class_names)
    np.testing.assert_allclose(from_file, emb, rtol=1e-6)


def test_killed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    def crash(out_dir, config):
        os.makedirs(os.path.join(out_dir, "images"))
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "generate_shapes_dataset", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_generated(str(tmp_path / "set"), ShapesConfig(**SMALL))
    assert os.listdir(tmp_path) == []


def test_registered_records_load_through_the_catalog(tmp_path):
    names = register_zsd_shapes("test_shapes_reg", root=str(tmp_path), **SMALL)
    assert register_zsd_shapes("test_shapes_reg", root=str(tmp_path), **SMALL) == names
    with pytest.raises(ValueError, match="already registered"):
        register_zsd_shapes("test_shapes_reg", root=str(tmp_path), **dict(SMALL, seed=3))
    assert os.listdir(tmp_path) == []  # registration generates nothing
    meta = MetadataCatalog.get("test_shapes_reg_test_zsd")
    assert meta.evaluator_type == "zsd" and meta.zsd_mode == "zsd"
    assert MetadataCatalog.get("test_shapes_reg_test_gzsd").zsd_mode == "gzsd"
    assert sorted(meta.seen_classes + meta.unseen_classes) == sorted(meta.thing_classes)
    records = DatasetCatalog.get("test_shapes_reg_test_zsd")
    unseen_ids = {meta.thing_classes.index(n) for n in meta.unseen_classes}
    assert len(records) == 10 and all(os.path.isfile(r["file_name"]) for r in records)
    assert all(r["annotations"] for r in records)
    assert {a["category_id"] for r in records for a in r["annotations"]} <= unseen_ids
    train = DatasetCatalog.get("test_shapes_reg_train")
    train_ids = {a["category_id"] for r in train for a in r["annotations"]}
    assert train_ids and not train_ids & unseen_ids
    assert os.path.isfile(meta.json_file)


def test_default_datasets_are_registered():
    for prefix, size in (("zsd_shapes", 128), ("zsd_shapes_tiny", 96)):
        meta = MetadataCatalog.get(f"{prefix}_train")
        assert f"{prefix}_test_gzsd" in DatasetCatalog.list()
        assert len(meta.thing_classes) == 16 and len(meta.unseen_classes) == 4
        assert np.asarray(meta.class_embeddings).shape == (16, 12)
        assert os.path.basename(meta.dataset_dir).startswith(prefix + "_")


def test_held_out_worlds_keep_every_held_out_attribute_in_a_training_class(tmp_path):
    """A shapes validation world: 3 seen shapes held out (each colour and shape still drawn in training),
    the real unseen ones in no image, the same classes and embeddings, the base folder name unchanged."""
    base = ShapesConfig(**SMALL)
    assert ShapesConfig().digest() == "d1638f60"  # absent unset: the folder of before
    worlds = [ShapesConfig(**shapes.held_out_world(k, **SMALL)) for k in range(shapes.HELD_OUT_SPLITS)]
    held_out_sets = []
    for world in worlds:
        held_out = sorted(set(world.unseen_ids) - set(base.unseen_ids))
        training = {v for i in world.seen_ids for v in world.class_pairs[i]}
        assert len(held_out) == 3 and set(held_out) <= set(base.seen_ids) and len(world.seen_ids) == 9
        assert all(v in training for i in held_out for v in world.class_pairs[i])
        assert world.absent_ids == base.unseen_ids and world.class_names == base.class_names
        np.testing.assert_array_equal(shapes.shape_class_embeddings(world), shapes.shape_class_embeddings(base))
        held_out_sets.append(tuple(held_out))
    assert len(set(held_out_sets)) == len(worlds)  # drawn by the split
    out = str(tmp_path / "world")
    ensure_generated(out, worlds[0])
    gzsd = {a["category_id"] - 1 for a in read_split(out, "test_gzsd")["annotations"]}
    train = {a["category_id"] - 1 for a in read_split(out, "train")["annotations"]}
    assert train <= set(worlds[0].seen_ids)
    assert not gzsd & set(base.unseen_ids) and gzsd & set(worlds[0].drawn_unseen_ids)
    with pytest.raises(ValueError, match="ShapesConfig: no 11 of the 12 seen classes"):  # 1 training class cannot
        shapes.held_out_world(0, 11)                                                       # keep 4 colours
    for k in range(shapes.HELD_OUT_SPLITS):
        meta = MetadataCatalog.get(f"zsd_shapes_heldout{k}_test_gzsd")
        assert len(meta.unseen_classes) == 7 and len(meta.seen_classes) == 9
        assert f"zsd_shapes_tiny_heldout{k}_train" in DatasetCatalog.list()
