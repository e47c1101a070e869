"""Benchmark: the paper's detection comparison on the built-in dense scenes (``zsd_dense``).

Six method rows (``configs/dense/<method>.yaml``, each runnable alone with ``tools/train_net.py``):

* ``baseline``: semantic-projection classifier;
* ``single_label``: SUZOD-style f-CLSWGAN on single-label RoI features, no mixtures anywhere;
* ``clf_official``: the paper's CLF as the official code builds it, with the previous classifier stage;
* ``alf``, ``flf``, ``clf``: fusion generators trained with multi-label RoI mixtures and the
  settings chosen on validation (``flf``: the default method; ``clf``: CLF without collapse).

Stages 1-2 (detector, RoI bank) run once, into ``<out>/shared`` with ``configs/dense/clf.yaml``
(the leaves differ only after stage 2). Every (method, seed) then runs its own stages in
``<out>/<method>/seed<k>`` (generator and classifier, or baseline; then evaluation), whose
``model_final.pth`` and ``roi_bank`` are links to the shared ones; the seed sets ``SEED`` and
``SYNTHESIS.SEED`` (generator initialisation, data order, mixtures, validation split, synthesized
features, classifier training). Each run is a ``tools/train_net.py`` process logging to
``log.txt`` in its folder; a run whose ``metrics.json`` exists is not run again, so a killed
benchmark resumes where it stopped (the stages inside a run resume too).

Output: one JSON line per (method, seed) with ``method, seed, zsd_recall50, zsd_map50,
gzsd_hm_recall50, gzsd_hm_map50`` (percent, plus the other table figures; seed-major order, so
a run cut short still covers every method), then a table of
mean ± std over seeds (ZSD Recall@100 at IoU .4/.5/.6, ZSD mAP .5, GZSD seen / unseen / HM recall
and mAP), written with a per-unseen-class table (``results_table.md``), ``summary.json`` and the
bar chart ``zsd_methods.png`` into ``<out>``.

``--detector-seeds 806,807`` scores the rows on several detectors: stages 1-2 run once per
detector seed (their ``SEED``) into ``<out>/det<seed>/shared``, every (method, seed) run in
``<out>/det<seed>/<method>/seed<k>``; the table pools every run (detectors x seeds), a second one
gives each detector's means and the seen fall against ``clf_official`` where it was run, and the
JSON lines carry ``detector_seed``. The seeds above then vary only the stages after the detector,
so without this flag the ± of the table is the generator's spread, not the detector's.

    python benchmarks/zsd_methods.py                 # 6 methods x 3 seeds (about 45 min on 2 cores)
    python benchmarks/zsd_methods.py --quick         # 1 seed, tiny set, short schedules (plumbing only)
    python benchmarks/zsd_methods.py --methods single_label,clf --seeds 5
    python benchmarks/zsd_methods.py --methods flf,clf_official --detector-seeds 806,807,808
"""
import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from zsdet.engine.zsd_report import COLUMNS  # noqa: E402
from zsdet.utils.io import write_figure, write_json, write_text  # noqa: E402

METHODS = ("baseline", "single_label", "alf", "flf", "clf_official", "clf")
CONFIG_DIR = os.path.join(ROOT, "configs", "dense")
SHARED_CONFIG = "clf.yaml"  # stages 1-2 are the same in every leaf
SHARED_STAGES = ("detector", "features")
RUN_TIME_FILE = "run_time.json"  # wall and CPU seconds of a finished run, in its folder
# --quick: every stage on the 40/10/20-image zsd_dense_tiny set (same classes and embeddings,
# 96-px images upscaled to 192), a 100-iteration detector, a 3-epoch generator: it checks the
# plumbing in minutes; its numbers rank nothing
def dataset_opts(prefix: str):
    """Config overrides that point every stage at the registered set ``<prefix>_*``."""
    return ("DATASETS.TRAIN", f"('{prefix}_train',)", "DATASETS.TEST", f"('{prefix}_val',)",
            "ZSD.TEST_ZSD", f"{prefix}_test_zsd", "ZSD.TEST_GZSD", f"{prefix}_test_gzsd")


