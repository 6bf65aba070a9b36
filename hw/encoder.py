"""Delta encoder: quantize a fixed-point vector and emit its above-threshold changes.

:class:`DeltaEncoder` scans a fixed-point vector ``h`` from the core's state
memory, quantizes every element to an MxV activation integer exactly as
:func:`deltarnn.spec.contract.quantize_act` does, and applies the delta rule of
``docs/datapath.md`` section 5 against the reference vector it keeps in the
reference memory::

    q = clamp_symmetric(round_shift(h * mult, shift), bits)
    d = q - ref
    if |d| > theta:  ref = q;  append (index, d) to the delta buffer

The delta buffer entry is the MxV unit's :func:`deltarnn.hw.mxv.delta_layout`.
"""

from __future__ import annotations

from amaranth import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from deltarnn.spec import contract as C
from deltarnn.spec.memory_map import SHIFT_BITS

from deltarnn.hw.mxv import delta_layout

__all__ = ["CONCURRENT_LANES", "DeltaEncoder"]

#: A core of more lanes than this runs its encoder beside the other units: a layer's h path beside its
#: x path's MxV, and the next path's input as the cell update writes it (a stream scan). There a scan
#: of H cycles is a large part of a step (an MxV pass takes ``ceil(rows / P)`` cycles a delta). A core
#: of this many lanes or fewer scans between the other phases, and saves the logic that running
#: concurrently costs (about 110 logic cells of an iCE40 UP5K, more than its smallest board build has free).
CONCURRENT_LANES = 2


# |h * mult| is below 2**_PROD_MAG_BITS for every 16-bit h and MULT_BITS-bit mult.
_PROD_MAG = (1 << (C.FX_BITS - 1)) * ((1 << C.MULT_BITS) - 1)
_PROD_MAG_BITS = _PROD_MAG.bit_length()
# For shift >= _SHIFT_CAP, round_shift(h * mult, shift) is 0 (the rounding
# constant 2**(shift-1) exceeds |h * mult|, so the sum lies in [0, 2**shift)):
# larger shifts are replaced by _SHIFT_CAP, which keeps the barrel shifter narrow.
_SHIFT_CAP = min(_PROD_MAG_BITS + 1, C.SHIFT_MAX)
assert _SHIFT_CAP == C.SHIFT_MAX or (1 << (_SHIFT_CAP - 1)) > _PROD_MAG


