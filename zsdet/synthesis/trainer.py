"""The multi-label feature-synthesis trainer shared by detection and classification.

:class:`SynthesisTrainer` trains a fusion generator (ALF / FLF / CLF) in f-CLSWGAN or f-VAEGAN on
streamed seen features, selects the best epoch on a validation split of the seen training data,
and synthesizes features for arbitrary label sets.

One generator iteration (official Generative_MLZSL ``train.py`` semantics):

1. ``CRITIC_ITERS`` critic steps, each on a fresh real batch with fresh noise. The generator does
   not change during them, so its outputs for all critic batches come from ONE no-grad batched
   call before the steps (same values, fewer and larger matrix products). The generator step's
   own generator forward (which does not involve D) runs right after it. Under bf16 autocast the
   layers (:class:`~zsdet.synthesis.amp_linear.AmpLinear`) keep persistent bf16 weights and
   weight gradients, which :class:`~zsdet.synthesis.amp_adam.AmpAdam` reads and refreshes in its
   one-pass update.
2. One generator step on the last critic batch: f-CLSWGAN ``-E[D(x~)] + CLS_WEIGHT * BCE(f_cls(x~), y)``
   (eq. 7, f_cls a linear head pre-trained on the real seen features and frozen); f-VAEGAN
   ``recon + KL + GAMMA_G * -E[D(x~)]`` with the encoder's ``z`` for the reconstruction and prior
   noise for the adversarial term, both in one generator call; the critic loss is scaled by GAMMA_D.

An epoch runs ``CRITIC_ITERS`` passes over the training source (pass ids ``epoch * CRITIC_ITERS + j``),
i.e. about ``n / BATCH_SIZE`` generator steps, as the official loop; samples without a usable label
set are dropped and every batch refilled to BATCH_SIZE (constant shapes). All index bookkeeping for
label sets happens on the CPU before the batch is moved, so an iteration has no host-device sync.

Model selection ("train on synthetic, test on real"): after each epoch, one feature is synthesized
for each of ``VAL_SYNTH_SETS`` label sets drawn once from the training split (fixed noise seed),
a linear ridge-regression probe is fitted on them in closed form (:func:`ridge_probe_scores`), and its mAP (``zsdet.evaluation.mean_average_precision``,
standard convention, seen classes) on the held-out real seen features is the epoch's score. The
best epoch's generator is ``model_best.pth``; training stops after ``PATIENCE`` epochs without
improvement. Without a validation split every epoch is "best" (the last one is kept).

Files in ``output_dir`` (written by rank 0 only): ``last_checkpoint.pth`` (atomic, every epoch:
models, optimizers, feature scaler, training label sets, selection state), ``model_best.pth``
(generator + scaler), ``metrics.jsonl`` (one JSON object per epoch) and TensorBoard events in
``tensorboard/``. Randomness is re-derived from ``(SEED, epoch, rank)`` at every epoch start and the
data order is a pure function of ``(SEED, epoch)``, so a run killed and resumed from its last
checkpoint continues exactly as an uninterrupted run. Both checkpoints hold the fingerprint of the
class embeddings (:func:`embeddings_fingerprint`) and the file they came from: loading one with other
embeddings (values, class list or dimension) is an error naming both files; a checkpoint without a
fingerprint (written by an older zsdet) is used with a warning.

Several GPUs / machines: under detectron2's ``launch`` (torch.distributed initialised) G, D and E
are wrapped in ``DistributedDataParallel``; each rank takes its share of every group of batches
(a source with ``iter_rank_batches``, e.g. the RoI bank's, reads only that share: :func:`shards_by_rank`).
"""
import dataclasses
import hashlib
import json
import logging
import os
import time
from contextlib import nullcontext
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from detectron2.utils import comm
from detectron2.utils.events import EventStorage, TensorboardXWriter
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..data.feature_source import FeatureSource, check_finite
from ..data.seeded_rng import INIT_KEY, VAL_KEY, derive_seed
from ..evaluation import mean_average_precision
from ..utils.io import write_text, write_torch
from .amp_adam import AmpAdam
from .amp_linear import set_grad_mode
from .classifiers import fit_linear_multilabel
from .fusion import FUSIONS, MultiLabelGenerator, index_label_sets
from .label_sets import LabelSets
from .losses import RECON_LOSSES, critic_loss, generator_adversarial_loss, multilabel_bce, vae_loss
from .networks import OUTPUT_ACTIVATIONS, Critic, Encoder
from .scaling import SCALINGS, FeatureScaler

__all__ = ["SynthesisSettings", "SynthesisTrainer", "GANS", "AMP_DTYPES", "embeddings_fingerprint"]

logger = logging.getLogger(__name__)

GANS = ("fclswgan", "fvaegan")
AMP_DTYPES = {"none": None, "bfloat16": torch.bfloat16}
CHECKPOINT = "last_checkpoint.pth"
BEST = "model_best.pth"
METRICS = "metrics.jsonl"
FORMAT = 2  # 2: generator / encoder first layer stored as one fc1 over [z; e]
NOISE_BLOCK = 4096  # rows of synthesis noise drawn per generator seed
# settings that may change between a run and its resumption
RESUMABLE_CHANGES = {"epochs", "patience", "resume", "synth_batch_size"}


