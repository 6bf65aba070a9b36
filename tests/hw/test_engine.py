"""deltarnn.hw.engine.CellEngine in the Amaranth simulator against the golden model's cell arithmetic.

Every micro-program runs over memories of random contents: the state it
writes equals the contract's cell updates (``tests/quant/cells.py``, the
oracle of the golden model's kernels too) applied to the requantized
accumulators it reads, its outputs equal the
golden model's head, and every run takes exactly
``run_cycles(program, count) + LATENCY`` cycles plus the cycles ``out``
was not ready.
"""

import numpy as np
import pytest
from amaranth import Elaboratable, Module
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from deltarnn.hw.engine import (CELL_PROGRAMS, H_OUT, HEAD_OUT, WIDE_LANES, CellEngine, Program, cache_stalls,
                                out_ii, run_cycles, schedule)
from deltarnn.spec import contract as C
from deltarnn.spec.memory_map import H_BLOCKS, VEC_BLOCKS, VECTOR_ORDER, X_BLOCKS, DeviceParams

from tests.quant import cells

#: Blocks of H of each of a layer's vectors, in VECTOR_ORDER.
VEC_SIZES = {"lstm": {"bias": 4}, "gru": {"bias": 3, "bias_hn": 1}, "ligru": {"bias": 2},
             "sru": {"bias": 2, "vf": 1, "vr": 1}}
STEPS = cells.STEPS
#: Cycles between neurons and of one neuron's program, per program (docs/gateware.md), at most WIDE_LANES
#: lanes and above (the requantizer and the activation tables a cycle longer).
SCHEDULES = {"lstm": (8, 22), "gru": (6, 20), "ligru": (4, 17), "sru": (4, 18), "head": (2, 8), "h_out": (2, 4)}
WIDE_SCHEDULES = {"lstm": (4, 33), "gru": (4, 30), "ligru": (4, 24), "sru": (4, 26), "head": (1, 11), "h_out": (1, 5)}

HIDDEN = 5        # run-time H, below max_hidden: block strides are H, not the maximum
LAYER = 1         # bases of layer 1, none of them 0


def params(cell, lanes, engine_lanes=1):
    """A core of ``engine_lanes`` E: its maximum hidden size 7, or 3 E above one lane."""
    return DeviceParams(cell, lanes=lanes, max_input=6, max_hidden=7 if engine_lanes == 1 else 3 * engine_lanes,
                        max_layers=2, max_classes=5, wmem_bits=8, abits=8, acc_bits=32, engine_lanes=engine_lanes)


def hidden_of(p):
    """The run-time H of the tests on ``p``: HIDDEN, or 2 E (a multiple of the engine's lanes, below the maximum)."""
    return HIDDEN if p.engine_width == 1 else 2 * p.engine_width


class Harness(Elaboratable):
    """The engine wired to its memories as in the core (synchronous read ports; E elements per word of the
    multiplier, vector and state memories)."""

    def __init__(self, p, init, broken_lane=None):
        self.dut = CellEngine(p, broken_lane=broken_lane)
        self.mems = {
            "acc": Memory(shape=p.lanes * p.acc_bits, depth=p.acc_depth, init=init["acc"]),
            "mult": Memory(shape=self.dut.mult_data.shape(), depth=p.mult_words, init=init["mult"]),
            "vec": Memory(shape=self.dut.vec_data.shape(), depth=p.vec_words, init=init["vec"]),
            "h": Memory(shape=self.dut.h_rd_data.shape(), depth=p.state_words, init=init["h"]),
            "c": Memory(shape=self.dut.c_rd_data.shape(), depth=p.state_words, init=init["c"]),
            "ref": Memory(shape=self.dut.ref_data.shape(), depth=p.ref_depth, init=init["ref"]),
        }

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        for name, mem in self.mems.items():
            m.submodules[name] = mem
        rd = {name: mem.read_port() for name, mem in self.mems.items()}
        wr = {name: self.mems[name].write_port() for name in ("h", "c")}
        rd.update({f"mult{u}": self.mems["mult"].read_port() for u in range(1, dut.rq_units)})   # one per requantizer
        for name, prefix in (("acc", "acc_"), ("mult", "mult_"), ("vec", "vec_"), ("ref", "ref_"),
                             ("h", "h_rd_"), ("c", "c_rd_"), *[(f"mult{u}", f"mult{u}_") for u in range(1, dut.rq_units)]):
            m.d.comb += [rd[name].addr.eq(getattr(dut, prefix + "addr")),
                         rd[name].en.eq(getattr(dut, prefix + "en")),
                         getattr(dut, prefix + "data").eq(rd[name].data)]
        for name in ("h", "c"):
            m.d.comb += [wr[name].addr.eq(getattr(dut, f"{name}_wr_addr")),
                         wr[name].en.eq(getattr(dut, f"{name}_wr_en")),
                         wr[name].data.eq(getattr(dut, f"{name}_wr_data"))]
        return m


