"""SynthesisTrainer: every fusion x GAN trains, errors are clear, resume is exact, synthesis is reproducible."""
import json
import math

import pytest
import torch

from zsdet.synthesis import (
    FeatureScaler,
    LabelSets,
    SynthesisTrainer,
    TensorFeatureSource,
    train_multilabel_classifier,
    unseen_label_sets,
)
from zsdet.synthesis.distributed import step_groups, usable_batches

from synthesis_helpers import compositional_problem, small_cfg

TIMES = ("sec", "data_sec")  # wall-clock figures of an epoch: differ from run to run


@pytest.fixture(scope="module")
def tiny():
    return compositional_problem(n_train=160, n_test=20, dim=16)


def build(cfg, tiny, out, **kw):
    return SynthesisTrainer.from_config(cfg, tiny.emb, tiny.x_train.shape[1], str(out), **kw)


@pytest.mark.parametrize("gan", ["fclswgan", "fvaegan"])
@pytest.mark.parametrize("fusion", ["alf", "flf", "clf"])
def test_every_fusion_and_gan_trains(tiny, tmp_path, fusion, gan):
    trainer = build(small_cfg(FUSION=fusion, GAN=gan, EPOCHS=1), tiny, tmp_path)
    before = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    result = trainer.fit(TensorFeatureSource(tiny.x_train, tiny.y_train))
    after = trainer.generator.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k != "class_embeddings")
    (line,) = (tmp_path / "metrics.jsonl").read_text().splitlines()
    metrics = json.loads(line)
    assert metrics["iterations"] > 0 and all(math.isfinite(v) for v in metrics.values())
    assert (metrics["classifier_bce"] > 0) == (gan == "fclswgan")
    assert (metrics["reconstruction"] > 0) == (gan == "fvaegan")
    assert result["best_epoch"] == 0 and 0 <= result["best_val_map"] <= 1
    assert (tmp_path / "model_best.pth").exists() and (tmp_path / "last_checkpoint.pth").exists()
    assert list((tmp_path / "tensorboard").iterdir())


def state_of(path):
    return torch.load(path, weights_only=True)


def assert_same_tensors(a, b, where=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}/{i}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b or (a != a and b != b), where


@pytest.mark.parametrize("gan,extra", [("fvaegan", {}), ("fclswgan", {}),
                                       ("fclswgan", {"SEMANTIC_WEIGHT": 1.0, "SEMANTIC_FLOOR": True})])
