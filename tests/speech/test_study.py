"""The speech study: Pareto front, the search on a metric table, goals, exact operation counts, the pipeline on
espeak-tiny, reproduction."""

import json
import subprocess
import sys
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pytest

from deltarnn.cli import main
from deltarnn.quant.golden import emulate
from deltarnn.quant.quantizer import quantize
from deltarnn.speech.study import (StudyConfig, choose_point, evaluate_qmodel, make_evalset, masked_stats, pareto_front,
                                   run_study, search, study_config)
from deltarnn.speech.study.config import Goal, goals
from deltarnn.speech.decode import PhoneDecoder
from deltarnn.speech.study.driver import cell_record, confirmation
from deltarnn.speech.study.evaluate import Footprint
from deltarnn.speech.study.output import markdown
from deltarnn.speech.study.search import FloatPoint, FootprintQuery, QuantPoint

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


# --- the search on a hand-made metric table (no Dask, no training) ------------------------------

#: Footprints at activation width 4: 1000 float bits; skipping a path adds its bits.
FOOTPRINTS = {2: Footprint(100, 1000, {"0.x": 60, "0.h": 60, "head.x": 20}),
              4: Footprint(180, 1000, {"0.x": 50, "0.h": 50, "head.x": 15}),
              8: Footprint(300, 1000, {"0.x": 40, "0.h": 40, "head.x": 10})}
#: PER (%) on the selection set at threshold 0: (wbits, abits, skipped paths) -> PER; the float PER is 20.
SELECT_PER = {(2, 4, ()): 30.0, (4, 4, ()): 23.0, (8, 4, ()): 20.5,
              (2, 8, ()): 29.0, (4, 8, ()): 22.0, (8, 8, ()): 20.2,
              (2, 4, ("0.x",)): 25.0, (2, 4, ("0.h",)): 27.0, (2, 4, ("head.x",)): 28.0,
              (2, 4, ("0.x", "head.x")): 24.0, (4, 4, ("head.x",)): 20.8, (4, 8, ("head.x",)): 21.5}
#: The chosen widths' points (w4 a4, head.x skipped): (split, theta_x, theta_h) -> (PER, eliminated %).
THETA_POINTS = {("select", 0, 0): (20.8, 5.0), ("select", 0, 4): (21.5, 30.0), ("select", 2, 0): (20.9, 25.0),
                ("select", 2, 4): (23.0, 60.0), ("report", 0, 0): (22.5, 5.0), ("report", 0, 4): (24.0, 30.0),
                ("report", 2, 0): (22.9, 25.0), ("report", 2, 4): (22.8, 60.0)}
#: The same weights at activation width 8 (used where its threshold-0 PER is made to be within 1 point).
THETA_POINTS_A8 = {("select", 0, 0): (20.6, 4.0), ("select", 0, 4): (20.7, 35.0), ("select", 2, 0): (21.2, 28.0),
                   ("select", 2, 4): (22.0, 62.0), ("report", 0, 0): (22.4, 4.0), ("report", 0, 4): (22.6, 36.0),
                   ("report", 2, 0): (23.1, 28.0), ("report", 2, 4): (23.9, 61.0)}
FLOAT_PER = {"select": 20.0, "report": 22.0}
FLOAT_FER = 10.0


def _rows(per: float, fer: float) -> np.ndarray:
    """Per-utterance counts (10 utterances of 100 phones and 100 frames) with these rates."""
    return np.array([[round(per), 100, round(per), 0, 0, round(fer), 100]] * 10)


def table_config(**changes) -> StudyConfig:
    return StudyConfig(**{**dict(cells=["gru"], wbits=[2, 4, 8], abits=[4, 8], tol=1.0, act_tol=0.5,
                                 compression_floor=80.0, skip_budget=2, max_greedy=2, greedy_max_delta=10.0,
                                 thetas_x=[0, 2], thetas_h=[0, 4]), **changes})


