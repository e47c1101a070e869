"""Randomness as a pure function of (seed, key): per training step, per stream item, per image.

:func:`derive_seed` turns integer keys into a seed; every fixed key zsdet passes to it is defined
here, so that no two purposes share a stream. detectron2's augmentations draw from numpy's global
generator and its RPN / RoI samplers from torch's, so results depend on everything the process
drew before. Seeding those global generators from ``derive_seed(seed, <purpose>, key)`` right
before the random work makes it independent of process history: a resumed, sharded or standalone
run draws the same numbers for the same key.
"""
import contextlib
import hashlib
import random

import numpy as np
import torch

# distinct first keys keep the detector's streams of different purposes unrelated
TRAIN_ORDER, TRAIN_AUGMENT, TRAIN_STEP, TRAIN_LOADER, MODEL_INIT, EXTRACT_AUGMENT, EXTRACT_SAMPLE = range(7)
# second keys after a run's seed that never collide with an epoch number
SPLIT_KEY = 2 ** 31  # train / validation split of a feature source
VAL_KEY = 2 ** 31 + 1  # the generator's validation label sets and noise
INIT_KEY = 2 ** 31 + 2  # the generator's initial weights
QUALITY_KEY = 2 ** 31 + 3  # the feature-quality report's synthesis noise and probe folds
BACKGROUND_KEY = 2 ** 31 + 4  # background RoIs of the generator's selection probe
UNSEEN_SETS_KEY = 2 ** 31 + 5  # the box classifier's synthesized label sets with unseen classes
CALIBRATION_KEY = 2 ** 31 + 6  # the held-out RoIs of the GZSD calibration
ALIGNMENT_KEY = 2 ** 31 + 7  # the synthesis noise of the box classifier's quantile alignment
ANCHOR_KEY = 2 ** 31 + 8  # the box classifier's anchor classes and real rows (ANCHOR_SYNTHESIZED)
NEGATIVES_KEY = 2 ** 31 + 9  # the seen group's background-targeted mixtures (SEEN_GROUP_NEGATIVES)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from non-negative integer keys, e.g. ``(seed, epoch)``; distinct keys give
    unrelated streams (numpy's ``SeedSequence`` hashing)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def image_key(image_id) -> int:
    """A non-negative int for ``derive_seed`` from an image id (int, or any string)."""
    if isinstance(image_id, (int, np.integer)) and image_id >= 0:
        return int(image_id)
    return int.from_bytes(hashlib.sha256(str(image_id).encode()).digest()[:7], "little")


def seed_global_rngs(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch's (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded_global_rngs(seed: int):
    """Run the block with the global CPU generators seeded by ``seed``; restore them afterwards."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)  # CPU only: CUDA streams are left alone
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


class PerImageSeededMapper:
    """Wrap a dataset mapper so that its augmentation of an image depends on (seed, image id) only.

    Args:
        mapper: e.g. ``DatasetMapper(cfg, is_train=True)``.
        seed: the run's seed (``cfg.SEED``).
    """

    def __init__(self, mapper, seed: int):
        self.mapper = mapper
        self.seed = seed

    def __call__(self, dataset_dict: dict):
        with seeded_global_rngs(derive_seed(self.seed, EXTRACT_AUGMENT, image_key(dataset_dict["image_id"]))):
            return self.mapper(dataset_dict)
