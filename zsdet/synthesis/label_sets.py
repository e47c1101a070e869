"""Label sets of different sizes as one padded tensor: the generator's conditioning input.

A batch of B label sets is ``idx (B, N_max) int64`` plus ``mask (B, N_max) bool``; row b holds the
class ids of set b in its first ``mask[b].sum()`` slots (ascending when built from multi-hot
rows), padded slots hold class 0 and ``mask`` False. Every set has at least one class.

The generators do not use the padded layout directly: :meth:`LabelSets.pairs` flattens the real
(set, class) pairs so FLF runs one generator call over exactly the pairs that exist. Build and
flatten label sets on the CPU (index bookkeeping that would synchronise a GPU), then move them.
"""
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch

__all__ = ["LabelSets"]


@dataclass
class LabelSets:
    """Padded label sets.

    Attributes:
        idx: (B, N_max) int64 class ids; padded slots hold 0.
        mask: (B, N_max) bool, True for real slots; every row has at least one True.
    """

    idx: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self):
        if self.idx.ndim != 2 or self.idx.shape != self.mask.shape:
            raise ValueError(f"LabelSets: idx {tuple(self.idx.shape)} and mask {tuple(self.mask.shape)} "
                             "must both be (B, N_max)")
        if self.idx.dtype != torch.int64 or self.mask.dtype != torch.bool:
            raise ValueError(f"LabelSets: idx must be int64 and mask bool, got {self.idx.dtype} / {self.mask.dtype}")
        if self.idx.device.type == "cpu" and len(self.idx):  # checked where it costs no device sync
            empty = ~self.mask.any(1)
            if bool(empty.any()):
                raise ValueError(f"empty label set at row {int(empty.nonzero()[0])}: every set needs >= 1 class")
            if bool((self.idx[self.mask] < 0).any()):
                raise ValueError("LabelSets: negative class id")

    @classmethod
    def from_multi_hot(cls, y: torch.Tensor) -> "LabelSets":
        """Sets of the positive (> 0) entries of each row of ``y`` (B, C); {-1, 0, 1} rows are accepted.

        Raises:
            ValueError: a row without positive.
        """
        y = torch.as_tensor(y)
        if y.ndim != 2:
            raise ValueError(f"multi-hot labels must be (B, C), got shape {tuple(y.shape)}")
        pos = y > 0
        counts = pos.sum(1)
        if len(y) and bool((counts == 0).any()):
            raise ValueError(f"empty label set: row {int((counts == 0).nonzero()[0])} of the multi-hot "
                             "labels has no positive class")
        n_max = int(counts.max()) if len(y) else 1
        # stable sort puts the positives first in ascending class order
        order = torch.argsort(pos.to(torch.int8), dim=1, descending=True, stable=True)[:, :n_max]
        mask = torch.arange(n_max, device=y.device)[None, :] < counts[:, None]
        return cls(torch.where(mask, order, torch.zeros_like(order)), mask)

    @classmethod
    def from_lists(cls, sets: Sequence[Sequence[int]], num_classes: int) -> "LabelSets":
        """Sets given as lists of class ids in ``[0, num_classes)``; duplicates within a set are merged."""
        y = torch.zeros(len(sets), num_classes)
        for row, ids in enumerate(sets):  # input parsing, not a hot path
            if len(ids) == 0:
                raise ValueError(f"empty label set at position {row}")
            bad = [c for c in ids if not 0 <= int(c) < num_classes]
            if bad:
                raise KeyError(f"label set {row} has class ids {bad} outside [0, {num_classes})")
            y[row, list(ids)] = 1
        return cls.from_multi_hot(y)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, index) -> "LabelSets":
        """Rows ``index`` (slice, int64 tensor or list), padding trimmed to the longest kept set."""
        idx, mask = self.idx[index], self.mask[index]
        if idx.ndim == 1:
            idx, mask = idx[None], mask[None]
        n_max = max(int(mask.sum(1).max()), 1) if len(mask) else 1
        return LabelSets(idx[:, :n_max], mask[:, :n_max])

    def to(self, device, non_blocking: bool = False) -> "LabelSets":
        return LabelSets(self.idx.to(device, non_blocking=non_blocking),
                         self.mask.to(device, non_blocking=non_blocking))

    @property
    def device(self) -> torch.device:
        return self.idx.device

    def sizes(self) -> torch.Tensor:
        """(B,) int64 number of classes of each set."""
        return self.mask.sum(1)

    def max_class(self) -> int:
        """Largest class id in use (for checking against an embedding matrix)."""
        return int(self.idx[self.mask].max())

    def to_multi_hot(self, num_classes: int) -> torch.Tensor:
        """(B, num_classes) float32 multi-hot rows."""
        if len(self) and self.max_class() >= num_classes:
            raise KeyError(f"class id {self.max_class()} outside [0, {num_classes})")
        y = torch.zeros(len(self), num_classes, device=self.device)
        return y.scatter_add_(1, self.idx, self.mask.float()).clamp_(max=1)  # padded slots add 0

    def pairs(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The real (set, class) pairs, row-major: ``(set_index (P,), class_id (P,))`` int64."""
        rows, slots = self.mask.nonzero(as_tuple=True)
        return rows, self.idx[rows, slots]

    def repeat_each(self, n: int) -> "LabelSets":
        """Each set repeated ``n`` times consecutively: (B * n, N_max)."""
        return LabelSets(self.idx.repeat_interleave(n, 0), self.mask.repeat_interleave(n, 0))

    @staticmethod
    def cat(parts: List["LabelSets"]) -> "LabelSets":
        """Concatenate along the set dimension, padding to the widest part."""
        n_max = max(p.idx.shape[1] for p in parts)
        pad = [(n_max - p.idx.shape[1]) for p in parts]
        idx = torch.cat([torch.nn.functional.pad(p.idx, (0, k)) for p, k in zip(parts, pad)])
        mask = torch.cat([torch.nn.functional.pad(p.mask, (0, k)) for p, k in zip(parts, pad)])
        return LabelSets(idx, mask)