def random_contents(rng, p):
    """Memory contents (lanes of accumulator words flattened: row ``r`` of word base is ``base*P + r``)."""
    n = p.acc_depth * p.lanes
    acc = rng.integers(-(1 << 14), 1 << 14, n)
    extreme = rng.random(n) < 0.1           # no overflow in the product at full accumulator width
    acc[extreme] = rng.choice([-(1 << (p.acc_bits - 1)), (1 << (p.acc_bits - 1)) - 1], int(extreme.sum()))
    return {
        "acc": acc,
        "mult": rng.integers(0, 1 << C.MULT_BITS, n),
        "vec": rng.integers(-3 * C.FX_ONE, 3 * C.FX_ONE, p.vec_depth),
        "h": rng.integers(-C.FX_ONE, C.FX_ONE, p.state_depth),
        "c": rng.integers(-2 * C.FX_ONE, 2 * C.FX_ONE, p.state_depth),
        "ref": rng.integers(-C.qmax(p.abits), C.qmax(p.abits) + 1, p.ref_depth),
    }


def memory_init(p, contents):
    words = contents["acc"].reshape(p.acc_depth, p.lanes)
    acc = [sum((int(v) & ((1 << p.acc_bits) - 1)) << (i * p.acc_bits) for i, v in enumerate(w)) for w in words]
    e = p.engine_width

    def lanes(a):     # element i in lane i mod E of word i // E
        a = np.concatenate([a, np.zeros(-len(a) % e, dtype=np.int64)])
        return [[int(v) for v in w] for w in a.reshape(-1, e)]

    return {"acc": acc, "ref": [int(v) for v in contents["ref"]],
            **{k: lanes(contents[k]) for k in ("mult", "vec", "h", "c")}}


def run(p, contents, program, count, inputs, ready_prob=1.0, broken_lane=None, seed=0):
    """Run one program; return (memory contents after, outputs, cycles from start to done, stall cycles)."""
    hn = Harness(p, memory_init(p, contents), broken_lane)
    dut = hn.dut
    rng = np.random.default_rng(seed)
    result = {}

    async def tb(ctx):
        for name, value in inputs.items():
            ctx.set(getattr(dut, name), value)
        ctx.set(dut.program, program)
        ctx.set(dut.count, count)
        ctx.set(dut.start, 1)
        outs, valid, stalls, cycles = [], [], 0, 0
        while True:
            ready = int(rng.random() < ready_prob)
            ctx.set(dut.out.ready, ready)
            if cycles and ctx.get(dut.done):
                break
            if ctx.get(dut.out.valid):
                valid.append(ctx.get(dut.out.payload))
                if ready:
                    outs.append(ctx.get(dut.out.payload))
                else:
                    stalls += 1
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles += 1
            assert cycles < 10_000, "no done"
        assert not ctx.get(dut.busy)
        await ctx.tick()
        assert not ctx.get(dut.done), "done is a one-cycle pulse"
        result["mems"] = {name: [int(ctx.get(mem.data[i])[e]) for i in range(mem.depth)
                                 for e in range(p.engine_width)] for name, mem in hn.mems.items() if name in ("h", "c")}
        result.update(outs=outs, valid=valid, cycles=cycles, stalls=stalls)

    sim = Simulator(hn)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return result


def layer_inputs(p, identity=False):
    return dict(hidden=hidden_of(p), acc_base_x=p.acc_base(LAYER, "x"), acc_base_h=p.acc_base(LAYER, "h"),
                shift_x=16, shift_h=15, vec_base=p.vec_base(LAYER), state_base=p.state_base(LAYER),
                ref_base=p.ref_base(LAYER, "x"), hw_mult=20000, hw_shift=10, hw_identity=int(identity))


