"""Benchmark: can a box classifier tell real unseen RoIs from real seen ones at all?

The GZSD top-1 target asks that at most 25 % of the unseen objects get a seen label while the seen
objects lose at most 5 points. Whatever the synthesized features, a linear box classifier can do
that only if the detector's RoI features put unseen objects apart from seen ones. This benchmark
measures it on the validation worlds of ``benchmarks/zsd_held_out_validation.py`` (their detectors,
never shown the held-out classes, as the real detector is never shown the unseen ones), on the
foreground RoIs (IoU >= ``ZSD.FEATURES.FG_IOU`` with a box, the boxes included) of the first
``--images`` validation images of each world (``zsd_dense_heldout<k>_test_gzsd``, or with ``--family
shapes`` ``zsd_shapes_heldout<k>_test_gzsd``: held-out and seen objects). Each score is turned into "held-out RoIs flagged at a seen cost": the share of the
held-out RoIs scoring above the ``1 - cost`` quantile of the seen RoIs' scores, and the AUROC:

* ``oracle_linear``: a ridge probe *trained on real held-out vs seen RoIs* (two folds by image,
  standardised features): no zero-shot method can know more with a linear head, so its flagged share
  bounds what any retrained linear classifier reaches at that seen cost.
* ``oracle_mlp``: the same with a one-hidden-layer MLP (ReLU) in place of the ridge probe: what a
  non-linear box classifier that had seen real held-out RoIs could reach.
* ``mahalanobis``: distance to the nearest seen-class mean of the world's RoI bank (training images),
  shared covariance shrunk by ``SHRINKAGE`` to its mean eigenvalue: novelty without any unseen
  example.
* ``knn``: cosine distance to the ``KNN_K``-th nearest seen RoI of the bank (L2-normalised rows):
  novelty without class means or any unseen example.
* ``<candidate>_seen_probability``: 1 - the highest seen probability of a trained run's classifier
  under grouped GZSD scoring (``--candidate``, its ``model_zsd.pth`` of generator seed ``--seed``, 0 unless
  given), what its calibration moves.
* ``<candidate>_seen_energy``: minus the log-sum-exp of the classifier's seen logits (background and
  unseen columns left out): the energy novelty score, which does not saturate as a probability does.
* ``<candidate>_plus_mahalanobis``: that score plus ``mahalanobis``, each standardised by its mean and
  standard deviation on the bank's seen RoIs (no unseen example): whether novelty adds to the classifier.

No test image of ``zsd_dense`` or ``zsd_shapes`` is read; nothing here chooses a setting.

    python benchmarks/zsd_unseen_separability.py --output-dir output/zsd_held_out_validation --splits 0,1,2,3
    python benchmarks/zsd_unseen_separability.py --family shapes --candidate shapes_default \\
        --output-dir output/zsd_held_out_validation_shapes --images 200
"""
import argparse
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from zsd_held_out_validation import add_world_arguments, analyse_worlds, check_world_arguments  # noqa: E402
from zsd_methods import dataset_opts  # noqa: E402

from zsdet.evaluation.feature_quality import ridge_probe_scores  # noqa: E402
from zsdet.utils.io import write_json, write_text  # noqa: E402

SHRINKAGE = 0.1  # of the Mahalanobis covariance towards its mean eigenvalue
PROBE_RIDGE = 1e-3  # of the oracle probe, relative to the mean feature energy
BANK_ROWS = 30000  # seen RoIs of the bank for the class means and covariance
MLP_HIDDEN = 256  # hidden units of the non-linear oracle
MLP_STEPS = 300  # its full-batch Adam steps
MLP_LR = 1e-3
MLP_WEIGHT_DECAY = 1e-4
KNN_K = 10  # neighbour of the kNN novelty
KNN_CHUNK = 1024  # rows compared with the bank at once


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_world_arguments(p, families=True)
    p.add_argument("--seen-cost", type=float, default=5.0, help="percent of seen RoIs allowed to be flagged")
    p.add_argument("--candidate", default="flf", help="a run of the output folder whose classifier is scored too "
                                                      "('' = none)")
    p.add_argument("--seed", type=int, default=0, help="the candidate's run of this generator seed (seed<k>)")
    args = p.parse_args(argv)
    check_world_arguments(p, args)
    if not 0 < args.seen_cost < 100:
        p.error("--seen-cost in (0, 100)")
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    return args


