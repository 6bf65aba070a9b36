"""The speech study: Pareto front, exact operation counts, the pipeline on espeak-tiny, reproduction."""

import json

import numpy as np
import pytest

from deltarnn.cli import main
from deltarnn.quant.golden import emulate
from deltarnn.quant.quantizer import quantize
from deltarnn.speech.study import (choose_point, evaluate_qmodel, make_evalset, masked_stats, pareto_front, run_study,
                      study_config, summarize_counts)

from tests.helpers import random_input, random_model


def test_pareto_front_on_hand_made_points():
    pts = [{"per": 20.0, "eliminated_pct": 10.0},   # 0: front (lowest PER)
           {"per": 21.0, "eliminated_pct": 40.0},   # 1: front
           {"per": 22.0, "eliminated_pct": 30.0},   # 2: dominated by 1
           {"per": 25.0, "eliminated_pct": 70.0},   # 3: front
           {"per": 25.0, "eliminated_pct": 60.0},   # 4: dominated by 3 (same PER, less eliminated)
           {"per": 30.0, "eliminated_pct": 70.0},   # 5: dominated by 3 (same eliminated, more PER)
           {"per": 21.0, "eliminated_pct": 40.0},   # 6: duplicate of 1: only the first is kept
           {"per": 40.0, "eliminated_pct": 90.0}]   # 7: front
    assert pareto_front(pts) == [0, 1, 3, 7]
    assert pareto_front([]) == []
    front = [pts[i] for i in pareto_front(pts)]
    assert choose_point(front, base_per=20.0, tol=1.0) == 1        # 21.0 is within 1 point
    assert choose_point(front, base_per=19.0, tol=1.0) == 0
    assert choose_point(front, base_per=10.0, tol=1.0) is None
    assert choose_point(front, base_per=24.0, tol=1.0) == 2        # index into front: (25, 70)


@pytest.mark.parametrize("cell", ["lstm", "gru", "ligru", "sru"])
def test_padded_batches_give_per_utterance_results_exactly(cell):
    model = random_model(cell, input_size=5, hidden=6, layers=2, classes=4, seed=3)
    lengths = [7, 12, 3, 12, 9]
    xs = [random_input(1, n, 5, seed=i) for i, n in enumerate(lengths)]
    qm = quantize(model, random_input(4, 20, 5, seed=9), wbits=4, abits=6)
    qm.set_thresholds(1, 2)
    width = max(lengths)
    batch = np.zeros((len(xs), width, 5), np.float32)
    for i, x in enumerate(xs):
        batch[i, :lengths[i]] = x[0]
    r = emulate(qm, batch)
    counts = summarize_counts(masked_stats(qm, r, np.array(lengths)))
    alone = [emulate(qm, x) for x in xs]
    for i, a in enumerate(alone):
        np.testing.assert_array_equal(r.outputs_fx[i, :lengths[i]], a.outputs_fx[0])
    for name in qm.paths():
        for key in ("elements", "deltas", "macs_dense", "macs_needed"):
            assert counts["paths"][name][key] == sum(getattr(a.stats.paths[name], key) for a in alone), (name, key)
    assert counts["macs_needed"] == sum(a.stats.macs_needed for a in alone)


def test_evaluate_bidirectional_one_utterance_at_a_time():
    model = random_model("gru", input_size=5, hidden=6, layers=1, bidirectional=True, classes=4, seed=1)
    qm = quantize(model, random_input(4, 20, 5), wbits=4, abits=8)

    class U:
        def __init__(self, n, seed):
            self.features = random_input(1, n, 5, seed=seed)[0]
            self.labels = np.arange(n) % 4
            self.id = f"u{seed}"

    utts = [U(n, i) for i, n in enumerate([5, 9, 6])]
    res = evaluate_qmodel(qm, make_evalset("x", utts, batch=3), 1, 1)
    qm.set_thresholds(1, 1)
    alone = [emulate(qm, u.features[None]) for u in utts]
    assert res["macs_needed"] == sum(a.stats.macs_needed for a in alone)
    assert res["macs_dense"] == sum(a.stats.macs_dense for a in alone)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    cfg = study_config(tiny=True, out=str(out), cells=["gru", "sru"])
    results = run_study(cfg, progress=False)
    return out, results


def test_study_writes_table_json_and_plots(tiny_study):
    out, results = tiny_study
    for name in ("study.md", "study.json", "pareto.png", "sparsity.png", "widths.png",
                 "qmodels/gru.qmodel", "qmodels/sru.qmodel", "models/gru.pt", "inputs/0000.npy"):
        assert (out / name).exists(), name
    for name in ("pareto.png", "sparsity.png", "widths.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    md = (out / "study.md").read_text()
    assert "| GRU |" in md and "| SRU |" in md and "compression %" in md
    data = json.loads((out / "study.json").read_text())
    assert [r["cell"] for r in data["table"]] == ["gru", "sru"]
    for c in ("gru", "sru"):
        r = data["cells"][c]
        assert len(r["width_sweep"]) == 4            # w {2, 4} x a {6, 8}
        assert r["chosen"]["wbits"] in (2, 4)
        grid = r["grid_select"]
        assert len(grid) == (4 if c == "gru" else 2)  # SRU has no h path: theta_x only
        front = [grid[i] for i in pareto_front(grid)]
        assert r["front_select"] == front
        assert all(0 <= p["eliminated_pct"] <= 100 for p in grid)


def test_pareto_point_reproduced_exactly_with_the_cli(tiny_study, capsys):
    out, results = tiny_study
    cell = "gru"
    r = results["cells"][cell]
    point = max(r["front_report"], key=lambda p: p["eliminated_pct"])
    inputs = sorted((out / "inputs").glob("[0-9]*.npy"))
    assert len(inputs) == results["report"]["utterances"]
    labels = np.load(out / "inputs" / "labels.npz")
    dense = needed = 0
    scores = []
    for f in inputs:
        y = f.with_suffix(".out.npy")
        assert main(["emulate", r["qmodel"], "--input", str(f), "--theta-x", str(point["theta_x"]),
                     "--theta-h", str(point["theta_h"]), "--json", "--output", str(y)]) == 0
        stats = json.loads(capsys.readouterr().out)["stats"]
        dense += stats["macs_dense"]
        needed += stats["macs_needed"]
        scores.append(np.load(y)[0])
    assert (dense, needed) == (point["macs_dense"], point["macs_needed"])
    assert 100 * (1 - needed / dense) == pytest.approx(point["eliminated_pct"], abs=1e-9)
    from deltarnn.speech.datasets import phone_error_rate
    per = 100 * phone_error_rate(scores, [labels[f.stem] for f in inputs])
    assert per == pytest.approx(point["per"], abs=1e-9)


def test_study_cli_errors(tmp_path, capsys):
    assert main(["study", "--dataset", "nosuch", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deltarnn: error:") and "nosuch" in err and "\n" not in err
    assert main(["study", "--models", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err
