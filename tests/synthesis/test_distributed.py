"""Data-parallel training: two CPU processes (gloo) stay in sync and only rank 0 writes."""
import json

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zsdet.synthesis import SynthesisTrainer, TensorFeatureSource

from synthesis_helpers import compositional_problem, small_cfg


def _worker(rank, world, init_file, out_dir, gan):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        tiny = compositional_problem(n_train=160, n_test=20, dim=16)
        trainer = SynthesisTrainer.from_config(small_cfg(GAN=gan, EPOCHS=2), tiny.emb, 16, out_dir)
        trainer.fit(TensorFeatureSource(tiny.x_train, tiny.y_train))
        torch.save({"generator": trainer.generator.state_dict(), "critic": trainer.critic.state_dict()},
                   f"{out_dir}/weights_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_stay_identical(tmp_path):
    for gan in ("fvaegan", "fclswgan"):
        out = tmp_path / gan
        out.mkdir()
        mp.spawn(_worker, args=(2, str(tmp_path / f"init_{gan}"), str(out), gan), nprocs=2, join=True)
        w0, w1 = (torch.load(out / f"weights_rank{r}.pt", weights_only=True) for r in (0, 1))
        for part in ("generator", "critic"):
            for key in w0[part]:
                assert torch.equal(w0[part][key], w1[part][key]), (gan, part, key)
        lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
        assert [m["epoch"] for m in lines] == [0, 1]  # one writer
        # 144 training samples (16 held out) = 9 batches of 16 per pass, 2 passes (CRITIC_ITERS) per epoch,
        # groups of CRITIC_ITERS * world = 4 batches: 4 generator steps per rank (a single process: 9)
        assert lines[0]["iterations"] == 4