def auroc(held_out: torch.Tensor, seen: torch.Tensor) -> float:
    """Probability that a held-out score exceeds a seen one (ties count half); (n,), (m,) scores."""
    scores = torch.cat([held_out, seen]).double()
    ranks = torch.empty_like(scores)
    ranks[torch.argsort(scores)] = torch.arange(1, len(scores) + 1, dtype=scores.dtype)
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    ranks = (torch.zeros(len(counts), dtype=scores.dtype).index_add_(0, inverse, ranks) / counts)[inverse]  # ties
    n = len(held_out)
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * len(seen)))


def flagged_share(held_out: torch.Tensor, seen: torch.Tensor, seen_cost: float) -> float:
    """Share of held-out scores above the ``1 - seen_cost / 100`` quantile of the seen scores."""
    threshold = torch.quantile(seen.double(), 1 - seen_cost / 100)
    return float((held_out.double() > threshold).double().mean())


def mahalanobis_novelty(bank_x: torch.Tensor, bank_y: torch.Tensor, x: torch.Tensor,
                        shrinkage: float = SHRINKAGE) -> torch.Tensor:
    """(n,) distance of each row of ``x`` (n, d) to the nearest class mean of ``bank_x`` (m, d) with
    labels ``bank_y`` (m,), under their shared within-class covariance shrunk towards its mean
    eigenvalue by ``shrinkage``."""
    bank_x, x = bank_x.double(), x.double()
    classes, inverse = torch.unique(bank_y, return_inverse=True)
    means = torch.zeros(len(classes), bank_x.shape[1], dtype=bank_x.dtype).index_add_(0, inverse, bank_x)
    means /= torch.bincount(inverse, minlength=len(classes)).double()[:, None]
    centred = bank_x - means[inverse]
    cov = centred.T @ centred / len(bank_x)
    d = cov.shape[0]
    cov = (1 - shrinkage) * cov + shrinkage * cov.trace() / d * torch.eye(d, dtype=cov.dtype)
    whiten = torch.linalg.cholesky(torch.linalg.inv(cov + 1e-9 * torch.eye(d, dtype=cov.dtype)))
    return torch.cdist(x @ whiten, means @ whiten).min(1).values


def knn_novelty(bank_x: torch.Tensor, x: torch.Tensor, k: int = KNN_K) -> torch.Tensor:
    """(n,) cosine distance of each row of ``x`` (n, d) to its ``k``-th nearest row of ``bank_x`` (m, d),
    m >= k, computed ``KNN_CHUNK`` rows at a time."""
    bank = torch.nn.functional.normalize(bank_x.float(), dim=1)
    rows = torch.nn.functional.normalize(x.float(), dim=1)
    return torch.cat([1 - (chunk @ bank.T).topk(k, dim=1).values[:, -1] for chunk in rows.split(KNN_CHUNK)])


def summed_standardised(scores, references) -> torch.Tensor:
    """(n,) sum over pairs of (score (n,) - mean) / std of its reference scores (m,), e.g. the seen RoIs'."""
    return sum((score.double() - ref.double().mean()) / ref.double().std() for score, ref in zip(scores, references))


def two_fold_scores(x: torch.Tensor, is_held_out: torch.Tensor, image_ids: torch.Tensor, fit_score) -> torch.Tensor:
    """(n,) held-out-ness of each row from ``fit_score(train_x, train_target, test_x)`` ((m,) targets
    +-1, returns (k,) scores) fitted on the other fold of images (folds: image id parity), features
    standardised on the training fold."""
    scores = torch.empty(len(x), dtype=torch.float32)
    target = is_held_out.double() * 2 - 1
    for fold in (0, 1):
        train, test = image_ids % 2 != fold, image_ids % 2 == fold
        mean, std = x[train].mean(0), x[train].std(0) + 1e-6
        scores[test] = fit_score((x[train] - mean) / std, target[train], (x[test] - mean) / std).float()
    return scores


