"""Multi-label (generalized) zero-shot classification benchmarks (paper Sec. 4: Tables 1-4, Fig. 4).

:func:`run_classification` runs one benchmark from a config (``cfg.MLZSL`` + ``cfg.SYNTHESIS``):

1. data: HDF5 feature files (streamed from disk, see :class:`~zsdet.data.mlzsl.H5FeatureSource`),
   class names and embeddings; classes are indexed seen first, then unseen (C = S + U);
2. generator: :class:`~zsdet.synthesis.SynthesisTrainer` fitted on the seen-train file (it carves
   its validation split from it for model selection; test files are never used for selection);
3. synthesis: features for label sets (``MLZSL.SYNTH_LABEL_SETS``): every target class alone
   (``SYNTHESIS.NUM_PER_CLASS`` each) and / or the official co-occurrence recipe
   (``SYNTHESIS.LABEL_SAMPLING``, one feature per set);
4. classifiers (``SYNTHESIS.CLASSIFIER``): mode ``"zsl"``: f_z over the U unseen classes on the
   synthesized features that have an unseen label, f_gz over all C classes on the real seen-train
   features + all synthesized features (streamed together); mode ``"standard"`` (all labels
   seen, Table 4): one head over the S classes on real (+ synthesized) features;
5. evaluation (:func:`evaluate_task`): mAP and P / R / F1 at each K of ``MLZSL.TOP_K`` for each
   task (``zsl`` / ``gzsl`` or ``standard``), exact and streamed: the test file is read in row
   chunks (once for F1@K, once per block of classes for AP) within ``MLZSL.STREAM_MEMORY_MB``.

Outputs in ``OUTPUT_DIR``: ``generator/`` (checkpoints, metrics.jsonl), ``classifiers.pth`` (the
heads, reused by ``eval_only``), ``<task>_results.json`` (per-label AP), ``results.json`` (all
summaries, per-label AP, timings) and, with ``MLZSL.PLOT_BASELINE_JSON``, ``ap_change_<task>.png``.
"""
import dataclasses
import json
import logging
import os
import time
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from detectron2.utils import comm
from tabulate import tabulate
from torch import nn

from zsdet.data.embeddings import load_class_embeddings, load_nus_wide_glove, read_class_list
from zsdet.data.shipped import is_shipped, resolve_data_path
from zsdet.data.mlzsl import (ConcatSource, H5FeatureSource, SyntheticBenchmarkSpec,
                              synthetic_benchmark_paths, to_signed_labels,
                              write_synthetic_benchmark)
from zsdet.evaluation import (min_memory_mb, per_label_ap_percent, report_multilabel,
                              streamed_multilabel_metrics)
from zsdet.synthesis import (LabelSets, SynthesisTrainer, TensorFeatureSource, derive_seed,
                             sample_label_sets, train_multilabel_classifier, unseen_label_sets)
from zsdet.synthesis.distributed import resolve_device
from zsdet.utils.io import write_figure, write_json, write_torch

from .settings_check import check_classification_settings

__all__ = ["MLZSLBenchmark", "load_benchmark", "run_classification", "format_results_table",
           "plot_ap_change"]

logger = logging.getLogger(__name__)

MODES = ("zsl", "standard")
LABEL_SET_CHOICES = ("singleton", "cooccurrence", "both", "none")
FILE_KEYS = {"zsl": ("TRAIN_FILE", "ZSL_TEST_FILE", "GZSL_TEST_FILE"),
             "standard": ("TRAIN_FILE", "TEST_FILE")}
RESULTS = "results.json"
CLASSIFIERS = "classifiers.pth"


