"""Benchmark: ZSD Recall@100 and mAP per object density of the ``benchmarks/zsd_methods.py`` runs.

For every (method, seed) run folder ``<out>/<method>/seed<k>`` (its ``config.yaml`` and
``model_zsd.pth``, or ``model_baseline.pth`` for ``baseline``), the model runs in ZSD mode over
``ZSD.TEST_ZSD`` once; the test images are then binned by how many objects they hold (all
annotations of the same image in ``ZSD.TEST_GZSD``, seen and unseen), and each bin is scored
with the protocol's one code path, :func:`zsdet.evaluation.zsd_evaluator.evaluate_and_write`, on
the GT and detections of that bin's images (row ``all``: every image, the run's ``metrics.json``
figure). Output: one JSON line per (method, seed, bin) with ``method, seed, bin, images,
unseen_gt, zsd_recall40/50/60, zsd_map50`` (percent), a table of mean ± std over seeds, written
to ``<out>/density.jsonl`` and ``<out>/density_table.md``.

    python benchmarks/zsd_density.py            # the 6 methods, seed 0, bins 5-7,8-9,10,11-12
    python benchmarks/zsd_density.py --seeds 3 --methods alf,clf --bins 5-8,9-12
"""
import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

import zsdet  # noqa: E402,F401  (first: the Pillow alias detectron2 v0.6 needs at import)
from detectron2.data import DatasetCatalog, build_detection_test_loader  # noqa: E402
from detectron2.evaluation import inference_on_dataset  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from zsdet.config import get_zsdet_cfg  # noqa: E402
from zsdet.engine import ZSDPipeline, load_detector_weights  # noqa: E402
from zsdet.engine.zsd_pipeline import pipeline_methods  # noqa: E402
from zsdet.evaluation import ZSDEvaluator  # noqa: E402
from zsdet.evaluation.report import map_key, recall_key  # noqa: E402
from zsdet.evaluation.zsd_evaluator import evaluate_and_write  # noqa: E402
from zsdet.utils.io import write_text  # noqa: E402

METHODS = ("baseline", "single_label", "alf", "flf", "clf_official", "clf")
RECALL_IOUS = (0.4, 0.5, 0.6)
MAP_IOU = 0.5
ALL = "all"


