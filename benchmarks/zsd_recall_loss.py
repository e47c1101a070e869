"""Benchmark: where the unseen objects that ZSD Recall@100 misses are lost.

On the validation worlds of ``benchmarks/zsd_held_out_validation.py`` (held-out classes the world's
detector never saw, as the real detector never sees the unseen ones), a candidate's retrained
detector (``<out>/split<k>/<candidate>/seed0/model_zsd.pth``) scores the first ``--images`` images
of the world's ZSD set (``zsd_dense_heldout<k>_test_zsd``: held-out objects only) in ZSD mode, and
every held-out object is put in the first stage where it is lost:

* ``found``: a final detection of its class (after the score threshold, per-class NMS and the
  top-``TEST.DETECTIONS_PER_IMAGE`` cut) overlaps it at IoU >= ``--iou``;
* ``no_box``: no box of the RoI head (every RPN proposal after class-agnostic regression) overlaps it
  at IoU >= ``--iou``: the proposals or the regression miss it, whatever the classifier;
* ``to_background`` / ``to_other_unseen``: boxes overlap it, but on each of them its class scores at
  most ``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` (the protocol's 0.05), and on the one where it scores
  highest the background column / another unseen class takes the most probability;
* ``lost_after_scoring``: a box overlapping it scores its class above the threshold, yet no final
  detection of its class overlaps it (NMS kept a worse box, or the top-k cut dropped it).

Shares are over objects (``found`` counts any overlapping detection of the class, so it is at least
the evaluator's greedy matching; the evaluator's recall is a mean over classes). Nothing here
chooses a setting; no test image of ``zsd_dense`` is read.

    python benchmarks/zsd_recall_loss.py --output-dir output/zsd_sched600 --splits 0,1,2,3 --candidate flf
"""
import argparse
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from zsd_held_out_validation import add_world_arguments, analyse_worlds, check_world_arguments  # noqa: E402

from zsdet.utils.io import write_json, write_text  # noqa: E402

FATES = ("found", "no_box", "to_background", "to_other_unseen", "lost_after_scoring")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_world_arguments(p)
    p.add_argument("--candidate", default="flf", help="the run of the output folder whose model_zsd.pth is scored")
    p.add_argument("--iou", type=float, default=0.5, help="IoU at which a box covers an object")
    args = p.parse_args(argv)
    check_world_arguments(p, args)
    if not 0 < args.iou < 1:
        p.error("--iou in (0, 1)")
    return args


def object_fates(gt_boxes: torch.Tensor, gt_classes: torch.Tensor, boxes: torch.Tensor, probs: torch.Tensor,
                 det_boxes: torch.Tensor, det_classes: torch.Tensor, score_thresh: float, iou: float):
    """Stage at which each object is lost, as indices into :data:`FATES` (g,), and the highest
    probability of its class on a box covering it (g,; 0 without one).

    gt_boxes (g, 4), gt_classes (g,); boxes (n, 4) and probs (n, K + 1, background last) of every
    box of the RoI head; det_boxes (m, 4), det_classes (m,) the final detections; XYXY, one image.
    """
    from detectron2.structures import Boxes, pairwise_iou

    g = len(gt_boxes)
    covers = pairwise_iou(Boxes(gt_boxes), Boxes(boxes)) >= iou  # (g, n)
    true_prob = torch.where(covers, probs[:, gt_classes].T, torch.zeros(()))  # (g, n)
    best_prob, best_box = true_prob.max(1) if len(boxes) else (torch.zeros(g), torch.zeros(g, dtype=torch.long))
    hit = (pairwise_iou(Boxes(gt_boxes), Boxes(det_boxes)) >= iou) & (gt_classes[:, None] == det_classes[None, :])
    winner = probs[best_box].argmax(1) if len(boxes) else torch.zeros(g, dtype=torch.long)
    fate = torch.full((g,), FATES.index("lost_after_scoring"))
    below = best_prob <= score_thresh
    fate[below & (winner == probs.shape[1] - 1)] = FATES.index("to_background")
    fate[below & (winner != probs.shape[1] - 1)] = FATES.index("to_other_unseen")
    fate[~covers.any(1)] = FATES.index("no_box")
    fate[hit.any(1)] = FATES.index("found")
    return fate, best_prob


def fate_shares(fates: torch.Tensor) -> dict:
    """Percent of objects per fate of :data:`FATES`; fates (g,) indices."""
    counts = torch.bincount(fates, minlength=len(FATES)).double()
    return {name: float(100 * c / max(len(fates), 1)) for name, c in zip(FATES, counts)}


