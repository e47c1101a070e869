"""ZSD box predictor: unseen columns masked in training, the three scoring modes, the baseline head."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

import zsdet
from zsdet.engine.gzsd_calibration import fold_seen_bias, fold_unseen_bias
from zsdet.modeling import MLPBoxClassifier, SeenGroupMLPClassifier, SemanticProjectionClassifier, ZSDOutputLayers
from zsdet.modeling.zsd_predictor import gzsd_probs

CLASSES = ["a", "b", "c", "d"]
UNSEEN = ["b", "d"]
DATASET = "zsdet_test_predictor_split"


@pytest.fixture(scope="module")
def cfg():
    if DATASET not in DatasetCatalog.list():
        DatasetCatalog.register(DATASET, lambda: [])
        MetadataCatalog.get(DATASET).set(thing_classes=CLASSES, unseen_classes=UNSEEN,
                                         class_embeddings=torch.eye(4).tolist())
    c = get_cfg()
    zsdet.add_zsdet_config(c)
    c.DATASETS.TRAIN = (DATASET,)
    c.MODEL.ROI_HEADS.NUM_CLASSES = 4
    c.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    return c


def predictor(cfg, **zsd):
    c = cfg.clone()
    for k, v in zsd.items():
        setattr(c.MODEL.ZSD, k, v)
    torch.manual_seed(0)
    return ZSDOutputLayers(c, ShapeSpec(channels=8))


def test_split_read_from_metadata(cfg):
    p = predictor(cfg)
    assert p.unseen_mask.tolist() == [False, True, False, True, False]
    assert p.seen_mask.tolist() == [True, False, True, False, False]


def test_unseen_columns_get_no_gradient_in_training(cfg):
    p = predictor(cfg)
    x = torch.randn(6, 8)
    props = Instances((32, 32))
    props.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10]] * 6))
    props.gt_boxes = Boxes(torch.tensor([[0.0, 0, 12, 12]] * 6))
    props.gt_classes = torch.tensor([0, 2, 4, 0, 2, 4])
    with EventStorage():
        losses = p.losses(p(x), [props])
    losses["loss_cls"].backward()
    grad = p.cls_score.weight.grad
    assert grad[[1, 3]].abs().sum() == 0 and grad[[0, 2, 4]].abs().sum() > 0


@pytest.mark.parametrize("mode,zero_cols", [("seen", [1, 3]), ("zsd", [0, 2]), ("gzsd", [])])
def test_modes_zero_excluded_columns(cfg, mode, zero_cols):
    p = predictor(cfg, MODE=mode, GZSD_SCORING="joint")
    scores = torch.randn(5, 5)
    props = Instances((32, 32))
    props.proposal_boxes = Boxes(torch.zeros(5, 4))
    (probs,) = p.predict_probs((scores, None), [props])
    torch.testing.assert_close(probs.sum(1), torch.ones(5))
    assert (probs[:, zero_cols] == 0).all()
    assert (probs[:, [c for c in range(5) if c not in zero_cols]] > 0).all()


def test_gzsd_calibration_lowers_seen_scores(cfg):
    scores = torch.randn(5, 5)
    props = Instances((32, 32))
    props.proposal_boxes = Boxes(torch.zeros(5, 4))
    (plain,) = predictor(cfg, MODE="gzsd", GZSD_SCORING="joint").predict_probs((scores, None), [props])
    (calibrated,) = predictor(cfg, MODE="gzsd", GZSD_SCORING="joint",
                              SEEN_LOGIT_BIAS=2.0).predict_probs((scores, None), [props])
    assert (calibrated[:, [0, 2]] < plain[:, [0, 2]]).all()
    assert (calibrated[:, [1, 3]] > plain[:, [1, 3]]).all()


def test_zsd_unseen_logit_bias_raises_unseen_odds_in_zsd_only(cfg):
    """ZSD: each unseen class's odds against background times e^b, their ratios kept; GZSD: same probs."""
    scores = torch.randn(6, 5)
    props = Instances((32, 32))
    props.proposal_boxes = Boxes(torch.zeros(6, 4))
    probs = {}
    for mode in ("zsd", "gzsd"):
        for bias in (0.0, 1.5):
            (probs[mode, bias],) = predictor(cfg, MODE=mode, ZSD_UNSEEN_LOGIT_BIAS=bias).predict_probs(
                (scores, None), [props])
    plain, raised = probs["zsd", 0.0], probs["zsd", 1.5]
    for c in (1, 3):
        torch.testing.assert_close(raised[:, c] / raised[:, 4], plain[:, c] / plain[:, 4] * torch.exp(torch.tensor(1.5)))
    torch.testing.assert_close(raised[:, 1] / raised[:, 3], plain[:, 1] / plain[:, 3])
    assert (raised[:, [0, 2]] == 0).all() and (raised[:, 4] < plain[:, 4]).all()
    assert torch.equal(probs["gzsd", 0.0], probs["gzsd", 1.5])


