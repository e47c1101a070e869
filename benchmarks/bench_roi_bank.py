"""Benchmark: RoI bank stages at COCO scale -- bank writing, streamed generator stage, classifier stage.

For every ``--rows`` value F it writes a synthetic bank of F foreground + 2F background RoIs
(d 1024 float16, post-ReLU-like features: ReLU of a class prototype plus noise, about 60 % zeros;
80 classes of which 65 seen, Zipf-like COCO class frequencies; ~100 RoIs an image; parts of 32
images as ``FeatureBankWriter`` commits them) into a temporary directory it deletes, then, each in
fresh processes:

* ``generator``: for each ``--ranks`` value R, R gloo processes build the pipeline's streamed source
  (``ZSDPipeline._foreground`` / ``_source``, default ``ZSD.FEATURES`` budget), train the generator
  for one short epoch with small networks, then stream one whole pass over their share of the
  foreground rows (the reading throughput, ``rows_per_sec``: bank rows read by all ranks / s);
* ``classifier``: ``ZSDPipeline._real_training_set`` (default caps) + one epoch of the box classifier,
  then the whole classifier stage with anchored synthesized features (``stage6_sec``).

``--compression`` first compares part compressions on 65,536 rows (bytes / row, rows / s written
and read). Output: a table, then one JSON line per (rows, ranks, stage) with keys ``fg_rows``,
``ranks``, ``peak_rss_gb`` (largest rank), ``rows_per_sec``, ``stage`` (plus details).

    python benchmarks/bench_roi_bank.py --rows 250000,2000000 --ranks 1,2
    python benchmarks/bench_roi_bank.py --rows 20000 --ranks 1 --compression   # seconds
    python benchmarks/bench_roi_bank.py --rows 250000 --ranks 1 --classifier-opts ZSD.CLASSIFIER.ANCHOR_SYNTHESIZED False
"""
import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zsdet.data.feature_bank import FeatureBank, commit_part, part_bytes, part_path  # noqa: E402
from zsdet.utils.io import write_json  # noqa: E402

D, CLASSES, SEEN, ROWS_PER_IMAGE, IMAGES_PER_PART = 1024, 80, 65, 100, 32


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="250000,1000000,2000000", help="foreground rows per bank, comma-separated")
    p.add_argument("--ranks", default="1,2", help="generator-stage process counts, comma-separated")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where the temporary banks go")
    p.add_argument("--compression", action="store_true", help="also compare part compressions")
    p.add_argument("--keep", action="store_true", help="keep the banks (debugging)")
    p.add_argument("--classifier-opts", nargs="*", default=[], metavar="KEY VALUE",
                   help="config overrides of the whole classifier stage, e.g. ZSD.CLASSIFIER.ANCHOR_SYNTHESIZED False")
    return p.parse_args(argv)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def class_frequencies() -> np.ndarray:
    """Zipf-like frequencies of the 65 seen classes (the most frequent ~22 %, like COCO's person)."""
    p = 1.0 / np.arange(1, SEEN + 1) ** 1.05
    return p / p.sum()


def synthetic_rows(rng, prototypes, labels):
    """Post-ReLU-like float16 features (n, D) of ``labels`` (CLASSES = background)."""
    x = rng.standard_normal((len(labels), D), dtype=np.float32)
    x += prototypes[labels]
    np.maximum(x, 0, out=x)
    return x.astype(np.float16)


