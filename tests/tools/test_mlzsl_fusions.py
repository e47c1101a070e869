"""Plumbing of benchmarks/mlzsl_fusions.py (the runs faked): one run per row and seed, resumed, tabled."""
import json
import os


def test_rows_seeds_resume_and_table(load_script, tmp_path, monkeypatch, capsys):
    bench = load_script("benchmarks/mlzsl_fusions.py")
    calls = []

    def fake_run(cmd, output_dir):
        calls.append(cmd)
        fusion = cmd[cmd.index("SYNTHESIS.FUSION") + 1]
        seed = int(cmd[cmd.index("SYNTHESIS.SEED") + 1])
        value = {"alf": 10.0, "clf": 20.0}[fusion] + seed + (5 if "SYNTHESIS.CLF_INIT" in cmd else 0)
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "results.json"), "w") as f:
            json.dump({"metrics": {t: {"mAP": value, "F1@3": value / 2} for t in ("zsl", "gzsl")},
                       "feature_quality": {"spread_ratio": 1.0, "real_vs_synth_acc": 0.5, "tstr_ap": value}}, f)

    monkeypatch.setattr(bench, "run_logged", fake_run)
    bench.main(["--rows", "alf,clf_fixed", "--seeds", "2", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(d["row"], d["seed"]) for d in lines] == [("alf", 0), ("clf_fixed", 0), ("alf", 1), ("clf_fixed", 1)]
    assert "| clf_fixed | 25.5 ± 0.7 | 12.8 ± 0.4 | 25.5 ± 0.7 |" in out and len(calls) == 4
    assert all("configs/classification/synthetic.yaml" in " ".join(c) for c in calls)
    calls.clear()
    bench.main(["--rows", "alf", "--seeds", "3", "--output-dir", str(tmp_path)])  # finished runs are kept
    assert len(calls) == 1 and "2" == calls[0][calls[0].index("SYNTHESIS.SEED") + 1]
