"""MultiLabelEvaluator: collects batches and reports the metric functions in percent."""
import json

import numpy as np
import pytest
import torch

from zsdet.evaluation import MultiLabelEvaluator, f1_at_k, mean_average_precision


def test_batches_in_both_output_forms_give_the_functions_values(tmp_path):
    rng = np.random.default_rng(0)
    scores = rng.random((10, 6)).astype(np.float32)
    labels = rng.choice([-1, 0, 1], size=(10, 6), p=[0.4, 0.2, 0.4])
    labels[:, 5] = -1  # no positive -> null in the JSON
    evaluator = MultiLabelEvaluator(str(tmp_path), ks=(2, 3), convention="official", task="gzsl",
                                    class_names=list("abcdef"))
    evaluator.reset()
    inputs = [{"labels": torch.from_numpy(y)} for y in labels]
    evaluator.process(inputs[:4], torch.from_numpy(scores[:4]))  # (B, C) tensor
    evaluator.process(inputs[4:], [{"scores": torch.from_numpy(s)} for s in scores[4:]])
    result = evaluator.evaluate()
    assert set(result) == {"gzsl"}
    r = result["gzsl"]
    expected = mean_average_precision(scores, labels, convention="official")
    assert r["mAP"] == pytest.approx(100 * expected)
    for k in (2, 3):
        f1, p, rec = f1_at_k(scores, labels, k)
        got = (r[f"F1@{k}"], r[f"P@{k}"], r[f"R@{k}"])
        assert got == pytest.approx((100 * f1, 100 * p, 100 * rec))
    saved = json.loads((tmp_path / "gzsl_results.json").read_text())
    assert saved["per_label_AP"]["f"] == 0.0  # official convention: no positive counts as 0
    assert saved["summary"] == pytest.approx(r)


def test_standard_convention_nulls_and_shape_errors(tmp_path):
    evaluator = MultiLabelEvaluator(str(tmp_path), ks=(1,))
    evaluator.process([{"labels": [1, 0]}, {"labels": [0, 0]}], np.array([[0.9, 0.1], [0.2, 0.3]]))
    result = evaluator.evaluate()["multilabel"]
    assert result == pytest.approx({"mAP": 100.0, "F1@1": 100 * 2 / 3, "P@1": 50.0, "R@1": 100.0})
    saved = json.loads((tmp_path / "multilabel_results.json").read_text())
    assert saved["per_label_AP"]["1"] is None
    with pytest.raises(ValueError, match="differ in shape"):
        evaluator.process([{"labels": [1, 0, 0]}], np.zeros((1, 2)))
    evaluator.reset()
    assert evaluator.evaluate() == {}