def write_bank(bank_dir: str, fg_rows: int, compression=None, seed: int = 0) -> dict:
    """Write the synthetic bank; returns the writing figures (generation time excluded)."""
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(-0.3, 0.5, (CLASSES + 1, D)).astype(np.float32)
    seen = np.sort(rng.choice(CLASSES, SEEN, replace=False))
    fg_per_image = ROWS_PER_IMAGE // 3
    images = -(-fg_rows // fg_per_image)
    names = [f"class{i}" for i in range(CLASSES)]
    written, write_sec, done = 0, 0.0, 0
    for seq, first in enumerate(range(0, images, IMAGES_PER_PART)):
        ids = np.arange(first, min(first + IMAGES_PER_PART, images))
        fg = min(len(ids) * fg_per_image, fg_rows - done)
        done += fg
        labels = np.concatenate([seen[rng.choice(SEEN, fg, p=class_frequencies())], np.full(2 * fg, CLASSES)])
        image_ids = np.concatenate([np.repeat(ids, fg_per_image)[:fg], np.repeat(ids, 2 * fg_per_image)[:2 * fg]])
        feats = synthetic_rows(rng, prototypes, labels)
        tic = time.perf_counter()
        data = part_bytes(feats, labels, image_ids, ids, names, compression)
        commit_part(part_path(bank_dir, 0, seq), data)
        write_sec += time.perf_counter() - tic
        written += len(data)
    rows = 3 * fg_rows
    return {"rows": rows, "bytes_per_row": written / rows, "write_rows_per_sec": rows / write_sec,
            "seen": seen.tolist()}


def compare_compressions(work: str) -> list:
    out = []
    for compression in (None, "lzf", "gzip"):
        d = os.path.join(work, f"compression_{compression}")
        w = write_bank(d, 65536 // 3, compression)
        bank = FeatureBank(d)
        tic = time.perf_counter()
        bank.load(np.arange(len(bank)))
        read = len(bank) / (time.perf_counter() - tic)
        out.append({"compression": compression or "none", "bytes_per_row": round(w["bytes_per_row"], 1),
                    "write_rows_per_sec": round(w["write_rows_per_sec"]), "read_rows_per_sec": round(read)})
        shutil.rmtree(d)
    return out


def stage_config():
    """The default config with a small CPU generator, for the RoI-stage functions."""
    from zsdet.config import get_zsdet_cfg
    cfg = get_zsdet_cfg()
    cfg.SEED = 0
    s = cfg.SYNTHESIS
    s.GEN_HIDDEN = s.DISC_HIDDEN = s.ENC_HIDDEN = s.CLF_FF_HIDDEN = 256
    s.EPOCHS, s.CLS_PRETRAIN_EPOCHS, s.DEVICE = 1, 1, "cpu"
    return cfg


def generator_rank(rank, world, init_file, bank_dir, seen, out_file):
    from zsdet.engine.roi_stages import foreground_rows, generator_source
    from zsdet.synthesis import SynthesisTrainer
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cfg = stage_config()
        bank = FeatureBank(bank_dir)
        train_rows, val_rows = foreground_rows(cfg, bank, seen)
        short = generator_source(cfg, bank, train_rows, samples_per_epoch=512 * world)
        emb = torch.randn(CLASSES, 300, generator=torch.Generator().manual_seed(0))
        trainer = SynthesisTrainer.from_config(cfg, emb, bank.feature_dim, os.path.join(bank_dir, "generator"))
        tic = time.perf_counter()
        stats = trainer.fit(short, generator_source(cfg, bank, val_rows))
        train_sec = time.perf_counter() - tic
        full = generator_source(cfg, bank, train_rows)
        tic, read = time.perf_counter(), 0
        for x, _ in full.iter_rank_batches(256, 0, 1, rank, world):
            read += len(x)
        read_sec = time.perf_counter() - tic
        singles = full.singles_per_pass // world
        write_json(out_file, {"rank": rank, "peak_rss_gb": peak_rss_gb(), "read_singles": singles,
                              "read_sec": read_sec, "samples": read, "train_sec": train_sec,
                              "train_rows": len(train_rows), "epochs_run": stats["epochs_run"]})
    finally:
        if world > 1:
            dist.destroy_process_group()


def classifier_stage(bank_dir, seen, out_file, opts):
    """The real training set and one epoch of a linear head, then the whole stage 6
    (``train_synthesis_classifier``: zeros alignment, anchored synthesized features with the real zero
    share, one epoch; then the config overrides ``opts``) on the generator stage's generator; peak RSS
    covers both."""
    from zsdet.engine.box_classifier import fit_box_classifier, soft_targets
    from zsdet.engine.roi_stages import foreground_rows, real_training_set
    from zsdet.engine.synthesis_classifier import train_synthesis_classifier
    from zsdet.synthesis import SynthesisTrainer
    torch.set_num_threads(1)
    bank = FeatureBank(bank_dir)
    cfg = stage_config()
    tic = time.perf_counter()
    x, y = real_training_set(cfg, bank, seen, np.random.default_rng(0), with_mixtures=True)
    read_sec = time.perf_counter() - tic
    classifier = torch.nn.Linear(bank.feature_dim, CLASSES + 1)
    fit_box_classifier(classifier, x, soft_targets(y), epochs=1, batch_size=256, lr=1e-3, weight_decay=0.0, seed=0)
    del x, y
    c = cfg.ZSD.CLASSIFIER
    c.EPOCHS, c.ALIGN_SYNTHESIZED, c.ANCHOR_SYNTHESIZED, c.ANCHOR_NEAREST, c.ANCHOR_ZEROS = 1, "zeros", True, 0, True
    cfg.merge_from_list(list(opts))
    emb = torch.randn(CLASSES, 300, generator=torch.Generator().manual_seed(0))  # generator_rank's
    trainer = SynthesisTrainer.from_config(cfg, emb, bank.feature_dim, os.path.join(bank_dir, "generator"))
    trainer.load_best()
    _, val_rows = foreground_rows(cfg, bank, seen)
    unseen = sorted(set(range(CLASSES)) - set(seen))
    tic = time.perf_counter()
    _, record = train_synthesis_classifier(cfg, bank, trainer, seen, unseen, np.unique(bank.image_ids[val_rows]))
    write_json(out_file, {"peak_rss_gb": peak_rss_gb(), "rows": record["real_and_mixed"], "read_sec": read_sec,
                          "stage6_sec": time.perf_counter() - tic,
                          "anchored_rows": record.get("anchoring", {}).get("rows", 0)})


def run_processes(target, args_of, n):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=args_of(r)) for r in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"{target.__name__} process exited with {p.exitcode}")


