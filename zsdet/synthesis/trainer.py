"""The multi-label feature-synthesis trainer shared by detection and classification.

:class:`SynthesisTrainer` trains a fusion generator (ALF / FLF / CLF) in f-CLSWGAN or f-VAEGAN on a
:class:`~zsdet.data.feature_source.FeatureSource` of seen features (x (B, d) float32, y (B, C)
multi-hot), keeps the epoch that :mod:`.selection` scores best, and synthesizes features for any
label sets. A generator iteration (official Generative_MLZSL semantics) is ``CRITIC_ITERS`` critic
steps on fresh real batches, then one generator step on the last one (f-CLSWGAN: ``-E[D(x~)] +
CLS_WEIGHT * BCE(f_cls(x~), y)``, f_cls a frozen linear head fitted on the real seen features;
f-VAEGAN: ``recon + KL + GAMMA_G * -E[D(x~)]``, critic loss scaled by GAMMA_D; either + the
semantic cycle term of :mod:`.semantic_cycle` when ``SEMANTIC_WEIGHT > 0``). An epoch is
``CRITIC_ITERS`` passes over the source; samples without a usable label set are dropped and every
batch refilled to BATCH_SIZE. Training stops after ``PATIENCE`` epochs without improvement, counted
once the validation score has first beaten the first epoch's: a GAN whose score stays flat for its
first epochs is not stopped with its first epoch's generator (the run trains on, and warns if the first
epoch is still the best at the end).

Files in ``output_dir`` (rank 0): ``last_checkpoint.pth``, ``model_best.pth`` (:mod:`.checkpoint`),
``metrics.jsonl`` and ``tensorboard/`` (:mod:`.metrics_log`). Randomness is re-derived from
``(SEED, epoch, rank)`` at every epoch and the data order is a function of ``(SEED, epoch)``, so a
resumed run continues exactly as an uninterrupted one. Under detectron2's ``launch`` each rank
trains on its share of every group of batches (:mod:`.distributed`); ``BATCH_SIZE`` is the batch of
a step over all ranks (as detectron2's ``IMS_PER_BATCH``), so a run does the same steps with the
same effective batch on any number of GPUs, and rank 0's validation score decides for all.
"""
import logging
import os
import time
from contextlib import nullcontext
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from detectron2.utils import comm
from tqdm import tqdm

from ..data.feature_source import FeatureSource, check_finite, every_sample
from ..data.seeded_rng import INIT_KEY, VAL_KEY, derive_seed
from ..utils.ranks import from_main, run_on_main
from . import checkpoint
from .amp_adam import AmpAdam
from .checkpoint import BEST, CHECKPOINT, embeddings_record
from .classifiers import fit_linear_multilabel
from .distributed import per_rank_batch, resolve_device, step_groups, wrap_for_ranks
from .fusion import MultiLabelGenerator, index_label_sets
from .label_sets import LabelSets
from .losses import critic_loss, generator_adversarial_loss, mode_seeking_penalty, multilabel_bce, vae_loss
from .metrics_log import STAT_NAMES, MetricsLog, TimedIterator
from .networks import Critic, Encoder
from .scaling import FeatureScaler
from .selection import probe_map, validation_set
from .semantic_cycle import fit_semantic_regressor, semantic_cycle_loss, unseen_singles
from .settings import AMP_DTYPES, SynthesisSettings, check_synthesis_config

__all__ = ["SynthesisTrainer"]

logger = logging.getLogger(__name__)

