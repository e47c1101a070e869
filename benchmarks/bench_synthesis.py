"""Benchmark: one CLF generator iteration (critic steps + encoder/generator step) and synthesis throughput.

Compares zsdet's vectorised implementation (``SynthesisTrainer``: batched critic-step generator
call, one generator call over all (sample, label) pairs, closed-form gradient penalty, under bf16
``AmpLinear`` + ``AmpAdam``, ...) with a
straightforward per-label-loop implementation of the same model written here after the official
Generative_MLZSL ``train.py`` / ``model.py`` structure (one generator call per critic step, a loop
over label slots with boolean indexing, three critic calls per step, two generator calls in the
generator step). Both use the same layer widths, so they do the same arithmetic apart from the
exact rewrites of the vectorised version.

Default sizes are NUS-WIDE's (d 4096, a 300, G/E/D hidden 4096, CLF f hidden 8192, H 8, batch 64,
critic 5, 925 seen + 81 unseen classes, label-set sizes uniform in 1..10), GAN f-VAEGAN. Every
(impl, device, dtype) row runs in its own process (clean peak-memory figure). Timings follow one
warm-up: a generator iteration before the timed iterations, one full synthesis batch (other label
sets, other noise) before the timed synthesis of ``synth_sets`` features. Output: a table, then
one JSON line per row with keys ``impl, device, dtype, sec_per_iteration, synth_features_per_sec``
(plus details).

    python benchmarks/bench_synthesis.py                  # full size, CPU (+ CUDA when present)
    python benchmarks/bench_synthesis.py --quick          # scaled down, seconds
    python benchmarks/bench_synthesis.py --impls vectorised --dtypes bf16 --iters 5
"""
import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn
from torch.nn import functional as F

FULL = dict(feature_dim=4096, emb_dim=300, hidden=4096, ff_hidden=8192, heads=8, batch=64, critic=5, seen=925,
            unseen=81, max_labels=10, synth_sets=8192, synth_batch=512)
QUICK = dict(feature_dim=512, emb_dim=64, hidden=512, ff_hidden=1024, heads=8, batch=32, critic=5, seen=100,
             unseen=10, max_labels=10, synth_sets=1024, synth_batch=512)
DTYPES = {"fp32": None, "bf16": torch.bfloat16}
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2 ** 34)}  # heap only, never trimmed


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="scaled-down sizes (a few seconds per row)")
    for key, value in FULL.items():
        p.add_argument("--" + key.replace("_", "-"), type=int, default=None, help=f"default {value} (--quick: {QUICK[key]})")
    p.add_argument("--gan", default="fvaegan", choices=["fvaegan", "fclswgan"])
    p.add_argument("--iters", type=int, default=3, help="timed generator iterations (after 1 warm-up)")
    p.add_argument("--impls", default="vectorised,naive")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--malloc-tuning", choices=["on", "off"], default="off",
                   help="on: run rows with glibc serving every block from its heap and never trimming it "
                        "(MALLOC_ENV). By default glibc mmaps blocks above 32 MiB afresh at each allocation "
                        "(page faults, zeroing); the zsdet rows avoid such per-iteration blocks, the naive "
                        "rows do not")
    p.add_argument("--row", help=argparse.SUPPRESS)  # internal: run one "impl,device,dtype" row
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


# ----------------------------------------------------------------------------- data
def make_problem(args, device, seed=0):
    """Embeddings (C, a), features (n, d) in [0, 1], seen multi-hot labels (n, C), sizes uniform 1..max."""
    g = torch.Generator().manual_seed(seed)
    c = args.seen + args.unseen
    emb = F.normalize(torch.randn(c, args.emb_dim, generator=g), dim=1)
    n = (args.iters + 1 + args.critic) * args.batch
    sizes = torch.randint(1, args.max_labels + 1, (n,), generator=g)
    rank = torch.rand(n, args.seen, generator=g).argsort(1).argsort(1)
    y = torch.zeros(n, c)
    y[:, :args.seen] = (rank < sizes[:, None]).float()
    x = torch.rand(n, args.feature_dim, generator=g)
    synth_sizes = torch.randint(1, args.max_labels + 1, (args.synth_sets,), generator=g)
    synth_rank = torch.rand(args.synth_sets, c, generator=g).argsort(1).argsort(1)
    synth_y = (synth_rank < synth_sizes[:, None]).float()
    return emb, x, y, synth_y


