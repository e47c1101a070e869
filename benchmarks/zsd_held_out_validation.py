"""Benchmark: candidate settings scored on validation worlds whose held-out classes the detector never saw.

Each split k is the registered set ``zsd_dense_heldout<k>``
(:func:`zsdet.data.datasets.dense_scenes.held_out_world`): the dense scenes' 40 classes and
embeddings, 8 seen classes held out as unseen, the real unseen classes in no image. Its training
images hold the other 24 seen classes only, so its detector and box head never see the held-out
classes, as the real ones never see the unseen classes; its ``test_*`` images are validation
images of the held-out classes. No test image of ``zsd_dense`` and no real unseen object is read.

``--held-out-classes 4`` uses the worlds ``zsd_dense_heldout<k>_h4`` instead: 4 classes held out, 28
left for training (the test scenes train on 32).

``--family shapes`` uses the shapes' worlds ``zsd_shapes_heldout<k>``, k = 0..3
(:func:`zsdet.data.datasets.shapes.held_out_world`): 3 of the 12 seen shapes held out, each of their
colours and shapes left in one of the 9 training classes; candidates are files of ``configs/shapes``
(default: the shapes config as shipped and with the linear box head, the twenty-seventh round).

Per split, stages 1-2 (detector, RoI bank) run once into ``<out>/split<k>/shared`` (with
``--detector-opts``, e.g. ``MODEL.ZSD.SEMANTIC_AUX_WEIGHT 1.0``; use another ``--output-dir`` per
detector setting); every
candidate x seed then runs its own stages in ``<out>/split<k>/<candidate>/seed<s>`` with links to
them (as ``benchmarks/zsd_methods.py``). A candidate is a leaf of ``configs/dense`` with config
overrides: ``--candidate NAME CONFIG [KEY VALUE ...]``; the defaults are the candidates the
settings of ``configs/dense`` were chosen from (each method row, then its alternatives). A run whose
``metrics.json`` exists is not run again. ``--first-seed K`` runs seeds K .. K + seeds - 1 only.

Output: one JSON line per (candidate, split, seed), a table of mean ± std over every split and seed
(``results_table.md``, with the mean of each split) and ``summary.json`` in ``<out>``. The selection
score is the rule the defaults were chosen by: the mean of ZSD mAP .5 and GZSD HM mAP .5. With
``--seen-reference NAME`` (a candidate, e.g. ``clf_official``) the table adds each candidate's GZSD
seen fall against it (the reference's top-1 seen right minus the candidate's, paired by split and
seed, points) and the fall's one-sided 90 % upper confidence bound over the splits (mean + t(0.90,
splits - 1) x standard error; the twenty-third round's rule: at most 5).

    python benchmarks/zsd_held_out_validation.py                   # 9 candidates x splits 0-2 x seeds 0-1
    python benchmarks/zsd_held_out_validation.py --candidate clf clf.yaml \\
        --candidate clf_30ep clf.yaml SYNTHESIS.EPOCHS 30
    python benchmarks/zsd_held_out_validation.py --quick          # tiny worlds, short schedules: plumbing only
    python benchmarks/zsd_held_out_validation.py --splits 0,1,2,3,4,5,6,7,8 --seeds 1 --seen-reference clf_official \\
        --candidate clf_official clf_official.yaml --candidate flf flf.yaml
    python benchmarks/zsd_held_out_validation.py --family shapes --splits 0,1,2,3 --seeds 2
"""
import argparse
import dataclasses
import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from zsd_methods import (CONFIG_DIR, QUICK_SCHEDULE, SHARED_CONFIG, SHARED_STAGES, dataset_opts,  # noqa: E402
                         json_line, link_shared, mean_std, method_stages, run_result, train_net)

from zsdet.data.datasets import shapes  # noqa: E402
from zsdet.data.datasets.dense_scenes import HELD_OUT_SPLITS, WORLD_SIZES  # noqa: E402
from zsdet.utils.io import write_json, write_text  # noqa: E402

