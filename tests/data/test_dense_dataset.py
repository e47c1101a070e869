"""The built-in dense-scenes dataset: determinism, split rules, occlusion rule, embeddings."""
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from zsdet.data.datasets import dense_scenes
from zsdet.data.datasets.dense_scenes import DenseScenesConfig, register_zsd_dense
from zsdet.data.datasets.generated import ensure_generated
from zsdet.data.embeddings import load_class_embeddings

from generated_datasets import assert_generation_is_deterministic, read_split

SMALL = dict(image_size=96, objects_per_image=(4, 8), object_size=(14, 30), distractor_size=(8, 20),
             num_train=12, num_val=4, num_test=10)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    config = DenseScenesConfig(**SMALL)
    out = str(tmp_path_factory.mktemp("dense") / "set")
    ensure_generated(out, config, dense_scenes.generate_dense_dataset)
    return out, config


def test_same_options_give_identical_files(small_set, tmp_path):
    out, config = small_set
    assert_generation_is_deterministic(dense_scenes.generate_dense_dataset, out, config,
                                       DenseScenesConfig(**SMALL, seed=1), tmp_path, num_images=12 + 4 + 10)


def test_unseen_objects_never_in_training_images(small_set):
    out, config = small_set
    unseen = {i + 1 for i in config.unseen_ids}  # json category ids
    for split in ("train", "val"):
        categories = {a["category_id"] for a in read_split(out, split)["annotations"]}
        assert categories and not categories & unseen
    zsd, gzsd = read_split(out, "test_zsd"), read_split(out, "test_gzsd")
    assert {a["category_id"] for a in zsd["annotations"]} <= unseen
    assert {im["id"] for im in zsd["images"]} == {a["image_id"] for a in zsd["annotations"]}
    assert any(a["category_id"] not in unseen for a in gzsd["annotations"])


def test_scenes_are_dense_and_objects_stay_mostly_visible(small_set):
    out, config = small_set
    train = read_split(out, "train")
    per_image = np.bincount([a["image_id"] - 1 for a in train["annotations"]], minlength=12)
    assert per_image.min() >= 1 and per_image.mean() >= 4  # most placements succeed
    boxes = np.array([a["bbox"] for a in train["annotations"]])
    assert (boxes[:, :2] >= 0).all() and (boxes[:, :2] + boxes[:, 2:] <= config.image_size).all()
    overlaps = 0
    for image_id in np.unique([a["image_id"] for a in train["annotations"]]):
        b = np.array([a["bbox"] for a in train["annotations"] if a["image_id"] == image_id])
        x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
        inter = (np.minimum(x1[:, None], x1) > np.maximum(x0[:, None], x0)) & (
            np.minimum(y1[:, None], y1) > np.maximum(y0[:, None], y0))
        overlaps += inter.sum() - len(b)
    assert overlaps > 0  # unlike zsd_shapes, boxes overlap


def test_occlusion_keeps_min_visible_share():
    config = DenseScenesConfig(**SMALL)
    rng = np.random.default_rng(5)
    ids = [config.seen_ids[0]] * 8
    _, objects = dense_scenes.render_dense_image(rng, config, ids)
    # a full object of the smallest size has at least ~0.4 * side^2 pixels (a triangle or cross)
    smallest = 0.4 * config.object_size[0] ** 2 * config.min_visible
    assert len(objects) >= 4 and all(o["area"] >= smallest for o in objects)


def test_default_design():
    config = DenseScenesConfig()
    assert len(config.class_names) == 40 and len(config.unseen_ids) == 8
    assert "red striped circle" in config.class_names
    unseen = [config.class_triples[i] for i in config.unseen_ids]
    seen = [config.class_triples[i] for i in config.seen_ids]
    for k in range(3):  # every attribute value of an unseen class also occurs in seen classes
        assert {t[k] for t in unseen} <= {t[k] for t in seen}
    with pytest.raises(ValueError, match="occur in no seen class"):
        DenseScenesConfig(colours=("red", "green"), unseen=[("red", t, s) for t in ("solid", "striped")
                                                            for s in ("circle", "square", "triangle", "cross")])
    with pytest.raises(ValueError, match="shapes"):
        DenseScenesConfig(shapes=("circle", "hexagon"))  # a distractor shape
    with pytest.raises(ValueError, match="embedding_fidelity"):
        DenseScenesConfig(embedding_fidelity=1.5)


