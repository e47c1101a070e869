#!/usr/bin/env python
"""Extract VGG-19 FC7 features of an image folder into the HDF5 layout of zsdet's MLZSL benchmarks.

Output (see ``zsdet/data/mlzsl/h5_features.py``): ``features`` (n, 4096) float32 = the output of
VGG-19's second fully connected layer after its ReLU (eval mode, no dropout), ``labels`` (n, L)
int8 copied from the label file, in the label file's row order.

Label file: one image per line, ``<path relative to --image-dir>,<v_1>,...,<v_L>`` with values in
{-1, 0, 1} (comma or tab separated; blank lines and lines starting with ``#`` are skipped). It is
indexed once and read line by line, so it may be larger than memory.

Weights: a torchvision ``vgg19`` state dict given with ``--weights`` (nothing is downloaded), e.g.
the file torchvision caches as ``vgg19-dcbb9e9d.pth``. ``--random-init`` builds an untrained
network instead (only for testing the pipeline).

Resume: rows are written batch by batch and the attribute ``rows_done`` is committed after each
batch; a rerun with the same label file continues after the last committed row (rows written past
it by a killed run are discarded). ``complete`` is set when every row is written.

Usage:
    python tools/extract_vgg_features.py --image-dir IMGS --labels labels.csv \
        --weights vgg19-dcbb9e9d.pth --output train.h5 [--batch-size 64] [--device cuda]
"""
import argparse
import hashlib
import logging
import os
import re
from typing import Tuple

import h5py
import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

logger = logging.getLogger("zsdet.extract_vgg_features")

FC7_DIM = 4096
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SEPARATOR = re.compile(r"[,\t]")


