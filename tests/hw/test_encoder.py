# amaranth: UnusedElaboratable=no
"""Tests of deltarnn.hw.encoder.DeltaEncoder in Amaranth's simulator, against deltarnn.spec.contract."""

import re

import numpy as np
import pytest
from amaranth import Elaboratable, Module, Signal, unsigned
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from deltarnn.fpga import toolchain
from deltarnn.hw.encoder import DeltaEncoder
from deltarnn.hw.mxv import delta_layout
from deltarnn.spec import contract as C
from deltarnn.quant.golden import delta_encode

SRC_ADDR_BITS = 6
REF_ADDR_BITS = 6
#: (src_lanes, registered): elements per source word, and the word registered behind the memory as a
#: wide core's (the encoder selects the lane; a stage later with registered reads).
READS = [(1, False), (4, False), (1, True), (8, True)]


class Harness(Elaboratable):
    """The encoder wired to a source memory (``lanes`` elements a word, its data registered when
    ``registered``), a reference memory and a delta buffer."""

    def __init__(self, max_length, abits_max, streams=False, lanes=1, registered=False):
        self.dut = DeltaEncoder(
            max_length=max_length, abits_max=abits_max, delta_bits=C.delta_bits(abits_max),
            src_addr_bits=SRC_ADDR_BITS, ref_addr_bits=REF_ADDR_BITS, dbuf_depth=max_length,
            index_bits=max(1, (max_length - 1).bit_length()), streams=streams, src_lanes=lanes,
            registered=registered)
        self.lanes, self.registered = lanes, registered
        self.src = Memory(shape=self.dut.src_data.shape(), depth=(1 << SRC_ADDR_BITS) // lanes, init=[])
        self.ref = Memory(shape=self.dut.ref_rd_data.shape(), depth=1 << REF_ADDR_BITS, init=[])
        self.dbuf = Memory(shape=self.dut.dbuf_layout, depth=max_length, init=[])

    def elaborate(self, platform):
        m = Module()
        dut = self.dut
        m.submodules.dut = dut
        m.submodules.src = self.src
        m.submodules.ref = self.ref
        m.submodules.dbuf = self.dbuf
        src_rd = self.src.read_port()
        ref_rd = self.ref.read_port()
        ref_wr = self.ref.write_port()
        dbuf_wr = self.dbuf.write_port()
        src_data = src_rd.data
        if self.registered:          # every cycle, as the core's register of the state word
            src_data = Signal.like(src_rd.data)
            m.d.sync += src_data.eq(src_rd.data)
        m.d.comb += [
            src_rd.addr.eq(dut.src_addr >> (self.lanes - 1).bit_length()), src_rd.en.eq(dut.src_en),
            dut.src_data.eq(src_data),
            ref_rd.addr.eq(dut.ref_rd_addr), ref_rd.en.eq(dut.ref_rd_en),
            dut.ref_rd_data.eq(ref_rd.data),
            ref_wr.addr.eq(dut.ref_wr_addr), ref_wr.en.eq(dut.ref_wr_en),
            ref_wr.data.eq(dut.ref_wr_data),
            dbuf_wr.addr.eq(dut.dbuf_wr_addr), dbuf_wr.en.eq(dut.dbuf_wr_en),
            dbuf_wr.data.eq(dut.dbuf_wr_data),
        ]
        return m

    def set_src(self, ctx, address, value):
        """Element ``address`` of the source memory."""
        address %= 1 << SRC_ADDR_BITS
        word = self.src.data[address // self.lanes]
        ctx.set(word[address % self.lanes] if self.lanes > 1 else word, value)


def model_scan(h, ref, mult, shift, bits, theta):
    """NumPy model of one scan: new reference and the list of (index, delta)."""
    q = C.quantize_act(np.asarray(h, dtype=np.int64), mult, shift, bits)
    d = q - ref
    fired = np.abs(d) > theta
    new_ref = np.where(fired, q, ref)
    entries = [(int(i), int(d[i])) for i in np.flatnonzero(fired)]
    return new_ref, entries


def run_scans(max_length, abits_max, scans, *, back_to_back=False, late_inputs=False, reads=(1, False)):
    """Simulate ``scans`` (dicts of h, src_base, ref_base, mult, shift, bits, theta).

    All scans use one reference region per ``ref_base``; the model carries each
    region's reference over between scans. Returns the list of results
    (cycles, count, entries, ref region) observed, after asserting them.
    ``back_to_back``: each start is issued in the previous scan's done cycle.
    ``late_inputs``: the run-time inputs hold garbage in the start cycle and
    become valid only in the next cycle (the first busy one). ``reads``: the harness's
    ``(lanes, registered)``.
    """
    hn = Harness(max_length, abits_max, lanes=reads[0], registered=reads[1])
    dut = hn.dut
    results = []

    async def tb(ctx):
        refs = {}        # ref_base -> model reference (whole region up to max_length)
        pending_start = False
        for s in scans:
            h = s["h"]
            n = len(h)
            for j, x in enumerate(h):
                hn.set_src(ctx, s["src_base"] + j, int(x))
            for a in range(max_length):
                ctx.set(hn.dbuf.data[a], {"index": a % (1 << dut.index_bits),
                                          "delta": -1})
            for name in ("mult", "shift", "bits", "theta", "src_base", "ref_base"):
                ctx.set(getattr(dut, name), s[name])
            ctx.set(dut.length, n)
            if not pending_start:
                assert not ctx.get(dut.busy)
            if late_inputs:
                for name, value in [("mult", 12345), ("shift", 3), ("bits", 2), ("theta", 0),
                                    ("src_base", 17), ("ref_base", 1), ("length", 0)]:
                    ctx.set(getattr(dut, name), value)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            if late_inputs:
                for name in ("mult", "shift", "bits", "theta", "src_base", "ref_base"):
                    ctx.set(getattr(dut, name), s[name])
                ctx.set(dut.length, n)
            cycles = 1
            busy_trace = []
            while not ctx.get(dut.done):
                busy_trace.append(ctx.get(dut.busy))
                assert cycles < n + 50, "no done"
                await ctx.tick()
                cycles += 1
            assert not ctx.get(dut.busy), "busy must be low in the done cycle"
            assert all(busy_trace), "busy must stay high until done"
            count = ctx.get(dut.count)
            # model
            rb = s["ref_base"]
            ref = refs.get(rb, np.zeros(max_length, dtype=np.int64))
            new_ref, entries = model_scan(h, ref[:n], s["mult"], s["shift"], s["bits"],
                                          s["theta"])
            ref = ref.copy()
            ref[:n] = new_ref
            refs[rb] = ref
            got_entries = []
            for a in range(max_length):
                e = ctx.get(hn.dbuf.data[a])
                got_entries.append((int(e.index), int(e.delta)))
            got_ref = [ctx.get(hn.ref.data[(rb + j) % (1 << REF_ADDR_BITS)])
                       for j in range(max_length)]
            results.append(dict(cycles=cycles, count=count, entries=got_entries[:count],
                                ref=got_ref))
            assert cycles == n + DeltaEncoder.latency(reads[1]), (cycles, n)
            assert count == len(entries)
            assert got_entries[:count] == entries, (s, got_entries[:count], entries)
            # nothing written past count
            for a in range(count, max_length):
                assert got_entries[a] == (a % (1 << dut.index_bits), -1)
            assert got_ref == [int(x) for x in ref], (s, got_ref, list(ref))
            # done is a one-cycle pulse
            if back_to_back:
                pending_start = True          # next start is issued in the done cycle
            else:
                await ctx.tick()
                assert not ctx.get(dut.done)
                assert not ctx.get(dut.busy)
                assert ctx.get(dut.count) == count, "count holds until the next start"
                pending_start = False

    sim = Simulator(hn)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return results


def random_scan(rng, max_length, abits_max, theta, length=None, ref_base=0):
    n = int(rng.integers(0, max_length + 1)) if length is None else length
    kind = rng.integers(0, 4)
    if kind == 0:
        h = rng.integers(C.FX_MIN, C.FX_MAX + 1, n)
    elif kind == 1:
        h = rng.choice([C.FX_MIN, C.FX_MAX, -1, 0, 1, C.FX_MIN + 1], n)
    else:
        h = rng.integers(-3 * C.FX_ONE, 3 * C.FX_ONE, n)
    shift = int(rng.choice([0, 1, 2, 5, 10, 14, 17, 22, 30, 31, 32, C.SHIFT_MAX,
                            int(rng.integers(0, C.SHIFT_MAX + 1))]))
    mult = int(rng.choice([0, 1, (1 << C.MULT_BITS) - 1, int(rng.integers(0, 1 << C.MULT_BITS))]))
    bits = int(rng.choice([2, abits_max, int(rng.integers(2, abits_max + 1))]))
    return dict(h=h, src_base=int(rng.integers(0, 1 << SRC_ADDR_BITS)), ref_base=ref_base,
                mult=mult, shift=shift, bits=bits, theta=theta)


@pytest.mark.parametrize("reads", READS)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("abits_max", [2, 4, 8, 16])
def test_random_scans(abits_max, seed, reads):
    """Several successive scans; references carry over; thresholds 0, 1, 5."""
    rng = np.random.default_rng(1000 * seed + abits_max)
    max_length = 17
    scans = []
    for i, theta in enumerate([0, 1, 5, 0, 1, 5, 0, 1, 5]):
        length = [max_length, 0, None, max_length, 1, None, max_length, None, None][i]
        scans.append(random_scan(rng, max_length, abits_max, theta, length,
                                 ref_base=int(rng.choice([3, 40]))))
    run_scans(max_length, abits_max, scans, reads=reads)


def test_same_quantizer_sequence_matches_golden_delta_encode():
    """A sequence of h vectors with one quantizer and theta = golden's delta_encode."""
    rng = np.random.default_rng(7)
    n, steps, abits, theta = 12, 5, 8, 1
    mult, shift = 20000, 18
    hs = [rng.integers(-2 * C.FX_ONE, 2 * C.FX_ONE, n) for _ in range(steps)]
    scans = [dict(h=h, src_base=5, ref_base=9, mult=mult, shift=shift, bits=abits, theta=theta)
             for h in hs]
    res = run_scans(n, abits, scans)
    q = C.quantize_act(np.stack(hs)[None], mult, shift, abits)
    refs, fired = delta_encode(q, theta)
    for t in range(steps):
        assert res[t]["ref"] == list(refs[0, t])
        assert [i for i, _ in res[t]["entries"]] == list(np.flatnonzero(fired[0, t]))


def test_extremes():
    """h = -32768 / 32767 with mult = 2**15-1 and shift 0: no wrap-around, clamp works."""
    ab = 16
    h = np.array([C.FX_MIN, C.FX_MAX, C.FX_MIN + 1, -1, 0, 1, C.FX_MAX, C.FX_MIN])
    big = (1 << C.MULT_BITS) - 1
    scans = [
        dict(h=h, src_base=60, ref_base=62, mult=big, shift=0, bits=ab, theta=0),
        dict(h=h[::-1].copy(), src_base=60, ref_base=62, mult=big, shift=0, bits=2, theta=0),
        dict(h=h, src_base=0, ref_base=62, mult=big, shift=14, bits=ab, theta=5),
        dict(h=h, src_base=0, ref_base=62, mult=big, shift=15, bits=ab, theta=0),
        dict(h=h, src_base=0, ref_base=62, mult=big, shift=29, bits=ab, theta=0),
        dict(h=h, src_base=0, ref_base=62, mult=big, shift=30, bits=ab, theta=0),
        dict(h=h, src_base=0, ref_base=62, mult=big, shift=C.SHIFT_MAX, bits=ab, theta=0),
        dict(h=h, src_base=0, ref_base=62, mult=big, shift=0, bits=ab, theta=(1 << ab) - 1),
        dict(h=h, src_base=0, ref_base=62, mult=big, shift=0, bits=ab, theta=1 << ab),
    ]
    res = run_scans(len(h), ab, scans)
    qm = C.qmax(ab)
    assert res[0]["entries"][:2] == [(0, -qm), (1, qm)]
    # bits = 2 after +-qmax(16): deltas of -2*qmax(16)+... use the full delta width
    assert res[1]["entries"][0] == (0, -1 - (-qm))


@pytest.mark.parametrize("reads", READS)
@pytest.mark.parametrize("back_to_back, late_inputs", [(True, False), (False, True), (True, True)])
def test_start_timing(back_to_back, late_inputs, reads):
    """Start in the done cycle; inputs valid only from the first busy cycle."""
    rng = np.random.default_rng(3)
    scans = [random_scan(rng, 9, 8, theta, length=n, ref_base=7)
             for theta, n in [(0, 9), (1, 0), (0, 3), (5, 9), (0, 1), (0, 9)]]
    run_scans(9, 8, scans, back_to_back=back_to_back, late_inputs=late_inputs, reads=reads)


def test_layout():
    """The encoder writes the MxV's delta buffer entries."""
    layout = delta_layout(5, 9)
    assert layout.size == 14
    assert layout["index"].offset == 0 and layout["index"].shape == unsigned(5)
    assert layout["delta"].offset == 5
    assert layout["delta"].shape.signed and layout["delta"].shape.width == 9
    enc = DeltaEncoder(max_length=10, abits_max=8, delta_bits=9, src_addr_bits=8,
                       ref_addr_bits=8, dbuf_depth=10, index_bits=4)
    assert enc.dbuf_layout == delta_layout(4, 9)
    assert enc.dbuf_wr_data.shape() == delta_layout(4, 9)
    assert C.delta_bits(8) == 9
    assert len(enc.theta) == C.delta_bits(8)


@pytest.mark.parametrize("kwargs, message", [
    (dict(abits_max=1), "abits_max must be between 2 and 16 bits, got 1"),
    (dict(abits_max=17), "abits_max must be between 2 and 16 bits, got 17"),
    (dict(delta_bits=8), "delta_bits must be at least delta_bits(8) = 9, not 8"),
    (dict(dbuf_depth=9), "dbuf_depth (9) must be at least max_length (10): every element may emit a delta"),
    (dict(index_bits=3), "index_bits (3) cannot hold index 9"),
    (dict(max_length=0), "max_length must be a positive integer, not 0"),
    (dict(src_addr_bits=True), "src_addr_bits must be a positive integer, not True"),
    (dict(index_bits=2.0), "index_bits must be a positive integer, not 2.0"),
    (dict(src_lanes=3), "src_lanes must be a power of two, not 3"),
])
def test_parameter_checks(kwargs, message):
    args = dict(max_length=10, abits_max=8, delta_bits=9, src_addr_bits=8, ref_addr_bits=8,
                dbuf_depth=10, index_bits=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        DeltaEncoder(**args)


def test_verilog_conversion():
    toolchain.setup_environment()
    try:
        toolchain.require_tools("YOSYS")
    except toolchain.ToolchainError as exc:
        pytest.skip(str(exc))
    from amaranth.back import verilog
    enc = DeltaEncoder(max_length=256, abits_max=16, delta_bits=C.delta_bits(16),
                       src_addr_bits=12, ref_addr_bits=10, dbuf_depth=256, index_bits=8)
    text = verilog.convert(enc, name="delta_encoder")
    assert "module delta_encoder" in text
    for port in ("src_addr", "ref_wr_data", "dbuf_wr_data", "done", "count"):
        assert port in text


@pytest.mark.parametrize("reads", READS)
@pytest.mark.parametrize("seed", range(3))
def test_stream_scan_takes_the_fed_elements(seed, reads):
    """A stream scan: the elements come from feed, with gaps between them, and never from the source memory;
    the same deltas and references as a scan of them, done LATENCY cycles after the last one is fed."""
    rng = np.random.default_rng(seed)
    n, abits, ref_base = 11, 8, 5
    h = rng.integers(C.FX_MIN, C.FX_MAX + 1, n)
    ref = rng.integers(-C.qmax(abits), C.qmax(abits) + 1, n)
    mult, shift, bits, theta = int(rng.integers(1, 1 << 14)), int(rng.integers(10, 18)), abits, int(seed)
    gaps = rng.integers(0, 4, n)
    hn = Harness(n, abits, streams=True, lanes=reads[0], registered=reads[1])
    dut = hn.dut
    seen = {}

    async def tb(ctx):
        for j in range(1 << SRC_ADDR_BITS):
            hn.set_src(ctx, j, C.FX_MAX)                # garbage a stream scan must not read
        for j, r in enumerate(ref):
            ctx.set(hn.ref.data[ref_base + j], int(r))
        for name, value in (("mult", mult), ("shift", shift), ("bits", bits), ("theta", theta),
                            ("src_base", 0), ("ref_base", ref_base), ("length", n)):
            ctx.set(getattr(dut, name), value)
        ctx.set(dut.start, 1)
        ctx.set(dut.stream, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.stream, 0)
        cycle = 1
        for x, gap in zip(h, gaps):
            for _ in range(gap):
                assert not ctx.get(dut.done)
                await ctx.tick()
                cycle += 1
            ctx.set(dut.feed_valid, 1)
            ctx.set(dut.feed_data, int(x))
            await ctx.tick()
            ctx.set(dut.feed_valid, 0)
            ctx.set(dut.feed_data, 0)
            last_fed = cycle
            cycle += 1
        while not ctx.get(dut.done):
            assert cycle < last_fed + 50, "no done"
            await ctx.tick()
            cycle += 1
        seen["latency"] = cycle - last_fed
        seen["entries"] = [(int(e.index), int(e.delta)) for e in
                           (ctx.get(hn.dbuf.data[a]) for a in range(ctx.get(dut.count)))]
        seen["ref"] = [ctx.get(hn.ref.data[ref_base + j]) for j in range(n)]

    sim = Simulator(hn)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    new_ref, entries = model_scan(h, ref, mult, shift, bits, theta)
    assert seen["latency"] == DeltaEncoder.latency(reads[1])
    assert seen["entries"] == entries and len(entries) > 0
    assert seen["ref"] == [int(r) for r in new_ref]
