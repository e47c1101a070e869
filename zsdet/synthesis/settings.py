"""Hyper-parameters of the feature generator's training (:class:`SynthesisSettings`, the
``cfg.SYNTHESIS`` keys) and their checks, which name the config key and its value."""
import dataclasses
from typing import Tuple

import torch

from .fusion import BRANCH_NOISES, CLF_INITS, CLF_INPUTS, FUSIONS
from .losses import RECON_LOSSES
from .networks import OUTPUT_ACTIVATIONS
from .scaling import SCALINGS

__all__ = ["SynthesisSettings", "GANS", "AMP_DTYPES", "check_synthesis_config"]

GANS = ("fclswgan", "fvaegan")
AMP_DTYPES = {"none": None, "bfloat16": torch.bfloat16}


@dataclasses.dataclass
class SynthesisSettings:
    """Hyper-parameters of :class:`SynthesisTrainer`; field ``x`` is config key ``SYNTHESIS.X``
    (see ``zsdet/config.py`` for each meaning). A field's default is the behaviour of checkpoints
    written before the field existed."""

    fusion: str = "clf"
    gan: str = "fclswgan"
    noise_dim: int = 0
    gen_hidden: int = 4096
    disc_hidden: int = 4096
    enc_hidden: int = 4096
    clf_heads: int = 8
    clf_ff_hidden: int = 8192
    clf_dropout: float = 0.1
    clf_input: str = "activated"
    clf_init: str = "random"
    clf_branch_noise: str = "shared"
    mode_seeking_weight: float = 0.0
    semantic_weight: float = 0.0
    semantic_unseen: bool = True
    semantic_floor: bool = False
    unseen_cls_weight: float = 0.0
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
                               ("feature_scaling", SCALINGS), ("clf_input", CLF_INPUTS), ("clf_init", CLF_INITS),
                               ("clf_branch_noise", BRANCH_NOISES)):
            if getattr(self, field) not in choices:
                raise bad(field, f"one of {choices}")
        if self.gan == "fvaegan" and self.mode_seeking_weight:
            raise ValueError("SYNTHESIS.MODE_SEEKING_WEIGHT applies to GAN 'fclswgan' only, got "
                             f"{self.mode_seeking_weight!r} with 'fvaegan'")
        if self.gan == "fvaegan" and self.unseen_cls_weight:
            raise ValueError("SYNTHESIS.UNSEEN_CLS_WEIGHT applies to GAN 'fclswgan' only (its seen classifier "
                             f"f_cls), got {self.unseen_cls_weight!r} with 'fvaegan'")
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
                      "val_ridge", "lr", "cls_pretrain_lr", "mode_seeking_weight", "semantic_weight",
                      "unseen_cls_weight"):
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


def check_synthesis_config(cfg, feature_dim: int, embed_dim: int) -> SynthesisSettings:
    """The settings of ``cfg.SYNTHESIS``, checked for features of ``feature_dim`` and class
    embeddings of ``embed_dim``: what :meth:`SynthesisTrainer.from_config` checks, callable before
    any work.

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
