"""Multi-label (generalized) zero-shot classification benchmarks (paper Sec. 4: Tables 1-4, Fig. 4).

:func:`run_classification` runs the benchmark of a config (``cfg.MLZSL`` + ``cfg.SYNTHESIS``):

1. data (:func:`~zsdet.data.mlzsl.load_benchmark`): HDF5 feature files streamed from disk, class
   names and embeddings, seen classes first (C = S + U);
2. generator: :class:`~zsdet.synthesis.SynthesisTrainer` fitted on the training file (its
   validation split is carved from it; test files are never used for selection);
3. synthesis (:func:`synthesis_label_sets`): every target class alone (``SYNTHESIS.NUM_PER_CLASS``
   each) and / or the official co-occurrence recipe (``SYNTHESIS.LABEL_SAMPLING``, one each);
4. classifiers (:func:`train_heads`, ``SYNTHESIS.CLASSIFIER``): mode ``"zsl"``: f_z over the U
   unseen classes on the synthesized features with an unseen label, f_gz over all C classes on the
   real training + all synthesized features; mode ``"standard"``: one head over the S classes;
5. evaluation (:func:`evaluate_task`): mAP and P / R / F1 at each K of ``MLZSL.TOP_K`` per task,
   exact and streamed within ``MLZSL.STREAM_MEMORY_MB``.

Outputs in ``OUTPUT_DIR``: ``generator/``, ``feature_quality.json`` / ``.png`` (the generator
against held-out real seen rows, :mod:`zsdet.synthesis.quality`), ``classifiers.pth`` (the heads, reused by
``eval_only``), ``<task>_results.json`` (per-label AP), ``results.json`` (summaries, per-label AP,
timings) and, with ``MLZSL.PLOT_BASELINE_JSON``, ``ap_change_<task>.png``.
"""
import json
import logging
import os
import time
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.utils import comm
from torch import nn

from ..data.mlzsl import ConcatSource, H5FeatureSource, MLZSLBenchmark, load_benchmark, open_source
from ..data.seeded_rng import derive_seed
from ..evaluation import min_memory_mb, per_label_ap_percent, report_multilabel, streamed_multilabel_metrics
from ..evaluation.feature_quality import QUALITY_KEYS
from ..evaluation.head_scores import HeadScores
from ..evaluation.report import format_results_table, plot_ap_change
from ..synthesis import (LabelSets, SynthesisTrainer, TensorFeatureSource, sample_label_sets,
                         train_multilabel_classifier, unseen_label_sets)
from ..synthesis.distributed import resolve_device
from ..synthesis.quality import assess, write_report
from ..synthesis.selection import read_rows
from ..utils.io import write_json, write_torch
from .settings_check import check_classification_settings

__all__ = ["run_classification", "synthesis_label_sets", "synthesize", "train_heads", "save_heads", "load_heads",
           "evaluate_task"]

logger = logging.getLogger(__name__)

RESULTS = "results.json"
CLASSIFIERS = "classifiers.pth"


# ---------------------------------------------------------------------------------- synthesis
def synthesis_label_sets(cfg, bench: MLZSLBenchmark, trainer: SynthesisTrainer
                         ) -> List[Tuple[LabelSets, int]]:
    """``(label sets, features per set)`` to synthesize, per ``MLZSL.SYNTH_LABEL_SETS``.

    Targets are the unseen classes in mode ``"zsl"`` and every class in mode ``"standard"``,
    where the co-occurrence sets are the real training sets themselves.
    """
    choice, S, C = cfg.MLZSL.SYNTH_LABEL_SETS, len(bench.seen_names), len(bench.class_names)
    targets = range(S, C) if bench.mode == "zsl" else range(S)
    parts = []
    if choice in ("singleton", "both"):
        parts.append((unseen_label_sets(targets), cfg.SYNTHESIS.NUM_PER_CLASS))
    if choice in ("cooccurrence", "both"):
        if bench.mode == "zsl":
            ls = cfg.SYNTHESIS.LABEL_SAMPLING
            sets = sample_label_sets(
                trainer.train_sets, torch.as_tensor(bench.embeddings), range(S), targets,
                seen_fraction=ls.SEEN_FRACTION, unseen_fraction=ls.UNSEEN_FRACTION,
                mixed_fraction=ls.MIXED_FRACTION, mixed_keep_seen=ls.MIXED_KEEP_SEEN,
                rounds=ls.ROUNDS, seed=cfg.SYNTHESIS.SEED)
        else:
            sets = trainer.train_sets
        parts.append((sets, 1))
    return parts


