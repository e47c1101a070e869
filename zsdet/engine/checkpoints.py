"""Detector checkpoints: atomic writes, integrity checks, and loading with explicit checks on the
box classifier."""
import glob
import logging
import os
import re
import zipfile
from typing import Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..utils.io import write_bytes, write_torch

logger = logging.getLogger(__name__)

CLASSIFIER_PREFIX = "roi_heads.box_predictor.cls_score."
LAST_CHECKPOINT = "last_checkpoint"
TRAINING_CHECKPOINT = re.compile(r"model_(final|\d+)\.pth")  # what detectron2's trainer writes


def checkpoint_problem(path: str) -> Optional[str]:
    """None when ``path`` is a complete torch (zip) checkpoint, else what is wrong with it.

    Reads the whole file and checks every member's CRC: a truncated or damaged file is caught
    without unpickling it.
    """
    if not os.path.isfile(path):
        return "missing"
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"truncated or not a torch checkpoint ({e})"
    return f"damaged member {bad}" if bad else None


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose files (``model_*.pth``, ``last_checkpoint``) are written
    atomically, whose load errors name the file, and which resumes from the newest intact
    checkpoint when the one ``last_checkpoint`` names is missing or damaged."""

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict(),
                **{key: obj.state_dict() for key, obj in self.checkpointables.items()}, **kwargs}
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", path)
        write_torch(path, data)
        self.tag_last_checkpoint(os.path.basename(path))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        write_bytes(os.path.join(self.save_dir, LAST_CHECKPOINT), last_filename_basename.encode())

    def _load_file(self, filename: str):
        try:
            return super()._load_file(filename)
        except Exception as e:  # torch / zip / pickle errors say nothing about which file
            raise ValueError(f"cannot read detectron2 checkpoint {filename} ({type(e).__name__}: {e}); "
                               "it is truncated or not a checkpoint: delete or replace it") from e

    def repair_last_checkpoint(self) -> None:
        """Point ``last_checkpoint`` at the newest intact ``model_*.pth`` when the file it names is
        missing or damaged (warning naming both); remove it when there is none."""
        if not self.has_checkpoint():
            return
        tagged = self.get_checkpoint_file()
        problem = checkpoint_problem(tagged)
        if problem is None:
            return
        # newest first: model_final.pth, then model_<iteration>.pth by decreasing iteration (not
        # the pipeline's model_zsd.pth / model_baseline.pth, which hold no training state)
        candidates = sorted((p for p in glob.glob(os.path.join(self.save_dir, "model_*.pth"))
                             if TRAINING_CHECKPOINT.fullmatch(os.path.basename(p))), reverse=True)
        intact = next((p for p in candidates if p != tagged and checkpoint_problem(p) is None), None)
        logger.warning("last checkpoint %s is unusable (%s): resuming from %s", tagged, problem,
                       intact or "the start (no intact model_*.pth)")
        if intact:
            self.tag_last_checkpoint(os.path.basename(intact))
        else:
            os.remove(os.path.join(self.save_dir, LAST_CHECKPOINT))


def read_checkpoint(path: str):
    """What ``torch.load`` (weights only, on the CPU) reads from ``path``; ``FileNotFoundError`` /
    ``RuntimeError`` naming ``path`` when it is missing or unreadable."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a torch file, unsafe pickle, ...
        raise RuntimeError(f"cannot read checkpoint {path} (corrupt or not a torch file): {e}") from e


def load_state_dict_file(path: str) -> dict:
    """The ``model`` state dict of a detectron2-style checkpoint (``{"model": state_dict, ...}``).

    Raises ``FileNotFoundError`` / ``RuntimeError`` naming ``path`` when it is missing or unreadable.
    """
    ckpt = read_checkpoint(path)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RuntimeError(f"{path} holds no model state dict")
    return state


def classifier_record(path: str) -> dict:
    """What the classifier stage stored beside the model in ``path`` (``classifier_record``: counts,
    training and GZSD calibration); ``{}`` for a checkpoint without one."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt.get("classifier_record", {}) if isinstance(ckpt, dict) else {}


# the box classifier a checkpoint records (``classifier_type``) -> MODEL.ZSD.CLASSIFIER
CLASSIFIER_KINDS = {"Linear": "linear", "MLPBoxClassifier": "mlp", "SeenGroupMLPClassifier": "seen_mlp",
                    "SemanticProjectionClassifier": "semantic"}


def weights_classifier_kind(path: str, configured: str) -> str:
    """The ``MODEL.ZSD.CLASSIFIER`` to build for the weights ``path``: the kind of box classifier the
    checkpoint records (``classifier_type``, written by the classifier and baseline stages), else
    ``configured`` (a detector checkpoint, or one written elsewhere)."""
    ckpt = read_checkpoint(path)
    recorded = ckpt.get("classifier_type") if isinstance(ckpt, dict) else None
    kind = CLASSIFIER_KINDS.get(recorded, configured)
    if kind != configured:
        logger.info("%s holds a %s box classifier: built as MODEL.ZSD.CLASSIFIER %r", path, recorded, kind)
    return kind


def load_detector_weights(model: torch.nn.Module, path: str) -> None:
    """Load ``path`` into ``model``; every box-classifier tensor must match by name and shape.

    detectron2's checkpointer skips tensors of another shape with a log line, which would leave a
    random classifier in place silently; here that is an error naming the tensors.
    """
    state = load_state_dict_file(path)
    own = model.state_dict()
    bad = [k for k in own if k.startswith(CLASSIFIER_PREFIX)
           and (k not in state or state[k].shape != own[k].shape)]
    bad += [k for k in state if k.startswith(CLASSIFIER_PREFIX) and k not in own]
    if bad:
        raise ValueError(f"{path}: box classifier tensors {sorted(set(bad))} are missing or have "
                         "another shape than the model's (wrong MODEL.ZSD.CLASSIFIER or class count?)")
    missing, _unexpected = model.load_state_dict(state, strict=False)  # extra keys are harmless
    if missing:
        raise ValueError(f"{path} lacks model tensors: {missing[:5]}{' ...' if len(missing) > 5 else ''}")