@dataclasses.dataclass
class MLZSLBenchmark:
    """Classes and files of one run. Class ids: seen ``[0, S)``, then unseen ``[S, S + U)``.

    Attributes:
        name: benchmark name; mode: ``"zsl"`` or ``"standard"``.
        seen_names, unseen_names: class names (``unseen_names`` empty in mode ``"standard"``).
        embeddings: (S + U, a) float32 class embeddings, or None when nothing is synthesized.
        files: config file key (``"TRAIN_FILE"``, ...) -> absolute HDF5 path.
        embeddings_file: the file the embeddings were read from ("" when none).
    """

    name: str
    mode: str
    seen_names: List[str]
    unseen_names: List[str]
    embeddings: Optional[np.ndarray]
    files: Dict[str, str]
    embeddings_file: str = ""

    @property
    def class_names(self) -> List[str]:
        return self.seen_names + self.unseen_names

    def label_columns(self, file_key: str) -> np.ndarray:
        """Class id of each label column of the file of ``file_key`` (the benchmark's layout)."""
        S, C = len(self.seen_names), len(self.class_names)
        return {"TRAIN_FILE": np.arange(S), "ZSL_TEST_FILE": np.arange(S, C),
                "GZSL_TEST_FILE": np.arange(C), "TEST_FILE": np.arange(S)}[file_key]

    def tasks(self) -> Dict[str, str]:
        """Evaluation task -> config key of its test file."""
        if self.mode == "zsl":
            return {"zsl": "ZSL_TEST_FILE", "gzsl": "GZSL_TEST_FILE"}
        return {"standard": "TEST_FILE"}


def _resolve(cfg, path: str) -> str:
    if is_shipped(path):  # zsdet://...: a file shipped in the repository's datasets/
        return resolve_data_path(path)
    root = cfg.MLZSL.DATA_ROOT or os.environ.get("DETECTRON2_DATASETS", "datasets")
    return os.path.abspath(path if os.path.isabs(path) else os.path.join(root, path))


def _synthetic_files(cfg) -> Dict[str, str]:
    """Generate (rank 0) or reuse the synthetic benchmark; returns its paths."""
    s = cfg.MLZSL.SYNTHETIC
    out = s.DIR or os.path.join(cfg.OUTPUT_DIR, "synthetic_data")
    spec = SyntheticBenchmarkSpec(
        num_seen=s.NUM_SEEN, num_unseen=s.NUM_UNSEEN, feature_dim=s.FEATURE_DIM,
        embedding_dim=s.EMBED_DIM, num_train=s.NUM_TRAIN, num_zsl_test=s.NUM_ZSL_TEST,
        num_gzsl_test=s.NUM_GZSL_TEST, max_labels=s.MAX_LABELS, num_topics=s.NUM_TOPICS,
        prototype_noise=s.PROTOTYPE_NOISE, feature_noise=s.FEATURE_NOISE,
        signed_labels=s.SIGNED_LABELS, seed=s.SEED)
    if comm.is_main_process():
        write_synthetic_benchmark(out, spec)
    comm.synchronize()
    return synthetic_benchmark_paths(out)


def _class_names_and_embeddings(cfg, mode: str, need_embeddings: bool
                                ) -> Tuple[List[str], List[str], Optional[np.ndarray]]:
    m = cfg.MLZSL
    emb_path = _resolve(cfg, m.EMBEDDINGS_FILE) if m.EMBEDDINGS_FILE else ""
    if need_embeddings and not emb_path:
        raise ValueError("MLZSL.EMBEDDINGS_FILE is empty: synthesizing features needs class embeddings")
    if (m.EMBEDDINGS_FORMAT == "nus_wide_pickle" and mode == "zsl"
            and not (m.SEEN_CLASSES_FILE or m.UNSEEN_CLASSES_FILE)):
        # the official matrix: seen = tags that are not concepts (tag order), unseen = concepts
        lists = [_resolve(cfg, p) if p else None for p in (m.NUS_WIDE_TAG_LIST, m.NUS_WIDE_CONCEPT_LIST)]
        nus = load_nus_wide_glove(emb_path, *lists, normalize=m.EMBEDDINGS_NORMALIZE)
        seen = nus.seen_names or [f"tag{i:03d}" for i in range(nus.num_seen)]
        unseen = nus.unseen_names or [f"concept{j:02d}" for j in range(len(nus.unseen))]
        return seen, unseen, nus.embeddings
    if not m.SEEN_CLASSES_FILE:
        raise ValueError("MLZSL.SEEN_CLASSES_FILE is empty: the seen class names are needed")
    seen = read_class_list(_resolve(cfg, m.SEEN_CLASSES_FILE))
    unseen = []
    if mode == "zsl":
        if not m.UNSEEN_CLASSES_FILE:
            raise ValueError("MLZSL.UNSEEN_CLASSES_FILE is empty: mode 'zsl' needs the unseen class names")
        unseen = read_class_list(_resolve(cfg, m.UNSEEN_CLASSES_FILE))
    overlap = sorted(set(seen) & set(unseen))
    if overlap:
        raise ValueError(f"classes listed as both seen and unseen: {overlap[:10]}")
    if not need_embeddings:
        return seen, unseen, None
    class_list = _resolve(cfg, m.EMBEDDINGS_CLASS_LIST) if m.EMBEDDINGS_CLASS_LIST else None
    emb = load_class_embeddings(emb_path, seen + unseen, m.EMBEDDINGS_FORMAT, m.EMBEDDINGS_NORMALIZE,
                                class_list=class_list)
    return seen, unseen, emb


