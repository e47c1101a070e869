"""Benchmark: the fusion rows of the built-in synthetic classification benchmark, with feature quality.

Runs ``tools/train_mlzsl.py --config-file configs/classification/synthetic.yaml`` (CLF f-VAEGAN by
default) for each fusion row and seed and prints a table of ZSL / GZSL mAP and F1@3 with the
generator's feature-quality figures (mean ± std over seeds; one JSON line per run):

* ``alf``, ``flf``, ``clf``: the paper's fusions as the official code builds them;
* ``clf_fixed``: CLF without collapse (pre-activation fusion, identity init, no dropout);
* ``alf_cycle``, ``clf_cycle``, ``clf_fixed_cycle``: the same with the semantic cycle term
  (``SYNTHESIS.SEMANTIC_WEIGHT 1.0``, :mod:`zsdet.synthesis.semantic_cycle`).

    python benchmarks/mlzsl_fusions.py                    # 7 rows x 3 seeds -> output/mlzsl_fusions/
    python benchmarks/mlzsl_fusions.py --rows alf,clf --seeds 1

Each run is a ``train_mlzsl.py`` process in ``<out>/<row>/seed<k>`` (log in ``log.txt``); a run whose
``results.json`` exists is not run again.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from zsd_methods import mean_std, run_logged  # noqa: E402

CONFIG = os.path.join(ROOT, "configs", "classification", "synthetic.yaml")
CLF_FIXED = ["SYNTHESIS.FUSION", "clf", "SYNTHESIS.CLF_INPUT", "pre_activation", "SYNTHESIS.CLF_INIT", "identity",
             "SYNTHESIS.CLF_DROPOUT", "0.0"]
CYCLE = ["SYNTHESIS.SEMANTIC_WEIGHT", "1.0"]
ROWS = {"alf": ["SYNTHESIS.FUSION", "alf"], "flf": ["SYNTHESIS.FUSION", "flf"], "clf": ["SYNTHESIS.FUSION", "clf"],
        "clf_fixed": CLF_FIXED, "alf_cycle": ["SYNTHESIS.FUSION", "alf", *CYCLE],
        "clf_cycle": ["SYNTHESIS.FUSION", "clf", *CYCLE], "clf_fixed_cycle": [*CLF_FIXED, *CYCLE]}
# (header, path in results.json, digits)
TABLE = (("ZSL mAP", "metrics/zsl/mAP", 1), ("ZSL F1@3", "metrics/zsl/F1@3", 1), ("GZSL mAP", "metrics/gzsl/mAP", 1),
         ("GZSL F1@3", "metrics/gzsl/F1@3", 1), ("spread ratio", "feature_quality/spread_ratio", 2),
         ("real-vs-synth probe acc", "feature_quality/real_vs_synth_acc", 2),
         ("TSTR mAP", "feature_quality/tstr_ap", 1))


def value(results, path):
    for key in path.split("/"):
        results = results.get(key, {}) if isinstance(results, dict) else {}
    return results if isinstance(results, (int, float)) else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {list(ROWS)}")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--output-dir", default=os.path.join("output", "mlzsl_fusions"))
    args = p.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    if not rows or set(rows) - set(ROWS) or args.seeds < 1:
        p.error(f"--rows: a subset of {list(ROWS)}; --seeds >= 1")
    out = os.path.abspath(args.output_dir)
    runs = {row: [] for row in rows}
    for seed in range(args.seeds):
        for row in rows:
            run_dir = os.path.join(out, row, f"seed{seed}")
            results_file = os.path.join(run_dir, "results.json")
            if not os.path.isfile(results_file):
                run_logged([sys.executable, os.path.join(ROOT, "tools", "train_mlzsl.py"), "--config-file", CONFIG,
                            "OUTPUT_DIR", run_dir, "SYNTHESIS.SEED", str(seed), *ROWS[row]], run_dir)
            with open(results_file) as f:
                runs[row].append(json.load(f))
            print(json.dumps({"row": row, "seed": seed, **{h: value(runs[row][-1], path) for h, path, _ in TABLE}}),
                  flush=True)
    lines = ["| row | " + " | ".join(h for h, _, _ in TABLE) + " |", "|" + "---|" * (len(TABLE) + 1)]
    for row, results in runs.items():
        cells = []
        for _, path, digits in TABLE:
            mean, std = mean_std([value(r, path) for r in results])
            cells.append(f"{mean:.{digits}f}" + ("" if std != std else f" ± {std:.{digits}f}"))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    print(f"synthetic classification benchmark, mean ± std over {args.seeds} seed(s), percent but ratios\n"
          + "\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
