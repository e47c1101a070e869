"""Benchmark: choose the synthesis method's settings on validation, never on test images.

Runs the pseudo-unseen protocol (:mod:`zsdet.engine.zsd_validation`) on the dense scenes' RoI bank
of the training images, for candidate settings x pseudo-unseen splits x seeds: each split holds
``--num-pseudo`` of the 32 seen classes out of generator training and scores the retrained
classifier on the RoIs of held-out training images. The test images are never read. The detector
has seen the pseudo-unseen classes, so this can misrank settings for never-seen classes; for those
choices use ``benchmarks/zsd_held_out_validation.py`` (held out of the detector too).

Candidates are leaves of ``configs/dense`` with optional overrides::

    python benchmarks/zsd_validation.py                                  # the method leaves, 3 splits
    python benchmarks/zsd_validation.py --candidate alf_sigmoid alf.yaml SYNTHESIS.OUTPUT_ACTIVATION sigmoid \\
        --candidate clf clf.yaml --splits 3 --score-epochs 5,8,11,14,17

The detector and RoI bank are those of ``benchmarks/zsd_methods.py`` (``<shared>``, built with its
stages 1-2 when missing). Each (candidate, split, seed) writes ``results.jsonl`` (one line per
scored generator: every ``--score-epochs`` epoch and the selected one) in its folder and is not
run again; the summary (mean ± std over splits and seeds, per candidate and scored epoch) goes to
``results_table.md`` and ``summary.json`` in ``--output-dir``.
"""
import argparse
import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import torch  # noqa: E402

from zsd_methods import CONFIG_DIR, SHARED_CONFIG, SHARED_STAGES, mean_std, train_net  # noqa: E402
from zsdet.config import get_zsdet_cfg  # noqa: E402
from zsdet.engine.roi_stages import load_bank  # noqa: E402
from zsdet.engine.zsd_validation import pseudo_unseen_split, run_protocol  # noqa: E402
from zsdet.data.zsd_split import ZeroShotSplit  # noqa: E402
from zsdet.utils.io import write_json, write_text  # noqa: E402

DEFAULT_CANDIDATES = (("single_label", "single_label.yaml"), ("alf", "alf.yaml"), ("flf", "flf.yaml"),
                      ("clf_official", "clf_official.yaml"), ("clf", "clf.yaml"))
# (header, result key, digits); keys with a "/" are inside a nested report
TABLE = (("pseudo-ZSD mAP", "pzsd_map", 1), ("GZSD HM mAP", "gzsd_hm_map", 1),
         ("top-1 unseen as seen", "top1_unseen_as_seen", 1), ("top-1 seen right", "top1_seen_correct", 1),
         ("P(bg) on unseen", "bg_prob_on_unseen", 2), ("seen-logit bias", "seen_logit_bias", 2),
         ("unseen spread ratio", "pseudo_unseen_quality/spread_ratio", 2),
         ("unseen probe acc", "pseudo_unseen_quality/real_vs_synth_acc", 2),
         ("seen spread ratio", "seen_quality/spread_ratio", 2),
         ("seen probe acc", "seen_quality/real_vs_synth_acc", 2),
         ("seen TSTR mAP", "seen_quality/tstr_ap", 1))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--candidate", nargs="+", action="append", metavar=("NAME LEAF", "KEY VALUE"),
                   help="a candidate: its name, a leaf of configs/dense, then config overrides; repeatable "
                        f"(default: {', '.join(n for n, _ in DEFAULT_CANDIDATES)})")
    p.add_argument("--classifier-variant", nargs="+", action="append", metavar=("NAME", "KEY VALUE"),
                   help="also score each trained generator with these classifier-stage overrides (a row "
                        "<candidate>/<NAME>); repeatable. The candidate's own classifier is always scored")
    p.add_argument("--splits", type=int, default=3, help="pseudo-unseen splits (split seeds 0..N-1)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per split (SEED, SYNTHESIS.SEED)")
    p.add_argument("--num-pseudo", type=int, default=8, help="seen classes held out per split")
    p.add_argument("--validation-fraction", type=float, default=0.2, help="share of the images scored")
    p.add_argument("--score-epochs", default="", help="also score the generator after these epochs (1-based)")
    p.add_argument("--shared", default=os.path.join("output", "zsd_methods", "shared"),
                   help="detector + RoI bank folder of benchmarks/zsd_methods.py")
    p.add_argument("--output-dir", default=os.path.join("output", "zsd_validation"))
    args = p.parse_args(argv)
    if args.candidate is None:
        args.candidate = [[name, leaf] for name, leaf in DEFAULT_CANDIDATES]
    for c in args.candidate:
        if len(c) < 2 or len(c) % 2:
            p.error(f"--candidate {' '.join(c)}: give NAME LEAF followed by KEY VALUE pairs")
        if not os.path.isfile(os.path.join(CONFIG_DIR, c[1])):
            p.error(f"--candidate {c[0]}: no config {os.path.join(CONFIG_DIR, c[1])}")
    if args.splits < 1 or args.seeds < 1:
        p.error("--splits and --seeds must be >= 1")
    args.score_epochs = sorted(int(e) - 1 for e in args.score_epochs.split(",") if e)
    args.classifier_variant = {"": [], **{v[0]: v[1:] for v in args.classifier_variant or []}}
    if any(len(opts) % 2 for opts in args.classifier_variant.values()):
        p.error("--classifier-variant: give NAME followed by KEY VALUE pairs")
    args.shared, args.output_dir = os.path.abspath(args.shared), os.path.abspath(args.output_dir)
    return args


