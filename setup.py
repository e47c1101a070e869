"""zsdet: generative multi-label zero-shot learning and zero-shot detection on detectron2."""
from setuptools import find_packages, setup

setup(
    name="zsdet",
    version="0.1.0",
    description="Generative multi-label zero-shot learning (Gupta et al., ICCV 2021) and "
    "zero-shot object detection as a detectron2 extension",
    packages=find_packages(include=("zsdet", "zsdet.*")),
    python_requires=">=3.9",
    install_requires=[
        # detectron2 is required but not listed: it has no PyPI wheel and installs under two
        # distribution names (detectron2 from GitHub, pb1-detectron2 from the sdist route), so
        # dev/env.sh installs it and zsdet.compat raises a clear error when it is missing.
        "torch>=2.0",
        "torchvision",
        "pycocotools",
        "fvcore",
        "opencv-python-headless",
        "numpy",
        "h5py",
        "tqdm",
        "matplotlib",
        "Pillow",
    ],
    extras_require={"test": ["pytest", "pytest-timeout", "pytest-xdist"]},
)