QUICK_SCHEDULE = ("SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "100", "SOLVER.STEPS", "(75,)",
                  "SOLVER.WARMUP_ITERS", "30", "SYNTHESIS.EPOCHS", "3")
QUICK_OPTS = dataset_opts("zsd_dense_tiny") + QUICK_SCHEDULE
# JSON-line keys -> (result group, metric key) of metrics.json
HEADLINE = {"zsd_recall50": ("zsd", "recall@100_iou0.5"), "zsd_map50": ("zsd", "mAP_iou0.5"),
            "gzsd_hm_recall50": ("gzsd", "hm_recall@100_iou0.5"),
            "gzsd_hm_map50": ("gzsd", "hm_mAP_iou0.5"),
            "spread_ratio": ("feature_quality", "spread_ratio"),
            "real_vs_synth_acc": ("feature_quality", "real_vs_synth_acc"),
            "real_vs_synth_acc_aligned": ("alignment", "real_vs_synth_acc_after"),
            "real_vs_anchored_acc": ("anchoring", "real_vs_anchored_acc"),
            "tstr_ap": ("feature_quality", "tstr_ap"),
            "top1_unseen_as_seen": ("gzsd", "top1_unseen_other_group"),
            "top1_seen_correct": ("gzsd", "top1_seen_correct")}
# table columns: the pipeline's, then the synthesized features' quality and the GZSD top-1 labels
TABLE_COLUMNS = COLUMNS + (
    ("spread ratio", "feature_quality", "spread_ratio"),
    ("real-vs-synth probe acc", "feature_quality", "real_vs_synth_acc"),
    ("probe acc, aligned", "alignment", "real_vs_synth_acc_after"),
    ("probe acc, anchored", "anchoring", "real_vs_anchored_acc"),
    ("TSTR mAP", "feature_quality", "tstr_ap"),
    ("top-1 unseen as seen", "gzsd", "top1_unseen_other_group"),
    ("top-1 seen right", "gzsd", "top1_seen_correct"),
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="one seed, the tiny dense set, 100 detector iterations, 3 generator epochs "
                        "(minutes; checks the plumbing, ranks nothing)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per method (default 3; --quick: 1)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    p.add_argument("--detector-seeds", default=None,
                   help="comma-separated SEEDs of stages 1-2: one detector and RoI bank each, in "
                        "<out>/det<seed>/ (default: the config's SEED, one detector in <out>/shared)")
    p.add_argument("--output-dir", default=None,
                   help="default output/zsd_methods (--quick: output/zsd_methods_quick)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides for every run (KEY VALUE ...), after the --quick ones")
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        p.error(f"--methods: unknown {unknown}; choose from {','.join(METHODS)}")
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    if args.detector_seeds is not None:
        try:
            args.detector_seeds = [int(s) for s in args.detector_seeds.split(",") if s.strip()]
        except ValueError:
            p.error(f"--detector-seeds: not a comma-separated list of integers: {args.detector_seeds!r}")
        if not args.detector_seeds or len(set(args.detector_seeds)) != len(args.detector_seeds):
            p.error(f"--detector-seeds: give distinct seeds, got {args.detector_seeds}")
    if args.output_dir is None:
        args.output_dir = os.path.join("output", "zsd_methods_quick" if args.quick else "zsd_methods")
    args.output_dir = os.path.abspath(args.output_dir)
    return args


def train_net(config: str, output_dir: str, stages, opts, config_dir: str = CONFIG_DIR) -> dict:
    """Run ``tools/train_net.py`` with the config file ``config`` of ``config_dir`` (:func:`run_logged`)."""
    return run_logged([sys.executable, os.path.join(ROOT, "tools", "train_net.py"),
                       "--config-file", os.path.join(config_dir, config), "--stages", ",".join(stages),
                       "OUTPUT_DIR", output_dir, *opts], output_dir)