@dataclasses.dataclass
class SynthesisSettings:
    """Hyper-parameters of :class:`SynthesisTrainer`; field ``x`` is config key ``SYNTHESIS.X``
    (see ``zsdet/config.py`` for each meaning)."""

    fusion: str = "clf"
    gan: str = "fclswgan"
    noise_dim: int = 0
    gen_hidden: int = 4096
    disc_hidden: int = 4096
    enc_hidden: int = 4096
    clf_heads: int = 8
    clf_ff_hidden: int = 8192
    clf_dropout: float = 0.1
    output_activation: str = "sigmoid"
    feature_scaling: str = "minmax"
    lr: float = 1e-4
    betas: Tuple[float, float] = (0.5, 0.999)
    critic_iters: int = 5
    lambda_gp: float = 10.0
    cls_weight: float = 0.1
    cls_pretrain_epochs: int = 5
    cls_pretrain_lr: float = 1e-3
    cls_pretrain_batch_size: int = 300
    gamma_d: float = 10.0
    gamma_g: float = 10.0
    vae_recon: str = "bce"
    epochs: int = 50
    batch_size: int = 64
    max_set_size: int = 10
    amp_dtype: str = "none"
    seed: int = 3483
    resume: bool = True
    val_fraction: float = 0.1
    val_max_samples: int = 5000
    val_synth_sets: int = 2000
    val_ridge: float = 0.1
    patience: int = 10
    synth_batch_size: int = 512

    @classmethod
    def from_config(cls, cfg) -> "SynthesisSettings":
        values = {f.name: cfg.SYNTHESIS[f.name.upper()] for f in dataclasses.fields(cls)}
        values["betas"] = tuple(values["betas"])
        return cls(**values)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the config key (``SYNTHESIS.X``) and the value of an invalid field."""
        def bad(field: str, expected: str):
            return ValueError(f"SYNTHESIS.{field.upper()} must be {expected}, got {getattr(self, field)!r}")

        for field, choices in (("fusion", FUSIONS), ("gan", GANS), ("amp_dtype", tuple(AMP_DTYPES)),
                               ("vae_recon", RECON_LOSSES), ("output_activation", OUTPUT_ACTIVATIONS),
                               ("feature_scaling", SCALINGS)):
            if getattr(self, field) not in choices:
                raise bad(field, f"one of {choices}")
        if self.gan == "fvaegan" and self.vae_recon == "bce" and self.output_activation != "sigmoid":
            raise ValueError("SYNTHESIS.VAE_RECON='bce' needs SYNTHESIS.OUTPUT_ACTIVATION='sigmoid' "
                             f"(got {self.output_activation!r}); use VAE_RECON='mse' otherwise")
        at_least_one = ["gen_hidden", "disc_hidden", "enc_hidden", "clf_heads", "clf_ff_hidden", "critic_iters",
                        "batch_size", "epochs", "synth_batch_size", "val_max_samples", "val_synth_sets"]
        if self.gan == "fclswgan":
            at_least_one += ["cls_pretrain_epochs", "cls_pretrain_batch_size"]
        for field in at_least_one:
            if getattr(self, field) < 1:
                raise bad(field, ">= 1")
        for field in ("noise_dim", "max_set_size", "patience", "lambda_gp", "cls_weight", "gamma_d", "gamma_g",
                      "val_ridge", "lr", "cls_pretrain_lr"):
            if not getattr(self, field) >= 0:
                raise bad(field, ">= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise bad("betas", "two numbers in [0, 1)")
        for field in ("clf_dropout", "val_fraction"):
            if not 0 <= getattr(self, field) < 1:
                raise bad(field, "in [0, 1)")

    def check_data(self, feature_dim: int, embed_dim: int) -> None:
        """Raise ``ValueError`` naming the key when the settings cannot work with features of
        ``feature_dim`` and class embeddings of ``embed_dim``."""
        if self.fusion == "clf" and feature_dim % self.clf_heads:
            raise ValueError(f"SYNTHESIS.CLF_HEADS must divide the feature dimension {feature_dim}, "
                             f"got {self.clf_heads}")


def shards_by_rank(source: FeatureSource) -> bool:
    """Whether training reads ``source.iter_rank_batches`` (several ranks and the source has it: each
    rank reads a disjoint share of every pass, equally many samples, all usable) instead of every
    rank reading the whole ``iter_batches`` stream and keeping its share of the batches."""
    return comm.get_world_size() > 1 and hasattr(source, "iter_rank_batches")


def resolve_device(name: Optional[str]) -> torch.device:
    """``name`` if given, else this rank's GPU when CUDA is available, else the CPU."""
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", comm.get_local_rank())
    return torch.device("cpu")