def test_embedding_fidelity_sets_how_predictive_embeddings_are(small_set):
    out, config = small_set
    emb = dense_scenes.dense_class_embeddings(config)
    assert emb.shape == (40, 32 + 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(load_class_embeddings(os.path.join(out, "class_embeddings.tsv"),
                                                     config.class_names), emb, rtol=1e-6)
    r2 = [dense_scenes.attribute_r2(DenseScenesConfig(embedding_fidelity=f)) for f in (0.0, 0.6, 1.0)]
    assert r2[0] < 0.1 < r2[1] < r2[2]
    assert 0.35 < r2[1] < 0.6  # the documented default: about half (datasets/README.md)


def test_registration_generates_on_first_use(tmp_path):
    names = register_zsd_dense("test_dense_reg", root=str(tmp_path), **SMALL)
    assert register_zsd_dense("test_dense_reg", root=str(tmp_path), **SMALL) == names
    with pytest.raises(ValueError, match="already registered"):
        register_zsd_dense("test_dense_reg", root=str(tmp_path), **dict(SMALL, seed=3))
    assert os.listdir(tmp_path) == []
    meta = MetadataCatalog.get("test_dense_reg_train")
    assert len(meta.thing_classes) == 40 and len(meta.unseen_classes) == 8
    records = DatasetCatalog.get("test_dense_reg_train")
    assert len(records) == 12 and all(os.path.isfile(r["file_name"]) for r in records)
    assert "zsd_dense_train" in DatasetCatalog and "zsd_dense_tiny_test_gzsd" in DatasetCatalog


def test_held_out_world_hides_its_classes_from_training_and_the_real_unseen_from_every_image(tmp_path):
    """A validation world: 8 seen classes held out as unseen, the real unseen classes in no image,
    the same class list and embeddings, and the base set's folder names unchanged."""
    base = DenseScenesConfig(**SMALL)
    world = DenseScenesConfig(**dense_scenes.held_out_world(1, **SMALL))
    held_out = sorted(set(world.unseen_ids) - set(base.unseen_ids))
    assert len(held_out) == 8 and set(held_out) <= set(base.seen_ids)
    assert world.absent_ids == base.unseen_ids and world.class_names == base.class_names
    assert DenseScenesConfig(**dense_scenes.held_out_world(2, **SMALL)).unseen_ids != world.unseen_ids
    np.testing.assert_array_equal(dense_scenes.dense_class_embeddings(world),
                                  dense_scenes.dense_class_embeddings(base))
    assert DenseScenesConfig().digest() == "98dd43ac"  # absent unset: the folder of before
    out = str(tmp_path / "world")
    ensure_generated(out, world, dense_scenes.generate_dense_dataset)
    json_ids = lambda ids: {i + 1 for i in ids}  # noqa: E731
    for split in ("train", "val"):
        assert {a["category_id"] for a in read_split(out, split)["annotations"]} <= json_ids(world.seen_ids)
    gzsd = read_split(out, "test_gzsd")
    drawn = {a["category_id"] for a in gzsd["annotations"]}
    assert not drawn & json_ids(base.unseen_ids) and drawn & json_ids(held_out) and drawn & json_ids(world.seen_ids)
    first = {}  # the first object of every validation image is a held-out class
    for a in sorted(gzsd["annotations"], key=lambda a: a["id"]):
        first.setdefault(a["image_id"], a["category_id"])
    assert len(first) == SMALL["num_test"] and set(first.values()) <= json_ids(held_out)


def test_absent_classes_must_be_unseen_and_leave_one_drawn():
    unseen = DenseScenesConfig().unseen
    with pytest.raises(ValueError, match="absent classes"):
        DenseScenesConfig(absent=(("red", "solid", "circle"),))  # a seen class
    with pytest.raises(ValueError, match="absent classes"):
        DenseScenesConfig(absent=unseen)  # nothing unseen left to draw


def test_held_out_worlds_are_registered():
    for split in range(dense_scenes.HELD_OUT_SPLITS):
        meta = MetadataCatalog.get(f"zsd_dense_heldout{split}_test_zsd")
        assert len(meta.unseen_classes) == 16 and len(meta.seen_classes) == 24
        assert f"zsd_dense_tiny_heldout{split}_train" in DatasetCatalog.list()
        small = MetadataCatalog.get(f"zsd_dense_heldout{split}_h4_test_zsd")
        assert len(small.unseen_classes) == 12 and len(small.seen_classes) == 28
        assert f"zsd_dense_tiny_heldout{split}_h4_train" in DatasetCatalog.list()
