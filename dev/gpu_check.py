#!/usr/bin/env python
"""The steps of ``dev/gpu_check.sh`` and their one JSON summary (stdout and ``OUT/summary.json``).

Every step runs in its own process group with its own timeout (their sum is 10 minutes on a GPU),
its output in ``OUT/<step>.log`` and its figures in ``OUT/<step>.json``; a failed or timed-out step
leaves its keys in the summary with ``null`` values and the others run on. ``--cpu-dry-run`` runs
every step on the CPU with tiny sizes (``benchmarks/bench_stages.py --tiny``) and writes the same
keys: the test suite runs it, so the GPU run cannot fail on a typo. Exit status 0 when every step
passed (all its figures there; on a GPU, no CUDA-only test skipped), else 1.

Steps: ``versions``; ``cuda_tests`` (the test files with CUDA-only tests); ``data`` (fake COCO at
640x480, splits, stand-in backbone); ``detector`` (the COCO config's detector, fp32 and AMP);
``features`` (the RoI bank of the ~200 training images); ``evaluation`` (ZSD + GZSD);
``generator`` (one epoch on a synthetic COCO-sized bank, fp32 and bf16); ``synthesis``
(``benchmarks/bench_synthesis.py`` at COCO's detection sizes).

    python dev/gpu_check.py --out OUT [--cpu-dry-run]
    python dev/gpu_check.py --versions --json FILE     # the versions step alone
"""
import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (step, timeout in seconds on a GPU): 600 in all
TIMEOUTS = {"versions": 20, "cuda_tests": 40, "data": 60, "detector": 170, "features": 80, "evaluation": 50,
            "generator": 120, "synthesis": 60}
DETECTOR = ("sec_per_iter", "iters", "images_per_iter", "dtype", "peak_gpu_gib", "peak_rss_gib")
GENERATOR = ("epoch_s", "data_s", "compute_s", "iterations", "samples_per_pass", "prepare_s",
             "projected_minutes_50_epochs", "peak_gpu_gib", "peak_rss_gib")
SYNTHESIS = ("sec_per_iteration", "synth_features_per_sec", "peak_memory_gib")
FIGURES = {  # the keys of every step's figures, the same in both modes
    "versions": ("python", "torch", "torch_cuda", "cudnn", "nccl", "detectron2", "zsdet_commit", "driver",
                 "gpu_name", "gpu_memory_gib", "cpu_count"),
    "cuda_tests": ("tests", "failures", "errors", "skipped", "cuda_skipped"),
    "data": ("train_images", "test_images", "image_size", "seconds"),
    "detector": {"fp32": DETECTOR, "amp": DETECTOR},
    "features": ("images", "seconds", "images_per_s", "rois_per_image", "bytes_per_image", "images_per_batch",
                 "workers", "projected_bank_gb", "projected_hours_8_gpus", "peak_gpu_gib", "peak_rss_gib"),
    "evaluation": ("test_images", "seconds", "images_per_s", "modes", "projected_minutes_8_gpus_two_methods",
                   "peak_gpu_gib", "peak_rss_gib"),
    "generator": {"fp32": GENERATOR, "bf16": GENERATOR},
    "synthesis": {"fp32": SYNTHESIS, "bf16": SYNTHESIS},
}
GPU_ONLY = {"nccl", "driver", "gpu_name", "gpu_memory_gib", "peak_gpu_gib"}  # null in a CPU dry run
# benchmarks/bench_stages.py sizes: on the GPU the COCO config's own; in the dry run tiny ones
STAGE_SIZES = {
    "gpu": {"data": [], "detector": ["--iters", "60", "--warmup", "5"], "features": [], "evaluation": [],
            "generator": ["--dim", "1024", "--seen", "65", "--samples", "38000"]},
    "cpu-dry-run": {"data": ["--scale", "0.1", "--train-factor", "0.5", "--test-factor", "0.5"],
                    "detector": ["--iters", "2", "--warmup", "1"], "features": [], "evaluation": [],
                    "generator": ["--dim", "64", "--seen", "5", "--samples", "600"]},
}
SYNTHESIS_SIZES = {  # benchmarks/bench_synthesis.py: COCO detection sizes (f-CLSWGAN, CLF, 65 + 15 classes)
    "gpu": ["--feature-dim", "1024", "--emb-dim", "300", "--hidden", "4096", "--ff-hidden", "8192", "--batch", "64",
            "--seen", "65", "--unseen", "15", "--max-labels", "3", "--iters", "5"],
    "cpu-dry-run": ["--feature-dim", "64", "--emb-dim", "16", "--hidden", "64", "--ff-hidden", "64", "--batch", "16",
                    "--seen", "10", "--unseen", "3", "--max-labels", "3", "--synth-sets", "256", "--synth-batch",
                    "128", "--iters", "1"],
}


def versions() -> dict:
    """Versions of the software and the GPU (null fields where there is none)."""
    import torch

    from zsdet.engine.cuda_check import nvidia_driver

    cuda = torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if cuda else None
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    import detectron2
    return {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda
            else None, "detectron2": f"{detectron2.__version__} ({os.path.dirname(detectron2.__file__)})",
            "zsdet_commit": commit.stdout.strip() or None, "driver": nvidia_driver(),
            "gpu_name": props.name if cuda else None, "gpu_memory_gib": props.total_memory / 2 ** 30 if cuda else None,
            "cpu_count": os.cpu_count()}


