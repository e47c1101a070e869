"""The inputs and outputs of the pipeline's RoI-feature stages, as functions of the config.

Used by :class:`~zsdet.engine.ZSDPipeline` (stages ``generator``, ``classifier``, ``baseline``),
:func:`~zsdet.engine.add_classes.add_classes` and the benchmarks:

* :func:`load_bank`: the RoI bank index, checked against the training set's classes;
* :func:`foreground_rows`, :func:`generator_source`: the generator's streamed train / validation data;
* :func:`validation_background`: real background RoIs for the generator's selection probe and report;
* :func:`synthesis_trainer`, :func:`load_generator`: the generator of ``OUTPUT_DIR/generator``;
* :func:`real_training_set`, :func:`synthesized_set`: the box classifier's features (n, d) float32
  and label weights (n, K + 1), background last;
* :func:`save_with_classifier`: the detector's weights with another box classifier.
"""
import logging
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from ..data.feature_bank import FeatureBank
from ..data.mixtures import fuse_mixtures_into, sample_mixture_sets
from ..data.roi_stream import RoIBankSource
from ..data.row_sampling import balanced_rows
from ..data.seeded_rng import BACKGROUND_KEY, derive_seed
from ..data.zsd_split import ZeroShotSplit, class_embeddings_from_config, class_embeddings_source
from ..synthesis import LabelSets, SynthesisTrainer
from ..utils.io import write_torch
from .checkpoints import CLASSIFIER_PREFIX, load_state_dict_file

__all__ = ["load_bank", "foreground_rows", "generator_source", "validation_background", "synthesis_trainer",
           "load_generator",
           "real_training_set", "synthesized_set", "save_with_classifier"]

logger = logging.getLogger(__name__)


def load_bank(bank_dir: str, split: ZeroShotSplit, dataset_name: str) -> FeatureBank:
    """The bank index of ``bank_dir``; its classes must be those of ``split`` (the training set
    ``dataset_name``'s), else it is a bank of another split (``ValueError``)."""
    bank = FeatureBank(bank_dir)
    if list(bank.class_names) != list(split.class_names):
        raise ValueError(f"RoI bank {bank_dir} was extracted for classes {bank.class_names}, but "
                         f"{dataset_name} has {list(split.class_names)}; delete the bank to rebuild it")
    return bank


