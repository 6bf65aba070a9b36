"""The accelerator core: memories, command decoder and step sequencer.

No board I/O: a command stream in, a response stream out. The board top and
the co-simulation drive exactly this. The memory map and register addresses
come from :mod:`deltarnn.spec.memory_map`; the per-phase cycle costs are modelled in
:mod:`deltarnn.hw.cycles` and documented in ``docs/gateware.md``.
"""

from __future__ import annotations

from amaranth import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from deltarnn.spec import contract as C
from deltarnn.spec.memory_map import ADDR_BITS, CELL_CODES, DATA_BITS, H_BLOCKS, REGION_SHIFT, X_BLOCKS, DeviceParams, LayerReg, Op, Reg, Region, layer_reg

from deltarnn.hw.encoder import DeltaEncoder
from deltarnn.hw.engine import CellEngine, Program
from deltarnn.hw.mxv import DeltaMxV


def command_layout() -> data.StructLayout:
    """One command: ``op`` (:class:`deltarnn.spec.memory_map.Op`), ``addr``, ``data``."""
    return data.StructLayout({"op": unsigned(3), "addr": unsigned(ADDR_BITS), "data": unsigned(DATA_BITS)})


def _bits_for(n: int) -> int:
    return max(1, (n - 1).bit_length())


#: Per-layer register fields and their widths.
LAYER_FIELDS = {
    LayerReg.X_SHIFT: range(C.SHIFT_MAX + 1), LayerReg.H_SHIFT: range(C.SHIFT_MAX + 1),
    LayerReg.XA_MULT: C.MULT_BITS, LayerReg.XA_SHIFT: range(C.SHIFT_MAX + 1), LayerReg.XA_BITS: 5,
    LayerReg.XA_THETA: 17, LayerReg.HA_MULT: C.MULT_BITS, LayerReg.HA_SHIFT: range(C.SHIFT_MAX + 1),
    LayerReg.HA_BITS: 5, LayerReg.HA_THETA: 17, LayerReg.HW_MULT: C.MULT_BITS,
    LayerReg.HW_SHIFT: range(C.SHIFT_MAX + 1), LayerReg.HW_IDENTITY: 1,
}


