"""The feature-quality report of a generator, the background-aware selection probe and the new
generator options (clamp outputs, CLF variants, mode seeking), on small problems."""
import json
from types import SimpleNamespace

import pytest
import torch

from zsdet.synthesis import LabelSets, SynthesisTrainer, TensorFeatureSource
from zsdet.synthesis.quality import REPORT_FIGURE, REPORT_JSON, assess, read_report, write_report

from synthesis_helpers import compositional_problem, small_cfg

C, D = 5, 12


class StubTrainer:
    """Synthesizes around fixed class means with a chosen spread and offset (a known generator)."""

    def __init__(self, means, spread, offset=0.0):
        self.means, self.spread, self.offset = means, spread, offset
        self.num_classes = len(means)
        self.train_sets = LabelSets.from_lists([[c] for c in range(self.num_classes)] * 20, self.num_classes)
        self.seen_classes = torch.arange(self.num_classes)
        self.s = SimpleNamespace(seed=0, val_synth_sets=200, val_ridge=0.1)

    def synthesize(self, sets, num_per_set, seed):
        y = sets.repeat_each(num_per_set).to_multi_hot(self.num_classes)
        noise = torch.randn(len(y), self.means.shape[1], generator=torch.Generator().manual_seed(seed))
        return (y @ self.means) / y.sum(1, keepdim=True) + self.spread * noise + self.offset, y


def real_rows(means, seed=1, per=60):
    labels = torch.arange(len(means)).repeat_interleave(per)
    x = means[labels] + torch.randn(len(labels), means.shape[1], generator=torch.Generator().manual_seed(seed))
    return x, torch.nn.functional.one_hot(labels, len(means)).float()


@pytest.fixture(scope="module")
def means():
    return 4 * torch.randn(C, D, generator=torch.Generator().manual_seed(0))


def test_assess_a_matched_generator(means):
    x, y = real_rows(means)
    report = assess(StubTrainer(means, spread=1.0), x, y)
    assert report.spread_ratio == pytest.approx(1.0, abs=0.15)
    assert report.real_vs_synth_acc < 0.62 and report.tstr_ap > 95 and report.num_real == len(x)


def test_assess_a_collapsed_and_offset_generator(means):
    x, y = real_rows(means)
    report = assess(StubTrainer(means, spread=0.01, offset=1.5), x, y)
    assert report.spread_ratio < 0.05 and report.real_vs_synth_acc > 0.95


def test_report_files(means, tmp_path):
    x, y = real_rows(means)
    bg = torch.randn(200, D, generator=torch.Generator().manual_seed(3))
    report = assess(StubTrainer(means, spread=1.0), x, y, background=(bg[:100], bg[100:]), classes=[0, 2])
    summary = write_report(report, str(tmp_path), "stub")
    assert read_report(str(tmp_path)) == pytest.approx(summary)
    assert (tmp_path / REPORT_FIGURE).stat().st_size > 1000
    assert json.loads((tmp_path / REPORT_JSON).read_text())["histogram"]["edges"]
    assert read_report(str(tmp_path / "none")) is None


@pytest.fixture(scope="module")
def tiny():
    return compositional_problem(n_train=160, n_test=20, dim=16)


def test_selection_probe_with_background_and_epoch_callback(tiny, tmp_path):
    """fit() with real background: the epoch score is the background-aware TSTR mAP; the callback
    sees every epoch and does not change training."""
    train = TensorFeatureSource(tiny.x_train, tiny.y_train)
    background = (torch.rand(64, 16), torch.rand(32, 16))
    seen_epochs = []
    a = SynthesisTrainer.from_config(small_cfg(EPOCHS=2), tiny.emb, 16, str(tmp_path / "a"))
    result = a.fit(train, background=background, epoch_callback=lambda e: (seen_epochs.append(e),
                                                                           a.synthesize(a.train_sets[:4], 2, 0)))
    b = SynthesisTrainer.from_config(small_cfg(EPOCHS=2), tiny.emb, 16, str(tmp_path / "b"))
    b.fit(train, background=background)
    assert seen_epochs == [0, 1] and 0 <= result["best_val_map"] <= 1
    for k, v in a.generator.state_dict().items():
        assert torch.equal(v, b.generator.state_dict()[k]), k
    c = SynthesisTrainer.from_config(small_cfg(EPOCHS=2), tiny.emb, 16, str(tmp_path / "c"))
    assert c.fit(train)["best_val_map"] != result["best_val_map"]  # the background changes the score


@pytest.mark.parametrize("overrides", [
    dict(FUSION="clf", OUTPUT_ACTIVATION="clamp", CLF_INPUT="pre_activation", CLF_INIT="identity",
         CLF_DROPOUT=0.0, CLF_BRANCH_NOISE="separate"),
    dict(FUSION="alf", MODE_SEEKING_WEIGHT=0.01),
    dict(FUSION="clf", GAN="fvaegan", VAE_RECON="mse", OUTPUT_ACTIVATION="clamp", CLF_BRANCH_NOISE="separate"),
])
def test_new_generator_options_train(tiny, tmp_path, overrides):
    trainer = SynthesisTrainer.from_config(small_cfg(EPOCHS=1, **overrides), tiny.emb, 16, str(tmp_path))
    trainer.fit(TensorFeatureSource(tiny.x_train, tiny.y_train))
    x, _ = trainer.synthesize(trainer.train_sets[:8], 4, seed=0)
    assert x.shape == (32, 16) and bool(torch.isfinite(x).all())


def test_mode_seeking_is_refused_with_fvaegan(tiny, tmp_path):
    with pytest.raises(ValueError, match="SYNTHESIS.MODE_SEEKING_WEIGHT"):
        SynthesisTrainer.from_config(small_cfg(GAN="fvaegan", VAE_RECON="mse", OUTPUT_ACTIVATION="clamp",
                                               MODE_SEEKING_WEIGHT=0.1), tiny.emb, 16, str(tmp_path))


def test_checkpoint_without_the_new_settings_resumes_with_their_legacy_values(tiny, tmp_path):
    """A checkpoint written before SYNTHESIS.CLF_INPUT etc. existed holds no such keys: it resumes
    when the settings have the old behaviour and is refused otherwise."""
    train = TensorFeatureSource(tiny.x_train, tiny.y_train)
    SynthesisTrainer.from_config(small_cfg(EPOCHS=1), tiny.emb, 16, str(tmp_path)).fit(train)
    path = tmp_path / "last_checkpoint.pth"
    state = torch.load(path, weights_only=True)
    for key in ("clf_input", "clf_init", "clf_branch_noise", "mode_seeking_weight"):
        del state["settings"][key]
    torch.save(state, path)
    SynthesisTrainer.from_config(small_cfg(EPOCHS=2), tiny.emb, 16, str(tmp_path)).fit(train)
    with pytest.raises(ValueError, match="CLF_INIT"):
        SynthesisTrainer.from_config(small_cfg(EPOCHS=3, CLF_INIT="identity"), tiny.emb, 16, str(tmp_path)).fit(train)
