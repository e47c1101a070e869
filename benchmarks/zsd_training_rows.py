"""Benchmark: what the retrained box classifier trains on, measured against real RoIs.

On the validation worlds of ``benchmarks/zsd_held_out_validation.py``, for each ``--candidates`` run
(``<out>/split<k>/<candidate>/seed<s>``), the classifier stage is rebuilt from the run's config,
RoI bank and generator and stopped at its first fit, whose rows are kept: exactly what the run's box
classifier trained on (real seen RoIs, real background, synthesized unseen rows, anchored if the run
anchors them). Beside them, the real held-out RoIs of the world's first ``--images`` validation
images (the world's detector never saw their classes). Per kind of row:

* ``foreground``: share of rows a ridge probe puts on the foreground side, the probe fitted on the
  kept real seen rows (1) against the kept real background rows (0), standardised features;
* ``norm``: mean L2 norm; ``zeros``: share of exact zeros; ``to_background``: mean distance to the
  mean of the real background rows;
* ``odds_best`` / ``odds_own``: the run's classifier (``model_zsd.pth``) on the rows, log-odds of
  the best unseen class / the row's own class against background (the [unseen, background] softmax
  of grouped scoring and ZSD), and ``auroc_held_out_vs_background``: the best unseen class's
  log-odds ranking real held-out RoIs above real background rows;
* ``gate_auroc_held_out_vs_seen`` / ``gate_flagged``: a one-hidden-layer gate
  (``zsd_unseen_separability.mlp_scores``) fitted on the kept rows, real seen (0) against synthesized
  unseen (1), then scoring the world's real held-out RoIs against its real seen validation RoIs: AUROC
  and the held-out share flagged at a ``SEEN_COST`` % seen cost. It asks how much the synthesized rows
  say about where real unseen RoIs lie apart from seen ones (``zsd_unseen_separability.py`` has the
  oracles and the classifier's own scores on the same RoIs).

It asks whether the synthesized rows differ from real unseen RoIs in a way that a generator change
moves (e.g. the CLF fusion block, bypassed in ``clf_nofuse``). Nothing here chooses a setting; no
test image of ``zsd_dense`` is read.

    python benchmarks/zsd_training_rows.py --output-dir output/zsd_r42_plain --splits 0,2 \\
        --candidates clf,clf_nofuse,flf,alf
"""
import argparse
import os
import sys
from typing import Callable, Dict

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from zsd_held_out_validation import add_world_arguments, analyse_worlds, check_world_arguments  # noqa: E402
from zsd_unseen_separability import auroc, flagged_share, mlp_scores, run_classifier, world_rois  # noqa: E402

from zsdet.utils.io import write_json, write_text  # noqa: E402

KINDS = ("synthesized_unseen", "real_held_out", "real_seen", "real_background")
PROBE_RIDGE = 1e-2  # of the foreground probe, relative to the standardised features' energy
SEEN_COST = 5.0  # percent of real seen RoIs the gate may flag


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_world_arguments(p)
    p.add_argument("--candidates", default="flf", help="comma-separated runs of the output folder")
    p.add_argument("--seed", type=int, default=0, help="the candidates' runs of this generator seed (seed<k>)")
    args = p.parse_args(argv)
    check_world_arguments(p, args)
    args.candidates = [c for c in args.candidates.split(",") if c]
    if not args.candidates:
        p.error("--candidates names no run")
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    return args


