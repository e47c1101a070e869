"""Which label sets to synthesize features for.

(a) Explicit sets, e.g. every unseen class alone (:func:`unseen_label_sets`), N features each.
(b) Sets derived from the co-occurrence of real seen label sets (:func:`sample_label_sets`), the
    official Generative_MLZSL recipe (``util.generate_fake_test_from_train_labels``): every seen
    class is mapped to its nearest unseen class in embedding space (:func:`nearest_unseen`), then
    from the real seen sets it draws

    * seen-only sets: a ``seen_fraction`` share of the real sets, copied;
    * unseen-only sets: an ``unseen_fraction`` share, every label mapped to its nearest unseen
      class (duplicates merged);
    * mixed sets: a ``mixed_fraction`` share, a random ``floor(n * mixed_keep_seen)`` of the n labels
      kept and the others mapped to unseen classes;

    each draw without replacement, ``rounds`` times. Unseen classes that no set contains are then
    added to random sets, each to as many sets as the rarest unseen class that does occur
    (so every unseen class appears). The official code draws the kept labels of a mixed set with
    replacement (so it can keep fewer distinct labels); here they are distinct.

Everything runs on (B, N_max) index tensors; no loop over sets or labels.
"""
from typing import Sequence

import torch

from .label_sets import LabelSets

__all__ = ["unseen_label_sets", "nearest_unseen", "sample_label_sets"]


def unseen_label_sets(unseen_ids: Sequence[int]) -> LabelSets:
    """One single-class set per id (in the given order): explicit sets for synthesizing N features per
    unseen class, e.g. ``trainer.synthesize(unseen_label_sets(ids), num_per_set=250, seed=0)``."""
    ids = torch.as_tensor(list(unseen_ids), dtype=torch.int64)
    if len(ids) == 0:
        raise ValueError("unseen_label_sets: no class ids given")
    return LabelSets(ids[:, None].clone(), torch.ones(len(ids), 1, dtype=torch.bool))


def nearest_unseen(class_embeddings: torch.Tensor, seen_ids: Sequence[int], unseen_ids: Sequence[int]) -> torch.Tensor:
    """Map every class id to an unseen class: seen -> nearest unseen (Euclidean distance between
    embeddings, as scikit-learn's NearestNeighbors in the official code), unseen -> itself.

    Returns:
        (C,) int64; classes in neither list map to themselves.
    """
    emb = torch.as_tensor(class_embeddings, dtype=torch.float64)
    seen = torch.as_tensor(list(seen_ids), dtype=torch.int64)
    unseen = torch.as_tensor(list(unseen_ids), dtype=torch.int64)
    if len(unseen) == 0:
        raise ValueError("nearest_unseen: no unseen classes")
    top = int(torch.cat([seen, unseen]).max())
    if top >= len(emb):
        raise KeyError(f"class id {top} has no row in the class-embedding matrix ({len(emb)} rows)")
    mapping = torch.arange(len(emb))
    mapping[seen] = unseen[torch.cdist(emb[seen], emb[unseen]).argmin(1)]
    return mapping


def _compact(idx: torch.Tensor, mask: torch.Tensor) -> LabelSets:
    """Sets with duplicates merged, classes ascending, real slots first, padding trimmed."""
    sentinel = torch.iinfo(torch.int64).max
    vals = torch.where(mask, idx, torch.full_like(idx, sentinel)).sort(1).values
    keep = vals != sentinel
    keep[:, 1:] &= vals[:, 1:] != vals[:, :-1]
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    idx, mask = vals.gather(1, order), keep.gather(1, order)
    n_max = max(int(mask.sum(1).max()), 1) if len(mask) else 1
    return LabelSets(torch.where(mask, idx, torch.zeros_like(idx))[:, :n_max].contiguous(), mask[:, :n_max].contiguous())


def _draw(sets: LabelSets, fraction: float, gen: torch.Generator) -> LabelSets:
    if not 0 <= fraction <= 1:
        raise ValueError(f"label-sampling fraction must lie in [0, 1], got {fraction}")
    rows = torch.randperm(len(sets), generator=gen)[: int(len(sets) * fraction)]
    return LabelSets(sets.idx[rows], sets.mask[rows])