def load_benchmark(cfg) -> MLZSLBenchmark:
    """Resolve the benchmark of ``cfg.MLZSL``: class names, embeddings and HDF5 files.

    Raises:
        ValueError: an invalid mode / choice, a missing key, or a synthetic run with file keys set.
        FileNotFoundError / KeyError: missing files or classes without embeddings (named).
    """
    m = cfg.MLZSL
    if m.MODE not in MODES:
        raise ValueError(f"MLZSL.MODE must be one of {MODES}, got {m.MODE!r}")
    if m.SYNTH_LABEL_SETS not in LABEL_SET_CHOICES:
        raise ValueError(f"MLZSL.SYNTH_LABEL_SETS must be one of {LABEL_SET_CHOICES}, "
                         f"got {m.SYNTH_LABEL_SETS!r}")
    if m.MODE == "zsl" and m.SYNTH_LABEL_SETS == "none":
        raise ValueError("MLZSL.SYNTH_LABEL_SETS='none' leaves nothing to train the unseen "
                         "classifiers on; it is only valid with MLZSL.MODE='standard'")
    keys = FILE_KEYS[m.MODE]
    if m.BENCHMARK == "synthetic":
        set_keys = [k for k in FILE_KEYS["zsl"] + FILE_KEYS["standard"] if m[k]]
        if m.MODE != "zsl" or set_keys:
            raise ValueError("the synthetic benchmark generates its own zsl files: use MLZSL.MODE='zsl' "
                             f"and leave {sorted(set(set_keys))} empty")
        paths = _synthetic_files(cfg)
        files = dict(zip(keys, (paths["train"], paths["zsl_test"], paths["gzsl_test"])))
        seen, unseen = read_class_list(paths["seen_classes"]), read_class_list(paths["unseen_classes"])
        emb = load_class_embeddings(paths["embeddings"], seen + unseen, "npy", m.EMBEDDINGS_NORMALIZE)
        return MLZSLBenchmark(m.BENCHMARK, m.MODE, seen, unseen, emb, files, paths["embeddings"])
    missing = [k for k in keys if not m[k]]
    if missing:
        raise ValueError(f"MLZSL.MODE={m.MODE!r} needs the files {['MLZSL.' + k for k in missing]}")
    seen, unseen, emb = _class_names_and_embeddings(cfg, m.MODE, m.SYNTH_LABEL_SETS != "none")
    files = {k: _resolve(cfg, m[k]) for k in keys}
    return MLZSLBenchmark(m.BENCHMARK, m.MODE, seen, unseen, emb, files,
                          _resolve(cfg, m.EMBEDDINGS_FILE) if m.EMBEDDINGS_FILE else "")


