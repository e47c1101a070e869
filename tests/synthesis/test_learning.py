"""End to end: CLF-f-VAEGAN learns to synthesize useful unseen multi-label features (fp32 and bf16)."""
import time

import pytest
import torch

from zsdet.evaluation import mean_average_precision
from zsdet.synthesis import (
    LabelSets,
    SynthesisTrainer,
    TensorFeatureSource,
    sample_label_sets,
    train_multilabel_classifier,
    unseen_label_sets,
)

from synthesis_helpers import small_cfg


def unseen_map(trainer, problem, seed=0):
    """Train f_z on synthesized unseen features, return its mAP on the real unseen test samples."""
    c = len(problem.emb)
    seen, unseen = range(problem.num_seen), range(problem.num_seen, c)
    sets = LabelSets.cat([sample_label_sets(trainer.train_sets, problem.emb, seen, unseen, seen_fraction=0.0,
                                            unseen_fraction=1.0, mixed_fraction=0.0, seed=seed),
                          unseen_label_sets(unseen)])
    feats, labels = trainer.synthesize(sets, num_per_set=5, seed=seed)
    head = train_multilabel_classifier(feats, labels[:, problem.num_seen:], epochs=50, batch_size=100, lr=1e-3,
                                       seed=seed, device="cpu")
    with torch.no_grad():
        return mean_average_precision(head(problem.x_test), problem.y_test)


@pytest.mark.parametrize("amp", ["none", "bfloat16"])
def test_clf_fvaegan_synthesizes_discriminative_unseen_features(problem, tmp_path, amp):
    tic = time.process_time()  # CPU seconds: robust to other jobs on the machine
    cfg = small_cfg(FUSION="clf", GAN="fvaegan", AMP_DTYPE=amp, GEN_HIDDEN=128, DISC_HIDDEN=128, ENC_HIDDEN=128,
                    CLF_FF_HIDDEN=128, CLF_DROPOUT=0.0, EPOCHS=5, BATCH_SIZE=32, CRITIC_ITERS=5, LR=1e-3,
                    VAL_SYNTH_SETS=500, GAMMA_G=1.0)  # d = 32: the summed reconstruction is 128x smaller than at d = 4096
    trainer = SynthesisTrainer.from_config(cfg, problem.emb, problem.x_train.shape[1], str(tmp_path))
    untrained = SynthesisTrainer.from_config(cfg, problem.emb, problem.x_train.shape[1], str(tmp_path / "u"))
    result = trainer.fit(TensorFeatureSource(problem.x_train, problem.y_train))
    untrained._prepare(TensorFeatureSource(problem.x_train, problem.y_train))

    random_map = mean_average_precision(torch.rand(problem.y_test.shape, generator=torch.Generator().manual_seed(0)),
                                        problem.y_test)
    learned, before = unseen_map(trainer, problem), unseen_map(untrained, problem)
    assert learned > random_map + 0.25, (learned, random_map)
    assert learned > before + 0.25, (learned, before)
    assert result["best_val_map"] > 0.5  # seen train-on-synthetic / test-on-real probe
    assert time.process_time() - tic < 120