def _mix_to_unseen(sets: LabelSets, mapping: torch.Tensor, keep_seen: float, gen: torch.Generator) -> LabelSets:
    """Keep a random ``floor(n * keep_seen)`` labels of each set, map the others to unseen classes."""
    keys = torch.rand(sets.idx.shape, generator=gen).masked_fill(~sets.mask, 2.0)
    rank = keys.argsort(1).argsort(1)  # random rank of each real slot within its set
    keep = rank < (sets.sizes() * keep_seen).floor().long()[:, None]
    return _compact(torch.where(keep, sets.idx, mapping[sets.idx]), sets.mask)


def _cover_unseen(sets: LabelSets, unseen: torch.Tensor, num_classes: int, gen: torch.Generator) -> LabelSets:
    """Add each unseen class absent from ``sets`` to as many random sets as the rarest present one."""
    counts = torch.bincount(sets.idx[sets.mask], minlength=num_classes)[unseen]
    missing = unseen[counts == 0]
    if len(missing) == 0:
        return sets
    per_class = int(counts[counts > 0].min()) if bool((counts > 0).any()) else 1
    extra = missing.repeat_interleave(per_class)
    if len(extra) > len(sets):  # too few sets to receive one extra class each: add them as singletons
        return LabelSets.cat([sets, unseen_label_sets(extra.tolist())])
    rows = torch.randperm(len(sets), generator=gen)[: len(extra)]
    col = torch.zeros(len(sets), 1, dtype=torch.int64)
    col_mask = torch.zeros(len(sets), 1, dtype=torch.bool)
    col[rows, 0], col_mask[rows, 0] = extra, True
    return _compact(torch.cat([sets.idx, col], 1), torch.cat([sets.mask, col_mask], 1))


def sample_label_sets(seen_sets: LabelSets, class_embeddings: torch.Tensor, seen_ids: Sequence[int],
                      unseen_ids: Sequence[int], *, seen_fraction: float = 1.0, unseen_fraction: float = 0.5,
                      mixed_fraction: float = 0.5, mixed_keep_seen: float = 0.5, rounds: int = 1,
                      seed: int = 0) -> LabelSets:
    """Seen-only, unseen-only and mixed label sets from real seen sets (official recipe, module docstring).

    Args:
        seen_sets: real label sets of seen training samples (CPU).
        class_embeddings: (C, a) embeddings of all classes, rows indexed by class id.
        seen_ids, unseen_ids: class ids of the two groups.
        seen_fraction, unseen_fraction, mixed_fraction: shares of ``seen_sets`` drawn for each kind.
        mixed_keep_seen: share of each mixed set's labels that stay seen.
        rounds: repetitions of the three draws; seed: fixes all draws.
    Returns:
        CPU :class:`LabelSets` (seen-only sets first, then unseen-only, then mixed, per round, then
        any singleton sets needed to cover every unseen class).
    """
    if len(seen_sets) == 0:
        raise ValueError("sample_label_sets: no real seen label sets given")
    seen_sets = seen_sets.to("cpu")
    num_classes = len(class_embeddings)
    if seen_sets.max_class() >= num_classes:
        raise KeyError(f"class id {seen_sets.max_class()} has no row in the class-embedding matrix "
                       f"({num_classes} rows)")
    mapping = nearest_unseen(class_embeddings, seen_ids, unseen_ids)
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for _ in range(rounds):  # a handful of repetitions, each fully vectorised
        parts.append(_draw(seen_sets, seen_fraction, gen))
        unseen_only = _draw(seen_sets, unseen_fraction, gen)
        parts.append(_compact(mapping[unseen_only.idx], unseen_only.mask))
        parts.append(_mix_to_unseen(_draw(seen_sets, mixed_fraction, gen), mapping, mixed_keep_seen, gen))
    parts = [p for p in parts if len(p)]
    if not parts:
        raise ValueError("sample_label_sets: all fractions are 0, no label set drawn")
    unseen = torch.as_tensor(list(unseen_ids), dtype=torch.int64)
    return _cover_unseen(LabelSets.cat(parts), unseen, num_classes, gen)
