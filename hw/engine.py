"""CellEngine: the element-wise phase, as a micro-program run once per neuron.

Each cell type's update (``docs/datapath.md`` section 6) is written below as
a short program over eight 16-bit registers. The engine unrolls the program
it is elaborated with into a state machine, so only the operations a cell
needs become hardware; the program also gives the exact cycle cost.

Instructions (``k`` is the neuron being updated, ``H`` the hidden size):

==========================  ======  ==================================================
instruction                 cycles  effect
==========================  ======  ==================================================
``("rq", d, path, blk)``    3       ``R[d] = requantize(acc[path][blk*H + k], mult, shift[path])``
``("hw", d)``               3       SRU highway: identity: ``requantize(ref_x[k], hw_mult, hw_shift)``,
                                    projection: ``("rq", d, "x", 3)``
``("vec", d, blk)``         2       ``R[d] = vec[blk*H + k]``
``("ld", d, s)``            2       ``R[d] = state s ("h" or "c") [k]``
``("add", d, a, b[, c])``   1       ``R[d] = fx_add(R[a], R[b][, R[c]])``
``("mul", d, a, b)``        1       ``R[d] = fx_mul(R[a], R[b])``
``("omin", d, a)``          1       ``R[d] = ONE - R[a]``
``("relu", d, a)``          1       ``R[d] = max(R[a], 0)``
``("sig", d, a)``           2       ``R[d] = sigmoid(R[a])`` (ROM)
``("tanh", d, a)``          2       ``R[d] = tanh(R[a])`` (ROM)
``("st", s, a)``            1       ``state s [k] = R[a]``
``("out", a)``              1       emit ``R[a]`` on ``out`` (waits while ``out.ready`` is low)
==========================  ======  ==================================================
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import enum, stream, wiring
from amaranth.lib.wiring import In, Out

from deltarnn.spec import contract as C
from deltarnn.spec.memory_map import SHIFT_BITS

from deltarnn.hw.activation import Activation

LSTM = [
    ("rq", 0, "x", 0), ("rq", 1, "h", 0), ("vec", 2, 0), ("add", 0, 0, 1, 2), ("sig", 3, 0),
    ("rq", 0, "x", 1), ("rq", 1, "h", 1), ("vec", 2, 1), ("add", 0, 0, 1, 2), ("sig", 4, 0),
    ("rq", 0, "x", 2), ("rq", 1, "h", 2), ("vec", 2, 2), ("add", 0, 0, 1, 2), ("tanh", 5, 0),
    ("rq", 0, "x", 3), ("rq", 1, "h", 3), ("vec", 2, 3), ("add", 0, 0, 1, 2), ("sig", 6, 0),
    ("ld", 0, "c"), ("mul", 0, 4, 0), ("mul", 1, 3, 5), ("add", 0, 0, 1), ("st", "c", 0),
    ("tanh", 1, 0), ("mul", 1, 6, 1), ("st", "h", 1),
]
GRU = [
    ("rq", 0, "x", 0), ("rq", 1, "h", 0), ("vec", 2, 0), ("add", 0, 0, 1, 2), ("sig", 3, 0),   # r
    ("rq", 0, "x", 1), ("rq", 1, "h", 1), ("vec", 2, 1), ("add", 0, 0, 1, 2), ("sig", 4, 0),   # z
    ("rq", 0, "h", 2), ("vec", 1, 3), ("add", 0, 0, 1), ("mul", 0, 3, 0),                      # r*(h_n + b_hn)
    ("rq", 1, "x", 2), ("vec", 2, 2), ("add", 1, 1, 2), ("add", 0, 1, 0), ("tanh", 5, 0),      # n
    ("omin", 1, 4), ("mul", 1, 1, 5), ("ld", 2, "h"), ("mul", 2, 4, 2), ("add", 1, 1, 2), ("st", "h", 1),
]
LIGRU = [
    ("rq", 0, "x", 0), ("rq", 1, "h", 0), ("vec", 2, 0), ("add", 3, 0, 1, 2),                  # a
    ("rq", 0, "x", 1), ("rq", 1, "h", 1), ("vec", 2, 1), ("add", 0, 0, 1, 2), ("sig", 4, 0),   # z
    ("relu", 3, 3), ("ld", 0, "h"), ("mul", 0, 4, 0), ("omin", 1, 4), ("mul", 1, 1, 3),
    ("add", 0, 0, 1), ("st", "h", 0),
]
SRU = [  # vec blocks: 0 bias_f, 1 bias_r, 2 vf, 3 vr; x blocks: 0 x~, 1 f, 2 r, 3 projection
    ("ld", 5, "c"),
    ("vec", 0, 2), ("mul", 0, 0, 5), ("rq", 1, "x", 1), ("vec", 2, 0), ("add", 0, 1, 0, 2), ("sig", 3, 0),
    ("vec", 0, 3), ("mul", 0, 0, 5), ("rq", 1, "x", 2), ("vec", 2, 1), ("add", 0, 1, 0, 2), ("sig", 4, 0),
    ("mul", 0, 3, 5), ("omin", 1, 3), ("rq", 2, "x", 0), ("mul", 1, 1, 2), ("add", 5, 0, 1), ("st", "c", 5),
    ("hw", 0), ("mul", 1, 4, 5), ("omin", 2, 4), ("mul", 2, 2, 0), ("add", 1, 1, 2), ("st", "h", 1),
]
CELL_PROGRAMS = {"lstm": LSTM, "gru": GRU, "ligru": LIGRU, "sru": SRU}
#: Output of a head: requantized accumulator plus bias, per class.
HEAD_OUT = [("rq", 0, "x", 0), ("vec", 1, 0), ("add", 0, 0, 1), ("out", 0)]
#: Output without a head: the last layer's h.
H_OUT = [("ld", 0, "h"), ("out", 0)]

CYCLES = {"rq": 3, "hw": 3, "vec": 2, "ld": 2, "add": 1, "mul": 1, "omin": 1, "relu": 1,
          "sig": 2, "tanh": 2, "st": 1, "out": 1}
NREGS = 8


class Program(enum.Enum, shape=2):
    """Which program a run executes (the ``program`` input)."""

    CELL = 0
    HEAD_OUT = 1
    H_OUT = 2


def program_cycles(program) -> int:
    """Cycles the engine spends per item (neuron or output) on ``program``."""
    return sum(CYCLES[ins[0]] for ins in program)


class CellEngine(wiring.Component):
    """Runs a cell's micro-program for ``count`` neurons (or an output program).

    Parameters
    ----------
    params : deltarnn.spec.memory_map.DeviceParams
        Cell type (selects the CELL program), sizes and widths.
    broken_lane : int, optional
        Test-only fault injection (see :class:`deltarnn.hw.core.Core`).

    Members
    -------
    start : In(1)
        Pulse: run ``program`` for items ``k = 0 .. count-1``.
    program : In(Program)
        The program to run (sampled with ``start``).
    count : In(range(max_hidden + 1))
        Number of items (neurons or outputs; sampled with ``start``).
    hidden : In(range(max_hidden + 1))
        H: block stride of accumulator rows and vectors.
    acc_base_x, acc_base_h : In(range(acc_depth))
        Accumulator word bases of the x-path (or head) and h-path blocks.
    shift_x, shift_h : In(SHIFT_BITS)
        Requantization shifts of the two paths.
    vec_base, state_base, ref_base : In(range(depth))
        Bases of this layer's vectors, state (h, c) and x-path references.
    hw_mult, hw_shift, hw_identity : In(MULT_BITS), In(SHIFT_BITS), In(1)
        SRU highway from the references.
    busy, done : Out(1)
        ``done`` pulses in the cycle after the last write or output.
    acc_addr, acc_en, acc_data; mult_addr, mult_en, mult_data; vec_addr, vec_en, vec_data;
    h_rd_addr, h_rd_en, h_rd_data; c_rd_addr, c_rd_en, c_rd_data; ref_addr, ref_en, ref_data
        Synchronous read ports (data one cycle after the address).
    h_wr_addr, h_wr_en, h_wr_data; c_wr_addr, c_wr_en, c_wr_data
        State write ports.
    out : Out(stream.Signature(signed(FX_BITS)))
        Outputs of the output programs.

    Latency and throughput: a run of ``count`` items takes exactly
    ``count * program_cycles(program) + LATENCY`` cycles from ``start`` to
    ``done`` while ``out`` is always ready; items are sequential.
    """

    LATENCY = 1

    def __init__(self, params, broken_lane: int | None = None):
        self.p = params
        self.broken_lane = broken_lane
        p = params
        self.cell_program = CELL_PROGRAMS[p.cell]
        super().__init__({
            "start": In(1), "program": In(Program),
            "count": In(range(p.max_hidden + 1)), "hidden": In(range(p.max_hidden + 1)),
            "acc_base_x": In(range(p.acc_depth)), "acc_base_h": In(range(p.acc_depth)),
            "shift_x": In(SHIFT_BITS), "shift_h": In(SHIFT_BITS),
            "vec_base": In(range(p.vec_depth)), "state_base": In(range(p.state_depth)),
            "ref_base": In(range(p.ref_depth)),
            "hw_mult": In(C.MULT_BITS), "hw_shift": In(SHIFT_BITS), "hw_identity": In(1),
            "busy": Out(1), "done": Out(1),
            "acc_addr": Out(range(p.acc_depth)), "acc_en": Out(1), "acc_data": In(p.lanes * p.acc_bits),
            "mult_addr": Out(range(p.acc_depth * p.lanes)), "mult_en": Out(1), "mult_data": In(C.MULT_BITS),
            "vec_addr": Out(range(p.vec_depth)), "vec_en": Out(1), "vec_data": In(signed(C.FX_BITS)),
            "h_rd_addr": Out(range(p.state_depth)), "h_rd_en": Out(1), "h_rd_data": In(signed(C.FX_BITS)),
            "c_rd_addr": Out(range(p.state_depth)), "c_rd_en": Out(1), "c_rd_data": In(signed(C.FX_BITS)),
            "ref_addr": Out(range(p.ref_depth)), "ref_en": Out(1), "ref_data": In(signed(p.abits)),
            "h_wr_addr": Out(range(p.state_depth)), "h_wr_en": Out(1), "h_wr_data": Out(signed(C.FX_BITS)),
            "c_wr_addr": Out(range(p.state_depth)), "c_wr_en": Out(1), "c_wr_data": Out(signed(C.FX_BITS)),
            "out": Out(stream.Signature(signed(C.FX_BITS))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        lanes_log2 = (p.lanes - 1).bit_length()
        regs = [Signal(signed(C.FX_BITS), name=f"r{i}") for i in range(NREGS)]
        k = Signal(range(p.max_hidden + 1))
        n = Signal(range(p.max_hidden + 1))

        # --- shared arithmetic ------------------------------------------------------
        def sat16(v):
            return Mux(v > C.FX_MAX, C.FX_MAX, Mux(v < C.FX_MIN, C.FX_MIN, v))

        def round_shift(v, shift):
            # (v + ((1 << shift) >> 1)) >> shift, valid for shift = 0 too
            half = (Const(1, unsigned(C.SHIFT_MAX + 1)) << shift) >> 1
            return (v + half) >> shift

        # requantization: product registered in cycle 1, rounded and saturated in cycle 2
        rq_lane = Signal(range(p.lanes))
        rq_prod = Signal(signed(p.acc_bits + C.MULT_BITS + 1))
        rq_shift = Signal(SHIFT_BITS)
        rq_from_ref = Signal()
        acc_lane = Signal(signed(p.acc_bits))
        m.d.comb += acc_lane.eq(self.acc_data.word_select(rq_lane, p.acc_bits).as_signed())
        rq_result = Signal(signed(C.FX_BITS))
        m.d.comb += rq_result.eq(sat16(round_shift(rq_prod, rq_shift)))
        if self.broken_lane is not None:  # test-only fault: floor instead of round half up in one lane
            with m.If(~rq_from_ref & (rq_lane == self.broken_lane)):
                m.d.comb += rq_result.eq(sat16(rq_prod >> rq_shift))

        # activation tables (one cycle latency)
        acts = {}
        for kind in ("sigmoid", "tanh"):
            acts[kind] = m.submodules[kind] = Activation(kind)

        hidden = self.hidden

        def row(block):
            return hidden * block + k

        def acc_word_lane(base, block):
            r = row(block)
            return base + (r >> lanes_log2), r[:lanes_log2] if lanes_log2 else Const(0, 1)

        m.d.comb += self.busy.eq(0)
        programs = {Program.CELL: self.cell_program, Program.HEAD_OUT: HEAD_OUT, Program.H_OUT: H_OUT}

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [k.eq(0), n.eq(self.count)]
                    with m.If(self.count == 0):
                        m.next = "DONE"
                    with m.Else():
                        with m.Switch(self.program):
                            for code in programs:
                                with m.Case(code):
                                    m.next = f"{code.name}_0_0"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"

            for code, program in programs.items():
                for i, ins in enumerate(program):
                    op = ins[0]
                    last = i == len(program) - 1
                    nxt = f"{code.name}_{i + 1}_0"

                    def advance(state_m=m, nxt=nxt, last=last, code=code):
                        if last:
                            with state_m.If(k + 1 == n):
                                state_m.next = "DONE"
                            with state_m.Else():
                                state_m.d.sync += k.eq(k + 1)
                                state_m.next = f"{code.name}_0_0"
                        else:
                            state_m.next = nxt

                    name = f"{code.name}_{i}"
                    if op in ("rq", "hw"):
                        dst = ins[1]
                        path = "x" if op == "hw" else ins[2]
                        block = 3 if op == "hw" else ins[3]
                        base = self.acc_base_h if path == "h" else self.acc_base_x
                        shift = self.shift_h if path == "h" else self.shift_x
                        word, lane = acc_word_lane(base, block)
                        with m.State(name + "_0"):
                            m.d.comb += self.busy.eq(1)
                            m.d.comb += [self.acc_addr.eq(word), self.acc_en.eq(1),
                                         self.mult_addr.eq((base << lanes_log2) + row(block)), self.mult_en.eq(1)]
                            m.d.sync += [rq_lane.eq(lane), rq_shift.eq(shift), rq_from_ref.eq(0)]
                            if op == "hw":
                                m.d.comb += [self.ref_addr.eq(self.ref_base + k), self.ref_en.eq(1)]
                                with m.If(self.hw_identity):
                                    m.d.sync += [rq_from_ref.eq(1), rq_shift.eq(self.hw_shift)]
                            m.next = name + "_1"
                        with m.State(name + "_1"):
                            m.d.comb += self.busy.eq(1)
                            with m.If(rq_from_ref):
                                m.d.sync += rq_prod.eq(self.ref_data * self.hw_mult)
                            with m.Else():
                                m.d.sync += rq_prod.eq(acc_lane * self.mult_data)
                            m.next = name + "_2"
                        with m.State(name + "_2"):
                            m.d.comb += self.busy.eq(1)
                            m.d.sync += regs[dst].eq(rq_result)
                            advance()
                    elif op in ("vec", "ld"):
                        dst = ins[1]
                        with m.State(name + "_0"):
                            m.d.comb += self.busy.eq(1)
                            if op == "vec":
                                m.d.comb += [self.vec_addr.eq(self.vec_base + row(ins[2])), self.vec_en.eq(1)]
                            elif ins[2] == "h":
                                m.d.comb += [self.h_rd_addr.eq(self.state_base + k), self.h_rd_en.eq(1)]
                            else:
                                m.d.comb += [self.c_rd_addr.eq(self.state_base + k), self.c_rd_en.eq(1)]
                            m.next = name + "_1"
                        with m.State(name + "_1"):
                            m.d.comb += self.busy.eq(1)
                            src = self.vec_data if op == "vec" else (self.h_rd_data if ins[2] == "h" else self.c_rd_data)
                            m.d.sync += regs[dst].eq(src)
                            advance()
                    elif op in ("sig", "tanh"):
                        act = acts["sigmoid" if op == "sig" else "tanh"]
                        with m.State(name + "_0"):
                            m.d.comb += self.busy.eq(1)
                            m.d.comb += act.x.eq(regs[ins[2]])
                            m.next = name + "_1"
                        with m.State(name + "_1"):
                            m.d.comb += self.busy.eq(1)
                            m.d.sync += regs[ins[1]].eq(act.y)
                            advance()
                    else:
                        with m.State(name + "_0"):
                            m.d.comb += self.busy.eq(1)
                            if op == "add":
                                total = regs[ins[2]] + regs[ins[3]]
                                if len(ins) == 5:
                                    total = total + regs[ins[4]]
                                m.d.sync += regs[ins[1]].eq(sat16(total))
                                advance()
                            elif op == "mul":
                                m.d.sync += regs[ins[1]].eq(
                                    sat16(round_shift(regs[ins[2]] * regs[ins[3]], Const(C.FX_FRAC))))
                                advance()
                            elif op == "omin":
                                m.d.sync += regs[ins[1]].eq(C.FX_ONE - regs[ins[2]])
                                advance()
                            elif op == "relu":
                                m.d.sync += regs[ins[1]].eq(Mux(regs[ins[2]] < 0, 0, regs[ins[2]]))
                                advance()
                            elif op == "st":
                                if ins[1] == "h":
                                    m.d.comb += [self.h_wr_addr.eq(self.state_base + k), self.h_wr_en.eq(1),
                                                 self.h_wr_data.eq(regs[ins[2]])]
                                else:
                                    m.d.comb += [self.c_wr_addr.eq(self.state_base + k), self.c_wr_en.eq(1),
                                                 self.c_wr_data.eq(regs[ins[2]])]
                                advance()
                            elif op == "out":
                                m.d.comb += [self.out.valid.eq(1), self.out.payload.eq(regs[ins[1]])]
                                with m.If(self.out.ready):
                                    advance()
                            else:
                                raise ValueError(f"unknown instruction {ins!r}")
        return m
