"""The generator's checkpoints: file format, class-embeddings fingerprint, saving and loading.

Files of a generator folder, written atomically by rank 0 (format ``FORMAT``):

* ``last_checkpoint.pth`` (every epoch, to resume): ``epoch``, ``settings``, ``models`` and
  ``optimizers`` (state dicts by name), ``scaler``, ``train_sets`` (``idx`` / ``mask`` of the
  training label sets), ``seen_classes`` (S,), ``best`` (selection state), ``embeddings``;
* ``model_best.pth`` (the selected epoch, to synthesize): ``epoch``, ``score``, ``settings``,
  ``generator``, ``scaler``, ``seen_classes``, ``train_sets``, ``embeddings``.

``embeddings`` is ``{"sha256": embeddings_fingerprint(...), "source": file, "shape": [C, a]}``:
loading a checkpoint with other class embeddings (values, class list or dimension) is an error
naming both files; a checkpoint without it (written by an older zsdet) is used with a warning.
"""
import dataclasses
import hashlib
import logging
import os
from typing import Dict, Optional, Sequence

import torch

from ..utils.io import write_torch
from .label_sets import LabelSets
from .semantic_cycle import SemanticRegressor
from .settings import SynthesisSettings

__all__ = ["CHECKPOINT", "BEST", "FORMAT", "embeddings_fingerprint", "embeddings_record", "check_embeddings_file",
           "load_checkpoint", "save_last", "restore_last", "save_best", "load_best"]

logger = logging.getLogger(__name__)

CHECKPOINT = "last_checkpoint.pth"
BEST = "model_best.pth"
FORMAT = 2  # 2: generator / encoder first layer stored as one fc1 over [z; e]
RESUMABLE_CHANGES = {"epochs", "patience", "resume", "synth_batch_size"}  # settings a resumed run may change


def embeddings_fingerprint(class_embeddings, class_names: Optional[Sequence[str]] = None) -> str:
    """sha256 (hex) of a (C, a) class-embedding matrix as float32 and of its class names, if given:
    equal fingerprints mean the same vectors for the same classes in the same order."""
    emb = torch.as_tensor(class_embeddings, dtype=torch.float32).detach().cpu().contiguous()
    digest = hashlib.sha256(str(tuple(emb.shape)).encode())
    digest.update(emb.numpy().astype("<f4").tobytes())
    if class_names is not None:
        digest.update("\n".join(class_names).encode("utf-8"))
    return digest.hexdigest()


def embeddings_record(class_embeddings: torch.Tensor, class_names: Optional[Sequence[str]], source: str) -> Dict:
    """The ``embeddings`` entry of a checkpoint for (C, a) ``class_embeddings`` read from ``source``."""
    return {"sha256": embeddings_fingerprint(class_embeddings, class_names), "source": source,
            "shape": list(class_embeddings.shape)}


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


def check_embeddings_file(path: str, current: Dict, output_dir: str) -> None:
    """Refuse, before any work, the checkpoint ``path`` (read lazily, memory-mapped) when it was
    trained with other class embeddings than ``current`` (an :func:`embeddings_record`);
    ``output_dir`` is named as the generator folder to delete."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"synthesis checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises RuntimeError / EOFError / UnpicklingError / zipfile errors
        raise ValueError(f"corrupt synthesis checkpoint {path} ({type(e).__name__}: {e}); delete it to restart") from e
    _check_embeddings(state, current, output_dir, path)


def _check_embeddings(state: Dict, current: Dict, output_dir: str, path: str) -> None:
    """Refuse a checkpoint trained with other class embeddings (values, class list or dimension)."""
    saved = state.get("embeddings")
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
                         f"file back at the first, or retrain the generator (delete {output_dir} or use "
                         "a new OUTPUT_DIR)")


def _label_state(trainer) -> Dict:
    return {"seen_classes": trainer.seen_classes, "embeddings": trainer.embeddings,
            "train_sets": {"idx": trainer.train_sets.idx, "mask": trainer.train_sets.mask}}


def _restore_labels(trainer, state: Dict) -> None:
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.scaler.to(trainer.device)
    trainer.train_sets = LabelSets(state["train_sets"]["idx"].cpu(), state["train_sets"]["mask"].cpu())
    trainer.seen_classes = state["seen_classes"].cpu()


def save_last(trainer, epoch: int) -> None:
    """Write ``trainer``'s full training state after ``epoch`` to ``output_dir/last_checkpoint.pth``."""
    write_torch(os.path.join(trainer.output_dir, CHECKPOINT), {
        "format": FORMAT, "epoch": epoch, "settings": dataclasses.asdict(trainer.s),
        "models": {k: m.state_dict() for k, m in trainer.trained_modules().items()},
        "optimizers": {k: o.state_dict() for k, o in trainer.optimizers().items()},
        "scaler": trainer.scaler.state_dict(), "best": dict(trainer.best), **_label_state(trainer)})