def has_cuda_test(path: str) -> bool:
    """Whether the test file has a test skipped without CUDA."""
    with open(path) as f:
        return "skipif(not torch.cuda.is_available()" in f.read()


def commands(out: str, mode: str) -> dict:
    """The command of every step."""
    device = "cuda" if mode == "gpu" else "cpu"
    work = os.path.join(out, "work")
    cuda_tests = sorted(os.path.join(d, f) for d, _, files in os.walk(os.path.join(REPO, "tests")) for f in files
                        if f.startswith("test_") and f.endswith(".py") and has_cuda_test(os.path.join(d, f)))

    def stage(name):
        return [sys.executable, os.path.join(REPO, "benchmarks", "bench_stages.py"), name, "--work", work, "--json",
                os.path.join(out, f"{name}.json"), "--device", device, *(["--tiny"] if mode != "gpu" else []),
                *STAGE_SIZES[mode][name]]

    return {
        "versions": [sys.executable, __file__, "--versions", "--json", os.path.join(out, "versions.json")],
        "cuda_tests": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                       f"--junitxml={os.path.join(out, 'cuda_tests.xml')}", *cuda_tests],
        **{name: stage(name) for name in ("data", "detector", "features", "evaluation", "generator")},
        "synthesis": [sys.executable, os.path.join(REPO, "benchmarks", "bench_synthesis.py"), "--devices", device,
                      "--impls", "vectorised", "--dtypes", "fp32,bf16", "--gan", "fclswgan", *SYNTHESIS_SIZES[mode]],
    }


def run_step(name: str, cmd: list, out: str, timeout: float) -> dict:
    """Run ``cmd`` in its own process group, killed with its children after ``timeout`` seconds."""
    tic = time.perf_counter()
    print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
    with open(os.path.join(out, f"{name}.log"), "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = 124
    wall = time.perf_counter() - tic
    print(f"gpu_check: {name} exit {code} in {wall:.0f} s", file=sys.stderr, flush=True)
    return {"status": "passed" if code == 0 else ("timeout" if code == 124 else "failed"), "exit_code": code,
            "wall_s": round(wall, 1), "timeout_s": timeout, "log": os.path.join(out, f"{name}.log")}


def read_figures(name: str, out: str) -> dict:
    """What the step measured (empty when it wrote nothing)."""
    if name == "cuda_tests":
        path = os.path.join(out, "cuda_tests.xml")
        if not os.path.isfile(path):
            return {}
        root = ET.parse(path).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        figures = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        figures["cuda_skipped"] = sum("cuda" in (s.get("message") or "").lower() for s in suite.iter("skipped"))
        return figures
    if name == "synthesis":
        with open(os.path.join(out, "synthesis.log")) as f:
            rows = [json.loads(line) for line in f if line.startswith("{")]
        return {row["dtype"]: row for row in rows}
    path = os.path.join(out, f"{name}.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def fill(template, figures, missing: list, path: str = ""):
    """``figures`` reduced to the keys of ``template`` (a tuple of keys or a dict of templates); absent
    values become None and their dotted names are appended to ``missing``."""
    figures = figures if isinstance(figures, dict) else {}
    if isinstance(template, dict):
        return {k: fill(sub, figures.get(k), missing, f"{path}{k}.") for k, sub in template.items()}
    values = {k: figures.get(k) for k in template}
    missing += [path + k for k, v in values.items() if v is None]
    return values


def summarize(out: str, steps: dict, mode: str) -> dict:
    """The summary of a run folder ``out`` whose ``steps`` ran (name -> :func:`run_step`'s result)."""
    for name, step in steps.items():
        missing = []
        step["figures"] = fill(FIGURES[name], read_figures(name, out), missing)
        missing = [m for m in missing if not (mode != "gpu" and m.split(".")[-1] in GPU_ONLY)]
        if missing and step["status"] == "passed":
            step.update(status="failed", missing=missing)
        if name == "cuda_tests" and mode == "gpu" and step["figures"]["cuda_skipped"] and step["status"] == "passed":
            step["status"] = "failed"  # a CUDA-only test did not run on the GPU
    return {"mode": mode, "log_dir": out, "all_passed": all(s["status"] == "passed" for s in steps.values()),
            "steps": steps}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="the run folder (logs, figures, summary.json)")
    p.add_argument("--cpu-dry-run", action="store_true", help="every step on the CPU, tiny sizes")
    p.add_argument("--versions", action="store_true", help="only write the versions step's JSON (--json)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    from zsdet.utils.io import write_json, write_text

    if args.versions:
        write_json(args.json, versions())
        return 0
    mode = "cpu-dry-run" if args.cpu_dry_run else "gpu"
    os.makedirs(args.out, exist_ok=True)
    steps = {name: run_step(name, cmd, args.out, TIMEOUTS[name]) for name, cmd in commands(args.out, mode).items()}
    summary = summarize(args.out, steps, mode)
    text = json.dumps(summary, indent=1)
    write_text(os.path.join(args.out, "summary.json"), text)
    print(text)
    return 0 if summary["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
