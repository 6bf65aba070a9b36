"""The accelerator core: memories, command decoder and step sequencer.

No board I/O: a command stream in, a response stream out. The board top and
the co-simulation drive exactly this. The memory map and register addresses
come from :mod:`deltarnn.spec.memory_map`; the per-phase cycle costs are modelled in
:mod:`deltarnn.hw.cycles` and documented in ``docs/gateware.md``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from deltarnn.spec import contract as C
from deltarnn.spec.memory_map import ADDR_BITS, DATA_BITS, H_BLOCKS, X_BLOCKS, DeviceParams, Error, LayerReg, Reg

from deltarnn.hw.command import Op, Region, address_layout, command_layout
from deltarnn.hw.encoder import CONCURRENT_LANES, DeltaEncoder
from deltarnn.hw.engine import CELL_PROGRAMS, WIDE_LANES, CellEngine, Program, fuses_encoder
from deltarnn.hw.mxv import DeltaMxV
from deltarnn.hw.pipe import StreamRegister
from deltarnn.hw.registers import RegisterFile

__all__ = ["COLLISION_FREE", "Core", "Path", "command_layout", "feeds_encoder", "overlaps_encodes",
           "weight_bank_depth"]

#: The core's memories that never read a word in a cycle in which they write it with the read's data
#: used: the weights (read only while no write is enabled), the accumulators (the MxV reads a word
#: at least :data:`~deltarnn.hw.mxv.ACC_SPACING` cycles after its last write, or forwards the sum), the
#: multipliers and vectors (written only while no step runs), the states (the cell program reads a
#: neuron's state before it writes it, and no other unit reads a state while the engine writes it)
#: and the delta buffer (the encoder writes one half while the MxV reads the other). What such a read
#: returns on a collision may be left undefined: the synthesis scripts say so
#: (:data:`deltarnn.fpga.harness.COLLISIONS_UNDEFINED`), and Yosys then adds no logic to emulate
#: the old data behind the block RAMs. (The references are not among them: a DELTA's read-modify-write
#: reads in the cycle of the previous write.) ``tests/hw/test_core.py`` checks the claim.
COLLISION_FREE = ("weights", "acc", "mult", "vec", "h", "c", "dbuf")


class Path(enum.Enum, shape=2):
    """What a phase of a step works on: a layer's x path or h path, or the head."""

    X = 0
    H = 1
    HEAD = 2


def _addr_bits(depth: int) -> int:
    """Width of an address of ``depth`` words (at least 1)."""
    return max(1, (depth - 1).bit_length())


def _times(value, k: int):
    """``value * k`` for a constant ``k`` as a sum of shifted copies of ``value``: adders, not a
    multiplier block (Yosys maps a product by a constant to one, a long way from its registers)."""
    terms = [value << i for i in range(k.bit_length()) if k >> i & 1]
    return sum(terms[1:], terms[0]) if terms else Const(0, 1)


def _packed_words(rows, width: int) -> list[int]:
    """One word per row, element ``i`` of the row in bits ``[i*width, (i+1)*width)``."""
    return [sum((int(v) & ((1 << width) - 1)) << (i * width) for i, v in enumerate(row)) for row in rows]


class _Units(NamedTuple):
    mxv: DeltaMxV
    enc: DeltaEncoder
    eng: CellEngine


class _Ports(NamedTuple):
    wr: memory.WritePort
    rd: memory.ReadPort


def weight_bank_depth(wmem_bits: int) -> int:
    """Words of a weight bank in a wide core (:data:`~deltarnn.hw.engine.WIDE_LANES`): the depth of an ECP5
    block RAM (DP16KD) in its narrowest mode that holds a ``wmem_bits`` slot (1, 2, 4, 9 or 18 bits wide)."""
    depths = {1: 16384, 2: 8192, 4: 4096, 9: 2048, 18: 1024}
    return depths[next(w for w in depths if w >= wmem_bits)]


class _PortSignals(NamedTuple):
    """A memory port's signals of the core's own (a banked memory's, a registered write's)."""

    addr: Signal
    en: Signal
    data: Signal


class _State:
    """The sequencer's own registers."""

    def __init__(self, p: DeviceParams, clear_depth: int, wipe_depth: int, dbuf_layout):
        self.layer = Signal(range(p.max_layers + 1))
        self.path = Signal(Path)
        self.host_count = Signal(range(p.dbuf_depth + 1))    # deltas the host has written
        self.dcount = Signal(range(p.dbuf_depth + 1))        # deltas of the path being run
        self.clr = Signal(range(max(clear_depth, wipe_depth) + 1))
        self.clearing = Signal()    # RESET and CLEAR: accumulators, references, state
        # clearing & (clr < depth) per cleared memory's depth, registers (no comparison before the write enables)
        self.clears = {d: Signal(name=f"clears_below_{d}") for d in sorted({p.acc_depth, p.state_words, p.ref_depth})}
        self.wiping = Signal()      # CLEAR: also the weights, multipliers and vectors
        self.errors = Signal(len(Error))   # refused in this cycle
        self.in_step = Signal()
        self.step_counter = Signal(DATA_BITS)
        self.rmw = Signal()                                  # DELTA: add the delta to its reference
        self.rmw_addr = Signal(range(p.ref_depth))
        self.rmw_delta = Signal(signed(p.delta_bits))
        # the weight memory's writes (the host's and CLEAR's), registered: the command's decoding stays off
        # the paths into the memory's blocks (in a narrow core the iCE40's SPRAM: the board's critical path)
        self.w_wr_addr = Signal(p.waddr_bits)
        self.w_wr_data = Signal(p.lanes * p.wmem_bits)
        self.w_wr_en = Signal(p.lanes)
        self.w_wr_any = Signal()      # w_wr_en.any(), without the reduction after the register
        # a DELTA's entry in the delta buffer, registered: the command's checks stay off the paths into the
        # buffer's block RAM (the ULX3S board's critical path); written in the DELTA's next cycle
        self.dbuf_wr_en = Signal()
        self.dbuf_wr_addr = Signal(range(p.dbuf_depth + 1))
        self.dbuf_wr_data = Signal(dbuf_layout)
        self.is_h = self.path == Path.H
        self.is_head = self.path == Path.HEAD
        # the encoder runs a layer's h path beside the MxV's x path (XH_WAIT): which path it encodes
        self.enc_h = Signal()
        # a cell update feeds the encoder its new h, for the next layer's x path or the head (where the
        # program's own reference reads leave it room: fuses_encoder); fused: this update does
        self.enc_next = Signal()
        self.fused = Signal()
        # which of the two units running side by side (the MxV or the engine, and the encoder) has finished
        self.unit_fin = Signal()
        self.enc_fin = Signal()