def restore_last(trainer, path: str) -> int:
    """Load the training state of ``path`` into ``trainer``; returns the epoch to continue with.

    Raises:
        ValueError: other class embeddings, or settings outside ``RESUMABLE_CHANGES`` changed.
    """
    state = load_checkpoint(path, trainer.device)
    _check_embeddings(state, trainer.embeddings, trainer.output_dir, path)
    saved = state["settings"]
    saved["betas"] = tuple(saved["betas"])
    legacy = dataclasses.asdict(SynthesisSettings())  # a field a checkpoint lacks had its default
    changed = sorted(k for k, v in dataclasses.asdict(trainer.s).items()
                     if k not in RESUMABLE_CHANGES and saved.get(k, legacy[k]) != v)
    if changed:
        raise ValueError(f"{path} was written with different settings ({', '.join(k.upper() for k in changed)}); "
                         "use a new OUTPUT_DIR or SYNTHESIS.RESUME=False")
    _restore_labels(trainer, state)
    if "seen_classifier" in state["models"]:
        trainer.seen_classifier = torch.nn.Linear(trainer.feature_dim, len(trainer.seen_classes)).to(trainer.device)
        trainer.seen_classifier.requires_grad_(False)
    if "semantic_regressor" in state["models"]:
        trainer.semantic_regressor = SemanticRegressor(trainer.feature_dim, trainer.emb_dim).to(trainer.device)
        trainer.semantic_regressor.requires_grad_(False)
    for k, m in trainer.trained_modules().items():
        m.load_state_dict(state["models"][k])
    for k, o in trainer.optimizers().items():
        o.load_state_dict(state["optimizers"][k])
    trainer.best = dict(state["best"])
    return state["epoch"] + 1


def save_best(trainer, epoch: int, score: float) -> None:
    """Write ``trainer``'s generator of ``epoch`` (validation mAP ``score``) to ``output_dir/model_best.pth``."""
    write_torch(os.path.join(trainer.output_dir, BEST), {
        "format": FORMAT, "epoch": epoch, "score": score, "settings": dataclasses.asdict(trainer.s),
        "generator": trainer.generator.state_dict(), "scaler": trainer.scaler.state_dict(), **_label_state(trainer)})


def load_best(trainer, path: str) -> Dict:
    """Load the generator and feature scaler of ``path`` (a ``model_best.pth``) into ``trainer``.

    Returns:
        {"epoch": selected epoch, "score": its validation mAP (nan without validation)}.
    Raises:
        FileNotFoundError / ValueError: missing, corrupt or incompatible file (named).
    """
    state = load_checkpoint(path, trainer.device)
    _check_embeddings(state, trainer.embeddings, trainer.output_dir, path)
    try:
        trainer.generator.load_state_dict(state["generator"])
    except RuntimeError as e:
        raise ValueError(f"{path} does not match this generator ({trainer.s.fusion}, d={trainer.feature_dim}, "
                         f"C={trainer.num_classes}): {e}") from e
    _restore_labels(trainer, state)
    return {"epoch": state["epoch"], "score": state["score"]}
