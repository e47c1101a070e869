"""dev/gpu_check.sh without a GPU (clear message, exit 2, nothing run) and its JSON summary
(dev/gpu_check_summary.py) on a made-up run folder."""
import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0"
failures="0" skipped="{skipped}" tests="21">{cases}</testsuite></testsuites>"""
SKIPPED_CASE = ('<testcase classname="t" name="test_sync"><skipped type="pytest.skip" '
                'message="needs CUDA"/></testcase>')


def test_without_cuda_it_stops_with_a_clear_message(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", ZSDET_GPU_CHECK_DIR=str(tmp_path / "run"))
    proc = subprocess.run(["bash", str(REPO / "dev" / "gpu_check.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "gpu_check: no CUDA device visible" in proc.stderr
    assert "needs a machine with one NVIDIA GPU" in proc.stderr and "nothing was run" in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "run").exists()


def _run_folder(path, skipped=0, bench_rows=4, metrics=True, tiny_code=0):
    path.mkdir()
    (path / "steps.txt").write_text(f"cuda_tests 0 12\nbench_synthesis 0 95\ntiny_pipeline {tiny_code} 70\n")
    (path / "cuda_tests.xml").write_text(JUNIT.format(skipped=skipped, cases=SKIPPED_CASE * skipped))
    rows = [{"impl": impl, "device": "cuda", "dtype": dtype, "sec_per_iteration": 0.05,
             "synth_features_per_sec": 9e4, "peak_memory_gib": 3.1, "cpu_sec_per_iteration": 0.05}
            for impl in ("vectorised", "naive") for dtype in ("fp32", "bf16")][:bench_rows]
    (path / "bench_synthesis.log").write_text("table\n" + "".join(json.dumps(r) + "\n" for r in rows))
    (path / "cuda_tests.log").write_text("")
    (path / "tiny_pipeline.log").write_text("")
    if metrics:
        (path / "tiny_pipeline").mkdir()
        (path / "tiny_pipeline" / "metrics.json").write_text('{"synthesis": {"zsd": {"mAP_iou0.5": 40.0}}}')
    return str(path)


def test_summary_of_a_run(tmp_path, load_script):
    summarize = load_script("dev/gpu_check_summary.py").summarize
    good = summarize(_run_folder(tmp_path / "good"))
    assert good["all_passed"] and set(good["steps"]) == {"cuda_tests", "bench_synthesis", "tiny_pipeline"}
    tests = good["steps"]["cuda_tests"]
    assert (tests["tests"], tests["skipped"], tests["cuda_skipped"], tests["wall_s"]) == (21, 0, 0, 12)
    assert [r["dtype"] for r in good["steps"]["bench_synthesis"]["rows"]] == ["fp32", "bf16"] * 2
    assert good["steps"]["tiny_pipeline"]["metrics"]["synthesis"]["zsd"]["mAP_iou0.5"] == 40.0

    bad = summarize(_run_folder(tmp_path / "bad", skipped=1, bench_rows=3, metrics=False, tiny_code=124))
    assert not bad["all_passed"]
    assert bad["steps"]["cuda_tests"]["status"] == "failed"  # a CUDA-only test did not run
    assert bad["steps"]["bench_synthesis"]["status"] == "failed"  # a benchmark row is missing
    assert bad["steps"]["tiny_pipeline"]["status"] == "timeout"