def test_semantic_baseline_scores_by_cosine(cfg):
    p = predictor(cfg, CLASSIFIER="semantic", SEMANTIC_TEMPERATURE=0.5)
    assert isinstance(p.cls_score, SemanticProjectionClassifier)
    logits, _ = p(torch.randn(3, 8))
    assert logits.shape == (3, 5) and (logits.abs() <= 2.0 + 1e-5).all()  # |cos| / T


def test_mlp_classifier_head(cfg):
    """MODEL.ZSD.CLASSIFIER mlp: ZSD.CLASSIFIER.HIDDEN_UNITS ReLU units, then K + 1 logits; its bias
    is the output layer's, so folding a constant moves exactly those logits; no hidden units, an error."""
    c = cfg.clone()
    c.ZSD.CLASSIFIER.HIDDEN_UNITS = 6
    torch.manual_seed(0)
    c.MODEL.ZSD.CLASSIFIER = "mlp"
    p = ZSDOutputLayers(c, ShapeSpec(channels=8))
    head = p.cls_score
    assert isinstance(head, MLPBoxClassifier) and head.hidden.out_features == 6 and head.out.out_features == 5
    assert head.bias is head.out.bias and head.in_features == 8
    x = torch.randn(3, 8)
    with torch.no_grad():
        expected = head.out(torch.relu(head.hidden(x)))
        assert torch.equal(head(x), expected)
        fold_seen_bias(head, [0, 2], 1.5)
        fold_unseen_bias(head, [1, 3], 0.5)
        torch.testing.assert_close(head(x) - expected, torch.tensor([-1.5, 0.5, -1.5, 0.5, 0.0]).expand(3, 5))
    c.ZSD.CLASSIFIER.HIDDEN_UNITS = 0
    with pytest.raises(ValueError, match="HIDDEN_UNITS >= 1"):
        ZSDOutputLayers(c, ShapeSpec(channels=8))


def test_seen_group_mlp_classifier(cfg):
    """MODEL.ZSD.CLASSIFIER seen_mlp: under grouped scoring the [seen, background] softmax is the MLP's
    and the [unseen, background] softmax the linear head's; its bias folds on top of both."""
    c = cfg.clone()
    c.ZSD.CLASSIFIER.HIDDEN_UNITS, c.MODEL.ZSD.CLASSIFIER = 6, "seen_mlp"
    torch.manual_seed(0)
    head = ZSDOutputLayers(c, ShapeSpec(channels=8)).cls_score
    assert isinstance(head, SeenGroupMLPClassifier) and head.seen_mask.tolist() == [True, False, True, False, False]
    assert "seen_mask" not in head.state_dict()  # from the split, not the checkpoint
    with torch.no_grad():
        head.bias.normal_()  # as after folding
        x = torch.randn(7, 8)
        lin, mlp, out = head.linear(x), head.mlp(x), head(x)
        unseen = ~head.seen_mask
        unseen[-1] = False
        biased = lin + head.bias
        torch.testing.assert_close(out[:, unseen] - out[:, -1:], biased[:, unseen] - biased[:, -1:])
        seen = head.seen_mask
        torch.testing.assert_close(out[:, seen] - out[:, -1:],
                                   mlp[:, seen] - mlp[:, -1:] + head.bias[seen] - head.bias[-1])
        no_bias = out - head.bias
        mask = torch.tensor([False, True, False, True, False])
        expected_seen = torch.softmax(torch.cat([mlp[:, [0, 2]], mlp[:, -1:]], 1), 1)[:, :2]
        probs = gzsd_probs(no_bias, mask, "grouped", 0.0, 0.0)
        torch.testing.assert_close(probs[:, [0, 2]], expected_seen)
        expected_unseen = torch.softmax(torch.cat([lin[:, [1, 3]], lin[:, -1:]], 1), 1)[:, :2]
        torch.testing.assert_close(probs[:, [1, 3]], expected_unseen)
    with pytest.raises(ValueError, match="background"):
        SeenGroupMLPClassifier(torch.nn.Linear(8, 5), MLPBoxClassifier(8, 4, 5), [0, 4])