def foreground_rows(cfg, bank: FeatureBank, seen_ids: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Foreground rows of the bank split by image into generator-train / validation rows
    (``ZSD.FEATURES.VAL_FRACTION`` of the images, drawn with ``SEED``; indices only: ~8 bytes a
    row). Every seen class must have a foreground row."""
    with_image = bank.image_ids
    fg = bank.foreground_rows()
    bank.check_classes(seen_ids, fg, "foreground")
    images = np.unique(with_image[fg])
    rng = np.random.default_rng(cfg.SEED)
    val_images = rng.choice(images, int(round(cfg.ZSD.FEATURES.VAL_FRACTION * len(images))), replace=False)
    is_val = np.isin(with_image[fg], val_images)
    return fg[~is_val], fg[is_val]


def generator_source(cfg, bank: FeatureBank, rows: np.ndarray, samples_per_epoch: int = 0) -> RoIBankSource:
    """Streamed single RoIs + mixtures of ``rows`` (``ZSD.MIXTURES``, ``ZSD.FEATURES.STREAM_*``)."""
    m, f = cfg.ZSD.MIXTURES, cfg.ZSD.FEATURES  # checked by check_pipeline_settings
    return RoIBankSource(bank, rows, mixture_ratio=m.RATIO, min_set_size=m.MIN_SET_SIZE,
                         max_set_size=m.MAX_SET_SIZE, memory_budget_mb=f.STREAM_MEMORY_MB,
                         block_rows=f.STREAM_BLOCK_ROWS, samples_per_epoch=samples_per_epoch,
                         class_balanced=f.CLASS_BALANCED)


def validation_background(cfg, bank: FeatureBank, val_rows: np.ndarray, num_probe: int, num_held_out: int,
                          exclude_images: Optional[np.ndarray] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Real background RoI features (data units) for the generator's selection probe and its
    feature-quality report: up to ``num_probe`` rows of the generator's training images (for the
    probe) and up to ``num_held_out`` rows of the validation images (the images of ``val_rows``),
    drawn with ``SEED``; none of ``exclude_images``."""
    bg = np.nonzero(bank.labels == bank.num_classes)[0]
    if exclude_images is not None:
        bg = bg[~np.isin(bank.image_ids[bg], exclude_images)]
    held_out = np.isin(bank.image_ids[bg], np.unique(bank.image_ids[val_rows]))
    rng = np.random.default_rng(derive_seed(cfg.SEED, BACKGROUND_KEY))

    def draw(rows, n):
        return torch.from_numpy(bank.load(np.sort(rng.choice(rows, min(n, len(rows)), replace=False))))
    return draw(bg[~held_out], num_probe), draw(bg[held_out], num_held_out)


def synthesis_trainer(cfg, class_names: Sequence[str], feature_dim: int, output_dir: str) -> SynthesisTrainer:
    """The generator trainer of ``cfg.SYNTHESIS`` over the class embeddings of the config's training
    set (rows named ``class_names``), writing to ``output_dir``."""
    emb = torch.from_numpy(class_embeddings_from_config(cfg))
    return SynthesisTrainer.from_config(cfg, emb, feature_dim, output_dir, class_names=class_names,
                                        embeddings_source=class_embeddings_source(cfg))


def load_generator(cfg, class_names: Sequence[str], feature_dim: int, output_dir: str) -> SynthesisTrainer:
    """:func:`synthesis_trainer` with the selected generator of ``output_dir`` loaded (its class
    embeddings checked against the config's by the checkpoint's fingerprint)."""
    trainer = synthesis_trainer(cfg, class_names, feature_dim, output_dir)
    trainer.load_best()
    return trainer


def real_training_set(cfg, bank: FeatureBank, seen_ids: Sequence[int], rng: np.random.Generator,
                      with_mixtures: bool, held_out_images: Optional[np.ndarray] = None
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Real features of the classes ``seen_ids`` (at most ``ZSD.CLASSIFIER.REAL_PER_CLASS`` per
    class), background (``BG_PER_FG`` per foreground row) and, ``with_mixtures``, ``MIXTURE_RATIO``
    mixtures per foreground row; none from the images ``held_out_images`` (kept for calibration).

    Reads only the selected rows (:meth:`FeatureBank.load`, block by block): memory is
    ``REAL_PER_CLASS`` x classes x (1 + BG_PER_FG + MIXTURE_RATIO) rows, not the bank.

    Returns:
        x: (n, d) float32; y: (n, K + 1) label weights, one-hot for real rows.
    """
    c = cfg.ZSD.CLASSIFIER
    k = bank.num_classes
    usable = np.ones(len(bank), bool) if held_out_images is None else ~np.isin(bank.image_ids, held_out_images)
    fg = np.nonzero(usable & np.isin(bank.labels, seen_ids))[0]
    bank.check_classes(seen_ids, fg, "foreground")
    cap = c.REAL_PER_CLASS or len(fg)
    fg = fg[balanced_rows(bank.labels[fg], cap, rng)]
    bg = np.nonzero(usable & (bank.labels == k))[0]
    bg = rng.choice(bg, min(len(bg), int(c.BG_PER_FG * len(fg))), replace=False)
    rows = np.sort(np.concatenate([fg, bg]))
    labels = torch.from_numpy(bank.labels[rows].astype(np.int64))
    fg_rows = (labels < k).nonzero()[:, 0]
    num_mix = int(c.MIXTURE_RATIO * len(fg_rows)) if with_mixtures else 0
    x = torch.empty(len(rows) + num_mix, bank.feature_dim)  # rows, then mixtures: no copies
    bank.load(rows, out=x[:len(rows)].numpy())
    y = torch.zeros(len(x), k + 1)
    y[torch.arange(len(rows)), labels] = 1
    if num_mix:
        m = cfg.ZSD.MIXTURES
        idx, mask = sample_mixture_sets(len(fg_rows), num_mix, m.MIN_SET_SIZE, m.MAX_SET_SIZE, rng)
        idx, mask = fg_rows[torch.from_numpy(idx)], torch.from_numpy(mask)
        fuse_mixtures_into(x, labels, idx, mask, x[len(rows):], y[len(rows):])
    return x, y


def synthesized_set(trainer: SynthesisTrainer, class_ids: Sequence[int], num_per_class: int,
                    seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``num_per_class`` synthesized features of each class of ``class_ids`` (one label each).

    Returns:
        x: (len(class_ids) * num_per_class, d) float32; y: (same n, C + 1) one-hot over the
        generator's C classes, background column empty.
    """
    sets = LabelSets.from_lists([[c] for c in class_ids], trainer.num_classes)
    x, y = trainer.synthesize(sets, num_per_class, seed=seed)
    return x, torch.cat([y, y.new_zeros(len(y), 1)], dim=1)


def save_with_classifier(detector_weights: str, classifier: torch.nn.Module, path: str, **extra) -> None:
    """Write the detector of ``detector_weights`` with its box classifier replaced by ``classifier``
    to ``path`` (atomically); ``extra`` entries are stored beside ``model``."""
    merged = {k: v for k, v in load_state_dict_file(detector_weights).items() if not k.startswith(CLASSIFIER_PREFIX)}
    merged.update({CLASSIFIER_PREFIX + k: v.detach().cpu() for k, v in classifier.state_dict().items()})
    write_torch(path, {"model": merged, "classifier_type": type(classifier).__name__, **extra})
