"""Issue 10 items 7, 9 and 12 (detector part): artifacts are written atomically, a full disk is
reported as such with the file's name, and a truncated detector checkpoint is named or rebuilt."""
import errno
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg

import zsdet
from zsdet.config import get_zsdet_cfg
from zsdet.engine import ZSDPipeline, ZSDTrainer
from zsdet.engine.checkpoints import AtomicDetectionCheckpointer, checkpoint_problem
from zsdet.synthesis import SynthesisTrainer, TensorFeatureSource
from zsdet.synthesis.checkpoint import CHECKPOINT

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "quick_schedules" / "zsd_shapes_tiny_instant_test.yaml"
DEV_FULL = "/dev/full"  # every write fails with ENOSPC, as on a full disk

needs_dev_full = pytest.mark.skipif(not os.path.exists(DEV_FULL), reason="needs /dev/full (Linux)")


def fill_disk_for(path: Path):
    """The next atomic write of ``path`` goes to its ``.tmp`` file: make that file /dev/full."""
    os.symlink(DEV_FULL, str(path) + ".tmp")


def truncate(src: Path, dst: Path):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])


@needs_dev_full
def test_disk_full_while_writing_a_generator_checkpoint_says_so_and_names_the_file(tmp_path):
    cfg = get_cfg()
    zsdet.add_zsdet_config(cfg)
    s = cfg.SYNTHESIS
    s.GEN_HIDDEN = s.DISC_HIDDEN = s.ENC_HIDDEN = s.CLF_FF_HIDDEN = 16
    s.EPOCHS, s.BATCH_SIZE, s.VAL_SYNTH_SETS, s.CLS_PRETRAIN_EPOCHS, s.DEVICE = 1, 16, 8, 1, "cpu"
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(64, 6)
    labels[torch.arange(64), torch.randint(0, 4, (64,), generator=g)] = 1  # classes 4, 5 unseen
    trainer = SynthesisTrainer.from_config(cfg, torch.randn(6, 5, generator=g), 8, str(tmp_path))
    fill_disk_for(tmp_path / CHECKPOINT)
    with pytest.raises(OSError, match=f"no space left on device while writing {tmp_path / CHECKPOINT}") as e:
        trainer.fit(TensorFeatureSource(torch.rand(64, 8, generator=g), labels))
    assert e.value.errno == errno.ENOSPC
    assert not (tmp_path / CHECKPOINT).exists() and not os.path.lexists(str(tmp_path / CHECKPOINT) + ".tmp")


@needs_dev_full
def test_disk_full_while_checkpointing_the_detector_keeps_the_previous_checkpoint(tmp_path):
    checkpointer = AtomicDetectionCheckpointer(torch.nn.Linear(3, 2), str(tmp_path))
    checkpointer.save("model_0000000", iteration=0)
    fill_disk_for(tmp_path / "model_0000001.pth")
    with pytest.raises(OSError, match=f"no space left on device while writing {tmp_path / 'model_0000001.pth'}"):
        checkpointer.save("model_0000001", iteration=1)
    assert not (tmp_path / "model_0000001.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"
    assert checkpoint_problem(str(tmp_path / "model_0000000.pth")) is None


@pytest.fixture(scope="module")
def detector_checkpoint(tmp_path_factory):
    """``model_0000001.pth`` of the tiny detector as the trainer writes it (iteration 1 done)."""
    out = tmp_path_factory.mktemp("detector")
    cfg = get_zsdet_cfg(str(CONFIG), ["OUTPUT_DIR", str(out)])
    trainer = ZSDTrainer(cfg)
    trainer.iter = 1
    trainer.checkpointer.save("model_0000001", iteration=1)
    return out / "model_0000001.pth"


def tiny_cfg(out: Path, *opts):
    out.mkdir(exist_ok=True)
    return get_zsdet_cfg(str(CONFIG), ["OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "2", *opts])


def test_truncated_model_final_is_rebuilt_with_a_warning(tmp_path, detector_checkpoint, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("zsdet"), "propagate", True)
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(detector_checkpoint, out / "model_0000001.pth")
    truncate(detector_checkpoint, out / "model_final.pth")  # e.g. a disk full under the old writer
    (out / "last_checkpoint").write_text("model_final.pth")
    torch.save({"model": {}}, out / "model_zsd.pth")  # a later stage's file, no training state
    with caplog.at_level(logging.WARNING):
        ZSDPipeline(tiny_cfg(out)).run_detector()  # resumes after iteration 1 of 2: nothing left to train
    assert f"seen detector {out / 'model_final.pth'} is unusable" in caplog.text
    assert checkpoint_problem(str(out / "model_final.pth")) is None
    rebuilt = torch.load(out / "model_final.pth", weights_only=False)["model"]
    original = torch.load(detector_checkpoint, weights_only=False)["model"]
    assert all(torch.equal(rebuilt[k], original[k]) for k in original)


def test_truncated_detector_checkpoint_is_named(tmp_path, detector_checkpoint):
    weights = tmp_path / "weights.pth"
    truncate(detector_checkpoint, weights)
    trainer = ZSDTrainer(tiny_cfg(tmp_path / "out", "MODEL.WEIGHTS", str(weights)))
    with pytest.raises(ValueError, match=f"cannot read detectron2 checkpoint {weights} .* truncated"):
        trainer.resume_or_load(resume=True)


def test_damaged_classifier_artifact_is_retrained_not_skipped(tmp_path, detector_checkpoint, caplog, monkeypatch):
    """A truncated ``model_zsd.pth`` (e.g. from a full disk) no longer marks the stage as done."""
    monkeypatch.setattr(logging.getLogger("zsdet"), "propagate", True)
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(detector_checkpoint, out / "model_final.pth")
    truncate(detector_checkpoint, out / "model_zsd.pth")
    monkeypatch.setattr(ZSDPipeline, "_bank", lambda self: None)  # no bank needed
    built = []

    def build(bank):
        built.append(True)
        return torch.nn.Linear(8, 3), {"training": {"loss": 1.0}}

    with caplog.at_level(logging.WARNING):
        ZSDPipeline(tiny_cfg(out))._classifier_stage("model_zsd.pth", "retrained detector", build)
    assert built and f"retrained detector {out / 'model_zsd.pth'} is unusable" in caplog.text
    assert checkpoint_problem(str(out / "model_zsd.pth")) is None
    saved = torch.load(out / "model_zsd.pth", weights_only=False)["model"]
    assert saved["roi_heads.box_predictor.cls_score.weight"].shape == (3, 8)
