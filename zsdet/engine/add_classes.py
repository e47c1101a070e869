"""New classes for a trained zero-shot detector from their class embeddings only.

The generator of a pipeline run is conditioned on class embeddings, so classes never named during
training can be added afterwards: their embedding rows are appended to the generator's (whose
original rows are checked against the run's embeddings by the generator checkpoint's fingerprint),
features are synthesized for them, and only the box classifier is retrained (stage 5 of the
paper), with the pipeline's own classifier stage (:func:`~zsdet.engine.synthesis_classifier.train_synthesis_classifier`:
training set, recipe, calibration) over seen + the run's unseen + the new classes. Detector, RoI bank and generator are reused unchanged; nothing is retrained but one
linear layer.

Outputs (``<stem>`` = the weights file's name without ``.pth``):

* ``<stem>.pth``: the detector with the new classifier (``K + N + 1`` columns, the new classes
  after the run's ``K``, background last) and ``zsd_classes``
  (``thing_classes`` / ``seen_classes`` / ``unseen_classes`` / ``added_classes``);
* ``<stem>.classes.json``: a class-list file (:mod:`zsdet.data.datasets.reindexed`) declaring the
  run's datasets (or ``test_datasets``) re-indexed to the new class list as ``<dataset>@<stem>``;
* ``<stem>.yaml``: the run's config with ``MODEL.WEIGHTS``, ``MODEL.ROI_HEADS.NUM_CLASSES``,
  ``ZSD.CLASS_LIST`` and the dataset names set, for ``tools/train_net.py --eval-only`` and
  ``tools/demo.py`` as they are; its ``OUTPUT_DIR`` is ``<stem>/`` beside the weights.
"""
import logging
import os
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from detectron2.data import DatasetCatalog

from ..config import get_zsdet_cfg
from ..data.datasets.reindexed import root_source, write_class_list
from ..data.embeddings import check_unique_names, load_class_embeddings, normalize_embeddings
from ..data.zsd_split import class_embeddings_from_config, class_embeddings_of
from ..synthesis import SynthesisTrainer
from ..utils.io import write_text
from .roi_stages import foreground_rows, load_bank, load_generator, save_with_classifier
from .synthesis_classifier import box_classifier_kind, train_synthesis_classifier
from .zsd_pipeline import ZSDPipeline

__all__ = ["add_classes", "append_class_embeddings", "new_embedding_rows"]

logger = logging.getLogger(__name__)

RUN_CONFIG = "config.yaml"  # written into OUTPUT_DIR by detectron2's default_setup


def new_embedding_rows(cfg, path: str, names: Sequence[str], fmt: str = "auto") -> np.ndarray:
    """(N, a) embeddings of ``names`` from ``path``, normalised as the run's were.

    ``"l2"`` and ``"none"`` act per row; ``"spectral"`` divides by the largest singular value of
    the run's *original* matrix, so the run's rows and the new rows share one scale.
    Raises (naming the file): a name without a vector, a dimension other than the run's.
    """
    original = class_embeddings_from_config(cfg)
    raw = load_class_embeddings(path, names, fmt, normalize="none", expected_dim=original.shape[1])
    mode = cfg.ZSD.EMBEDDINGS_NORMALIZE
    if mode != "spectral":
        return normalize_embeddings(raw, mode, row_names=names, source=path)
    unscaled = class_embeddings_of(cfg.DATASETS.TRAIN[0], cfg.ZSD.EMBEDDINGS_FILE, "none")
    return (raw / np.linalg.norm(unscaled.astype(np.float64), ord=2)).astype(np.float32)


def append_class_embeddings(trainer: SynthesisTrainer, rows: torch.Tensor) -> None:
    """Give a trained generator ``N`` more classes: its class-embedding buffer (C, a) becomes
    (C + N, a) with ``rows`` appended; class ids ``C .. C + N - 1`` can then be synthesized.
    The weights do not depend on C, so nothing else changes."""
    buffer = trainer.generator.class_embeddings
    if rows.ndim != 2 or rows.shape[1] != buffer.shape[1]:
        raise ValueError(f"new class embeddings have shape {tuple(rows.shape)}, expected (N, {buffer.shape[1]})")
    trainer.generator.class_embeddings = torch.cat([buffer, rows.to(buffer)])
    trainer.num_classes = len(trainer.generator.class_embeddings)


def _check_run(pipeline: ZSDPipeline, run_dir: str) -> None:
    for path, stage in ((pipeline.detector_weights, "detector"),
                        (os.path.join(pipeline.bank_dir, "COMPLETE"), "features"),
                        (os.path.join(pipeline.generator_dir, "model_best.pth"), "generator")):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"run directory {run_dir} has no trained {stage} ({path} is missing): "
                                    f"run `tools/train_net.py --stages {stage}` with its config first")


def _check_new_names(names: Sequence[str], pipeline: ZSDPipeline) -> None:
    if not names:
        raise ValueError("no class to add (--classes is empty)")
    check_unique_names(names, "--classes")
    split = pipeline.split
    known = {n: ("unseen" if i in set(split.unseen_ids) else "seen") for i, n in enumerate(split.class_names)}
    clash = [f"{n!r} ({known[n]})" for n in names if n in known]
    if clash:
        raise ValueError(f"class(es) {', '.join(clash)} are already known to the detector of "
                         f"{pipeline.out}; add only new names")