def run_logged(cmd, output_dir: str) -> dict:
    """Run ``cmd`` from the repository root, its output appended to ``output_dir/log.txt``.

    Returns ``{"wall_s", "cpu_s"}`` (also written to ``output_dir/run_time.json``): its wall time
    and the CPU time (user + system) of the process and its children, which on busy shared cores
    approximates its wall time on one idle core. Raises ``RuntimeError`` naming the log when it fails."""
    os.makedirs(output_dir, exist_ok=True)
    log = os.path.join(output_dir, "log.txt")
    tic, cpu = time.perf_counter(), _children_cpu_seconds()
    with open(log, "a") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if code:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {code}); see {log}")
    timing = {"wall_s": time.perf_counter() - tic, "cpu_s": _children_cpu_seconds() - cpu}
    write_json(os.path.join(output_dir, RUN_TIME_FILE), timing)
    return timing


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def link_shared(shared_dir: str, run_dir: str) -> None:
    """Make ``run_dir``'s detector weights and RoI bank relative links to the shared ones."""
    os.makedirs(run_dir, exist_ok=True)
    for name in ("model_final.pth", "roi_bank"):
        link = os.path.join(run_dir, name)
        if not os.path.lexists(link):
            os.symlink(os.path.relpath(os.path.join(shared_dir, name), run_dir), link)


def method_stages(method: str, config_dir: str = CONFIG_DIR):
    """The stages of config ``<config_dir>/<method>.yaml`` after the shared ones."""
    from zsdet.config import get_zsdet_cfg

    cfg = get_zsdet_cfg(os.path.join(config_dir, f"{method}.yaml"))
    return [s for s in cfg.ZSD.STAGES if s not in SHARED_STAGES]


def result_name(method: str) -> str:
    """The method's name in the pipeline's metrics.json and inference folders (``zsd_pipeline.METHODS``)."""
    return "baseline" if method == "baseline" else "synthesis"


def run_result(method: str, metrics_file: str):
    """``{group: {metric: value}}`` of the method's entry in a run's metrics.json."""
    metrics = _read_json(metrics_file)
    name = result_name(method)
    if name not in metrics:
        raise KeyError(f"{metrics_file} has no {name!r} entry (has {sorted(metrics)})")
    return metrics[name]


def detector_root(out: str, detector_seed) -> str:
    """The folder of one detector's ``shared`` stages and runs: ``out`` itself for the config's seed
    (``detector_seed`` None), else ``out/det<seed>``."""
    return out if detector_seed is None else os.path.join(out, f"det{detector_seed}")


def run_dir(out: str, method: str, run) -> str:
    """The folder of one run; ``run`` is its (detector seed or None, seed)."""
    detector_seed, seed = run
    return os.path.join(detector_root(out, detector_seed), method, f"seed{seed}")


