"""dev/gpu_check.sh: without a GPU it stops with a clear message (exit 2, nothing run); its CPU dry run
runs every step with tiny sizes and writes every key of the GPU run's summary (so the GPU run cannot
fail on a typo); a failed or timed-out step keeps its keys, with nulls."""
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_without_cuda_it_stops_with_a_clear_message(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", ZSDET_GPU_CHECK_DIR=str(tmp_path / "run"))
    proc = subprocess.run(["bash", str(REPO / "dev" / "gpu_check.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "gpu_check: no CUDA device visible" in proc.stderr
    assert "needs a machine with one NVIDIA GPU" in proc.stderr and "nothing was run" in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "run").exists()


def keys(tree, prefix=""):
    """Dotted names of the leaves of nested dicts."""
    if not isinstance(tree, dict):
        return {prefix[:-1]}
    return set().union(*(keys(v, f"{prefix}{k}.") for k, v in tree.items()))


def test_cpu_dry_run_runs_every_step_and_writes_every_key(tmp_path, load_script):
    gpu_check = load_script("dev/gpu_check.py")
    env = dict(os.environ, ZSDET_GPU_CHECK_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(REPO / "dev" / "gpu_check.sh"), "--cpu-dry-run"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    summary = json.loads(proc.stdout)
    failed = {n: (s["status"], s.get("missing"), s["log"]) for n, s in summary["steps"].items()
              if s["status"] != "passed"}
    assert proc.returncode == 0 and summary["all_passed"], failed
    assert list(summary["steps"]) == list(gpu_check.TIMEOUTS) and sum(gpu_check.TIMEOUTS.values()) <= 600
    for name, step in summary["steps"].items():
        assert keys(step["figures"]) == keys(gpu_check.fill(gpu_check.FIGURES[name], {}, [])), name
        nulls = {k for k in keys(step["figures"]) if step_value(step["figures"], k) is None}
        assert {k.split(".")[-1] for k in nulls} <= gpu_check.GPU_ONLY, (name, nulls)
    figures = {n: s["figures"] for n, s in summary["steps"].items()}
    assert figures["features"]["images"] == figures["data"]["train_images"]
    assert figures["features"]["rois_per_image"] > 0
    assert figures["evaluation"]["modes"] == ["gzsd", "zsd"]
    assert figures["generator"]["bf16"]["iterations"] == figures["generator"]["fp32"]["iterations"] > 0
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def step_value(figures, dotted):
    for part in dotted.split("."):
        figures = figures[part]
    return figures


@pytest.mark.parametrize("mode", ["gpu", "cpu-dry-run"])
def test_failed_and_timed_out_steps_keep_their_keys(tmp_path, load_script, mode):
    gpu_check = load_script("dev/gpu_check.py")
    (tmp_path / "features.json").write_text(json.dumps({"images": 200, "images_per_s": 9.5}))  # killed midway
    (tmp_path / "synthesis.log").write_text("table\n" + json.dumps({"dtype": "fp32", "sec_per_iteration": 0.1}) + "\n")
    steps = {name: {"status": "timeout" if name == "features" else "passed", "exit_code": 0, "log": ""}
             for name in ("features", "generator", "synthesis")}
    summary = gpu_check.summarize(str(tmp_path), steps, mode)
    assert not summary["all_passed"]
    assert summary["steps"]["features"]["status"] == "timeout"
    assert summary["steps"]["features"]["figures"]["images_per_s"] == 9.5
    assert summary["steps"]["features"]["figures"]["projected_bank_gb"] is None
    assert summary["steps"]["generator"]["status"] == "failed"  # exited 0 but wrote nothing
    expected = keys(gpu_check.fill(gpu_check.FIGURES["generator"], {}, []))
    assert keys(summary["steps"]["generator"]["figures"]) == expected
    assert "bf16.sec_per_iteration" in summary["steps"]["synthesis"]["missing"]