def test_bad_mode_and_missing_agnostic_regression(cfg):
    with pytest.raises(ValueError, match="MODEL.ZSD.MODE must be one of"):
        predictor(cfg, MODE="unseen")
    c = cfg.clone()
    c.MODEL.ROI_HEADS.NAME = "ZSDROIHeads"
    c.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    c.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    c.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False
    c.MODEL.DEVICE = "cpu"
    from detectron2.modeling import build_model

    with pytest.raises(ValueError, match="CLS_AGNOSTIC_BBOX_REG"):
        build_model(c)



def test_grouped_gzsd_scoring_matches_suzod(cfg):
    """Separate seen / unseen softmaxes, seen floor, averaged background (protocol §9)."""
    scores = torch.tensor([[2.0, 1.0, 0.0, 3.0, 0.5], [-5.0, 4.0, -5.0, 0.0, 1.0]])
    props = Instances((32, 32))
    props.proposal_boxes = Boxes(torch.zeros(2, 4))
    p = predictor(cfg, MODE="gzsd", GZSD_SCORING="grouped", GZSD_SEEN_THRESH=0.3)
    (probs,) = p.predict_probs((scores, None), [props])
    seen = torch.softmax(scores[:, [0, 2, 4]], 1)  # seen a, c + background
    unseen = torch.softmax(scores[:, [1, 3, 4]], 1)  # unseen b, d + background
    expected = torch.stack([seen[:, 0], unseen[:, 0], seen[:, 1], unseen[:, 1],
                            (seen[:, 2] + unseen[:, 2]) / 2], 1)
    expected[:, [0, 2]] *= expected[:, [0, 2]] >= 0.3
    torch.testing.assert_close(probs, expected)
    assert probs[1, 0] == 0 and probs[1, 2] == 0  # seen probabilities under the floor


def test_semantic_aux_loss_pulls_seen_foreground_features_to_their_embedding(cfg):
    """SEMANTIC_AUX_WEIGHT: loss_semantic_aux = w * mean(1 - cos(P x, e_y)) over the foreground RoIs,
    with gradient into P and the box features; off by default; P plays no part in scoring."""
    assert not hasattr(predictor(cfg), "semantic_aux")
    p = predictor(cfg, SEMANTIC_AUX_WEIGHT=0.5)
    x = torch.randn(6, 8, requires_grad=True)
    props = Instances((32, 32))
    props.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10]] * 6))
    props.gt_boxes = Boxes(torch.tensor([[0.0, 0, 12, 12]] * 6))
    props.gt_classes = torch.tensor([0, 2, 4, 0, 2, 4])  # 4 = background
    p.train()
    with EventStorage():
        losses = p.losses(p(x), [props])
    fg = torch.tensor([0, 1, 3, 4])
    expected = 0.5 * (1 - torch.nn.functional.cosine_similarity(
        p.semantic_aux(x[fg]), torch.eye(4)[props.gt_classes[fg]], dim=1)).mean()
    torch.testing.assert_close(losses["loss_semantic_aux"], expected)
    losses["loss_semantic_aux"].backward()
    assert p.semantic_aux.weight.grad.abs().sum() > 0 and x.grad[[2, 5]].abs().sum() == 0  # background rows
    p.eval()
    scores_before, _ = p(x.detach())
    p.semantic_aux.weight.data.add_(1.0)
    torch.testing.assert_close(p(x.detach())[0], scores_before)


def test_semantic_aux_loss_needs_a_training_forward(cfg):
    p = predictor(cfg, SEMANTIC_AUX_WEIGHT=1.0)
    with pytest.raises(RuntimeError, match="training forward"):
        p.semantic_aux_loss([])


def test_build_box_head_names_an_unknown_kind_before_the_hidden_units():
    from zsdet.modeling.mlp_classifier import build_box_head

    with pytest.raises(ValueError, match=r"box head must be one of \('linear', 'mlp', 'seen_mlp'\), got 'mpl'"):
        build_box_head("mpl", 8, 5, hidden_units=0)
    assert isinstance(build_box_head("seen_mlp", 8, 5, 4, [0, 2]), SeenGroupMLPClassifier)
    assert isinstance(build_box_head("linear", 8, 5), torch.nn.Linear)