class DeltaEncoder(wiring.Component):
    """Quantize a fixed-point vector and write its deltas to the delta buffer.

    One scan processes elements ``k = 0 .. length-1``: it reads ``h[k]`` at
    ``src_base + k`` and ``ref[k]`` at ``ref_base + k``, computes
    ``q = quantize_act(h[k], mult, shift, bits)`` and ``d = q - ref[k]``, and
    when ``|d| > theta`` writes ``q`` back to ``ref_base + k`` and the entry
    ``{index: k, delta: d}`` to the delta buffer at the next free address
    (``0, 1, 2, ...`` in index order). Bit exact with
    :func:`deltarnn.spec.contract.quantize_act` and the delta rule of
    :func:`deltarnn.quant.golden.delta_encode`, with no wrap-around for any input
    (``h * mult`` is computed at full width, shifts above 31 give 0, the clamp
    covers the whole product range).

    Pipeline (cycle 0 is the cycle in which ``start`` is high and ``busy``
    low): element ``k`` is read in cycle ``1 + k``; the memory data, the
    product ``h * mult``, the rounding shift, the clamp and the subtraction
    each take one register stage; the threshold compare and the two writes happen in cycle
    ``k + LATENCY``; ``done`` is high in cycle ``length + LATENCY``, the cycle
    after the last possible write.

    With ``stream`` high in the ``start`` cycle the elements come from
    ``feed`` instead of the source memory: element ``k`` is issued in the
    cycle of the ``k``-th ``feed_valid`` (its value ``feed_data``, the
    reference read in that cycle), and ``done`` is high ``LATENCY`` cycles
    after the last one's; the core feeds the cell engine's writes of a new
    ``h``, so that a layer's new state is encoded as the engine makes it.

    With ``registered`` the source word arrives a cycle later, registered as it left
    the memory (the core's wide state memory: the register is the block RAM's own, and
    its lane is selected after it); the reference read is registered to match, and every
    stage after them comes a cycle later: ``latency(True)`` is ``LATENCY + 1``.

    Latency and throughput: one element per cycle, a scan takes exactly
    ``length + latency(registered)`` cycles from ``start`` to ``done`` whatever the data
    (``length = 0`` included). ``busy`` is high in cycles ``1 ..
    length + latency - 1`` and low in the ``done`` cycle, so the next
    ``start`` may coincide with ``done``. Nothing but ``stream`` is sampled in
    the ``start`` cycle: the run-time inputs (``length`` .. ``theta``) must be valid from
    the first ``busy`` cycle on and held stable while ``busy`` is high.

    Parameters
    ----------
    max_length : int
        Largest vector length (``length`` ranges over ``0 .. max_length``).
    abits_max : int
        Largest activation width, ``MIN_BITS .. MAX_BITS``; ``q`` and the
        references are ``signed(abits_max)``.
    delta_bits : int
        Width of the signed delta in a buffer entry, at least
        ``deltarnn.spec.contract.delta_bits(abits_max)``.
    src_addr_bits : int
        Address width of the source (state) memory read port.
    ref_addr_bits : int
        Address width of the reference memory ports.
    dbuf_depth : int
        Depth of the delta buffer, at least ``max_length`` (every element may
        emit a delta).
    index_bits : int
        Width of the entry's index field; must hold ``max_length - 1``.
    streams : bool
        Whether the encoder has stream scans (``stream``, ``feed_*``; without,
        those inputs are ignored).
    src_lanes : int
        Elements per source memory word (a power of two): element ``i`` is lane
        ``i mod src_lanes`` of word ``i // src_lanes``.
    registered : bool
        The source word comes registered, a cycle after the memory's data (see above).

    Attributes
    ----------
    LATENCY : int
        Cycles from ``start`` to ``done`` for ``length = 0``; a scan of
        ``length`` elements takes ``length + LATENCY`` cycles.
    dbuf_layout : amaranth.lib.data.StructLayout
        ``delta_layout(index_bits, delta_bits)``, the shape of
        ``dbuf_wr_data``.

    Members
    -------
    start : In(1)
        One-cycle pulse that starts a scan; ignored while ``busy`` is high.
    stream : In(1)
        Sampled with ``start``: the scan takes its elements from ``feed``.
    feed_valid, feed_data : In(1), In(signed(FX_BITS))
        In a stream scan, the next element (one per cycle at most; ``length``
        of them).
    length : In(range(max_length + 1))
        Number of elements to scan.
    src_base : In(src_addr_bits)
        Source address of element 0 (addresses wrap modulo ``2**src_addr_bits``).
    ref_base : In(ref_addr_bits)
        Reference address of element 0 (wraps modulo ``2**ref_addr_bits``).
    mult : In(MULT_BITS)
        Unsigned quantizer multiplier.
    shift : In(SHIFT_BITS)
        Quantizer shift (round half up; 0 means no shift and no rounding).
    bits : In(range(abits_max + 1))
        Activation width, ``2 .. abits_max``: ``q`` is clamped to
        ``[-qmax(bits), qmax(bits)]``.
    theta : In(delta_bits(abits_max))
        Unsigned delta threshold; a delta is emitted when ``|d| > theta``.
    busy : Out(1)
        High while a scan is in progress (see above for the exact cycles).
    done : Out(1)
        One-cycle pulse in the cycle after the last reference and delta
        buffer writes of the scan.
    count : Out(range(dbuf_depth + 1))
        Number of deltas written by the scan; valid from ``done`` until the
        next ``start`` (it counts up during the scan and is cleared by
        ``start``).
    src_addr : Out(src_addr_bits)
        Source element address, ``src_base + k`` (its word: ``src_addr // src_lanes``).
    src_en : Out(1)
        Source memory read enable.
    src_data : In(signed(FX_BITS)), or In(ArrayLayout(signed(FX_BITS), src_lanes))
        Source memory read data, the word of ``src_addr`` (synchronous port: data of the address
        presented in cycle t arrives in cycle t + 1, or t + 2 when ``registered``).
    ref_rd_addr : Out(ref_addr_bits)
        Reference memory read address, ``ref_base + k``.
    ref_rd_en : Out(1)
        Reference memory read enable.
    ref_rd_data : In(signed(abits_max))
        Reference memory read data (synchronous port, as ``src_data``).
    ref_wr_addr : Out(ref_addr_bits)
        Reference memory write address.
    ref_wr_en : Out(1)
        Reference memory write enable (high exactly when a delta is emitted).
    ref_wr_data : Out(signed(abits_max))
        New reference ``q``.
    dbuf_wr_addr : Out(range(dbuf_depth))
        Delta buffer write address: ``0, 1, 2, ...`` within a scan.
    dbuf_wr_en : Out(1)
        Delta buffer write enable (same cycle as ``ref_wr_en``).
    dbuf_wr_data : Out(dbuf_layout)
        The entry ``{index: k, delta: d}``.
    """

    #: Cycles from ``start`` to ``done`` beyond one per element: issue (1),
    #: memory data, product, rounding shift, clamp, subtraction (5 register
    #: stages), then compare and write (1).
    LATENCY = 7

    @staticmethod
    def latency(registered: bool = False) -> int:
        """Cycles of a scan beyond one per element: :data:`LATENCY`, one more with registered reads."""
        return DeltaEncoder.LATENCY + int(registered)

    @staticmethod
    def _check(*, max_length, abits_max, delta_bits, src_addr_bits, ref_addr_bits,
               dbuf_depth, index_bits):
        for name, value in [("max_length", max_length), ("src_addr_bits", src_addr_bits),
                            ("ref_addr_bits", ref_addr_bits), ("dbuf_depth", dbuf_depth),
                            ("index_bits", index_bits), ("abits_max", abits_max),
                            ("delta_bits", delta_bits)]:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        C.check_bits("abits_max", abits_max)
        if delta_bits < C.delta_bits(abits_max):
            raise ValueError(f"delta_bits must be at least delta_bits({abits_max}) = "
                             f"{C.delta_bits(abits_max)}, not {delta_bits}")
        if dbuf_depth < max_length:
            raise ValueError(f"dbuf_depth ({dbuf_depth}) must be at least max_length "
                             f"({max_length}): every element may emit a delta")
        if (1 << index_bits) < max_length:
            raise ValueError(f"index_bits ({index_bits}) cannot hold index {max_length - 1}")

    def __init__(self, *, max_length: int, abits_max: int, delta_bits: int,
                 src_addr_bits: int, ref_addr_bits: int, dbuf_depth: int,
                 index_bits: int, streams: bool = False, src_lanes: int = 1, registered: bool = False):
        try:
            self._check(max_length=max_length, abits_max=abits_max, delta_bits=delta_bits,
                        src_addr_bits=src_addr_bits, ref_addr_bits=ref_addr_bits,
                        dbuf_depth=dbuf_depth, index_bits=index_bits)
            if src_lanes < 1 or src_lanes & (src_lanes - 1):
                raise ValueError(f"src_lanes must be a power of two, not {src_lanes!r}")
        except ValueError:
            self._MustUse__silence = True   # no "created but never used" warning
            raise

        self.max_length = max_length
        self.abits_max = abits_max
        self.delta_bits = delta_bits
        self.src_addr_bits = src_addr_bits
        self.ref_addr_bits = ref_addr_bits
        self.dbuf_depth = dbuf_depth
        self.index_bits = index_bits
        self.streams = streams
        self.src_lanes = src_lanes
        self.registered = registered
        self.dbuf_layout = delta_layout(index_bits, delta_bits)

        super().__init__({
            "start": In(1),
            "stream": In(1),
            "feed_valid": In(1),
            "feed_data": In(signed(C.FX_BITS)),
            "length": In(range(max_length + 1)),
            "src_base": In(src_addr_bits),
            "ref_base": In(ref_addr_bits),
            "mult": In(C.MULT_BITS),
            "shift": In(SHIFT_BITS),
            "bits": In(range(abits_max + 1)),
            "theta": In(C.delta_bits(abits_max)),
            "busy": Out(1),
            "done": Out(1),
            "count": Out(range(dbuf_depth + 1)),
            "src_addr": Out(src_addr_bits),
            "src_en": Out(1),
            "src_data": In(signed(C.FX_BITS) if src_lanes == 1 else data.ArrayLayout(signed(C.FX_BITS), src_lanes)),
            "ref_rd_addr": Out(ref_addr_bits),
            "ref_rd_en": Out(1),
            "ref_rd_data": In(signed(abits_max)),
            "ref_wr_addr": Out(ref_addr_bits),
            "ref_wr_en": Out(1),
            "ref_wr_data": Out(signed(abits_max)),
            "dbuf_wr_addr": Out(range(dbuf_depth)),
            "dbuf_wr_en": Out(1),
            "dbuf_wr_data": Out(self.dbuf_layout),
        })

    def elaborate(self, platform):
        m = Module()
        ab = self.abits_max
        idx_shape = range(self.max_length + 1)

        # --- run-time constants, registered every cycle from the inputs (which
        # only need to be valid while busy: these are first used in cycle 3, the product's).
        shift_cap = Signal(range(_SHIFT_CAP + 1))
        shift_eff = Signal(range(_SHIFT_CAP + 1))
        half = Signal(_SHIFT_CAP)                    # 2**(shift-1), or 0 for shift 0
        qmax = Signal(ab)
        qmax_table = Array(Const(C.qmax(b) if b >= 1 else 0, ab) for b in range(ab + 1))
        mult = Signal.like(self.mult)
        theta, neg_theta = Signal.like(self.theta), Signal(signed(len(self.theta) + 1))
        m.d.comb += shift_cap.eq(Mux(self.shift > _SHIFT_CAP, _SHIFT_CAP, self.shift))
        m.d.sync += [
            shift_eff.eq(shift_cap),
            half.eq((Const(1, _SHIFT_CAP + 1) << shift_cap) >> 1),
            qmax.eq(qmax_table[self.bits]),
            mult.eq(self.mult), theta.eq(self.theta), neg_theta.eq(-self.theta),
        ]

        # --- control and issue stage (cycle 1 + k reads element k).
        issuing = Signal()
        streaming = Signal() if self.streams else Const(0)     # a stream scan: elements come from feed
        k = Signal(idx_shape)
        issue_valid = Signal()
        issue_end = Signal()
        m.d.comb += [
            issue_valid.eq(issuing & (k != self.length) & (~streaming | self.feed_valid)),
            issue_end.eq(issuing & (k == self.length)),
            self.src_addr.eq(self.src_base + k),
            self.src_en.eq(issue_valid & ~streaming),
            self.ref_rd_addr.eq(self.ref_base + k),
            self.ref_rd_en.eq(issue_valid),
        ]
        with m.If(issue_valid):
            m.d.sync += k.eq(k + 1)
        with m.If(issue_end):
            m.d.sync += issuing.eq(0)

        # --- pipeline: valid / end marker / index travel with the data (a stage more with registered reads).
        stages = 6 + int(self.registered)
        v = [Signal(name=f"v{i}") for i in range(1, stages + 1)]
        e = [Signal(name=f"e{i}") for i in range(1, stages + 1)]
        idx = [Signal(idx_shape, name=f"idx{i}") for i in range(1, stages + 1)]
        m.d.sync += [v[0].eq(issue_valid), e[0].eq(issue_end), idx[0].eq(k)]
        for i in range(1, stages):
            m.d.sync += [v[i].eq(v[i - 1]), e[i].eq(e[i - 1]), idx[i].eq(idx[i - 1])]
        v, e, idx = v[-6:], e[-6:], idx[-6:]

        # stage 0 (cycle k + 2, or k + 3 registered): the memory data arrives and is registered (the
        # multiplier sees a register, not the block RAM's output); the source word's lane is selected.
        # (a fed element waits in feed registers, as a read one does in the memory)
        lane_bits = (self.src_lanes - 1).bit_length()
        src = self.src_data
        ref_data = self.ref_rd_data
        feed = Signal(signed(C.FX_BITS), name="feed0")
        if self.streams:
            m.d.sync += feed.eq(self.feed_data)
        if lane_bits:                           # the lane of the word read, held as the memory holds its data
            lane = Signal(lane_bits, name="src_lane")
            with m.If(self.src_en):
                m.d.sync += lane.eq(self.src_addr[:lane_bits])
        if self.registered:
            ref0 = Signal(signed(ab), name="ref0", reset_less=True)     # (the block RAM's output register)
            feed1 = Signal(signed(C.FX_BITS), name="feed1")
            m.d.sync += [ref0.eq(self.ref_rd_data), feed1.eq(feed)]
            ref_data, feed = ref0, feed1
            if lane_bits:
                lane_r = Signal(lane_bits, name="src_lane_r")
                m.d.sync += lane_r.eq(lane)
                lane = lane_r
        if lane_bits:
            src = self.src_data[lane]
        h1 = Signal(signed(C.FX_BITS), reset_less=True)
        ref1 = Signal(signed(ab), reset_less=True)
        m.d.sync += [h1.eq(Mux(streaming, feed, src) if self.streams else src), ref1.eq(ref_data)]
        # stage 1 (cycle k + 3): full-width signed product.
        prod = Signal(signed(_PROD_MAG_BITS + 1))   # |h * mult| < 2**30
        ref2 = Signal(signed(ab))
        m.d.sync += [
            prod.eq(h1 * mult),
            ref2.eq(ref1),
        ]
        # stage 2 (cycle k + 4): round half up, arithmetic barrel shift.
        rnd = Signal(signed(len(prod) + 1))
        ref3 = Signal(signed(ab))
        m.d.sync += [
            rnd.eq((prod + half) >> shift_eff),
            ref3.eq(ref2),
        ]
        # stage 3 (cycle k + 5): symmetric clamp to [-qmax(bits), qmax(bits)].
        q4 = Signal(signed(ab))
        ref4 = Signal(signed(ab))
        with m.If(rnd > qmax):
            m.d.sync += q4.eq(qmax)
        with m.Elif(rnd < -qmax):
            m.d.sync += q4.eq(-qmax)
        with m.Else():
            m.d.sync += q4.eq(rnd)
        m.d.sync += ref4.eq(ref3)
        # stage 4 (cycle k + 6): delta.
        q5 = Signal(signed(ab))
        d5 = Signal(signed(C.delta_bits(ab)))
        m.d.sync += [q5.eq(q4), d5.eq(q4 - ref4)]
        # stage 5 (cycle k + latency): threshold, writes.
        fire = Signal()
        m.d.comb += [
            fire.eq(v[5] & ((d5 > theta) | (d5 < neg_theta))),
            self.ref_wr_addr.eq(self.ref_base + idx[5]),
            self.ref_wr_data.eq(q5),
            self.ref_wr_en.eq(fire),
            self.dbuf_wr_addr.eq(self.count),
            self.dbuf_wr_data.index.eq(idx[5]),
            self.dbuf_wr_data.delta.eq(d5),
            self.dbuf_wr_en.eq(fire),
            self.done.eq(e[5]),
        ]
        with m.If(fire):
            m.d.sync += self.count.eq(self.count + 1)
        with m.If(e[4]):
            m.d.sync += self.busy.eq(0)

        if self.streams:
            with m.If(self.start & ~self.busy):
                m.d.sync += streaming.eq(self.stream)
        # start (taken only when idle); placed last so it wins.
        with m.If(self.start & ~self.busy):
            m.d.sync += [
                self.busy.eq(1),
                issuing.eq(1),
                k.eq(0),
                self.count.eq(0),
            ]
        return m
