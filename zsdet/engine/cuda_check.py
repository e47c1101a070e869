"""GPUs asked for but unusable: one clear message instead of detectron2's bare assert.

A torch build for a newer CUDA than the NVIDIA driver supports, a CPU build of torch, or an empty
``CUDA_VISIBLE_DEVICES`` all leave ``torch.cuda.is_available()`` False without a word; detectron2's
``launch`` then stops with ``AssertionError: cuda is not available``. :func:`check_cuda_request`
(called by the tools before ``launch``) and ``dev/check_cuda.py`` (called by ``dev/env.sh``) say
which of these it is and what to do (``ZSDET_TORCH_INDEX_URL``, docs/install.md).
"""
import os
import re
import shutil
import subprocess
from typing import Optional

import torch

__all__ = ["CudaUnavailable", "nvidia_driver", "cuda_problem", "check_cuda_request"]

INSTALL_HINT = ("choose a torch build for the driver's CUDA version: rerun `ZSDET_TORCH_INDEX_URL="
                "https://download.pytorch.org/whl/cu<XY> bash dev/env.sh` with <XY> at most the driver's CUDA "
                "version (docs/install.md, 'On a GPU machine'), or update the NVIDIA driver")


class CudaUnavailable(RuntimeError):
    """GPUs were requested, but this torch cannot use any."""


def nvidia_driver() -> Optional[str]:
    """``"driver 535.104.05 (CUDA <= 12.2), 8 GPUs: NVIDIA A100-SXM4-80GB"`` from ``nvidia-smi``, or None
    where there is no ``nvidia-smi`` or it lists no GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        listing = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not listing:
        return None
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header)
    driver, name = (part.strip() for part in listing[0].split(",", 1))
    return (f"driver {driver}{f' (CUDA <= {cuda.group(1)})' if cuda else ''}, {len(listing)} "
            f"GPU{'s' if len(listing) > 1 else ''}: {name}")


def cuda_problem() -> Optional[str]:
    """Why this torch sees no CUDA device (None when it sees one)."""
    if torch.cuda.is_available():
        return None
    build = f"torch {torch.__version__} (built for CUDA {torch.version.cuda or 'none: a CPU-only build'})"
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return f"{build} sees no CUDA device: CUDA_VISIBLE_DEVICES is empty"
    driver = nvidia_driver()
    if driver is None:
        return f"{build} sees no CUDA device, and no NVIDIA GPU is visible (no nvidia-smi or it lists none)"
    if torch.version.cuda is None:
        return f"{build} cannot use this machine's NVIDIA {driver}: {INSTALL_HINT}"
    return (f"{build} cannot use this machine's NVIDIA {driver}: the driver is probably too old for that "
            f"CUDA build; {INSTALL_HINT}")


def check_cuda_request(device: str, key: str) -> None:
    """Raise :class:`CudaUnavailable` naming ``key`` and why, when ``device`` (the value of ``key``, e.g.
    ``MODEL.DEVICE``) asks for CUDA and this torch has none."""
    if not device.startswith("cuda"):
        return
    problem = cuda_problem()
    if problem:
        raise CudaUnavailable(f"{key}={device!r} asks for a GPU, but {problem}. To run on the CPU instead: "
                              f"{key} cpu and --num-gpus 1")
