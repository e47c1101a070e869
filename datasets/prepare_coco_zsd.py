#!/usr/bin/env python
"""Write the COCO 2014 zero-shot detection split jsons (65/15 by default) that zsdet registers.

Reads ``$DETECTRON2_DATASETS/coco/annotations/instances_{train,val}2014.json`` and writes
``$DETECTRON2_DATASETS/coco/zsd/<tag>/{train,val,test_zsd,test_gzsd,unseen_real}.json`` plus a
``manifest.json`` (options, inputs, counts); the rules are in ``zsdet/data/datasets/coco_zsd.py``.
Idempotent: a second run with the same options and unchanged inputs only prints the counts.
It also writes ``coco/zsd/<tag>/class_embeddings.tsv`` (raw vectors of the 80 classes, plus
``__background__`` when the source has one), the file the registered datasets point to, from
``--embeddings FILE`` or, by default, SUZOD's fastText table shipped in ``datasets/coco_zsd/``.

Examples:
    python datasets/prepare_coco_zsd.py                                   # 65/15, SUZOD fastText
    python datasets/prepare_coco_zsd.py --tag 48_17 --split-file coco48_17
    python datasets/prepare_coco_zsd.py \
        --embeddings zsdet://coco_zsd/class_embeddings/glove_pl.tsv
"""
import argparse
import json
import os
import sys

from tqdm import tqdm

from zsdet.data.datasets.coco_zsd import (
    DEFAULT_EMBEDDINGS, NAMED_SPLITS, SPLITS, class_split_file, load_class_split, make_zsd_splits,
    split_dir, split_json,
)
from zsdet.data.embeddings import load_class_embeddings, write_embedding_table
from zsdet.utils.io import write_json

BACKGROUND = "__background__"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"),
                        help="dataset root (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--tag", default="65_15", help="output folder name under coco/zsd/")
    parser.add_argument("--split-file", default=None,
                        help=f"a shipped split ({' / '.join(NAMED_SPLITS)}), or seen/unseen "
                             "lists: TSV with name+split columns or JSON "
                             '{"seen": [...], "unseen": [...]} (default: COCO 65/15)')
    parser.add_argument("--train-json", default=None,
                        help="default: <root>/coco/annotations/instances_train2014.json")
    parser.add_argument("--test-json", default=None,
                        help="default: <root>/coco/annotations/instances_val2014.json")
    parser.add_argument("--val-fraction", type=float, default=0.02,
                        help="share of the seen training images held out as 'val'")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out draw")
    parser.add_argument("--min-size", type=int, default=32,
                        help="exclusive splits drop images whose shorter side is below this (px)")
    parser.add_argument("--keep-segmentation", action="store_true",
                        help="keep the annotations' segmentation (default: boxes only)")
    parser.add_argument("--embeddings", default=DEFAULT_EMBEDDINGS,
                        help="class-embedding file (table / word vectors / .npy; zsdet:// names a "
                             "shipped file) to convert into coco/zsd/<tag>/class_embeddings.tsv "
                             "(default: SUZOD's fastText table; '' writes none)")
    parser.add_argument("--embeddings-format", default="auto", help="format of --embeddings")
    parser.add_argument("--force", action="store_true", help="rewrite even if up to date")
    return parser.parse_args(argv)


def _read_json(path: str, required=("images", "annotations", "categories")) -> dict:
    """Load a (large) json object holding the keys ``required``, showing read progress.

    Raises ``ValueError`` naming ``path`` when it is not valid JSON or lacks a key."""
    chunks = []
    with open(path, "rb") as f, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True,
                                     desc=f"reading {os.path.basename(path)}") as bar:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            chunks.append(chunk)
            bar.update(len(chunk))
    try:
        obj = json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); is the file complete?") from None
    missing = [k for k in required if k not in obj] if isinstance(obj, dict) else list(required)
    if missing:
        raise ValueError(f"{path}: expected a JSON object with the keys {list(required)}; "
                         f"missing {missing}")
    return obj


