"""A GPU asked for that torch cannot use (issue 17, item 7) stops the tools with one line saying why,
before detectron2's launch asserts; dev/check_cuda.py (the end of dev/env.sh) says it at install time."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs/quick_schedules/zsd_shapes_tiny_instant_test.yaml")
NVIDIA_SMI = """#!/bin/sh
if [ "$1" = "--query-gpu=driver_version,name" ]; then echo "470.82.01, Tesla V100-SXM2-32GB"; exit 0; fi
echo "| NVIDIA-SMI 470.82.01    Driver Version: 470.82.01    CUDA Version: 11.4     |"
"""

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine whose torch sees no GPU")


@pytest.fixture
def old_driver(tmp_path, monkeypatch):
    """A PATH whose nvidia-smi reports one GPU and a driver for CUDA 11.4."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.mark.parametrize("tool,key", [("tools/train_net.py", "MODEL.DEVICE"),
                                      ("tools/train_mlzsl.py", "SYNTHESIS.DEVICE")])
def test_tools_name_the_device_key_and_the_reason_before_launch(tmp_path, load_script, monkeypatch, old_driver,
                                                                tool, key):
    module = load_script(tool)
    ran = []
    monkeypatch.setattr(module, "main", lambda args: ran.append(args))
    config = TINY if tool.endswith("train_net.py") else str(REPO / "configs/classification/synthetic.yaml")
    monkeypatch.setattr(sys, "argv", [tool, "--config-file", config, "OUTPUT_DIR", str(tmp_path), key, "cuda"])
    with pytest.raises(SystemExit) as exit_:
        module.invoke_main()
    message = str(exit_.value.code)
    assert message.startswith(f"error: {key}='cuda' asks for a GPU, but torch {torch.__version__}")
    assert "NVIDIA driver 470.82.01 (CUDA <= 11.4), 1 GPU: Tesla V100-SXM2-32GB" in message
    assert "ZSDET_TORCH_INDEX_URL" in message and f"{key} cpu" in message
    assert ran == []  # refused before launch: nothing ran


def test_env_check_fails_on_a_gpu_machine_whose_torch_cannot_use_it(tmp_path, old_driver):
    check = [sys.executable, str(REPO / "dev" / "check_cuda.py")]
    proc = subprocess.run(check, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("[zsdet env] torch") and "NVIDIA driver 470.82.01" in last
    assert "ZSDET_TORCH_INDEX_URL" in last
    cpu_chosen = subprocess.run(check, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                                env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert cpu_chosen.returncode == 0
