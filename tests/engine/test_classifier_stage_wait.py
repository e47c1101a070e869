"""The classifier stage trains on rank 0 alone; the other ranks wait for it beyond the process
group's timeout (issue 17, item 8: at COCO scale it takes minutes, docs/coco.md), and an error on
rank 0 reaches them instead of leaving them at a barrier."""
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import zsdet.engine.zsd_pipeline as zsd_pipeline
from zsdet.config import get_zsdet_cfg
from zsdet.engine import ZSDPipeline

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quick_schedules" / "zsd_shapes_tiny_instant_test.yaml"
GROUP_TIMEOUT = timedelta(seconds=2)  # stands for detectron2's 30 minutes
TRAINING_SECONDS = 4  # rank 0's classifier takes longer than that


def _worker(rank, world, init_file, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=GROUP_TIMEOUT)
    outcome = {}
    try:
        pipeline = ZSDPipeline(get_zsdet_cfg(str(CONFIG), ["OUTPUT_DIR", out]))
        pipeline._bank = lambda: None
        zsd_pipeline.save_with_classifier = lambda detector, classifier, path, **extra: torch.save({}, path)

        def slow(bank):
            time.sleep(TRAINING_SECONDS)
            return torch.nn.Linear(2, 2), {}

        def failing(bank):
            raise ValueError("RoI bank has no foreground row of seen class(es) ['red circle']")

        pipeline._classifier_stage("model_zsd.pth", "retrained detector", slow)
        outcome["trained"] = time.time()
        try:
            pipeline._classifier_stage("model_baseline.pth", "baseline detector", failing)
        except ValueError as e:
            outcome["error"] = str(e)
    finally:
        torch.save(outcome, f"{out}/rank{rank}.pt")
        dist.destroy_process_group()


def test_other_ranks_wait_for_rank_0s_classifier_and_hear_its_error(tmp_path):
    start = time.time()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        outcome = torch.load(tmp_path / f"rank{rank}.pt")
        assert outcome["trained"] - start > TRAINING_SECONDS, rank
        assert "no foreground row of seen class(es) ['red circle']" in outcome["error"], rank
    assert (tmp_path / "model_zsd.pth").exists() and not (tmp_path / "model_baseline.pth").exists()
