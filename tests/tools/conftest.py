"""Fixtures of the tools tests: tools/train_mlzsl.py and tools/extract_vgg_features.py loaded as modules."""
import os

import pytest


@pytest.fixture(scope="module")
def train_mlzsl(load_script):
    """``tools/train_mlzsl.py``."""
    return load_script("tools/train_mlzsl.py")


@pytest.fixture(scope="module")
def extract_vgg_features(load_script):
    """``tools/extract_vgg_features.py``."""
    return load_script("tools/extract_vgg_features.py")



@pytest.fixture
def fake_train_net(tmp_path):
    """``fake_train_net(later_stages)`` -> (a stand-in for the method benchmarks' ``train_net``, the list
    of its calls as (config, run folder relative to ``tmp_path``, stages, opts, config folder or None)).
    Stages 1-2 leave ``model_final.pth`` and a complete ``roi_bank/``; any other run must see them
    (linked) and calls ``later_stages(config, output_dir, opts)``, which writes its ``metrics.json``."""
    def make(later_stages):
        calls = []

        def train_net(config, output_dir, stages, opts, config_dir=None):
            calls.append((config, os.path.relpath(output_dir, tmp_path), list(stages), list(opts), config_dir))
            if "detector" in stages:
                os.makedirs(os.path.join(output_dir, "roi_bank"))
                open(os.path.join(output_dir, "roi_bank", "COMPLETE"), "w").close()
                open(os.path.join(output_dir, "model_final.pth"), "w").close()
            else:
                assert os.path.isfile(os.path.join(output_dir, "roi_bank", "COMPLETE"))  # linked
                later_stages(config, output_dir, opts)
            return {"wall_s": 1.0, "cpu_s": 1.0}
        return train_net, calls
    return make