def generator_gflop_per_feature(args, mean_labels):
    """Forward GFLOP to synthesize one feature with the vectorised CLF (2 per multiply-add)."""
    d, a, h, f = args.feature_dim, args.emb_dim, args.hidden, args.ff_hidden
    g_body = a * h + h * d  # noise part of the first layer + second layer; class part amortised per class
    alf = g_body + a * h
    flf = a * h + mean_labels * h * d
    clf = 2 * (3 * d * d + d * d + d * f) + f * d  # both rows: qkv, W^O, f's first layer; fc2 once (mean first)
    return 2 * (alf + flf + clf) / 1e9


# ----------------------------------------------------------------------------- naive reference
class NaiveMLP(nn.Module):
    def __init__(self, in_dim, cond_dim, hidden, out_dim):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(in_dim + cond_dim, hidden), nn.Linear(hidden, out_dim)

    def forward(self, u, e):
        return self.fc2(F.leaky_relu(self.fc1(torch.cat([u, e], 1)), 0.2))


class NaiveCLFGenerator(nn.Module):
    """The paper's CLF generator written plainly: a Python loop over label slots for FLF."""

    def __init__(self, emb, d, nz, hidden, heads, ff_hidden):
        super().__init__()
        self.register_buffer("emb", emb)
        a = emb.shape[1]
        self.g_a, self.g_f = NaiveMLP(nz, a, hidden, d), NaiveMLP(nz, a, hidden, d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.ff1, self.ff2 = nn.Linear(d, ff_hidden), nn.Linear(ff_hidden, d)
        self.heads = heads

    def forward(self, z, idx, mask):
        b, n_max = idx.shape
        e_mu = (self.emb[idx] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        late = torch.zeros(b, self.ff2.out_features, device=z.device)
        for j in range(n_max):  # loop over label slots, as the official LATE_FUSION
            rows = mask[:, j].nonzero()[:, 0]
            late = late.index_add(0, rows, torch.sigmoid(self.g_f(z[rows], self.emb[idx[rows, j]]).float()))
        x_f = late / mask.sum(1, keepdim=True)
        x_a = torch.sigmoid(self.g_a(z, e_mu).float())
        x = torch.stack([x_f, x_a], 1)
        dh = x.shape[2] // self.heads
        q, k, v = (m(x).view(b, 2, self.heads, dh).transpose(1, 2) for m in (self.q, self.k, self.v))
        alpha = (torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), -1) @ v).transpose(1, 2).reshape(b, 2, -1)
        s = x + self.o(alpha)
        out = self.ff2(F.leaky_relu(self.ff1(s), 0.2)) + s
        return torch.sigmoid(out.mean(1).float()), e_mu


