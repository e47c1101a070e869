"""Multi-label feature synthesis (paper Sec. 3), shared by detection and classification.

Works on plain feature tensors and class-embedding matrices from a
:class:`~zsdet.data.feature_source.FeatureSource`; knows nothing about images.

* :mod:`.label_sets`: :class:`LabelSets`, padded label sets (the generator's condition).
* :mod:`.networks`: two-layer conditional MLPs (generator, critic, encoder).
* :mod:`.amp_linear`: :class:`AmpLinear`, linear layers with persistent bf16 buffers under autocast.
* :mod:`.amp_adam`: :class:`AmpAdam`, Adam with a one-pass update of ``AmpLinear`` weights.
* :mod:`.fusion`: ALF / FLF / CLF generators (:class:`MultiLabelGenerator`).
* :mod:`.losses`: WGAN-GP, f-VAEGAN and classifier losses.
* :mod:`.scaling`: :class:`FeatureScaler` (min-max to [0, 1]).
* :mod:`.settings`: :class:`SynthesisSettings` (the ``cfg.SYNTHESIS`` keys) and their checks.
* :mod:`.trainer`: :class:`SynthesisTrainer` (the training loop and synthesis), with
  :mod:`.checkpoint` (files, class-embeddings fingerprint), :mod:`.selection` (the ridge-probe
  validation), :mod:`.metrics_log` (``metrics.jsonl``) and :mod:`.distributed` (devices, ranks).
* :mod:`.classifiers`: :func:`train_multilabel_classifier` (final f_z / f_gz heads).
* :mod:`.label_sampling`: label sets to synthesize (explicit, co-occurrence + nearest unseen).
* :mod:`.alignment` / :mod:`.anchoring`: synthesized features mapped towards real ones (per-dimension
  quantiles or zero share) / moved onto real seen RoIs (``x_s + G(L, z) - G({s}, z)``), for the box classifier.

Typical use::

    trainer = SynthesisTrainer.from_config(cfg, class_embeddings, feature_dim, output_dir)
    trainer.fit(TensorFeatureSource(seen_feats, seen_labels))      # carves its validation split
    feats, labels = trainer.synthesize(unseen_label_sets(unseen_ids), num_per_set=250, seed=0)

Nothing here is registered in a detectron2 registry.
"""
from ..data.feature_source import FeatureSource, TensorFeatureSource
from ..data.seeded_rng import derive_seed
from .amp_adam import AmpAdam
from .amp_linear import AmpLinear
from .classifiers import fit_linear_multilabel, fit_module, train_multilabel_classifier
from .fusion import FUSIONS, CrossLevelFusion, MultiLabelGenerator, SetIndex, index_label_sets
from .label_sampling import nearest_unseen, sample_label_sets, unseen_label_sets
from .label_sets import LabelSets
from .scaling import FeatureScaler
from .checkpoint import load_checkpoint
from .settings import GANS, SynthesisSettings
from .trainer import SynthesisTrainer

__all__ = [
    "AmpAdam",
    "AmpLinear",
    "LabelSets",
    "FeatureSource",
    "TensorFeatureSource",
    "derive_seed",
    "FeatureScaler",
    "FUSIONS",
    "GANS",
    "SetIndex",
    "index_label_sets",
    "CrossLevelFusion",
    "MultiLabelGenerator",
    "SynthesisSettings",
    "SynthesisTrainer",
    "load_checkpoint",
    "train_multilabel_classifier",
    "fit_linear_multilabel",
    "fit_module",
    "unseen_label_sets",
    "sample_label_sets",
    "nearest_unseen",
]
