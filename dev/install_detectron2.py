"""Build and install detectron2 from its PyPI sdist when no wheel or GitHub checkout is reachable.

The ``pb1-detectron2==0.6`` sdist carries detectron2 v0.6's Python sources but not the C++/CUDA
sources of ``detectron2._C``, so its ``setup.py`` cannot compile the extension. We unpack it, add
a minimal ``vision.cpp`` of our own (a module that only reports build information), and install it
without build isolation against the already-installed torch. The ops that live in ``_C`` (rotated
boxes, deformable convolution, the fast COCO-eval accumulate) are then absent; ``zsdet.compat``
refuses configs that need them with a clear message.

Usage: python dev/install_detectron2.py [--sdist pb1-detectron2==0.6] [--workdir DIR]
"""
import argparse
import glob
import os
import subprocess
import sys
import tarfile
import tempfile

STUB_EXTENSION = r"""// zsdet's stand-in for detectron2's compiled ops (see dev/install_detectron2.py).
// It provides only the build-information functions that detectron2.utils.collect_env calls.
#include <torch/extension.h>

static std::string zsdet_compiler_version() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return "GCC " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__);
#else
  return "unknown";
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("get_compiler_version", &zsdet_compiler_version, "compiler that built this module");
  m.def("get_cuda_version", []() { return std::string("not built (zsdet stub)"); });
  m.def("has_cuda", []() { return false; });
  m.attr("ZSDET_STUB") = true;
}
"""


def find_source_root(unpacked_dir: str) -> str:
    """Return the folder of an unpacked sdist that holds ``setup.py`` and ``detectron2/``."""
    candidates = [
        os.path.dirname(p)
        for p in glob.glob(os.path.join(unpacked_dir, "*", "setup.py"))
        if os.path.isdir(os.path.join(os.path.dirname(p), "detectron2"))
    ]
    if len(candidates) != 1:
        raise RuntimeError(
            f"expected one detectron2 source tree under {unpacked_dir}, found {candidates}"
        )
    return candidates[0]


def add_stub_extension(source_root: str) -> str:
    """Write the stub ``detectron2/layers/csrc/vision.cpp`` unless the sdist already has sources.

    Returns the path of the ``vision.cpp`` that will be compiled.
    """
    csrc = os.path.join(source_root, "detectron2", "layers", "csrc")
    main_source = os.path.join(csrc, "vision.cpp")
    if os.path.exists(main_source):  # a full source tree: build the real ops
        return main_source
    os.makedirs(csrc, exist_ok=True)
    with open(main_source, "w") as f:
        f.write(STUB_EXTENSION)
    return main_source


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", default="pb1-detectron2==0.6", help="pip requirement of the sdist")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args(argv)
    pip = [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        # --no-build-isolation: the sdist's setup.py imports torch to describe itself.
        run(pip + ["download", "-q", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
                   "-d", tmp, args.sdist])
        archives = glob.glob(os.path.join(tmp, "*.tar.gz"))
        if len(archives) != 1:
            raise RuntimeError(f"pip download of {args.sdist} gave {archives}, expected one .tar.gz")
        with tarfile.open(archives[0]) as tar:
            tar.extractall(tmp, filter="data")
        source_root = find_source_root(tmp)
        add_stub_extension(source_root)
        run(pip + ["install", "-q", "--no-build-isolation", "--no-deps", source_root])


if __name__ == "__main__":
    main()
