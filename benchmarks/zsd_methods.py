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

    python benchmarks/zsd_methods.py                 # 6 methods x 3 seeds (about 45 min on 2 cores)
    python benchmarks/zsd_methods.py --quick         # 1 seed, tiny set, short schedules (plumbing only)
    python benchmarks/zsd_methods.py --methods single_label,clf --seeds 5
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


def per_class_table(out: str, results) -> str:
    """ZSD AP .5 / Recall@100 .5 of each unseen class, mean over seeds, methods side by side
    (from ``inference/<name>_zsd/zsd_results.json`` of every run)."""
    rows = {}
    for method, runs in results.items():
        for seed in runs:
            path = os.path.join(out, method, f"seed{seed}", "inference", f"{result_name(method)}_zsd",
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
    return "ZSD AP .5 / Recall@100 .5 per unseen class, mean over seeds, percent\n" + "\n".join(lines)


def json_line(method: str, seed: int, result) -> dict:
    line = {"method": method, "seed": seed}
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
    """``{method: {"<group>/<metric>": (mean, sample std)}}`` over seeds."""
    return {method: {f"{g}/{m}": mean_std([r.get(g, {}).get(m) for r in runs.values()])
                     for _, g, m in TABLE_COLUMNS}
            for method, runs in results.items()}


def format_table(summary, seeds: int) -> str:
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
    return (f"mean ± sample std over {seeds} seed(s); percent, but spread ratio and probe accuracy (ratios)\n"
            + "\n".join(lines))


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
    ax.set_title("zsd_dense: mean ± std over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure(path, fig, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    opts = [*(QUICK_OPTS if args.quick else ()), *args.opts]
    out = args.output_dir
    shared = os.path.join(out, "shared")
    tic = time.perf_counter()
    if not os.path.isfile(os.path.join(shared, "roi_bank", "COMPLETE")):
        print(f"[zsd_methods] stages 1-2 (detector, RoI bank) -> {shared}", flush=True)
        train_net(SHARED_CONFIG, shared, SHARED_STAGES, opts)
    results = {method: {} for method in args.methods}
    stages = {method: method_stages(method) for method in args.methods}
    for seed in range(args.seeds):  # seed-major: a cut-short run still has every method
        for method in args.methods:
            run_dir = os.path.join(out, method, f"seed{seed}")
            metrics_file = os.path.join(run_dir, "metrics.json")
            if not os.path.isfile(metrics_file):
                print(f"[zsd_methods] {method} seed {seed}: {','.join(stages[method])} -> {run_dir}",
                      flush=True)
                link_shared(shared, run_dir)
                train_net(
                    f"{method}.yaml", run_dir, stages[method],
                    [*opts, "SEED", str(seed), "SYNTHESIS.SEED", str(seed)])
            results[method][seed] = run_result(method, metrics_file)
            print(json.dumps(json_line(method, seed, results[method][seed])), flush=True)
    timings = {os.path.relpath(os.path.dirname(path), out): _read_json(path)
               for path in [os.path.join(shared, RUN_TIME_FILE)] + [
                   os.path.join(out, m, f"seed{s}", RUN_TIME_FILE) for m in args.methods
                   for s in range(args.seeds)] if os.path.isfile(path)}
    summary = summarise(results)
    table = format_table(summary, args.seeds)
    print(table, flush=True)
    wall = time.perf_counter() - tic
    print(f"[zsd_methods] this invocation: {wall / 60:.1f} min wall; the runs' sum: "
          f"{sum(t['wall_s'] for t in timings.values()) / 60:.1f} min wall, "
          f"{sum(t['cpu_s'] for t in timings.values()) / 60:.1f} min CPU", flush=True)
    write_text(os.path.join(out, "results_table.md"), table + "\n\n" + per_class_table(out, results) + "\n")
    write_json(os.path.join(out, "summary.json"),
               {"seeds": args.seeds, "quick": args.quick, "opts": opts, "wall_seconds": wall,
                "run_times": timings,
                "runs": [json_line(m, s, r) for m, runs in results.items() for s, r in runs.items()],
                "mean_std": {m: {k: list(v) for k, v in stats.items()} for m, stats in summary.items()}})
    bar_chart(summary, os.path.join(out, "zsd_methods.png"))
    print(f"[zsd_methods] wrote {out}/summary.json, results_table.md, zsd_methods.png", flush=True)


if __name__ == "__main__":
    main()
