"""benchmarks/zsd_training_rows.py: its measures on constructed cases with known answers (the rows of a
run need a trained world and are read by the benchmark itself)."""
import pytest
import torch


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/zsd_training_rows.py")


def test_the_foreground_probe_tells_apart_what_differs_and_not_what_does_not(bench):
    g = torch.Generator().manual_seed(0)
    fg = torch.randn(400, 6, generator=g) + torch.tensor([3.0, 0, 0, 0, 0, 0])
    bg = torch.randn(300, 6, generator=g)
    on_fg = bench.foreground_probe(fg, bg)
    assert float(on_fg(fg).double().mean()) > 0.9 and float(on_fg(bg).double().mean()) < 0.1
    middle = torch.randn(500, 6, generator=g) + torch.tensor([1.5, 0, 0, 0, 0, 0])
    assert 0.3 < float(on_fg(middle).double().mean()) < 0.7  # halfway between: half on each side


def test_row_summary_known_answers(bench):
    rows = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    summary = bench.row_summary(rows, lambda r: torch.tensor([True, False]), torch.zeros(3))
    assert summary == {"foreground": 0.5, "norm": 2.5, "zeros": 4 / 6, "to_background": 2.5}


def test_unseen_log_odds_best_and_own(bench):
    logits = torch.tensor([[5.0, 1.0, 3.0, 0.5], [0.0, 2.0, -1.0, 1.0]])  # classes 0-2 (1, 2 unseen), background
    torch.testing.assert_close(bench.unseen_log_odds(logits, [1, 2]), torch.tensor([2.5, 1.0]))
    torch.testing.assert_close(bench.unseen_log_odds(logits, [1, 2], torch.tensor([1, 2])), torch.tensor([0.5, -2.0]))


def test_kept_rows_are_the_first_fits_and_nothing_is_trained(bench, monkeypatch):
    """The stage runs up to its first fit, whose rows come back; the stage's fit is restored after."""
    import zsdet.engine.synthesis_classifier as stage

    fit = stage.fit_box_classifier
    rows = (torch.ones(3, 2), torch.eye(3))

    def fake_stage(cfg, bank, trainer, seen_ids, unseen_ids, held_out_images, detector_weights):
        stage.fit_box_classifier(None, *rows, epochs=1)
        raise AssertionError("fitted past the first fit")

    monkeypatch.setattr(stage, "train_synthesis_classifier", fake_stage)
    split = type("Split", (), {"seen_ids": (0,), "unseen_ids": (1,)})
    x, t = bench.kept_training_rows(None, None, None, split, None, "w.pth")
    assert x is rows[0] and t is rows[1] and stage.fit_box_classifier is fit


@pytest.mark.parametrize("argv", [["--candidates", ""], ["--seed", "-1"], ["--splits", "9"]])
def test_bad_arguments_are_refused(bench, argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_the_gate_flags_held_out_rois_only_where_the_synthesized_rows_lie_like_them(bench):
    """Synthesized rows drawn like the real held-out RoIs: the gate ranks held-out above seen; drawn
    elsewhere (apart from both): it is at chance on them."""
    g = torch.Generator().manual_seed(0)
    shift = torch.tensor([4.0, 0, 0, 0, 0])
    seen_rows, seen_x = torch.randn(600, 5, generator=g), torch.randn(300, 5, generator=g)
    held_x = torch.randn(300, 5, generator=g) + shift
    for synthesized, low, high in ((torch.randn(400, 5, generator=g) + shift, 0.95, 1.01),
                                   (torch.randn(400, 5, generator=g) + shift.roll(1), 0.3, 0.7)):
        with torch.no_grad():  # as the benchmark calls it
            gate = bench.synthesized_gate(seen_rows, synthesized, held_x, seen_x)
        assert low < gate["gate_auroc_held_out_vs_seen"] < high
        assert 0 <= gate["gate_flagged"] <= 1
