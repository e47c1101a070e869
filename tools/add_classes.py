#!/usr/bin/env python
"""Add classes to a trained zero-shot detector from their class embeddings only.

    python tools/add_classes.py --run-dir output/zsd_shapes --classes "name1,name2" \
        --embeddings FILE [--output model_added.pth] [--test-datasets ZSD_SET,GZSD_SET]

Reads the detector (``model_final.pth``), RoI bank and generator of a pipeline run
(``tools/train_net.py``), synthesizes features for the new classes from their embeddings (FILE:
any format zsdet reads: ``.tsv`` table, word vectors, ``.npy`` + class list) and retrains only the
box classifier over seen + the run's unseen + the new classes. Writes, beside ``--output``
(relative paths are inside the run directory): the weights, ``<stem>.yaml`` (the config to use
them with) and ``<stem>.classes.json`` (the new class list). Then, unchanged:

    python tools/train_net.py --config-file output/zsd_shapes/model_added.yaml --eval-only
    python tools/demo.py --config-file output/zsd_shapes/model_added.yaml --input "img/*.png" --output out

``--test-datasets``: registered (ZSD, GZSD) test sets that hold GT of the new classes (default:
the run's ``ZSD.TEST_ZSD`` / ``ZSD.TEST_GZSD``); the new config evaluates them re-indexed to the
new class list. Trailing ``KEY VALUE`` pairs override the run's config (e.g. ``ZSD.CLASSIFIER.EPOCHS 20``).
"""
import argparse
import logging
import sys

import zsdet  # noqa: F401  (first: the Pillow alias detectron2 v0.6 needs at import)
from detectron2.utils.logger import setup_logger
from zsdet.engine.add_classes import add_classes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="OUTPUT_DIR of a pipeline run")
    parser.add_argument("--classes", required=True, help="comma-separated names of the new classes")
    parser.add_argument("--embeddings", required=True, help="class-embedding file holding the new names")
    parser.add_argument("--embeddings-format", default="auto",
                        help="auto, table, word_vectors, npy or nus_wide_pickle")
    parser.add_argument("--output", default="model_added.pth",
                        help="weights file to write (relative: inside --run-dir)")
    parser.add_argument("--test-datasets", default=None,
                        help="ZSD_SET,GZSD_SET: registered test sets with GT of the new classes")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    names = [n.strip() for n in args.classes.split(",") if n.strip()]
    tests = None
    if args.test_datasets:
        tests = [n.strip() for n in args.test_datasets.split(",")]
        if len(tests) != 2:
            raise ValueError(f"--test-datasets takes two names (ZSD set, GZSD set), got {args.test_datasets!r}")
    result = add_classes(args.run_dir, names, args.embeddings, args.output,
                         embeddings_format=args.embeddings_format, test_datasets=tests, opts=args.opts)
    print(f"added {result['added_classes']} -> {result['weights']}\n"
          f"config: {result['config']}\n"
          f"evaluate: python tools/train_net.py --config-file {result['config']} --eval-only", flush=True)
    return result


if __name__ == "__main__":
    setup_logger(name="zsdet")
    logging.getLogger("zsdet").info("Arguments: %s", sys.argv[1:])
    try:
        main()
    except (FileNotFoundError, KeyError, ValueError) as e:
        sys.exit(f"error: {e.args[0] if isinstance(e, KeyError) else e}")  # KeyError str() quotes
