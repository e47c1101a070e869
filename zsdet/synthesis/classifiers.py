"""Linear multi-label classifiers trained with BCE: the final f_z / f_gz heads (paper Sec. 3),
f-CLSWGAN's seen-class classifier f_cls, and the trainer's validation probe.

Detection's soft-target softmax box classifier lives in ``zsdet.engine.box_classifier``.
"""
import logging
from typing import Callable, Iterator, Optional, Sequence, Tuple

import torch
from torch import nn
from tqdm import tqdm

from ..data.feature_source import FeatureSource, TensorFeatureSource
from .losses import multilabel_bce

__all__ = ["train_multilabel_classifier", "fit_linear_multilabel", "fit_module"]

logger = logging.getLogger(__name__)

BatchFn = Callable[[int], Iterator[Tuple[torch.Tensor, torch.Tensor]]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def fit_module(module: nn.Module, batches: BatchFn, loss_fn: LossFn, *, epochs: int, lr: float,
               betas: Sequence[float] = (0.5, 0.999), weight_decay: float = 0.0, device="cpu",
               desc: str = "classifier") -> float:
    """Train ``module`` in place with Adam on streamed batches.

    Args:
        module: maps (B, d) features to (B, K) logits.
        batches: ``batches(epoch)`` yields ``(x (B, d), y (B, K))`` CPU batches.
        loss_fn: ``loss_fn(logits, y)`` -> scalar loss.
        epochs, lr, betas, weight_decay: optimisation settings; device: where to train.
    Returns:
        The summed loss of the last epoch (the module is left in eval mode on ``device``).
    """
    module.to(device).train()
    opt = torch.optim.Adam(module.parameters(), lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=True)
    total = torch.zeros((), device=device)
    for epoch in tqdm(range(epochs), desc=desc, leave=False, disable=epochs < 2):
        total.zero_()
        for x, y in batches(epoch):
            loss = loss_fn(module(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
    logger.debug("%s: last-epoch summed loss %.4f", desc, float(total))
    module.eval()
    return float(total)


def fit_linear_multilabel(batches: BatchFn, in_dim: int, out_dim: int, *, epochs: int, lr: float,
                          betas: Sequence[float] = (0.5, 0.999), weight_decay: float = 0.0, seed: int = 0,
                          device="cpu", desc: str = "classifier") -> nn.Linear:
    """Train a fresh ``nn.Linear(in_dim, out_dim)`` with BCE and Adam on streamed batches.

    Args:
        batches: ``batches(epoch)`` yields ``(x (B, in_dim), y (B, out_dim) {0, 1})`` CPU batches.
        epochs, lr, betas, weight_decay: optimisation settings; seed: fixes the initialisation.
        device: where to train.
    Returns:
        The trained layer in eval mode on ``device``.
    """
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(in_dim, out_dim)
    with torch.no_grad():  # PyTorch's default init, drawn from our generator for reproducibility
        bound = 1 / in_dim ** 0.5
        head.weight.uniform_(-bound, bound, generator=gen)
        head.bias.uniform_(-bound, bound, generator=gen)
    fit_module(head, batches, multilabel_bce, epochs=epochs, lr=lr, betas=betas, weight_decay=weight_decay,
               device=device, desc=desc)
    return head


def train_multilabel_classifier(feats: torch.Tensor, labels: torch.Tensor, epochs: int, batch_size: int,
                                lr: float, seed: int = 0, device=None, betas: Sequence[float] = (0.5, 0.999),
                                weight_decay: float = 0.0, source: Optional[FeatureSource] = None) -> nn.Linear:
    """Train a linear multi-label head (f_z on synthesized unseen features, f_gz on synthesized unseen +
    real seen features) with BCE and Adam, as in the paper (Sec. 4.1: 50 epochs, betas (0.5, 0.999)).

    Args:
        feats: (n, d) float features; labels: (n, K) multi-hot {0, 1} (entries > 0 are positives).
            Pass ``feats=labels=None`` and ``source`` to stream from a :class:`FeatureSource` instead.
        epochs, batch_size, lr, betas, weight_decay: optimisation settings.
        seed: fixes the initialisation and the batch order.
        device: training device (default: CUDA when available, else CPU).
    Returns:
        ``nn.Linear(d, K)`` in eval mode; scores = ``head(x)`` (logits; apply a sigmoid for probabilities).

    Raises:
        ValueError: shape mismatch or NaN/inf features.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if source is None:
        source = TensorFeatureSource(feats, labels)
    return fit_linear_multilabel(lambda epoch: source.iter_batches(batch_size, epoch, seed), source.feature_dim,
                                 source.num_classes, epochs=epochs, lr=lr, betas=betas, weight_decay=weight_decay,
                                 seed=seed, device=device, desc="multi-label classifier")
