"""A box classifier with one hidden layer, for the synthesis-retrained detector.

The retrained classifier is linear by default (the paper's RoI-head classifier). With
``ZSD.CLASSIFIER.HIDDEN_UNITS`` h > 0 it is ``Linear(d, h) -> ReLU -> Linear(h, K + 1)``: a linear
head on the detector's box features cannot put most real unseen RoIs apart from seen ones at a small
seen cost, while a non-linear one trained on real unseen RoIs can
(``benchmarks/zsd_unseen_separability.py``). The output layer's ``bias`` is exposed as the module's,
so the GZSD calibration and the unseen-logit bias fold into it as into a linear head's.

:class:`SeenGroupMLPClassifier` (``ZSD.CLASSIFIER.HIDDEN_GROUPS`` ``"seen"``) takes the seen group
from such an MLP and everything else from a linear head trained on the same features: its seen
logits are the MLP's minus the MLP's background logit plus the linear head's, so grouped GZSD
scoring's [seen, background] softmax is the MLP's and its [unseen, background] softmax (ZSD, GZSD's
unseen group) the linear head's.

:class:`SeenGroupMLPs` is that seen group's MLP as M MLPs: with ``ZSD.CLASSIFIER.SEEN_GROUP_FOLDS`` M
each trained with one fold of the seen classes left out (their real RoIs background to it: every MLP
meets real objects of classes it must not claim, which a synthesized unseen feature only imitates); with
``SEEN_GROUP_ENSEMBLE`` M, M MLPs that know every seen class (an ensemble).
"""
from typing import Sequence, Tuple

import torch
from torch import nn


class MLPBoxClassifier(nn.Module):
    """Logits (N, K + 1) of box features (N, d) through ``hidden_units`` ReLU units; background last.

    Args:
        feature_dim: d; hidden_units: h >= 1; num_outputs: K + 1.
    """

    def __init__(self, feature_dim: int, hidden_units: int, num_outputs: int):
        super().__init__()
        if hidden_units < 1:
            raise ValueError(f"hidden_units must be >= 1, got {hidden_units}")
        self.hidden = nn.Linear(feature_dim, hidden_units)
        self.out = nn.Linear(hidden_units, num_outputs)

    @property
    def bias(self) -> nn.Parameter:
        """(K + 1,) the output layer's bias: adding to a class's entry adds to its logit."""
        return self.out.bias

    @property
    def in_features(self) -> int:
        return self.hidden.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


class SeenGroupMLPClassifier(nn.Module):
    """Logits (N, K + 1) of box features (N, d), background last: the unseen and background columns
    of ``linear``; the seen columns ``mlp``'s seen minus ``mlp``'s background logit plus ``linear``'s
    background logit (module docstring); plus ``bias`` (K + 1,), zero at first, where the calibration
    and the unseen-logit bias are folded.

    Args:
        linear: ``nn.Linear(d, K + 1)``; mlp: :class:`MLPBoxClassifier` (d -> K + 1);
        seen_ids: the seen columns (in [0, K); background, K, is never one).
    """

    def __init__(self, linear: nn.Linear, mlp: MLPBoxClassifier, seen_ids: Sequence[int]):
        super().__init__()
        num_classes = linear.out_features - 1
        bad = [i for i in seen_ids if not 0 <= i < num_classes]
        if bad:
            raise ValueError(f"seen class ids {bad} outside [0, {num_classes}) "
                             f"(background, {num_classes}, is no class)")
        self.linear, self.mlp = linear, mlp
        seen_mask = torch.zeros(linear.out_features, dtype=torch.bool)
        seen_mask[list(seen_ids)] = True
        self.register_buffer("seen_mask", seen_mask, persistent=False)  # from the split, not the checkpoint
        self.bias = nn.Parameter(torch.zeros(linear.out_features))

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lin, mlp = self.linear(x), self.mlp(x)
        seen_group = mlp - mlp[:, -1:] + lin[:, -1:]
        return torch.where(self.seen_mask, seen_group, lin) + self.bias


