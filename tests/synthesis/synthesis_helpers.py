"""Helpers of the synthesis tests: small configs and a synthetic compositional multi-label problem.

(A plain module, not conftest.py: spawned DDP workers import it by name.)
"""
from dataclasses import dataclass

import torch
from detectron2.config import get_cfg
from torch.nn import functional as F

import zsdet


def small_cfg(**overrides):
    """cfg with tiny networks (d and a come from the data); ``overrides`` set SYNTHESIS keys."""
    cfg = get_cfg()
    zsdet.add_zsdet_config(cfg)
    s = cfg.SYNTHESIS
    s.GEN_HIDDEN = s.DISC_HIDDEN = s.ENC_HIDDEN = s.CLF_FF_HIDDEN = 32
    s.CLF_HEADS = 4
    s.EPOCHS, s.BATCH_SIZE, s.CRITIC_ITERS = 2, 16, 2
    s.VAL_SYNTH_SETS, s.CLS_PRETRAIN_EPOCHS, s.PATIENCE = 64, 1, 0
    s.DEVICE = "cpu"
    for key, value in overrides.items():
        s[key] = value
    return cfg


@dataclass
class Problem:
    """Features are the mean of per-class prototypes (a smooth function of the class embedding) plus
    noise; seen classes are 0..S-1, unseen S..C-1 (never in the training labels)."""

    emb: torch.Tensor  # (C, a)
    x_train: torch.Tensor  # (n, d)
    y_train: torch.Tensor  # (n, C), seen columns only
    x_test: torch.Tensor  # (m, d) unseen-class samples
    y_test: torch.Tensor  # (m, U) multi-hot over the unseen classes
    num_seen: int


def compositional_problem(seed=0, n_train=1500, n_test=400, num_classes=16, num_seen=12, emb_dim=8, dim=32):
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(num_classes, emb_dim, generator=g), dim=1)
    prototypes = torch.sigmoid(3 * emb @ torch.randn(emb_dim, dim, generator=g))

    def draw(n, classes, max_size):
        sizes = torch.randint(1, max_size + 1, (n,), generator=g)
        rank = torch.rand(n, len(classes), generator=g).argsort(1).argsort(1)
        y = torch.zeros(n, num_classes)
        y[:, classes] = (rank < sizes[:, None]).float()  # a random subset of `size` classes
        x = y @ prototypes / y.sum(1, keepdim=True) + 0.05 * torch.randn(n, dim, generator=g)
        return x, y

    x_train, y_train = draw(n_train, list(range(num_seen)), 3)
    x_test, y_test = draw(n_test, list(range(num_seen, num_classes)), 2)
    return Problem(emb, x_train, y_train, x_test, y_test[:, num_seen:], num_seen)
