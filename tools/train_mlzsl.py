#!/usr/bin/env python
"""Multi-label (generalized) zero-shot classification benchmarks: NUS-WIDE, Open Images, MS COCO and
a generated synthetic benchmark (paper Sec. 4).

Trains the multi-label feature generator on seen-class features, synthesizes unseen-class features,
trains the final classifiers and reports ZSL / GZSL mAP and P / R / F1 at top-K as a table and as
``OUTPUT_DIR/results.json`` (pipeline: ``zsdet/engine/classification.py``).

    python tools/train_mlzsl.py --config-file configs/classification/synthetic.yaml
    python tools/train_mlzsl.py --config-file configs/classification/nus_wide_clf_vaegan.yaml \
        OUTPUT_DIR output/nus SYNTHESIS.DEVICE cuda
    python tools/train_mlzsl.py --config-file ... --eval-only   # re-evaluate the saved classifiers

An interrupted run resumes the generator from ``OUTPUT_DIR/generator/last_checkpoint.pth``
(``SYNTHESIS.RESUME``, on by default).
"""
import sys

import zsdet  # isort: skip  (first: applies zsdet.compat's shims before detectron2 is imported)
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from zsdet.engine.classification import run_classification
from zsdet.engine.output_lock import OutputDirBusy, exclusive_output_dir


def setup(args):
    """get_cfg -> add_zsdet_config -> YAML -> command-line opts -> freeze."""
    cfg = get_cfg()
    zsdet.add_zsdet_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def main(args):
    cfg = setup(args)
    with exclusive_output_dir(cfg.OUTPUT_DIR):  # a second run on the same folder is refused
        comm.synchronize()  # no rank writes to OUTPUT_DIR before the lock is held
        default_setup(cfg, args)
        setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="zsdet")
        return run_classification(cfg, eval_only=args.eval_only)


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except (FileNotFoundError, KeyError, ValueError, OutputDirBusy) as e:  # bad settings or input files: one line
        sys.exit(f"error: {e.args[0] if isinstance(e, KeyError) else e}")  # KeyError str() quotes


if __name__ == "__main__":
    invoke_main()
