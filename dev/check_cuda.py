#!/usr/bin/env python
"""The last step of ``dev/env.sh``: on a machine with an NVIDIA GPU (``nvidia-smi`` lists one), check
that the installed torch can use it; else print why and what to do (zsdet.engine.cuda_check) and
exit 1. Exit 0 on a machine without NVIDIA GPU (nothing to check) or with an empty
``CUDA_VISIBLE_DEVICES`` (the CPU was chosen).

    python dev/check_cuda.py
"""
import os
import sys

from zsdet.engine.cuda_check import cuda_problem, nvidia_driver

if __name__ == "__main__":
    if nvidia_driver() is None or os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        sys.exit(0)
    problem = cuda_problem()
    if problem:
        sys.exit(f"[zsdet env] {problem}")
    import torch
    print(f"[zsdet env] torch {torch.__version__} (CUDA {torch.version.cuda}) uses the NVIDIA {nvidia_driver()}",
          file=sys.stderr)
