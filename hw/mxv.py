"""Delta-sparse integer matrix-vector unit (``DeltaMxV``).

For every delta ``(j, d)`` in the delta buffer the unit adds ``d`` times column
``j`` of a weight matrix to the accumulators, ``P`` rows per cycle. Memory
layouts and the pipeline are described in :class:`DeltaMxV` and in
``docs/gateware.md``.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from deltarnn.spec import contract as C

__all__ = ["ACC_SPACING", "FORWARD_LANES", "DeltaMxV", "delta_layout", "forwards_short", "pass_cycles"]

#: The fewest cycles between the reads of two items on one accumulator word, unless the item takes
#: the sum of the previous one on its word from a register: an item's sum is written 3 cycles after
#: its read, and the read port does not see a write of the same cycle.
ACC_SPACING = 4
#: Above this many lanes, passes of 2 and 3 words take their sums from registers too (two more
#: registers of P accumulators: in a smaller core, an iCE40's, the logic cells are worth more).
FORWARD_LANES = 8


def forwards_short(lanes: int) -> bool:
    """Whether an MxV of ``lanes`` lanes forwards the sums of passes of 2 and 3 words (:data:`FORWARD_LANES`)."""
    return lanes > FORWARD_LANES


def pass_cycles(words: int, lanes: int = 1) -> int:
    """Cycles the MxV of ``lanes`` lanes takes for one slice of one column of ``words`` accumulator words.

    ``words`` itself, except 2 and 3 at up to :data:`FORWARD_LANES` lanes,
    which are padded with bubbles to :data:`ACC_SPACING`: an item on a word
    (``words == 1``, and 2 or 3 in a wider core) takes the sum of the
    previous item on it from a register instead.
    """
    return ACC_SPACING if 1 < words < ACC_SPACING and not forwards_short(lanes) else words


def delta_layout(index_bits: int, delta_bits: int) -> data.StructLayout:
    """Layout of one delta buffer entry, as the encoder writes it and the MxV reads it.

    Parameters
    ----------
    index_bits : int
        Width of the unsigned column index.
    delta_bits : int
        Width of the signed delta.

    Returns
    -------
    amaranth.lib.data.StructLayout
        ``{index: unsigned(index_bits), delta: signed(delta_bits)}``: the index
        occupies bits ``[0, index_bits)`` and the delta bits
        ``[index_bits, index_bits + delta_bits)`` of the entry.
    """
    return data.StructLayout({
        "index": unsigned(index_bits),
        "delta": signed(delta_bits),
    })


class DeltaMxV(wiring.Component):
    """Delta-sparse integer matrix-vector unit with ``P`` parallel lanes.

    For each delta ``(j, d)`` of the delta buffer, in buffer order, for each
    weight slice ``s`` in ``0 .. S-1`` (``S = slices + 1``) and each word
    ``w`` in ``0 .. words-1``, lane ``p`` of accumulator word ``acc_base + w``
    is incremented by ``d`` times lane ``p`` of weight word ``w_base +
    j*col_words + s*words + w``, shifted left by ``s*wmem_bits``; all ``P``
    lanes in parallel. With one slice (``S = 1``) that is ``d`` times the
    signed slot; with more, the low ``S-1`` slices' slots are unsigned and
    the top slice's signed, so that the ``S`` slots of a row hold one weight
    of up to ``S*wmem_bits`` bits exactly
    (:func:`deltarnn.spec.memory_map.weight_slices`). Additions wrap at
    ``acc_bits`` (no saturation: the loader guarantees that no accumulator
    overflows). Addresses wrap at ``waddr_bits`` / ``aaddr_bits``.

    Memory layouts (the memories are outside the unit, which only drives
    their ports; all read ports are synchronous, data one cycle after the
    address):

    - weights: words of ``P*wmem_bits`` bits, lane ``p`` = bits
      ``[p*wmem_bits, (p+1)*wmem_bits)``, signed. Row ``r`` of column ``j``
      of a matrix with ``words = ceil(R/P)`` words per column is at word
      ``w_base + j*col_words + r//P``, lane ``r % P`` (``col_words = S *
      words``; slice ``s`` of the column ``s*words`` words further); padding
      lanes hold 0.
    - accumulators: words of ``P*acc_bits`` bits, lane ``p`` = bits
      ``[p*acc_bits, (p+1)*acc_bits)``, signed. Row ``r`` is at word
      ``acc_base + r//P``, lane ``r % P``. The read port need not be
      transparent to the write port, and what it returns when it reads a
      word in the cycle it is written does not matter: the unit never does
      (an item that takes its word's sum from a register reads nothing).
    - delta buffer: entry ``i`` (``0 .. count-1``) is a
      :func:`delta_layout` struct, index in the low ``index_bits`` bits, the
      signed delta in the next ``delta_bits`` bits.

    Pipeline (one item = one accumulator word of one slice of one delta):
    stage 0 steps through the items and reads the delta entry at each
    column's first word; stage 1 registers the entry; stage 1b registers the
    column's offset ``j*col_words``; stage 1c computes the item's weight
    address into a register (``w_base`` plus the offset at a column's first
    item, the previous address plus one after); stage 2
    issues the weight read; stage 2b registers the weight word and reads the
    accumulator word; stage 3 registers the ``P`` products (shifted by the
    slice) and the accumulator word; stage 4 adds into the sum register;
    stage 5 writes it. An item's sum reaches the memory 3 cycles after its
    read, so two items on one accumulator word are :data:`ACC_SPACING`
    cycles apart: at up to :data:`FORWARD_LANES` lanes a slice pass of 2 or
    3 words is padded with bubbles to 4 cycles (:func:`pass_cycles`). With
    ``words == 1`` every item after the run's first pass takes the previous
    item's sum from the sum register instead of the memory; above
    :data:`FORWARD_LANES` lanes, with 2 or 3 words, from the sum register's
    one or two delayed copies. No path from the accumulator memory's output to its input
    is without a register.

    Latency and throughput: one item per cycle, also between deltas, with
    the bubbles above. If ``start`` is high in cycle 0, ``done`` is high in
    cycle ``count*S*pass_cycles(words, P) + LATENCY`` (exactly, also for
    ``count == 0``); the last accumulator write happens in the cycle before
    ``done``, so every write is visible to reads issued from the ``done``
    cycle on. ``busy`` is high from cycle 1 up to and including cycle
    ``count*S*pass_cycles(words) + LATENCY - 1``; it is low in the ``done``
    cycle, so a new run may start in that cycle.

    Parameters
    ----------
    lanes : int
        ``P``, lanes (rows processed per cycle), ``>= 1``.
    wmem_bits : int
        Width of a signed weight slot, 2 .. 16.
    delta_bits : int
        Width of a signed delta.
    acc_bits : int
        Width of a signed accumulator.
    waddr_bits : int
        Word address width of the weight memory.
    aaddr_bits : int
        Word address width of the accumulator memory.
    dbuf_depth : int
        Number of entries of the delta buffer.
    index_bits : int
        Width of the unsigned column index of a delta entry.
    words_bits : int
        Width of the run-time ``words`` input.
    max_slices : int
        The most weight slices a matrix may have (1: no slicing logic).
    registered_weights : bool
        The weight memory registers its read data itself (``w_data`` two cycles after ``w_addr``, as the
        core's banked weight memory does): the unit registers it once more, in a stage of its own (2c,
        before the accumulator read), a cycle more of latency (:meth:`latency`).

    Attributes
    ----------
    LATENCY : int
        ``L`` in the cycle count ``count*S*pass_cycles(words) + L`` from
        ``start`` to ``done`` (9; 10 with ``registered_weights``).
    dbuf_layout : amaranth.lib.data.StructLayout
        Layout of a delta buffer entry, see :func:`delta_layout`.

    Members
    -------
    start : In(1)
        One-cycle pulse that starts a run; ignored while ``busy``. ``count``
        must be valid in the start cycle; ``words``, ``slices``,
        ``col_words``, ``w_base`` and ``acc_base`` from the cycle after it
        (the core registers them as the path changes); all are held stable
        while ``busy`` is high.
    count : In(range(dbuf_depth + 1))
        Number of deltas in the delta buffer (entries ``0 .. count-1``).
    words : In(words_bits)
        Words per weight column slice and accumulator words, ``ceil(rows / P)``; must be ``>= 1``.
    slices : In(range(max_slices))
        Weight slices of the matrix, minus 1 (``S - 1``).
    col_words : In(waddr_bits)
        Weight words per column, ``S * words``.
    w_base : In(waddr_bits)
        Weight word address of column 0 of the matrix.
    acc_base : In(aaddr_bits)
        Accumulator word address of rows ``0 .. P-1``.
    busy : Out(1)
        High while a run is in progress (see above).
    done : Out(1)
        One-cycle pulse in the cycle after the last accumulator write.
    deltas : Out(32)
        Deltas processed in the current (or last) run: reset to 0 by
        ``start``, incremented as each delta enters the pipeline, equal to
        ``count`` when ``done`` is high, held until the next ``start``.
    dbuf_addr : Out(range(dbuf_depth))
        Delta buffer read address.
    dbuf_en : Out(1)
        Delta buffer read enable.
    dbuf_data : In(dbuf_layout)
        Delta buffer read data (one cycle after ``dbuf_addr``/``dbuf_en``).
    w_addr : Out(waddr_bits)
        Weight memory read address.
    w_en : Out(1)
        Weight memory read enable.
    w_data : In(P * wmem_bits)
        Weight memory read data (one cycle after the address, or two with ``registered_weights``).
    acc_rd_addr : Out(aaddr_bits)
        Accumulator read address.
    acc_rd_en : Out(1)
        Accumulator read enable.
    acc_rd_data : In(P * acc_bits)
        Accumulator read data (one cycle after the address; a write of the
        same cycle need not show).
    acc_wr_addr : Out(aaddr_bits)
        Accumulator write address.
    acc_wr_en : Out(1)
        Accumulator write enable.
    acc_wr_data : Out(P * acc_bits)
        Accumulator write data.
    """

    #: Cycles from ``start`` to ``done`` are ``count*S*pass_cycles(words, P) + LATENCY`` (one more with
    #: ``registered_weights``: :meth:`latency`).
    LATENCY = 9

    @classmethod
    def latency(cls, registered_weights: bool) -> int:
        """``L`` of a unit with or without ``registered_weights`` (its stage 2c)."""
        return cls.LATENCY + int(registered_weights)

    def __init__(self, *, lanes, wmem_bits, delta_bits, acc_bits, waddr_bits,
                 aaddr_bits, dbuf_depth, index_bits, words_bits, max_slices=1, registered_weights=False):
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, not {lanes}")
        C.check_bits("wmem_bits", wmem_bits)
        for name, value in (("delta_bits", delta_bits), ("acc_bits", acc_bits)):
            if value < 2:
                raise ValueError(f"{name} must be >= 2, not {value}")
        for name, value in (("waddr_bits", waddr_bits), ("aaddr_bits", aaddr_bits),
                            ("dbuf_depth", dbuf_depth), ("index_bits", index_bits),
                            ("words_bits", words_bits), ("max_slices", max_slices)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, not {value}")
        self.lanes = lanes
        self.wmem_bits = wmem_bits
        self.delta_bits = delta_bits
        self.acc_bits = acc_bits
        self.waddr_bits = waddr_bits
        self.aaddr_bits = aaddr_bits
        self.dbuf_depth = dbuf_depth
        self.index_bits = index_bits
        self.words_bits = words_bits
        self.max_slices = max_slices
        self.registered_weights = registered_weights
        self.dbuf_layout = delta_layout(index_bits, delta_bits)
        super().__init__({
            "start": In(1),
            "count": In(range(dbuf_depth + 1)),
            "words": In(words_bits),
            "slices": In(range(max_slices)),
            "col_words": In(waddr_bits),
            "w_base": In(waddr_bits),
            "acc_base": In(aaddr_bits),
            "busy": Out(1),
            "done": Out(1),
            "deltas": Out(32),
            "dbuf_addr": Out(range(dbuf_depth)),
            "dbuf_en": Out(1),
            "dbuf_data": In(self.dbuf_layout),
            "w_addr": Out(waddr_bits),
            "w_en": Out(1),
            "w_data": In(lanes * wmem_bits),
            "acc_rd_addr": Out(aaddr_bits),
            "acc_rd_en": Out(1),
            "acc_rd_data": In(lanes * acc_bits),
            "acc_wr_addr": Out(aaddr_bits),
            "acc_wr_en": Out(1),
            "acc_wr_data": Out(lanes * acc_bits),
        })

    def elaborate(self, platform):
        m = Module()
        P, WB, AB = self.lanes, self.wmem_bits, self.acc_bits

        take = Signal()
        m.d.comb += take.eq(self.start & ~self.busy)

        # --- stage 0: item sequencer, delta buffer read ----------------------
        # Each slice of each column takes pass_cycles(words) cycles: items past `words` are
        # bubbles, so that two items on one accumulator word are ACC_SPACING cycles apart (or
        # adjacent, with words == 1, where the sum is forwarded).
        running = Signal()
        col = Signal(range(self.dbuf_depth + 1))     # delta index i
        word = Signal(self.words_bits)               # word w within the slice pass
        sl0 = Signal(range(self.max_slices))         # slice s within the column
        pass_last = Signal(self.words_bits)          # pass_cycles(words) - 1
        one_word = Signal()                          # words == 1: every sum is forwarded
        forward = forwards_short(P)                  # and with 2 or 3 words too
        short = (self.words != 1) & (self.words < ACC_SPACING) & (not forward)
        first0 = Signal()        # the column's first item
        sfirst0 = Signal()       # a slice's first item
        fresh0 = Signal()        # the run's first pass: the accumulators hold no sum of this run yet
        last_word0 = Signal()
        last_item0 = Signal()    # the column's last item
        last0 = Signal()
        m.d.comb += [
            sfirst0.eq(word == 0),
            first0.eq(sfirst0 & (sl0 == 0)),
            fresh0.eq((col == 0) & (sl0 == 0)),
            pass_last.eq(Mux(short, ACC_SPACING - 1, self.words - 1)),
            one_word.eq(self.words == 1),
            last_word0.eq(word == pass_last),
            last_item0.eq(last_word0 & (sl0 == self.slices)),
            last0.eq(running & last_item0 & (col == self.count - 1)),
            self.dbuf_addr.eq(col),
            self.dbuf_en.eq(running & first0),
        ]
        with m.If(take):
            m.d.sync += [
                running.eq(self.count != 0),
                col.eq(0),
                word.eq(0),
                sl0.eq(0),
                self.busy.eq(1),
                self.deltas.eq(0),
            ]
        with m.Elif(running):
            with m.If(last_word0):
                m.d.sync += word.eq(0)
                with m.If(last_item0):
                    m.d.sync += [sl0.eq(0), col.eq(col + 1)]
                with m.Else():
                    m.d.sync += sl0.eq(sl0 + 1)
            with m.Else():
                m.d.sync += word.eq(word + 1)
            with m.If(last0):
                m.d.sync += running.eq(0)
            with m.If(first0):
                m.d.sync += self.deltas.eq(self.deltas + 1)

        # --- stage 1: the delta entry arrives and is registered -----------------
        v1, first1, sfirst1, fresh1, last1 = Signal(), Signal(), Signal(), Signal(), Signal()
        sl1 = Signal.like(sl0)
        m.d.sync += [
            v1.eq(running & (word < self.words)),
            first1.eq(first0),
            sfirst1.eq(sfirst0),
            fresh1.eq(fresh0),
            sl1.eq(sl0),
            # a run with count == 0 sends a lone end marker down the pipeline
            last1.eq(last0 | (take & (self.count == 0))),
        ]
        index1b = Signal.like(self.dbuf_data.index, reset_less=True)
        delta1b = Signal(signed(self.delta_bits), reset_less=True)
        with m.If(v1 & first1):
            m.d.sync += [index1b.eq(self.dbuf_data.index), delta1b.eq(self.dbuf_data.delta)]

        # --- stage 1b: the column's weight offset, index * col_words, registered ------
        # (the product of two run-time values takes a cycle of its own)
        v1b, first1b, sfirst1b, fresh1b, last1b = Signal(), Signal(), Signal(), Signal(), Signal()
        sl1b = Signal.like(sl0)
        m.d.sync += [v1b.eq(v1), first1b.eq(first1), sfirst1b.eq(sfirst1), fresh1b.eq(fresh1), last1b.eq(last1),
                     sl1b.eq(sl1)]
        offset1c = Signal(self.waddr_bits)
        delta1c = Signal(signed(self.delta_bits))
        m.d.sync += [offset1c.eq(index1b * self.col_words), delta1c.eq(delta1b)]

        # --- stage 1c: the weight address of the item --------------------------
        # (registered: the weight memory's many blocks see a register, no arithmetic; the
        # address of the previous item is the register itself)
        v1c, first1c, sfirst1c, fresh1c, last1c = Signal(), Signal(), Signal(), Signal(), Signal()
        sl1c = Signal.like(sl0)
        m.d.sync += [v1c.eq(v1b), first1c.eq(first1b), sfirst1c.eq(sfirst1b), fresh1c.eq(fresh1b),
                     last1c.eq(last1b), sl1c.eq(sl1b)]
        w_addr2 = Signal(self.waddr_bits)
        delta2 = Signal(signed(self.delta_bits))
        m.d.sync += delta2.eq(delta1c)
        with m.If(v1c):
            with m.If(first1c):
                m.d.sync += w_addr2.eq(self.w_base + offset1c)
            with m.Else():
                m.d.sync += w_addr2.eq(w_addr2 + 1)

        # --- stage 2: weight read; accumulator address -----------------------
        v2, sfirst2, fresh2, last2 = Signal(), Signal(), Signal(), Signal()
        sl2 = Signal.like(sl0)
        m.d.sync += [v2.eq(v1c), sfirst2.eq(sfirst1c), fresh2.eq(fresh1c), last2.eq(last1c), sl2.eq(sl1c)]
        a_ptr = Signal(self.aaddr_bits)   # accumulator address of the previous item
        a_addr2 = Signal(self.aaddr_bits)
        m.d.comb += [
            a_addr2.eq(Mux(sfirst2, self.acc_base, a_ptr + 1)),
            self.w_addr.eq(w_addr2),
            self.w_en.eq(v2),
        ]
        with m.If(v2):
            m.d.sync += a_ptr.eq(a_addr2)

        # --- stage 2b: the weight word registered as it leaves the memory; accumulator read --
        v2b, fresh2b, last2b = Signal(), Signal(), Signal()
        sl2b = Signal.like(sl0)
        delta2b = Signal(signed(self.delta_bits))
        a_addr2b = Signal(self.aaddr_bits)
        m.d.sync += [v2b.eq(v2), fresh2b.eq(fresh2), last2b.eq(last2), delta2b.eq(delta2), a_addr2b.eq(a_addr2),
                     sl2b.eq(sl2)]
        w_word = Signal.like(self.w_data, reset_less=True)
        m.d.sync += w_word.eq(self.w_data)
        # the accumulator read's enable, a register (it selects the address of the memory's many blocks
        # too, in the core): an item that takes its word's sum from a register reads nothing (the memory
        # may be writing that word)
        forwarded = one_word | ((self.words == 2) | (self.words == 3) if forward else 0)
        rd_en = Signal()
        m.d.sync += rd_en.eq(v2 & ~(forwarded & ~fresh2))
        if self.registered_weights:
            # --- stage 2c: the word, registered outside two cycles after its address, registered again
            # (the multiplexer of the memory's banks behind it); the accumulator read a cycle later
            v2c, fresh2c, last2c = Signal(), Signal(), Signal()
            sl2c = Signal.like(sl0)
            delta2c = Signal(signed(self.delta_bits))
            a_addr2c = Signal(self.aaddr_bits)
            rd_en2c = Signal()
            m.d.sync += [v2c.eq(v2b), fresh2c.eq(fresh2b), last2c.eq(last2b), delta2c.eq(delta2b),
                         a_addr2c.eq(a_addr2b), sl2c.eq(sl2b), rd_en2c.eq(rd_en)]
            v2b, fresh2b, last2b, delta2b, a_addr2b, sl2b, rd_en = v2c, fresh2c, last2c, delta2c, a_addr2c, sl2c, rd_en2c
        m.d.comb += [self.acc_rd_addr.eq(a_addr2b), self.acc_rd_en.eq(rd_en)]

        # --- stage 3: products and the accumulator word registered ------------
        v3, fresh3, last3 = Signal(), Signal(), Signal()
        sl3 = Signal.like(sl0)
        delta3 = Signal(signed(self.delta_bits))
        a_addr3 = Signal(self.aaddr_bits)
        m.d.sync += [v3.eq(v2b), fresh3.eq(fresh2b), last3.eq(last2b), delta3.eq(delta2b), a_addr3.eq(a_addr2b),
                     sl3.eq(sl2b)]
        v4, last4, forward4 = Signal(), Signal(), Signal()
        a_addr4 = Signal(self.aaddr_bits)
        acc4 = Signal.like(self.acc_rd_data, reset_less=True)
        m.d.sync += [v4.eq(v3), last4.eq(last3), a_addr4.eq(a_addr3), acc4.eq(self.acc_rd_data),
                     forward4.eq(forwarded & ~fresh3)]

        # --- stage 4: add into the sum register; stage 5 writes it -------------
        # (with words == 1 the previous item's sum, still in the sum register, replaces the
        # word read from the memory, which it has not reached yet; with 2 or 3 words, in a core
        # that forwards them, the sum of 2 or 3 items back, in the sum register's delayed copies)
        v5, last5 = Signal(), Signal()
        a_addr5 = Signal(self.aaddr_bits)
        sum5 = Signal.like(self.acc_wr_data)
        m.d.sync += [v5.eq(v4), last5.eq(last4), a_addr5.eq(a_addr4)]
        earlier = sum5
        if forward:
            sum6, sum7 = Signal.like(sum5), Signal.like(sum5)
            m.d.sync += [sum6.eq(sum5), sum7.eq(sum6)]
            # which one, from registers (``words`` holds from the start; the selects reach every lane's adder)
            one, two = Signal(), Signal()
            m.d.sync += [one.eq(self.words == 1), two.eq(self.words == 2)]
            earlier = Signal.like(sum5)
            m.d.comb += earlier.eq(Mux(one, sum5, Mux(two, sum6, sum7)))
        S = self.max_slices
        for p in range(P):
            slot = w_word[p * WB:(p + 1) * WB]
            if S == 1:
                prod4 = Signal(signed(WB + self.delta_bits), name=f"prod{p}")
                m.d.sync += prod4.eq(slot.as_signed() * delta3)
            else:
                # the low slices are unsigned digits, the top one signed
                weight = Signal(signed(WB + 1), name=f"weight{p}")
                product = Signal(signed(WB + 1 + self.delta_bits), name=f"product{p}")
                prod4 = Signal(signed(S * WB + 1 + self.delta_bits), name=f"prod{p}")
                m.d.comb += [weight.eq(Mux(sl3 == self.slices, slot.as_signed(), slot)),
                             product.eq(weight * delta3)]
                with m.Switch(sl3):
                    for k in range(S):
                        with m.Case(k):
                            m.d.sync += prod4.eq(product << (k * WB))
            lane = slice(p * AB, (p + 1) * AB)
            m.d.sync += sum5[lane].eq(Mux(forward4, earlier[lane], acc4[lane]).as_signed() + prod4)
        m.d.comb += [
            self.acc_wr_addr.eq(a_addr5),
            self.acc_wr_data.eq(sum5),
            self.acc_wr_en.eq(v5),
        ]

        # --- completion -------------------------------------------------------
        m.d.sync += self.done.eq(last5)
        with m.If(last5):
            m.d.sync += self.busy.eq(0)

        return m