class NaiveModel:
    """f-VAEGAN / f-CLSWGAN iteration in the official train.py structure."""

    def __init__(self, args, emb, device, amp):
        torch.manual_seed(0)
        d, a = args.feature_dim, emb.shape[1]
        self.G = NaiveCLFGenerator(emb, d, a, args.hidden, args.heads, args.ff_hidden).to(device)
        self.D = NaiveMLP(d, a, args.hidden, 1).to(device)
        self.E = NaiveMLP(d, a, args.hidden, 2 * a).to(device)
        self.f_cls = nn.Linear(d, args.seen).to(device).requires_grad_(False)
        self.opt_g, self.opt_d, self.opt_e = (torch.optim.Adam(m.parameters(), lr=1e-4, betas=(0.5, 0.999))
                                              for m in (self.G, self.D, self.E))
        self.args, self.device, self.amp, self.nz = args, device, amp, a

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)

    def iteration(self, group):
        args, dev = self.args, self.device
        for x, y in group:
            x, idx, mask = x.to(dev), *(t.to(dev) for t in labels_to_padded(y))
            self.opt_d.zero_grad()
            noise = torch.randn(len(x), self.nz, device=dev)
            with self.autocast():
                fake, e_mu = self.G(noise, idx, mask)
                real = self.D(x, e_mu).float().mean()
                fk = self.D(fake.detach(), e_mu).float().mean()
            (10 * (fk - real)).backward()
            mix = torch.rand(len(x), 1, device=dev)
            interp = (mix * x + (1 - mix) * fake.detach()).requires_grad_(True)
            with self.autocast():
                out = self.D(interp, e_mu)
                (grad,) = torch.autograd.grad(out, interp, torch.ones_like(out), create_graph=True)
                gp = 10 * 10 * ((grad.float().norm(2, dim=1) - 1) ** 2).mean()
            gp.backward()
            self.opt_d.step()
        self.D.requires_grad_(False)
        self.opt_g.zero_grad()
        self.opt_e.zero_grad()
        with self.autocast():
            if args.gan == "fvaegan":
                mu, log_var = self.E(x, e_mu).float().chunk(2, 1)
                z = torch.randn_like(mu) * torch.exp(0.5 * log_var) + mu
                recon, _ = self.G(z, idx, mask)
                rec = -(x * torch.log(recon.clamp_min(1e-12)) + (1 - x) * torch.log((1 - recon).clamp_min(1e-12)))
                loss = rec.sum(1).mean() - 0.5 * (1 + log_var - mu ** 2 - log_var.exp()).sum(1).mean()
                fake, _ = self.G(torch.randn(len(x), self.nz, device=dev), idx, mask)
                loss = loss - 10 * self.D(fake, e_mu).float().mean()
            else:
                fake, _ = self.G(torch.randn(len(x), self.nz, device=dev), idx, mask)
                loss = -self.D(fake, e_mu).float().mean() + 0.1 * F.binary_cross_entropy_with_logits(
                    self.f_cls(fake).float(), y.to(dev)[:, :args.seen])
        loss.backward()
        self.opt_g.step()
        if args.gan == "fvaegan":
            self.opt_e.step()
        self.D.requires_grad_(True)

    @torch.no_grad()
    def synthesize(self, synth_y):
        self.G.eval()
        out = []
        for start in range(0, len(synth_y), self.args.synth_batch):
            idx, mask = (t.to(self.device) for t in labels_to_padded(synth_y[start:start + self.args.synth_batch]))
            with self.autocast():
                out.append(self.G(torch.randn(len(idx), self.nz, device=self.device), idx, mask)[0].cpu())
        self.G.train()
        return torch.cat(out)


def labels_to_padded(y):
    from zsdet.synthesis import LabelSets
    sets = LabelSets.from_multi_hot(y)
    return sets.idx, sets.mask


