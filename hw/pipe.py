"""StreamRegister: one register stage on a stream, to cut a long combinational path between two units.

The board's command executor decodes its state into a command, and the
core decodes that command into memory writes and checks: in one cycle the two
decoders were an ECP5 board build's critical path. This stage holds the
command in between. Behind a FIFO in a block RAM it is the block's output
register (the payload register has no reset, so :mod:`deltarnn.fpga.outreg`
moves it into an ECP5 block).
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamRegister"]


class StreamRegister(wiring.Component):
    """A stream's payload and valid through one register.

    Parameters
    ----------
    shape : shape-like
        The stream's payload.

    Members
    -------
    i : In(stream.Signature(shape))
        Taken whenever the register is empty or ``o`` takes its word in the same cycle.
    o : Out(stream.Signature(shape))
        The word taken from ``i``, one cycle later.

    Latency and throughput: one cycle; one word per cycle. ``i.ready`` is
    combinational from ``o.ready`` (the payload and valid paths are cut,
    the ready path is not).
    """

    def __init__(self, shape):
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        payload = Signal.like(self.i.payload, reset_less=True)   # only read while o.valid
        m.d.comb += [self.i.ready.eq(~self.o.valid | self.o.ready), self.o.payload.eq(payload)]
        with m.If(self.i.ready):
            m.d.sync += self.o.valid.eq(self.i.valid)
            with m.If(self.i.valid):
                m.d.sync += payload.eq(self.i.payload)
        return m
