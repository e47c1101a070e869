"""One ``DatasetEvaluator`` per scoring mode, fed from one inference pass.

A model that scores several modes at once (``zsdet.modeling.MultiModeDetector``) returns, per
image, ``{mode: output}``; :class:`ModeEvaluators` hands each mode's outputs to that mode's
evaluator and merges their results (e.g. ``{"zsd": {...}, "gzsd": {...}}``).
"""
from typing import Dict

from detectron2.evaluation import DatasetEvaluator

__all__ = ["ModeEvaluators"]


class ModeEvaluators(DatasetEvaluator):
    """``{mode: evaluator}``; ``process(inputs, outputs)`` with ``outputs[i] = {mode: output}``."""

    def __init__(self, evaluators: Dict[str, DatasetEvaluator]):
        self.evaluators = dict(evaluators)

    def reset(self):
        for evaluator in self.evaluators.values():
            evaluator.reset()

    def process(self, inputs, outputs):
        for mode, evaluator in self.evaluators.items():
            evaluator.process(inputs, [out[mode] for out in outputs])

    def evaluate(self):
        results = {}
        for evaluator in self.evaluators.values():
            results.update(evaluator.evaluate() or {})
        return results
