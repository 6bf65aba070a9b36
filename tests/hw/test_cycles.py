"""The cycle model of a STEP (deltarnn.hw.cycles) against hand-computed values.

tests/hw/test_core.py checks that the model equals the core's STEP_CYCLES on
whole runs; these tests pin the model itself: the documented per-phase
formulas (docs/gateware.md), their sum, and how the total grows with deltas.
"""

import pytest

from deltarnn.hw.cycles import (encode_cycles, engine_cycles, fused_encode_cycles, mxv_cycles, step_cycles,
                                 step_phases)
from deltarnn.hw.engine import CELL_PROGRAMS, H_OUT, HEAD_OUT, fuses_encoder, schedule
from deltarnn.spec.memory_map import H_BLOCKS


def test_phase_formulas():
    assert encode_cycles(8) == 8 + 7 + 1
    # above 4 lanes the state word reaches the encoder registered: a cycle more
    assert encode_cycles(8, 4) == 8 + 7 + 1 and encode_cycles(8, 8) == 8 + 8 + 1
    # an encode fed by the cell update: the encoder's 7 (8) cycles after the update's last write (of h), its last cycle
    assert [fused_encode_cycles(cell, lanes) for cell in CELL_PROGRAMS for lanes in (4, 32)] == [6, 7] * 4
    # the SRU's highway reads the references a cycle after its request, in another cycle of its ii than the h write
    assert all(fuses_encoder(CELL_PROGRAMS[cell], lanes) for cell in CELL_PROGRAMS for lanes in (1, 4, 32))
    # a highway read and an h write: the schedule puts the read's memory cycle apart from the write's
    sch = schedule([("hw", 0), ("st", "h", 0)], 4)
    assert sch.ii == 2 and fuses_encoder([("hw", 0), ("st", "h", 0)], 4)
    assert not fuses_encoder(H_OUT, 4)                               # no h write
    assert mxv_cycles(5, 24, 4) == 5 * 6 + 9 + 1
    assert mxv_cycles(0, 24, 4) == 10
    assert mxv_cycles(3, 9, 2) == 3 * 5 + 10         # ceil(9 / 2) words per column
    assert mxv_cycles(3, 4, 4) == 3 * 1 + 10         # one word: the sum is forwarded
    assert mxv_cycles(3, 8, 4) == 3 * 4 + 10         # two words: padded to ACC_SPACING cycles
    assert mxv_cycles(2, 12, 4) == 2 * 4 + 10        # three words: padded too
    assert mxv_cycles(2, 16, 4) == 2 * 4 + 10        # four words: no padding
    # (items - 1) * ii + depth of the program's schedule, + the GO and done cycles
    assert engine_cycles(8, CELL_PROGRAMS["gru"], 4) == 7 * 6 + 20 + 2
    assert engine_cycles(3, HEAD_OUT, 4) == 2 * 2 + 8 + 2
    assert engine_cycles(6, H_OUT, 4) == 5 * 2 + 4 + 2
    assert engine_cycles(0, HEAD_OUT, 4) == 2
    # above WIDE_LANES lanes every memory's output is registered (a cycle more for the loads), the requantizer
    # three cycles more, the multipliers one (their operands registered), the activation tables three (GRU: its last rq, then the tanh of n on its critical path);
    # the GRU's and LSTM's requantizations keep their accumulator words: ii 4, not 6 and 8 (two requantizers)
    assert engine_cycles(8, CELL_PROGRAMS["gru"], 8) == 7 * 4 + 30 + 2
    assert engine_cycles(8, CELL_PROGRAMS["lstm"], 8) == 7 * 4 + 33 + 2
    # and the output programs take an item in every cycle (ii 1: the core's response FIFO has room for all)
    assert engine_cycles(3, HEAD_OUT, 8) == 2 * 1 + 11 + 2
    assert engine_cycles(6, H_OUT, 8) == 5 * 1 + 5 + 2
    # and stall a cycle where two of them read in one cycle: the LSTM at H = 7, P = 8, four times
    assert engine_cycles(7, CELL_PROGRAMS["lstm"], 8) == 6 * 4 + 33 + 2 + 4
    assert engine_cycles(64, CELL_PROGRAMS["gru"], 32, 4) == 63 * 4 + 30 + 2     # H = 256: whole words, no stall


def test_gru_with_head_by_hand():
    deltas = {"0.x": 2, "0.h": 5, "head.x": 4}
    assert step_phases("gru", 4, 8, 3, deltas) == [
        ("accept", 1),
        ("0.x MxV", 2 * 6 + 10),          # 3*8 rows: 6 words of 4 lanes
        ("0.h encode", 0),               # (8 + 8 cycles, beside the x path's MxV)
        ("0.h MxV", 5 * 6 + 10),
        ("0 cell", 7 * 6 + 20 + 2),
        ("head encode", 6),              # fed by the cell update: the encoder's latency after its last h
        ("head MxV", 4 * 1 + 10),         # 3 classes: one word
        ("output", 2 * 2 + 8 + 2),
    ]
    assert step_cycles("gru", 4, 8, 3, deltas) == 161
    # an x path shorter than the h path's encode: the encode's excess is its phase
    assert dict(step_phases("gru", 4, 8, 3, {**deltas, "0.x": 0}))["0.h encode"] == 16 - 10


def test_sru_without_head_by_hand():
    """SRU has no h path; layer 1's identity highway leaves out the projection block (3H rows, not 4H)."""
    deltas = {"0.x": 1, "1.x": 3}
    assert step_phases("sru", 2, 3, 0, deltas, [False, True]) == [
        ("accept", 1),
        ("0.x MxV", 1 * 6 + 10),          # 4*3 rows: 6 words of 2 lanes
        ("0 cell", 2 * 4 + 18 + 2),
        ("1.x encode", 3 + 8),
        ("1.x MxV", 3 * 5 + 10),          # 3*3 rows: 5 words
        ("1 cell", 2 * 4 + 18 + 2),
        ("output", 2 * 2 + 4 + 2),
    ]
    assert step_cycles("sru", 2, 3, 0, deltas, [False, True]) == 119
    assert step_cycles("sru", 2, 3, 0, deltas) == 119 + 3 * (6 - 5)     # default: projections everywhere