def requantized(p, contents, base, block, shift, rows=None, round_down_lane=None):
    """Rows ``block*H .. block*H + rows - 1`` (default H) of the accumulator block at ``base``, requantized."""
    hidden = hidden_of(p)
    r = base * p.lanes + block * hidden + np.arange(hidden if rows is None else rows)
    v = contents["acc"][r] * contents["mult"][r]
    out = C.saturate(C.round_shift(v, shift), C.FX_BITS)
    if round_down_lane is not None:
        out = np.where(r % p.lanes == round_down_lane, C.saturate(v >> shift, C.FX_BITS), out)
    return out


def expected_cell(p, contents, inputs):
    """The golden model's update of neurons 0 .. H-1 from the engine's memory contents."""
    cell = p.cell
    hidden = hidden_of(p)
    k = np.arange(hidden)
    identity = cell == "sru" and inputs["hw_identity"]
    x_blocks = X_BLOCKS[cell] - identity
    rqx = np.concatenate([requantized(p, contents, inputs["acc_base_x"], b, inputs["shift_x"])
                          for b in range(x_blocks)])
    rqh = np.concatenate([requantized(p, contents, inputs["acc_base_h"], b, inputs["shift_h"])
                          for b in range(H_BLOCKS[cell])] or [np.zeros(0, dtype=np.int64)])
    vec, at = {}, inputs["vec_base"]
    for name in VECTOR_ORDER[cell]:
        n = VEC_SIZES[cell][name] * hidden
        vec[name] = contents["vec"][at:at + n]
        at += n
    h = contents["h"][inputs["state_base"] + k]
    c = contents["c"][inputs["state_base"] + k]
    if cell == "sru":
        highway = None
        if identity:
            ref = contents["ref"][inputs["ref_base"] + k]
            highway = C.requantize(ref, inputs["hw_mult"], inputs["hw_shift"])
        return cells.sru_step(rqx, highway, vec, (h, c))
    return STEPS[cell](rqx, rqh, vec, (h, c))


def test_vector_blocks_are_the_memory_map():
    assert {cell: sum(sizes.values()) for cell, sizes in VEC_SIZES.items()} == VEC_BLOCKS
    assert {cell: list(sizes) for cell, sizes in VEC_SIZES.items()} == VECTOR_ORDER


@pytest.mark.parametrize("lanes", [1, WIDE_LANES, WIDE_LANES + 1, 32])
def test_schedules_are_the_documented_ones(lanes):
    programs = {**CELL_PROGRAMS, "head": HEAD_OUT, "h_out": H_OUT}
    want = WIDE_SCHEDULES if lanes > WIDE_LANES else SCHEDULES
    assert {name: (schedule(p, lanes).ii, schedule(p, lanes).depth) for name, p in programs.items()} == want
    assert run_cycles(HEAD_OUT, 0, lanes) == 0 and run_cycles(HEAD_OUT, 5, lanes) == 4 * out_ii(lanes) + want["head"][1]


@pytest.mark.parametrize("lanes", [WIDE_LANES, WIDE_LANES + 1])
def test_schedule_respects_ports_and_dependences(lanes):
    """No port serves two instructions in one cycle (modulo ii; a cached schedule's accumulator reads modulo the
    ``P`` items of a word, one requantizer copy each per cycle); no operand is read before it is written."""
    from deltarnn.hw.engine import _ports
    for program in [*CELL_PROGRAMS.values(), HEAD_OUT, H_OUT]:
        sch = schedule(program, lanes)
        taken = set()
        for sl in sch.slots:
            for port in _ports(sl.ins):
                use = (port, sl.start % sch.ii)
                if sch.cached and port == "acc":
                    use = ("acc word", sl.start % (sch.ii * lanes))
                    assert ("rq", sl.unit, sl.start % sch.ii) not in taken
                    taken.add(("rq", sl.unit, sl.start % sch.ii))
                assert use not in taken
                taken.add(use)
            for src, pos in sl.sources:
                producer = sch.slots[src]
                assert sl.start >= producer.start + producer.latency
                assert pos == (sl.start - producer.write - 1) // sch.ii < sch.chain[src]
            if sl.ins[0] == "st":     # a neuron reads its old state before it writes the new one
                assert all(ld.start < sl.start for ld in sch.slots if ld.ins[:1] == ("ld",) and ld.ins[2] == sl.ins[1])


