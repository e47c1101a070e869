#!/usr/bin/env python
"""Benchmark: the COCO config's pipeline stages on a fake COCO -- detector, RoI features, evaluation,
generator epoch -- the figures a COCO run is planned with (dev/gpu_check.sh runs it on a GPU).

Each subcommand measures one stage in its own process and writes one JSON object (``--json FILE``,
rewritten after every measurement, so a step killed by a timeout keeps what it measured):

* ``data``: a fake COCO 2014 (``zsdet.data.datasets.fake_coco``: COCO's structure, images of
  640x480 etc. times ``--scale``) in ``WORK/datasets``, its 65/15 splits (``prepare_coco_zsd.py``),
  the stand-in backbone (``write_standin_backbone``) and ``WORK/detector.pth`` (the config's whole
  detector with that backbone: untrained heads, so RoI counts and detections are not a trained
  detector's);
* ``detector``: ``SOLVER.IMS_PER_BATCH`` 2 (one GPU's share of the config's 16 on 8 GPUs), detectron2's
  ``SimpleTrainer`` (fp32) and ``AMPTrainer`` (fp16 on CUDA; on the CPU: bf16 autocast) on the
  pipeline's model, optimizer and data stream: seconds per iteration after a warm-up, peak GPU
  memory and host RSS;
* ``features``: the pipeline's ``features`` stage on every training image: images / s, RoIs and
  bytes per image, projected bank size and time for COCO's ~61.6k training images on 8 GPUs;
* ``evaluation``: the pipeline's ZSD + GZSD evaluation of one method on the test images: images / s
  (each image scored in both modes), projected time for COCO's 10,098 test images, two methods;
* ``generator``: one generator epoch (``SYNTHESIS`` of the config) on a synthetic bank of
  ``--dim``-d foreground rows of ``--seen`` classes, ``--samples`` single RoIs per pass
  (``ZSD.FEATURES.SAMPLES_PER_EPOCH``), fp32 and bf16: epoch, data-wait and compute seconds.

``--opts KEY VALUE ...`` are config overrides (e.g. ``ZSD.FEATURES.IMAGES_PER_BATCH 4
DATALOADER.NUM_WORKERS 2``); ``--tiny`` shrinks every size (``dev/gpu_check.sh --cpu-dry-run``).
The zsdet imported is the installed one or the one on ``PYTHONPATH`` (so the same command measures
another checkout).

    python benchmarks/bench_stages.py data --work /tmp/stages --scale 0.5
    python benchmarks/bench_stages.py features --work /tmp/stages --opts INPUT.MIN_SIZE_TRAIN "(240,)"
    python benchmarks/bench_stages.py evaluation --work /tmp/stages --opts INPUT.MIN_SIZE_TEST 240
"""
import argparse
import json
import os
import resource
import shutil
import time
from contextlib import nullcontext

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "COCO-ZSD", "faster_rcnn_R_101_FPN_65_15.yaml")
COCO_TRAIN_IMAGES, COCO_TEST_IMAGES, GPUS = 61_600, 10_098, 8  # COCO 65/15 seen-only train / test images
# --tiny: sizes that only exercise the code (every stage within seconds on a CPU)
TINY_OPTS = ["INPUT.MIN_SIZE_TRAIN", "(48,)", "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "48",
             "INPUT.MAX_SIZE_TEST", "64", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN",
             "100", "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
             "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "ZSD.FEATURES.ROIS_PER_IMAGE", "64",
             "DATALOADER.NUM_WORKERS", "1"]
TINY_GENERATOR = ["SYNTHESIS.GEN_HIDDEN", "64", "SYNTHESIS.DISC_HIDDEN", "64", "SYNTHESIS.CLF_FF_HIDDEN", "64"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=["data", "detector", "features", "evaluation", "generator"])
    p.add_argument("--work", required=True, help="folder of the fake COCO, weights and outputs")
    p.add_argument("--json", help="write the figures there too")
    p.add_argument("--config-file", default=CONFIG, help="default: this checkout's COCO 65/15 config")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny sizes: exercises every step in seconds")
    p.add_argument("--scale", type=float, default=1.0, help="data: image size relative to COCO's")
    p.add_argument("--train-factor", type=float, default=4.0, help="data: fake COCO training images x this")
    p.add_argument("--test-factor", type=float, default=5.0, help="data: fake COCO test images x this")
    p.add_argument("--iters", type=int, default=60, help="detector: timed iterations (after --warmup)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--dim", type=int, default=1024, help="generator: feature dimension")
    p.add_argument("--seen", type=int, default=65, help="generator: seen classes (+ 15 unseen)")
    p.add_argument("--samples", type=int, default=38_000, help="generator: single RoIs per pass")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE ...")
    return p.parse_args(argv)


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