# ----------------------------------------------------------------------------- one row
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_row(args, impl, device_name, dtype_name):
    from detectron2.config import get_cfg

    import zsdet
    from zsdet.synthesis import LabelSets, SynthesisTrainer, TensorFeatureSource
    from zsdet.synthesis.distributed import step_groups

    device, amp = torch.device(device_name), DTYPES[dtype_name]
    emb, x, y, synth_y = make_problem(args, device)
    if impl == "vectorised":
        cfg = get_cfg()
        zsdet.add_zsdet_config(cfg)
        s = cfg.SYNTHESIS
        s.FUSION, s.GAN, s.AMP_DTYPE = "clf", args.gan, "bfloat16" if amp is not None else "none"
        s.GEN_HIDDEN = s.DISC_HIDDEN = s.ENC_HIDDEN = args.hidden
        s.CLF_FF_HIDDEN, s.CLF_HEADS, s.CLF_DROPOUT = args.ff_hidden, args.heads, 0.0
        s.BATCH_SIZE, s.CRITIC_ITERS, s.MAX_SET_SIZE = args.batch, args.critic, args.max_labels
        s.CLS_PRETRAIN_EPOCHS, s.SYNTH_BATCH_SIZE = 1, args.synth_batch
        trainer = SynthesisTrainer.from_config(cfg, emb, args.feature_dim, tempfile.mkdtemp(), device=device)
        source = TensorFeatureSource(x, y)
        trainer._prepare(source)
        trainer._wrap_models()
        groups = list(step_groups(source, 0, trainer.s, trainer._usable))
        gen = torch.Generator(device).manual_seed(0)
        seen = trainer.seen_classes.to(device)
        step = lambda group: trainer._iteration(group, gen, seen)  # noqa: E731
        sets = LabelSets.from_multi_hot(synth_y)
        synthesize = lambda: trainer._generate(sets, 1, seed=0, inverse=True)  # noqa: E731
        warm_synth = lambda: trainer._generate(sets[:args.synth_batch], 1, seed=1, inverse=True)  # noqa: E731
    else:
        model = NaiveModel(args, emb.to(device), device, amp)
        batches = [(x[i:i + args.batch], y[i:i + args.batch]) for i in range(0, len(x), args.batch)]
        groups = [batches[i:i + args.critic] for i in range(0, len(batches) - args.critic + 1, 1)]
        step = model.iteration
        synthesize = lambda: model.synthesize(synth_y)  # noqa: E731
        warm_synth = lambda: model.synthesize(synth_y[:args.synth_batch])  # noqa: E731
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step(groups[0])  # warm-up
    sync(device)
    tic, cpu_tic = time.perf_counter(), time.process_time()
    for group in groups[1:args.iters + 1]:
        step(group)
    sync(device)
    sec_per_iteration = (time.perf_counter() - tic) / args.iters
    cpu_sec_per_iteration = (time.process_time() - cpu_tic) / args.iters
    warm_synth()  # one full synthesis batch: its memory and kernels ready, as the training warm-up iteration
    sync(device)
    tic, cpu_tic = time.perf_counter(), time.process_time()
    feats = synthesize()
    sync(device)
    synth_sec, synth_cpu_sec = time.perf_counter() - tic, time.process_time() - cpu_tic
    assert feats.shape == (args.synth_sets, args.feature_dim) and bool(torch.isfinite(feats).all())
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    mean_labels = (args.max_labels + 1) / 2
    return dict(impl=impl, device=device_name, dtype=dtype_name, sec_per_iteration=sec_per_iteration,
                synth_features_per_sec=args.synth_sets / synth_sec, cpu_sec_per_iteration=cpu_sec_per_iteration,
                synth_features_per_cpu_sec=args.synth_sets / synth_cpu_sec, peak_memory_gib=peak / 2 ** 30,
                peak_memory_kind="cuda max allocated" if device.type == "cuda" else "process max RSS",
                torch_threads=torch.get_num_threads(), gan=args.gan, malloc_tuning=args.malloc_tuning,
                synth_gflop_per_feature=generator_gflop_per_feature(args, mean_labels))


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        import platform
        return platform.processor() or "unknown"


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.row:
        print("ROW " + json.dumps(run_row(args, *args.row.split(","))), flush=True)
        return
    rows, load_before = [], os.getloadavg()
    forwarded = [a for a in sys.argv[1:]]
    for device in args.devices.split(","):
        for dtype in args.dtypes.split(","):
            for impl in args.impls.split(","):
                cmd = [sys.executable, os.path.abspath(__file__), *forwarded, "--row", f"{impl},{device},{dtype}"]
                env = dict(os.environ, **(MALLOC_ENV if args.malloc_tuning == "on" else {}))
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                line = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
                if proc.returncode or not line:
                    print(f"row {impl},{device},{dtype} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                    continue
                rows.append(json.loads(line[0][4:]))
    sizes = {k: getattr(args, k) for k in FULL}
    print(f"CPU: {cpu_model()} | torch {torch.__version__} | threads {torch.get_num_threads()} | GAN {args.gan} | "
          f"sizes {sizes} | {args.iters} timed iterations | malloc tuning {args.malloc_tuning}")
    print(f"load average before the rows: {load_before}; after: {os.getloadavg()} (other jobs slow the wall-clock "
          "figures; 'cpu' columns are process CPU seconds, all threads summed)")
    header = (f"{'impl':<11}{'device':<7}{'dtype':<6}{'s/iter':>9}{'cpu s/iter':>11}{'feat/s':>10}{'feat/cpu s':>11}"
              f"{'peak GiB':>10}{'threads':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['impl']:<11}{r['device']:<7}{r['dtype']:<6}{r['sec_per_iteration']:>9.3f}"
              f"{r['cpu_sec_per_iteration']:>11.3f}{r['synth_features_per_sec']:>10.1f}"
              f"{r['synth_features_per_cpu_sec']:>11.1f}{r['peak_memory_gib']:>10.2f}{r['torch_threads']:>8}")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