def _file_stamp(path: str) -> dict:
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _print_counts(counts: dict) -> None:
    print(f"{'split':<12} {'images':>8} {'boxes':>8}")
    for split in SPLITS:
        print(f"{split:<12} {counts[split]['images']:>8} {counts[split]['annotations']:>8}")


def write_embeddings(source: str, fmt: str, class_names, out_path: str) -> None:
    """Convert ``source`` into a raw per-class table for ``class_names`` (background if present)."""
    try:
        names = [BACKGROUND, *class_names]
        vectors = load_class_embeddings(source, names, fmt, normalize="none")
    except KeyError:  # no background vector: the classes alone (a missing class raises below)
        names = list(class_names)
        vectors = load_class_embeddings(source, names, fmt, normalize="none")
    write_embedding_table(out_path, names, vectors)
    print(f"wrote {out_path}: {len(names)} rows x {vectors.shape[1]}")


def main(argv=None) -> dict:
    """Run the script; returns the per-split counts."""
    args = parse_args(argv)
    annotations = os.path.join(args.root, "coco", "annotations")
    train_json = args.train_json or os.path.join(annotations, "instances_train2014.json")
    test_json = args.test_json or os.path.join(annotations, "instances_val2014.json")
    out_dir = split_dir(args.root, args.tag)
    for path in (train_json, test_json):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist (COCO 2014 annotations are expected "
                                    "there; see datasets/README.md)")
    options = {"split_file": args.split_file and os.path.abspath(class_split_file(args.split_file)),
               "val_fraction": args.val_fraction, "seed": args.seed, "min_size": args.min_size,
               "keep_segmentation": args.keep_segmentation,
               "inputs": [_file_stamp(train_json), _file_stamp(test_json)]}
    manifest_path = os.path.join(out_dir, "manifest.json")
    manifest = None
    if os.path.isfile(manifest_path) and not args.force:
        try:
            manifest = _read_json(manifest_path, required=("options", "counts"))
        except ValueError as e:  # unreadable: the splits are rebuilt, which rewrites it
            print(f"{e}: rebuilding the splits")
        complete = all(os.path.isfile(split_json(args.root, args.tag, s)) for s in SPLITS)
        if manifest is None or manifest["options"] != options or not complete:
            manifest = None
    if manifest is not None:
        print(f"{out_dir} is up to date (use --force to rewrite)")
    else:
        train_coco, test_coco = _read_json(train_json), _read_json(test_json)
        class_names = [c["name"] for c in sorted(test_coco["categories"], key=lambda c: c["id"])]
        groups = load_class_split(args.split_file, class_names)
        splits = make_zsd_splits(train_coco, test_coco, groups, val_fraction=args.val_fraction,
                                 seed=args.seed, min_size=args.min_size,
                                 keep_segmentation=args.keep_segmentation)
        os.makedirs(out_dir, exist_ok=True)
        for split in tqdm(SPLITS, desc="writing splits"):
            write_json(split_json(args.root, args.tag, split), splits[split], indent=None)
        counts = {s: {"images": len(d["images"]), "annotations": len(d["annotations"])}
                  for s, d in splits.items()}
        manifest = {"options": options, "seen": list(groups.seen), "unseen": list(groups.unseen),
                    "class_names": class_names, "counts": counts}
        write_json(manifest_path, manifest, indent=None)  # last: marks a complete, consistent set
    _print_counts(manifest["counts"])
    if args.embeddings:
        write_embeddings(args.embeddings, args.embeddings_format, manifest["class_names"],
                         os.path.join(out_dir, "class_embeddings.tsv"))
    return manifest["counts"]


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, KeyError, ValueError) as e:
        sys.exit(f"error: {e.args[0] if isinstance(e, KeyError) else e}")  # KeyError str() quotes