class FakeEvaluate:
    """``evaluate`` over the tables above; records every batch."""

    def __init__(self, per_offset: float = 0.0, fer: dict | None = None, a8_within_tol: bool = False):
        self.batches = []
        self.per_offset = per_offset
        #: whether w4 a8 with head.x skipped is within 1 point at threshold 0 (20.6 instead of 21.5)
        self.a8_within_tol = a8_within_tol
        #: FER (%) of some threshold points, ``(split, theta_x, theta_h) -> FER``; the others have the float FER
        self.fer = fer or {}

    def one(self, r):
        if isinstance(r, FloatPoint):
            return {"per": FLOAT_PER[r.split], "fer": FLOAT_FER, "sub_pct": 1.0, "del_pct": 2.0, "ins_pct": 3.0,
                    "utterance_scores": _rows(FLOAT_PER[r.split], FLOAT_FER)}
        if isinstance(r, FootprintQuery):
            return FOOTPRINTS[r.wbits]
        a8 = (r.wbits, r.abits, r.skip) == (4, 8, ("head.x",))
        if (r.theta_x, r.theta_h, r.split) == (0, 0, "select"):
            per, eliminated = SELECT_PER[(r.wbits, r.abits, r.skip)] + self.per_offset, 2.0
            if a8 and self.a8_within_tol:
                per = THETA_POINTS_A8[("select", 0, 0)][0]
        else:
            per, eliminated = (THETA_POINTS_A8 if a8 else THETA_POINTS)[(r.split, r.theta_x, r.theta_h)]
        fer = self.fer.get((r.split, r.theta_x, r.theta_h), FLOAT_FER)
        return {"macs_dense": 100, "eliminated_pct": eliminated, "paths": {"0.x": {}, "0.h": {}, "head.x": {}},
                "size_kb": 1.0, "fer": fer, "sub_pct": 1.0, "del_pct": 2.0, "ins_pct": 3.0,
                "utterance_scores": _rows(per, fer),
                "per": per, "theta_x": r.theta_x, "theta_h": r.theta_h,
                "compression_pct": FOOTPRINTS[r.wbits].compression_pct(r.skip) if r.abits == 4 or a8 else 50.0}

    def __call__(self, requests, stage):
        self.batches.append((stage, list(requests)))
        return [self.one(r) for r in requests]

    def requests(self):
        return [r for _, batch in self.batches for r in batch]


def test_search_chooses_widths_skips_and_thresholds_on_a_metric_table():
    fake = FakeEvaluate()
    logged = []
    r = search(table_config(), fake, logged.append)["gru"]
    assert len(fake.requests()) == len(set(fake.requests()))       # nothing asked twice
    stages = [stage for stage, _ in fake.batches]
    assert stages == ["float PER", "width sweep", "quantize", "greedy skip round 1", "greedy skip round 2",
                      "greedy skip round 3", "wider activations", "threshold grid", "report set"]
    assert len(fake.batches[1][1]) == 6                             # the sweep in one batch: w {2, 4, 8} x a {4, 8}
    assert {(q.wbits, q.abits, q.skip) for _, batch in fake.batches[-2:] for q in batch} == {(4, 4, ("head.x",))}
    # activation width 4 (0.3 points over a8 at w8); w2 greedy: 0.x (25), then head.x (24; 0.h would drop the
    # compression to 78 % < 80 %), budget of 2 reached; w4: only head.x keeps 80 %, and brings it within 1 point
    assert [(t["wbits"], t["skip"], t["per"], t["accepted"]) for t in r.selection["greedy_trace"]] == [
        (2, [], 30.0, False), (2, ["0.x"], 25.0, False), (2, ["0.h"], 27.0, False), (2, ["head.x"], 28.0, False),
        (2, ["0.x", "head.x"], 24.0, False), (4, [], 23.0, False), (4, ["head.x"], 20.8, False),
        (4, ["head.x"], 20.8, True)]
    assert [(o["wbits"], o["skip"]) for o in r.selection["options_within_tol"]] == [(4, ["head.x"]), (8, [])]
    chosen = r.selection["chosen"]
    assert (chosen["wbits"], chosen["abits"], chosen["skip"], chosen["fallback"]) == (4, 4, ["head.x"], False)
    assert chosen["select"]["per"] == 20.8 and chosen["select"]["skip"] == ["head.x"]
    assert (r.widths.wbits, r.widths.abits, r.widths.skip) == (4, 4, ("head.x",))
    assert [p["delta_per"] for p in r.selection["width_sweep"]] == pytest.approx([10.0, 9.0, 3.0, 2.0, 0.5, 0.2])
    th = r.thresholds
    assert [(p["theta_x"], p["theta_h"]) for p in th["grid_select"]] == [(0, 0), (0, 4), (2, 0), (2, 4)]
    assert [(p["theta_x"], p["theta_h"]) for p in th["front_select"]] == [(0, 0), (2, 0), (0, 4), (2, 4)]
    assert (th["chosen_point_select"]["theta_x"], th["chosen_point_select"]["theta_h"]) == (2, 0)
    assert [(p["theta_x"], p["theta_h"]) for p in th["report_points"]] == [(0, 0), (0, 4), (2, 0), (2, 4)]
    assert th["quantized_report"]["delta_per"] == pytest.approx(0.5)
    assert (th["chosen_point_report"]["theta_x"], th["chosen_point_report"]["per"]) == (2, 22.9)
    assert [(p["theta_x"], p["theta_h"]) for p in th["front_report"]] == [(0, 0), (2, 4)]
    assert "best_report_within_tol" not in th        # nothing is chosen on the report set
    assert "gru: chosen w4 a4 skip [head.x]" in logged
    # a8 with the same weights is 1.5 points over the float PER: no threshold grid is run on it
    assert [(o["abits"], o["chosen_point"]["theta_x"]) for o in r.selection["activation_options"]] == [(4, 2)]
    assert "gru: thresholds chosen at a4: (2, 0), eliminated 25.0 %, PER change +0.90" in logged


