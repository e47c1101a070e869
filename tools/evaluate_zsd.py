#!/usr/bin/env python
"""Score any detector's COCO-format detections with zsdet's ZSD / GZSD protocol.

    python tools/evaluate_zsd.py GT.json RESULTS.json --split coco65_15 \
        [--mode zsd|gzsd|both] [--iou 0.4,0.5,0.6] [--max-per-image 100] [--output DIR]

GT.json: COCO instances json (e.g. ``instances_val2014.json``); RESULTS.json: a COCO results list
``[{image_id, category_id, bbox: [x, y, w, h], score}, ...]`` as detectron2's ``COCOEvaluator``,
mmdetection and pycocotools write it. ``--split``: ``coco65_15``, ``coco48_17`` or a split file
(TSV with ``name`` and ``split`` columns, or JSON ``{"seen": [...], "unseen": [...]}``).

Test images are the images with at least one unseen annotation (``--all-images``: every image of
the json); ZSD counts the unseen GT boxes and unseen-class detections only; crowd boxes are
ignore regions (details: ``zsdet/evaluation/coco_results.py``). The figures come from the same
function as ``tools/train_net.py``'s evaluation. Written to ``--output``: ``metrics.json``
(``{method: {"zsd": {...}, "gzsd": {...}}}``, the pipeline's keys), ``results_table.txt``,
``inputs.json`` (files, split, and how many detections were read and left out, and why) and
``inference/<method>_<mode>/{zsd_results.json,zsd_per_class.png}``.
"""
import argparse
import logging
import os
import sys

import zsdet  # noqa: F401  (first: the Pillow alias detectron2 v0.6 needs at import)
from detectron2.utils.logger import setup_logger
from zsdet.data.datasets.coco_zsd import load_class_split
from zsdet.engine.zsd_report import write_results_report
from zsdet.evaluation.coco_results import load_coco_results, load_coco_test_set
from zsdet.evaluation.zsd_evaluator import evaluate_and_write
from zsdet.utils.io import read_json, write_json

logger = logging.getLogger("zsdet.evaluate_zsd")

MODE_CHOICES = {"zsd": ("zsd",), "gzsd": ("gzsd",), "both": ("zsd", "gzsd")}


def parse_ious(text: str):
    try:
        ious = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--iou must be comma-separated numbers, got {text!r}")
    if not ious or not all(0 < t <= 1 for t in ious):
        raise argparse.ArgumentTypeError(f"--iou thresholds must lie in (0, 1], got {text!r}")
    return ious


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("gt", metavar="GT.json", help="COCO instances json of the test images")
    parser.add_argument("results", metavar="RESULTS.json", help="COCO results json (a list)")
    parser.add_argument("--split", required=True,
                        help="coco65_15, coco48_17, or a split file (TSV name/split, or JSON)")
    parser.add_argument("--mode", choices=sorted(MODE_CHOICES), default="both",
                        help="zsd (unseen GT and detections), gzsd (all), or both (default)")
    parser.add_argument("--iou", type=parse_ious, default=(0.4, 0.5, 0.6),
                        help="IoU thresholds of Recall@max-per-image (default 0.4,0.5,0.6)")
    parser.add_argument("--map-iou", type=float, default=0.5, help="IoU threshold of mAP")
    parser.add_argument("--max-per-image", type=positive_int, default=100,
                        help="detections kept per image, by score (default 100)")
    parser.add_argument("--all-images", action="store_true",
                        help="evaluate every image of GT.json, not only those with an unseen object")
    parser.add_argument("--method", default=None,
                        help="row name in metrics.json and the table (default: RESULTS file stem)")
    parser.add_argument("--output", default="output/evaluate_zsd", help="output directory")
    return parser


def main(argv=None) -> dict:
    """Run the tool; returns ``{method: {mode: {metric: percent}}}`` as written to metrics.json."""
    args = build_parser().parse_args(argv)
    method = args.method or os.path.splitext(os.path.basename(args.results))[0]
    coco = read_json(args.gt, "ground-truth")
    categories = coco.get("categories", []) if isinstance(coco, dict) else []
    class_names = [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
    split = load_class_split(args.split, class_names)
    test_set = load_coco_test_set(coco, split, all_images=args.all_images, source=args.gt)
    del coco
    if len(test_set.image_ids) == 0:
        raise ValueError(f"{args.gt}: no image has an annotation of an unseen class of split "
                         f"{args.split!r} (pass --all-images to evaluate every image)")
    results = read_json(args.results, "results")
    dets, counts = load_coco_results(results, test_set, source=args.results)
    del results
    logger.info("%s: %d test images (%s), %d GT boxes, %d seen / %d unseen classes", args.gt,
                len(test_set.image_ids), "all images" if args.all_images else
                "images with an unseen object", len(test_set.gt.classes),
                int((~test_set.is_unseen).sum()), int(test_set.is_unseen.sum()))
    logger.info("%s: %d detections read, %d evaluated; left out: %d on images not in the GT, "
                "%d on images that are not test images, %d of classes outside the split",
                args.results, counts.total, counts.evaluated, counts.image_not_in_gt,
                counts.not_a_test_image, counts.class_outside_split)
    if counts.total == 0:
        logger.warning("%s is an empty results list: every figure is 0", args.results)
    elif counts.evaluated == 0:
        logger.warning("none of the %d detections of %s is on a test image of a split class: "
                       "every figure is 0 (wrong GT file or image ids?)", counts.total, args.results)
    metrics = {method: {}}
    for mode in MODE_CHOICES[args.mode]:
        metrics[method].update(evaluate_and_write(
            test_set.gt, dets, class_names=test_set.class_names, is_unseen=test_set.is_unseen,
            mode=mode, iou_thresholds=args.iou, map_iou=args.map_iou,
            max_dets_per_image=args.max_per_image,
            output_dir=os.path.join(args.output, "inference", f"{method}_{mode}"),
            name=f"{os.path.basename(args.results)} on {os.path.basename(args.gt)}"))
    write_json(os.path.join(args.output, "inputs.json"), {
        "ground_truth": os.path.abspath(args.gt), "results": os.path.abspath(args.results),
        "split": args.split, "seen_classes": list(split.seen), "unseen_classes": list(split.unseen),
        "all_images": args.all_images, "num_test_images": int(len(test_set.image_ids)),
        "num_gt_boxes": int(len(test_set.gt.classes)), "detections": counts.as_dict()})
    write_results_report(args.output, metrics)
    return metrics


if __name__ == "__main__":
    setup_logger(name="zsdet")
    try:
        main()
    except (FileNotFoundError, KeyError, ValueError) as e:
        sys.exit(f"error: {e.args[0] if isinstance(e, KeyError) else e}")  # KeyError str() quotes
