"""Activation: sigmoid and tanh by table lookup, ReLU.

The ROMs are initialised from :func:`deltarnn.spec.contract.table`, the arrays the golden
model indexes, so both compute the same integers by construction.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from deltarnn.spec import contract as C

KINDS = ("sigmoid", "tanh", "relu")


def lut_address(x, kind: str):
    """``clamp((x >> LUT_SHIFT[kind]) + N/2, 0, N-1)`` of a signed fixed-point value."""
    n = 1 << C.LUT_ADDR_BITS
    idx = (x >> C.LUT_SHIFT[kind]) + n // 2
    return Mux(idx < 0, 0, Mux(idx > n - 1, n - 1, idx))[:C.LUT_ADDR_BITS]


class Activation(wiring.Component):
    """One activation function of a 16-bit fixed-point input.

    Parameters
    ----------
    kind : {"sigmoid", "tanh", "relu"}
    registered : bool
        Register the input before the table's address arithmetic, and the table's output as it leaves
        the ROM (latency 3): in a wide core the unit's input multiplexer and the address's clamp in one
        cycle were an ECP5's critical path, and the output register is the block RAM's own.

    Members
    -------
    x : In(signed(16))
        Input, sampled every cycle.
    y : Out(signed(16))
        ``f(x)`` of the input :attr:`latency` cycles earlier.

    Latency :attr:`latency` cycles (1, or 3 when ``registered``), throughput one value per cycle.
    sigmoid and tanh read a 1024-entry ROM (``deltarnn.spec.contract.table(kind)``); ReLU is
    ``max(x, 0)``, registered to keep the same latency.
    """

    def __init__(self, kind: str, registered: bool = False):
        if kind not in KINDS:
            self._MustUse__silence = True   # no "created but never used" warning
            raise ValueError(f"unknown activation {kind!r}; choose one of {', '.join(KINDS)}")
        self.kind = kind
        self.registered = registered
        self.latency = 3 if registered else 1
        super().__init__({"x": In(signed(C.FX_BITS)), "y": Out(signed(C.FX_BITS))})

    def elaborate(self, platform):
        m = Module()
        x, y = self.x, self.y
        if self.registered:      # (the output register without a reset: the block RAM's own)
            x, y = Signal.like(self.x, name="x_reg"), Signal.like(self.y, name="y_rom")
            y_reg = Signal.like(self.y, name="y_reg", reset_less=True)
            m.d.sync += [x.eq(self.x), y_reg.eq(y)]
            m.d.comb += self.y.eq(y_reg)
        if self.kind == "relu":
            m.d.sync += y.eq(Mux(x < 0, 0, x))
            return m
        m.submodules.rom = rom = memory.Memory(shape=signed(C.FX_BITS), depth=1 << C.LUT_ADDR_BITS,
                                               init=[int(v) for v in C.table(self.kind)])
        port = rom.read_port()
        m.d.comb += [port.addr.eq(lut_address(x, self.kind)), port.en.eq(1), y.eq(port.data)]
        return m
