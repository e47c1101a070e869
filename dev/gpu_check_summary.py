#!/usr/bin/env python
"""Summary of a ``dev/gpu_check.sh`` run: one JSON object on stdout, exit 0 iff every step passed.

Reads the run folder ``OUT``: ``steps.txt`` (``name exit_code wall_s`` per step), ``<step>.log``,
``cuda_tests.xml`` (pytest's JUnit report), the JSON lines of ``bench_synthesis.log`` and
``tiny_pipeline/metrics.json``. A step passes when its command exited 0 and its results are
complete: no CUDA-only test skipped, the four benchmark rows (zsdet / per-label loop x fp32 /
bf16) present, ``metrics.json`` written.

    python dev/gpu_check_summary.py OUT
"""
import json
import os
import sys
import xml.etree.ElementTree as ET

BENCH_KEYS = ("impl", "device", "dtype", "sec_per_iteration", "synth_features_per_sec",
              "peak_memory_gib")
BENCH_ROWS = 4


def read_steps(out: str) -> dict:
    steps = {}
    with open(os.path.join(out, "steps.txt")) as f:
        for line in f:
            name, code, wall = line.split()
            status = "passed" if code == "0" else ("timeout" if code == "124" else "failed")
            steps[name] = {"status": status, "exit_code": int(code), "wall_s": int(wall),
                           "log": os.path.join(out, f"{name}.log")}
    return steps


def add_test_counts(step: dict, xml_path: str) -> None:
    """Test counts of the JUnit report; a test skipped for want of CUDA fails the step."""
    if not os.path.isfile(xml_path):
        step["status"] = "failed" if step["status"] == "passed" else step["status"]
        return
    root = ET.parse(xml_path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    step.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
    step["cuda_skipped"] = sum("cuda" in (s.get("message") or "").lower()
                               for s in suite.iter("skipped"))
    if step["cuda_skipped"] and step["status"] == "passed":
        step["status"] = "failed"


def add_bench_rows(step: dict) -> None:
    """The benchmark's JSON rows; a missing row (it goes on without a failed row) fails the step."""
    with open(step["log"]) as f:
        rows = [json.loads(line) for line in f if line.startswith("{")]
    step["rows"] = [{k: r.get(k) for k in BENCH_KEYS} for r in rows]
    if len(rows) < BENCH_ROWS and step["status"] == "passed":
        step["status"] = "failed"


def add_metrics(step: dict, metrics_path: str) -> None:
    if os.path.isfile(metrics_path):
        with open(metrics_path) as f:
            step["metrics"] = json.load(f)
    elif step["status"] == "passed":
        step["status"] = "failed"


def _device_name(torch):
    try:
        return torch.cuda.get_device_name(0)
    except (RuntimeError, AssertionError) as e:  # no usable GPU: say why instead of failing
        return f"no CUDA device ({e})"


def summarize(out: str) -> dict:
    import torch

    steps = read_steps(out)
    if "cuda_tests" in steps:
        add_test_counts(steps["cuda_tests"], os.path.join(out, "cuda_tests.xml"))
    if "bench_synthesis" in steps:
        add_bench_rows(steps["bench_synthesis"])
    if "tiny_pipeline" in steps:
        add_metrics(steps["tiny_pipeline"], os.path.join(out, "tiny_pipeline", "metrics.json"))
    return {"device": _device_name(torch),
            "torch": torch.__version__, "cuda": torch.version.cuda, "log_dir": out,
            "all_passed": bool(steps) and all(s["status"] == "passed" for s in steps.values()),
            "steps": steps}


if __name__ == "__main__":
    summary = summarize(sys.argv[1])
    print(json.dumps(summary, indent=1))
    sys.exit(0 if summary["all_passed"] else 1)