def world_detector(run_dir: str):
    """(detector in ZSD mode with the run's retrained classifier, its cfg)."""
    from detectron2.modeling import build_model

    from zsdet.config import get_zsdet_cfg
    from zsdet.engine.checkpoints import load_detector_weights
    from zsdet.engine.synthesis_classifier import box_classifier_kind

    config = os.path.join(run_dir, "config.yaml")
    kind = box_classifier_kind(get_zsdet_cfg(config))
    cfg = get_zsdet_cfg(config, ["MODEL.ZSD.MODE", "zsd", "MODEL.ZSD.CLASSIFIER", kind, "MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    load_detector_weights(model, os.path.join(run_dir, "model_zsd.pth"))
    return model.eval(), cfg


def image_fates(model, inputs: dict, score_thresh: float, iou: float):
    """object_fates of one mapped image (``inputs`` with its resized "instances")."""
    from detectron2.structures import Boxes

    heads = model.roi_heads
    images = model.preprocess_image([inputs])
    features = model.backbone(images.tensor)
    proposals, _ = model.proposal_generator(images, features, None)
    predictions = heads.box_predictor(heads.box_features(features, [p.proposal_boxes for p in proposals]))
    boxes = Boxes(heads.box_predictor.predict_boxes(predictions, proposals)[0])  # class-agnostic: (n, 4)
    boxes.clip(images.image_sizes[0])  # as inference clips its detections
    probs = heads.box_predictor.predict_probs(predictions, proposals)[0]
    detections, _ = heads.box_predictor.inference(predictions, proposals)
    gt = inputs["instances"]
    return object_fates(gt.gt_boxes.tensor, gt.gt_classes, boxes.tensor, probs, detections[0].pred_boxes.tensor,
                        detections[0].pred_classes, score_thresh, iou)


def world_result(world: int, args) -> dict:
    from detectron2.data import DatasetCatalog, DatasetMapper
    from detectron2.data.detection_utils import build_augmentation

    run_dir = os.path.join(args.output_dir, f"split{world}", args.candidate, "seed0")
    model, cfg = world_detector(run_dir)
    # test-time resizing, no flip; is_train keeps the boxes
    mapper = DatasetMapper(is_train=True, augmentations=build_augmentation(cfg, is_train=False),
                           image_format=cfg.INPUT.FORMAT)
    fates, best, classes = [], [], []
    for d in DatasetCatalog.get(cfg.ZSD.TEST_ZSD)[:args.images]:
        inputs = mapper(d)
        fate, best_prob = image_fates(model, inputs, cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, args.iou)
        fates.append(fate)
        best.append(best_prob)
        classes.append(inputs["instances"].gt_classes)
    fates, best, classes = torch.cat(fates), torch.cat(best), torch.cat(classes)
    found = fates == FATES.index("found")
    per_class = [float(100 * found[classes == c].double().mean()) for c in torch.unique(classes)]
    below = (fates == FATES.index("to_background")) | (fates == FATES.index("to_other_unseen"))
    return {"split": world, "objects": len(fates), **fate_shares(fates),
            "found_class_mean": float(np.mean(per_class)),
            "below_threshold_median_prob": float(best[below].median()) if bool(below.any()) else None}


def format_table(results) -> str:
    rows = ["| world | objects | found | found, class mean | no box | under the threshold: background | "
            "under the threshold: another unseen class | lost after scoring |", "|---|---|---|---|---|---|---|---|"]
    for r in results + [{"split": "mean", **{k: np.mean([x[k] for x in results])
                                            for k in ("objects", "found_class_mean", *FATES)}}]:
        rows.append(f"| {r['split']} | {r['objects']:.0f} | {r['found']:.1f} | {r['found_class_mean']:.1f} | "
                    f"{r['no_box']:.1f} | {r['to_background']:.1f} | {r['to_other_unseen']:.1f} | "
                    f"{r['lost_after_scoring']:.1f} |")
    return "\n".join(rows)


def main(argv=None):
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    results, table = analyse_worlds(args, world_result, format_table)
    write_json(os.path.join(args.output_dir, f"recall_loss_{args.candidate}.json"), results)
    write_text(os.path.join(args.output_dir, f"recall_loss_{args.candidate}.md"), table + "\n")


if __name__ == "__main__":
    main()
