#!/usr/bin/env python
"""Zero-shot detection with multi-label feature synthesis: the whole pipeline, stage by stage.

    python tools/train_net.py --config-file configs/shapes/zsd_shapes_R18_FPN.yaml
    python tools/train_net.py --config-file ... --stages features,generator   # some stages only
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS out/model_zsd.pth
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS out/model_baseline.pth

With ``--eval-only`` the box classifier is built as the weights file records it (``model_zsd.pth``:
linear or MLP; ``model_baseline.pth``: semantic); ``MODEL.ZSD.CLASSIFIER`` applies to files that
record none.

Multi-GPU / multi-machine: ``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url``
(detectron2's ``launch``).
"""
import argparse

import zsdet  # noqa: F401  (first: applies the Pillow alias detectron2 v0.6 needs at import, zsdet.compat)
from detectron2.engine import default_argument_parser
from zsdet.compat import check_config_supported
from zsdet.config import get_zsdet_cfg
from zsdet.engine import STAGES, ZSDPipeline
from zsdet.engine.checkpoints import weights_classifier_kind
from zsdet.engine.defaults import launch_tool, output_dir_setup
from zsdet.engine.settings_check import check_eval_only_settings


def setup(args):
    """detectron2's defaults + zsdet's keys -> YAML -> command-line opts -> ``--stages`` -> freeze;
    configs needing ops this detectron2 lacks are refused."""
    cfg = get_zsdet_cfg(args.config_file, args.opts)
    if args.stages:
        cfg.ZSD.STAGES = args.stages
    cfg.freeze()
    check_config_supported(cfg)
    return cfg


def main(args):
    cfg = setup(args)
    with output_dir_setup(cfg, args):
        if args.eval_only:  # ZSD on ZSD.TEST_ZSD and GZSD on ZSD.TEST_GZSD with MODEL.WEIGHTS
            check_eval_only_settings(cfg)
            kind = weights_classifier_kind(cfg.MODEL.WEIGHTS, cfg.MODEL.ZSD.CLASSIFIER)  # as the file records
            return ZSDPipeline(cfg).evaluate_and_report({"eval": (cfg.MODEL.WEIGHTS, kind)})
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


def invoke_main() -> None:
    launch_tool(main, build_parser().parse_args(), "MODEL.DEVICE")


if __name__ == "__main__":
    invoke_main()
