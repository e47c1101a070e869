"""Issue 10 item 2: each image's RoI bank rows are a pure function of (SEED, image id): extraction
alone, after unrelated random work, or resumed after a kill gives the same rows. Issue 17 item 3:
also when killed on two ranks and resumed on two (one starting late) or on one, with batches of
two images; and COMPLETE only for a bank holding every training image exactly once."""
import os
import random
import shutil
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import zsdet  # noqa: F401  (first, also in the spawned workers: the Pillow alias detectron2 v0.6 needs)
from detectron2.modeling import build_model

from zsdet.config import get_zsdet_cfg
from zsdet.data.feature_bank import (COMPLETE, FeatureBank, FeatureBankWriter, commit_part, coverage_problem,
                                     done_image_ids, part_bytes, part_path)
from zsdet.engine import ZSDPipeline

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "quick_schedules" / "zsd_shapes_tiny_instant_test.yaml"


class Killed(Exception):
    pass


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def detector_weights(tmp_path_factory):
    """An untrained (seeded) tiny detector: its RPN proposals are arbitrary, which is all we need."""
    cfg = get_zsdet_cfg(str(CONFIG), [])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("detector") / "model_final.pth"
    torch.save({"model": build_model(cfg).state_dict()}, path)
    return path


def extract(out: Path, weights: Path, opts=(), read=True) -> dict:
    """Run the features stage into ``out`` (config ``opts``); {image id: (labels, features)} of the
    bank (``read``)."""
    out.mkdir(exist_ok=True)
    if not (out / "model_final.pth").exists():
        shutil.copy(weights, out / "model_final.pth")
    cfg = get_zsdet_cfg(str(CONFIG), ["OUTPUT_DIR", str(out), "ZSD.FEATURES.FLUSH_EVERY", "4", *opts])
    ZSDPipeline(cfg).run_features()
    if not read:
        return {}
    bank = FeatureBank(str(out / "roi_bank"))
    rows = {}
    for image_id in np.unique(bank.image_ids):
        at = np.nonzero(bank.image_ids == image_id)[0]
        rows[int(image_id)] = (bank.labels[at], bank.load(at))
    return rows


def assert_same_rows(a: dict, b: dict):
    assert a.keys() == b.keys()
    for image_id in a:
        np.testing.assert_array_equal(a[image_id][0], b[image_id][0], err_msg=f"labels of image {image_id}")
        np.testing.assert_array_equal(a[image_id][1], b[image_id][1], err_msg=f"features of image {image_id}")


def test_rows_do_not_depend_on_process_history_or_resume(tmp_path, detector_weights, monkeypatch):
    alone = extract(tmp_path / "alone", detector_weights)
    assert len(alone) > 8 and sum(len(v[0]) for v in alone.values()) > len(alone)

    np.random.rand(17), torch.rand(5), random.random()  # unrelated random work in between
    assert_same_rows(alone, extract(tmp_path / "after_random_work", detector_weights))

    process = FeatureBankWriter.process
    calls = []

    def killed_at_seventh_image(self, inputs, outputs):
        calls.append(1)
        if len(calls) == 7:  # one commit of 4 images done, 2 buffered images lost
            raise Killed
        process(self, inputs, outputs)

    monkeypatch.setattr(FeatureBankWriter, "process", killed_at_seventh_image)
    with pytest.raises(Killed):
        extract(tmp_path / "resumed", detector_weights)
    monkeypatch.setattr(FeatureBankWriter, "process", process)
    torch.rand(3)
    assert_same_rows(alone, extract(tmp_path / "resumed", detector_weights))


# --------------------------------------------------------------------- several ranks (issue 17, item 3)
BATCHED = ["ZSD.FEATURES.IMAGES_PER_BATCH", "2"]  # two images per forward: rows depend on the batch too


def _features_worker(rank, world, init_file, out, weights, kill_at, late_rank):
    """The features stage on ``world`` gloo ranks; rank r is killed at its ``kill_at[r]``-th batch;
    ``late_rank`` starts once another rank has committed a part (or after 3 s)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        if kill_at:
            process, calls = FeatureBankWriter.process, []

            def killed(self, inputs, outputs):
                calls.append(1)
                if len(calls) == kill_at[rank]:
                    raise Killed
                process(self, inputs, outputs)
            FeatureBankWriter.process = killed
        if rank == late_rank:
            before, start = set(os.listdir(out / "roi_bank")), time.time()
            while set(os.listdir(out / "roi_bank")) == before and time.time() < start + 3:
                time.sleep(0.05)
        try:
            extract(out, weights, BATCHED, read=False)
        except Killed:
            pass
    finally:
        dist.destroy_process_group()


def on_two_ranks(tmp_path, out, weights, kill_at=None, late_rank=None):
    init = tmp_path / f"init_{len(list(tmp_path.glob('init_*')))}"
    mp.spawn(_features_worker, args=(2, str(init), out, weights, kill_at, late_rank), nprocs=2, join=True)


def test_killed_on_two_ranks_resumed_on_two_or_one_gives_the_rows_of_one_uninterrupted_run(tmp_path, detector_weights):
    straight = extract(tmp_path / "straight", detector_weights, BATCHED)
    killed = tmp_path / "killed"
    on_two_ranks(tmp_path, killed, detector_weights, kill_at={0: 5, 1: 7})  # both die mid-stage
    bank = killed / "roi_bank"
    assert not (bank / COMPLETE).exists() and 0 < len(done_image_ids(str(bank))) < len(straight)
    shutil.copytree(killed, tmp_path / "killed_copy")
    on_two_ranks(tmp_path, killed, detector_weights, late_rank=1)  # rank 1 starts after rank 0 committed
    assert (bank / COMPLETE).exists()
    assert_same_rows(straight, extract(killed, detector_weights, BATCHED))  # complete: reads only
    assert_same_rows(straight, extract(tmp_path / "killed_copy", detector_weights, BATCHED))  # resumed on 1 rank


def test_complete_is_written_only_when_every_image_is_in_the_bank_once(tmp_path):
    def part(seq, images):
        commit_part(part_path(str(tmp_path), 0, seq), part_bytes(np.ones((len(images), 4)), [0] * len(images),
                                                                 images, images, ["a"]))
    part(0, [1, 2])
    part(1, [2, 3])
    part(2, [9])
    problem = coverage_problem(str(tmp_path), [1, 2, 3, 4], {4: "img4.jpg"})
    assert "1 training images are in no part, e.g. 4 (img4.jpg)" in problem
    assert "1 images are in several parts, e.g. 2 in part_rank0_000000.h5, part_rank0_000001.h5" in problem
    assert "1 images of the bank are not in the training set, e.g. [9]" in problem
    assert coverage_problem(str(tmp_path), [1, 2, 3, 9], {}) is not None
    os.remove(part_path(str(tmp_path), 0, 1))
    part(1, [3])
    assert coverage_problem(str(tmp_path), [1, 2, 3, 9], {}) is None
