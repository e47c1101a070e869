#!/usr/bin/env python
"""Zero-shot detection with multi-label feature synthesis: the whole pipeline, stage by stage.

    python tools/train_net.py --config-file configs/shapes/zsd_shapes_R18_FPN.yaml
    python tools/train_net.py --config-file ... --stages features,generator   # some stages only
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS out/model_zsd.pth
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS out/model_baseline.pth \
        MODEL.ZSD.CLASSIFIER semantic

Multi-GPU / multi-machine: ``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url``
(detectron2's ``launch``).
"""
import argparse
import logging
import sys

import zsdet  # first: applies the Pillow alias detectron2 v0.6 needs at import (zsdet.compat)
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from zsdet.compat import check_config_supported
from zsdet.config import get_zsdet_cfg
from zsdet.engine import STAGES, ZSDPipeline
from zsdet.engine.output_lock import OutputDirBusy, exclusive_output_dir


def build_cfg(args):
    cfg = get_zsdet_cfg(args.config_file, args.opts)
    if args.stages:
        cfg.ZSD.STAGES = args.stages
    cfg.freeze()
    check_config_supported(cfg)
    return cfg


def main(args):
    cfg = build_cfg(args)
    with exclusive_output_dir(cfg.OUTPUT_DIR):  # a second run on the same folder is refused
        comm.synchronize()  # no rank writes to OUTPUT_DIR before the lock is held
        default_setup(cfg, args)
        setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="zsdet")
        if args.eval_only:  # ZSD on ZSD.TEST_ZSD and GZSD on ZSD.TEST_GZSD with MODEL.WEIGHTS
            return ZSDPipeline(cfg).evaluate_and_report({"eval": (cfg.MODEL.WEIGHTS, cfg.MODEL.ZSD.CLASSIFIER)})
        return ZSDPipeline(cfg).run()


def parse_stages(text: str):
    stages = [s for s in text.split(",") if s]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise argparse.ArgumentTypeError(f"unknown stages {unknown}; choose from {','.join(STAGES)}")
    return stages


def build_parser():
    parser = default_argument_parser()
    parser.add_argument("--stages", type=parse_stages, default=None,
                        help=f"comma-separated stages to run, from {','.join(STAGES)} "
                             "(default: cfg.ZSD.STAGES)")
    return parser


if __name__ == "__main__":
    args = build_parser().parse_args()
    logging.getLogger("zsdet").info("Command line arguments: %s", args)
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except (FileNotFoundError, KeyError, ValueError, OutputDirBusy) as e:  # bad settings or input files: one line
        sys.exit(f"error: {e.args[0] if isinstance(e, KeyError) else e}")  # KeyError str() quotes
