"""tools/extract_vgg_features.py on tiny images with a randomly initialised VGG-19: the HDF5 layout,
the label copy, resuming after a kill (uncommitted rows discarded) and input errors."""
import h5py
import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    lines = ["# path,label_a,label_b,label_c"]
    labels = np.array([[1, 0, 0], [0, 1, -1], [1, 1, 0], [0, 0, 1], [-1, 1, 1]], np.int8)
    for i, row in enumerate(labels):
        name = f"sub/img{i}.png" if i % 2 else f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (20 + i, 28, 3), dtype=np.uint8)).save(tmp_path / "imgs" / name)
        lines.append(",".join([name, *map(str, row)]))
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return tmp_path, labels


def args(root, out, *extra):
    return ["--image-dir", str(root / "imgs"), "--labels", str(root / "labels.csv"), "--output", str(out),
            "--random-init", "--image-size", "32", "--batch-size", "2", "--num-workers", "0",
            "--device", "cpu", *extra]


def read(path):
    with h5py.File(path, "r") as f:
        return f["features"][:], f["labels"][:], dict(f.attrs)


def test_extract_then_resume_after_a_kill(extract_vgg_features, image_folder):
    root, labels = image_folder
    full = root / "full.h5"
    extract_vgg_features.main(args(root, full))
    feats, got_labels, attrs = read(full)
    assert feats.shape == (5, 4096) and feats.dtype == np.float32
    assert np.array_equal(got_labels, labels)
    assert attrs["complete"] and attrs["rows_done"] == 5
    assert (feats >= 0).all() and feats.std() > 0  # FC7 after its ReLU

    # a run killed mid-batch: 2 rows committed, 2 more written but not committed (garbage)
    partial = root / "partial.h5"
    extract_vgg_features.main(args(root, partial))
    with h5py.File(partial, "a") as f:
        f["features"][2:] = -1.0
        f["features"].resize(4, axis=0)
        f["labels"].resize(4, axis=0)
        f.attrs.update(rows_done=2, complete=False)
    extract_vgg_features.main(args(root, partial))
    resumed, resumed_labels, attrs = read(partial)
    assert attrs["complete"] and resumed.shape == (5, 4096)
    assert np.allclose(resumed, feats, atol=1e-5) and np.array_equal(resumed_labels, labels)

    extract_vgg_features.main(args(root, partial))  # complete: nothing to do, file unchanged
    assert np.array_equal(read(partial)[0], resumed)


def test_input_errors(extract_vgg_features, image_folder, tmp_path):
    root, _ = image_folder
    out = root / "x.h5"
    offsets, num_labels, digest = extract_vgg_features.index_label_file(str(root / "labels.csv"))
    extract_vgg_features.open_output(str(out), len(offsets), num_labels, digest)[0].close()
    (root / "labels.csv").write_text("img0.jpg,1,0,0\n")
    with pytest.raises(ValueError, match="different label file"):
        extract_vgg_features.main(args(root, out))
    (root / "labels.csv").write_text("img0.jpg,1,0,0\nmissing.png,0,1,0\n")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        extract_vgg_features.main(args(root, root / "y.h5"))
    (root / "labels.csv").write_text("img0.jpg,1,0,0\nimg1.jpg,0,1\n")
    with pytest.raises(ValueError, match="labels.csv:2: expected a path and 3 label values"):
        extract_vgg_features.main(args(root, root / "z.h5"))
    with pytest.raises(FileNotFoundError, match="VGG-19 weights not found"):
        extract_vgg_features.build_fc7_extractor(str(tmp_path / "none.pth"))
