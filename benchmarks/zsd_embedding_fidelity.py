"""Benchmark: how much of the zero-shot detections the class embeddings allow.

The dense scenes' class embeddings are a noisy non-linear function of the objects' attributes
(``DenseScenesConfig.embedding_fidelity`` f, default 0.6; ``datasets/README.md``), as word vectors
are of appearance. A generator conditioned on them can place an unseen class no better than they
describe it. This benchmark keeps everything of a run but the embeddings: per fidelity it writes the
40 classes' embedding table of the same generator seed with that f (``embeddings_f<f>.tsv``), and
runs a method on the validation worlds of ``benchmarks/zsd_held_out_validation.py`` with
``ZSD.EMBEDDINGS_FILE`` pointing at it: the same images, detectors and RoI banks, only the
conditioning of the generator (and of the baseline) changes. The default fidelity runs without the
override (the datasets' own embeddings). ``--attribute-codes`` adds a run on the classes' one-hot
colour, texture and shape codes (``attribute_codes.tsv``, candidate ``<method>_codes``): class vectors
that describe the objects exactly, which no real dataset has (the attribute oracle). No test image is
read; nothing here chooses a setting.

Per fidelity it reports the held-out attribute R² of each world (ridge from embeddings to attribute
codes fitted on the world's training classes, scored on its held-out classes:
:func:`zsdet.data.datasets.dense_scenes.attribute_r2`) beside the detection figures of
``zsd_held_out_validation`` (``results_table.md``, ``summary.json``, one JSON line per run, in the
same output folder, whose world detectors it shares).

    python benchmarks/zsd_embedding_fidelity.py                          # FLF, f 0.6 / 0.8 / 1.0, worlds 0-3
    python benchmarks/zsd_embedding_fidelity.py --method alf.yaml --fidelities 0.6,1.0 --splits 0
    python benchmarks/zsd_embedding_fidelity.py --fidelities 1.0 --attribute-codes --splits 0,1,2,3
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, ROOT)  # run from a checkout without installing

import zsd_held_out_validation  # noqa: E402

from zsdet.data.datasets.dense_scenes import (HELD_OUT_SPLITS, DenseScenesConfig, attribute_codes,  # noqa: E402
                                              attribute_r2, dense_class_embeddings, held_out_world)
from zsdet.data.embeddings import write_embedding_table  # noqa: E402
from zsdet.utils.io import write_json  # noqa: E402

DEFAULT_FIDELITY = DenseScenesConfig().embedding_fidelity


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", default="flf.yaml", help="a leaf of configs/dense")
    p.add_argument("--fidelities", default="0.6,0.8,1.0",
                   help="comma-separated embedding fidelities in [0, 1] ('' = none, with --attribute-codes)")
    p.add_argument("--attribute-codes", action="store_true",
                   help="also run on the classes' one-hot attribute codes (candidate <method>_codes)")
    p.add_argument("--splits", default="0,1,2,3",
                   help=f"comma-separated validation worlds, of 0..{HELD_OUT_SPLITS - 1}")
    p.add_argument("--seeds", type=int, default=1, help="seeds per fidelity and world")
    p.add_argument("--quick", action="store_true", help="the tiny worlds and short schedules (ranks nothing)")
    p.add_argument("--output-dir", default=os.path.join("output", "zsd_held_out_validation"),
                   help="the held-out validation folder: its world detectors are shared")
    args = p.parse_args(argv)
    try:
        args.fidelities = [float(f) for f in args.fidelities.split(",") if f]
    except ValueError:
        args.fidelities = None
    if args.fidelities is None or not (args.fidelities or args.attribute_codes) or not all(
            0 <= f <= 1 for f in args.fidelities):
        p.error(f"--fidelities: comma-separated numbers in [0, 1]; got {args.fidelities!r}")
    args.splits = zsd_held_out_validation.world_splits(p, args.splits)
    if args.seeds < 1:
        p.error("--seeds >= 1")
    if not os.path.isfile(os.path.join(ROOT, "configs", "dense", args.method)):
        p.error(f"--method: a file of configs/dense; got {args.method!r}")
    args.output_dir = os.path.abspath(args.output_dir)
    return args


def candidate_name(method: str, fidelity: float) -> str:
    return f"{method[:-len('.yaml')]}_f{fidelity:g}"


def class_vectors(args):
    """``[(candidate, ZSD.EMBEDDINGS_FILE override or [], {world: held-out attribute R²})]``, one per
    fidelity and, with ``--attribute-codes``, the codes; writes each table into the output folder."""
    runs = []
    for fidelity in args.fidelities:
        config, overrides = DenseScenesConfig(embedding_fidelity=fidelity), []
        if fidelity != DEFAULT_FIDELITY:
            table = os.path.join(args.output_dir, f"embeddings_f{fidelity:g}.tsv")
            write_embedding_table(table, config.class_names, dense_class_embeddings(config))
            overrides = ["ZSD.EMBEDDINGS_FILE", table]
        r2 = {split: attribute_r2(DenseScenesConfig(**held_out_world(split, embedding_fidelity=fidelity)))
              for split in args.splits}
        runs.append((candidate_name(args.method, fidelity), overrides, r2))
    if args.attribute_codes:
        config, table = DenseScenesConfig(), os.path.join(args.output_dir, "attribute_codes.tsv")
        write_embedding_table(table, config.class_names, attribute_codes(config))
        worlds = {split: DenseScenesConfig(**held_out_world(split)) for split in args.splits}
        runs.append((f"{args.method[:-len('.yaml')]}_codes", ["ZSD.EMBEDDINGS_FILE", table],
                     {split: attribute_r2(world, attribute_codes(world)) for split, world in worlds.items()}))
    return runs


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    candidates, r2 = [], {}
    for name, overrides, world_r2 in class_vectors(args):
        candidates += ["--candidate", name, args.method, *overrides]
        r2[name] = world_r2
        print(f"[embedding fidelity] {name}: held-out attribute R² per world "
              + ", ".join(f"{k}: {v:.2f}" for k, v in r2[name].items()), flush=True)
    write_json(os.path.join(args.output_dir, "attribute_r2.json"), r2)
    zsd_held_out_validation.main([*candidates, "--splits", ",".join(map(str, args.splits)), "--seeds", str(args.seeds),
                                  "--output-dir", args.output_dir, *(["--quick"] if args.quick else [])])


if __name__ == "__main__":
    main()