def test_kill_and_resume_equals_uninterrupted_run(tiny, tmp_path, killed_after_checkpoint, gan, extra):
    cfg = small_cfg(FUSION="clf", GAN=gan, EPOCHS=3, CLF_DROPOUT=0.2, **extra)  # dropout: exercises the RNG streams
    train = TensorFeatureSource(tiny.x_train, tiny.y_train)
    build(cfg, tiny, tmp_path / "straight").fit(train)

    with killed_after_checkpoint(epoch=1):
        build(cfg, tiny, tmp_path / "resumed").fit(train)
    assert state_of(tmp_path / "resumed" / "last_checkpoint.pth")["epoch"] == 1
    torch.manual_seed(12345)  # a new process would have a different global RNG state
    trainer = build(cfg, tiny, tmp_path / "resumed")
    trainer.fit(train)

    straight = state_of(tmp_path / "straight" / "last_checkpoint.pth")
    resumed = state_of(tmp_path / "resumed" / "last_checkpoint.pth")
    assert straight["epoch"] == resumed["epoch"] == 2
    for key in ("models", "optimizers", "scaler", "train_sets", "best"):
        assert_same_tensors(straight[key], resumed[key], key)
    lines = [[json.loads(ln) for ln in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
             for run in ("straight", "resumed")]
    assert [m["epoch"] for m in lines[1]] == [0, 1, 2]
    for a, b in zip(*lines):
        assert {k: v for k, v in a.items() if k not in TIMES} == {k: v for k, v in b.items() if k not in TIMES}


def test_corrupt_checkpoint_is_named(tiny, tmp_path):
    (tmp_path / "last_checkpoint.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt synthesis checkpoint .*last_checkpoint.pth"):
        build(small_cfg(), tiny, tmp_path).fit(TensorFeatureSource(tiny.x_train, tiny.y_train))
    with pytest.raises(FileNotFoundError, match="model_best.pth"):
        build(small_cfg(), tiny, tmp_path / "empty").load_best()
    torch.save({"format": 1, "epoch": 0}, tmp_path / "last_checkpoint.pth")  # an older layout
    with pytest.raises(ValueError, match="not a zsdet synthesis checkpoint of format 2 .found 1"):
        build(small_cfg(), tiny, tmp_path).fit(TensorFeatureSource(tiny.x_train, tiny.y_train))


def test_resume_with_different_settings_is_refused(tiny, tmp_path):
    train = TensorFeatureSource(tiny.x_train, tiny.y_train)
    build(small_cfg(EPOCHS=1), tiny, tmp_path).fit(train)
    with pytest.raises(ValueError, match="different settings.*GEN_HIDDEN"):
        build(small_cfg(EPOCHS=2, GEN_HIDDEN=8), tiny, tmp_path).fit(train)


def test_clear_errors_for_bad_inputs(tiny, tmp_path):
    d = tiny.x_train.shape[1]
    with pytest.raises(ValueError, match="SYNTHESIS.FEATURE_DIM=99 but the data has 16"):
        build(small_cfg(FEATURE_DIM=99), tiny, tmp_path)
    with pytest.raises(ValueError, match="SYNTHESIS.EMBED_DIM=3 but the data has 8"):
        build(small_cfg(EMBED_DIM=3), tiny, tmp_path)
    trainer = build(small_cfg(), tiny, tmp_path)
    with pytest.raises(ValueError, match="labels have 17 columns but the class-embedding matrix has 16 rows"):
        trainer.fit(TensorFeatureSource(tiny.x_train, torch.cat([tiny.y_train, tiny.y_train[:, :1]], 1)))
    with pytest.raises(ValueError, match="features have dim 15, the trainer expects 16"):
        trainer.fit(TensorFeatureSource(tiny.x_train[:, :15], tiny.y_train))
    bad = tiny.x_train.clone()
    bad[7, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite .* row 7"):
        TensorFeatureSource(bad, tiny.y_train)
    emb = tiny.emb.clone()
    emb[2, 0] = float("inf")
    with pytest.raises(ValueError, match="class embeddings: non-finite .* row 2"):
        SynthesisTrainer.from_config(small_cfg(), emb, d, str(tmp_path))
    with pytest.raises(ValueError, match="SYNTHESIS.GAN"):
        build(small_cfg(GAN="wgan"), tiny, tmp_path)
    with pytest.raises(ValueError, match="OUTPUT_ACTIVATION='sigmoid'"):
        build(small_cfg(GAN="fvaegan", OUTPUT_ACTIVATION="relu"), tiny, tmp_path)
    with pytest.raises(ValueError, match=r"SYNTHESIS.SEMANTIC_WEIGHT must be >= 0, got -1.0"):
        build(small_cfg(SEMANTIC_WEIGHT=-1.0), tiny, tmp_path)


class NaNSource(TensorFeatureSource):
    """A streaming source whose second batch holds a NaN (sources may not check up front)."""

    def iter_batches(self, batch_size, epoch, seed):
        for i, (x, y) in enumerate(super().iter_batches(batch_size, epoch, seed)):
            if i == 1:
                x = x.clone()
                x[0, 0] = float("nan")
            yield x, y


def test_nan_in_a_streamed_batch_is_an_error(tiny, tmp_path):
    source = NaNSource(tiny.x_train, tiny.y_train)
    with pytest.raises(ValueError, match="training features: non-finite"):
        build(small_cfg(VAL_FRACTION=0.0), tiny, tmp_path).fit(source)


def test_synthesize_is_reproducible_and_in_data_units(tiny, tmp_path):
    trainer = build(small_cfg(EPOCHS=1, FUSION="flf"), tiny, tmp_path)
    trainer.fit(TensorFeatureSource(tiny.x_train, tiny.y_train))
    sets = LabelSets.from_lists([[12], [13, 14], [1, 15]], 16)
    feats, labels = trainer.synthesize(sets, num_per_set=3, seed=7, batch_size=2)
    assert feats.shape == (9, 16) and labels.shape == (9, 16)
    assert labels[3:6].nonzero()[:, 1].unique().tolist() == [13, 14]
    again, _ = trainer.synthesize(sets, num_per_set=3, seed=7)  # other batch size, same noise stream
    torch.testing.assert_close(again, feats)
    assert not torch.allclose(trainer.synthesize(sets, 3, seed=8)[0], feats)
    low, high = tiny.x_train.min(0).values, tiny.x_train.max(0).values  # sigmoid outputs, scaler inverted
    assert bool(((feats >= low - 1e-5) & (feats <= high + 1e-5)).all())
    # a fresh trainer loads the selected model and synthesizes the same features
    fresh = build(small_cfg(EPOCHS=1, FUSION="flf"), tiny, tmp_path)
    assert fresh.load_best()["epoch"] == 0
    assert torch.equal(fresh.train_sets.idx, trainer.train_sets.idx)  # for sample_label_sets in a new process
    torch.testing.assert_close(fresh.synthesize(sets, 3, seed=7)[0], feats)
    with pytest.raises(KeyError, match="class id 20"):
        trainer.synthesize(LabelSets.from_lists([[20]], 21), 1, seed=0)
    with pytest.raises(ValueError, match="empty label set at position 1"):
        trainer.synthesize(LabelSets.from_lists([[1], []], 16), 1, seed=0)
    with pytest.raises(ValueError, match="no class ids"):
        unseen_label_sets([])


def test_samples_without_usable_label_set_are_skipped(tiny, tmp_path):
    y = tiny.y_train.clone()
    y[:10] = 0  # no label
    y[10:15, :4] = 1  # 4 labels > MAX_SET_SIZE = 3
    y[10:15, 4:] = 0
    trainer = build(small_cfg(VAL_FRACTION=0.0, EPOCHS=1, MAX_SET_SIZE=3, CRITIC_ITERS=2), tiny, tmp_path)
    trainer.fit(TensorFeatureSource(tiny.x_train, y))
    assert len(trainer.train_sets) == len(y) - 15
    metrics = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert metrics["skipped_samples"] == 2 * 15  # per epoch: CRITIC_ITERS passes over the data


def test_training_batches_are_full_batches_of_usable_samples(tiny, tmp_path):
    """Unusable samples are dropped and refilled from the stream: every batch keeps BATCH_SIZE rows
    (constant GEMM shapes) and every usable sample of a pass appears once, in stream order."""
    y = tiny.y_train.clone()
    y[::7] = 0  # no label
    source = TensorFeatureSource(tiny.x_train, y)
    trainer = build(small_cfg(BATCH_SIZE=16, CRITIC_ITERS=2), tiny, tmp_path)
    batches = list(usable_batches(source, 0, trainer.s, trainer._usable))
    assert batches and all(len(x) == len(yb) == 16 for x, yb in batches)
    stream = [(x, yb) for j in range(2) for x, yb in source.iter_batches(16, j, trainer.s.seed)]
    x_all, y_all = torch.cat([x for x, _ in stream]), torch.cat([yb for _, yb in stream])
    usable = y_all.sum(1) > 0
    expected = x_all[usable][:16 * len(batches)]
    assert torch.equal(torch.cat([x for x, _ in batches]), expected)
    assert int(usable.sum()) - len(expected) < 16  # only an incomplete last batch is dropped
    groups = list(step_groups(source, 0, trainer.s, trainer._usable))
    assert len(groups) == len(batches) // 2 and all(len(g) == 2 for g in groups)


def test_without_validation_the_last_epoch_is_kept(tiny, tmp_path):
    result = build(small_cfg(VAL_FRACTION=0.0, EPOCHS=2), tiny, tmp_path).fit(
        TensorFeatureSource(tiny.x_train, tiny.y_train))
    assert result["best_epoch"] == 1 and math.isnan(result["best_val_map"])


def fit_with_scores(tiny, tmp_path, monkeypatch, scores, **overrides):
    """Fit the tiny problem with the validation scores ``scores``, epoch by epoch."""
    trainer = build(small_cfg(**overrides), tiny, tmp_path)
    given = iter(scores)
    monkeypatch.setattr(trainer, "validate", lambda: next(given))
    return trainer.fit(TensorFeatureSource(tiny.x_train, tiny.y_train))


def test_early_stopping(tiny, tmp_path, monkeypatch):
    result = fit_with_scores(tiny, tmp_path, monkeypatch, [0.1, 0.3, 0.2, 0.25, 0.9, 0.9], EPOCHS=6, PATIENCE=2)
    assert result == {"best_epoch": 1, "best_val_map": 0.3, "epochs_run": 4, "stopped_early": True}


def test_a_flat_start_is_trained_through_not_stopped_with_the_first_epoch(tiny, tmp_path, monkeypatch, caplog):
    """A generator whose score stays flat for PATIENCE epochs and rises later (a slow GAN start; seen on a
    validation world, session 43) is not stopped with its first epoch's generator."""
    result = fit_with_scores(tiny, tmp_path / "slow", monkeypatch, [0.07, 0.07, 0.06, 0.07, 0.2, 0.1, 0.1, 0.1],
                             EPOCHS=8, PATIENCE=2)
    assert result == {"best_epoch": 4, "best_val_map": 0.2, "epochs_run": 7, "stopped_early": True}
    with caplog.at_level("WARNING", logger="zsdet.synthesis.trainer"):
        never = fit_with_scores(tiny, tmp_path / "never", monkeypatch, [0.5, 0.4, 0.3, 0.2], EPOCHS=4, PATIENCE=1)
    assert never == {"best_epoch": 0, "best_val_map": 0.5, "epochs_run": 4, "stopped_early": False}
    assert "never beat the first epoch's" in caplog.text


def test_feature_scaler_roundtrip():
    x = torch.tensor([[1.0, 5.0, 2.0], [3.0, 5.0, 0.0]])
    scaler = FeatureScaler("minmax")
    scaler.partial_fit(x[:1])
    scaler.partial_fit(x[1:])
    torch.testing.assert_close(scaler.transform(x), torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(scaler.inverse(scaler.transform(x)), x)
    restored = FeatureScaler("minmax")
    restored.load_state_dict(scaler.state_dict())
    torch.testing.assert_close(restored.transform(x), scaler.transform(x))
    assert FeatureScaler("none").transform(x) is x


def test_train_multilabel_classifier_learns_a_separable_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    y = torch.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0], 1).float()
    head = train_multilabel_classifier(x, y, epochs=30, batch_size=50, lr=1e-2, seed=0, device="cpu")
    with torch.no_grad():
        accuracy = ((head(x) > 0).float() == y).float().mean()
    assert head.weight.shape == (2, 5) and accuracy > 0.95


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("gan,extra", [("fclswgan", {}), ("fvaegan", {}), ("fclswgan", {"SEMANTIC_WEIGHT": 1.0})])
def test_no_host_device_sync_inside_an_iteration(tiny, tmp_path, gan, extra):
    cfg = small_cfg(GAN=gan, FUSION="clf", DEVICE="cuda", AMP_DTYPE="bfloat16", **extra)
    trainer = build(cfg, tiny, tmp_path)
    source = TensorFeatureSource(tiny.x_train, tiny.y_train)
    trainer._prepare(source)
    trainer._wrap_models()
    groups = list(step_groups(source, 0, trainer.s, trainer._usable))
    gen = torch.Generator("cuda").manual_seed(0)
    seen = trainer.seen_classes.cuda()
    trainer._iteration(groups[0], gen, seen)  # warm-up (lazy CUDA initialisation may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        stats = trainer._iteration(groups[1], gen, seen)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert bool(torch.isfinite(stats).all())
