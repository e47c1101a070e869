"""Benchmark: where the generator puts the held-out classes, next to where they really are.

On the validation worlds of ``benchmarks/zsd_held_out_validation.py`` (their detectors never saw the
held-out classes, as the real detector never sees the unseen ones) it compares, class by class,
the mean RoI feature of a class as predicted from its embedding with the real mean of its
foreground RoIs (IoU >= ``ZSD.FEATURES.FG_IOU``) in the world's first ``--images`` validation images
(``zsd_dense_heldout<k>_test_gzsd``). Two predictors:

* ``generator``: the mean of ``--per-class`` features a trained run's generator synthesizes for the
  class alone (``--candidate``, seed 0): what the retrained box classifier learns the class from.
* ``ridge``: a linear map of the embeddings (with intercept, ridge ``RIDGE``) fitted, in closed form,
  on the seen classes' mean RoI features of the world's bank (training images): what a linear
  function of the embeddings alone says.

Scores (``placement_scores``), for the held-out classes and, as a contrast, for the seen ones (the
predictors were fitted on those): the cosine between the predicted and the real offset from the mean
of the seen classes' real means; the rank of the class's own real mean among all real class means
by distance to the prediction (0 = nearest); and the share of predictions whose nearest real mean is
a seen class (for a held-out class: its synthesized features sit among a seen class's real ones,
so a classifier that learns it from them gives its real RoIs that seen label or loses them).
No test image of ``zsd_dense`` is read; nothing here chooses a setting.

    python benchmarks/zsd_unseen_placement.py --output-dir output/zsd_held_out_validation --splits 0,1,2,3

Results go to ``unseen_placement_<candidate>.json`` / ``.md`` of the output folder.
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
from zsd_unseen_separability import world_rois  # noqa: E402

from zsdet.utils.io import write_json, write_text  # noqa: E402

RIDGE = 0.1  # of the embedding-to-mean map
MIN_ROIS = 5  # a class needs more real RoIs than this in the validation images to be scored
BANK_ROWS_PER_CLASS = 500  # training RoIs per seen class for its bank mean
SEED = 0  # of the bank rows and the synthesis noise


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_world_arguments(p)
    p.add_argument("--candidate", default="flf", help="the run of the output folder whose generator is scored")
    p.add_argument("--per-class", type=int, default=300, help="features synthesized per class")
    p.add_argument("--embeddings-file", default="",
                   help="class embeddings the candidate was trained with (its ZSD.EMBEDDINGS_FILE; '' = the "
                        "dataset's), used by both predictors")
    args = p.parse_args(argv)
    check_world_arguments(p, args)
    if args.per_class < 1:
        p.error("--per-class >= 1")
    args.embeddings_file = os.path.abspath(args.embeddings_file) if args.embeddings_file else ""
    return args


def class_means(x: np.ndarray, labels: np.ndarray, classes) -> np.ndarray:
    """(len(classes), d) float64 mean of the rows of ``x`` (n, d) labelled with each class."""
    return np.stack([x[labels == c].astype(np.float64).mean(0) for c in classes])


def ridge_map(emb: np.ndarray, targets: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """(a + 1, d) closed-form ridge map (last row: intercept, not penalised) of embeddings (m, a)
    onto targets (m, d)."""
    e = np.concatenate([emb.astype(np.float64), np.ones((len(emb), 1))], axis=1)
    penalty = ridge * np.eye(e.shape[1])
    penalty[-1, -1] = 0.0
    return np.linalg.solve(e.T @ e + penalty, e.T @ targets)


def apply_ridge(weights: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """(m, d) predictions of :func:`ridge_map`'s ``weights`` for embeddings (m, a)."""
    return emb.astype(np.float64) @ weights[:-1] + weights[-1]


