"""Issue 10 item 1: a detector run killed after a checkpoint and rerun ends with the same weights as
an uninterrupted run (optimizer momentum, LR schedule, data stream and random state restored)."""
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from zsdet.data.train_stream import TrainStream

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "quick_schedules" / "zsd_shapes_tiny_instant_test.yaml"
# 4 steps, checkpoints after steps 1 and 3, LR drop at 3: the resumed half needs momentum,
# schedule, data position and random state to match the uninterrupted run
SCHEDULE = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.STEPS", "(3,)",
            "SOLVER.WARMUP_ITERS", "1"]

# Runs tools/train_net.py's main() uninterrupted in argv[1], then again in argv[2] with a hook
# that SIGKILLs the process right after the first checkpoint (model_0000001.pth) is written.
DRIVER = textwrap.dedent("""
    import os, runpy, signal, sys
    import zsdet  # before detectron2.data (Pillow alias)
    from detectron2.engine import HookBase
    from zsdet.engine.detection_trainer import ZSDTrainer

    tool = runpy.run_path(sys.argv[3])
    parser = tool["build_parser"]()
    args = lambda out: parser.parse_args(sys.argv[4:] + ["OUTPUT_DIR", out])
    tool["main"](args(sys.argv[1]))

    class KillAfterFirstCheckpoint(HookBase):
        def after_step(self):
            if self.trainer.iter == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    build_hooks = ZSDTrainer.build_hooks
    ZSDTrainer.build_hooks = lambda self: build_hooks(self) + [KillAfterFirstCheckpoint()]
    tool["main"](args(sys.argv[2]))
""")


def _model(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_killed_and_resumed_detector_equals_uninterrupted(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    train_args = ["--config-file", str(CONFIG), "--stages", "detector", *SCHEDULE]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(whole), str(killed),
                           str(REPO / "tools" / "train_net.py"), *train_args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-3000:]  # killed by the hook, not failed
    assert (whole / "model_final.pth").is_file()
    assert (killed / "model_0000001.pth").is_file() and not (killed / "model_final.pth").exists()

    proc = subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), *train_args,
                           "OUTPUT_DIR", str(killed)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming the detector at iteration 2" in proc.stdout + proc.stderr

    a, b = _model(whole / "model_final.pth"), _model(killed / "model_final.pth")
    assert a["model"].keys() == b["model"].keys()
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, f"{len(differ)} tensors differ after resume, e.g. {differ[:3]}"
    momentum_a = a["trainer"]["_trainer"]["optimizer"]["state"]
    momentum_b = b["trainer"]["_trainer"]["optimizer"]["state"]
    assert all(torch.equal(momentum_a[i]["momentum_buffer"], momentum_b[i]["momentum_buffer"])
               for i in momentum_a)


def _identity(d):
    return dict(d)


def image_ids_of_first_batches(stream, count):
    """Image ids of the first ``count`` batches of ``stream``."""
    return [[d["image_id"] for d in batch] for batch in itertools.islice(stream, count)]


@pytest.mark.parametrize("grouping, workers", [(True, 0), (False, 0), (True, 2)])
def test_stream_resumed_at_any_iteration_yields_the_same_batches(grouping, workers):
    """Mixed orientations: detectron2's aspect-ratio buckets hold items across iterations; the
    resumed stream must refill them exactly (checked against one uninterrupted stream), with or
    without dataloader workers."""
    rng = np.random.default_rng(0)
    wide = rng.random(13) < 0.3
    dicts = [{"image_id": i, "width": 20 if w else 10, "height": 10 if w else 20} for i, w in enumerate(wide)]

    def batches(start_iter, count, num_workers=workers):
        stream = TrainStream(dicts, _identity, seed=7, total_batch_size=3, aspect_ratio_grouping=grouping,
                             num_workers=num_workers)
        stream.start_iter = start_iter
        return image_ids_of_first_batches(stream, count)

    whole = batches(0, 25)
    assert whole != batches(0, 1) * 25  # the stream is shuffled, not constant
    if workers:
        assert whole == batches(0, 25, num_workers=0)  # workers keep the stream order
    for start in (1, 4, 9, 17) if workers == 0 else (9,):
        assert batches(start, 25 - start) == whole[start:], start


def test_ranks_read_disjoint_shares_of_one_stream_and_resume_alone(monkeypatch):
    """Two data-parallel ranks (simulated): each resumes its own share exactly, and their shares
    interleave into the one-rank stream."""
    from detectron2.data import build as d2_build
    from detectron2.utils import comm

    dicts = [{"image_id": i, "width": 20 if i % 3 else 10, "height": 10 if i % 3 else 20} for i in range(11)]

    def items(world, rank, start_iter, count, grouping):
        monkeypatch.setattr(comm, "get_world_size", lambda: world)
        monkeypatch.setattr(d2_build, "get_world_size", lambda: world)
        monkeypatch.setattr(comm, "get_rank", lambda: rank)
        stream = TrainStream(dicts, _identity, seed=3, total_batch_size=2 * world, aspect_ratio_grouping=grouping)
        stream.start_iter = start_iter
        return image_ids_of_first_batches(stream, count)

    for rank in (0, 1):
        assert items(2, rank, 5, 7, True) == items(2, rank, 0, 12, True)[5:]
    one_rank = sum(items(1, 0, 0, 12, False), [])
    shares = [sum(items(2, rank, 0, 6, False), []) for rank in (0, 1)]
    assert [x for pair in zip(*shares) for x in pair] == one_rank