def synthesize(trainer: SynthesisTrainer, parts: List[Tuple[LabelSets, int]], seed: int
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Features (n, d) and multi-hot labels (n, C) for every ``(sets, num_per_set)`` part."""
    out = [trainer.synthesize(sets, n, seed=derive_seed(seed, i)) for i, (sets, n) in enumerate(parts)]
    return torch.cat([x for x, _ in out]), torch.cat([y for _, y in out])


# ---------------------------------------------------------------------------------- classifiers
def _fit_head(cfg, source, device) -> nn.Linear:
    c = cfg.SYNTHESIS.CLASSIFIER
    return train_multilabel_classifier(None, None, epochs=c.EPOCHS, batch_size=c.BATCH_SIZE, lr=c.LR,
                                       seed=cfg.SYNTHESIS.SEED, device=device, betas=tuple(c.BETAS),
                                       source=source)


def train_heads(cfg, bench: MLZSLBenchmark, train: H5FeatureSource,
                synth: Optional[Tuple[torch.Tensor, torch.Tensor]], device) -> Dict[str, nn.Linear]:
    """The final classifiers, one per task (see the module docstring)."""
    parts = [train] + ([TensorFeatureSource(*synth)] if synth is not None else [])
    heads = {}
    if bench.mode == "zsl":
        S = len(bench.seen_names)
        x, y = synth
        has_unseen = y[:, S:].any(1)
        if not bool(has_unseen.any()):
            raise ValueError("no synthesized feature has an unseen label: check MLZSL.SYNTH_LABEL_SETS "
                             "and SYNTHESIS.LABEL_SAMPLING")
        logger.info("f_z: %d synthesized features with an unseen label", int(has_unseen.sum()))
        heads["zsl"] = _fit_head(cfg, TensorFeatureSource(x[has_unseen], y[has_unseen, S:]), device)
        logger.info("f_gz: %d real seen + %d synthesized features", len(train), len(x))
        heads["gzsl"] = _fit_head(cfg, ConcatSource(parts), device)
    else:
        heads["standard"] = _fit_head(cfg, ConcatSource(parts), device)
    return heads


def save_heads(path: str, heads: Dict[str, nn.Linear]) -> None:
    write_torch(path, {"format": 1, "heads": {t: h.state_dict() for t, h in heads.items()}})


def load_heads(path: str, device) -> Dict[str, nn.Linear]:
    """Heads written by :func:`save_heads`; a missing or foreign file raises naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no trained classifiers at {path}: run without --eval-only first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        heads = {}
        for task, sd in state["heads"].items():
            head = nn.Linear(sd["weight"].shape[1], sd["weight"].shape[0])
            head.load_state_dict(sd)
            heads[task] = head.to(device).eval()
    except Exception as e:
        raise ValueError(f"corrupt or foreign classifier file {path} ({type(e).__name__}: {e})") from e
    return heads


# ---------------------------------------------------------------------------------- evaluation
def evaluate_task(cfg, task: str, head: nn.Linear, source: H5FeatureSource, class_names: List[str],
                  output_dir: str) -> Tuple[Dict[str, float], Dict[str, Optional[float]]]:
    """Metrics (percent) of ``head`` on the test file of ``source`` and its per-label AP (percent;
    None = no positive); writes ``<task>_results.json``.

    Streamed and exact (:func:`~zsdet.evaluation.streamed_multilabel_metrics`): scores and labels
    take at most half of ``MLZSL.STREAM_MEMORY_MB``; ``source`` should be opened with the other
    half (as :func:`run_classification` does), so evaluation holds at most the budget. File labels
    are read as signed: {0, 1} files have no unknowns; in {-1, 0, 1} files the 0s are unknown and
    left out of the AP ranking.
    """
    m = cfg.MLZSL
    ap, f1 = streamed_multilabel_metrics(HeadScores(head, source), ks=m.TOP_K, convention=m.AP_CONVENTION,
                                         ignore_zero=True, memory_mb=m.STREAM_MEMORY_MB / 2)
    summary = report_multilabel(task, ap, f1, num_images=len(source), convention=m.AP_CONVENTION,
                                output_dir=output_dir, class_names=class_names)
    return summary, per_label_ap_percent(ap, class_names)


# ---------------------------------------------------------------------------------- runner
def run_classification(cfg, eval_only: bool = False) -> Dict:
    """Run the benchmark of ``cfg`` (module docstring); returns the ``results.json`` payload.

    Non-main ranks of a multi-GPU run take part in generator training only and return ``{}``.
    With ``eval_only`` the heads saved in ``OUTPUT_DIR/classifiers.pth`` are evaluated again.
    """
    tic = start = time.perf_counter()
    seconds = {}
    out = cfg.OUTPUT_DIR
    os.makedirs(out, exist_ok=True)
    check_classification_settings(cfg, eval_only)
    bench = load_benchmark(cfg)
    device = resolve_device(cfg.SYNTHESIS.DEVICE)
    train = open_source(cfg, bench, "TRAIN_FILE", len(bench.class_names))
    # evaluation: half the budget for the test file reader, half for scores (evaluate_task)
    tests = {t: open_source(cfg, bench, key, len(bench.class_names), cfg.MLZSL.STREAM_MEMORY_MB / 2)
             for t, key in bench.tasks().items()}
    task_classes = {"zsl": bench.unseen_names, "gzsl": bench.class_names, "standard": bench.seen_names}
    for key, source in [("TRAIN_FILE", train)] + [(bench.tasks()[t], s) for t, s in tests.items()]:
        if len(source) == 0:
            raise ValueError(f"MLZSL.{key}: {source.path} has no rows")
    for task, source in tests.items():  # fail before training, not after
        need = 2 * min_memory_mb(len(source), len(task_classes[task]))
        if cfg.MLZSL.STREAM_MEMORY_MB < need:
            raise ValueError(f"MLZSL.STREAM_MEMORY_MB={cfg.MLZSL.STREAM_MEMORY_MB} is below the {need:.3g} "
                             f"MiB that evaluating {source.path} ({len(source)} images) needs")
    logger.info("%s (%s): %d seen / %d unseen classes, %d training rows, test rows %s",
                bench.name, bench.mode, len(bench.seen_names), len(bench.unseen_names), len(train),
                {t: len(s) for t, s in tests.items()})
    seconds["data"], tic = time.perf_counter() - tic, time.perf_counter()

    generator, trainer, num_synth, quality = {}, None, 0, None
    if not eval_only and cfg.MLZSL.SYNTH_LABEL_SETS != "none":
        s = cfg.SYNTHESIS
        trainer = SynthesisTrainer.from_config(cfg, bench.embeddings, train.feature_dim,
                                               os.path.join(out, "generator"), device,
                                               class_names=bench.class_names,
                                               embeddings_source=bench.embeddings_file)
        fit_train, val = train.split(s.VAL_FRACTION, s.SEED) if s.VAL_FRACTION > 0 else (train, None)
        generator = trainer.fit(fit_train, val)
        if val is not None and comm.is_main_process():  # the selected generator against held-out real rows
            quality = write_report(assess(trainer, *read_rows(val, s.VAL_MAX_SAMPLES, s.SEED)), out,
                                   f"{bench.name}: {s.FUSION} {s.GAN}, held-out seen training rows")
        seconds["generator"], tic = time.perf_counter() - tic, time.perf_counter()
    if not comm.is_main_process():
        return {}
    if eval_only:
        heads = load_heads(os.path.join(out, CLASSIFIERS), device)
        if os.path.isfile(os.path.join(out, RESULTS)):  # keep what the training run recorded
            with open(os.path.join(out, RESULTS)) as f:
                trained = json.load(f)
            generator, num_synth = trained.get("generator", {}), trained.get("num_synthesized", 0)
            quality = trained.get("feature_quality")
    else:
        synth = None
        if trainer is not None:
            synth = synthesize(trainer, synthesis_label_sets(cfg, bench, trainer), cfg.SYNTHESIS.SEED)
            num_synth = len(synth[0])
            logger.info("synthesized %d features", num_synth)
            seconds["synthesis"], tic = time.perf_counter() - tic, time.perf_counter()
        heads = train_heads(cfg, bench, train, synth, device)
        save_heads(os.path.join(out, CLASSIFIERS), heads)
        seconds["classifiers"], tic = time.perf_counter() - tic, time.perf_counter()

    metrics, per_label = {}, {}
    for task, source in tests.items():
        metrics[task], per_label[task] = evaluate_task(cfg, task, heads[task], source, task_classes[task], out)
    seconds["evaluation"] = time.perf_counter() - tic
    seconds["total"] = time.perf_counter() - start
    results = {"benchmark": bench.name, "mode": bench.mode, "fusion": cfg.SYNTHESIS.FUSION,
               "gan": cfg.SYNTHESIS.GAN, "units": "percent", "metrics": metrics,
               "per_label_ap": per_label, "generator": generator, "num_synthesized": num_synth,
               "feature_quality": quality,
               "eval_only": eval_only, "seconds": seconds}
    table = format_results_table(metrics, cfg.MLZSL.TOP_K)
    if quality:
        table += "\n\nfeature quality (held-out seen rows): " + ", ".join(
            f"{k} {quality[k]:.3g}" for k in QUALITY_KEYS)
    logger.info("%s, %s %s (percent):\n%s", bench.name, cfg.SYNTHESIS.FUSION, cfg.SYNTHESIS.GAN, table)
    write_json(os.path.join(out, RESULTS), results)
    if cfg.MLZSL.PLOT_BASELINE_JSON:
        with open(cfg.MLZSL.PLOT_BASELINE_JSON) as f:
            baseline = json.load(f)["per_label_ap"]
        for task in per_label.keys() & baseline.keys():
            path = os.path.join(out, f"ap_change_{task}.png")
            plot_ap_change(path, per_label[task], baseline[task], cfg.MLZSL.PLOT_TOP_N,
                           f"{bench.name} {task.upper()} per-label AP vs baseline")
            logger.info("per-label AP change plot: %s", path)
    return results