def test_bad_programs_are_refused():
    with pytest.raises(ValueError, match="unknown instruction"):
        schedule([("frob", 0)], 4)
    with pytest.raises(ValueError, match="reads R3 before"):
        schedule([("add", 0, 3, 3)], 4)


# (cell, lanes, SRU identity highway, engine lanes); P = 8: the wide select
CELL_CASES = [("lstm", 4, False, 1), ("gru", 4, False, 1), ("ligru", 4, False, 1), ("sru", 4, False, 1),
              ("sru", 4, True, 1), ("gru", 1, False, 1), ("lstm", 8, False, 1), ("gru", 8, False, 1),
              ("sru", 8, True, 1), ("gru", 4, False, 2), ("lstm", 8, False, 4), ("gru", 16, False, 4),
              ("ligru", 8, False, 4), ("gru", 8, False, 8), ("ligru", 16, False, 8)]   # E = 8: ii at least 8


@pytest.mark.parametrize("cell, lanes, identity, engine_lanes", CELL_CASES,
                         ids=[f"{c}-P{n}{'-identity' if i else ''}{f'-E{e}' if e > 1 else ''}"
                              for c, n, i, e in CELL_CASES])
def test_cell_program_equals_golden_step(cell, lanes, identity, engine_lanes):
    p = params(cell, lanes, engine_lanes)
    hidden = hidden_of(p)
    contents = random_contents(np.random.default_rng(100 + CELL_CASES.index((cell, lanes, identity, engine_lanes))), p)
    inputs = layer_inputs(p, identity)
    res = run(p, contents, Program.CELL, hidden // engine_lanes, inputs)
    h, c = expected_cell(p, contents, inputs)
    base = inputs["state_base"]
    want_h, want_c = contents["h"].copy(), contents["c"].copy()     # nothing else of the state is written
    want_h[base:base + hidden] = h
    if c is not None:
        want_c[base:base + hidden] = c
    np.testing.assert_array_equal(res["mems"]["h"], want_h)
    np.testing.assert_array_equal(res["mems"]["c"], want_c)
    assert res["outs"] == []
    assert res["cycles"] == run_cycles(CELL_PROGRAMS[cell], hidden // engine_lanes, lanes, engine_lanes) \
        + CellEngine.LATENCY
    assert schedule(CELL_PROGRAMS[cell], lanes, engine_lanes).ii >= engine_lanes


@pytest.mark.parametrize("lanes, engine_lanes, hidden", [(8, 1, 7), (8, 2, 6)])
def test_cached_requantizations_stall_where_two_read_in_one_cycle(monkeypatch, lanes, engine_lanes, hidden):
    """Above WIDE_LANES lanes the LSTM's requantizations keep their accumulator words (ii 4, not 8), two
    copies of the requantizer; at these H the rows of two of them start words in the same cycle, twice:
    the engine stalls a cycle each time (as the cycle model counts) and stays exact."""
    import sys
    monkeypatch.setattr(sys.modules[__name__], "hidden_of", lambda p: hidden)
    p = params("lstm", lanes, engine_lanes)
    program = CELL_PROGRAMS["lstm"]
    sch = schedule(program, lanes, engine_lanes)
    assert sch.cached and sch.ii == 4 and sch.units["rq"] == 2
    stalls = cache_stalls(tuple(program), hidden // engine_lanes, lanes, engine_lanes)
    assert stalls > 0
    contents = random_contents(np.random.default_rng(7), p)
    inputs = layer_inputs(p)
    res = run(p, contents, Program.CELL, hidden // engine_lanes, inputs)
    h, c = expected_cell(p, contents, inputs)
    base = inputs["state_base"]
    np.testing.assert_array_equal(res["mems"]["h"][base:base + hidden], h)
    np.testing.assert_array_equal(res["mems"]["c"][base:base + hidden], c)
    assert res["cycles"] == (hidden // engine_lanes - 1) * sch.ii + sch.depth + stalls + CellEngine.LATENCY


def assert_outputs(res, want, ready_prob, lanes):
    """An output program's outputs: taken as ``out`` is ready, at most WIDE_LANES lanes (the engine stalls
    where it is not); above, each valid for exactly one cycle whatever ``out.ready`` says."""
    if lanes <= WIDE_LANES:
        assert res["outs"] == want
        assert (res["stalls"] > 0) == (ready_prob < 1)
    else:
        assert res["valid"] == want
        assert (res["outs"] != want) == (ready_prob < 1)      # (the harness's not-ready cycles missed some)


@pytest.mark.parametrize("lanes, engine_lanes", [(4, 1), (8, 1), (16, 4)])
@pytest.mark.parametrize("ready_prob", [1.0, 0.4])
def test_head_output_program(ready_prob, lanes, engine_lanes):
    """HEAD_OUT: requantized head accumulators plus the head bias, one output per class; at most WIDE_LANES
    lanes stalls hold the requantizer's first stages; above, the engine never waits for ``out.ready``
    (each output valid for one cycle, ii 1: the core's FIFO has room for them all) and every output is
    its word's lane."""
    p = params("gru", lanes, engine_lanes)
    classes = 5
    contents = random_contents(np.random.default_rng(11), p)
    base = p.acc_base(p.max_layers, "x")
    inputs = dict(layer_inputs(p), acc_base_x=base, vec_base=p.vec_base(p.max_layers))
    res = run(p, contents, Program.HEAD_OUT, classes, inputs, ready_prob=ready_prob, seed=3)
    bias = contents["vec"][inputs["vec_base"]:inputs["vec_base"] + classes]
    want = C.fx_add(requantized(p, contents, base, 0, inputs["shift_x"], rows=classes), bias)
    assert_outputs(res, [int(v) for v in want], ready_prob, lanes)
    assert res["cycles"] == run_cycles(HEAD_OUT, classes, lanes) + CellEngine.LATENCY + res["stalls"] * (lanes <= WIDE_LANES)
    assert schedule(HEAD_OUT, lanes).ii == out_ii(lanes) == (2 if lanes <= WIDE_LANES else 1)
    np.testing.assert_array_equal(res["mems"]["h"], contents["h"])


@pytest.mark.parametrize("lanes, engine_lanes", [(2, 1), (2, 2), (8, 1), (16, 4)])
@pytest.mark.parametrize("ready_prob", [1.0, 0.4])
def test_h_output_program(ready_prob, lanes, engine_lanes):
    """H_OUT: the last layer's h as it is in the state memory; stalls hold the state word registered
    behind the memory in a wide engine."""
    p = params("lstm", lanes, engine_lanes)
    hidden = hidden_of(p)
    contents = random_contents(np.random.default_rng(12), p)
    inputs = layer_inputs(p)
    res = run(p, contents, Program.H_OUT, hidden, inputs, ready_prob=ready_prob, seed=4)
    base = inputs["state_base"]
    assert_outputs(res, [int(v) for v in contents["h"][base:base + hidden]], ready_prob, lanes)
    assert res["cycles"] == run_cycles(H_OUT, hidden, p.lanes) + CellEngine.LATENCY + res["stalls"] * (lanes <= WIDE_LANES)


@pytest.mark.parametrize("program", list(Program))
def test_zero_items(program):
    p = params("ligru", 4)
    contents = random_contents(np.random.default_rng(13), p)
    res = run(p, contents, program, 0, layer_inputs(p))
    assert res["outs"] == [] and res["cycles"] == CellEngine.LATENCY
    np.testing.assert_array_equal(res["mems"]["h"], contents["h"])


def test_broken_lane_rounds_down_in_that_lane_only():
    """The test-only fault of the co-simulation: floor instead of round half up in one accumulator lane."""
    p = params("gru", 4)
    classes, lane = 5, 2
    contents = random_contents(np.random.default_rng(14), p)
    base = p.acc_base(p.max_layers, "x")
    shift = 16
    contents["acc"][base * p.lanes + lane], contents["mult"][base * p.lanes + lane] = 3, 1 << 14   # 0.75 ulp
    inputs = dict(layer_inputs(p), acc_base_x=base, vec_base=p.vec_base(p.max_layers), shift_x=shift)
    res = run(p, contents, Program.HEAD_OUT, classes, inputs, broken_lane=lane)
    bias = contents["vec"][inputs["vec_base"]:inputs["vec_base"] + classes]
    broken = C.fx_add(requantized(p, contents, base, 0, shift, rows=classes, round_down_lane=lane), bias)
    right = C.fx_add(requantized(p, contents, base, 0, shift, rows=classes), bias)
    assert res["outs"] == [int(v) for v in broken]
    assert res["outs"] != [int(v) for v in right]
