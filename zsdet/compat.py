"""Compatibility shims applied before detectron2 is imported, and checks for missing compiled ops.

* Pillow >= 10 removed ``PIL.Image.LINEAR``; detectron2 v0.6 evaluates it at import time in
  ``detectron2.data.transforms``. We alias it to ``BILINEAR`` (the same filter) instead of
  pinning an old, unpatched Pillow.
* detectron2 built through ``dev/install_detectron2.py`` has a stub ``_C`` without the compiled
  ops; :func:`check_config_supported` rejects configs that need them with a readable message.
"""
import importlib

import PIL.Image

if not hasattr(PIL.Image, "LINEAR"):
    PIL.Image.LINEAR = PIL.Image.BILINEAR

try:
    import detectron2  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "zsdet needs detectron2, which has no PyPI wheel: run `bash dev/env.sh` (builds it from "
        "its sdist) or install it from source as detectron2's INSTALL.md describes"
    ) from e


def compiled_ops_available() -> bool:
    """True when ``detectron2._C`` holds the real compiled ops (not zsdet's build stub)."""
    try:
        c_ext = importlib.import_module("detectron2._C")
    except ImportError:
        return False
    return hasattr(c_ext, "box_iou_rotated")


# detectron2 (main) box-loss options, absent from v0.6; ZSDOutputLayers' masked softmax has neither
BOX_LOSS_OPTIONS = ("USE_SIGMOID_CE", "USE_FED_LOSS")


def check_box_loss_options(use_sigmoid_ce: bool = False, use_fed_loss: bool = False, **_) -> None:
    """Raise ``ValueError`` naming the key when detectron2 main's sigmoid / federated box loss is on."""
    on = [key for key, value in zip(BOX_LOSS_OPTIONS, (use_sigmoid_ce, use_fed_loss)) if value]
    if on:
        raise ValueError(
            ", ".join(f"MODEL.ROI_BOX_HEAD.{key}=True" for key in on) + ": zsdet's ZSDOutputLayers "
            "trains one softmax over seen classes + background with the unseen columns masked out; "
            "sigmoid cross-entropy and federated loss are not implemented. Set them to False.")


def check_config_supported(cfg) -> None:
    """Raise ``RuntimeError`` naming the config key when ``cfg`` needs ops absent from ``_C``.

    Also rejects options of newer detectron2 versions that zsdet's box predictor does not implement
    (:func:`check_box_loss_options`).

    Args:
        cfg: a detectron2 ``CfgNode`` after ``add_zsdet_config`` and merging.
    """
    check_box_loss_options(**{key.lower(): cfg.MODEL.ROI_BOX_HEAD.get(key, False) for key in BOX_LOSS_OPTIONS})
    if compiled_ops_available():
        return
    needs = []
    if cfg.MODEL.PROPOSAL_GENERATOR.NAME == "RRPN":
        needs.append("MODEL.PROPOSAL_GENERATOR.NAME=RRPN (rotated boxes)")
    if "Rotated" in cfg.MODEL.ROI_HEADS.NAME:
        needs.append(f"MODEL.ROI_HEADS.NAME={cfg.MODEL.ROI_HEADS.NAME} (rotated boxes)")
    if "Rotated" in cfg.MODEL.ANCHOR_GENERATOR.NAME:
        needs.append(f"MODEL.ANCHOR_GENERATOR.NAME={cfg.MODEL.ANCHOR_GENERATOR.NAME}")
    if any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE):
        needs.append("MODEL.RESNETS.DEFORM_ON_PER_STAGE (deformable convolution)")
    if needs:
        raise RuntimeError(
            "this detectron2 was built without its compiled ops (detectron2._C is zsdet's stub), "
            "but the config asks for: " + "; ".join(needs)
            + ". Install detectron2 from source with its C++/CUDA extension to use them."
        )