NOISE_BLOCK = 4096  # rows of synthesis noise drawn per generator seed


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
            embeddings (:func:`~zsdet.synthesis.checkpoint.embeddings_fingerprint`).
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
        self.embeddings = embeddings_record(emb, class_names, embeddings_source)
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
                settings.clf_ff_hidden, settings.clf_dropout, settings.output_activation, clf_input=settings.clf_input,
                clf_init=settings.clf_init, branch_noise=settings.clf_branch_noise).to(self.device)
            self.critic = Critic(self.feature_dim, self.emb_dim, settings.disc_hidden).to(self.device)
            self.encoder = (Encoder(self.feature_dim, self.emb_dim, settings.enc_hidden,
                                    self.generator.input_noise_dim).to(self.device)
                            if settings.gan == "fvaegan" else None)
        # fused: one pass over the state; AmpAdam: one pass for bf16-trained AmpLinear weights too
        adam = dict(lr=settings.lr, betas=tuple(settings.betas), fused=True)
        self.opt_g = AmpAdam(self.generator, **adam)
        self.opt_d = AmpAdam(self.critic, **adam)
        self.opt_e = AmpAdam(self.encoder, **adam) if self.encoder is not None else None
        self.seen_classes = None  # public: (S,) int64 classes with a positive in the training split
        self.train_sets = None  # public: LabelSets of the usable training samples (CPU), e.g. for sample_label_sets
        self.seen_classifier = None  # f_cls (f-CLSWGAN)
        self.semantic_regressor = None  # R: x -> e of the semantic cycle term (SEMANTIC_WEIGHT > 0)
        self.best = {"score": float("-inf"), "epoch": -1, "bad_epochs": 0}
        self.skipped = 0  # samples of the current pass / epoch without usable label set
        self._val = None
        self._unseen_singles = None  # LabelSets of the unseen singles of G's unseen terms (cycle, f_cls), or None
        self._unseen_singles_emb = None  # (n_u, a) their embeddings on the device

    @classmethod
    def from_config(cls, cfg, class_embeddings, feature_dim: int, output_dir: str, device=None, *,
                    class_names: Optional[Sequence[str]] = None, embeddings_source: str = "") -> "SynthesisTrainer":
        """Build from ``cfg.SYNTHESIS`` (checked by :func:`check_synthesis_config`); ``device`` overrides
        ``SYNTHESIS.DEVICE``; ``class_names`` and ``embeddings_source`` as in the constructor."""
        emb = torch.as_tensor(class_embeddings)
        return cls(check_synthesis_config(cfg, feature_dim, emb.shape[-1]), emb, feature_dim, output_dir,
                   device if device is not None else (cfg.SYNTHESIS.DEVICE or None),
                   class_names=class_names, embeddings_source=embeddings_source)

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _wrap_models(self) -> None:
        """``self.G / D / E``: the trained modules, in DistributedDataParallel when several ranks run."""
        self.G, self.D, self.E = (wrap_for_ranks(m, self.device) for m in (self.generator, self.critic, self.encoder))

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
        """One pass over every sample (:func:`every_sample`, not an epoch's subset): fit the scaler,
        collect the training label sets and seen classes; then pre-train f_cls."""
        sets, seen = [], torch.zeros(self.num_classes, dtype=torch.bool)
        for x, y in tqdm(every_sample(train, 4096, self.s.seed), desc="synthesis: scan training data",
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
        if self.s.semantic_weight > 0:
            self._fit_semantic_regressor(train)

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

    def _fit_semantic_regressor(self, train: FeatureSource) -> None:
        def batches():
            for x, y in every_sample(train, 4096, self.s.seed):
                batch = self._usable(x, y)
                if batch is not None:
                    index = index_label_sets(LabelSets.from_multi_hot(batch[1]), self.num_classes).to(self.device)
                    yield self.scaler.transform(batch[0].to(self.device)), self.generator.mean_embedding(index)
        self.semantic_regressor = fit_semantic_regressor(batches, self.feature_dim, self.emb_dim, self.device)

    @property
    def unseen_classes(self) -> torch.Tensor:
        """(U,) int64 CPU: the class ids without a positive in the training split."""
        unseen = torch.ones(self.num_classes, dtype=torch.bool)
        unseen[self.seen_classes] = False
        return unseen.nonzero()[:, 0]

    # ------------------------------------------------------------------ checkpoints
    def trained_modules(self) -> Dict[str, torch.nn.Module]:
        """The networks of a training checkpoint, by name."""
        models = {"generator": self.generator, "critic": self.critic, "encoder": self.encoder,
                  "seen_classifier": self.seen_classifier, "semantic_regressor": self.semantic_regressor}
        return {name: m for name, m in models.items() if m is not None}

    def optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        """The optimizers of a training checkpoint, by name."""
        opts = {"generator": self.opt_g, "critic": self.opt_d, "encoder": self.opt_e}
        return {name: o for name, o in opts.items() if o is not None}

    def _save_checkpoint(self, epoch: int) -> None:
        checkpoint.save_last(self, epoch)

    def load_best(self, path: Optional[str] = None) -> Dict:
        """Load the selected generator and feature scaler (``output_dir/model_best.pth`` by default).

        Returns:
            {"epoch": selected epoch, "score": its validation mAP (nan without validation)}.
        Raises:
            FileNotFoundError / ValueError: missing, corrupt or incompatible file (named).
        """
        return checkpoint.load_best(self, path or os.path.join(self.output_dir, BEST))

    # ------------------------------------------------------------------ training
    def fit(self, train: FeatureSource, val: Optional[FeatureSource] = None,
            background: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
            epoch_callback: Optional[Callable[[int], None]] = None) -> Dict[str, float]:
        """Train (or resume) for ``EPOCHS`` epochs with model selection; ends with the best generator loaded.

        Args:
            train: seen training features. When ``val`` is None and ``VAL_FRACTION > 0`` the
                validation split is carved from it with ``train.split(VAL_FRACTION, SEED)``.
            val: held-out real seen features for model selection (never test data).
            background: optional real background features (probe rows (b, d), held-out rows
                (b', d), data units) for the selection probe (:mod:`.selection`).
            epoch_callback: called with the epoch after each epoch (e.g. to score the generator of
                every epoch; training does not depend on what it does with the trainer).
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
        logger.info("synthesis: SYNTHESIS.BATCH_SIZE %d is the batch of a step over all %d processes: %d "
                    "samples each, the same steps as on one process", self.s.batch_size,
                    comm.get_world_size(), per_rank_batch(self.s.batch_size))
        start, last = 0, os.path.join(self.output_dir, CHECKPOINT)
        if self.s.resume and from_main(os.path.exists(last)):  # one decision: every rank resumes or none
            start = checkpoint.restore_last(self, last)
            logger.info("synthesis: resuming from %s at epoch %d", last, start)
        else:
            self._prepare(train)
        if val is not None:
            self._val = validation_set(val, self.s.val_max_samples, self.s.val_synth_sets, self.s.seed,
                                       self.train_sets, self.seen_classes, self.scaler, self.device, background)
        unseen_terms = (self.s.semantic_weight > 0 and self.s.semantic_unseen) or self.s.unseen_cls_weight > 0
        if unseen_terms and len(self.unseen_classes):  # UNSEEN_CLS_WEIGHT > 0 is refused with fvaegan
            self._unseen_singles = unseen_singles(self.unseen_classes, per_rank_batch(self.s.batch_size))
            self._unseen_singles_emb = self.generator.class_embeddings[self._unseen_singles.idx[:, 0].to(self.device)]
        self._wrap_models()
        log = MetricsLog(self.output_dir, keep_epochs_below=start) if comm.is_main_process() else None
        seen_dev = self.seen_classes.to(self.device)
        done = start  # epochs completed
        for epoch in range(start, self.s.epochs):
            if self.s.patience and self.best["bad_epochs"] >= self.s.patience:
                break
            tic = time.perf_counter()
            metrics = self._train_epoch(train, epoch, seen_dev)
            # rank 0's score decides selection and early stopping on every rank (GPU kernels are not
            # deterministic: ranks' own scores may differ, and ranks that disagree would hang)
            score = run_on_main(self.validate) if val is not None else float("nan")
            if val is None or score > self.best["score"]:
                self.best.update(score=score, epoch=epoch, bad_epochs=0)
                if comm.is_main_process():
                    checkpoint.save_best(self, epoch, score)
            elif self.best["epoch"] > 0:  # patience counts once the score has beaten the first epoch's
                self.best["bad_epochs"] += 1
            metrics.update(epoch=epoch, val_map=score, best_epoch=self.best["epoch"], sec=time.perf_counter() - tic,
                           skipped_samples=self.skipped)
            if comm.is_main_process():
                log.write(metrics)
                self._save_checkpoint(epoch)
            done = epoch + 1
            logger.info("synthesis epoch %d: %s", epoch, {k: round(v, 4) for k, v in metrics.items()})
            if epoch_callback is not None:
                epoch_callback(epoch)
        if log is not None:
            log.close()
        comm.synchronize()
        if val is not None and done > 1 and self.best["epoch"] == 0:
            logger.warning("synthesis: the validation score never beat the first epoch's in %d epochs; the "
                           "generator kept is the first epoch's (see the feature-quality report's spread and "
                           "probe before using it; more EPOCHS may help)", done)
        self.load_best()
        return {"best_epoch": self.best["epoch"], "best_val_map": self.best["score"], "epochs_run": done,
                "stopped_early": done < self.s.epochs}

    def _to_device(self, *tensors):
        pin = self.device.type == "cuda"
        return [t.pin_memory().to(self.device, non_blocking=True) if pin else t.to(self.device) for t in tensors]

    def _train_epoch(self, train: FeatureSource, epoch: int, seen_dev: torch.Tensor) -> Dict[str, float]:
        rank = comm.get_rank()
        self.skipped = 0
        torch.manual_seed(derive_seed(self.s.seed, epoch, rank, 1))  # dropout masks
        gen = torch.Generator(self.device).manual_seed(derive_seed(self.s.seed, epoch, rank))
        sums = torch.zeros(len(STAT_NAMES), device=self.device)
        steps = 0
        for m in self.trained_modules().values():
            m.train()
        groups = TimedIterator(step_groups(train, epoch, self.s, self._usable))
        for group in tqdm(groups, total=len(train) // self.s.batch_size, desc=f"synthesis epoch {epoch}",
                          disable=not comm.is_main_process(), leave=False):
            sums += self._iteration(group, gen, seen_dev)
            steps += 1
        if steps == 0:
            raise ValueError(f"epoch {epoch}: no generator step (fewer than CRITIC_ITERS batches of BATCH_SIZE "
                             "usable training samples)")
        return dict(zip(STAT_NAMES, (sums / steps).tolist()), iterations=steps, data_sec=groups.seconds)

    def _iteration(self, group, gen: torch.Generator, seen_dev: torch.Tensor) -> torch.Tensor:
        """One generator iteration on K CPU batches; returns the (len(STAT_NAMES),) stats vector."""
        s = self.s
        sets = [LabelSets.from_multi_hot(y) for _, y in group]
        critic_index = index_label_sets(LabelSets.cat(sets), self.num_classes)
        last = sets[-1]
        two_samples = s.gan == "fvaegan" or s.mode_seeking_weight > 0  # two generator samples per set
        # the generator call's sets: the last batch's (twice for two samples), then the unseen singles
        # of the unseen terms, in one call (one forward per backward under DDP)
        unseen = self._unseen_singles
        g_index = index_label_sets(LabelSets.cat([last] * (1 + two_samples) + ([unseen] if unseen else [])),
                                   self.num_classes)
        sizes = [len(x) for x, _ in group]
        x_all, y_last = self._to_device(torch.cat([x for x, _ in group]), group[-1][1])
        if self.device.type == "cuda":
            critic_index, g_index = critic_index.pin_memory(), g_index.pin_memory()
        critic_index = critic_index.to(self.device, non_blocking=True)
        g_index = g_index.to(self.device, non_blocking=True)
        x_all = self.scaler.transform(x_all)
        e_mu_all = self.generator.mean_embedding(critic_index)
        x, e_mu = x_all[-sizes[-1]:], e_mu_all[-sizes[-1]:]  # the generator step's batch
        n_u = len(unseen) if unseen else 0
        e_u = self._unseen_singles_emb if n_u else e_mu[:0]  # (n_u, a)

        # Every generator forward of this iteration uses the same weights G_t, and none depends on D:
        # run them first, in one autocast region (G's weights are cast to bf16 once). The critic
        # steps' features come from ONE batched no-grad call; the generator step's features keep
        # their graph until D, updated by the critic steps, scores them.
        with self._autocast():
            with torch.no_grad():
                fake_all = self.generator(self._noise(len(x_all), gen), critic_index, e_mu_all)
            if s.gan == "fclswgan" and not s.mode_seeking_weight:
                fake, fake_u = self.G(self._noise(len(x) + n_u, gen), g_index,
                                      torch.cat([e_mu, e_u])).split([len(x), n_u])
            elif s.gan == "fclswgan":  # two samples of the same sets for the mode-seeking term, in one call
                z, z_2 = self._noise(len(x), gen), self._noise(len(x), gen)
                fake, fake_2, fake_u = self.G(torch.cat([z, z_2, self._noise(n_u, gen)]), g_index,
                                              torch.cat([e_mu, e_mu, e_u])).split([len(x), len(x), n_u])
            else:  # reconstruction from the encoder's z and a prior sample, in one generator call
                mu, log_var = self.E(x, e_mu)
                z_enc = self._noise(len(x), gen) * torch.exp(0.5 * log_var.float()) + mu.float()
                recon, fake, fake_u = self.G(torch.cat([z_enc, self._noise(len(x) + n_u, gen)]), g_index,
                                             torch.cat([e_mu, e_mu, e_u])).split([len(x), len(x), n_u])

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
            if s.mode_seeking_weight:
                loss_g = loss_g + s.mode_seeking_weight * mode_seeking_penalty(fake, fake_2, z, z_2)
            cycle = zero
            if self.semantic_regressor is not None:  # seen rows' term + unseen singles' term
                cycle = semantic_cycle_loss(self.semantic_regressor, fake, e_mu, s.semantic_floor)
                if n_u and s.semantic_unseen:
                    cycle = cycle + semantic_cycle_loss(self.semantic_regressor, fake_u, e_u, s.semantic_floor)
                loss_g = loss_g + s.semantic_weight * cycle
            unseen_cls = zero
            if n_u and s.unseen_cls_weight > 0:  # f_cls's BCE with every seen label 0: an unseen class is no seen class
                logits_u = self.seen_classifier(fake_u)
                unseen_cls = multilabel_bce(logits_u, torch.zeros_like(logits_u))
                loss_g = loss_g + s.unseen_cls_weight * unseen_cls
        self.opt_g.zero_grad(set_to_none=True)
        if self.opt_e is not None:
            self.opt_e.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        if self.opt_e is not None:
            self.opt_e.step()
        self.critic.requires_grad_(True)
        d_stats = d_stats / len(sizes)
        return torch.cat([d_stats, torch.stack([loss_g, adv, cls, rec, kl, cycle, unseen_cls]).detach()])

    def _noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.generator.input_noise_dim, device=self.device, generator=gen)

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
        """Train-on-synthetic / test-on-real mAP in [0, 1] over the seen classes (:mod:`.selection`)."""
        sets = self._val.sets
        feats = self._generate(sets, 1, derive_seed(self.s.seed, VAL_KEY), inverse=False).to(self.device)
        labels = sets.to_multi_hot(self.num_classes)[:, self.seen_classes].to(self.device)
        return probe_map(feats, labels, self._val, self.s.val_ridge)

