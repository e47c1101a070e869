"""Checks shared by the tests of the built-in generated datasets (shapes, dense scenes)."""
import json
import os


def read_split(dataset_dir, split):
    """The COCO-format json of ``split`` (``train``, ``val``, ``test_zsd``, ``test_gzsd``)."""
    with open(os.path.join(dataset_dir, "annotations", f"{split}.json")) as f:
        return json.load(f)


def file_list(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def assert_generation_is_deterministic(generate, out, config, other_seed_config, tmp_path, num_images):
    """``generate(dir, config)`` again writes byte-identical files to ``out`` (``num_images`` PNGs);
    another seed writes other annotations."""
    again = tmp_path / "again"
    again.mkdir()
    generate(str(again), config)
    files = file_list(out)
    assert files == file_list(again)
    assert len([f for f in files if f.endswith(".png")]) == num_images
    for rel in files:
        with open(os.path.join(out, rel), "rb") as a, open(os.path.join(again, rel), "rb") as b:
            assert a.read() == b.read(), rel
    other = tmp_path / "other"
    other.mkdir()
    generate(str(other), other_seed_config)
    assert read_split(other, "train") != read_split(out, "train")