SIGMOID, CLAMP = ("SYNTHESIS.OUTPUT_ACTIVATION", "sigmoid"), ("SYNTHESIS.OUTPUT_ACTIVATION", "clamp")
EPOCHS_9_BG_HALF = ("SYNTHESIS.EPOCHS", "9", "ZSD.CLASSIFIER.BG_PER_FG", "0.5")
# The candidates the defaults of configs/dense were chosen from (docs/feature_quality.md): each
# method row at its chosen settings, then the alternatives it was chosen over.
DEFAULT_CANDIDATES = (
    ("clf", "clf.yaml"),
    ("clf_sigmoid_bg1", "clf.yaml", *SIGMOID, "ZSD.CLASSIFIER.BG_PER_FG", "1.0"),
    ("alf", "alf.yaml"),
    ("alf_no_calibration", "alf.yaml", "ZSD.CLASSIFIER.SEEN_ACCURACY_BUDGET", "0.0"),
    ("alf_9ep_bg0.5", "alf.yaml", *EPOCHS_9_BG_HALF),
    ("alf_clamp_9ep_bg0.5", "alf.yaml", *CLAMP, *EPOCHS_9_BG_HALF),
    ("flf", "flf.yaml"),
    ("flf_9ep_bg0.5", "flf.yaml", *EPOCHS_9_BG_HALF),
    ("flf_clamp_9ep_bg0.5", "flf.yaml", *CLAMP, *EPOCHS_9_BG_HALF),
)
SHAPES_CANDIDATES = (  # the twenty-seventh round: round 26's box head (the shapes config as shipped) and the linear one
    ("shapes_default", "zsd_shapes_R18_FPN.yaml"),
    ("shapes_linear", "zsd_shapes_R18_FPN.yaml", "ZSD.CLASSIFIER.HIDDEN_UNITS", "0"),
)


@dataclasses.dataclass(frozen=True)
class WorldFamily:
    """Validation worlds of one built-in set: ``<prefix>_heldout<k>[_h<n>]`` (``_tiny_`` for --quick),
    k < ``splits``; ``sizes`` are the held-out class counts registered (the first without suffix);
    candidates and the shared stages' config are files of ``config_dir``."""

    prefix: str
    splits: int
    sizes: tuple
    config_dir: str
    shared_config: str
    default_candidates: tuple


