"""The core's register file: region 0 of the memory map.

Configuration registers (written by the host), identification constants and
performance counters, at the addresses of :class:`deltarnn.spec.memory_map.Reg`
and :func:`deltarnn.spec.memory_map.layer_reg`, with the widths of
:meth:`~deltarnn.spec.memory_map.DeviceParams.head_reg_bits` and
:meth:`~deltarnn.spec.memory_map.DeviceParams.layer_reg_bits`.
"""

from __future__ import annotations

from amaranth import Array, Const, Signal

from deltarnn.spec.memory_map import CELL_CODES, DATA_BITS, DeviceParams, Error, Reg, layer_reg

__all__ = ["RegisterFile"]


class RegisterFile:
    """The registers of a core, as signals of the core's module.

    Not a component: the core's sequencer writes the configuration registers
    (:meth:`write`), counts in the counters and reads any register
    (:meth:`read`) in its own states.

    Parameters
    ----------
    params : deltarnn.spec.memory_map.DeviceParams
        The core's parameters: the identification values and the widths of
        the size registers (``range(max + 1)``).
    init : dict of int to int, optional
        Initial values of configuration registers, by address.

    Attributes
    ----------
    layers, inputs, hidden, classes : Signal
        ``LAYERS``, ``INPUT``, ``HIDDEN``, ``CLASSES``.
    head : dict of Reg to Signal
        The head's registers, ``HEAD_SHIFT`` .. ``HEAD_WBASE``.
    layer : dict of LayerReg to Array of Signal
        The per-layer registers, indexed by layer.
    cycles : Signal(2 * DATA_BITS)
        The cycle counter (``CYCLES`` its low half; ``cycles_hi`` the high half latched by a READ of it).
    step_cycles, steps : Signal(DATA_BITS)
        The counters ``STEP_CYCLES``, ``STEPS``.
    errors : Signal
        The sticky ``ERRORS`` bits (:class:`~deltarnn.spec.memory_map.Error`).
    limits : dict
        Accepted values of every writable register.
    """

    def __init__(self, params: DeviceParams, init: dict[int, int] | None = None):
        p = params
        init = init or {}

        def reg(addr, shape):
            return Signal(shape, init=int(init.get(addr, 0)), name=f"reg_{addr:03x}")

        self.layers = reg(Reg.LAYERS, range(p.max_layers + 1))
        self.hidden = reg(Reg.HIDDEN, range(p.max_hidden + 1))
        self.inputs = reg(Reg.INPUT, range(p.max_input + 1))
        self.classes = reg(Reg.CLASSES, range(p.max_classes + 1))
        self.head = {a: reg(a, bits) for a, bits in p.head_reg_bits().items()}
        self.layer = {f: Array(reg(layer_reg(i, f), bits) for i in range(p.max_layers))
                      for f, bits in p.layer_reg_bits().items()}
        self.writable = {Reg.LAYERS: self.layers, Reg.HIDDEN: self.hidden, Reg.INPUT: self.inputs,
                         Reg.CLASSES: self.classes, **self.head}
        for f, arr in self.layer.items():
            for i in range(p.max_layers):
                self.writable[layer_reg(i, f)] = arr[i]

        self.limits = p.reg_limits()
        self.engine_bits = p.engine_bits
        self.cycles = Signal(2 * DATA_BITS)
        self.cycles_hi = Signal(DATA_BITS)
        self.errors = Signal(len(Error))
        self.step_cycles = Signal(DATA_BITS)
        self.steps = Signal(DATA_BITS)
        # READ answers the sizes, identification and counters; the other configuration registers are
        # write-only (a 32-bit read multiplexer over all of them costs 400 LUTs, 8 % of an iCE40 UP5K)
        self.readable = {
            Reg.LAYERS: self.layers, Reg.INPUT: self.inputs, Reg.HIDDEN: self.hidden, Reg.CLASSES: self.classes,
            Reg.ID_CELL: Const(CELL_CODES[p.cell]), Reg.ID_LANES: Const(p.lanes),
            Reg.ID_MAX_INPUT: Const(p.max_input), Reg.ID_MAX_HIDDEN: Const(p.max_hidden),
            Reg.ID_MAX_LAYERS: Const(p.max_layers), Reg.ID_MAX_CLASSES: Const(p.max_classes),
            Reg.ID_WMEM_BITS: Const(p.wmem_bits), Reg.ID_ABITS: Const(p.abits), Reg.ID_ACC_BITS: Const(p.acc_bits),
            Reg.ID_MAX_WBITS: Const(p.widest_weight), Reg.ID_WEIGHT_WORDS: Const(p.weight_depth),
            Reg.CYCLES: self.cycles[:DATA_BITS], Reg.CYCLES_HI: self.cycles_hi, Reg.ERRORS: self.errors,
            Reg.STEP_CYCLES: self.step_cycles, Reg.STEPS: self.steps,
        }

    def write(self, m, offset, data) -> Signal:
        """Add to ``m``: the register at ``offset`` takes ``data`` in the next cycle, if ``data`` lies
        within its limits (:meth:`~deltarnn.spec.memory_map.DeviceParams.reg_limits`).

        Returns the :class:`~deltarnn.spec.memory_map.Error` bits of the write
        (combinational): ``BAD_VALUE`` for a value outside the limits (the
        register keeps its value), ``BAD_ADDR`` for an offset of no writable
        register. A write to ``ERRORS`` clears it. Call it inside the
        condition that enables the write.
        """
        refused = Signal(len(Error), name="write_refused")
        # one check per distinct range, shared by the registers that have it; a range 0 .. 2**k - 1
        # is only "no bit above k"; the others compare only the bits below the widest limit's
        fits = {}
        width = max(hi for lo, hi in self.limits.values()).bit_length()
        low, above = data[:width], data[width:].any()
        for lo, hi in sorted(set(self.limits.values())):
            ok = Signal(name=f"fits_{lo}_{hi}")
            if lo == 0 and (hi + 1) & hi == 0:
                m.d.comb += ok.eq(~data[hi.bit_length():].any())
            else:
                m.d.comb += ok.eq(~above & (low >= lo) & (low <= hi))
            fits[lo, hi] = ok
        # HIDDEN: a multiple of the engine's lanes too (its items are E neurons)
        ragged = data[:self.engine_bits].any() if self.engine_bits else Const(0)
        with m.Switch(offset):
            for a, s in self.writable.items():
                with m.Case(int(a)):
                    with m.If(~fits[self.limits[int(a)]] | (ragged if a == Reg.HIDDEN else 0)):
                        m.d.comb += refused.eq(Error.BAD_VALUE)
                    with m.Else():
                        m.d.sync += s.eq(data)
            with m.Case(int(Reg.ERRORS)):
                pass
            with m.Default():
                m.d.comb += refused.eq(Error.BAD_ADDR)
        return refused

    def read(self, m, addr) -> tuple[Signal, Signal]:
        """``(value, known)``: signals of ``m`` equal to the readable register at ``addr`` (:attr:`readable`:
        the sizes, identification and counters; 0 for any other address) and whether there is one;
        combinational."""
        value = Signal(DATA_BITS, name="read_value")
        known = Signal(name="read_known")
        with m.Switch(addr):
            for a, s in self.readable.items():
                with m.Case(int(a)):
                    m.d.comb += [value.eq(s), known.eq(1)]
        return value, known

    def clear(self, m) -> None:
        """Add to ``m``: every writable register and the errors are 0 in the next cycle."""
        m.d.sync += [s.eq(0) for s in self.writable.values()]
        m.d.sync += self.errors.eq(0)