def _value(result, key):
    for part in key.split("/"):
        result = result.get(part) if isinstance(result, dict) else None
    return result


def summarise(rows):
    """``{candidate: {epoch: {key: (mean, std)}}}`` over splits and seeds."""
    groups = {}
    for row in rows:
        name = row["candidate"] + (f"/{row['variant']}" if row.get("variant") else "")
        groups.setdefault(name, {}).setdefault(str(row["epoch"]), []).append(row)
    return {c: {e: {key: mean_std([_value(r, key) for r in runs]) for _, key, _ in TABLE}
                for e, runs in epochs.items()} for c, epochs in groups.items()}


def format_table(summary, runs_per_candidate: int) -> str:
    def cell(mean, std, digits):
        if mean is None or math.isnan(mean):
            return "n/a"
        return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"

    lines = ["| candidate | epoch | " + " | ".join(h for h, _, _ in TABLE) + " |", "|" + "---|" * (len(TABLE) + 2)]
    for candidate, epochs in summary.items():
        for epoch, stats in epochs.items():
            shown = epoch if epoch == "selected" else str(int(epoch) + 1)
            lines.append(f"| {candidate} | {shown} | " + " | ".join(cell(*stats[k], d) for _, k, d in TABLE) + " |")
    return (f"pseudo-unseen protocol, mean ± std over {runs_per_candidate} (split, seed) runs; RoI level on held-out "
            "training images; percent but P(bg), bias, spread and probe accuracy\n" + "\n".join(lines))


def main(argv=None):
    args = parse_args(argv)
    tic = time.perf_counter()
    bank_dir = os.path.join(args.shared, "roi_bank")
    if not os.path.isfile(os.path.join(bank_dir, "COMPLETE")):
        print(f"[zsd_validation] stages 1-2 (detector, RoI bank) -> {args.shared}", flush=True)
        train_net(SHARED_CONFIG, args.shared, SHARED_STAGES, [])
    rows = []
    for seed in range(args.seeds):
        for split_seed in range(args.splits):
            for name, leaf, *opts in args.candidate:
                run_dir = os.path.join(args.output_dir, name, f"split{split_seed}_seed{seed}")
                path = os.path.join(run_dir, "results.jsonl")
                if not os.path.isfile(path):
                    cfg = get_zsdet_cfg(os.path.join(CONFIG_DIR, leaf),
                                        [*opts, "SEED", str(seed), "SYNTHESIS.SEED", str(seed)])
                    cfg.freeze()
                    torch.manual_seed(seed)
                    split = ZeroShotSplit.from_dataset(cfg.DATASETS.TRAIN[0])
                    bank = load_bank(bank_dir, split, cfg.DATASETS.TRAIN[0])
                    pseudo = pseudo_unseen_split(bank, split, args.num_pseudo, split_seed, args.validation_fraction,
                                                 cfg.ZSD.FEATURES.VAL_FRACTION)
                    print(f"[zsd_validation] {name} split {split_seed} seed {seed}: pseudo-unseen "
                          f"{[split.class_names[i] for i in pseudo.pseudo_unseen_ids]}", flush=True)
                    results = run_protocol(cfg, bank, split, pseudo, run_dir,
                                           os.path.join(args.shared, "model_final.pth"), args.score_epochs,
                                           args.classifier_variant)
                    write_text(path, "".join(json.dumps({"candidate": name, "split": split_seed, "seed": seed,
                                                         "opts": opts, **r}) + "\n" for r in results))
                with open(path) as f:
                    for line in f:
                        rows.append(json.loads(line))
                        if rows[-1]["epoch"] == "selected" and not rows[-1].get("variant"):
                            print(json.dumps(rows[-1]), flush=True)
    summary = summarise(rows)
    table = format_table(summary, args.splits * args.seeds)
    print(table, flush=True)
    write_text(os.path.join(args.output_dir, "results_table.md"), table + "\n")
    write_json(os.path.join(args.output_dir, "summary.json"),
               {"splits": args.splits, "seeds": args.seeds, "num_pseudo": args.num_pseudo,
                "candidates": args.candidate, "classifier_variants": args.classifier_variant,
                "wall_seconds": time.perf_counter() - tic,
                "mean_std": {c: {e: {k: list(v) for k, v in s.items()} for e, s in eps.items()}
                             for c, eps in summary.items()}})
    print(f"[zsd_validation] {time.perf_counter() - tic:.0f} s; wrote {args.output_dir}/results_table.md, "
          "summary.json", flush=True)


if __name__ == "__main__":
    main()