def index_label_file(path: str) -> Tuple[np.ndarray, int, str]:
    """Byte offsets of the data lines of ``path``, their label count L and a digest of the file.

    Raises:
        FileNotFoundError: no file. ValueError: no data line, or a line with a different L.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label file not found: {path}")
    offsets, num_labels, digest = [], None, hashlib.sha256()
    with open(path, "rb") as f:
        pos = 0
        for lineno, raw in enumerate(f, 1):  # one pass over the file, not a training hot path
            digest.update(raw)
            line = raw.decode("utf-8").strip()
            if line and not line.startswith("#"):
                n = len(SEPARATOR.split(line)) - 1
                if num_labels is None:
                    num_labels = n
                if n != num_labels or n < 1:
                    raise ValueError(f"{path}:{lineno}: expected a path and {num_labels} label values, "
                                     f"got {n} values")
                offsets.append(pos)
            pos += len(raw)
    if not offsets:
        raise ValueError(f"{path} has no data line")
    return np.asarray(offsets, np.int64), num_labels, digest.hexdigest()


class LabelledImages(Dataset):
    """``(image (3, s, s) float32, labels (L,) int8)`` of the label file's lines ``offsets``."""

    def __init__(self, image_dir: str, label_file: str, offsets: np.ndarray, image_size: int):
        self.image_dir, self.label_file, self.offsets = image_dir, label_file, offsets
        self.transform = torchvision.transforms.Compose([
            torchvision.transforms.Resize((image_size, image_size)),
            torchvision.transforms.ToTensor(),
            torchvision.transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int):
        with open(self.label_file, "rb") as f:
            f.seek(int(self.offsets[i]))
            fields = SEPARATOR.split(f.readline().decode("utf-8").strip())
        path = os.path.join(self.image_dir, fields[0].strip())
        try:
            values = np.array([int(float(v)) for v in fields[1:]], np.int8)
        except ValueError as e:
            raise ValueError(f"{self.label_file}: bad label value for {fields[0]!r}: {e}") from e
        if not np.isin(values, (-1, 0, 1)).all():
            raise ValueError(f"{self.label_file}: labels of {fields[0]!r} must be in {{-1, 0, 1}}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image listed in {self.label_file} not found: {path}")
        with Image.open(path) as img:
            return self.transform(img.convert("RGB")), torch.from_numpy(values)


def build_fc7_extractor(weights: str, random_init: bool = False) -> torch.nn.Module:
    """VGG-19 up to FC7 + ReLU, in eval mode: (B, 3, H, W) -> (B, 4096)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # --random-init: the same network on every run, so resumed runs agree
        model = torchvision.models.vgg19(weights=None)
    if not random_init:
        if not weights or not os.path.isfile(weights):
            raise FileNotFoundError(f"VGG-19 weights not found: {weights!r} (pass --weights PATH)")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise KeyError(f"{weights} is not a torchvision vgg19 state dict: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    model.classifier = model.classifier[:5]  # fc6, relu, dropout, fc7, relu
    return model.eval()


def open_output(path: str, num_rows: int, num_labels: int, source_digest: str) -> Tuple[h5py.File, int]:
    """Create ``path`` or reopen it for resuming; returns ``(file, rows_done)``.

    Raises:
        ValueError: ``path`` was written from another label file.
    """
    f = h5py.File(path, "a")
    if "features" not in f:
        f.create_dataset("features", (0, FC7_DIM), np.float32, maxshape=(num_rows, FC7_DIM),
                         chunks=(min(num_rows, 64), FC7_DIM))
        f.create_dataset("labels", (0, num_labels), np.int8, maxshape=(num_rows, num_labels),
                         chunks=(min(num_rows, 1024), num_labels))
        f.attrs.update(rows_done=0, complete=False, label_file_sha256=source_digest)
    elif f.attrs.get("label_file_sha256") != source_digest or f["labels"].shape[1] != num_labels:
        f.close()
        raise ValueError(f"{path} was extracted from a different label file; remove it or choose "
                         "another --output")
    done = int(f.attrs["rows_done"])
    for key in ("features", "labels"):  # drop rows a killed run wrote after its last commit
        f[key].resize(done, axis=0)
    return f, done


@torch.no_grad()
def extract(args) -> str:
    """Run the extraction described by the parsed ``args``; returns the output path."""
    offsets, num_labels, digest = index_label_file(args.labels)
    out, done = open_output(args.output, len(offsets), num_labels, digest)
    with out:
        if done == len(offsets):
            logger.info("%s is already complete (%d rows)", args.output, done)
            out.attrs["complete"] = True
            return args.output
        device = torch.device(args.device)
        model = build_fc7_extractor(args.weights, args.random_init).to(device)
        data = LabelledImages(args.image_dir, args.labels, offsets[done:], args.image_size)
        loader = DataLoader(data, batch_size=args.batch_size, num_workers=args.num_workers,
                            shuffle=False)
        feats_ds, labels_ds = out["features"], out["labels"]
        with tqdm(total=len(offsets), initial=done, unit="img", desc="VGG-19 FC7") as bar:
            for images, labels in loader:
                fc7 = model(images.to(device)).float().cpu().numpy()
                new = done + len(fc7)
                feats_ds.resize(new, axis=0)
                labels_ds.resize(new, axis=0)
                feats_ds[done:new] = fc7
                labels_ds[done:new] = labels.numpy()
                out.attrs["rows_done"] = new  # commit: rows first, then the counter
                out.flush()
                done = new
                bar.update(len(fc7))
        out.attrs["complete"] = True
    return args.output


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-dir", required=True, help="folder the label file's paths are relative to")
    parser.add_argument("--labels", required=True, help="label file (see module docstring)")
    parser.add_argument("--output", required=True, help="HDF5 file to write or resume")
    parser.add_argument("--weights", default="", help="torchvision vgg19 state dict (.pth)")
    parser.add_argument("--random-init", action="store_true",
                        help="use an untrained VGG-19 (pipeline tests only; features are meaningless)")
    parser.add_argument("--image-size", type=int, default=224, help="images are resized to S x S")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv=None) -> str:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    return extract(parse_args(argv))


if __name__ == "__main__":
    main()