class Core(wiring.Component):
    """The deltarnn accelerator core for one cell type.

    Parameters
    ----------
    params : deltarnn.spec.memory_map.DeviceParams
        Lanes, maximum sizes and widths (elaboration parameters).
    weights, mult, vec : numpy.ndarray, optional
        Initial contents of the weight memory (``(weight_depth, lanes)``), the
        requantization multipliers (``(acc_depth * lanes,)``) and the
        fixed-point vectors (``(vec_depth,)``), for simulation and for
        bitstreams with a built-in model (the host's
        :meth:`deltarnn.device.image.Image.core_init` gives all four); the host
        can always overwrite them with WRITE commands.
    regs : dict of int to int, optional
        Initial register values, by register address.
    broken_lane : int, optional
        Test-only fault injection: the engine rounds requantization results of
        accumulator lane ``broken_lane`` one step down. Never set it in a
        real build.

    Members
    -------
    cmd : In(stream.Signature(command_layout()))
        Commands: WRITE, READ, DELTA, STEP, RESET (``deltarnn.spec.memory_map.Op``).
    rsp : Out(stream.Signature(32))
        Responses: one word per READ; per STEP, the outputs of the time step
        (fixed point, sign-extended), ``classes`` of them with a head, else
        ``hidden``.

    Latency and throughput: WRITE and DELTA take one command per cycle
    (DELTA two); a STEP takes the cycles given by :func:`deltarnn.hw.cycles.step_cycles`
    (rsp always ready); RESET takes ``clear_depth + 1`` cycles.
    """

    def __init__(self, params: DeviceParams, *, weights=None, mult=None, vec=None, regs=None,
                 broken_lane: int | None = None):
        self.p = params
        self.init_weights, self.init_mult, self.init_vec = weights, mult, vec
        self.init_regs = dict(regs or {})
        self.broken_lane = broken_lane
        super().__init__({
            "cmd": In(stream.Signature(command_layout())),
            "rsp": Out(stream.Signature(DATA_BITS)),
        })

    @property
    def clear_depth(self) -> int:
        p = self.p
        return max(p.acc_depth, p.ref_depth, p.state_depth)

    def elaborate(self, platform):
        m = Module()
        p = self.p
        lanes_log2 = (p.lanes - 1).bit_length()
        index_bits = _bits_for(p.max_cols + 1)
        gx, gh = X_BLOCKS[p.cell], H_BLOCKS[p.cell]

        # --- memories ---------------------------------------------------------------------
        self.memories = {}

        def mem(name, shape, depth, init=()):
            mm = memory.Memory(shape=shape, depth=depth, init=init)
            m.submodules[name] = mm
            self.memories[name] = mm
            return mm

        def packed_words(rows, width):
            return [sum((int(v) & ((1 << width) - 1)) << (i * width) for i, v in enumerate(row)) for row in rows]

        w_mem = mem("weights", unsigned(p.lanes * p.wmem_bits), p.weight_depth,
                    packed_words(self.init_weights, p.wmem_bits) if self.init_weights is not None else ())
        acc_mem = mem("acc", unsigned(p.lanes * p.acc_bits), p.acc_depth)
        mult_mem = mem("mult", unsigned(C.MULT_BITS), p.acc_depth * p.lanes,
                       [int(v) for v in self.init_mult] if self.init_mult is not None else ())
        vec_mem = mem("vec", signed(C.FX_BITS), p.vec_depth, [int(v) for v in self.init_vec] if self.init_vec is not None else ())
        h_mem = mem("h", signed(C.FX_BITS), p.state_depth)
        c_mem = mem("c", signed(C.FX_BITS), p.state_depth)
        ref_mem = mem("ref", signed(p.abits), p.ref_depth)
        mxv = DeltaMxV(lanes=p.lanes, wmem_bits=p.wmem_bits, delta_bits=p.delta_bits, acc_bits=p.acc_bits,
                       waddr_bits=_bits_for(p.weight_depth), aaddr_bits=_bits_for(p.acc_depth),
                       dbuf_depth=p.dbuf_depth, index_bits=index_bits,
                       words_bits=_bits_for(max(p.x_words, p.h_words, p.head_words) + 1))
        dbuf_mem = mem("dbuf", mxv.dbuf_layout, p.dbuf_depth)
        enc = DeltaEncoder(max_length=p.max_hidden, abits_max=p.abits, delta_bits=p.delta_bits,
                           src_addr_bits=_bits_for(p.state_depth), ref_addr_bits=_bits_for(p.ref_depth),
                           dbuf_depth=p.dbuf_depth, index_bits=index_bits)
        eng = CellEngine(p, broken_lane=self.broken_lane)
        self.engine = eng
        m.submodules.mxv, m.submodules.encoder, m.submodules.engine = mxv, enc, eng

        w_wr = w_mem.write_port(granularity=p.wmem_bits)
        w_rd = w_mem.read_port()
        acc_wr = acc_mem.write_port()
        acc_rd = acc_mem.read_port(transparent_for=(acc_wr,))
        mult_wr, mult_rd = mult_mem.write_port(), mult_mem.read_port()
        vec_wr, vec_rd = vec_mem.write_port(), vec_mem.read_port()
        h_wr, h_rd = h_mem.write_port(), h_mem.read_port()
        c_wr, c_rd = c_mem.write_port(), c_mem.read_port()
        ref_wr, ref_rd = ref_mem.write_port(), ref_mem.read_port()
        dbuf_wr, dbuf_rd = dbuf_mem.write_port(), dbuf_mem.read_port()

        # --- registers --------------------------------------------------------------------
        regs0 = self.init_regs

        def reg(addr, shape):
            return Signal(shape, init=int(regs0.get(addr, 0)), name=f"reg_{addr:03x}")

        n_layers = reg(Reg.LAYERS, range(p.max_layers + 1))
        hidden = reg(Reg.HIDDEN, range(p.max_hidden + 1))
        inputs = reg(Reg.INPUT, range(p.max_input + 1))
        classes = reg(Reg.CLASSES, range(p.max_classes + 1))
        head = {Reg.HEAD_SHIFT: reg(Reg.HEAD_SHIFT, range(C.SHIFT_MAX + 1)),
                Reg.HEAD_A_MULT: reg(Reg.HEAD_A_MULT, C.MULT_BITS),
                Reg.HEAD_A_SHIFT: reg(Reg.HEAD_A_SHIFT, range(C.SHIFT_MAX + 1)),
                Reg.HEAD_A_BITS: reg(Reg.HEAD_A_BITS, 5), Reg.HEAD_THETA: reg(Reg.HEAD_THETA, 17)}
        writable = {Reg.LAYERS: n_layers, Reg.HIDDEN: hidden, Reg.INPUT: inputs, Reg.CLASSES: classes, **head}
        per_layer = {f: Array(reg(layer_reg(i, f), shape) for i in range(p.max_layers))
                     for f, shape in LAYER_FIELDS.items()}
        for f, arr in per_layer.items():
            for i in range(p.max_layers):
                writable[layer_reg(i, f)] = arr[i]

        cycles = Signal(32)
        step_cycles = Signal(32)
        step_counter = Signal(32)
        steps = Signal(32)
        deltas = [Signal(32, name=f"deltas_{i}") for i in range(2 * p.max_layers + 1)]
        readable = dict(writable)
        readable.update({Reg.ID_CELL: Const(CELL_CODES[p.cell]), Reg.ID_LANES: Const(p.lanes),
                         Reg.ID_MAX_INPUT: Const(p.max_input), Reg.ID_MAX_HIDDEN: Const(p.max_hidden),
                         Reg.ID_MAX_LAYERS: Const(p.max_layers), Reg.ID_MAX_CLASSES: Const(p.max_classes),
                         Reg.ID_WMEM_BITS: Const(p.wmem_bits), Reg.ID_ABITS: Const(p.abits),
                         Reg.ID_ACC_BITS: Const(p.acc_bits), Reg.CYCLES: cycles, Reg.STEP_CYCLES: step_cycles,
                         Reg.STEPS: steps})
        for i, s in enumerate(deltas):
            readable[Reg.DELTAS + i] = s

        # --- sequencer state ------------------------------------------------------------------
        layer = Signal(range(p.max_layers + 1))
        host_count = Signal(range(p.dbuf_depth + 1))
        dcount = Signal(range(p.dbuf_depth + 1))
        path = Signal(2)          # 0: x, 1: h, 2: head
        clr = Signal(range(self.clear_depth + 1))
        clearing = Signal()
        in_step = Signal()
        rmw_addr = Signal(range(p.ref_depth))
        rmw_delta = Signal(signed(p.delta_bits))
        rmw = Signal()

        m.d.sync += cycles.eq(cycles + 1)
        with m.If(in_step):
            m.d.sync += step_counter.eq(step_counter + 1)

        def lf(field):
            return per_layer[field][layer]

        prev = Signal(range(p.max_layers))
        m.d.comb += prev.eq(layer - 1)
        is_head = path == 2
        is_h = path == 1
        sru_identity = lf(LayerReg.HW_IDENTITY) if p.cell == "sru" else Const(0)
        x_rows_blocks = Const(gx) - sru_identity if p.cell == "sru" else Const(gx)
        words_x = (hidden * x_rows_blocks + (p.lanes - 1)) >> lanes_log2
        words_h = (hidden * gh + (p.lanes - 1)) >> lanes_log2
        words_head = (classes + (p.lanes - 1)) >> lanes_log2
        layer_acc, layer_w, layer_ref = p.layer_acc_words, p.layer_weight_words, p.layer_ref_words

        # encoder inputs (x path of layer > 0, h path, head)
        m.d.comb += [
            enc.length.eq(hidden),
            enc.src_base.eq(Mux(is_h, layer * p.max_hidden, prev * p.max_hidden)),
            enc.ref_base.eq(Mux(is_head, p.ref_base(p.max_layers, "x"),
                                layer * layer_ref + Mux(is_h, p.max_cols, 0))),
            enc.mult.eq(Mux(is_head, head[Reg.HEAD_A_MULT], Mux(is_h, lf(LayerReg.HA_MULT), lf(LayerReg.XA_MULT)))),
            enc.shift.eq(Mux(is_head, head[Reg.HEAD_A_SHIFT],
                             Mux(is_h, lf(LayerReg.HA_SHIFT), lf(LayerReg.XA_SHIFT)))),
            enc.bits.eq(Mux(is_head, head[Reg.HEAD_A_BITS], Mux(is_h, lf(LayerReg.HA_BITS), lf(LayerReg.XA_BITS)))),
            enc.theta.eq(Mux(is_head, head[Reg.HEAD_THETA], Mux(is_h, lf(LayerReg.HA_THETA), lf(LayerReg.XA_THETA)))),
        ]
        # MxV inputs
        m.d.comb += [
            mxv.count.eq(dcount),
            mxv.words.eq(Mux(is_head, words_head, Mux(is_h, words_h, words_x))),
            mxv.w_base.eq(Mux(is_head, p.weight_base(p.max_layers, "x"),
                              layer * layer_w + Mux(is_h, p.max_cols * p.x_words, 0))),
            mxv.acc_base.eq(Mux(is_head, p.acc_base(p.max_layers, "x"), layer * layer_acc + Mux(is_h, p.x_words, 0))),
        ]
        # engine inputs
        out_head = classes != 0
        last = Signal(range(p.max_layers))
        m.d.comb += last.eq(n_layers - 1)
        m.d.comb += [
            eng.hidden.eq(hidden),
            eng.acc_base_x.eq(Mux(is_head, p.acc_base(p.max_layers, "x"), layer * layer_acc)),
            eng.acc_base_h.eq(layer * layer_acc + p.x_words),
            eng.shift_x.eq(Mux(is_head, head[Reg.HEAD_SHIFT], lf(LayerReg.X_SHIFT))),
            eng.shift_h.eq(lf(LayerReg.H_SHIFT)),
            eng.vec_base.eq(Mux(is_head, p.max_layers * p.layer_vec_words, layer * p.layer_vec_words)),
            eng.state_base.eq(Mux(is_head, last * p.max_hidden, layer * p.max_hidden)),
            eng.ref_base.eq(layer * layer_ref),
            eng.hw_mult.eq(lf(LayerReg.HW_MULT)), eng.hw_shift.eq(lf(LayerReg.HW_SHIFT)),
            eng.hw_identity.eq(sru_identity),
        ]

        # --- memory port wiring -------------------------------------------------------------------
        # The weight memory's two ports share one address and never read while writing (the host
        # writes in IDLE, the MxV reads during a STEP), so Yosys can merge them into the single
        # port of a RAM without a second port (the iCE40 UP5K's SPRAM, whose read data holds
        # during a write): the read enable is gated by the write enables only to show Yosys that.
        w_addr = Signal.like(w_rd.addr)
        m.d.comb += [
            w_addr.eq(mxv.w_addr), w_rd.addr.eq(w_addr), w_wr.addr.eq(w_addr),
            w_rd.en.eq(mxv.w_en & ~w_wr.en.any()), mxv.w_data.eq(w_rd.data),
            dbuf_rd.addr.eq(mxv.dbuf_addr), dbuf_rd.en.eq(mxv.dbuf_en), mxv.dbuf_data.eq(dbuf_rd.data),
            acc_rd.addr.eq(Mux(mxv.acc_rd_en, mxv.acc_rd_addr, eng.acc_addr)),
            acc_rd.en.eq(mxv.acc_rd_en | eng.acc_en),
            mxv.acc_rd_data.eq(acc_rd.data), eng.acc_data.eq(acc_rd.data),
            acc_wr.addr.eq(Mux(clearing, clr, mxv.acc_wr_addr)),
            acc_wr.data.eq(Mux(clearing, 0, mxv.acc_wr_data)),
            acc_wr.en.eq(mxv.acc_wr_en | (clearing & (clr < p.acc_depth))),
            mult_rd.addr.eq(eng.mult_addr), mult_rd.en.eq(eng.mult_en), eng.mult_data.eq(mult_rd.data),
            vec_rd.addr.eq(eng.vec_addr), vec_rd.en.eq(eng.vec_en), eng.vec_data.eq(vec_rd.data),
            h_rd.addr.eq(Mux(enc.src_en, enc.src_addr, eng.h_rd_addr)), h_rd.en.eq(enc.src_en | eng.h_rd_en),
            enc.src_data.eq(h_rd.data), eng.h_rd_data.eq(h_rd.data),
            h_wr.addr.eq(Mux(clearing, clr, eng.h_wr_addr)), h_wr.data.eq(Mux(clearing, 0, eng.h_wr_data)),
            h_wr.en.eq(eng.h_wr_en | (clearing & (clr < p.state_depth))),
            c_rd.addr.eq(eng.c_rd_addr), c_rd.en.eq(eng.c_rd_en), eng.c_rd_data.eq(c_rd.data),
            c_wr.addr.eq(Mux(clearing, clr, eng.c_wr_addr)), c_wr.data.eq(Mux(clearing, 0, eng.c_wr_data)),
            c_wr.en.eq(eng.c_wr_en | (clearing & (clr < p.state_depth))),
            enc.ref_rd_data.eq(ref_rd.data), eng.ref_data.eq(ref_rd.data),
            dbuf_wr.addr.eq(Mux(enc.dbuf_wr_en, enc.dbuf_wr_addr, host_count)),
            dbuf_wr.data.eq(enc.dbuf_wr_data), dbuf_wr.en.eq(enc.dbuf_wr_en),
        ]
        cmd = self.cmd.payload
        delta_in = Signal(signed(p.delta_bits))
        m.d.comb += delta_in.eq(cmd.data[:p.delta_bits].as_signed())
        with m.If(enc.ref_rd_en):
            m.d.comb += [ref_rd.addr.eq(enc.ref_rd_addr), ref_rd.en.eq(1)]
        with m.Elif(eng.ref_en):
            m.d.comb += [ref_rd.addr.eq(eng.ref_addr), ref_rd.en.eq(1)]
        with m.Else():
            m.d.comb += [ref_rd.addr.eq(p.ref_base(0, "x") + cmd.addr[:index_bits]), ref_rd.en.eq(1)]
        with m.If(clearing):
            m.d.comb += [ref_wr.addr.eq(clr), ref_wr.data.eq(0), ref_wr.en.eq(clr < p.ref_depth)]
        with m.Elif(rmw):
            m.d.comb += [ref_wr.addr.eq(rmw_addr), ref_wr.data.eq(ref_rd.data + rmw_delta), ref_wr.en.eq(1)]
        with m.Else():
            m.d.comb += [ref_wr.addr.eq(enc.ref_wr_addr), ref_wr.data.eq(enc.ref_wr_data),
                         ref_wr.en.eq(enc.ref_wr_en)]

        # --- response mux -------------------------------------------------------------------------------
        read_value = Signal(DATA_BITS)
        read_addr = Signal(ADDR_BITS)
        with m.Switch(read_addr):
            for a, s in readable.items():
                with m.Case(int(a)):
                    m.d.comb += read_value.eq(s)
        m.d.comb += [eng.out.ready.eq(self.rsp.ready)]

        region = cmd.addr[REGION_SHIFT:]
        offset = cmd.addr[:REGION_SHIFT]

        # --- the sequencer ------------------------------------------------------------------------------
        with m.FSM() as fsm:
            self.fsm = fsm
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    with m.Switch(cmd.op):
                        with m.Case(Op.WRITE):
                            with m.Switch(region):
                                with m.Case(Region.REG):
                                    with m.Switch(offset):
                                        for a, s in writable.items():
                                            with m.Case(int(a)):
                                                m.d.sync += s.eq(cmd.data)
                                with m.Case(Region.WEIGHT):
                                    lane = offset[:lanes_log2] if lanes_log2 else Const(0, 1)
                                    m.d.comb += [w_addr.eq(offset >> lanes_log2),
                                                 w_wr.data.eq(cmd.data[:p.wmem_bits].replicate(p.lanes)),
                                                 w_wr.en.eq(Const(1, p.lanes) << lane)]
                                with m.Case(Region.MULT):
                                    m.d.comb += [mult_wr.addr.eq(offset), mult_wr.data.eq(cmd.data),
                                                 mult_wr.en.eq(1)]
                                with m.Case(Region.VEC):
                                    m.d.comb += [vec_wr.addr.eq(offset), vec_wr.data.eq(cmd.data), vec_wr.en.eq(1)]
                        with m.Case(Op.READ):
                            m.d.sync += read_addr.eq(cmd.addr)
                            m.next = "READ"
                        with m.Case(Op.DELTA):
                            with m.If(host_count < p.dbuf_depth):
                                m.d.comb += [dbuf_wr.en.eq(1), dbuf_wr.data.index.eq(cmd.addr),
                                             dbuf_wr.data.delta.eq(delta_in)]
                                m.d.sync += [host_count.eq(host_count + 1), rmw.eq(1),
                                             rmw_addr.eq(p.ref_base(0, "x") + cmd.addr[:index_bits]),
                                             rmw_delta.eq(delta_in)]
                                m.next = "DELTA_RMW"
                        with m.Case(Op.STEP):
                            m.d.sync += [layer.eq(0), path.eq(0), dcount.eq(host_count), in_step.eq(1),
                                         step_counter.eq(1)]
                            m.next = "MXV_GO"
                        with m.Case(Op.RESET):
                            m.d.sync += [clr.eq(0), clearing.eq(1)]
                            m.next = "CLEAR"
            with m.State("DELTA_RMW"):
                m.d.sync += rmw.eq(0)
                m.next = "IDLE"
            with m.State("READ"):
                m.d.comb += [self.rsp.valid.eq(1), self.rsp.payload.eq(read_value)]
                with m.If(self.rsp.ready):
                    m.next = "IDLE"
            with m.State("CLEAR"):
                m.d.sync += clr.eq(clr + 1)
                with m.If(clr == self.clear_depth - 1):
                    m.d.sync += [clearing.eq(0), host_count.eq(0), cycles.eq(0), steps.eq(0)]
                    m.d.sync += [s.eq(0) for s in deltas]
                    m.next = "IDLE"

            with m.State("ENC_GO"):
                m.d.comb += enc.start.eq(1)
                m.next = "ENC_WAIT"
            with m.State("ENC_WAIT"):
                with m.If(enc.done):
                    m.d.sync += dcount.eq(enc.count)
                    m.next = "MXV_GO"
            with m.State("MXV_GO"):
                m.d.comb += mxv.start.eq(1)
                m.next = "MXV_WAIT"
            with m.State("MXV_WAIT"):
                with m.If(mxv.done):
                    counter = Array(deltas)[Mux(is_head, 2 * p.max_layers, layer * 2 + is_h)]
                    m.d.sync += counter.eq(counter + dcount)
                    with m.If(is_head):
                        m.next = "OUT_GO"
                    with m.Elif(~is_h & (gh != 0)):
                        m.d.sync += path.eq(1)
                        m.next = "ENC_GO"
                    with m.Else():
                        m.next = "CELL_GO"
            with m.State("CELL_GO"):
                m.d.comb += [eng.start.eq(1), eng.program.eq(Program.CELL), eng.count.eq(hidden)]
                m.next = "CELL_WAIT"
            with m.State("CELL_WAIT"):
                with m.If(eng.done):
                    m.d.sync += [layer.eq(layer + 1), path.eq(0)]
                    with m.If(layer + 1 == n_layers):
                        with m.If(out_head):
                            m.d.sync += path.eq(2)
                            m.next = "ENC_GO"
                        with m.Else():
                            m.d.sync += path.eq(2)
                            m.next = "OUT_GO"
                    with m.Else():
                        m.next = "ENC_GO"
            with m.State("OUT_GO"):
                m.d.comb += [eng.start.eq(1), eng.program.eq(Mux(out_head, Program.HEAD_OUT, Program.H_OUT)),
                             eng.count.eq(Mux(out_head, classes, hidden))]
                m.next = "OUT_WAIT"
            with m.State("OUT_WAIT"):
                m.d.comb += [self.rsp.valid.eq(eng.out.valid),
                             self.rsp.payload.eq(eng.out.payload.as_signed())]
                with m.If(eng.done):
                    m.d.sync += [host_count.eq(0), steps.eq(steps + 1), in_step.eq(0),
                                 step_cycles.eq(step_counter + 1)]
                    m.next = "IDLE"
        return m