class _RowsKept(Exception):
    """Raised in place of the classifier stage's first fit, carrying its rows."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor):
        super().__init__("rows kept")
        self.features, self.targets = features, targets


def kept_training_rows(cfg, bank, trainer, split, held_out_images: np.ndarray, detector_weights: str):
    """(features (n, d), soft targets (n, K + 1)) the run's classifier stage fits first (the linear
    head's rows: real seen, real background and synthesized unseen), by running
    :func:`~zsdet.engine.synthesis_classifier.train_synthesis_classifier` up to that fit."""
    import zsdet.engine.synthesis_classifier as stage

    def keep(module, features, targets, **_):
        raise _RowsKept(features, targets)

    fit, stage.fit_box_classifier = stage.fit_box_classifier, keep
    try:
        stage.train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out_images,
                                         detector_weights)
    except _RowsKept as kept:
        return kept.features, kept.targets
    finally:
        stage.fit_box_classifier = fit
    raise RuntimeError("the classifier stage fitted nothing (ZSD.CLASSIFIER.RECIPE 'suzod' is not measured here)")


def foreground_probe(foreground: torch.Tensor, background: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Ridge probe on standardised features, foreground (n, d) -> 1, background (m, d) -> 0, both sides
    weighted equally; returns ``x (k, d) -> (k,)`` bool, True on the foreground side (score > 0.5)."""
    x = torch.cat([foreground, background]).double()
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = torch.cat([(x - mean) / std, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    y = torch.cat([torch.ones(len(foreground)), torch.zeros(len(background))]).double()
    weight = torch.cat([torch.full((len(foreground),), 0.5 / len(foreground)),
                        torch.full((len(background),), 0.5 / len(background))]).double()
    gram = z.T @ (z * weight[:, None])
    ridge = PROBE_RIDGE * torch.trace(gram) / len(gram) * torch.eye(len(gram), dtype=x.dtype)
    w = torch.linalg.solve(gram + ridge, z.T @ (weight * y))

    def on_foreground(rows: torch.Tensor) -> torch.Tensor:
        r = (rows.double() - mean) / std
        return (r @ w[:-1] + w[-1]) > 0.5

    return on_foreground


def unseen_log_odds(logits: torch.Tensor, unseen_ids, own: torch.Tensor = None) -> torch.Tensor:
    """Log-odds against background (the last column) of the best unseen class of each row, or with
    ``own`` (n,) of the row's own class; logits (n, K + 1)."""
    if own is not None:
        return logits.gather(1, own[:, None])[:, 0] - logits[:, -1]
    return logits[:, list(unseen_ids)].max(1).values - logits[:, -1]


def synthesized_gate(seen_rows: torch.Tensor, synthesized_rows: torch.Tensor, held_out_x: torch.Tensor,
                     seen_x: torch.Tensor) -> Dict[str, float]:
    """AUROC and share flagged at ``SEEN_COST`` of real held-out RoIs (n, d) against real seen ones (m, d)
    by a gate fitted on ``seen_rows`` (0) against ``synthesized_rows`` (1), features standardised on those."""
    train = torch.cat([seen_rows, synthesized_rows]).float()
    target = torch.cat([-torch.ones(len(seen_rows)), torch.ones(len(synthesized_rows))]).double()
    mean, std = train.mean(0), train.std(0) + 1e-6
    with torch.enable_grad():
        scores = mlp_scores((train - mean) / std, target, (torch.cat([held_out_x, seen_x]).float() - mean) / std)
    held, seen = scores[:len(held_out_x)], scores[len(held_out_x):]
    return {"gate_auroc_held_out_vs_seen": auroc(held, seen), "gate_flagged": flagged_share(held, seen, SEEN_COST)}


def row_summary(rows: torch.Tensor, on_foreground, background_mean: torch.Tensor) -> Dict[str, float]:
    """Foreground share, mean norm, share of exact zeros and mean distance to ``background_mean`` of (n, d) rows."""
    return {"foreground": float(on_foreground(rows).double().mean()), "norm": float(rows.norm(dim=1).mean()),
            "zeros": float((rows == 0).double().mean()),
            "to_background": float((rows - background_mean).norm(dim=1).mean())}


def candidate_result(run_dir: str, held_out_x: torch.Tensor, held_out_y: torch.Tensor, seen_x: torch.Tensor) -> Dict:
    from zsdet.config import get_zsdet_cfg
    from zsdet.data.zsd_split import ZeroShotSplit
    from zsdet.engine.roi_stages import foreground_rows, load_bank, load_generator

    cfg = get_zsdet_cfg(os.path.join(run_dir, "config.yaml"))
    split = ZeroShotSplit.from_dataset(cfg.DATASETS.TRAIN[0])
    bank = load_bank(os.path.join(run_dir, "roi_bank"), split, cfg.DATASETS.TRAIN[0])
    trainer = load_generator(cfg, split.class_names, bank.feature_dim, os.path.join(run_dir, "generator"))
    _, val_rows = foreground_rows(cfg, bank, split.seen_ids)
    with torch.enable_grad():  # the stage's own steps (alignment, anchoring) may fit small probes
        x, t = kept_training_rows(cfg, bank, trainer, split, np.unique(bank.image_ids[val_rows]),
                                  os.path.join(run_dir, "model_final.pth"))
    unseen = torch.zeros(t.shape[1], dtype=torch.bool)
    unseen[list(split.unseen_ids)] = True
    synthesized, background = t[:, unseen].sum(1) > 0, t[:, -1] == 1
    rows = {"synthesized_unseen": x[synthesized], "real_held_out": held_out_x,
            "real_seen": x[~synthesized & ~background], "real_background": x[background]}
    own = {"synthesized_unseen": t[synthesized].argmax(1), "real_held_out": held_out_y}
    on_foreground = foreground_probe(rows["real_seen"], rows["real_background"])
    classifier = run_classifier(run_dir, split, x.shape[1])
    result, odds = {}, {}
    for kind in KINDS:
        result[kind] = row_summary(rows[kind], on_foreground, rows["real_background"].mean(0))
        logits = classifier(rows[kind])
        odds[kind] = unseen_log_odds(logits, split.unseen_ids)
        result[kind]["odds_best"] = float(odds[kind].mean())
        if kind in own:
            result[kind]["odds_own"] = float(unseen_log_odds(logits, split.unseen_ids, own[kind]).mean())
    result["auroc_held_out_vs_background"] = auroc(odds["real_held_out"], odds["real_background"])
    result.update(synthesized_gate(rows["real_seen"], rows["synthesized_unseen"], held_out_x, seen_x))
    return result


def world_result(world: int, args) -> Dict:
    x, labels, _, _, split = world_rois(world, args.output_dir, args.images, args.world_family)
    held_out = torch.isin(labels, torch.tensor(list(split.unseen_ids)))
    seen = torch.isin(labels, torch.tensor(list(split.seen_ids)))
    result = {"split": world}
    for candidate in args.candidates:
        run_dir = os.path.join(args.output_dir, f"split{world}", candidate, f"seed{args.seed}")
        result[candidate] = candidate_result(run_dir, x[held_out], labels[held_out], x[seen])
    return result


def format_table(results, candidates) -> str:
    """Mean over worlds of each candidate's figures, one row per candidate and kind of row."""
    rows = ["| candidate | rows | foreground (%) | norm | exact zeros (%) | to background | log-odds, best unseen "
            "| log-odds, own class | AUROC held-out vs background | gate: AUROC held-out vs seen / flagged (%) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for c in candidates:
        for kind in KINDS:
            mean = {k: float(np.mean([r[c][kind][k] for r in results])) for k in results[0][c][kind]}
            own = f"{mean['odds_own']:.2f}" if "odds_own" in mean else ""
            area = gate = ""
            if kind == "real_held_out":
                area = f"{np.mean([r[c]['auroc_held_out_vs_background'] for r in results]):.3f}"
                gate = (f"{np.mean([r[c]['gate_auroc_held_out_vs_seen'] for r in results]):.3f} / "
                        f"{100 * np.mean([r[c]['gate_flagged'] for r in results]):.1f}")
            rows.append(f"| {c} | {kind} | {100 * mean['foreground']:.1f} | {mean['norm']:.1f} | "
                        f"{100 * mean['zeros']:.1f} | {mean['to_background']:.1f} | {mean['odds_best']:.2f} | {own} | "
                        f"{area} | {gate} |")
    return "\n".join(rows)


def main(argv=None):
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    results, table = analyse_worlds(args, world_result, lambda r: format_table(r, args.candidates))
    name = "_".join(args.candidates)
    write_json(os.path.join(args.output_dir, f"training_rows_{name}_seed{args.seed}.json"), results)
    write_text(os.path.join(args.output_dir, f"training_rows_{name}_seed{args.seed}.md"), table + "\n")


if __name__ == "__main__":
    main()