def test_cached_schedules_stall_only_where_blocks_start_at_odd_items():
    """The GRU's and LSTM's requantizations read every second item: with H a multiple of 2 E every block's
    reads fall in the schedule's own cycles (no stall); an LSTM of H = 20 at P = 32 (its second block at item 5
    of a word) stalls."""
    from deltarnn.hw.engine import cache_stalls
    for cell in ("gru", "lstm"):
        program = tuple(tuple(ins) for ins in CELL_PROGRAMS[cell])
        for lanes, e in ((8, 1), (16, 2), (32, 4)):
            assert schedule(program, lanes, e).cached
            assert all(cache_stalls(program, h // e, lanes, e) == 0 for h in range(2 * e, 257, 2 * e))
    assert cache_stalls(tuple(tuple(ins) for ins in CELL_PROGRAMS["lstm"]), 5, 32, 4) == 2


def test_documented_example():
    """docs/gateware.md: 2 x 256 GRU, 40 classes, P = 32, 40 input deltas, every hidden delta firing."""
    deltas = {"0.x": 40, "0.h": 256, "1.x": 256, "1.h": 256, "head.x": 256}
    phases = dict(step_phases("gru", 32, 256, 40, deltas))
    assert phases["0.x MxV"] == 40 * 24 + 11 == 971     # L = 10 above WIDE_LANES lanes
    assert phases["0.h MxV"] == phases["1.x MxV"] == phases["1.h MxV"] == 256 * 24 + 11 == 6155
    # the requantizations keep their accumulator words: an item every 4 cycles (not 6)
    assert phases["0 cell"] == phases["1 cell"] == 255 * 4 + 30 + 2 == 1052
    # 40 classes are two words of 32 lanes: their sums forwarded, no bubbles (4 cycles a pass at up to 8 lanes);
    # their outputs one a cycle (the response FIFO has room for them all)
    assert phases["head MxV"] == 256 * 2 + 11 == 523 and phases["output"] == 39 * 1 + 11 + 2
    assert mxv_cycles(256, 40, 8) == 256 * 5 + 11 and mxv_cycles(256, 20, 8) == 256 * 4 + 11
    assert phases["0.h encode"] == phases["1.h encode"] == 0      # beside the x paths' MxVs
    assert phases["1.x encode"] == phases["head encode"] == 7        # fed by the cell updates
    assert step_cycles("gru", 32, 256, 40, deltas) == 22130
    # the default engine of 32 lanes: 4 neurons at once, the fused encodes take the last 4 values in turn
    wide = dict(step_phases("gru", 32, 256, 40, deltas, width=4))
    assert wide["0 cell"] == wide["1 cell"] == 63 * 4 + 30 + 2 == 284
    assert wide["1.x encode"] == wide["head encode"] == 7 + 3
    assert step_cycles("gru", 32, 256, 40, deltas, width=4) == 20600
    # 8 engine lanes: an item every 8 cycles (the fused encoder takes one value a cycle; the accumulator words not
    # kept, as that would not lower ii)
    wide = dict(step_phases("gru", 32, 256, 40, deltas, width=8))
    assert wide["0 cell"] == 31 * 8 + 30 + 2 == 280 and wide["1.x encode"] == 7 + 7
    assert step_cycles("gru", 32, 256, 40, deltas, width=8) == 20600


@pytest.mark.parametrize("cell", sorted(CELL_PROGRAMS))
@pytest.mark.parametrize("classes", [0, 5])
def test_total_is_the_sum_and_grows_by_one_column_per_delta(cell, classes):
    lanes, hidden, layers = 4, 7, 3
    paths = [f"{i}.{q}" for i in range(layers) for q in ("x", "h") if q == "x" or H_BLOCKS[cell]]
    paths += ["head.x"] if classes else []
    deltas = {path: 3 for path in paths}
    phases = step_phases(cell, lanes, hidden, classes, deltas)
    assert step_cycles(cell, lanes, hidden, classes, deltas) == sum(c for _, c in phases)
    assert [name for name, _ in phases].count("accept") == 1
    assert sum(name.endswith(" cell") for name, _ in phases) == layers
    assert sum(name.endswith(" MxV") for name, _ in phases) == len(paths)
    base = step_cycles(cell, lanes, hidden, classes, deltas)
    for path in paths:
        mxv = dict(phases)[f"{path.replace('head.x', 'head')} MxV"]
        words = (mxv - mxv_cycles(0, 1, 1)) // deltas[path]       # the phase's words per column
        more = step_cycles(cell, lanes, hidden, classes, {**deltas, path: deltas[path] + 2})
        assert more == base + 2 * words and words >= 1
        fewer = base - 3 * words
        if path[0].isdigit() and path.endswith(".x") and H_BLOCKS[cell]:   # its h path's encode runs beside it
            fewer += max(0, encode_cycles(hidden) - mxv_cycles(0, 1, 1))
        assert step_cycles(cell, lanes, hidden, classes, {**deltas, path: 0}) == fewer


def test_more_lanes_never_cost_more():
    deltas = {"0.x": 9, "0.h": 20, "head.x": 20}
    totals = [step_cycles("lstm", lanes, 20, 6, deltas) for lanes in (1, 2, 4, 8, 16, 32)]
    assert totals == sorted(totals, reverse=True) and totals[0] > totals[-1]