def overlaps_encodes(cell: str, lanes: int) -> bool:
    """Whether a core encodes a layer's h path beside its x path's MxV: above
    :data:`~deltarnn.hw.encoder.CONCURRENT_LANES` lanes, a cell with an h path."""
    return lanes > CONCURRENT_LANES and H_BLOCKS[cell] != 0


def feeds_encoder(cell: str, lanes: int) -> bool:
    """Whether a core's cell update feeds the encoder the input of the next layer's x path or of the
    head: above :data:`~deltarnn.hw.encoder.CONCURRENT_LANES` lanes, where
    :func:`~deltarnn.hw.engine.fuses_encoder` allows it."""
    return lanes > CONCURRENT_LANES and fuses_encoder(CELL_PROGRAMS[cell], lanes)


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
    bank_words : int, optional
        Words of a weight bank in a wide core (:attr:`weight_banks`); default
        :func:`weight_bank_depth` of the slots, a block RAM's depth. Tests set fewer (a power
        of two), to run many banks on a small model.

    Members
    -------
    cmd : In(stream.Signature(command_layout()))
        Commands: WRITE, READ, DELTA, STEP, RESET, CLEAR (:class:`deltarnn.hw.command.Op`). A
        command the core refuses (an unknown opcode, an address of nothing, a
        value out of range, a DELTA beyond ``INPUT`` or the buffer, a STEP
        without a model) is consumed, has no effect and sets its bit in the
        sticky ``ERRORS`` register; a READ always has its response. No
        command or register value can stop the core taking commands.
    rsp : Out(stream.Signature(DATA_BITS))
        Responses: one word per READ; per STEP, the outputs of the time step
        (fixed point, sign-extended), ``classes`` of them with a head, else
        ``hidden``. Above :data:`~deltarnn.hw.engine.WIDE_LANES` lanes through a FIFO with room
        for a step's every output (:attr:`response_depth`): a STEP's output program starts when it is
        empty, and then never waits for ``rsp.ready``.

    Latency and throughput: WRITE and DELTA take one command per cycle
    (DELTA two, three above :data:`~deltarnn.hw.engine.WIDE_LANES` lanes; a READ's response
    is valid two cycles after it is taken, the register's value registered first, and three more
    above :data:`~deltarnn.hw.engine.WIDE_LANES` lanes, through the FIFO and its output register); a STEP takes the cycles given by :func:`deltarnn.hw.cycles.step_cycles`
    (rsp always ready); RESET takes ``clear_depth + 1`` cycles, CLEAR ``wipe_depth + 1``.
    """

    def __init__(self, params: DeviceParams, *, weights=None, mult=None, vec=None, regs=None,
                 broken_lane: int | None = None, bank_words: int | None = None):
        self.p = params
        self.bank_words = bank_words or weight_bank_depth(params.wmem_bits)
        if self.bank_words & (self.bank_words - 1):
            raise ValueError(f"bank_words must be a power of two, not {self.bank_words}")
        self.init_weights, self.init_mult, self.init_vec = weights, mult, vec
        self.init_regs = dict(regs or {})
        self.broken_lane = broken_lane
        super().__init__({
            "cmd": In(stream.Signature(command_layout())),
            "rsp": Out(stream.Signature(DATA_BITS)),
        })

    @property
    def clear_depth(self) -> int:
        """Words RESET clears: the deepest of the accumulator, reference and state memories."""
        p = self.p
        return max(p.acc_depth, p.ref_depth, p.state_words)

    @property
    def wipe_depth(self) -> int:
        """Words CLEAR zeroes: also the weight, multiplier and vector memories."""
        p = self.p
        return max(self.clear_depth, p.weight_depth, p.mult_words, p.vec_words)

    @property
    def overlaps_encodes(self) -> bool:
        """:func:`overlaps_encodes` of this core."""
        return overlaps_encodes(self.p.cell, self.p.lanes)

    @property
    def feeds_encoder(self) -> bool:
        """:func:`feeds_encoder` of this core."""
        return feeds_encoder(self.p.cell, self.p.lanes)

    @property
    def dbuf_depth(self) -> int:
        """Entries of the delta buffer. Where the encodes overlap (:attr:`overlaps_encodes`) it has two
        halves of ``2**ceil(log2(max_cols))``: the x path's deltas in the low one, the h path's in the high
        one (the encoder writes a layer's h deltas while the MxV reads its x deltas); else one of
        ``max_cols``."""
        p = self.p
        return 2 << _addr_bits(p.dbuf_depth) if self.overlaps_encodes else p.dbuf_depth

    @property
    def wide(self) -> bool:
        """Above :data:`~deltarnn.hw.engine.WIDE_LANES` lanes: every memory read registered before any logic
        (the weight banks, the DELTA's reference, the responses' FIFO, the engine's and MxV's registers)."""
        return self.p.lanes > WIDE_LANES

    @property
    def response_depth(self) -> int:
        """Entries of a wide core's response FIFO: an output program's outputs (a head's classes, or h)."""
        return max(self.p.max_classes, self.p.max_hidden, 2)

    @property
    def weight_banks(self) -> int:
        """Banks of the weight memory: above :data:`~deltarnn.hw.engine.WIDE_LANES` lanes one per
        :func:`weight_bank_depth` words, each read into a register of its own (:meth:`_weight_banks`), so that
        no multiplexer of blocks lies between a block RAM and its register; else 0 (one memory, its read
        data registered in the MxV)."""
        p = self.p
        return -(-p.weight_depth // self.bank_words) if self.wide else 0

    def _registered_writes(self, m, ports: dict[str, _Ports]) -> dict[str, _Ports]:
        """The ports the sequencer drives: above :data:`~deltarnn.hw.engine.WIDE_LANES` lanes the multiplier
        and vector memories' writes (the host's, CLEAR's) through registers, a cycle later, so that no
        decoding of a command or of CLEAR's counter lies before the write pins of their blocks (the ULX3S
        board's critical path was CLEAR's counter through its comparison into the multipliers' write
        address, 11.63 ns). Neither memory is read before a STEP's cell update, long after the last write."""
        if not self.wide:
            return ports
        ports = dict(ports)
        for name in ("mult", "vec"):
            wr = ports[name].wr
            staged = _PortSignals(Signal.like(wr.addr, name=f"{name}_wr_addr"), Signal.like(wr.en, name=f"{name}_wr_en"),
                                 Signal(wr.data.shape(), name=f"{name}_wr_data"))
            m.d.sync += [wr.addr.eq(staged.addr), wr.en.eq(staged.en), wr.data.eq(staged.data)]
            ports[name] = _Ports(staged, ports[name].rd)
        return ports

    @property
    def index_bits(self) -> int:
        """Width of a delta's element index (in the delta buffer and in a DELTA's ``addr``)."""
        return _addr_bits(self.p.max_cols + 1)

    def elaborate(self, platform):
        m = Module()
        units = self._units()
        ports = self.memory_ports = self._memories(m, units.mxv.dbuf_layout, units.eng.rq_units)   # (for tests)
        ports = self._registered_writes(m, ports)
        m.submodules.mxv, m.submodules.encoder, m.submodules.engine = units
        regs = self.registers = RegisterFile(self.p, self.init_regs)   # (its signals: for tests)
        st = _State(self.p, self.clear_depth, self.wipe_depth, units.mxv.dbuf_layout)
        self._path_inputs(m, regs, st, units)
        self._port_wiring(m, ports, st, units)
        self._sequencer(m, regs, st, ports, units)
        return m

    def _units(self) -> _Units:
        p = self.p
        mxv = DeltaMxV(lanes=p.lanes, wmem_bits=p.wmem_bits, delta_bits=p.delta_bits, acc_bits=p.acc_bits,
                       waddr_bits=p.waddr_bits, aaddr_bits=_addr_bits(p.acc_depth),
                       dbuf_depth=p.dbuf_depth, index_bits=self.index_bits,
                       words_bits=_addr_bits(max(p.x_words, p.h_words, p.head_words) + 1), max_slices=p.max_slices,
                       registered_weights=bool(self.weight_banks))
        enc = DeltaEncoder(max_length=p.max_hidden, abits_max=p.abits, delta_bits=p.delta_bits,
                           src_addr_bits=_addr_bits(p.state_depth), ref_addr_bits=_addr_bits(p.ref_depth),
                           dbuf_depth=p.dbuf_depth, index_bits=self.index_bits, streams=self.feeds_encoder,
                           src_lanes=p.engine_width, registered=self.wide)
        return _Units(mxv, enc, CellEngine(p, broken_lane=self.broken_lane))

    def _memories(self, m, dbuf_layout, mult_reads: int) -> dict[str, _Ports]:
        """The memories, submodules of ``m`` itself (the co-simulation and synthesis find them by name); the
        multiplier memory with ``mult_reads`` read ports (one per requantizer copy of the engine: the extra
        ones ``ports["mult1"]``, ... with the write port of the first)."""
        p = self.p

        e = p.engine_width

        def init(values, depth):
            """Element ``i`` of ``values`` in lane ``i mod E`` of word ``i // E``."""
            if values is None:
                return ()
            lanes = np.zeros(depth * e, dtype=np.int64)
            lanes[:len(values)] = values
            return [[int(v) for v in word] for word in lanes.reshape(depth, e)]

        fx = data.ArrayLayout(signed(C.FX_BITS), e)
        memories = {
            "weights": (unsigned(p.lanes * p.wmem_bits), p.weight_depth,
                        () if self.init_weights is None else _packed_words(self.init_weights, p.wmem_bits)),
            "acc": (unsigned(p.lanes * p.acc_bits), p.acc_depth, ()),
            "mult": (data.ArrayLayout(C.MULT_BITS, e), p.mult_words, init(self.init_mult, p.mult_words)),
            "vec": (fx, p.vec_words, init(self.init_vec, p.vec_words)),
            "h": (fx, p.state_words, ()),
            "c": (fx, p.state_words, ()),
            "ref": (signed(p.abits), p.ref_depth, ()),
            "dbuf": (dbuf_layout, self.dbuf_depth, ()),
        }
        # per-element write enables: the weights' lanes, and the host's multipliers and vectors
        granularity = {"weights": p.wmem_bits, "mult": 1, "vec": 1}
        ports = {}
        for name, (shape, depth, words) in memories.items():
            if name == "weights" and self.weight_banks:
                ports[name] = self._weight_banks(m, shape, depth, words)
                continue
            mem = m.submodules[name] = memory.Memory(shape=shape, depth=depth, init=words)
            ports[name] = _Ports(mem.write_port(granularity=granularity.get(name)), mem.read_port())
            if name == "mult":
                ports.update({f"mult{u}": _Ports(ports[name].wr, mem.read_port()) for u in range(1, mult_reads)})
        return ports

    def _weight_banks(self, m, shape, depth: int, words) -> _Ports:
        """The weight memory as :attr:`weight_banks` memories of :func:`weight_bank_depth` words, each read
        into a register of its own (its block RAMs' output registers), then the addressed bank's register
        selected: the read data comes two cycles after the address. The ports are those of one memory."""
        p = self.p
        bank_bits = (self.bank_words - 1).bit_length()
        rd = _PortSignals(Signal(range(depth), name="w_rd_addr"), Signal(name="w_rd_en"), Signal(shape, name="w_rd_data"))
        wr = _PortSignals(Signal(range(depth), name="w_wr_addr"), Signal(p.lanes, name="w_wr_en"),
                         Signal(shape, name="w_wr_data"))
        read_bank, bank = Signal(range(max(2, self.weight_banks))), Signal(range(max(2, self.weight_banks)))
        with m.If(rd.en):
            m.d.sync += read_bank.eq(rd.addr >> bank_bits)
        m.d.sync += bank.eq(read_bank)
        outputs = []
        for i in range(self.weight_banks):
            size = min(1 << bank_bits, depth - (i << bank_bits))
            mem = m.submodules[f"weights{i}"] = memory.Memory(
                shape=shape, depth=size, init=list(words[i << bank_bits:(i << bank_bits) + size]))
            bank_wr, bank_rd = mem.write_port(granularity=p.wmem_bits), mem.read_port()
            out = Signal(shape, name=f"weights{i}_out", reset_less=True)
            m.d.comb += [bank_rd.addr.eq(rd.addr[:bank_bits]), bank_rd.en.eq(rd.en),
                         bank_wr.addr.eq(wr.addr[:bank_bits]), bank_wr.data.eq(wr.data),
                         bank_wr.en.eq(Mux((wr.addr >> bank_bits) == i, wr.en, 0))]
            m.d.sync += out.eq(bank_rd.data)
            outputs.append(out)
        if len(outputs) == 1:
            m.d.comb += rd.data.eq(outputs[0])
        else:
            with m.Switch(bank):
                for i, out in enumerate(outputs):
                    with m.Case(i):
                        m.d.comb += rd.data.eq(out)
        return _Ports(wr, rd)

    def _path_inputs(self, m, regs: RegisterFile, st: _State, units: _Units) -> None:
        """Connect the units' run-time inputs to the registers of the path being run."""
        p = self.p
        mxv, enc, eng = units
        lanes_log2 = (p.lanes - 1).bit_length()
        layer, is_h, is_head = st.layer, st.is_h, st.is_head

        def lf(field):
            return regs.layer[field][layer]

        def per_path(x, h, head):
            return Mux(is_head, head, Mux(is_h, h, x))

        # The path the encoder works on: the layer's h path beside its x path's MxV (enc_h), the next
        # layer's x path or the head while a cell update feeds it (enc_next), else the path being run.
        enc_layer, enc_head = layer, is_head
        if self.feeds_encoder:
            enc_layer, enc_head = Signal(range(p.max_layers + 1)), Signal()
            m.d.comb += [enc_layer.eq(Mux(st.enc_next, layer + 1, layer)),
                         enc_head.eq(Mux(st.enc_next, layer + 1 == regs.layers, is_head))]
            self._feed(m, enc, eng)

        def enc_path(x, h, head):
            """The field ``x``, ``h`` (a per-layer register) or ``head`` of the path the encoder works on."""
            return Mux(enc_head, head, Mux(st.enc_h, regs.layer[h][enc_layer], regs.layer[x][enc_layer]))

        def ceil_lanes(rows):
            return (rows + (p.lanes - 1)) >> lanes_log2

        def base(of, stride, path=None, at=layer, h_path=is_h):
            """The spec's ``of(at, path)`` at run time (it is ``at * stride + of(0, path)``; the path: ``path``,
            or h where ``h_path``)."""
            offset = Mux(h_path, of(0, "h"), of(0, "x")) if path is None else of(0, path)
            return _times(at, stride) + offset

        prev = Signal(range(p.max_layers))
        last = Signal(range(p.max_layers))
        m.d.comb += [prev.eq(layer - 1), last.eq(regs.layers - 1)]
        sru_identity = lf(LayerReg.HW_IDENTITY) if p.cell == "sru" else Const(0)
        x_rows = _times(regs.hidden, X_BLOCKS[p.cell])     # the SRU's identity highway: a block less
        if p.cell == "sru":
            x_rows = Mux(sru_identity, _times(regs.hidden, X_BLOCKS[p.cell] - 1), x_rows)
        head_acc = p.acc_base(p.max_layers, "x")
        theta = Signal(range(1 << 17), name="theta")
        theta_max = (1 << len(enc.theta)) - 1
        m.d.comb += theta.eq(enc_path(LayerReg.XA_THETA, LayerReg.HA_THETA, regs.head[Reg.HEAD_THETA]))

        # The encoder's quantizer and threshold: registered where a cell update feeds the encoder (the next
        # layer's registers, selected by layer + 1, would lie on the path into its multiplier), in the cycle
        # after its start, before it first uses them; combinational in a narrow core (CONCURRENT_LANES).
        m.d["sync" if self.feeds_encoder else "comb"] += [
            enc.mult.eq(enc_path(LayerReg.XA_MULT, LayerReg.HA_MULT, regs.head[Reg.HEAD_A_MULT])),
            enc.shift.eq(enc_path(LayerReg.XA_SHIFT, LayerReg.HA_SHIFT, regs.head[Reg.HEAD_A_SHIFT])),
            enc.bits.eq(enc_path(LayerReg.XA_BITS, LayerReg.HA_BITS, regs.head[Reg.HEAD_A_BITS])),
            # a threshold beyond the widest delta suppresses every delta: saturated to the encoder's width
            enc.theta.eq(Mux(theta >= theta_max, theta_max, theta)),
        ]
        m.d.comb += [
            enc.length.eq(regs.hidden),
            mxv.count.eq(st.dcount),
            eng.hidden.eq(regs.hidden),
            eng.shift_x.eq(Mux(is_head, regs.head[Reg.HEAD_SHIFT], lf(LayerReg.X_SHIFT))),
            eng.shift_h.eq(lf(LayerReg.H_SHIFT)),
            eng.hw_mult.eq(lf(LayerReg.HW_MULT)), eng.hw_shift.eq(lf(LayerReg.HW_SHIFT)),
            eng.hw_identity.eq(sru_identity),
        ]
        # The memory bases of the encoder and the engine, registered too: their address arithmetic
        # stays off the paths to the memories. They change the cycle after the layer or path does,
        # before the GO cycle's successor, in which either unit first uses them.
        m.d.sync += [
            enc.src_base.eq(Mux(st.enc_h, p.state_base(layer), p.state_base(prev))),
            enc.ref_base.eq(Mux(enc_head, p.ref_base(p.max_layers, "x"),
                                base(p.ref_base, p.layer_ref_words, at=enc_layer, h_path=st.enc_h))),
            eng.acc_base_x.eq(Mux(is_head, head_acc, base(p.acc_base, p.layer_acc_words, "x"))),
            eng.acc_base_h.eq(base(p.acc_base, p.layer_acc_words, "h")),
            eng.vec_base.eq(Mux(is_head, p.vec_base(p.max_layers), p.vec_base(layer))),
            eng.state_base.eq(Mux(is_head, p.state_base(last), p.state_base(layer))),
            eng.ref_base.eq(base(p.ref_base, p.layer_ref_words, "x")),
        ]
        # The MxV's bases, words and slices, registered: their arithmetic fanned out to every block
        # of the weight memory. The layer or path changes in a phase's last cycle, and the MxV first
        # uses these two cycles after that (the GO cycle, then its first). The host places the
        # matrices: their weight bases are registers.
        words = Signal.like(mxv.words)
        slices = Signal.like(mxv.slices)
        m.d.comb += [
            words.eq(per_path(ceil_lanes(x_rows), ceil_lanes(_times(regs.hidden, H_BLOCKS[p.cell])),
                              ceil_lanes(regs.classes))),
            slices.eq(per_path(lf(LayerReg.X_SLICES), lf(LayerReg.H_SLICES), regs.head[Reg.HEAD_SLICES])),
        ]
        m.d.sync += [
            mxv.words.eq(words),
            mxv.slices.eq(slices),
            mxv.col_words.eq(words * (slices + 1) if p.max_slices > 1 else words),
            mxv.w_base.eq(per_path(lf(LayerReg.X_WBASE), lf(LayerReg.H_WBASE), regs.head[Reg.HEAD_WBASE])),
            mxv.acc_base.eq(Mux(is_head, head_acc, base(p.acc_base, p.layer_acc_words))),
        ]

    def _port_wiring(self, m, ports: dict[str, _Ports], st: _State, units: _Units) -> None:
        """Connect the memory ports to the units, and RESET's clearing; the sequencer's commands override."""
        p = self.p
        mxv, enc, eng = units
        w, acc, mult, vec, h, c, ref, dbuf = (ports[n] for n in ("weights", "acc", "mult", "vec", "h", "c", "ref",
                                                                  "dbuf"))
        clearing, clr = st.clearing, st.clr
        e_log2 = p.engine_bits
        # the encoder reads whole state words and selects its element's lane; a wide core's through the
        # engine's register of the word (one register behind the memory: the block RAM's own)
        src_word = eng.h_rd_word if self.wide else h.rd.data if e_log2 else h.rd.data[0]
        # The weight memory's write port takes the read port's address, and the memory is never read
        # while written (the host writes in IDLE, the MxV reads during a STEP), so Yosys can merge
        # the two into the single port of a RAM without a second port (the iCE40 UP5K's SPRAM, whose
        # read data holds during a write): the read enable is gated by the write enables only to show
        # Yosys that. Writes reach the memory from registers (st.w_wr_*), a cycle after the command or
        # CLEAR's counter: no decoding before the write enables of its blocks. The banks of a wide core
        # (ECP5 block RAMs with two ports) read and write through ports of their own, and read in every
        # cycle without a write (the MxV needs no held data): their blocks' read enables come from one
        # register, their addresses from the MxV's and the write's registers, without a multiplexer.
        m.d.sync += [st.w_wr_en.eq(0), st.w_wr_any.eq(0), st.dbuf_wr_en.eq(0)]
        if self.weight_banks:
            m.d.comb += [w.rd.addr.eq(mxv.w_addr), w.wr.addr.eq(st.w_wr_addr), w.rd.en.eq(~st.w_wr_any)]
        else:
            m.d.comb += [w.rd.addr.eq(Mux(st.w_wr_any, st.w_wr_addr, mxv.w_addr)), w.wr.addr.eq(w.rd.addr),
                         w.rd.en.eq(mxv.w_en & ~w.wr.en.any())]
        m.d.comb += [
            w.wr.data.eq(st.w_wr_data), w.wr.en.eq(st.w_wr_en), mxv.w_data.eq(w.rd.data),
            dbuf.rd.addr.eq(self._dbuf_addr(mxv.dbuf_addr, st.is_h)), dbuf.rd.en.eq(mxv.dbuf_en),
            mxv.dbuf_data.eq(dbuf.rd.data),
            dbuf.wr.addr.eq(Mux(st.dbuf_wr_en, self._dbuf_addr(st.dbuf_wr_addr, Const(0, 1)),
                                self._dbuf_addr(enc.dbuf_wr_addr, st.enc_h))),
            dbuf.wr.data.eq(Mux(st.dbuf_wr_en, st.dbuf_wr_data, enc.dbuf_wr_data)),
            dbuf.wr.en.eq(enc.dbuf_wr_en | st.dbuf_wr_en),
            acc.rd.addr.eq(Mux(mxv.acc_rd_en, mxv.acc_rd_addr, eng.acc_addr)),
            acc.rd.en.eq(mxv.acc_rd_en | eng.acc_en),
            mxv.acc_rd_data.eq(acc.rd.data), eng.acc_data.eq(acc.rd.data),
            mult.rd.addr.eq(eng.mult_addr), mult.rd.en.eq(eng.mult_en), eng.mult_data.eq(mult.rd.data),
            *[stmt for u in range(1, eng.rq_units) for stmt in (
                ports[f"mult{u}"].rd.addr.eq(getattr(eng, f"mult{u}_addr")),
                ports[f"mult{u}"].rd.en.eq(getattr(eng, f"mult{u}_en")),
                getattr(eng, f"mult{u}_data").eq(ports[f"mult{u}"].rd.data))],
            vec.rd.addr.eq(eng.vec_addr), vec.rd.en.eq(eng.vec_en), eng.vec_data.eq(vec.rd.data),
            h.rd.addr.eq(Mux(enc.src_en, enc.src_addr >> e_log2, eng.h_rd_addr)),
            h.rd.en.eq(enc.src_en | eng.h_rd_en),
            enc.src_data.eq(src_word), eng.h_rd_data.eq(h.rd.data),
            c.rd.addr.eq(eng.c_rd_addr), c.rd.en.eq(eng.c_rd_en), eng.c_rd_data.eq(c.rd.data),
            enc.ref_rd_data.eq(ref.rd.data), eng.ref_data.eq(ref.rd.data),
        ]
        for depth, below in st.clears.items():
            with m.If(clearing & (clr == depth - 1)):
                m.d.sync += below.eq(0)
        for port, depth, (addr, wdata, en) in (
                (acc, p.acc_depth, (mxv.acc_wr_addr, mxv.acc_wr_data, mxv.acc_wr_en)),
                (h, p.state_words, (eng.h_wr_addr, eng.h_wr_data.as_value(), eng.h_wr_en)),
                (c, p.state_words, (eng.c_wr_addr, eng.c_wr_data.as_value(), eng.c_wr_en))):
            m.d.comb += [port.wr.addr.eq(Mux(clearing, clr, addr)),
                         Value.cast(port.wr.data).eq(Mux(clearing, 0, wdata)),
                         port.wr.en.eq(en | st.clears[depth])]

        with m.If(st.wiping):
            lanes = (1 << p.lanes) - 1
            m.d.sync += [st.w_wr_addr.eq(clr), st.w_wr_data.eq(0),
                         st.w_wr_en.eq(Mux(clr < p.weight_depth, lanes, 0)), st.w_wr_any.eq(clr < p.weight_depth)]
            every = (1 << p.engine_width) - 1
            m.d.comb += [mult.wr.addr.eq(clr), mult.wr.data.as_value().eq(0),
                         mult.wr.en.eq(Mux(clr < p.mult_words, every, 0)),
                         vec.wr.addr.eq(clr), vec.wr.data.as_value().eq(0),
                         vec.wr.en.eq(Mux(clr < p.vec_words, every, 0))]

        with m.If(enc.ref_rd_en):
            m.d.comb += [ref.rd.addr.eq(enc.ref_rd_addr), ref.rd.en.eq(1)]
        with m.Elif(eng.ref_en):
            m.d.comb += [ref.rd.addr.eq(eng.ref_addr), ref.rd.en.eq(1)]
        with m.Else():
            m.d.comb += [ref.rd.addr.eq(self._delta_ref()), ref.rd.en.eq(1)]
        # a DELTA's reference: above WIDE_LANES lanes registered as it leaves the memory (the encoder's and
        # the engine's registers of the same word, merged into the block RAM's output register), a cycle later
        ref_word = ref.rd.data
        if self.wide:
            ref_word = Signal.like(ref.rd.data, name="ref_word", reset_less=True)
            m.d.sync += ref_word.eq(ref.rd.data)
        with m.If(clearing):
            m.d.comb += [ref.wr.addr.eq(clr), ref.wr.data.eq(0), ref.wr.en.eq(st.clears[p.ref_depth])]
        with m.Elif(st.rmw):
            m.d.comb += [ref.wr.addr.eq(st.rmw_addr), ref.wr.data.eq(ref_word + st.rmw_delta), ref.wr.en.eq(1)]
        with m.Else():
            m.d.comb += [ref.wr.addr.eq(enc.ref_wr_addr), ref.wr.data.eq(enc.ref_wr_data),
                         ref.wr.en.eq(enc.ref_wr_en)]

    def _feed(self, m, enc: DeltaEncoder, eng: CellEngine) -> None:
        """The encoder's stream: each of the engine's ``h`` writes, an item's ``E`` new values, one per
        cycle from the write's (the engine writes at most every ``E`` cycles, :class:`CellEngine`)."""
        e = self.p.engine_width
        m.d.comb += [enc.feed_valid.eq(eng.h_wr_en), enc.feed_data.eq(eng.h_wr_data[0])]
        if e == 1:
            return
        rest = Signal(data.ArrayLayout(signed(C.FX_BITS), e - 1))     # the write's lanes 1 .. E-1, in turn
        left = Signal(range(e))
        with m.If(eng.h_wr_en):
            m.d.sync += [rest.as_value().eq(eng.h_wr_data.as_value()[C.FX_BITS:]), left.eq(e - 1)]
        with m.Elif(left != 0):
            m.d.comb += [enc.feed_valid.eq(1), enc.feed_data.eq(rest[0])]
            m.d.sync += [rest.as_value().eq(rest.as_value() >> C.FX_BITS), left.eq(left - 1)]

    @staticmethod
    def _joined(m, st: _State, unit_done, enc_done):
        """In a state that waits for a unit and the encoder, started together (``st.unit_fin`` and
        ``st.enc_fin`` cleared): whether both are done, in this cycle or before."""
        with m.If(unit_done):
            m.d.sync += st.unit_fin.eq(1)
        with m.If(enc_done):
            m.d.sync += st.enc_fin.eq(1)
        return (unit_done | st.unit_fin) & (enc_done | st.enc_fin)

    def _dbuf_addr(self, entry, h_half):
        """Delta buffer address of ``entry`` of the x path's half, or of the h path's (``h_half``; one buffer
        for both where the encodes do not overlap)."""
        if not self.overlaps_encodes:
            return entry
        bits = _addr_bits(self.p.dbuf_depth)
        return Cat(entry[:bits], Const(0, bits)[len(entry):], h_half)

    def _delta_ref(self):
        """Reference address of the element of a DELTA command (in layer 0's x path)."""
        return self.p.ref_base(0, "x") + self.cmd.payload.addr[:self.index_bits]

    def _host_write(self, m, regs: RegisterFile, st: _State, ports: dict[str, _Ports], errors) -> None:
        """WRITE: a register, or one element of the weight (``st.w_wr_*``: a cycle later),
        multiplier or vector memory; refused (``errors``) for an address of nothing or a register value out
        of its range."""
        p = self.p
        cmd = self.cmd.payload
        address = data.View(address_layout(), cmd.addr)
        offset = address.offset
        lanes_log2 = (p.lanes - 1).bit_length()
        mult, vec = ports["mult"], ports["vec"]
        with m.Switch(address.region):
            with m.Case(Region.REG):
                m.d.comb += errors.eq(regs.write(m, offset, cmd.data))
            with m.Case(Region.WEIGHT):
                lane = offset[:lanes_log2] if lanes_log2 else Const(0, 1)
                with m.If(offset < p.weight_depth * p.lanes):
                    m.d.sync += [st.w_wr_addr.eq(offset >> lanes_log2),
                                 st.w_wr_data.eq(cmd.data[:p.wmem_bits].replicate(p.lanes)),
                                 st.w_wr_en.eq(Const(1, p.lanes) << lane), st.w_wr_any.eq(1)]
                with m.Else():
                    m.d.comb += errors.eq(Error.BAD_ADDR)
            # multipliers and vectors: element i in lane i mod E of word i // E
            e_log2 = p.engine_bits
            element = Const(1, p.engine_width) << (offset[:e_log2] if e_log2 else 0)
            for region, port, depth, bits in ((Region.MULT, mult, p.acc_depth * p.lanes, C.MULT_BITS),
                                              (Region.VEC, vec, p.vec_depth, C.FX_BITS)):
                with m.Case(region):
                    with m.If(offset < depth):
                        m.d.comb += [port.wr.addr.eq(offset >> e_log2),
                                     port.wr.data.as_value().eq(cmd.data[:bits].replicate(p.engine_width)),
                                     port.wr.en.eq(element)]
                    with m.Else():
                        m.d.comb += errors.eq(Error.BAD_ADDR)
            with m.Default():
                m.d.comb += errors.eq(Error.BAD_ADDR)

    def _sequencer(self, m, regs: RegisterFile, st: _State, ports: dict[str, _Ports], units: _Units) -> None:
        """The command decoder and the step sequencer (phases in ``docs/gateware.md``)."""
        p = self.p
        mxv, enc, eng = units
        cmd = self.cmd.payload
        dbuf = ports["dbuf"]
        overlap, fused = self.overlaps_encodes, self.feeds_encoder
        wide = self.wide
        rsp = self.rsp
        room = Const(1)      # for an output program's outputs
        if wide:
            # the responses through a FIFO with room for an output program's every output (in a block RAM):
            # an output program starts only when it is empty (OUT_GO), and never waits for the consumer, so
            # no ready signal reaches the engine's stall, which enables every stage of its pipeline (out_ii)
            # read through a register of its own, which the ECP5 flow makes the block's output register
            m.submodules.responses = responses = SyncFIFOBuffered(width=DATA_BITS, depth=self.response_depth)
            m.submodules.response_reg = response_reg = StreamRegister(DATA_BITS)
            rsp = responses.w_stream
            room = responses.level == 0
            wiring.connect(m, responses.r_stream, response_reg.i)
            wiring.connect(m, response_reg.o, wiring.flipped(self.rsp))
        if not overlap:
            m.d.comb += st.enc_h.eq(st.is_h)       # the h path is encoded in its own phase
        delta_in = Signal(signed(p.delta_bits))
        delta_fits = Signal()      # the DELTA's 32-bit signed value fits a delta
        read_addr = Signal(ADDR_BITS)
        out_head = regs.classes != 0
        top = cmd.data[p.delta_bits - 1:]
        m.d.comb += [delta_in.eq(cmd.data[:p.delta_bits].as_signed()), eng.out.ready.eq(rsp.ready),
                     delta_fits.eq((top == 0) | (top == (1 << len(top)) - 1))]
        read_value, read_known = regs.read(m, read_addr)
        read_word, read_ok = Signal(DATA_BITS), Signal()
        m.d.sync += regs.cycles.eq(regs.cycles + 1)
        with m.If(st.in_step):
            m.d.sync += st.step_counter.eq(st.step_counter + 1)
        # the sticky errors: a WRITE to ERRORS or a CLEAR clears them (in their own states below)
        m.d.sync += regs.errors.eq(regs.errors | st.errors)
        write_errors = Signal.like(st.errors)
        clears_errors = Signal()
        m.d.comb += clears_errors.eq(self.cmd.valid & (cmd.op == Op.WRITE) & (cmd.addr == int(Reg.ERRORS)))

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    with m.Switch(cmd.op):
                        with m.Case(Op.WRITE):
                            self._host_write(m, regs, st, ports, write_errors)
                            m.d.comb += st.errors.eq(write_errors)
                            with m.If(clears_errors):
                                m.d.sync += regs.errors.eq(0)
                        with m.Case(Op.READ):
                            m.d.sync += read_addr.eq(cmd.addr)
                            m.next = "READ_FETCH"
                        with m.Case(Op.DELTA):
                            with m.If(cmd.addr >= regs.inputs):
                                m.d.comb += st.errors.eq(Error.BAD_INDEX)
                            with m.Elif(~delta_fits):
                                m.d.comb += st.errors.eq(Error.BAD_VALUE)
                            with m.Elif(st.host_count >= p.dbuf_depth):
                                m.d.comb += st.errors.eq(Error.OVERFLOW)
                            with m.Else():
                                m.d.sync += [st.dbuf_wr_en.eq(1), st.dbuf_wr_addr.eq(st.host_count),
                                             st.dbuf_wr_data.index.eq(cmd.addr), st.dbuf_wr_data.delta.eq(delta_in),
                                             st.host_count.eq(st.host_count + 1), st.rmw.eq(not wide),
                                             st.rmw_addr.eq(self._delta_ref()), st.rmw_delta.eq(delta_in)]
                                m.next = "DELTA_READ" if wide else "DELTA_RMW"
                        with m.Case(Op.STEP):
                            with m.If((regs.layers == 0) | (regs.hidden == 0)):
                                m.d.comb += st.errors.eq(Error.NO_MODEL)
                            with m.Else():
                                m.d.sync += [st.layer.eq(0), st.path.eq(Path.X), st.dcount.eq(st.host_count),
                                             st.in_step.eq(1), st.step_counter.eq(1)]
                                m.next = "MXV_GO"
                        with m.Case(Op.RESET):
                            m.d.sync += [st.clr.eq(0), st.clearing.eq(1), *[b.eq(1) for b in st.clears.values()]]
                            m.next = "CLEAR"
                        with m.Case(Op.CLEAR):
                            m.d.sync += [st.clr.eq(0), st.clearing.eq(1), st.wiping.eq(1),
                                         *[b.eq(1) for b in st.clears.values()]]
                            m.next = "WIPE"
                        with m.Default():
                            m.d.comb += st.errors.eq(Error.BAD_OP)
            with m.State("DELTA_READ"):      # (above WIDE_LANES lanes) the reference arrives, is registered
                m.d.sync += st.rmw.eq(1)
                m.next = "DELTA_RMW"
            with m.State("DELTA_RMW"):
                m.d.sync += st.rmw.eq(0)
                m.next = "IDLE"
            with m.State("READ_FETCH"):      # the register's value registered (and CYCLES' high half with its low)
                m.d.sync += [read_word.eq(read_value), read_ok.eq(read_known)]
                with m.If(read_addr == int(Reg.CYCLES)):
                    m.d.sync += regs.cycles_hi.eq(regs.cycles[DATA_BITS:])
                m.next = "READ"
            with m.State("READ"):
                m.d.comb += [rsp.valid.eq(1), rsp.payload.eq(read_word)]
                with m.If(~read_ok):
                    m.d.comb += st.errors.eq(Error.BAD_ADDR)
                with m.If(rsp.ready):
                    m.next = "IDLE"
            with m.State("CLEAR"):
                m.d.sync += st.clr.eq(st.clr + 1)
                with m.If(st.clr == self.clear_depth - 1):
                    m.d.sync += [st.clearing.eq(0), st.host_count.eq(0), regs.cycles.eq(0), regs.steps.eq(0)]
                    m.next = "IDLE"
            with m.State("WIPE"):
                m.d.sync += st.clr.eq(st.clr + 1)
                with m.If(st.clr == self.wipe_depth - 1):
                    m.d.sync += [st.clearing.eq(0), st.wiping.eq(0), st.host_count.eq(0), regs.cycles.eq(0),
                                 regs.steps.eq(0), regs.step_cycles.eq(0)]
                    regs.clear(m)
                    m.next = "IDLE"

            if not fused:     # (else every encode runs beside another unit)
                with m.State("ENC_GO"):
                    m.d.comb += enc.start.eq(1)
                    m.next = "ENC_WAIT"
                with m.State("ENC_WAIT"):
                    with m.If(enc.done):
                        m.d.sync += st.dcount.eq(enc.count)
                        m.next = "MXV_GO"
            with m.State("MXV_GO"):
                m.d.comb += mxv.start.eq(1)
                if overlap:
                    # a layer's x path: its h path's encode starts with the MxV (it reads the layer's
                    # state of the previous step, which no phase before the cell update changes)
                    with m.If(st.path == Path.X):
                        m.d.comb += [enc.start.eq(1), st.enc_h.eq(1)]
                        m.d.sync += [st.unit_fin.eq(0), st.enc_fin.eq(0)]
                        m.next = "XH_WAIT"
                    with m.Else():
                        m.next = "MXV_WAIT"
                else:
                    m.next = "MXV_WAIT"
            if overlap:
                with m.State("XH_WAIT"):
                    m.d.comb += st.enc_h.eq(1)
                    with m.If(self._joined(m, st, mxv.done, enc.done)):
                        m.d.sync += [st.path.eq(Path.H), st.dcount.eq(enc.count)]
                        m.next = "MXV_GO"
            with m.State("MXV_WAIT"):
                with m.If(mxv.done):
                    with m.If(st.is_head):
                        m.next = "OUT_GO"
                    if H_BLOCKS[p.cell] and not overlap:
                        with m.Elif(~st.is_h):
                            m.d.sync += st.path.eq(Path.H)
                            m.next = "ENC_GO"
                    with m.Else():
                        m.next = "CELL_GO"
            # the next path's deltas: encoded as the update makes them, or by a scan after it
            after_cell = "MXV_GO" if fused else "ENC_GO"
            with m.State("CELL_GO"):
                m.d.comb += [eng.start.eq(1), eng.program.eq(Program.CELL),
                             eng.count.eq(regs.hidden >> p.engine_bits)]
                if fused:
                    m.d.sync += [st.unit_fin.eq(0), st.enc_fin.eq(0)]
                    with m.If((st.layer + 1 != regs.layers) | out_head):
                        m.d.comb += [enc.start.eq(1), enc.stream.eq(1), st.enc_next.eq(1)]
                        m.d.sync += st.fused.eq(1)
                    with m.Else():
                        m.d.sync += st.fused.eq(0)
                m.next = "CELL_WAIT"
            with m.State("CELL_WAIT"):
                finished = eng.done
                if fused:
                    m.d.comb += st.enc_next.eq(st.fused)
                    finished = self._joined(m, st, eng.done, enc.done | ~st.fused)
                    with m.If(finished):
                        m.d.sync += st.dcount.eq(enc.count)
                with m.If(finished):
                    m.d.sync += [st.layer.eq(st.layer + 1), st.path.eq(Path.X)]
                    with m.If(st.layer + 1 == regs.layers):
                        m.d.sync += st.path.eq(Path.HEAD)
                        with m.If(out_head):
                            m.next = after_cell
                        with m.Else():
                            m.next = "OUT_GO"
                    with m.Else():
                        m.next = after_cell
            with m.State("OUT_GO"):
                with m.If(room):
                    m.d.comb += [eng.start.eq(1), eng.program.eq(Mux(out_head, Program.HEAD_OUT, Program.H_OUT)),
                                 eng.count.eq(Mux(out_head, regs.classes, regs.hidden))]
                    m.next = "OUT_WAIT"
            with m.State("OUT_WAIT"):
                m.d.comb += [rsp.valid.eq(eng.out.valid), rsp.payload.eq(eng.out.payload.as_signed())]
                with m.If(eng.done):
                    m.d.sync += [st.host_count.eq(0), regs.steps.eq(regs.steps + 1), st.in_step.eq(0),
                                 regs.step_cycles.eq(st.step_counter + 1)]
                    m.next = "IDLE"