FAMILIES = {
    "dense": WorldFamily("zsd_dense", HELD_OUT_SPLITS, WORLD_SIZES, CONFIG_DIR, SHARED_CONFIG, DEFAULT_CANDIDATES),
    "shapes": WorldFamily("zsd_shapes", shapes.HELD_OUT_SPLITS, (3,), os.path.join(ROOT, "configs", "shapes"),
                          "zsd_shapes_R18_FPN.yaml", SHAPES_CANDIDATES),
}
# (header, JSON-line key of zsd_methods.HEADLINE or selection_score, digits)
COLUMNS = (("selection score", "selection_score", 1), ("ZSD R@100 .5", "zsd_recall50", 1),
           ("ZSD mAP .5", "zsd_map50", 1), ("GZSD HM mAP .5", "gzsd_hm_map50", 1),
           ("top-1 unseen as seen", "top1_unseen_as_seen", 1), ("top-1 seen right", "top1_seen_correct", 1),
           ("spread ratio", "spread_ratio", 2), ("real-vs-synth probe acc", "real_vs_synth_acc", 2),
           ("probe acc, aligned", "real_vs_synth_acc_aligned", 2), ("probe acc, anchored", "real_vs_anchored_acc", 3))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default="dense", choices=sorted(FAMILIES),
                   help="the worlds: zsd_dense_heldout<k> (configs/dense) or zsd_shapes_heldout<k> (configs/shapes)")
    p.add_argument("--candidate", nargs="+", action="append", metavar="NAME CONFIG [KEY VALUE]",
                   help="a candidate: its name, a file of the family's configs folder and overrides (repeatable)")
    p.add_argument("--splits", default="0,1,2",
                   help="comma-separated validation worlds, of 0..8 (dense), 0..3 (shapes)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per candidate and split")
    p.add_argument("--first-seed", type=int, default=0,
                   help="the first of the seeds: runs use seeds first .. first + seeds - 1 (fresh seeds for a "
                        "question chosen after seeing the lower ones)")
    p.add_argument("--held-out-classes", type=int, default=None,
                   help="seen classes held out per world; dense: 8 (zsd_dense_heldout<k>, the default) or 4 "
                        "(zsd_dense_heldout<k>_h4, 28 training classes); shapes: 3")
    p.add_argument("--detector-opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="config overrides of the world detectors (stages 1-2), also given to every candidate run")
    p.add_argument("--quick", action="store_true", help="the tiny worlds and short schedules (ranks nothing)")
    p.add_argument("--output-dir", default=os.path.join("output", "zsd_held_out_validation"))
    p.add_argument("--seen-reference", default=None, metavar="NAME",
                   help="a candidate whose GZSD top-1 seen right the others' fall is counted from (e.g. clf_official)")
    args = p.parse_args(argv)
    family = args.world_family = FAMILIES[args.family]
    if args.held_out_classes is None:
        args.held_out_classes = family.sizes[0]
    if args.held_out_classes not in family.sizes:
        p.error(f"--held-out-classes: {args.family} worlds hold out {' or '.join(map(str, family.sizes))} classes; "
                f"got {args.held_out_classes}")
    args.candidates = [tuple(c) for c in args.candidate] if args.candidate else list(family.default_candidates)
    if args.seen_reference is not None and args.seen_reference not in {c[0] for c in args.candidates}:
        p.error(f"--seen-reference {args.seen_reference!r} is not a candidate of this run "
                f"({', '.join(c[0] for c in args.candidates)})")
    bad = [c for c in args.candidates if len(c) < 2 or len(c) % 2 or not
           os.path.isfile(os.path.join(family.config_dir, c[1]))]
    if bad or len({c[0] for c in args.candidates}) != len(args.candidates):
        p.error(f"--candidate NAME CONFIG [KEY VALUE ...] with distinct names and CONFIG a file of "
                f"{os.path.relpath(family.config_dir, ROOT)}; got {bad or args.candidates}")
    if len(args.detector_opts) % 2:
        p.error(f"--detector-opts: KEY VALUE pairs; got {args.detector_opts}")
    args.splits = world_splits(p, args.splits, family.splits)
    if args.seeds < 1:
        p.error("--seeds >= 1")
    if args.first_seed < 0:
        p.error(f"--first-seed >= 0; got {args.first_seed}")
    args.output_dir = os.path.abspath(args.output_dir)
    return args


def add_world_arguments(parser: argparse.ArgumentParser, families: bool = False) -> None:
    """``--output-dir``, ``--splits`` and ``--images`` of the analyses that read this benchmark's
    worlds, and ``--family`` for those that read both families' (checked by :func:`check_world_arguments`)."""
    if families:
        parser.add_argument("--family", default="dense", choices=sorted(FAMILIES),
                            help="the worlds: zsd_dense_heldout<k> or zsd_shapes_heldout<k>")
    parser.add_argument("--output-dir", default=os.path.join("output", "zsd_held_out_validation"),
                        help="a zsd_held_out_validation output folder: split<k>/shared holds world k's detector and bank")
    parser.add_argument("--splits", default="0,1,2,3",
                        help=f"comma-separated validation worlds, of 0..{HELD_OUT_SPLITS - 1}")
    parser.add_argument("--images", type=int, default=150, help="validation images per world")


def check_world_arguments(parser: argparse.ArgumentParser, args) -> None:
    """Parse ``args.splits`` into world ids of ``args.world_family`` (``--family``, dense without it),
    make ``args.output_dir`` absolute, refuse ``--images`` < 2."""
    args.world_family = FAMILIES[getattr(args, "family", "dense")]
    args.splits = world_splits(parser, args.splits, args.world_family.splits)
    if args.images < 2:
        parser.error("--images >= 2")
    args.output_dir = os.path.abspath(args.output_dir)


def analyse_worlds(args, world_result, format_table):
    """(results, table) of an analysis of the worlds ``args.splits``: ``world_result(world, args)``
    per world, each printed as a JSON line as it ends, then ``format_table(results)``, printed."""
    results = []
    for world in args.splits:
        results.append(world_result(world, args))
        print(json.dumps(results[-1]), flush=True)
    table = format_table(results)
    print(table, flush=True)
    return results, table


def world_splits(parser: argparse.ArgumentParser, text: str, count: int = HELD_OUT_SPLITS):
    """The validation worlds of a comma-separated ``--splits`` value (each < ``count``), or a parser error."""
    try:
        splits = [int(k) for k in text.split(",")]
    except ValueError:
        splits = []
    if not splits or not all(0 <= k < count for k in splits):
        parser.error(f"--splits: a subset of 0..{count - 1}; got {text!r}")
    return splits


def selection_score(line) -> float:
    """The rule the defaults were chosen by: the mean of ZSD mAP .5 and GZSD HM mAP .5 (percent)."""
    return (line["zsd_map50"] + line["gzsd_hm_map50"]) / 2


def student_t_quantile(probability: float, dof: int) -> float:
    """The ``probability`` quantile (in (0.5, 1)) of Student's t with ``dof`` >= 1 degrees of freedom:
    bisection on the closed-form CDF of integer degrees of freedom (Abramowitz & Stegun 26.7.3-4)."""
    def two_sided(t):  # P(|T| < t)
        theta = math.atan(t / math.sqrt(dof))
        c2, term, total = math.cos(theta) ** 2, 1.0, 1.0
        for k in range(2, dof - 1, 2):  # each step multiplies by cos^2 and k/(k+1) (odd dof) or (k-1)/k (even)
            term *= (k / (k + 1) if dof % 2 else (k - 1) / k) * c2
            total += term
        if dof % 2:
            return 2 / math.pi * (theta + (math.sin(theta) * math.cos(theta) * total if dof > 1 else 0.0))
        return math.sin(theta) * total

    low, high = 0.0, 1e3
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if (1 + two_sided(mid)) / 2 < probability else (low, mid)
    return (low + high) / 2


def seen_fall(lines, name: str, reference: str, splits):
    """(mean, one-sided 90 % upper bound) of candidate ``name``'s GZSD seen fall against ``reference``
    (points): per split, the mean over seeds of the reference's top-1 seen right minus the candidate's
    (paired by seed); then over splits, mean + t(0.90, splits - 1) x sd / sqrt(splits)."""
    seen = {(line["candidate"], line["split"], line["seed"]): line["top1_seen_correct"] for line in lines}
    per_split = []
    for split in splits:
        falls = [seen[(reference, split, seed)] - value for (cand, k, seed), value in seen.items()
                 if cand == name and k == split and (reference, split, seed) in seen]
        per_split.append(mean_std(falls)[0])
    mean, std = mean_std(per_split)
    if len(per_split) < 2 or mean != mean:
        return mean, float("nan")
    return mean, mean + student_t_quantile(0.90, len(per_split) - 1) * std / math.sqrt(len(per_split))


def world_opts(split: int, quick: bool, held_out_classes: int = 8, family: WorldFamily = FAMILIES["dense"]):
    """Overrides that point every stage at validation world ``split`` of ``family`` with
    ``held_out_classes`` held-out classes (tiny and short with ``quick``)."""
    suffix = "" if held_out_classes == family.sizes[0] else f"_h{held_out_classes}"
    if quick:
        return dataset_opts(f"{family.prefix}_tiny_heldout{split}{suffix}") + QUICK_SCHEDULE
    return dataset_opts(f"{family.prefix}_heldout{split}{suffix}")


def format_table(lines, candidates, splits, seen_reference=None, seen_falls=None) -> str:
    """The results table; with ``seen_reference``, two more columns from ``seen_falls`` (candidate ->
    (mean, bound) of :func:`seen_fall`)."""
    fall_headers = [f"seen fall vs {seen_reference}", "fall bound (90 %)"] if seen_reference else []
    header = "| candidate | " + " | ".join([h for h, _, _ in COLUMNS] + fall_headers) + " |"
    rows = [header, "|" + "---|" * (len(COLUMNS) + len(fall_headers) + 1)]
    for name in candidates:
        runs = [line for line in lines if line["candidate"] == name]
        cells = []
        for _, key, digits in COLUMNS:
            mean, std = mean_std([line[key] for line in runs])
            per_split = [mean_std([line[key] for line in runs if line["split"] == k])[0] for k in splits]
            cells.append("n/a" if mean != mean else f"{mean:.{digits}f} ± {std:.{digits}f} ("
                         + ", ".join(f"{v:.{digits}f}" for v in per_split) + ")")
        if seen_reference:
            cells.extend("n/a" if v != v else f"{v:.2f}" for v in seen_falls[name])
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return (f"mean ± std over splits {splits} x seeds, then (the mean of each split); percent, but spread "
            "and probe accuracy\n" + "\n".join(rows))


def main(argv=None):
    args = parse_args(argv)
    tic, lines, family = time.perf_counter(), [], args.world_family
    for split in args.splits:
        opts = [*world_opts(split, args.quick, args.held_out_classes, family), *args.detector_opts]
        shared = os.path.join(args.output_dir, f"split{split}", "shared")
        if not os.path.isfile(os.path.join(shared, "roi_bank", "COMPLETE")):
            print(f"[held-out validation] split {split}: detector and RoI bank -> {shared}", flush=True)
            train_net(family.shared_config, shared, SHARED_STAGES, opts, config_dir=family.config_dir)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for name, config, *overrides in args.candidates:
                run_dir = os.path.join(args.output_dir, f"split{split}", name, f"seed{seed}")
                metrics_file = os.path.join(run_dir, "metrics.json")
                method = config[:-len(".yaml")]
                if not os.path.isfile(metrics_file):
                    print(f"[held-out validation] split {split}, {name}, seed {seed} -> {run_dir}", flush=True)
                    link_shared(shared, run_dir)
                    train_net(config, run_dir, method_stages(method, family.config_dir),
                              [*opts, "SEED", str(seed), "SYNTHESIS.SEED", str(seed), *overrides],
                              config_dir=family.config_dir)
                line = {"candidate": name, "split": split, **json_line(method, seed, run_result(method, metrics_file))}
                line["selection_score"] = selection_score(line)
                lines.append(line)
                print(json.dumps(line), flush=True)
    names = [c[0] for c in args.candidates]
    falls = {name: seen_fall(lines, name, args.seen_reference, args.splits)
             for name in names} if args.seen_reference else {}
    table = format_table(lines, names, args.splits, args.seen_reference, falls)
    print(table, flush=True)
    write_text(os.path.join(args.output_dir, "results_table.md"), table + "\n")
    write_json(os.path.join(args.output_dir, "summary.json"),
               {"family": args.family, "candidates": [list(c) for c in args.candidates], "splits": args.splits,
                "seeds": args.seeds, "first_seed": args.first_seed, "quick": args.quick,
                "wall_seconds": time.perf_counter() - tic, "runs": lines,
                "seen_reference": args.seen_reference,
                "seen_fall": {name: dict(zip(("mean", "bound90"), fall)) for name, fall in falls.items()}})
    print(f"[held-out validation] wrote {args.output_dir}/results_table.md, summary.json", flush=True)


if __name__ == "__main__":
    main()
