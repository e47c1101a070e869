"""Loading detector weights with explicit checks on the box classifier."""
import os

import torch

CLASSIFIER_PREFIX = "roi_heads.box_predictor.cls_score."


def load_state_dict_file(path: str) -> dict:
    """The ``model`` state dict of a detectron2-style checkpoint (``{"model": state_dict, ...}``).

    Raises ``FileNotFoundError`` / ``RuntimeError`` naming ``path`` when it is missing or unreadable.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a torch file, unsafe pickle, ...
        raise RuntimeError(f"cannot read checkpoint {path} (corrupt or not a torch file): {e}") from e
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RuntimeError(f"{path} holds no model state dict")
    return state


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