def oracle_linear_scores(x: torch.Tensor, is_held_out: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
    """(n,) held-out-ness of each row from a ridge probe fitted on the other fold (:func:`two_fold_scores`)."""
    return two_fold_scores(x, is_held_out, image_ids,
                           lambda tx, ty, vx: ridge_probe_scores(tx, ty[:, None], vx, PROBE_RIDGE)[:, 0])


def mlp_scores(train_x: torch.Tensor, train_target: torch.Tensor, test_x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(k,) logits on ``test_x`` (k, d) of a one-hidden-layer MLP (``MLP_HIDDEN`` ReLU units) fitted on
    ``train_x`` (m, d) with targets +-1 (m,): full-batch Adam, ``MLP_STEPS`` steps, weight decay
    ``MLP_WEIGHT_DECAY``, both sides weighted equally; seeded (the global generator is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(train_x.shape[1], MLP_HIDDEN), torch.nn.ReLU(),
                                    torch.nn.Linear(MLP_HIDDEN, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=MLP_LR, weight_decay=MLP_WEIGHT_DECAY)
    positive = train_target > 0
    weight = torch.where(positive, 0.5 / positive.double().mean(), 0.5 / (~positive).double().mean()).float()
    tx, ty = train_x.float(), positive.float()
    for _ in range(MLP_STEPS):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(tx)[:, 0], ty, weight=weight)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return model(test_x.float())[:, 0]


def oracle_mlp_scores(x: torch.Tensor, is_held_out: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
    """(n,) held-out-ness of each row from :func:`mlp_scores` fitted on the other fold: what a
    non-linear box classifier that had seen real held-out RoIs could reach."""
    return two_fold_scores(x, is_held_out, image_ids, mlp_scores)


def world_rois(world: int, output_dir: str, num_images: int, family):
    """(features (n, d), labels (n,), image index (n,), cfg, split) of the foreground RoIs of world
    ``world`` of ``family`` (a ``zsd_held_out_validation.WorldFamily``): its first ``num_images``
    validation images, from its detector."""
    from detectron2.data import DatasetCatalog, DatasetMapper
    from detectron2.data.detection_utils import build_augmentation
    from detectron2.modeling import build_model

    from zsdet.config import get_zsdet_cfg
    from zsdet.data.zsd_split import ZeroShotSplit
    from zsdet.engine.checkpoints import load_detector_weights
    from zsdet.modeling import RoIFeatureExtractor

    cfg = get_zsdet_cfg(os.path.join(family.config_dir, family.shared_config),  # the stages-1-2 config
                        [*dataset_opts(f"{family.prefix}_heldout{world}"), "MODEL.ZSD.MODE", "seen"])
    split = ZeroShotSplit.from_dataset(cfg.DATASETS.TRAIN[0])
    detector = build_model(cfg)
    load_detector_weights(detector, os.path.join(output_dir, f"split{world}", "shared", "model_final.pth"))
    f = cfg.ZSD.FEATURES
    extractor = RoIFeatureExtractor(detector, fg_iou=f.FG_IOU, bg_iou=f.BG_IOU, rois_per_image=f.ROIS_PER_IMAGE,
                                    positive_fraction=f.POSITIVE_FRACTION, bg_per_fg=0.0, seed=cfg.SEED)
    # test-time resizing, no flip; is_train keeps the boxes
    mapper = DatasetMapper(is_train=True, augmentations=build_augmentation(cfg, is_train=False),
                           image_format=cfg.INPUT.FORMAT)
    dicts = DatasetCatalog.get(cfg.ZSD.TEST_GZSD)[:num_images]
    features, labels, images = [], [], []
    for start in range(0, len(dicts), f.IMAGES_PER_BATCH):
        batch = dicts[start:start + f.IMAGES_PER_BATCH]
        for index, out in enumerate(extractor([mapper(d) for d in batch]), start):
            features.append(out["features"])
            labels.append(out["labels"])
            images.append(torch.full((len(out["labels"]),), index))
    return torch.cat(features), torch.cat(labels), torch.cat(images), cfg, split


def run_classifier(run_dir: str, split, feature_dim: int) -> torch.nn.Module:
    """The run's retrained box classifier (``model_zsd.pth``), built as the run's ``config.yaml`` builds
    it (its head, the seen group's MLPs included), in eval mode."""
    from zsdet.config import get_zsdet_cfg
    from zsdet.engine.checkpoints import CLASSIFIER_PREFIX
    from zsdet.engine.synthesis_classifier import box_classifier_kind
    from zsdet.modeling.mlp_classifier import build_box_head, seen_group_layout

    state = torch.load(os.path.join(run_dir, "model_zsd.pth"), map_location="cpu", weights_only=False)["model"]
    cfg = get_zsdet_cfg(os.path.join(run_dir, "config.yaml"))
    classifier = build_box_head(box_classifier_kind(cfg), feature_dim, split.num_classes + 1,
                                cfg.ZSD.CLASSIFIER.HIDDEN_UNITS, split.seen_ids, seen_group_layout(cfg.ZSD.CLASSIFIER))
    classifier.load_state_dict({k[len(CLASSIFIER_PREFIX):]: v.float() for k, v in state.items()
                                if k.startswith(CLASSIFIER_PREFIX)})
    return classifier.eval()


def seen_probability(logits: torch.Tensor, split) -> torch.Tensor:
    """(n,) highest seen probability of ``logits`` (n, K + 1) under grouped GZSD scoring (no floor)."""
    from zsdet.modeling.zsd_predictor import gzsd_probs

    unseen_mask = torch.zeros(split.num_classes + 1, dtype=torch.bool)
    unseen_mask[list(split.unseen_ids)] = True
    return gzsd_probs(logits, unseen_mask, "grouped", 0.0, 0.0)[:, list(split.seen_ids)].max(1).values


def seen_energy(logits: torch.Tensor, seen_ids) -> torch.Tensor:
    """(n,) minus the log-sum-exp of the seen columns of ``logits`` (n, K + 1): high where no seen class fits."""
    return -torch.logsumexp(logits[:, list(seen_ids)], dim=1)


def candidate_run_dir(args, world: int) -> str:
    """The ``--candidate`` run of world ``world`` and generator seed ``--seed`` in ``--output-dir``."""
    return os.path.join(args.output_dir, f"split{world}", args.candidate, f"seed{args.seed}")


def world_result(world: int, args) -> dict:
    from zsdet.engine.roi_stages import load_bank

    x, labels, images, cfg, split = world_rois(world, args.output_dir, args.images, args.world_family)
    foreground = labels < split.num_classes
    x, labels, images = x[foreground], labels[foreground], images[foreground]
    is_held_out = torch.isin(labels, torch.tensor(list(split.unseen_ids)))
    bank = load_bank(os.path.join(args.output_dir, f"split{world}", "shared", "roi_bank"), split, cfg.DATASETS.TRAIN[0])
    rows = np.nonzero(np.isin(bank.labels, split.seen_ids))[0]
    rows = np.sort(np.random.default_rng(cfg.SEED).choice(rows, min(BANK_ROWS, len(rows)), replace=False))
    bank_x, bank_y = torch.from_numpy(bank.load(rows)), torch.from_numpy(bank.labels[rows].astype(np.int64))
    scores = {"oracle_linear": oracle_linear_scores(x, is_held_out, images),
              "oracle_mlp": oracle_mlp_scores(x, is_held_out, images),
              "mahalanobis": mahalanobis_novelty(bank_x, bank_y, x), "knn": knn_novelty(bank_x, x)}
    if args.candidate:
        classifier = run_classifier(candidate_run_dir(args, world), split, x.shape[1])
        with torch.no_grad():
            logits, bank_logits = classifier(x.float()), classifier(bank_x.float())
        novelty = -seen_probability(logits, split)
        scores[f"{args.candidate}_seen_probability"] = novelty
        scores[f"{args.candidate}_seen_energy"] = seen_energy(logits, split.seen_ids)
        references = (-seen_probability(bank_logits, split), mahalanobis_novelty(bank_x, bank_y, bank_x))
        scores[f"{args.candidate}_plus_mahalanobis"] = summed_standardised((novelty, scores["mahalanobis"]),
                                                                           references)
    result = {"split": world, "held_out_rois": int(is_held_out.sum()), "seen_rois": int((~is_held_out).sum())}
    for name, s in scores.items():
        result[name] = {"auroc": auroc(s[is_held_out], s[~is_held_out]),
                        "flagged": 100 * flagged_share(s[is_held_out], s[~is_held_out], args.seen_cost)}
    return result


def format_table(results, seen_cost: float) -> str:
    names = [k for k in results[0] if isinstance(results[0][k], dict)]
    rows = ["| score | AUROC held-out vs seen | held-out RoIs flagged at a seen cost of "
            f"{seen_cost:g} % (per world) |", "|---|---|---|"]
    for name in names:
        auc = [r[name]["auroc"] for r in results]
        flagged = [r[name]["flagged"] for r in results]
        rows.append(f"| {name} | {np.mean(auc):.2f} ({', '.join(f'{v:.2f}' for v in auc)}) | "
                    f"{np.mean(flagged):.1f} ({', '.join(f'{v:.1f}' for v in flagged)}) |")
    return "\n".join(rows)


def main(argv=None):
    args = parse_args(argv)
    results, table = analyse_worlds(args, world_result, lambda r: format_table(r, args.seen_cost))
    write_text(os.path.join(args.output_dir, "unseen_separability.md"), table + "\n")
    write_json(os.path.join(args.output_dir, "unseen_separability.json"),
               {"family": args.family, "splits": args.splits, "images": args.images, "seen_cost": args.seen_cost, "worlds": results})


if __name__ == "__main__":
    main()
