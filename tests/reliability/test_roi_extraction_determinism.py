"""Issue 10 item 2: each image's RoI bank rows are a pure function of (SEED, image id): extraction
alone, after unrelated random work, or resumed after a kill gives the same rows."""
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from zsdet.config import get_zsdet_cfg
from zsdet.data.feature_bank import FeatureBank, FeatureBankWriter
from zsdet.engine import ZSDPipeline

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "quick_schedules" / "zsd_shapes_tiny_instant_test.yaml"


class Killed(Exception):
    pass


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def detector_weights(tmp_path_factory):
    """An untrained (seeded) tiny detector: its RPN proposals are arbitrary, which is all we need."""
    cfg = get_zsdet_cfg(str(CONFIG), [])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("detector") / "model_final.pth"
    torch.save({"model": build_model(cfg).state_dict()}, path)
    return path


def extract(out: Path, weights: Path) -> dict:
    """Run the features stage into ``out``; {image id: (labels, features)} of the bank."""
    out.mkdir(exist_ok=True)
    if not (out / "model_final.pth").exists():
        shutil.copy(weights, out / "model_final.pth")
    cfg = get_zsdet_cfg(str(CONFIG), ["OUTPUT_DIR", str(out), "ZSD.FEATURES.FLUSH_EVERY", "4"])
    ZSDPipeline(cfg).run_features()
    bank = FeatureBank(str(out / "roi_bank"))
    rows = {}
    for image_id in np.unique(bank.image_ids):
        at = np.nonzero(bank.image_ids == image_id)[0]
        rows[int(image_id)] = (bank.labels[at], bank.load(at))
    return rows


def assert_same_rows(a: dict, b: dict):
    assert a.keys() == b.keys()
    for image_id in a:
        np.testing.assert_array_equal(a[image_id][0], b[image_id][0], err_msg=f"labels of image {image_id}")
        np.testing.assert_array_equal(a[image_id][1], b[image_id][1], err_msg=f"features of image {image_id}")


def test_rows_do_not_depend_on_process_history_or_resume(tmp_path, detector_weights, monkeypatch):
    alone = extract(tmp_path / "alone", detector_weights)
    assert len(alone) > 8 and sum(len(v[0]) for v in alone.values()) > len(alone)

    np.random.rand(17), torch.rand(5), random.random()  # unrelated random work in between
    assert_same_rows(alone, extract(tmp_path / "after_random_work", detector_weights))

    process = FeatureBankWriter.process
    calls = []

    def killed_at_seventh_image(self, inputs, outputs):
        calls.append(1)
        if len(calls) == 7:  # one commit of 4 images done, 2 buffered images lost
            raise Killed
        process(self, inputs, outputs)

    monkeypatch.setattr(FeatureBankWriter, "process", killed_at_seventh_image)
    with pytest.raises(Killed):
        extract(tmp_path / "resumed", detector_weights)
    monkeypatch.setattr(FeatureBankWriter, "process", process)
    torch.rand(3)
    assert_same_rows(alone, extract(tmp_path / "resumed", detector_weights))