def per_class_table(out: str, results) -> str:
    """ZSD AP .5 / Recall@100 .5 of each unseen class, mean over runs, methods side by side
    (from ``inference/<name>_zsd/zsd_results.json`` of every run)."""
    rows = {}
    for method, runs in results.items():
        for run in runs:
            path = os.path.join(run_dir(out, method, run), "inference", f"{result_name(method)}_zsd",
                                "zsd_results.json")
            for entry in _read_json(path)["per_class"]:
                cell = rows.setdefault(entry["class"], {}).setdefault(method, [])
                cell.append((entry["AP_iou0.5"], entry["recall@100_iou0.5"]))
    methods = list(results)
    lines = ["| unseen class | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 1)]
    for cls, cells in rows.items():
        means = [[sum(v) / len(v) for v in zip(*cells[m])] if m in cells else None for m in methods]
        lines.append(f"| {cls} | " + " | ".join("n/a" if m is None else f"{m[0]:.1f} / {m[1]:.1f}"
                                                 for m in means) + " |")
    return "ZSD AP .5 / Recall@100 .5 per unseen class, mean over runs, percent\n" + "\n".join(lines)


def json_line(method: str, seed: int, result, detector_seed=None) -> dict:
    line = {"method": method, "seed": seed}
    if detector_seed is not None:
        line["detector_seed"] = detector_seed
    line.update({key: result.get(group, {}).get(metric) for key, (group, metric) in HEADLINE.items()})
    line.update({f"{group}/{metric}": result.get(group, {}).get(metric) for _, group, metric in TABLE_COLUMNS})
    return line


def mean_std(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarise(results):
    """``{method: {"<group>/<metric>": (mean, sample std)}}`` over runs."""
    return {method: {f"{g}/{m}": mean_std([r.get(g, {}).get(m) for r in runs.values()])
                     for _, g, m in TABLE_COLUMNS}
            for method, runs in results.items()}


def format_table(summary, runs: str) -> str:
    """The pooled table; ``runs`` says what the ± is over (e.g. "3 seeds")."""
    def cell(mean, std, digits):
        if math.isnan(mean):
            return "n/a"
        return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"

    def digits(group, metric):  # ratios: 2 digits, probe accuracies 3 (their target is 0.75); percent: 1
        if group in ("alignment", "anchoring") or (group == "feature_quality" and metric != "tstr_ap"):
            return 3 if "acc" in metric else 2
        return 1

    header = "| method | " + " | ".join(h for h, _, _ in TABLE_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(TABLE_COLUMNS) + 1)]
    for method, stats in summary.items():
        lines.append(f"| {method} | " + " | ".join(cell(*stats[f"{g}/{m}"], digits(g, m))
                                                    for _, g, m in TABLE_COLUMNS) + " |")
    return (f"mean ± sample std over {runs}; percent, but spread ratio and probe accuracy (ratios)\n"
            + "\n".join(lines))


# the per-detector table: (column header, result group, metric key)
DETECTOR_COLUMNS = (
    ("ZSD R@100 .5", "zsd", "recall@100_iou0.5"), ("ZSD mAP .5", "zsd", "mAP_iou0.5"),
    ("GZSD HM mAP .5", "gzsd", "hm_mAP_iou0.5"), ("unseen as seen", "gzsd", "top1_unseen_other_group"),
    ("seen right", "gzsd", "top1_seen_correct"))
FALL_REFERENCE = "clf_official"  # the seen fall: the official CLF's seen right minus the row's


def detector_means(results, detector_seeds):
    """``{method: {detector seed: {"<group>/<metric>": mean over seeds, "seen_fall": mean over seeds of
    the same seed's clf_official seen right minus the row's (absent without clf_official)}}}``."""
    means = {}
    reference = results.get(FALL_REFERENCE, {})
    for method, runs in results.items():
        for detector_seed in detector_seeds:
            own = {run: r for run, r in runs.items() if run[0] == detector_seed}
            if not own:
                continue
            cell = {f"{g}/{m}": mean_std([r.get(g, {}).get(m) for r in own.values()])[0]
                    for _, g, m in DETECTOR_COLUMNS}
            falls = [reference[run]["gzsd"]["top1_seen_correct"] - r["gzsd"]["top1_seen_correct"]
                     for run, r in own.items()
                     if run in reference and "top1_seen_correct" in r.get("gzsd", {})]
            if falls:
                cell["seen_fall"] = sum(falls) / len(falls)
            means.setdefault(method, {})[detector_seed] = cell
    return means


def format_detector_table(means) -> str:
    """One row per (method, detector seed): :data:`DETECTOR_COLUMNS` and the seen fall, percent."""
    header = "| method | detector seed | " + " | ".join(h for h, _, _ in DETECTOR_COLUMNS) + " | seen fall |"
    lines = [header, "|" + "---|" * (len(DETECTOR_COLUMNS) + 3)]
    for method, by_detector in means.items():
        for detector_seed, cell in by_detector.items():
            values = [cell[f"{g}/{m}"] for _, g, m in DETECTOR_COLUMNS] + [cell.get("seen_fall", float("nan"))]
            lines.append(f"| {method} | {detector_seed} | "
                         + " | ".join("n/a" if math.isnan(v) else f"{v:.1f}" for v in values) + " |")
    return (f"each detector's mean over seeds, percent; seen fall: {FALL_REFERENCE}'s seen right minus the "
            "row's, same seed\n" + "\n".join(lines))


def bar_chart(summary, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [("ZSD R@100 .5", "zsd/recall@100_iou0.5"), ("ZSD mAP .5", "zsd/mAP_iou0.5"),
            ("GZSD HM R@100 .5", "gzsd/hm_recall@100_iou0.5"), ("GZSD HM mAP .5", "gzsd/hm_mAP_iou0.5")]
    methods = list(summary)
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(9, 4))
    for i, method in enumerate(methods):
        stats = np.array([summary[method][k] for _, k in keys], dtype=float)
        ax.bar(np.arange(len(keys)) + (i - (len(methods) - 1) / 2) * width, stats[:, 0], width,
               yerr=np.nan_to_num(stats[:, 1]), capsize=2, label=method)
    ax.set_xticks(np.arange(len(keys)))
    ax.set_xticklabels([label for label, _ in keys])
    ax.set_ylabel("%")
    ax.set_title("zsd_dense: mean ± std over runs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure(path, fig, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    opts = [*(QUICK_OPTS if args.quick else ()), *args.opts]
    out = args.output_dir
    detectors = args.detector_seeds or [None]
    tic = time.perf_counter()
    results = {method: {} for method in args.methods}
    stages = {method: method_stages(method) for method in args.methods}
    for detector_seed in detectors:
        shared = os.path.join(detector_root(out, detector_seed), "shared")
        if not os.path.isfile(os.path.join(shared, "roi_bank", "COMPLETE")):
            print(f"[zsd_methods] stages 1-2 (detector, RoI bank) -> {shared}", flush=True)
            seed_opts = [] if detector_seed is None else ["SEED", str(detector_seed)]
            train_net(SHARED_CONFIG, shared, SHARED_STAGES, [*opts, *seed_opts])
        for seed in range(args.seeds):  # seed-major: a cut-short run still has every method
            for method in args.methods:
                run = (detector_seed, seed)
                folder = run_dir(out, method, run)
                metrics_file = os.path.join(folder, "metrics.json")
                if not os.path.isfile(metrics_file):
                    print(f"[zsd_methods] {method} seed {seed}: {','.join(stages[method])} -> {folder}",
                          flush=True)
                    link_shared(shared, folder)
                    train_net(
                        f"{method}.yaml", folder, stages[method],
                        [*opts, "SEED", str(seed), "SYNTHESIS.SEED", str(seed)])
                results[method][run] = run_result(method, metrics_file)
                print(json.dumps(json_line(method, seed, results[method][run], detector_seed)), flush=True)
    time_files = [os.path.join(detector_root(out, d), "shared", RUN_TIME_FILE) for d in detectors] + [
        os.path.join(run_dir(out, m, run), RUN_TIME_FILE) for m, runs in results.items() for run in runs]
    timings = {os.path.relpath(os.path.dirname(path), out): _read_json(path)
               for path in time_files if os.path.isfile(path)}
    summary = summarise(results)
    runs = (f"{args.seeds} seed(s)" if args.detector_seeds is None
            else f"{len(detectors)} detectors x {args.seeds} seed(s)")
    table = format_table(summary, runs)
    if args.detector_seeds is not None:
        by_detector = detector_means(results, detectors)
        table += "\n\n" + format_detector_table(by_detector)
    print(table, flush=True)
    wall = time.perf_counter() - tic
    print(f"[zsd_methods] this invocation: {wall / 60:.1f} min wall; the runs' sum: "
          f"{sum(t['wall_s'] for t in timings.values()) / 60:.1f} min wall, "
          f"{sum(t['cpu_s'] for t in timings.values()) / 60:.1f} min CPU", flush=True)
    write_text(os.path.join(out, "results_table.md"), table + "\n\n" + per_class_table(out, results) + "\n")
    record = {"seeds": args.seeds, "detector_seeds": args.detector_seeds, "quick": args.quick, "opts": opts,
              "wall_seconds": wall, "run_times": timings,
              "runs": [json_line(m, run[1], r, run[0]) for m, by_run in results.items()
                       for run, r in by_run.items()],
              "mean_std": {m: {k: list(v) for k, v in stats.items()} for m, stats in summary.items()}}
    if args.detector_seeds is not None:
        record["detector_means"] = {m: {str(d): cell for d, cell in cells.items()}
                                    for m, cells in by_detector.items()}
    write_json(os.path.join(out, "summary.json"), record)
    bar_chart(summary, os.path.join(out, "zsd_methods.png"))
    print(f"[zsd_methods] wrote {out}/summary.json, results_table.md, zsd_methods.png", flush=True)


if __name__ == "__main__":
    main()