def test_a_wider_activation_width_is_taken_where_its_thresholds_eliminate_more():
    # w4 a8 (head.x skipped) is within 1 point at threshold 0 (20.6), and its finer thresholds reach (0, 4)
    # with 35 % eliminated at 20.7 (w4 a4's best is (2, 0), 25 %): a8 becomes the chosen activation width
    fake = FakeEvaluate(a8_within_tol=True)
    r = search(table_config(), fake)["gru"]
    assert [(o["abits"], o["chosen_point"]["eliminated_pct"]) for o in r.selection["activation_options"]] == [
        (4, 25.0), (8, 35.0)]
    assert (r.widths.wbits, r.widths.abits, r.widths.skip) == (4, 8, ("head.x",))
    chosen = r.selection["chosen"]
    assert (chosen["wbits"], chosen["abits"], chosen["select"]["abits"], chosen["select"]["per"]) == (4, 8, 8, 20.6)
    th = r.thresholds
    assert (th["chosen_point_select"]["theta_x"], th["chosen_point_select"]["theta_h"]) == (0, 4)
    assert {q.abits for q in fake.batches[-1][1]} == {8}                   # the report set sees the chosen widths only
    assert th["quantized_report"]["per"] == 22.4 and th["chosen_point_report"]["per"] == 22.6
    # the FER guard is each width's own: (0, 4) at a8 adds 2 points of FER to a8's threshold 0, so a4 wins
    r = search(table_config(), FakeEvaluate(a8_within_tol=True, fer={("select", 0, 4): 12.0}))["gru"]
    assert r.widths.abits == 4 and r.thresholds["chosen_point_select"]["theta_x"] == 2


def test_the_fer_guard_refuses_a_threshold_that_buys_per_with_frames():
    # (2, 0) keeps the PER within 1 point on dev but costs 2 points of FER: (0, 0) is chosen instead
    r = search(table_config(), FakeEvaluate(fer={("select", 2, 0): 12.0}))["gru"]
    th = r.thresholds
    assert (th["chosen_point_select"]["theta_x"], th["chosen_point_select"]["theta_h"]) == (0, 0)
    r = search(table_config(fer_tol=2.0), FakeEvaluate(fer={("select", 2, 0): 12.0}))["gru"]
    assert (r.thresholds["chosen_point_select"]["theta_x"], r.thresholds["chosen_point_select"]["theta_h"]) == (2, 0)
    # the guard measures what the thresholds add: quantization alone already costs 1.5 points of FER here
    r = search(table_config(), FakeEvaluate(fer={("select", 0, 0): 11.5, ("select", 2, 0): 12.0}))["gru"]
    assert (r.thresholds["chosen_point_select"]["theta_x"], r.thresholds["chosen_point_select"]["theta_h"]) == (2, 0)
    pts = [{"per": 20.5, "fer": 11.5, "eliminated_pct": 50.0}, {"per": 20.8, "fer": 10.2, "eliminated_pct": 30.0}]
    assert choose_point(pts, 20.0, 1.0) == 0
    assert choose_point(pts, 20.0, 1.0, base_fer=10.0, fer_tol=1.0) == 1


def test_search_falls_back_to_the_widest_pair_without_skipping():
    fake = FakeEvaluate(per_offset=40.0)                # every width 20+ points off: no greedy skipping either
    r = search(table_config(thetas_x=[0], thetas_h=[0]), fake)["gru"]
    assert r.selection["greedy_trace"] == [] and r.selection["options_within_tol"] == []
    chosen = r.selection["chosen"]
    assert (chosen["wbits"], chosen["abits"], chosen["skip"], chosen["fallback"]) == (8, 8, [], True)
    assert not [q for q in fake.requests() if isinstance(q, QuantPoint) and q.skip]