def open_source(cfg, bench: MLZSLBenchmark, file_key: str, num_classes: int,
                memory_mb: Optional[float] = None) -> H5FeatureSource:
    """Stream the file of ``file_key``, its label columns mapped into ``num_classes`` class ids,
    holding at most ``memory_mb`` MiB of rows (default ``MLZSL.STREAM_MEMORY_MB``).

    Raises:
        ValueError: the file's label count differs from the benchmark's classes for that file.
    """
    return H5FeatureSource(bench.files[file_key], num_classes=num_classes,
                           column_classes=bench.label_columns(file_key),
                           memory_budget_mb=cfg.MLZSL.STREAM_MEMORY_MB if memory_mb is None else memory_mb,
                           block_rows=cfg.MLZSL.STREAM_BLOCK_ROWS,
                           features_key=cfg.MLZSL.FEATURES_KEY, labels_key=cfg.MLZSL.LABELS_KEY)


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
class HeadScores:
    """A :class:`~zsdet.evaluation.ScoreStream`: the scores of a linear head on a streamed test
    file (computed on the CPU, a chunk at a time, into numpy buffers) and the file's signed labels
    (:func:`~zsdet.data.mlzsl.to_signed_labels`, decided once for the whole file).

    Raises:
        ValueError: the file's label columns are not the head's classes.
    """

    def __init__(self, head: nn.Linear, source: H5FeatureSource):
        if source.num_label_columns != head.out_features:
            raise ValueError(f"{source.path}: {source.num_label_columns} label columns but the "
                             f"classifier scores {head.out_features} classes")
        self.weight = head.weight.detach().float().cpu()  # (K, d), no copy of a CPU float32 head
        self.bias = head.bias.detach().float().cpu()  # (K,)
        self.source = source
        self.num_images, self.num_classes = len(source), head.out_features
        self.signed = source.has_negative_labels()

    def iter_rows(self, columns: slice, max_rows: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """``(scores (m, c) float32, labels (m, c) int8)`` of the classes ``columns``, file order."""
        weight_t, bias = self.weight[columns].T, self.bias[columns]
        for _, x, lab in self.source.iter_ordered():
            for first in range(0, len(x), max_rows):
                rows = slice(first, first + max_rows)
                scores = np.empty((len(lab[rows]), len(bias)), np.float32)
                torch.addmm(bias, torch.from_numpy(x[rows]), weight_t, out=torch.from_numpy(scores))
                yield scores, to_signed_labels(lab[rows, columns], self.signed)


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


def format_results_table(metrics: Dict[str, Dict[str, float]], ks) -> str:
    """The paper's layout (Table 2): a row per task, then P, R, F1 for each K, then mAP (percent)."""
    headers = ["Task"] + [f"{m}@{k}" for k in ks for m in ("P", "R", "F1")] + ["mAP"]
    rows = [[task.upper()] + [values[f"{m}@{k}"] for k in ks for m in ("P", "R", "F1")]
            + [values["mAP"]] for task, values in metrics.items()]
    return tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".1f")


def plot_ap_change(path: str, ours: Dict[str, Optional[float]], baseline: Dict[str, Optional[float]],
                   top_n: int, title: str) -> int:
    """Bar chart (PNG) of per-label AP change vs a baseline, as the paper's Fig. 4: the ``top_n``
    labels with the largest gains and the ``top_n`` with the largest drops.

    Returns:
        the number of labels compared (present with an AP in both runs).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [n for n, v in ours.items() if v is not None and baseline.get(n) is not None]
    if not names:
        raise ValueError(f"no label has an AP in both this run and the baseline (plot {path})")
    diff = np.array([ours[n] - baseline[n] for n in names])
    order = np.argsort(-diff, kind="stable")
    shown = order if len(order) <= 2 * top_n else np.concatenate([order[:top_n], order[-top_n:]])
    fig = Figure(figsize=(max(6.0, 0.3 * len(shown) + 1.5), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(np.arange(len(shown)), diff[shown], color=np.where(diff[shown] >= 0, "tab:green", "tab:red"))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(shown)))
    ax.set_xticklabels([names[i] for i in shown], rotation=90, fontsize=8)
    ax.set_ylabel("AP change (percentage points)")
    ax.set_title(f"{title}: better on {int((diff > 0).sum())} of {len(names)} labels")
    fig.tight_layout()
    write_figure(path, fig)
    return len(names)


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

    generator, trainer, num_synth = {}, None, 0
    if not eval_only and cfg.MLZSL.SYNTH_LABEL_SETS != "none":
        trainer = SynthesisTrainer.from_config(cfg, bench.embeddings, train.feature_dim,
                                               os.path.join(out, "generator"), device,
                                               class_names=bench.class_names,
                                               embeddings_source=bench.embeddings_file)
        generator = trainer.fit(train)
        seconds["generator"], tic = time.perf_counter() - tic, time.perf_counter()
    if not comm.is_main_process():
        return {}
    if eval_only:
        heads = load_heads(os.path.join(out, CLASSIFIERS), device)
        if os.path.isfile(os.path.join(out, RESULTS)):  # keep what the training run recorded
            with open(os.path.join(out, RESULTS)) as f:
                trained = json.load(f)
            generator, num_synth = trained.get("generator", {}), trained.get("num_synthesized", 0)
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
               "eval_only": eval_only, "seconds": seconds}
    table = format_results_table(metrics, cfg.MLZSL.TOP_K)
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
