"""Activation: sigmoid and tanh by table lookup, ReLU.

The ROMs are initialised from :func:`deltarnn.spec.contract.table`, the arrays the golden
model indexes, so both compute the same integers by construction.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from deltarnn.spec import contract as C

KINDS = ("sigmoid", "tanh", "relu")


def lut_address(x, kind: str):
    """``clamp((x >> LUT_SHIFT[kind]) + N/2, 0, N-1)`` of a signed fixed-point value."""
    n = 1 << C.LUT_ADDR_BITS
    idx = (x >> C.LUT_SHIFT[kind]) + n // 2
    return Mux(idx < 0, 0, Mux(idx > n - 1, n - 1, idx))[:C.LUT_ADDR_BITS]


class Activation(wiring.Component):
    """One activation function of ``ports`` 16-bit fixed-point inputs, through one table.

    Parameters
    ----------
    kind : {"sigmoid", "tanh", "relu"}
    registered : bool
        Register the inputs before the table's address arithmetic, the clamped address before the ROM,
        and the table's outputs as they leave it (latency 4): in a wide core the unit's input multiplexer,
        then the address's clamp and its wires to the block RAM, were an ECP5's critical paths; the output
        register is the block RAM's own.
    ports : {1, 2}
        Inputs, each with its own read port of the one table: an ECP5 block RAM has two ports,
        so two engine lanes share a block (an iCE40 block RAM has one read port: there Yosys
        copies the table).

    Members
    -------
    x : In(ArrayLayout(signed(16), ports))
        Inputs, sampled in every cycle of ``en``.
    en : In(1, init=1)
        The pipeline advances (else every register, the table's output too, holds: the engine's stalls).
    y : Out(ArrayLayout(signed(16), ports))
        ``f(x[i])`` of each input :attr:`latency` cycles of ``en`` earlier.

    Latency :attr:`latency` cycles (1, or 4 when ``registered``), throughput one value per cycle and port.
    sigmoid and tanh read a 1024-entry ROM (``deltarnn.spec.contract.table(kind)``); ReLU is
    ``max(x, 0)``, registered to keep the same latency.
    """

    def __init__(self, kind: str, registered: bool = False, ports: int = 1):
        if kind not in KINDS or ports not in (1, 2):
            self._MustUse__silence = True   # no "created but never used" warning
            raise ValueError(f"unknown activation {kind!r}; choose one of {', '.join(KINDS)}" if kind not in KINDS
                             else f"an activation table has 1 or 2 read ports, not {ports}")
        self.kind = kind
        self.registered = registered
        self.ports = ports
        self.latency = 4 if registered else 1
        fx = data.ArrayLayout(signed(C.FX_BITS), ports)
        super().__init__({"x": In(fx), "en": In(1, init=1), "y": Out(fx)})

    def elaborate(self, platform):
        m = Module()
        rom = None
        if self.kind != "relu":
            m.submodules.rom = rom = memory.Memory(shape=signed(C.FX_BITS), depth=1 << C.LUT_ADDR_BITS,
                                                   init=[int(v) for v in C.table(self.kind)])
        for i in range(self.ports):
            x, y = self.x[i], self.y[i]
            if self.registered:      # (the output register without a reset: the block RAM's own)
                x, y = Signal(signed(C.FX_BITS), name=f"x_reg{i}"), Signal(signed(C.FX_BITS), name=f"y_rom{i}")
                y_reg = Signal(signed(C.FX_BITS), name=f"y_reg{i}", reset_less=True)
                with m.If(self.en):
                    m.d.sync += [x.eq(self.x[i]), y_reg.eq(y)]
                m.d.comb += self.y[i].eq(y_reg)
            if rom is None:
                relu = Mux(x < 0, 0, x)
                if self.registered:     # the address register's stage
                    relu_reg = Signal(signed(C.FX_BITS), name=f"relu{i}")
                    with m.If(self.en):
                        m.d.sync += relu_reg.eq(relu)
                    relu = relu_reg
                with m.If(self.en):
                    m.d.sync += y.eq(relu)
                continue
            port = rom.read_port()
            address = lut_address(x, self.kind)
            if self.registered:
                address_reg = Signal.like(address, name=f"address{i}", reset_less=True)
                with m.If(self.en):
                    m.d.sync += address_reg.eq(address)
                address = address_reg
            m.d.comb += [port.addr.eq(address), port.en.eq(self.en), y.eq(port.data)]
        return m
