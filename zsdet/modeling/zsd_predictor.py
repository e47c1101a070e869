"""Box predictor of the zero-shot detector: one classifier over all classes, three scoring modes.

The classifier always has ``K + 1`` outputs (every class of the dataset's stable index space plus
background, last), so the seen detector, the synthesis-retrained classifier and the
semantic-projection baseline all index the same columns.

* Training the seen detector (stage 1): unseen logits are masked out of the softmax, so unseen
  columns receive no gradient (SUZOD instead lets them receive negative gradient only).
* ``MODEL.ZSD.SEMANTIC_AUX_WEIGHT`` w > 0 (stage 1 only): an auxiliary linear map ``P`` of the box
  features onto the class-embedding space and the loss ``w * mean(1 - cos(P x, e_y))`` over the seen
  foreground RoIs (``loss_semantic_aux``), so that the box features keep what the class embeddings
  describe (attributes shared with unseen classes) and not only what tells the seen classes apart.
  ``P`` is not used for scoring.
* Box regression is class-agnostic (``MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG``, forced on):
  it is learnt on seen boxes and applies unchanged to unseen detections, which replaces SUZOD's
  substitution of the best-scoring seen class's deltas.
* Inference (``MODEL.ZSD.MODE``): ``"seen"`` softmax over seen + background; ``"zsd"`` softmax
  over unseen + background (seen classes never fire), ``MODEL.ZSD.ZSD_UNSEEN_LOGIT_BIAS`` added to
  the unseen logits first (their odds against background times e^bias; 0 = off); ``"gzsd"`` with
  ``MODEL.ZSD.GZSD_SCORING``: ``"joint"``, one softmax over all columns after subtracting
  ``MODEL.ZSD.SEEN_LOGIT_BIAS`` from the seen logits (calibrated stacking; 0 = off), or
  ``"grouped"``, SUZOD's scoring (protocol §9): separate softmaxes over [seen, background] and
  [unseen, background], seen probabilities below ``MODEL.ZSD.GZSD_SEEN_THRESH`` set to 0, the
  background column the mean of the two background probabilities.
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from torch import nn

from ..compat import check_box_loss_options
from ..data.zsd_split import ZeroShotSplit, class_embeddings_from_config
from .mlp_classifier import build_box_head, seen_group_layout
from .semantic_classifier import SemanticProjectionClassifier

MODES = ("seen", "zsd", "gzsd")
CLASSIFIERS = ("linear", "semantic", "mlp", "seen_mlp")
GZSD_SCORINGS = ("joint", "grouped")


class ZSDOutputLayers(FastRCNNOutputLayers):
    """``FastRCNNOutputLayers`` with seen/unseen-aware training and ZSD / GZSD scoring.

    Args (besides the parent's):
        unseen_class_ids: contiguous ids of the unseen classes.
        mode: one of ``MODES``.
        classifier: ``"linear"`` (``nn.Linear(d, K + 1)``), ``"semantic"``
            (:class:`SemanticProjectionClassifier`; needs ``class_embeddings``), ``"mlp"``
            (``MLPBoxClassifier`` with ``hidden_units``) or ``"seen_mlp"`` (``SeenGroupMLPClassifier``:
            such an MLP's seen group, a linear head's unseen one); :func:`.mlp_classifier.build_box_head`.
        hidden_units: the MLP classifier's hidden layer (``ZSD.CLASSIFIER.HIDDEN_UNITS``).
        seen_group: ``"seen_mlp"``'s MLP as (members, leave_out) MLPs
            (:func:`.mlp_classifier.seen_group_layout`; (0, False) = one MLP).
        class_embeddings: (K, a) tensor, required for the semantic classifier.
        semantic_temperature: T of the semantic classifier.
        seen_logit_bias: subtracted from seen logits in ``"gzsd"`` mode with joint scoring.
        zsd_unseen_logit_bias: added to unseen logits in ``"zsd"`` mode only.
        gzsd_scoring: ``"joint"`` or ``"grouped"`` (module docstring).
        gzsd_seen_thresh: grouped scoring's floor on seen probabilities.
        semantic_aux_weight: weight of the auxiliary embedding loss in training (module docstring;
            needs ``class_embeddings``).
    """

    @configurable
    def __init__(
        self,
        input_shape,
        *,
        unseen_class_ids: Sequence[int] = (),
        mode: str = "gzsd",
        classifier: str = "linear",
        class_embeddings=None,
        hidden_units: int = 0,
        seen_group: Tuple[int, bool] = (0, False),
        semantic_temperature: float = 0.05,
        seen_logit_bias: float = 0.0,
        zsd_unseen_logit_bias: float = 0.0,
        gzsd_scoring: str = "joint",
        gzsd_seen_thresh: float = 0.3,
        semantic_aux_weight: float = 0.0,
        **kwargs,
    ):
        check_box_loss_options(**kwargs)  # detectron2 main's use_sigmoid_ce / use_fed_loss
        super().__init__(input_shape, **kwargs)
        if mode not in MODES:
            raise ValueError(f"MODEL.ZSD.MODE must be one of {MODES}, got {mode!r}")
        if gzsd_scoring not in GZSD_SCORINGS:
            raise ValueError(f"MODEL.ZSD.GZSD_SCORING must be one of {GZSD_SCORINGS}, got {gzsd_scoring!r}")
        if classifier not in CLASSIFIERS:
            raise ValueError(f"MODEL.ZSD.CLASSIFIER must be one of {CLASSIFIERS}, got {classifier!r}")
        bad = [i for i in unseen_class_ids if not 0 <= i < self.num_classes]
        if bad:
            raise ValueError(f"unseen class ids {bad} outside [0, {self.num_classes})")
        if classifier == "semantic":
            emb = self._class_embeddings(class_embeddings, "MODEL.ZSD.CLASSIFIER='semantic'")
            self.cls_score = SemanticProjectionClassifier(
                self.cls_score.in_features, emb, semantic_temperature
            )
        elif classifier != "linear":  # "mlp", "seen_mlp"
            self.cls_score = build_box_head(classifier, self.cls_score.in_features, self.num_classes + 1, hidden_units,
                                            [i for i in range(self.num_classes) if i not in set(unseen_class_ids)],
                                            seen_group)
        self.semantic_aux_weight = semantic_aux_weight
        if semantic_aux_weight > 0:
            emb = F.normalize(self._class_embeddings(class_embeddings, "MODEL.ZSD.SEMANTIC_AUX_WEIGHT > 0"), dim=1)
            self.semantic_aux = nn.Linear(self.bbox_pred.in_features, emb.shape[1])
            self.register_buffer("aux_embeddings", emb, persistent=False)
        self._aux_input = None
        unseen = torch.zeros(self.num_classes + 1, dtype=torch.bool)
        unseen[list(unseen_class_ids)] = True
        self.register_buffer("unseen_mask", unseen, persistent=False)
        self.mode = mode
        self.seen_logit_bias = seen_logit_bias
        self.zsd_unseen_logit_bias = zsd_unseen_logit_bias
        self.gzsd_scoring = gzsd_scoring
        self.gzsd_seen_thresh = gzsd_seen_thresh

    def _class_embeddings(self, class_embeddings, needed_by: str) -> torch.Tensor:
        """(K, a) float32 class embeddings, checked against the number of classes."""
        if class_embeddings is None:
            raise ValueError(f"{needed_by} needs class embeddings")
        emb = torch.as_tensor(class_embeddings, dtype=torch.float32)
        if emb.shape[0] != self.num_classes:
            raise ValueError(f"{emb.shape[0]} class embeddings for {self.num_classes} classes")
        return emb

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        split = zsd_split_from_config(cfg)
        ret.update(
            unseen_class_ids=split.unseen_ids if split else (),
            mode=cfg.MODEL.ZSD.MODE,
            classifier=cfg.MODEL.ZSD.CLASSIFIER,
            hidden_units=cfg.ZSD.CLASSIFIER.HIDDEN_UNITS if "ZSD" in cfg else 0,
            seen_group=seen_group_layout(cfg.ZSD.CLASSIFIER) if "ZSD" in cfg else (0, False),
            semantic_temperature=cfg.MODEL.ZSD.SEMANTIC_TEMPERATURE,
            seen_logit_bias=cfg.MODEL.ZSD.SEEN_LOGIT_BIAS,
            zsd_unseen_logit_bias=cfg.MODEL.ZSD.ZSD_UNSEEN_LOGIT_BIAS,
            gzsd_scoring=cfg.MODEL.ZSD.GZSD_SCORING,
            gzsd_seen_thresh=cfg.MODEL.ZSD.GZSD_SEEN_THRESH,
            semantic_aux_weight=cfg.MODEL.ZSD.SEMANTIC_AUX_WEIGHT,
        )
        if cfg.MODEL.ZSD.CLASSIFIER == "semantic" or cfg.MODEL.ZSD.SEMANTIC_AUX_WEIGHT > 0:
            ret["class_embeddings"] = class_embeddings_from_config(cfg)
        return ret

    @property
    def seen_mask(self) -> torch.Tensor:
        """(K + 1,) bool, True for seen classes (background excluded)."""
        return seen_columns(self.unseen_mask)

    def forward(self, x):
        if self.training and self.semantic_aux_weight > 0:
            self._aux_input = x.flatten(1)  # read by losses() of the same step
        return super().forward(x)

    def losses(self, predictions, proposals):
        scores, deltas = predictions
        # Stage-1 detector: unseen columns leave the softmax (no gradient reaches them).
        scores = scores.masked_fill(self.unseen_mask, float("-inf"))
        losses = super().losses((scores, deltas), proposals)
        if self.semantic_aux_weight > 0:
            losses["loss_semantic_aux"] = self.semantic_aux_loss(proposals)
        return losses

    def semantic_aux_loss(self, proposals) -> torch.Tensor:
        """``w * mean(1 - cos(P x, e_y))`` over the foreground RoIs of the last training forward."""
        x, self._aux_input = self._aux_input, None
        if x is None:
            raise RuntimeError("semantic_aux_loss needs the box features of a training forward first")
        labels = torch.cat([p.gt_classes for p in proposals]) if proposals else x.new_zeros(0, dtype=torch.long)
        foreground = (labels >= 0) & (labels < self.num_classes)
        if not bool(foreground.any()):
            return sum(p.sum() for p in self.semantic_aux.parameters()) * 0.0  # every parameter in the graph (DDP)
        cos = F.cosine_similarity(self.semantic_aux(x[foreground]), self.aux_embeddings[labels[foreground]], dim=1)
        return self.semantic_aux_weight * (1 - cos).mean()

    def mode_logits(self, scores: torch.Tensor) -> torch.Tensor:
        """Logits (N, K + 1) of modes "seen" and "zsd", the columns the mode excludes set to -inf
        ("zsd": the unseen logits raised by ``zsd_unseen_logit_bias``)."""
        if self.mode == "seen":
            return scores.masked_fill(self.unseen_mask, float("-inf"))
        raised = scores + self.zsd_unseen_logit_bias * self.unseen_mask.to(scores.dtype)
        return raised.masked_fill(self.seen_mask, float("-inf"))

    def predict_probs(self, predictions, proposals):
        scores, _ = predictions
        if self.mode == "gzsd":
            probs = gzsd_probs(scores, self.unseen_mask, self.gzsd_scoring, self.seen_logit_bias,
                               self.gzsd_seen_thresh)
        else:
            probs = F.softmax(self.mode_logits(scores), dim=-1)
        return probs.split([len(p) for p in proposals], dim=0)


def seen_columns(unseen_mask: torch.Tensor) -> torch.Tensor:
    """(K + 1,) bool, True for the seen columns of ``unseen_mask`` (K + 1,): neither unseen nor the
    background (last)."""
    seen = ~unseen_mask
    seen[-1] = False
    return seen


def gzsd_probs(scores: torch.Tensor, unseen_mask: torch.Tensor, scoring: str, seen_logit_bias: float = 0.0,
               seen_thresh: float = 0.3) -> torch.Tensor:
    """GZSD class probabilities (N, K + 1) of logits ``scores`` (N, K + 1), background last.

    ``unseen_mask``: (K + 1,) bool, True for unseen columns. ``"joint"``: one softmax after
    subtracting ``seen_logit_bias`` from the seen logits. ``"grouped"`` (SUZOD): separate softmaxes
    over [seen, background] and [unseen, background], seen probabilities below ``seen_thresh`` set to
    0, the background column the mean of the two background probabilities.
    """
    seen_mask = seen_columns(unseen_mask)
    if scoring == "joint":
        return F.softmax(scores - seen_logit_bias * seen_mask.to(scores.dtype), dim=-1)
    p_seen = F.softmax(scores.masked_fill(unseen_mask, float("-inf")), dim=-1)
    p_unseen = F.softmax(scores.masked_fill(seen_mask, float("-inf")), dim=-1)
    floored = p_seen * (p_seen >= seen_thresh)
    probs = torch.where(unseen_mask, p_unseen, floored)
    probs[:, -1] = (p_seen[:, -1] + p_unseen[:, -1]) / 2
    return probs


def zsd_split_from_config(cfg):
    """The :class:`ZeroShotSplit` of ``cfg.DATASETS.TRAIN[0]``, or None without a training set."""
    if not cfg.DATASETS.TRAIN:
        return None
    split = ZeroShotSplit.from_dataset(cfg.DATASETS.TRAIN[0])
    if split.num_classes != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        raise ValueError(
            f"MODEL.ROI_HEADS.NUM_CLASSES={cfg.MODEL.ROI_HEADS.NUM_CLASSES} but dataset "
            f"{cfg.DATASETS.TRAIN[0]!r} has {split.num_classes} thing_classes"
        )
    return split