def embeddings_fingerprint(class_embeddings, class_names: Optional[Sequence[str]] = None) -> str:
    """sha256 (hex) of a (C, a) class-embedding matrix as float32 and of its class names, if given:
    equal fingerprints mean the same vectors for the same classes in the same order."""
    emb = torch.as_tensor(class_embeddings, dtype=torch.float32).detach().cpu().contiguous()
    digest = hashlib.sha256(str(tuple(emb.shape)).encode())
    digest.update(emb.numpy().astype("<f4").tobytes())
    if class_names is not None:
        digest.update("\n".join(class_names).encode("utf-8"))
    return digest.hexdigest()


def load_checkpoint(path: str, device) -> Dict:
    """Load a synthesis checkpoint; a truncated / foreign file raises ``ValueError`` naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"synthesis checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises RuntimeError / EOFError / UnpicklingError / zipfile errors
        raise ValueError(f"corrupt synthesis checkpoint {path} ({type(e).__name__}: {e}); delete it to restart") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a zsdet synthesis checkpoint of format {FORMAT} (found {found}); "
                         "retrain the generator (delete the file)")
    return state


class SynthesisTrainer:
    """Train and use a multi-label feature generator (see the module docstring).

    Args:
        settings: hyper-parameters.
        class_embeddings: (C, a) float embeddings of ALL classes (seen and unseen), rows indexed by
            class id; the label columns of the training data are the same C classes.
        feature_dim: d of the visual features.
        output_dir: checkpoints and metrics go here.
        device: torch device or name (default: ``resolve_device("")``).
        class_names: the C class names (rows of ``class_embeddings``), fingerprinted with the
            embeddings (:func:`embeddings_fingerprint`).
        embeddings_source: the file the embeddings were read from, stored in checkpoints and named
            when a checkpoint's embeddings differ from the current ones.
    """

    def __init__(self, settings: SynthesisSettings, class_embeddings, feature_dim: int, output_dir: str,
                 device=None, *, class_names: Optional[Sequence[str]] = None, embeddings_source: str = ""):
        settings.validate()
        emb = torch.as_tensor(class_embeddings, dtype=torch.float32)
        if emb.ndim != 2 or len(emb) == 0:
            raise ValueError(f"class embeddings must be a (C, a) matrix, got shape {tuple(emb.shape)}")
        check_finite(emb, "class embeddings")
        if class_names is not None and len(class_names) != len(emb):
            raise ValueError(f"{len(class_names)} class names for {len(emb)} class-embedding rows")
        self.embeddings = {"sha256": embeddings_fingerprint(emb, class_names), "source": embeddings_source,
                           "shape": list(emb.shape)}
        self.s = settings
        self.feature_dim = int(feature_dim)
        self.num_classes, self.emb_dim = emb.shape
        self.noise_dim = settings.noise_dim or self.emb_dim
        self.output_dir = output_dir
        self.device = resolve_device(str(device) if device is not None else "")
        self.amp_dtype = AMP_DTYPES[settings.amp_dtype]
        self.scaler = FeatureScaler(settings.feature_scaling)
        with torch.random.fork_rng(devices=[]):  # reproducible init without touching the caller's RNG
            torch.manual_seed(derive_seed(settings.seed, INIT_KEY))
            self.generator = MultiLabelGenerator(
                settings.fusion, emb, self.feature_dim, self.noise_dim, settings.gen_hidden, settings.clf_heads,
                settings.clf_ff_hidden, settings.clf_dropout, settings.output_activation).to(self.device)
            self.critic = Critic(self.feature_dim, self.emb_dim, settings.disc_hidden).to(self.device)
            self.encoder = (Encoder(self.feature_dim, self.emb_dim, settings.enc_hidden, self.noise_dim).to(self.device)
                            if settings.gan == "fvaegan" else None)
        # fused: one pass over the state; AmpAdam: one pass for bf16-trained AmpLinear weights too
        adam = dict(lr=settings.lr, betas=tuple(settings.betas), fused=True)
        self.opt_g = AmpAdam(self.generator, **adam)
        self.opt_d = AmpAdam(self.critic, **adam)
        self.opt_e = AmpAdam(self.encoder, **adam) if self.encoder is not None else None
        self.seen_classes = None  # public: (S,) int64 classes with a positive in the training split
        self.train_sets = None  # public: LabelSets of the usable training samples (CPU), e.g. for sample_label_sets
        self.seen_classifier = None  # f_cls (f-CLSWGAN)
        self.best = {"score": float("-inf"), "epoch": -1, "bad_epochs": 0}
        self.skipped = 0  # samples of the current pass / epoch without usable label set
        self._val = None

    @staticmethod
    def check_config(cfg, feature_dim: int, embed_dim: int) -> SynthesisSettings:
        """The settings of ``cfg.SYNTHESIS``, checked for features of ``feature_dim`` and class
        embeddings of ``embed_dim``: what :meth:`from_config` checks, callable before any work.

        Raises:
            ValueError: naming the key and its value (an invalid value, or ``SYNTHESIS.FEATURE_DIM``
                / ``EMBED_DIM`` set and different from the data's).
        """
        for key, expected, actual in (("FEATURE_DIM", cfg.SYNTHESIS.FEATURE_DIM, feature_dim),
                                      ("EMBED_DIM", cfg.SYNTHESIS.EMBED_DIM, embed_dim)):
            if expected and expected != actual:
                raise ValueError(f"SYNTHESIS.{key}={expected} but the data has {actual}")
        settings = SynthesisSettings.from_config(cfg)
        settings.validate()
        settings.check_data(feature_dim, embed_dim)
        return settings

    @classmethod
    def from_config(cls, cfg, class_embeddings, feature_dim: int, output_dir: str, device=None, *,
                    class_names: Optional[Sequence[str]] = None, embeddings_source: str = "") -> "SynthesisTrainer":
        """Build from ``cfg.SYNTHESIS`` (checked by :meth:`check_config`); ``device`` overrides
        ``SYNTHESIS.DEVICE``; ``class_names`` and ``embeddings_source`` as in the constructor."""
        emb = torch.as_tensor(class_embeddings)
        return cls(cls.check_config(cfg, feature_dim, emb.shape[-1]), emb, feature_dim, output_dir,
                   device if device is not None else (cfg.SYNTHESIS.DEVICE or None),
                   class_names=class_names, embeddings_source=embeddings_source)

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _wrap_models(self) -> None:
        """``self.G / D / E``: the trained modules, in DistributedDataParallel when several ranks run."""
        def wrap(module):
            if module is None or comm.get_world_size() == 1:
                return module
            set_grad_mode(module, "autograd")  # DDP reduces gradients from autograd hooks
            ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)
        self.G, self.D, self.E = (wrap(m) for m in (self.generator, self.critic, self.encoder))

    def _path(self, name: str) -> str:
        return os.path.join(self.output_dir, name)

    def _check_source(self, source: FeatureSource, what: str) -> None:
        if source.feature_dim != self.feature_dim:
            raise ValueError(f"{what} features have dim {source.feature_dim}, the trainer expects {self.feature_dim}")
        if source.num_classes != self.num_classes:
            raise ValueError(f"{what} labels have {source.num_classes} columns but the class-embedding matrix has "
                             f"{self.num_classes} rows")

    def _usable(self, x: torch.Tensor, y: torch.Tensor) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """Drop samples without label or with more than MAX_SET_SIZE labels (official); CPU."""
        check_finite(x, "training features")
        n = (y > 0).sum(1)
        keep = (n >= 1) & ((n <= self.s.max_set_size) if self.s.max_set_size else True)
        self.skipped += int((~keep).sum())
        return (x[keep], y[keep]) if bool(keep.any()) else None

    # ------------------------------------------------------------------ preparation
    def _prepare(self, train: FeatureSource) -> None:
        """One pass: fit the scaler, collect the training label sets and seen classes; pre-train f_cls."""
        sets, seen = [], torch.zeros(self.num_classes, dtype=torch.bool)
        for x, y in tqdm(train.iter_batches(4096, 0, self.s.seed), desc="synthesis: scan training data",
                         disable=not comm.is_main_process(), leave=False):
            batch = self._usable(x, y)
            if batch is None:
                continue
            self.scaler.partial_fit(batch[0])
            sets.append(LabelSets.from_multi_hot(batch[1]))
            seen |= batch[1].gt(0).any(0)
        if not sets:
            raise ValueError("the training source has no sample with 1..MAX_SET_SIZE positive labels")
        self.train_sets = LabelSets.cat(sets)
        self.seen_classes = seen.nonzero()[:, 0]
        self.scaler.to(self.device)
        if self.s.gan == "fclswgan":
            self._fit_seen_classifier(train)

    def _fit_seen_classifier(self, train: FeatureSource) -> None:
        def batches(epoch):
            for x, y in train.iter_batches(self.s.cls_pretrain_batch_size, epoch, self.s.seed):
                batch = self._usable(x, y)
                if batch is not None:
                    yield self.scaler.transform(batch[0].to(self.device)), batch[1][:, self.seen_classes]
        self.seen_classifier = fit_linear_multilabel(
            batches, self.feature_dim, len(self.seen_classes), epochs=self.s.cls_pretrain_epochs,
            lr=self.s.cls_pretrain_lr, seed=self.s.seed, device=self.device, desc="seen classifier f_cls")
        self.seen_classifier.requires_grad_(False)

    def _prepare_validation(self, val: FeatureSource) -> None:
        xs, ys, n = [], [], 0
        for x, y in val.iter_batches(4096, 0, self.s.seed):
            check_finite(x, "validation features")
            xs.append(x)
            ys.append(y)
            n += len(x)
            if n >= self.s.val_max_samples:
                break
        x, y = torch.cat(xs)[: self.s.val_max_samples], torch.cat(ys)[: self.s.val_max_samples]
        gen = torch.Generator().manual_seed(derive_seed(self.s.seed, VAL_KEY))
        rows = torch.randperm(len(self.train_sets), generator=gen)[: self.s.val_synth_sets]
        self._val = {"x": self.scaler.transform(x.to(self.device)), "y": (y[:, self.seen_classes] > 0).float(),
                     "sets": self.train_sets[rows]}

    # ------------------------------------------------------------------ checkpoints
    def _models(self) -> Dict[str, torch.nn.Module]:
        models = {"generator": self.generator, "critic": self.critic}
        if self.encoder is not None:
            models["encoder"] = self.encoder
        if self.seen_classifier is not None:
            models["seen_classifier"] = self.seen_classifier
        return models

    def _optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        opts = {"generator": self.opt_g, "critic": self.opt_d}
        if self.opt_e is not None:
            opts["encoder"] = self.opt_e
        return opts

    def _save_checkpoint(self, epoch: int) -> None:
        write_torch(self._path(CHECKPOINT), {
            "format": FORMAT, "epoch": epoch, "settings": dataclasses.asdict(self.s),
            "models": {k: m.state_dict() for k, m in self._models().items()},
            "optimizers": {k: o.state_dict() for k, o in self._optimizers().items()},
            "scaler": self.scaler.state_dict(), "train_sets": {"idx": self.train_sets.idx, "mask": self.train_sets.mask},
            "seen_classes": self.seen_classes, "best": dict(self.best), "embeddings": self.embeddings,
        })

    def _check_embeddings(self, state: Dict, path: str) -> None:
        """Refuse a checkpoint trained with other class embeddings (values, class list or dimension)."""
        saved = state.get("embeddings")
        current = self.embeddings
        if saved is None:
            logger.warning("%s has no class-embedding fingerprint (written before zsdet stored one): it is used "
                           "without checking that it was trained with the current embeddings %s", path,
                           current["source"] or "")
        elif saved["sha256"] != current["sha256"]:
            def describe(e):
                shape = "x".join(map(str, e["shape"]))
                return f"{e['source'] or '(file not recorded)'} ({shape}, sha256 {e['sha256'][:12]})"
            raise ValueError(f"{path} was trained with the class embeddings {describe(saved)}, but the current ones "
                             f"are {describe(current)}: other values, classes or dimension. Point the embeddings "
                             f"file back at the first, or retrain the generator (delete {self.output_dir} or use "
                             "a new OUTPUT_DIR)")

    def _restore(self, state: Dict, path: str) -> int:
        self._check_embeddings(state, path)
        saved = state["settings"]
        saved["betas"] = tuple(saved["betas"])
        changed = sorted(k for k, v in dataclasses.asdict(self.s).items()
                         if k not in RESUMABLE_CHANGES and saved.get(k) != v)
        if changed:
            raise ValueError(f"{path} was written with different settings ({', '.join(k.upper() for k in changed)}); "
                             "use a new OUTPUT_DIR or SYNTHESIS.RESUME=False")
        self.scaler.load_state_dict(state["scaler"])
        self.scaler.to(self.device)
        self.train_sets = LabelSets(state["train_sets"]["idx"].cpu(), state["train_sets"]["mask"].cpu())
        self.seen_classes = state["seen_classes"].cpu()
        if "seen_classifier" in state["models"]:
            self.seen_classifier = torch.nn.Linear(self.feature_dim, len(self.seen_classes)).to(self.device)
            self.seen_classifier.requires_grad_(False)
        for k, m in self._models().items():
            m.load_state_dict(state["models"][k])
        for k, o in self._optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        self.best = dict(state["best"])
        return state["epoch"] + 1

    def _save_best(self, epoch: int, score: float) -> None:
        write_torch(self._path(BEST), {"format": FORMAT, "epoch": epoch, "score": score, "settings": dataclasses.asdict(self.s),
                     "generator": self.generator.state_dict(), "scaler": self.scaler.state_dict(),
                     "seen_classes": self.seen_classes, "embeddings": self.embeddings,
                     "train_sets": {"idx": self.train_sets.idx, "mask": self.train_sets.mask}})

    def load_best(self, path: Optional[str] = None) -> Dict:
        """Load the selected generator and feature scaler (``output_dir/model_best.pth`` by default).

        Returns:
            {"epoch": selected epoch, "score": its validation mAP (nan without validation)}.
        Raises:
            FileNotFoundError / ValueError: missing, corrupt or incompatible file (named).
        """
        path = path or self._path(BEST)
        state = load_checkpoint(path, self.device)
        self._check_embeddings(state, path)
        try:
            self.generator.load_state_dict(state["generator"])
        except RuntimeError as e:
            raise ValueError(f"{path} does not match this generator ({self.s.fusion}, d={self.feature_dim}, "
                             f"C={self.num_classes}): {e}") from e
        self.scaler.load_state_dict(state["scaler"])
        self.scaler.to(self.device)
        self.seen_classes = state["seen_classes"].cpu()
        self.train_sets = LabelSets(state["train_sets"]["idx"].cpu(), state["train_sets"]["mask"].cpu())
        return {"epoch": state["epoch"], "score": state["score"]}

    # ------------------------------------------------------------------ training
    def fit(self, train: FeatureSource, val: Optional[FeatureSource] = None) -> Dict[str, float]:
        """Train (or resume) for ``EPOCHS`` epochs with model selection; ends with the best generator loaded.

        Args:
            train: seen training features. When ``val`` is None and ``VAL_FRACTION > 0`` the
                validation split is carved from it with ``train.split(VAL_FRACTION, SEED)``.
            val: held-out real seen features for model selection (never test data).
        Returns:
            {"best_epoch", "best_val_map", "epochs_run", "stopped_early"}.
        """
        if val is None and self.s.val_fraction > 0:
            if not hasattr(train, "split"):
                raise ValueError(f"{type(train).__name__} has no split(); pass a validation source or set "
                                 "SYNTHESIS.VAL_FRACTION=0")
            train, val = train.split(self.s.val_fraction, self.s.seed)
        self._check_source(train, "training")
        if val is not None:
            self._check_source(val, "validation")
        os.makedirs(self.output_dir, exist_ok=True)
        start = 0
        if self.s.resume and os.path.exists(self._path(CHECKPOINT)):
            start = self._restore(load_checkpoint(self._path(CHECKPOINT), self.device), self._path(CHECKPOINT))
            logger.info("synthesis: resuming from %s at epoch %d", self._path(CHECKPOINT), start)
        else:
            self._prepare(train)
        if val is not None:
            self._prepare_validation(val)
        self._wrap_models()
        log = _MetricsLog(self.output_dir, keep_epochs_below=start) if comm.is_main_process() else None
        seen_dev = self.seen_classes.to(self.device)
        done = start  # epochs completed
        for epoch in range(start, self.s.epochs):
            if self.s.patience and self.best["bad_epochs"] >= self.s.patience:
                break
            tic = time.perf_counter()
            metrics = self._train_epoch(train, epoch, seen_dev)
            score = self.validate() if val is not None else float("nan")
            if val is None or score > self.best["score"]:
                self.best.update(score=score, epoch=epoch, bad_epochs=0)
                if comm.is_main_process():
                    self._save_best(epoch, score)
            else:
                self.best["bad_epochs"] += 1
            metrics.update(epoch=epoch, val_map=score, best_epoch=self.best["epoch"], sec=time.perf_counter() - tic,
                           skipped_samples=self.skipped)
            if comm.is_main_process():
                log.write(metrics)
                self._save_checkpoint(epoch)
            done = epoch + 1
            logger.info("synthesis epoch %d: %s", epoch, {k: round(v, 4) for k, v in metrics.items()})
        if log is not None:
            log.close()
        comm.synchronize()
        self.load_best()
        return {"best_epoch": self.best["epoch"], "best_val_map": self.best["score"], "epochs_run": done,
                "stopped_early": done < self.s.epochs}

    def _usable_batches(self, train: FeatureSource, epoch: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Batches of exactly BATCH_SIZE usable samples from the epoch's CRITIC_ITERS passes (CPU).

        Samples dropped by ``_usable`` are refilled from the following ones, so the matrix products
        keep their shapes from batch to batch (on the CPU oneDNN compiles a kernel for every new
        shape); an incomplete last batch is dropped. Every rank reads the same stream, unless the
        source shards itself (:func:`shards_by_rank`): then each rank reads only its own share.
        """
        k, bs = self.s.critic_iters, self.s.batch_size
        xs, ys, n = [], [], 0
        for j in range(k):
            passes = (train.iter_rank_batches(bs, epoch * k + j, self.s.seed, comm.get_rank(), comm.get_world_size())
                      if shards_by_rank(train) else train.iter_batches(bs, epoch * k + j, self.s.seed))
            for batch in passes:
                batch = self._usable(*batch)
                if batch is None:
                    continue
                xs.append(batch[0])
                ys.append(batch[1])
                n += len(batch[0])
                while n >= bs:
                    x, y = (xs[0], ys[0]) if len(xs) == 1 else (torch.cat(xs), torch.cat(ys))
                    yield x[:bs], y[:bs]
                    n -= bs
                    xs, ys = ([x[bs:]], [y[bs:]]) if n else ([], [])  # no empty piece: no copy when all usable

    def _groups(self, train: FeatureSource, epoch: int) -> Iterator[List[Tuple[torch.Tensor, torch.Tensor]]]:
        """This rank's groups of CRITIC_ITERS full batches of usable samples, one group per generator
        step; every rank gets the same number of groups (DDP needs equal step counts)."""
        k, world, rank = self.s.critic_iters, comm.get_world_size(), comm.get_rank()
        if shards_by_rank(train):  # this rank's own stream: all of its batches are its share
            world, rank = 1, 0
        chunk = []
        for batch in self._usable_batches(train, epoch):
            chunk.append(batch)
            if len(chunk) == k * world:
                yield chunk[rank * k:(rank + 1) * k]
                chunk = []

    def _to_device(self, *tensors):
        pin = self.device.type == "cuda"
        return [t.pin_memory().to(self.device, non_blocking=True) if pin else t.to(self.device) for t in tensors]

    def _train_epoch(self, train: FeatureSource, epoch: int, seen_dev: torch.Tensor) -> Dict[str, float]:
        rank = comm.get_rank()
        self.skipped = 0
        torch.manual_seed(derive_seed(self.s.seed, epoch, rank, 1))  # dropout masks
        gen = torch.Generator(self.device).manual_seed(derive_seed(self.s.seed, epoch, rank))
        sums = torch.zeros(len(_STAT_NAMES), device=self.device)
        steps = 0
        for m in self._models().values():
            m.train()
        total = len(train) // (self.s.batch_size * comm.get_world_size())
        for group in tqdm(self._groups(train, epoch), total=total, desc=f"synthesis epoch {epoch}",
                          disable=not comm.is_main_process(), leave=False):
            sums += self._iteration(group, gen, seen_dev)
            steps += 1
        if steps == 0:
            raise ValueError(f"epoch {epoch}: no generator step (fewer than CRITIC_ITERS * world_size batches of "
                             "usable training samples)")
        return dict(zip(_STAT_NAMES, (sums / steps).tolist()), iterations=steps)

    def _iteration(self, group, gen: torch.Generator, seen_dev: torch.Tensor) -> torch.Tensor:
        """One generator iteration on K CPU batches; returns the (len(_STAT_NAMES),) stats vector."""
        s = self.s
        sets = [LabelSets.from_multi_hot(y) for _, y in group]
        critic_index = index_label_sets(LabelSets.cat(sets), self.num_classes)
        last = sets[-1]
        g_index = index_label_sets(LabelSets.cat([last, last]) if s.gan == "fvaegan" else last, self.num_classes)
        sizes = [len(x) for x, _ in group]
        x_all, y_last = self._to_device(torch.cat([x for x, _ in group]), group[-1][1])
        if self.device.type == "cuda":
            critic_index, g_index = critic_index.pin_memory(), g_index.pin_memory()
        critic_index = critic_index.to(self.device, non_blocking=True)
        g_index = g_index.to(self.device, non_blocking=True)
        x_all = self.scaler.transform(x_all)
        e_mu_all = self.generator.mean_embedding(critic_index)
        x, e_mu = x_all[-sizes[-1]:], e_mu_all[-sizes[-1]:]  # the generator step's batch

        # Every generator forward of this iteration uses the same weights G_t, and none depends on D:
        # run them first, in one autocast region (G's weights are cast to bf16 once). The critic
        # steps' features come from ONE batched no-grad call; the generator step's features keep
        # their graph until D, updated by the critic steps, scores them.
        with self._autocast():
            with torch.no_grad():
                fake_all = self.generator(self._noise(len(x_all), gen), critic_index, e_mu_all)
            if s.gan == "fclswgan":
                fake = self.G(self._noise(len(x), gen), g_index, e_mu)
            else:  # reconstruction from the encoder's z and a prior sample, in one generator call
                mu, log_var = self.E(x, e_mu)
                z_enc = self._noise(len(x), gen) * torch.exp(0.5 * log_var.float()) + mu.float()
                recon, fake = self.G(torch.cat([z_enc, self._noise(len(x), gen)]), g_index,
                                     e_mu.repeat(2, 1)).split(len(x))

        mix_all = torch.rand(len(x_all), device=self.device, generator=gen)
        d_stats = torch.zeros(3, device=self.device)
        start = 0
        for size in sizes:  # the K critic steps are sequential by definition (D changes)
            sl = slice(start, start + size)
            start += size
            with self._autocast():
                loss_d, wasserstein, gp = critic_loss(self.D, x_all[sl], fake_all[sl], e_mu_all[sl], mix_all[sl],
                                                      s.lambda_gp)
            if s.gan == "fvaegan":
                loss_d = s.gamma_d * loss_d
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            d_stats += torch.stack([loss_d.detach(), wasserstein, gp])

        # generator (+ encoder) step on the last critic batch, critic frozen
        self.critic.requires_grad_(False)
        zero = torch.zeros((), device=self.device)
        with self._autocast():
            adv = generator_adversarial_loss(self.critic(fake, e_mu))
            if s.gan == "fclswgan":
                cls = multilabel_bce(self.seen_classifier(fake), y_last[:, seen_dev])
                loss_g, rec, kl = adv + s.cls_weight * cls, zero, zero
            else:
                rec, kl = vae_loss(recon, x, mu, log_var, s.vae_recon)
                loss_g, cls = rec + kl + s.gamma_g * adv, zero
        self.opt_g.zero_grad(set_to_none=True)
        if self.opt_e is not None:
            self.opt_e.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        if self.opt_e is not None:
            self.opt_e.step()
        self.critic.requires_grad_(True)
        d_stats = d_stats / len(sizes)
        return torch.cat([d_stats, torch.stack([loss_g, adv, cls, rec, kl]).detach()])

    def _noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.noise_dim, device=self.device, generator=gen)

    def _synthesis_noise(self, start: int, n: int, seed: int) -> torch.Tensor:
        """Noise rows ``start .. start + n - 1`` of the stream ``seed``, independent of the batching:
        rows come in blocks of NOISE_BLOCK, block b drawn from ``derive_seed(seed, b)``."""
        first, last = start // NOISE_BLOCK, (start + n - 1) // NOISE_BLOCK
        blocks = [self._noise(NOISE_BLOCK, torch.Generator(self.device).manual_seed(derive_seed(seed, b)))
                  for b in range(first, last + 1)]  # one or two blocks per batch
        offset = start - first * NOISE_BLOCK
        return torch.cat(blocks)[offset:offset + n]

    # ------------------------------------------------------------------ validation and synthesis
    @torch.no_grad()
    def _generate(self, sets: LabelSets, num_per_set: int, seed: int, inverse: bool,
                  batch_size: Optional[int] = None) -> torch.Tensor:
        """Features (len(sets) * num_per_set, d) float32 on the CPU, set-major order."""
        if len(sets) == 0 or num_per_set < 1:
            raise ValueError(f"nothing to synthesize ({len(sets)} label sets, num_per_set={num_per_set})")
        if not self.scaler.fitted:
            raise RuntimeError("synthesize() before fit() or load_best(): the feature scaler is not fitted")
        sets = sets.to("cpu").repeat_each(num_per_set)
        was_training = self.generator.training
        self.generator.eval()
        out = torch.empty(len(sets), self.feature_dim)
        bs = batch_size or self.s.synth_batch_size
        with self._autocast():  # one region for all batches: bf16 weights are cast once and cached
            for start in range(0, len(sets), bs):  # loop over batches of sets
                index = index_label_sets(sets[start:start + bs], self.num_classes).to(self.device)
                feats = self.generator(self._synthesis_noise(start, len(index), seed), index)
                out[start:start + len(index)] = (self.scaler.inverse(feats) if inverse else feats).float().cpu()
        self.generator.train(was_training)
        return out

    def synthesize(self, label_sets: LabelSets, num_per_set: int, seed: int,
                   batch_size: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Synthesize ``num_per_set`` features for every label set.

        Args:
            label_sets: B sets of class ids (rows of the class-embedding matrix).
            num_per_set: features per set (each with its own noise).
            seed: fixes the noise (same seed, same features).
            batch_size: sets per generator call (default ``SYNTH_BATCH_SIZE``).
        Returns:
            feats: (B * num_per_set, d) float32 CPU features in the data's units (scaler inverted);
            multi_hot: (B * num_per_set, C) float32 labels. Set b's features are rows
            ``b * num_per_set ... (b + 1) * num_per_set - 1``.
        Raises:
            KeyError: a class id without an embedding row.
        """
        feats = self._generate(label_sets, num_per_set, seed, inverse=True, batch_size=batch_size)
        check_finite(feats, "synthesized features")
        return feats, label_sets.to("cpu").repeat_each(num_per_set).to_multi_hot(self.num_classes)

    def validate(self) -> float:
        """Train-on-synthetic / test-on-real mAP over the seen classes (module docstring)."""
        v = self._val
        feats = self._generate(v["sets"], 1, derive_seed(self.s.seed, VAL_KEY), inverse=False).to(self.device)
        labels = v["sets"].to_multi_hot(self.num_classes)[:, self.seen_classes].to(self.device)
        scores = ridge_probe_scores(feats, labels, v["x"], self.s.val_ridge)
        return mean_average_precision(scores.cpu(), v["y"])


def ridge_probe_scores(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, ridge: float) -> torch.Tensor:
    """Scores (m, K) of the ridge-regression linear head fitted on ``(train_x (n, d), train_y (n, K))``.

    ``W = argmin ||X_c W - Y_c||^2 + lam ||W||^2`` on centred data, ``lam = ridge * trace(X_c^T X_c) / d``,
    solved in closed form (dual form, an (n, n) system, when n < d) in float64: deterministic and
    free of the epochs / learning-rate choices an SGD probe would add to model selection.
    """
    x, y, t = train_x.double(), train_y.double(), test_x.double()
    mean = x.mean(0)
    x, y = x - mean, y - y.mean(0)
    lam = ridge * (x * x).sum() / x.shape[1] + 1e-12
    if len(x) < x.shape[1]:
        w = x.T @ torch.linalg.solve(x @ x.T + lam * torch.eye(len(x), dtype=x.dtype, device=x.device), y)
    else:
        w = torch.linalg.solve(x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype, device=x.device), x.T @ y)
    return ((t - mean) @ w).float()


_STAT_NAMES = ("loss_d", "wasserstein", "gradient_penalty", "loss_g", "adversarial", "classifier_bce",
               "reconstruction", "kl")


class _MetricsLog:
    """``metrics.jsonl`` (one line per epoch) plus TensorBoard scalars through detectron2's writer.

    On resume, lines of epochs >= ``keep_epochs_below`` (written after the last checkpoint) are dropped.
    """

    def __init__(self, output_dir: str, keep_epochs_below: int):
        self.path = os.path.join(output_dir, METRICS)
        lines = []
        if os.path.exists(self.path):
            with open(self.path) as f:
                lines = [ln for ln in f if ln.strip() and json.loads(ln)["epoch"] < keep_epochs_below]
        write_text(self.path, "".join(lines))
        self.tb = TensorboardXWriter(os.path.join(output_dir, "tensorboard"))

    def write(self, metrics: Dict[str, float]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        with EventStorage(start_iter=metrics["epoch"]) as storage:
            storage.put_scalars(smoothing_hint=False, **{
                f"synthesis/{k}": v for k, v in metrics.items() if k != "epoch" and v == v})
            self.tb.write()

    def close(self) -> None:
        self.tb.close()
