"""Data-parallel training: two CPU processes (gloo) stay in sync, do the same steps on the same
number of samples as one process (SYNTHESIS.BATCH_SIZE is the batch over all ranks), take one
early-stopping decision (rank 0's) and only rank 0 writes."""
import json
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zsdet.synthesis import SynthesisTrainer, TensorFeatureSource

from synthesis_helpers import compositional_problem, small_cfg

WAIT = timedelta(seconds=60)  # a rank left alone at a collective fails the test instead of hanging it
CASES = {  # SYNTHESIS overrides; "early_stop": the ranks' own validation scores disagree
    "fvaegan": dict(GAN="fvaegan", EPOCHS=2),
    "early_stop": dict(GAN="fclswgan", EPOCHS=4, PATIENCE=1),
}
OWN_SCORES = {0: [0.2, 0.5, 0.4, 0.3], 1: [0.1, 0.2, 0.3, 0.4]}  # rank 0 alone stops after epoch 2


def fit_counting(out_dir, case, rank=0):
    """Fit the tiny problem; returns the generator's weights, the critic's and the (steps, real
    samples) of this process: every sample of every critic batch of every step is counted."""
    seen = {"steps": 0, "samples": 0}
    iteration = SynthesisTrainer._iteration

    def counted(self, group, gen, seen_dev):
        seen["steps"] += 1
        seen["samples"] += sum(len(x) for x, _ in group)
        return iteration(self, group, gen, seen_dev)

    scores = iter(OWN_SCORES[rank])
    SynthesisTrainer._iteration = counted
    if case == "early_stop":
        SynthesisTrainer.validate = lambda self: next(scores)
    tiny = compositional_problem(n_train=160, n_test=20, dim=16)
    trainer = SynthesisTrainer.from_config(small_cfg(**CASES[case]), tiny.emb, 16, out_dir)
    result = trainer.fit(TensorFeatureSource(tiny.x_train, tiny.y_train))
    return {"generator": trainer.generator.state_dict(), "critic": trainer.critic.state_dict(),
            "result": result, **seen}


def _worker(rank, world, init_file, out_dir, case):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=WAIT)
    try:
        torch.save(fit_counting(out_dir, case, rank), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_two_ranks(tmp_path, case):
    out = tmp_path / case
    out.mkdir()
    mp.spawn(_worker, args=(2, str(tmp_path / f"init_{case}"), str(out), case), nprocs=2, join=True)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def assert_same_weights(w0, w1):
    for part in ("generator", "critic"):
        for key in w0[part]:
            assert torch.equal(w0[part][key], w1[part][key]), (part, key)


def test_two_ranks_do_the_steps_of_one_and_stay_identical(tmp_path, monkeypatch):
    out, (w0, w1) = run_two_ranks(tmp_path, "fvaegan")
    assert_same_weights(w0, w1)
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [0, 1]  # one writer
    (tmp_path / "one").mkdir()
    monkeypatch.setattr(SynthesisTrainer, "_iteration", SynthesisTrainer._iteration)  # undone after the test
    one = fit_counting(str(tmp_path / "one"), "fvaegan")
    # 144 training samples (16 held out), BATCH_SIZE 16 over all ranks: 9 steps an epoch on 1 or 2 ranks,
    # each on CRITIC_ITERS x 16 samples in all (8 per rank)
    assert one["steps"] == w0["steps"] == w1["steps"] == 2 * 9 == lines[0]["iterations"] * 2
    assert one["samples"] == w0["samples"] + w1["samples"] == 2 * 9 * 2 * 16
    assert all(0 <= m["data_sec"] < m["sec"] for m in lines)  # the epoch's data-wait time


def test_rank_0_decides_early_stopping_for_every_rank(tmp_path):
    out, (w0, w1) = run_two_ranks(tmp_path, "early_stop")  # rank 1's own scores would never stop it
    assert w0["result"] == w1["result"]
    assert (w0["result"]["epochs_run"], w0["result"]["best_epoch"], w0["result"]["stopped_early"]) == (3, 1, True)
    assert_same_weights(w0, w1)
