"""Streamed generator source over an RoI bank: passes, mixtures, memory groups, epoch sizes, rank shares."""
import json

import h5py
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.config import get_cfg

from zsdet.config import add_zsdet_config
from zsdet.data.feature_bank import FeatureBank, commit_part, part_bytes, part_path
from zsdet.data.roi_stream import RoIBankSource, shard_blocks
from zsdet.data.row_sampling import class_cap
from zsdet.synthesis import SynthesisTrainer

C = 4  # classes; label 4 = background


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_bank(tmp_path, parts=3, rows=400, d=8):
    """Parts of ``rows`` rows; feature columns 0, 1, 2 = the row's id, id^2 % 1009, id^3 % 997
    (exact in float16: identify single rows), labels skewed."""
    rng = np.random.default_rng(0)
    ids = 0
    for p in range(parts):
        labels = rng.choice(C + 1, size=rows, p=[0.4, 0.15, 0.1, 0.05, 0.3])
        feats = np.zeros((rows, d), np.float32)
        commit_part(part_path(str(tmp_path), 0, p),
                    part_bytes(feats, labels, np.repeat(np.arange(rows // 10) + 100 * p, 10), [p], list("abcd")))
    bank = FeatureBank(str(tmp_path))
    # write the row id into column 0 now that the stored (foreground-first) order is known
    for p, path in enumerate(bank.paths):
        with h5py.File(path, "a") as f:
            ids = np.arange(bank.offsets[p], bank.offsets[p + 1])
            f["features"][:, 0] = ids
            f["features"][:, 1] = ids ** 2 % 1009  # nonlinear: a mixture (mean of rows) almost never matches
            f["features"][:, 2] = ids ** 3 % 997
    return bank


def singles(batches):
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    ids = x[:, 0].long()
    one = (x[:, 1] == ids ** 2 % 1009) & (x[:, 2] == ids ** 3 % 997) & (x[:, 0] == x[:, 0].round())
    return x[one, 0].long(), y[one].argmax(1), x, y


def test_pass_is_deterministic_covers_every_row_once_and_fuses_mixtures(tmp_path):
    bank = make_bank(tmp_path)
    fg = bank.foreground_rows()
    src = RoIBankSource(bank, fg, mixture_ratio=0.5, memory_budget_mb=0.01, block_rows=64)  # several groups
    assert src.group_rows < len(fg) and len(src) == len(fg) + len(fg) // 2
    a, b, c = (list(src.iter_batches(32, e, 5)) for e in (3, 3, 4))
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    assert [len(x) for x, _ in a[:-1]] == [32] * (len(a) - 1)
    rows, labels, x, y = singles(a)
    assert set(rows.tolist()) == set(fg.tolist())  # every row (a mixture of one row twice looks single)
    assert len(rows) - len(fg) < 0.05 * len(fg)
    assert torch.equal(labels, torch.from_numpy(bank.labels[rows.numpy()]).long())
    assert len(x) == len(src)
    assert y.shape[1] == C and int((y.sum(1) > 1).sum()) > len(fg) // 4  # mixtures: unions of 1-3 labels
    assert y.sum(1).min() == 1 and y.sum(1).max() <= 3


def test_samples_per_epoch_and_class_balance(tmp_path):
    bank = make_bank(tmp_path)
    fg = bank.foreground_rows()
    src = RoIBankSource(bank, fg, mixture_ratio=0.0, block_rows=16, samples_per_epoch=200)
    rows, _, _, _ = singles(list(src.iter_batches(64, 0, 1)))
    assert len(rows) == 200 == src.singles_per_pass and len(set(rows.tolist())) == 200
    other, _, _, _ = singles(list(src.iter_batches(64, 1, 1)))
    assert set(rows.tolist()) != set(other.tolist())

    bal = RoIBankSource(bank, fg, mixture_ratio=0.0, samples_per_epoch=300, class_balanced=True)
    _, labels, _, _ = singles(list(bal.iter_batches(64, 0, 1)))
    counts = np.bincount(labels.numpy(), minlength=C)
    cap = class_cap(np.bincount(bank.labels[fg], minlength=C), 300)
    assert counts.sum() == bal.singles_per_pass <= 300 and counts.max() == cap
    rare = np.bincount(bank.labels[fg], minlength=C).argmin()
    assert counts[rare] == np.bincount(bank.labels[fg], minlength=C)[rare]  # rare classes whole


def test_class_cap_water_filling():
    assert class_cap(np.array([5, 50, 100]), 65) == 30  # 5 + 30 + 30
    assert class_cap(np.array([5, 50, 100]), 1000) == 100
    assert class_cap(np.array([10, 10]), 9) == 4


def test_ranks_read_disjoint_equal_shares(tmp_path):
    bank = make_bank(tmp_path)
    fg = bank.foreground_rows()
    src = RoIBankSource(bank, fg, mixture_ratio=0.25, block_rows=32)
    shares = [list(src.iter_rank_batches(16, 2, 7, r, 2)) for r in range(2)]
    r0, r1 = (set(singles(s)[0].tolist()) for s in shares)  # (a mixture of one row twice counts too)
    assert min(len(r0), len(r1)) > 0.45 * len(fg) and not r0 & r1
    sizes = [sum(len(x) for x, _ in share) for share in shares]
    assert sizes[0] == sizes[1] >= 1.25 * 0.45 * len(fg)
    idx, first, end = shard_blocks(np.array([5, 5, 5, 5]), 1, 2)
    assert idx.tolist() == [2, 3] and first.tolist() == [0, 0] and end.tolist() == [5, 5]
    idx, first, end = shard_blocks(np.array([4, 7, 4]), 1, 2)  # rows 7..13: the middle block is split
    assert idx.tolist() == [1, 2] and first.tolist() == [3, 0] and end.tolist() == [7, 3]


def test_bad_rows_and_budgets_are_refused(tmp_path):
    bank = make_bank(tmp_path)
    with pytest.raises(ValueError, match="must be foreground RoIs"):
        RoIBankSource(bank, np.arange(len(bank)))
    with pytest.raises(ValueError, match="no foreground row"):
        RoIBankSource(bank, np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="fewer than one block"):
        RoIBankSource(bank, bank.foreground_rows(), memory_budget_mb=0.001, block_rows=256)


def tiny_trainer(out_dir, epochs=1):
    """A generator trainer with tiny networks for the bank's 8-d features and C classes."""
    cfg = get_cfg()
    add_zsdet_config(cfg)
    s = cfg.SYNTHESIS
    s.GEN_HIDDEN = s.DISC_HIDDEN = s.ENC_HIDDEN = s.CLF_FF_HIDDEN = 16
    s.CLF_HEADS, s.EPOCHS, s.BATCH_SIZE, s.CRITIC_ITERS = 4, epochs, 16, 2
    s.VAL_SYNTH_SETS, s.CLS_PRETRAIN_EPOCHS, s.PATIENCE, s.DEVICE = 32, 1, 0, "cpu"
    emb = torch.randn(C, 6, generator=torch.Generator().manual_seed(0))
    return SynthesisTrainer.from_config(cfg, emb, 8, str(out_dir))


def test_kill_and_resume_with_the_streamed_source_is_bit_identical(tmp_path, killed_after_checkpoint):
    bank = make_bank(tmp_path / "bank")
    fg = bank.foreground_rows()

    def fit(out):
        train = RoIBankSource(bank, fg[fg < 800], memory_budget_mb=0.01, block_rows=32)
        tiny_trainer(out, epochs=3).fit(train, RoIBankSource(bank, fg[fg >= 800]))

    fit(tmp_path / "straight")
    with killed_after_checkpoint(epoch=1):
        fit(tmp_path / "resumed")
    torch.manual_seed(12345)  # a new process would have another global RNG state
    fit(tmp_path / "resumed")
    a, b = (torch.load(tmp_path / run / "last_checkpoint.pth", weights_only=True) for run in ("straight", "resumed"))
    assert a["epoch"] == b["epoch"] == 2
    for part in ("generator", "critic"):
        assert all(torch.equal(a["models"][part][k], b["models"][part][k]) for k in a["models"][part])


def _ddp_worker(rank, world, init_file, bank_dir, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        bank = FeatureBank(bank_dir)
        fg = bank.foreground_rows()
        calls = []

        class Logged(RoIBankSource):
            def iter_rank_batches(self, batch_size, epoch, seed, rank, world):
                calls.append(world)
                return super().iter_rank_batches(batch_size, epoch, seed, rank, world)

        train = Logged(bank, fg[fg < 800], mixture_ratio=0.5, block_rows=32)
        val = RoIBankSource(bank, fg[fg >= 800], mixture_ratio=0.5, block_rows=32)
        trainer = tiny_trainer(out_dir)
        trainer.fit(train, val)
        torch.save({"generator": trainer.generator.state_dict(), "calls": calls}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_train_on_their_own_shares_and_stay_identical(tmp_path):
    bank = make_bank(tmp_path / "bank")
    fg = bank.foreground_rows()
    out = tmp_path / "gen"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), bank.bank_dir, str(out)), nprocs=2, join=True)
    w0, w1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(w0["generator"][k], w1["generator"][k]) for k in w0["generator"])
    # the scan and f_cls read the whole stream (world 1) once each; both training passes per-rank shares
    assert w0["calls"] == w1["calls"] == [1, 1, 2, 2]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    # SYNTHESIS.BATCH_SIZE is the batch over both ranks: as many generator steps as one process does
    one = tiny_trainer(tmp_path / "one")
    one.fit(RoIBankSource(bank, fg[fg < 800], mixture_ratio=0.5, block_rows=32),
            RoIBankSource(bank, fg[fg >= 800], mixture_ratio=0.5, block_rows=32))
    single = json.loads((tmp_path / "one" / "metrics.jsonl").read_text())
    assert json.loads(lines[0])["iterations"] == single["iterations"] > 0


def test_scaler_and_seen_classes_come_from_the_whole_bank_not_the_first_pass(tmp_path):
    """Class 3 sits only in the bank's last block, with the largest feature value: an epoch of
    SAMPLES_PER_EPOCH rows (pass 0) misses it, the trainer's statistics must not."""
    labels = np.concatenate([np.arange(368) % 3, np.full(16, 3)])  # 24 blocks of 16 rows
    feats = np.tile(np.linspace(0, 1, 384, dtype=np.float32)[:, None], (1, 8))
    feats[labels == 3] = 2.0
    commit_part(part_path(str(tmp_path), 0, 0), part_bytes(feats, labels, np.arange(384) // 4, [0], list("abcd")))
    bank = FeatureBank(str(tmp_path))
    train = RoIBankSource(bank, bank.foreground_rows(), mixture_ratio=0.5, block_rows=16, samples_per_epoch=64)
    trainer = tiny_trainer(tmp_path / "gen")
    first_pass = list(train.iter_batches(4096, 0, trainer.s.seed))
    assert torch.cat([y for _, y in first_pass])[:, 3].sum() == 0  # the first pass never sees class 3
    trainer._prepare(train)
    assert trainer.seen_classes.tolist() == [0, 1, 2, 3]
    assert torch.equal(trainer.scaler.low, torch.zeros(8)) and torch.equal(trainer.scaler.span, torch.full((8,), 2.0))
    assert len(trainer.train_sets) == 384 + 192  # the label sets of every row once, and of its mixtures
