"""benchmarks/perf.py's arithmetic: the sparse bound, the previous design's cycle model, the speed figures."""

import importlib.util
import sys
from pathlib import Path

import pytest

from deltarnn.hw import cycles as CY
from deltarnn.quant.quantizer import quantize

from tests.helpers import random_input, random_model

_spec = importlib.util.spec_from_file_location("perf", Path(__file__).resolve().parents[1] / "benchmarks" / "perf.py")
perf = importlib.util.module_from_spec(_spec)
sys.modules["perf"] = perf   # its dataclasses look their module up
_spec.loader.exec_module(perf)


@pytest.mark.parametrize("cell", ["lstm", "gru", "ligru", "sru"])
def test_previous_design_differs_only_in_the_engine_and_encode_phases(cell):
    qm = quantize(random_model(cell, 6, 16, 2, False, classes=5, seed=1), random_input(2, 8, 6), 4, 8)
    deltas = {p: 3 for p in perf.path_rows(qm)}
    identity = [layer.directions[0].highway is not None for layer in qm.layers]
    new = dict(CY.step_phases(cell, 4, 16, 5, deltas, identity))
    old = perf.old_step_cycles(qm, 4, deltas)
    encodes = [name for name in new if name.endswith(" encode")]
    want = sum(new.values()) - new["0 cell"] - new["1 cell"] - new["output"] \
        + 2 * (16 * perf.OLD_PROGRAM_CYCLES[cell] + 2) + 5 * perf.OLD_HEAD_OUT + 2 \
        + sum(CY.encode_cycles(16) - new[name] for name in encodes)
    assert len(encodes) == (2 if cell == "sru" else 4)      # 1.x, head (and 0.h, 1.h)
    assert old == want > sum(new.values())


def test_rows_and_dense_macs():
    qm = quantize(random_model("gru", 6, 16, 2, False, classes=5, seed=1), random_input(2, 8, 6), 4, 8)
    assert perf.path_rows(qm) == {"0.x": 48, "0.h": 48, "1.x": 48, "1.h": 48, "head.x": 5}
    assert perf.dense_macs(qm) == 48 * 6 + 48 * 16 * 3 + 5 * 16


def test_speed_figures():
    s = perf.speed(1000, 100.0, 50_000, 32)
    assert s["latency_us"] == 10.0 and s["rtf"] == 10.0 / 10_000
    assert s["effective_gops"] == pytest.approx(2 * 50_000 / 10e-6 / 1e9)
    assert s["peak_gops"] == pytest.approx(2 * 32 * 100e6 / 1e9)
    assert perf.speed(1000, None, 1, 1)["effective_gops"] is None
