#!/usr/bin/env python
"""Run the zero-shot detector on image files and save them with the detections drawn.

    python tools/demo.py --config-file configs/shapes/zsd_shapes_R18_FPN.yaml \
        --input img1.png "dir/*.jpg" --output demo_out --mode gzsd --scale 4 \
        --opts MODEL.WEIGHTS output/zsd_shapes/model_zsd.pth

Each input is saved as ``OUTPUT/<name>.png`` (``--scale`` times its size, a legend strip below):
seen classes in cyan, unseen classes in magenta with labels ``"UNSEEN: <class> <score>"``, placed
so that they do not overlap. By default each object keeps one label: detections whose boxes
overlap with IoU above ``--label-nms-iou``, whatever their classes, keep only the highest-scoring
one (GZSD scoring can label one box with a seen and an unseen class); ``--all-detections`` draws
every detection above the threshold. Class names and the seen / unseen split come from the
metadata of ``cfg.DATASETS.TRAIN[0]``.
"""
import argparse
import glob
import logging
import os
from collections import Counter
from typing import List

import cv2
import torch
import tqdm

import zsdet  # first: applies the Pillow alias detectron2 v0.6 needs at import (zsdet.compat)
from zsdet.config import get_zsdet_cfg
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.utils.logger import setup_logger
from zsdet.compat import check_config_supported
from zsdet.engine import load_detector_weights
from zsdet.engine.checkpoints import weights_classifier_kind
from zsdet.modeling import zsd_split_from_config
from zsdet.modeling.zsd_predictor import MODES
from zsdet.utils.visualize import (
    add_legend,
    draw_zsd_detections,
    one_label_per_object,
    select_detections,
)
from zsdet.utils.io import write_bytes

logger = logging.getLogger("zsdet.demo")


def setup_cfg(args):
    cfg = get_zsdet_cfg(args.config_file, args.opts)
    if args.mode:
        cfg.MODEL.ZSD.MODE = args.mode
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.freeze()
    check_config_supported(cfg)
    return cfg


def expand_inputs(patterns: List[str]) -> List[str]:
    """Image paths from file names and glob patterns; a name matching no file is an error."""
    paths = []
    for pattern in patterns:
        matches = [pattern] if os.path.isfile(pattern) else sorted(
            p for p in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(p))
        if not matches:
            raise FileNotFoundError(f"input image not found: {pattern}")
        paths += matches
    names = Counter(os.path.splitext(os.path.basename(p))[0] for p in paths)
    clashes = sorted(n for n, count in names.items() if count > 1)
    if clashes:
        raise ValueError(f"several inputs would be saved as the same output file: {clashes}")
    return paths


def build_predictor(cfg) -> DefaultPredictor:
    """detectron2's ``DefaultPredictor`` with the weights loaded by ``load_detector_weights``.

    Unlike detectron2's checkpointer, which skips tensors of another shape with a log line, the
    zsdet loader fails on a missing / corrupt file or a box classifier of the wrong shape. The box
    classifier is built as the weights file records it (``weights_classifier_kind``).
    """
    if not cfg.MODEL.WEIGHTS:
        raise ValueError("MODEL.WEIGHTS is empty: pass --opts MODEL.WEIGHTS path/to/model.pth")
    scratch = cfg.clone()
    scratch.defrost()
    scratch.MODEL.WEIGHTS = ""  # DefaultPredictor then builds the model without loading anything
    scratch.MODEL.ZSD.CLASSIFIER = weights_classifier_kind(cfg.MODEL.WEIGHTS, cfg.MODEL.ZSD.CLASSIFIER)
    predictor = DefaultPredictor(scratch)
    load_detector_weights(predictor.model, cfg.MODEL.WEIGHTS)
    return predictor


def main(args) -> List[dict]:
    """Detect, draw and save every input; returns per image its input / output paths and the
    numbers of seen and unseen labels drawn."""
    cfg = setup_cfg(args)
    paths = expand_inputs(args.input)
    split = zsd_split_from_config(cfg)
    if split is None:
        raise KeyError("DATASETS.TRAIN is empty: the demo reads class names and the seen / unseen "
                       "split from the metadata of DATASETS.TRAIN[0]")
    metadata = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
    predictor = build_predictor(cfg)
    os.makedirs(args.output, exist_ok=True)
    summary = []
    for path in tqdm.tqdm(paths, desc="demo", unit="img"):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read image {path} (not an image file or corrupt)")
        instances = predictor(image)["instances"]
        dets, _ = select_detections(instances, split.unseen_ids, args.confidence_threshold)
        if not args.all_detections:
            dets = one_label_per_object(dets, args.label_nms_iou)
        unseen = torch.isin(dets.pred_classes, torch.as_tensor(split.unseen_ids))
        drawn = add_legend(draw_zsd_detections(image, dets, metadata, split.unseen_ids,
                                               args.confidence_threshold, args.scale),
                           note=scoring_note(cfg, args))
        out_path = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        encoded, png = cv2.imencode(".png", drawn, [cv2.IMWRITE_PNG_COMPRESSION, 9])  # 3x smaller
        if not encoded:
            raise OSError(f"cannot encode {out_path}")
        write_bytes(out_path, png.tobytes())
        n_unseen = int(unseen.sum())
        logger.info("%s: %d seen, %d unseen labels drawn (score > %.2f, %s) -> %s", path,
                    len(dets) - n_unseen, n_unseen, args.confidence_threshold,
                    scoring_note(cfg, args), out_path)
        summary.append({"input": path, "output": out_path,
                        "seen": len(dets) - n_unseen, "unseen": n_unseen})
    return summary


def scoring_note(cfg, args) -> str:
    """What the picture shows, for its legend: mode, GZSD scoring, labels per object."""
    z = cfg.MODEL.ZSD
    mode = z.MODE
    if mode == "gzsd":
        mode += f" {z.GZSD_SCORING}"
        if z.GZSD_SCORING == "joint" and z.SEEN_LOGIT_BIAS:
            mode += f" (seen bias {z.SEEN_LOGIT_BIAS:g})"
    return mode + (", all detections" if args.all_detections else ", best label per object")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to config file")
    parser.add_argument("--input", nargs="+", required=True,
                        help="image files or glob patterns, e.g. 'dir/*.jpg'")
    parser.add_argument("--output", required=True, help="directory for the drawn images (PNG)")
    parser.add_argument("--confidence-threshold", type=float, default=0.3,
                        help="draw detections scoring above this")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="output size / input size (e.g. 4 for the 128-pixel shapes images)")
    parser.add_argument("--all-detections", action="store_true",
                        help="draw every detection above the threshold, not one label per object")
    parser.add_argument("--label-nms-iou", type=float, default=0.5,
                        help="detections overlapping with IoU above this, whatever their classes, "
                             "keep only the best one (ignored with --all-detections)")
    parser.add_argument("--mode", choices=MODES, default=None,
                        help="MODEL.ZSD.MODE: classes scored (default: the config's)")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER,
                        help="config options as KEY VALUE pairs, e.g. MODEL.WEIGHTS model.pth")
    return parser


if __name__ == "__main__":
    args = build_parser().parse_args()
    setup_logger(name="zsdet")
    logger.info("Arguments: %s", args)
    main(args)
