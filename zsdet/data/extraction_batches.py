"""The batches of the ``features`` stage: fixed groups of the training list, shared out to the ranks.

The training images are cut into groups of ``images_per_batch``, landscape images first, then
portrait ones (detectron2's aspect-ratio grouping: little padding in a batch), each in the
dataset's order; one forward pass of the RoI extractor takes one group (less its images already in
the bank). An
image's rows depend on (``SEED``, image id) and on the images padded with it into one batch, that
is on its group only: not on the number of ranks, on which rank took it, or on where a killed run
stopped (a part holds whole batches, so a rerun finds each group done or to do as a whole).

The list of batches to do is decided once (rank 0, from the bank's parts) and shared; each rank
takes a contiguous run of it (detectron2's ``InferenceSampler``) and reads its images with
``DATALOADER.NUM_WORKERS`` worker processes.
"""
from typing import Callable, Dict, List, Sequence

from detectron2.data.build import trivial_batch_collator
from detectron2.data.common import DatasetFromList, MapDataset
from detectron2.data.samplers import InferenceSampler
from torch.utils.data import DataLoader

__all__ = ["batches_to_do", "extraction_loader"]


def batches_to_do(dicts: Sequence[Dict], done: set, images_per_batch: int) -> List[List[int]]:
    """Indices into ``dicts`` of the images whose ``image_id`` is not in ``done``, as the non-empty
    remainders of the fixed groups (module docstring)."""
    if images_per_batch < 1:
        raise ValueError(f"ZSD.FEATURES.IMAGES_PER_BATCH must be >= 1, got {images_per_batch}")
    portrait = [d.get("height", 0) > d.get("width", 0) for d in dicts]
    batches = []
    for side in (False, True):
        order = [i for i in range(len(dicts)) if portrait[i] == side]
        for start in range(0, len(order), images_per_batch):
            batch = [i for i in order[start:start + images_per_batch] if dicts[i]["image_id"] not in done]
            if batch:
                batches.append(batch)
    return batches


def extraction_loader(dicts: Sequence[Dict], batches: List[List[int]], mapper: Callable,
                      num_workers: int) -> DataLoader:
    """This rank's contiguous share of ``batches`` (the same on every call), each batch a list of
    ``mapper(dicts[i])``, read by ``num_workers`` worker processes (0: the calling process)."""
    mine = [batches[i] for i in InferenceSampler(len(batches))]
    dataset = MapDataset(DatasetFromList(list(dicts), copy=False), mapper)
    return DataLoader(dataset, batch_sampler=mine, num_workers=num_workers, collate_fn=trivial_batch_collator)
