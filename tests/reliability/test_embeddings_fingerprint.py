"""A generator is never resumed or used with other class embeddings than it was trained with
(issue 10, item 4): checkpoints hold a fingerprint of the embeddings and the class list, and a
mismatch (values, order, classes or dimension) is an error naming both embedding files."""
import logging
import shutil
from pathlib import Path

import pytest
import torch

from zsdet.config import get_zsdet_cfg
from zsdet.data.zsd_split import ZeroShotSplit, class_embeddings_from_config
from zsdet.engine import STAGES, ZSDPipeline
from zsdet.synthesis import SynthesisSettings, SynthesisTrainer, TensorFeatureSource
from zsdet.synthesis.checkpoint import BEST, CHECKPOINT, FORMAT, embeddings_record

NAMES = [f"class{i}" for i in range(6)]
OLD, NEW = "/data/old_embeddings.tsv", "/data/new_embeddings.tsv"
TINY = str(Path(__file__).resolve().parents[2] / "configs/quick_schedules/zsd_shapes_tiny_instant_test.yaml")


def settings(epochs=1):
    return SynthesisSettings(fusion="alf", gen_hidden=16, disc_hidden=16, enc_hidden=16, epochs=epochs,
                             batch_size=16, critic_iters=1, cls_pretrain_epochs=1, val_fraction=0.0,
                             val_synth_sets=8, patience=0)


def embeddings(dim=4, seed=0):
    return torch.nn.functional.normalize(torch.randn(6, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def trainer(out, emb, source, names=NAMES, epochs=1):
    return SynthesisTrainer(settings(epochs), emb, 8, str(out), "cpu", class_names=names, embeddings_source=source)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A generator directory trained one epoch with OLD's embeddings."""
    out = tmp_path_factory.mktemp("generator")
    g = torch.Generator().manual_seed(1)
    y = torch.zeros(64, 6)
    y[torch.arange(64), torch.randint(0, 4, (64,), generator=g)] = 1  # seen classes 0..3
    trainer(out, embeddings(), OLD).fit(TensorFeatureSource(torch.rand(64, 8, generator=g), y))
    return out, TensorFeatureSource(torch.rand(64, 8, generator=g), y)


@pytest.mark.parametrize("changed", ["row order", "values", "class names", "dimension"])
def test_resume_and_load_refuse_other_embeddings(trained, changed):
    out, data = trained
    emb, names = embeddings(), list(NAMES)
    if changed == "row order":  # the same vectors assigned to other classes
        emb = emb[[1, 0, 2, 3, 4, 5]]
    elif changed == "values":
        emb = embeddings(seed=1)
    elif changed == "class names":
        names[5] = "renamed"
    else:
        emb = embeddings(dim=5)
    for action in (lambda t: t.fit(data), lambda t: t.load_best()):
        t = trainer(out, emb, NEW, names, epochs=2)
        with pytest.raises(ValueError, match="trained with the class embeddings") as err:
            action(t)
        assert OLD in str(err.value) and NEW in str(err.value)
        assert "size mismatch" not in str(err.value)


def test_same_embeddings_resume(trained, tmp_path):
    out, data = trained
    shutil.copytree(out, tmp_path / "generator")
    result = trainer(tmp_path / "generator", embeddings(), NEW, epochs=2).fit(data)  # other path, same vectors
    assert result["epochs_run"] == 2


def test_checkpoint_without_fingerprint_is_used_with_a_warning(trained, tmp_path, caplog):
    out, _ = trained
    state = torch.load(out / BEST, weights_only=True)
    del state["embeddings"]  # as written by an older zsdet
    torch.save(state, tmp_path / BEST)
    with caplog.at_level(logging.WARNING, logger="zsdet.synthesis.trainer"):
        trainer(tmp_path, embeddings(seed=1), NEW).load_best()
    assert "no class-embedding fingerprint" in caplog.text and str(tmp_path / BEST) in caplog.text


def test_checkpoints_record_fingerprint_and_source(trained):
    out, _ = trained
    for name in (CHECKPOINT, BEST):
        saved = torch.load(out / name, weights_only=True)["embeddings"]
        assert saved["source"] == OLD and saved["shape"] == [6, 4] and len(saved["sha256"]) == 64


@pytest.mark.parametrize("stages,name", [(["detector", "features", "classifier"], BEST),
                                         (["generator", "classifier"], CHECKPOINT)])
def test_pipeline_compares_the_generator_fingerprint_before_any_stage(tmp_path, monkeypatch, stages, name):
    """issue 17, item 9: a generator of other embeddings that a later stage would use stops the run
    before its first stage, not after the detector and the RoI bank."""
    cfg = get_zsdet_cfg(TINY, ["OUTPUT_DIR", str(tmp_path)])
    ran = []
    for stage in STAGES:
        monkeypatch.setattr(ZSDPipeline, f"run_{stage}", lambda self, s=stage: ran.append(s))
    emb, names = class_embeddings_from_config(cfg), ZeroShotSplit.from_dataset(cfg.DATASETS.TRAIN[0]).class_names
    (tmp_path / "generator").mkdir()
    for vectors, source in ((emb, "/data/same.tsv"), (emb[::-1].copy(), OLD)):
        torch.save({"format": FORMAT, "embeddings": embeddings_record(torch.from_numpy(vectors), names, source)},
                   tmp_path / "generator" / name)
        if source == OLD:
            with pytest.raises(ValueError, match=f"{tmp_path / 'generator' / name} was trained with the class "
                                                 f"embeddings {OLD}"):
                ZSDPipeline(cfg).run(stages)
        else:
            ZSDPipeline(cfg).run(stages)
    assert ran == stages  # only the run with the same embeddings (another file name) started its stages