class Figures(dict):
    """The step's JSON object, written to ``path`` (atomically) at every update."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def put(self, **figures):
        from zsdet.utils.io import write_json
        self.update(figures)
        if self.path:
            write_json(self.path, self)


def memory(device: str) -> dict:
    """Peak GPU memory (GiB, since the last reset) and peak host RSS (GiB) of this process."""
    import torch
    gpu = torch.cuda.max_memory_allocated() / 2 ** 30 if device.startswith("cuda") else None
    return {"peak_gpu_gib": gpu, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def synchronize(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def coco_cfg(args, *opts):
    from zsdet.config import get_zsdet_cfg
    return get_zsdet_cfg(args.config_file, ["MODEL.DEVICE", args.device, *(TINY_OPTS if args.tiny else []), *opts,
                                  *args.opts])


# ----------------------------------------------------------------------------- data
def scaled(kinds: dict, factor: float) -> dict:
    return {kind: max(1, round(n * factor)) for kind, n in kinds.items()}


def stage_data(args, out: Figures) -> None:
    import importlib.util

    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model

    from zsdet.data.datasets.fake_coco import TRAIN_KINDS, VAL_KINDS, write_fake_coco, write_standin_backbone
    from zsdet.utils.io import write_torch

    tic = time.perf_counter()
    root = os.path.join(args.work, "datasets")
    paths = write_fake_coco(os.path.join(root, "coco"), scale=args.scale,
                            train_kinds=scaled(TRAIN_KINDS, args.train_factor),
                            val_kinds=scaled(VAL_KINDS, args.test_factor))
    spec = importlib.util.spec_from_file_location("prepare_coco_zsd", os.path.join(REPO, "datasets",
                                                                                  "prepare_coco_zsd.py"))
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    counts = prepare.main(["--root", root])
    cfg = coco_cfg(args, "MODEL.DEVICE", "cpu")
    with open(paths["train"]) as f:
        images = [os.path.join(root, "coco", "train2014", im["file_name"]) for im in json.load(f)["images"][:8]]
    standin = write_standin_backbone(cfg, images, os.path.join(args.work, "standin_backbone.pth"))
    model = build_model(cfg)
    DetectionCheckpointer(model).load(standin)
    write_torch(os.path.join(args.work, "detector.pth"), {"model": model.state_dict()})
    test = DatasetCatalog.get(cfg.ZSD.TEST_GZSD)
    out.put(train_images=counts["train"]["images"], test_images=counts["test_gzsd"]["images"],
            image_size=[test[0]["width"], test[0]["height"]], seconds=time.perf_counter() - tic)


# ----------------------------------------------------------------------------- detector
def stage_detector(args, out: Figures) -> None:
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.engine import AMPTrainer, HookBase, SimpleTrainer

    from zsdet.engine.detection_trainer import ZSDTrainer

    cfg = coco_cfg(args, "SOLVER.IMS_PER_BATCH", "2")
    times = []

    class StepTimes(HookBase):
        def before_step(self):
            synchronize(args.device)
            self.tic = time.perf_counter()

        def after_step(self):
            synchronize(args.device)
            times.append(time.perf_counter() - self.tic)

    cuda = args.device.startswith("cuda")
    for precision in ("fp32", "amp"):
        model = ZSDTrainer.build_model(cfg)
        DetectionCheckpointer(model).load(os.path.join(args.work, "standin_backbone.pth"))
        loader, optimizer = ZSDTrainer.build_train_loader(cfg), ZSDTrainer.build_optimizer(cfg, model)
        amp = precision == "amp"
        trainer = (AMPTrainer if amp and cuda else SimpleTrainer)(model, loader, optimizer)
        trainer.register_hooks([StepTimes()])
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16) if amp and not cuda else nullcontext():
            trainer.train(0, args.warmup + args.iters)
        timed = times[args.warmup:]
        out.put(**{precision: {"sec_per_iter": sum(timed) / len(timed), "iters": len(timed), "images_per_iter": 2,
                               "dtype": ("float16 (AMPTrainer)" if cuda else "bfloat16 (CPU autocast)") if amp
                               else "float32", **memory(args.device)}})
        del trainer, model, optimizer, loader


# ----------------------------------------------------------------------------- features
def stage_features(args, out: Figures) -> None:
    from detectron2.data import DatasetCatalog

    from zsdet.data.feature_bank import FeatureBank
    from zsdet.engine import ZSDPipeline

    run_dir = os.path.join(args.work, "features")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    shutil.copy(os.path.join(args.work, "detector.pth"), os.path.join(run_dir, "model_final.pth"))
    cfg = coco_cfg(args, "OUTPUT_DIR", run_dir)
    tic = time.perf_counter()
    ZSDPipeline(cfg).run_features()
    seconds = time.perf_counter() - tic
    bank = FeatureBank(os.path.join(run_dir, "roi_bank"))
    images = len(DatasetCatalog.get(cfg.DATASETS.TRAIN[0]))
    per_image = sum(os.path.getsize(p) for p in bank.paths) / images
    out.put(images=images, seconds=seconds, images_per_s=images / seconds, rois_per_image=len(bank) / images,
            bytes_per_image=per_image, images_per_batch=cfg.ZSD.FEATURES.get("IMAGES_PER_BATCH", 1),
            workers=cfg.DATALOADER.NUM_WORKERS, projected_bank_gb=per_image * COCO_TRAIN_IMAGES / 1e9,
            projected_hours_8_gpus=COCO_TRAIN_IMAGES / (images / seconds) / GPUS / 3600, **memory(args.device))


# ----------------------------------------------------------------------------- evaluation
def stage_evaluation(args, out: Figures) -> None:
    from detectron2.data import DatasetCatalog

    from zsdet.engine import ZSDPipeline

    run_dir = os.path.join(args.work, "evaluation")
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = coco_cfg(args, "OUTPUT_DIR", run_dir)
    images = len(DatasetCatalog.get(cfg.ZSD.TEST_GZSD))
    tic = time.perf_counter()
    results = ZSDPipeline(cfg).evaluate_method(os.path.join(args.work, "detector.pth"), "linear", "bench")
    seconds = time.perf_counter() - tic
    out.put(test_images=images, seconds=seconds, images_per_s=images / seconds, modes=sorted(results),
            projected_minutes_8_gpus_two_methods=2 * COCO_TEST_IMAGES / (images / seconds) / GPUS / 60,
            **memory(args.device))


# ----------------------------------------------------------------------------- generator
def synthetic_bank(bank_dir: str, rows: int, dim: int, seen: int, seed: int = 0):
    """A bank of ``rows`` foreground rows (post-ReLU-like float16 features, Zipf-like frequencies of
    ``seen`` classes) in parts of 4096 rows; class names c0 ... of seen + 15 unseen classes."""
    import numpy as np

    from zsdet.data.feature_bank import FeatureBank, commit_part, part_bytes, part_path

    if not os.path.isdir(bank_dir):
        rng = np.random.default_rng(seed)
        names = [f"c{i}" for i in range(seen + 15)]
        freq = 1.0 / np.arange(1, seen + 1) ** 1.05
        prototypes = rng.normal(size=(seen, dim)).astype(np.float32)
        for seq, start in enumerate(range(0, rows, 4096)):
            n = min(4096, rows - start)
            labels = rng.choice(seen, size=n, p=freq / freq.sum())
            feats = np.maximum(prototypes[labels] + rng.normal(size=(n, dim)).astype(np.float32), 0)
            commit_part(part_path(bank_dir, 0, seq), part_bytes(feats, labels, start + np.arange(n) // 100,
                                                                np.unique(start + np.arange(n) // 100), names))
    return FeatureBank(bank_dir)


def stage_generator(args, out: Figures) -> None:
    import torch

    from zsdet.engine.roi_stages import generator_source
    from zsdet.synthesis import SynthesisTrainer

    rows = args.samples * 3 // 2  # a bank larger than an epoch: each pass draws its own samples
    bank = synthetic_bank(os.path.join(args.work, f"bank_{args.dim}d_{args.seen}c_{rows}"), rows, args.dim, args.seen)
    emb = torch.nn.functional.normalize(torch.randn(bank.num_classes, 300, generator=torch.Generator().manual_seed(0)))
    for dtype, amp in (("fp32", "none"), ("bf16", "bfloat16")):
        run_dir = os.path.join(args.work, f"generator_{dtype}")
        shutil.rmtree(run_dir, ignore_errors=True)
        cfg = coco_cfg(args, "SYNTHESIS.EPOCHS", "1", "SYNTHESIS.VAL_FRACTION", "0.0", "SYNTHESIS.CLS_PRETRAIN_EPOCHS",
                       "1", "SYNTHESIS.AMP_DTYPE", amp, "SYNTHESIS.DEVICE", args.device,
                       "ZSD.FEATURES.SAMPLES_PER_EPOCH", str(args.samples), *(TINY_GENERATOR if args.tiny else []))
        train = generator_source(cfg, bank, bank.foreground_rows(), args.samples)
        trainer = SynthesisTrainer.from_config(cfg, emb, bank.feature_dim, run_dir)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        tic = time.perf_counter()
        trainer.fit(train)
        seconds = time.perf_counter() - tic
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            epoch = json.loads(f.readline())
        out.put(**{dtype: {"epoch_s": epoch["sec"], "data_s": epoch["data_sec"],
                           "compute_s": epoch["sec"] - epoch["data_sec"], "iterations": epoch["iterations"],
                           "samples_per_pass": len(train), "prepare_s": seconds - epoch["sec"],
                           "projected_minutes_50_epochs": 50 * epoch["sec"] / 60, **memory(args.device)}})


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    # the COCO splits of WORK/datasets register at `import zsdet` (zsdet.data.datasets.coco_zsd)
    os.environ["DETECTRON2_DATASETS"] = os.path.join(args.work, "datasets")
    import zsdet  # noqa: F401  (first: the Pillow alias detectron2 v0.6 needs)

    out = Figures(args.json)
    {"data": stage_data, "detector": stage_detector, "features": stage_features, "evaluation": stage_evaluation,
     "generator": stage_generator}[args.stage](args, out)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