def _dataset_names(cfg, test_datasets: Optional[Sequence[str]]) -> Dict[str, Sequence[str]]:
    """Datasets of the new config: the run's, or ``test_datasets`` = (ZSD test set, GZSD test set)."""
    zsd, gzsd = test_datasets if test_datasets else (cfg.ZSD.TEST_ZSD, cfg.ZSD.TEST_GZSD)
    for name in (zsd, gzsd):
        if name and name not in DatasetCatalog:
            raise KeyError(f"test dataset {name!r} is not registered")
    return {"train": list(cfg.DATASETS.TRAIN[:1]), "test": list(cfg.DATASETS.TEST),
            "zsd": [zsd] if zsd else [], "gzsd": [gzsd] if gzsd else []}


def add_classes(run_dir: str, new_classes: Sequence[str], embeddings_file: str, output: Optional[str] = None, *,
                embeddings_format: str = "auto", test_datasets: Optional[Sequence[str]] = None,
                opts: Sequence[str] = ()) -> Dict:
    """Add ``new_classes`` to the detector of the pipeline run in ``run_dir`` (module docstring).

    Args:
        run_dir: a pipeline ``OUTPUT_DIR`` with ``config.yaml``, ``model_final.pth``, a complete
            ``roi_bank/`` and ``generator/model_best.pth``.
        new_classes: names never known to the run (neither seen nor unseen).
        embeddings_file: their vectors (any format of :func:`load_class_embeddings`).
        output: weights file (default ``run_dir/model_added.pth``; relative = to ``run_dir``).
        test_datasets: (ZSD, GZSD) registered test sets holding GT of the new classes for the new
            config (default: the run's ``ZSD.TEST_ZSD`` / ``ZSD.TEST_GZSD``).
        opts: config overrides (e.g. ``ZSD.CLASSIFIER.EPOCHS 20``).

    Returns:
        {"weights", "config", "class_list": written paths, "thing_classes", "added_classes",
        "classifier": training statistics}.
    """
    config_file = os.path.join(run_dir, RUN_CONFIG)
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{run_dir} is not a pipeline run directory: {config_file} (written by "
                                "tools/train_net.py) is missing")
    cfg = get_zsdet_cfg(config_file, ["OUTPUT_DIR", run_dir, *opts])
    pipeline = ZSDPipeline(cfg)
    _check_run(pipeline, run_dir)
    new_classes = list(new_classes)
    _check_new_names(new_classes, pipeline)
    datasets = _dataset_names(cfg, test_datasets)
    split = pipeline.split
    new_rows = torch.from_numpy(new_embedding_rows(cfg, embeddings_file, new_classes, embeddings_format))

    bank = load_bank(pipeline.bank_dir, split, pipeline.train_set)
    trainer = load_generator(cfg, split.class_names, bank.feature_dim, pipeline.generator_dir)
    append_class_embeddings(trainer, new_rows)
    num_old, num_all = split.num_classes, split.num_classes + len(new_classes)
    unseen_ids = list(split.unseen_ids) + list(range(num_old, num_all))
    _, val_rows = foreground_rows(cfg, bank, split.seen_ids)
    classifier, record = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, unseen_ids,
                                                    np.unique(bank.image_ids[val_rows]), pipeline.detector_weights)
    logger.info("box classifier trained over %d unseen classes (%d new): %s", len(unseen_ids), len(new_classes), record)

    thing = list(split.class_names) + new_classes
    unseen = [thing[i] for i in unseen_ids]
    seen = [n for n in thing if n not in set(unseen)]
    classes = {"thing_classes": thing, "seen_classes": seen, "unseen_classes": unseen,
               "added_classes": new_classes}
    weights = os.path.abspath(os.path.join(run_dir, output or "model_added.pth"))
    stem = os.path.splitext(weights)[0]
    tag = os.path.basename(stem)
    renamed = {group: [f"{root_source(n)}@{tag}" for n in names] for group, names in datasets.items()}
    class_list = stem + ".classes.json"
    write_class_list(class_list, thing, seen, unseen,
                     {new: root_source(old) for group in datasets
                      for old, new in zip(datasets[group], renamed[group])},
                     trainer.generator.class_embeddings.cpu().numpy())
    save_with_classifier(pipeline.detector_weights, classifier, weights, zsd_classes=classes, classifier_record=record)

    new_cfg = cfg.clone()
    new_cfg.MODEL.WEIGHTS = weights
    new_cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_all
    new_cfg.MODEL.ZSD.CLASSIFIER = box_classifier_kind(cfg)
    new_cfg.ZSD.CLASS_LIST = class_list
    new_cfg.ZSD.EMBEDDINGS_FILE = ""  # the class list carries the normalised rows of all classes
    new_cfg.ZSD.EMBEDDINGS_NORMALIZE = "none"
    new_cfg.DATASETS.TRAIN = tuple(renamed["train"])
    new_cfg.DATASETS.TEST = tuple(renamed["test"])
    new_cfg.ZSD.TEST_ZSD = renamed["zsd"][0] if renamed["zsd"] else ""
    new_cfg.ZSD.TEST_GZSD = renamed["gzsd"][0] if renamed["gzsd"] else ""
    new_cfg.OUTPUT_DIR = stem
    config = stem + ".yaml"
    write_text(config, new_cfg.dump())
    logger.info("added %s: %s, %s, %s", new_classes, weights, config, class_list)
    return {"weights": weights, "config": config, "class_list": class_list, "thing_classes": thing,
            "added_classes": new_classes, "classifier": record}
