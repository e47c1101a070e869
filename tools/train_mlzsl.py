#!/usr/bin/env python
"""Multi-label (generalized) zero-shot classification benchmarks: NUS-WIDE, Open Images, MS COCO and
a generated synthetic benchmark (paper Sec. 4).

Trains the multi-label feature generator on seen-class features, synthesizes unseen-class features,
trains the final classifiers and reports ZSL / GZSL mAP and P / R / F1 at top-K as a table and as
``OUTPUT_DIR/results.json`` (runner: ``zsdet/engine/classification.py``).

    python tools/train_mlzsl.py --config-file configs/classification/synthetic.yaml
    python tools/train_mlzsl.py --config-file configs/classification/nus_wide_clf_vaegan.yaml \
        OUTPUT_DIR output/nus SYNTHESIS.DEVICE cuda
    python tools/train_mlzsl.py --config-file ... --eval-only   # re-evaluate the saved classifiers

An interrupted run resumes the generator from ``OUTPUT_DIR/generator/last_checkpoint.pth``
(``SYNTHESIS.RESUME``, on by default).
"""
import zsdet  # noqa: F401  (first: applies the Pillow alias detectron2 v0.6 needs at import, zsdet.compat)
from detectron2.engine import default_argument_parser
from zsdet.config import get_zsdet_cfg
from zsdet.engine.classification import run_classification
from zsdet.engine.defaults import launch_tool, output_dir_setup


def setup(args):
    """detectron2's defaults + zsdet's keys -> YAML -> command-line opts -> freeze."""
    cfg = get_zsdet_cfg(args.config_file, args.opts)
    cfg.freeze()
    return cfg


def main(args):
    cfg = setup(args)
    with output_dir_setup(cfg, args):
        return run_classification(cfg, eval_only=args.eval_only)


def invoke_main() -> None:
    launch_tool(main, default_argument_parser().parse_args(), "SYNTHESIS.DEVICE")


if __name__ == "__main__":
    invoke_main()
