"""The features stage's batches: fixed groups of the training list (landscape, then portrait images),
the same whatever is done already, and contiguous shares for the ranks."""
import pytest

from zsdet.data.extraction_batches import batches_to_do


def images(shapes):
    return [{"image_id": 100 + i, "width": w, "height": h} for i, (w, h) in enumerate(shapes)]


def test_groups_are_fixed_and_keep_one_orientation():
    dicts = images([(640, 480), (480, 640), (640, 427), (612, 612), (427, 640), (500, 375), (480, 640)])
    assert batches_to_do(dicts, set(), 2) == [[0, 2], [3, 5], [1, 4], [6]]
    # images already in the bank leave their groups, which keep their other members
    assert batches_to_do(dicts, {102, 104, 106}, 2) == [[0], [3, 5], [1]]
    assert batches_to_do(dicts, set(), 1) == [[0], [2], [3], [5], [1], [4], [6]]
    with pytest.raises(ValueError, match="ZSD.FEATURES.IMAGES_PER_BATCH must be >= 1, got 0"):
        batches_to_do(dicts, set(), 0)
