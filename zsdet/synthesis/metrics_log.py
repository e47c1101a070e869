"""The generator's per-epoch log: ``metrics.jsonl`` (one JSON object per epoch, appended) and
TensorBoard scalars ``synthesis/<name>`` in ``tensorboard/`` through detectron2's writer; and
:class:`TimedIterator`, the data-wait time of an epoch (``data_sec``: seconds spent building batches)."""
import json
import os
import time
from typing import Dict, Iterable

from detectron2.utils.events import EventStorage, TensorboardXWriter

from ..utils.io import write_text

__all__ = ["METRICS", "STAT_NAMES", "MetricsLog", "TimedIterator"]

METRICS = "metrics.jsonl"
# the losses of a generator iteration, in the order of its stats vector
STAT_NAMES = ("loss_d", "wasserstein", "gradient_penalty", "loss_g", "adversarial", "classifier_bce",
              "reconstruction", "kl", "semantic_cycle", "unseen_classifier_bce")


class MetricsLog:
    """The log of ``output_dir``; on resume, lines of epochs >= ``keep_epochs_below`` (written after
    the last checkpoint) are dropped (the file is rewritten atomically)."""

    def __init__(self, output_dir: str, keep_epochs_below: int):
        self.path = os.path.join(output_dir, METRICS)
        lines = []
        if os.path.exists(self.path):
            with open(self.path) as f:
                lines = [ln for ln in f if ln.strip() and json.loads(ln)["epoch"] < keep_epochs_below]
        write_text(self.path, "".join(lines))
        self.tb = TensorboardXWriter(os.path.join(output_dir, "tensorboard"))

    def write(self, metrics: Dict[str, float]) -> None:
        """Append the metrics of epoch ``metrics["epoch"]``."""
        with open(self.path, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        with EventStorage(start_iter=metrics["epoch"]) as storage:
            storage.put_scalars(smoothing_hint=False, **{
                f"synthesis/{k}": v for k, v in metrics.items() if k != "epoch" and v == v})
            self.tb.write()

    def close(self) -> None:
        self.tb.close()


class TimedIterator:
    """Iterate ``iterable``, adding the seconds spent waiting for each item to ``seconds``."""

    def __init__(self, iterable: Iterable):
        self._it = iter(iterable)
        self.seconds = 0.0

    def __iter__(self):
        return self

    def __next__(self):
        tic = time.perf_counter()
        try:
            return next(self._it)
        finally:
            self.seconds += time.perf_counter() - tic