def test_goals_follow_the_config():
    cfg = table_config()
    found = search(cfg, FakeEvaluate())["gru"]
    model = {"model": {}, "model_file": "gru.pt", "training": None, "float_params": 1000}
    results = {"config": asdict(cfg), "summary": {"gru": confirmation(cfg, found)},
               "cells": {"gru": cell_record(model, found, "gru.qmodel", SimpleNamespace(accumulator_bits=lambda: 20),
                                            SimpleNamespace(insertion_penalty=2.0))},
               "select": {"split": "dev", "utterances": 1, "frames": 10},
               "report": {"split": "test", "utterances": 1, "frames": 10}, "date": "today", "wall_s": 1.0}

    def goal_line(**changes):
        md = markdown(dict(results, config=dict(results["config"], **changes)))
        heading = next(line for line in md.splitlines() if line.startswith("## Goals"))
        return heading, next(line for line in md.splitlines() if line.startswith("- GRU: compression"))

    # compression 80.5 %, PER change +0.50, 25 % eliminated at the dev-chosen (2, 0) on the report set
    heading, line = goal_line(eliminated_goal=20.0)
    assert heading.startswith("## Goals (compression > 80 % with PER change <= 1 point") and "> 20 %" in heading
    assert line.count("(met)") == 3
    heading, line = goal_line(compression_floor=85.0, eliminated_goal=70.0, tol=0.25)
    assert heading.startswith("## Goals (compression > 85 % with PER change <= 0.25 point") and "> 70 %" in heading
    assert "80.5 % (missed by 4.5 points)" in line and "+0.50 [+0.00, +0.00] (missed by 0.25 points)" in line
    assert line.endswith("(missed by 45.0 points)")
    s = results["summary"]["gru"]
    assert (s["float_per"], s["float_fer"], s["quantized_per"], s["chosen_theta"]) == (22.0, 10.0, 22.5, [2, 0])
    assert s["chosen_per_change"] == pytest.approx(0.9) and s["chosen_eliminated_pct"] == 25.0
    assert goals(cfg).compression == Goal(80.0) and goals(cfg).per_change.at_most


def test_seed_claims_are_checked_on_the_table():
    from deltarnn.speech.study.output import seed_claims

    rows = [{"cell": c, "quantized_per_change": d, "size_kb": kb, "chosen_eliminated_pct": e}
            for c, d, kb, e in (("lstm", 0.1, 30.0, 50.0), ("gru", 0.4, 25.0, 60.0), ("ligru", 0.9, 20.0, 70.0),
                                ("sru", 0.2, 22.0, None))]
    claims = seed_claims(rows)
    assert [(c["expected"], c["found"], c["holds"]) for c in claims] == [
        ("lstm", "lstm", True), ("sru", "ligru", False), ("ligru", "ligru", True)]
    assert seed_claims(rows[:2]) == []


def test_the_package_imports_without_torch_dask_or_matplotlib(tmp_path):
    code = ("import sys, deltarnn.speech.study\n"
            "assert not {'torch', 'distributed', 'matplotlib'} & set(sys.modules), sorted(sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


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
    counts = masked_stats(qm, r, np.array(lengths))
    alone = [emulate(qm, x) for x in xs]
    for i, a in enumerate(alone):
        np.testing.assert_array_equal(r.outputs_fx[i, :lengths[i]], a.outputs_fx[0])
    assert list(counts) == list(qm.paths())
    for name in qm.paths():
        for key in ("elements", "deltas", "macs_dense", "macs_needed"):
            assert getattr(counts[name], key) == sum(getattr(a.stats.paths[name], key) for a in alone), (name, key)
    assert sum(p.macs_needed for p in counts.values()) == sum(a.stats.macs_needed for a in alone)


def test_evaluate_bidirectional_one_utterance_at_a_time():
    model = random_model("gru", input_size=5, hidden=6, layers=1, bidirectional=True, classes=4, seed=1)
    qm = quantize(model, random_input(4, 20, 5), wbits=4, abits=8)

    class U:
        def __init__(self, n, seed):
            self.features = random_input(1, n, 5, seed=seed)[0]
            self.labels = np.arange(n) % 4
            self.id = f"u{seed}"

    utts = [U(n, i) for i, n in enumerate([5, 9, 6])]
    res = evaluate_qmodel(qm, make_evalset("x", utts, batch=3), PhoneDecoder.from_labels([u.labels for u in utts], 4),
                          1, 1)
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
    from deltarnn.speech.datasets import load_dataset, phone_error_rate
    refs = [labels[f.stem] for f in inputs]
    assert all(s.shape[0] == len(ref) for s, ref in zip(scores, refs))    # the output delay is undone
    assert 100 * phone_error_rate(scores, refs) == pytest.approx(point["undecoded_per"], abs=1e-9)
    # decoded: the bigram and durations of the training labels, the penalty the study tuned on dev
    train = load_dataset("espeak-tiny", "train")
    decoder = PhoneDecoder.from_labels([u.labels for u in train], 39, insertion_penalty=r["insertion_penalty"])
    per = 100 * phone_error_rate([decoder.decode(s) for s in scores], refs)
    assert per == pytest.approx(point["per"], abs=1e-9)
    summary = results["summary"][cell]
    for key in ("float_per", "float_fer", "quantized_per", "quantized_fer", "compression_pct",
                "chosen_eliminated_pct", "chosen_per_change"):
        assert key in summary


def test_study_cli_errors(tmp_path, capsys):
    assert main(["study", "--dataset", "nosuch", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deltarnn: error:") and "nosuch" in err and "\n" not in err
    assert main(["study", "--models", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err