def parse_bins(text: str):
    """``"5-7,8-9,10"`` -> ``((5, 7), (8, 9), (10, 10))``: inclusive object-count ranges, ascending
    and disjoint."""
    bins = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        lo, _, hi = part.partition("-")
        try:
            bins.append((int(lo), int(hi or lo)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--bins: {part!r} is not N or N-M") from None
    if not bins or any(lo > hi for lo, hi in bins) or any(
            a[1] >= b[0] for a, b in zip(bins, bins[1:])):
        raise argparse.ArgumentTypeError(
            f"--bins must be ascending disjoint ranges N-M, got {text!r}")
    return tuple(bins)


def bin_label(bounds) -> str:
    lo, hi = bounds
    return str(lo) if lo == hi else f"{lo}-{hi}"


def assign_bins(counts: np.ndarray, bins) -> np.ndarray:
    """(N,) object counts -> (N,) index into ``bins`` (-1: in no bin)."""
    counts = np.asarray(counts)
    lows = np.array([lo for lo, _ in bins])
    highs = np.array([hi for _, hi in bins])
    inside = (counts[:, None] >= lows) & (counts[:, None] <= highs)  # (N, B), <= one True a row
    return np.where(inside.any(1), inside.argmax(1), -1)


class DensityZSDEvaluator(ZSDEvaluator):
    """:class:`ZSDEvaluator` in ZSD mode whose :meth:`evaluate` scores every density bin apart.

    ``objects_per_image``: ``{image_id: number of objects}``. :meth:`evaluate` returns ``{bin
    label: {ZSD metric: percent, "images": n, "unseen_gt": n}}`` for every bin and ``"all"``."""

    def __init__(self, dataset_name: str, objects_per_image, bins):
        super().__init__(dataset_name, None, mode="zsd", iou_thresholds=RECALL_IOUS,
                         map_iou=MAP_IOU, distributed=False)
        self._objects_per_image = objects_per_image
        self._bins = bins

    def evaluate(self):
        index_of, gt = self._load_ground_truth()
        dets = self._stack_predictions(self._predictions, index_of)
        missing = [i for i in index_of if i not in self._objects_per_image]
        if missing:
            raise KeyError(f"images {missing[:5]} of {self._dataset_name!r} are not in the dataset "
                           "the object counts came from")
        counts = np.array([self._objects_per_image[i] for i in index_of])  # rows of index_of
        image_bin = assign_bins(counts, self._bins)
        groups = [(ALL, np.ones(len(counts), bool))] + [
            (bin_label(b), image_bin == k) for k, b in enumerate(self._bins)]
        results = {}
        for label, in_bin in groups:
            gt_rows, det_rows = in_bin[gt.image_ids], in_bin[dets.image_ids]
            figures = evaluate_and_write(
                gt.subset(gt_rows), dets.subset(det_rows), class_names=self._class_names,
                is_unseen=self._is_unseen, mode="zsd", iou_thresholds=RECALL_IOUS, map_iou=MAP_IOU,
                max_dets_per_image=self._max_dets, name=f"{self._dataset_name} [{label} objects]")
            unseen_gt = int((self._is_unseen[gt.classes[gt_rows]] & ~gt.ignore[gt_rows]).sum())
            results[label] = {**figures["zsd"], "images": int(in_bin.sum()), "unseen_gt": unseen_gt}
        return results


def objects_per_image(dataset_name: str) -> dict:
    """``{image_id: number of non-crowd annotations}`` of a registered dataset."""
    return {rec["image_id"]: sum(not a.get("iscrowd", 0) for a in rec.get("annotations", ()))
            for rec in DatasetCatalog.get(dataset_name)}


def run_weights(run_dir: str, cfg):
    """(weights file, ``MODEL.ZSD.CLASSIFIER``) of a finished run folder with config ``cfg``."""
    for _, name, classifier in pipeline_methods(cfg):  # model_zsd.pth, model_baseline.pth
        if os.path.isfile(os.path.join(run_dir, name)):
            return os.path.join(run_dir, name), classifier
    raise FileNotFoundError(f"{run_dir}: neither model_zsd.pth nor model_baseline.pth (run "
                            "benchmarks/zsd_methods.py first)")


def evaluate_run(run_dir: str, bins) -> dict:
    """ZSD figures per density bin of one run folder (see :class:`DensityZSDEvaluator`)."""
    config = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(config):
        raise FileNotFoundError(f"{config} is missing (run benchmarks/zsd_methods.py first)")
    run_cfg = get_zsdet_cfg(config)
    weights, classifier = run_weights(run_dir, run_cfg)
    cfg = ZSDPipeline(run_cfg)._with(MODE="zsd", CLASSIFIER=classifier)
    model = build_model(cfg)
    load_detector_weights(model, weights)
    evaluator = DensityZSDEvaluator(cfg.ZSD.TEST_ZSD, objects_per_image(cfg.ZSD.TEST_GZSD), bins)
    loader = build_detection_test_loader(cfg, cfg.ZSD.TEST_ZSD)
    return inference_on_dataset(model, loader, evaluator)


def json_line(method: str, seed: int, label: str, figures: dict) -> dict:
    line = {"method": method, "seed": seed, "bin": label, "images": figures["images"],
            "unseen_gt": figures["unseen_gt"]}
    line.update({f"zsd_recall{round(100 * t)}": round(figures[recall_key(100, t)], 2)
                 for t in RECALL_IOUS})
    line["zsd_map50"] = round(figures[map_key(MAP_IOU)], 2)
    return line


def format_table(lines, labels) -> str:
    """Markdown: one row per method, per bin ``R@100 .5 / mAP .5`` as mean ± std over seeds."""
    def cell(values):
        mean = float(np.mean(values))
        return f"{mean:.1f}" if len(values) < 2 else f"{mean:.1f} ± {np.std(values, ddof=1):.1f}"

    first = {ln["bin"]: ln for ln in lines}
    head = [f"{lab} objects ({first[lab]['images']} img, {first[lab]['unseen_gt']} unseen GT)"
            for lab in labels]
    rows = ["| method | " + " | ".join(head) + " |", "|---" * (len(labels) + 1) + "|"]
    for method in dict.fromkeys(ln["method"] for ln in lines):
        cells = []
        for lab in labels:
            sel = [ln for ln in lines if ln["method"] == method and ln["bin"] == lab]
            cells.append(f"{cell([ln['zsd_recall50'] for ln in sel])} / "
                         f"{cell([ln['zsd_map50'] for ln in sel])}")
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output-dir", default="output/zsd_methods",
                   help="the benchmarks/zsd_methods.py output folder (default output/zsd_methods)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {METHODS}")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per method (default 1)")
    p.add_argument("--bins", type=parse_bins, default=parse_bins("5-7,8-9,10,11-12"),
                   help="inclusive ranges of objects per image (default 5-7,8-9,10,11-12: "
                        "47/37/32/34 of the 150 zsd_dense test images)")
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        p.error(f"--methods: unknown {unknown}; choose from {','.join(METHODS)}")
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    tic = time.perf_counter()
    labels = [ALL] + [bin_label(b) for b in args.bins]
    lines = []
    for seed in range(args.seeds):
        for method in args.methods:
            results = evaluate_run(os.path.join(args.output_dir, method, f"seed{seed}"), args.bins)
            for label in labels:
                lines.append(json_line(method, seed, label, results[label]))
                print(json.dumps(lines[-1]), flush=True)
    table = format_table(lines, labels)
    print("ZSD Recall@100 IoU .5 / ZSD mAP .5 (percent) by objects per image\n" + table,
          flush=True)
    write_text(os.path.join(args.output_dir, "density_table.md"), table + "\n")
    write_text(os.path.join(args.output_dir, "density.jsonl"), "".join(json.dumps(ln) + "\n" for ln in lines))
    print(f"[zsd_density] {(time.perf_counter() - tic) / 60:.1f} min wall; wrote "
          f"{args.output_dir}/density_table.md, density.jsonl", flush=True)


if __name__ == "__main__":
    main()