def placement_scores(predicted: np.ndarray, own: np.ndarray, real_means: np.ndarray, is_seen: np.ndarray,
                     origin: np.ndarray) -> dict:
    """How well predicted class means (m, d) match the real ones.

    Args:
        predicted: (m, d) predicted means of m classes.
        own: (m,) index into ``real_means`` of each class's own real mean.
        real_means: (K, d) real means of every scored class (seen and held-out).
        is_seen: (K,) bool, True for the seen classes' rows of ``real_means``.
        origin: (d,) the point offsets are taken from (the mean of the seen classes' real means).
    Returns:
        ``cosine``: mean cosine of predicted and real offsets from ``origin``; ``rank``: mean rank of
        the own real mean by distance to the prediction (0 = nearest); ``nearest_own`` and
        ``nearest_seen``: shares (percent) whose nearest real mean is the own one / a seen class's
        other than the own one; ``norm_ratio``: mean ratio of the predicted to the real offset's
        length (< 1: predictions pulled towards ``origin``).
    """
    a, b = predicted - origin, real_means[own] - origin
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.maximum(np.linalg.norm(b, axis=1), 1e-12)
    cosine = (a * b).sum(1) / np.maximum(norm_a * norm_b, 1e-12)
    dist = np.linalg.norm(predicted[:, None, :] - real_means[None, :, :], axis=2)  # (m, K)
    rank = (dist < dist[np.arange(len(own)), own][:, None]).sum(1)
    nearest = dist.argmin(1)
    return {"cosine": float(cosine.mean()), "rank": float(rank.mean()),
            "nearest_own": float(100 * np.mean(nearest == own)),
            "nearest_seen": float(100 * np.mean(is_seen[nearest] & (nearest != own))),
            "norm_ratio": float((norm_a / norm_b).mean())}


def world_result(world: int, args) -> dict:
    from zsdet.data.zsd_split import class_embeddings_of
    from zsdet.engine.roi_stages import load_bank, load_generator, synthesized_set

    x, labels, _, cfg, split = world_rois(world, args.output_dir, args.images, args.world_family)
    x, labels = x.numpy(), labels.numpy()
    cfg.defrost()
    cfg.ZSD.EMBEDDINGS_FILE = args.embeddings_file
    counts = np.bincount(labels, minlength=split.num_classes + 1)
    seen = [c for c in split.seen_ids if counts[c] > MIN_ROIS]
    held_out = [c for c in split.unseen_ids if counts[c] > MIN_ROIS]
    real = class_means(x, labels, seen + held_out)
    is_seen = np.arange(len(real)) < len(seen)
    origin = real[is_seen].mean(0)

    bank = load_bank(os.path.join(args.output_dir, f"split{world}", "shared", "roi_bank"), split, cfg.DATASETS.TRAIN[0])
    rng = np.random.default_rng(SEED)
    rows = np.sort(np.concatenate([rng.choice(r, min(BANK_ROWS_PER_CLASS, len(r)), replace=False)
                                   for r in (np.nonzero(bank.labels == c)[0] for c in split.seen_ids)]))
    bank_means = class_means(bank.load(rows), bank.labels[rows], split.seen_ids)
    emb = class_embeddings_of(cfg.DATASETS.TRAIN[0], cfg.ZSD.EMBEDDINGS_FILE, cfg.ZSD.EMBEDDINGS_NORMALIZE)
    weights = ridge_map(emb[list(split.seen_ids)], bank_means)

    generator = load_generator(cfg, split.class_names, x.shape[1],
                               os.path.join(args.output_dir, f"split{world}", args.candidate, "seed0", "generator"))
    classes = seen + held_out
    synthesized, _ = synthesized_set(generator, classes, args.per_class, seed=SEED)
    predictions = {"generator": synthesized.double().numpy().reshape(len(classes), args.per_class, -1).mean(1),
                   "ridge": apply_ridge(weights, emb[classes])}
    result = {"split": world, "seen_classes": len(seen), "held_out_classes": len(held_out)}
    for name, predicted in predictions.items():
        for group, index in (("held_out", np.nonzero(~is_seen)[0]), ("seen", np.nonzero(is_seen)[0])):
            result[f"{name}/{group}"] = placement_scores(predicted[index], index, real, is_seen, origin)
    return result


def format_table(results) -> str:
    keys = [k for k in results[0] if isinstance(results[0][k], dict)]
    rows = ["| predictor / classes | cosine of offsets | offset length, predicted / real | rank of own mean | "
            "nearest is own (%) | nearest is another seen class (%) | cosine per world |",
            "|---|---|---|---|---|---|---|"]
    for key in keys:
        mean = {s: np.mean([r[key][s] for r in results])
                for s in ("cosine", "norm_ratio", "rank", "nearest_own", "nearest_seen")}
        per_world = ", ".join(f"{r[key]['cosine']:.2f}" for r in results)
        rows.append(f"| {key} | {mean['cosine']:.2f} | {mean['norm_ratio']:.2f} | {mean['rank']:.1f} | "
                    f"{mean['nearest_own']:.1f} | {mean['nearest_seen']:.1f} | {per_world} |")
    return "\n".join(rows)


def main(argv=None):
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    results, table = analyse_worlds(args, world_result, format_table)
    write_json(os.path.join(args.output_dir, f"unseen_placement_{args.candidate}.json"), results)
    write_text(os.path.join(args.output_dir, f"unseen_placement_{args.candidate}.md"), table + "\n")


if __name__ == "__main__":
    main()