class SeenGroupMLPs(nn.Module):
    """M :class:`MLPBoxClassifier` s that give the seen group together: with ``leave_out``, MLP m is blind
    to the seen classes of fold m (the j-th seen class in class order is in fold ``j % M``;
    ``ZSD.CLASSIFIER.SEEN_GROUP_FOLDS``); without, every MLP knows every seen class and they differ by
    their initial weights alone (``ZSD.CLASSIFIER.SEEN_GROUP_ENSEMBLE``). Which MLP knows which class is
    stored with the weights.

    Logits (N, K + 1) of box features (N, d): seen column s is the mean, over the MLPs that know s, of
    their log-odds of s against background; background and every other column are 0. So
    ``logits - logits[:, -1:]`` is what :class:`SeenGroupMLPClassifier` takes from its ``mlp``.

    Args:
        feature_dim: d; hidden_units: h >= 1 per MLP; num_outputs: K + 1 (background last);
        seen_ids: the seen columns; members: M >= 2 (at most the number of seen classes with ``leave_out``).
    """

    def __init__(self, feature_dim: int, hidden_units: int, num_outputs: int, seen_ids: Sequence[int], members: int,
                 leave_out: bool):
        super().__init__()
        key = "SEEN_GROUP_FOLDS" if leave_out else "SEEN_GROUP_ENSEMBLE"
        top = len(seen_ids) if leave_out else members
        if not 2 <= members <= top:
            raise ValueError(f"ZSD.CLASSIFIER.{key} must be >= 2"
                             + (f" and at most the {top} seen classes" if leave_out else "") + f", got {members}")
        self.members = nn.ModuleList(MLPBoxClassifier(feature_dim, hidden_units, num_outputs) for _ in range(members))
        ids = torch.as_tensor(sorted(seen_ids), dtype=torch.long)
        known = torch.zeros(members, num_outputs, dtype=torch.bool)
        known[:, ids] = True
        if leave_out:
            known[torch.arange(len(ids)) % members, ids] = False
        self.register_buffer("known", known)  # (M, K + 1): the seen columns each MLP knows

    @property
    def in_features(self) -> int:
        return self.members[0].in_features

    def left_out(self, member: int) -> torch.Tensor:
        """(K + 1,) bool: the columns MLP ``member`` does not know, background excepted (the ``other`` of
        :func:`~zsdet.engine.box_classifier.group_cross_entropy`: their mass is background to it)."""
        other = ~self.known[member]
        other[-1] = False
        return other

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([m(x) for m in self.members])  # (M, N, K + 1)
        weight = self.known[:, None, :].to(logits.dtype)
        odds = (logits - logits[..., -1:]) * weight
        return odds.sum(0) / weight.sum(0).clamp(min=1)


def seen_group_layout(classifier_cfg) -> Tuple[int, bool]:
    """(members, leave_out) of the seen group's MLPs from a ``cfg.ZSD.CLASSIFIER`` node: (M, True) with
    ``SEEN_GROUP_FOLDS`` M, else (M, False) with ``SEEN_GROUP_ENSEMBLE`` M, else (0, False): one MLP."""
    if classifier_cfg.SEEN_GROUP_FOLDS:
        return classifier_cfg.SEEN_GROUP_FOLDS, True
    return classifier_cfg.SEEN_GROUP_ENSEMBLE, False


HEADS = ("linear", "mlp", "seen_mlp")  # the MODEL.ZSD.CLASSIFIER values :func:`build_box_head` builds


def build_box_head(kind: str, feature_dim: int, num_outputs: int, hidden_units: int = 0,
                   seen_ids: Sequence[int] = (), seen_group: Tuple[int, bool] = (0, False)) -> nn.Module:
    """A box classifier (N, d) -> (N, K + 1) of ``kind`` (:data:`HEADS`): ``nn.Linear``,
    :class:`MLPBoxClassifier` or :class:`SeenGroupMLPClassifier` (``hidden_units`` >= 1 for the last
    two; ``seen_ids`` for the last, whose MLP is :class:`SeenGroupMLPs` with ``seen_group`` =
    (members >= 2, leave_out); see :func:`seen_group_layout`)."""
    if kind not in HEADS:
        raise ValueError(f"box head must be one of {HEADS}, got {kind!r}")
    if kind == "linear":
        return nn.Linear(feature_dim, num_outputs)
    if hidden_units < 1:
        raise ValueError(f"MODEL.ZSD.CLASSIFIER {kind!r} needs ZSD.CLASSIFIER.HIDDEN_UNITS >= 1, got {hidden_units}")
    if kind == "mlp":
        return MLPBoxClassifier(feature_dim, hidden_units, num_outputs)
    members, leave_out = seen_group
    mlp = (SeenGroupMLPs(feature_dim, hidden_units, num_outputs, seen_ids, members, leave_out) if members
           else MLPBoxClassifier(feature_dim, hidden_units, num_outputs))
    return SeenGroupMLPClassifier(nn.Linear(feature_dim, num_outputs), mlp, seen_ids)