def main():
    args = parse_args()
    work = tempfile.mkdtemp(prefix="bench_roi_bank_", dir=args.dir)
    results = []
    try:
        if args.compression:
            for row in compare_compressions(work):
                print(json.dumps(row), flush=True)
        for fg_rows in (int(v) for v in args.rows.split(",")):
            bank_dir = os.path.join(work, f"bank_{fg_rows}")
            w = write_bank(bank_dir, fg_rows)
            base = {"fg_rows": fg_rows, "bank_rows": w["rows"], "bytes_per_row": round(w["bytes_per_row"], 1),
                    "write_rows_per_sec": round(w["write_rows_per_sec"])}
            print(f"wrote {w['rows']:,} rows: {w['bytes_per_row']:.1f} B/row, {w['write_rows_per_sec']:,.0f} rows/s",
                  flush=True)
            for world in (int(v) for v in args.ranks.split(",")):
                files = [os.path.join(work, f"gen_{world}_{r}.json") for r in range(world)]
                shutil.rmtree(os.path.join(bank_dir, "generator"), ignore_errors=True)
                init = os.path.join(work, f"init_{fg_rows}_{world}")
                run_processes(generator_rank, lambda r: (r, world, init, bank_dir, w["seen"], files[r]), world)
                ranks = [json.load(open(f)) for f in files]
                results.append({**base, "stage": "generator", "ranks": world,
                                "peak_rss_gb": round(max(r["peak_rss_gb"] for r in ranks), 3),
                                "rows_per_sec": round(sum(r["read_singles"] for r in ranks)
                                                      / max(r["read_sec"] for r in ranks)),
                                "train_sec": round(max(r["train_sec"] for r in ranks), 1)})
                print(json.dumps(results[-1]), flush=True)
            out = os.path.join(work, "clf.json")
            run_processes(classifier_stage, lambda r: (bank_dir, w["seen"], out, args.classifier_opts), 1)
            c = json.load(open(out))
            results.append({**base, "stage": "classifier", "ranks": 1, "peak_rss_gb": round(c["peak_rss_gb"], 3),
                            "rows_per_sec": round(c["rows"] / c["read_sec"]), "classifier_rows": c["rows"],
                            "stage6_sec": round(c["stage6_sec"], 1), "anchored_rows": c["anchored_rows"]})
            print(json.dumps(results[-1]), flush=True)
            if not args.keep:
                shutil.rmtree(bank_dir)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\n| fg rows | bank rows | stage | ranks | peak RSS GB (largest rank) | bank rows read / s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['fg_rows']:,} | {r['bank_rows']:,} | {r['stage']} | {r['ranks']} | {r['peak_rss_gb']:.2f} | "
              f"{r['rows_per_sec']:,} |")
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
