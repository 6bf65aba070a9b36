"""A UART receiver and transmitter: 8 data bits, no parity, one stop bit (8N1), LSB first.

No maintained Amaranth UART is published on the package index, so the board
tops use these two. The baud rate is fixed at elaboration by ``divisor``, the
clock cycles per bit (``round(clk_hz / baud)``, :func:`divisor_for`); at 3
Mbaud a 48 MHz clock gives 16.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "divisor_for"]

#: The fewest clock cycles per bit the receiver samples correctly (it needs the middle of a bit).
MIN_DIVISOR = 4


def divisor_for(clk_hz: float, baud: int, tolerance: float = 0.02) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_hz``.

    Raises
    ------
    ValueError
        If the clock is too slow for the baud rate (fewer than :data:`MIN_DIVISOR`
        cycles per bit), or the nearest divisor misses the rate by more than
        ``tolerance`` (the receiver at the other end then misreads bits).
    """
    divisor = round(clk_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"a {clk_hz / 1e6:g} MHz clock cannot run a UART at {baud} baud: it needs at least "
                         f"{MIN_DIVISOR} cycles per bit ({MIN_DIVISOR * baud / 1e6:g} MHz)")
    error = abs(clk_hz / divisor - baud) / baud
    if error > tolerance:
        raise ValueError(f"{baud} baud at {clk_hz / 1e6:g} MHz is {100 * error:.1f} % off with {divisor} cycles "
                         f"per bit (more than {100 * tolerance:g} %): choose another clock or baud rate")
    return divisor


def _check(divisor: int) -> int:
    if divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be at least {MIN_DIVISOR} cycles per bit, not {divisor}")
    return divisor


class UARTTx(wiring.Component):
    """UART transmitter, 8N1.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Members
    -------
    data : In(stream.Signature(8))
        Bytes to send; taken (``ready``) when the line is idle or the last
        one's stop bit ends.
    tx : Out(1)
        The serial line, high when idle.

    Latency and throughput: a byte's start bit begins in the cycle after it is
    taken; one byte per ``10 * divisor`` cycles, back to back.
    """

    def __init__(self, divisor: int):
        self.divisor = _check(divisor)
        super().__init__({"data": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        shift = Signal(10, init=1)      # stop bit, data LSB first, start bit (sent from bit 0)
        bits = Signal(range(11))        # bits left to send
        timer = Signal(range(self.divisor))
        # ready in the stop bit's last cycle too: the next start bit follows it directly
        m.d.comb += self.data.ready.eq((bits == 0) | ((bits == 1) & (timer == 0)))
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [shift.eq(Cat(0, self.data.payload, 1)), bits.eq(10), timer.eq(self.divisor - 1),
                         self.tx.eq(0)]
        with m.Elif(bits != 0):
            with m.If(timer == 0):
                m.d.sync += [timer.eq(self.divisor - 1), bits.eq(bits - 1), shift.eq(shift >> 1)]
                with m.If(bits != 1):
                    m.d.sync += self.tx.eq(shift[1])
                with m.Else():
                    m.d.sync += self.tx.eq(1)
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


class UARTRx(wiring.Component):
    """UART receiver, 8N1, sampling each bit in its middle.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Members
    -------
    rx : In(1)
        The serial line (synchronised inside: any pin will do).
    data : Out(stream.Signature(8))
        Received bytes; a byte not taken before the next one's stop bit is
        replaced by it and counts as an overrun.
    frame_error : Out(1)
        One-cycle pulse: a stop bit was low (a break, noise or a wrong baud
        rate); the byte is dropped.
    overrun : Out(1)
        One-cycle pulse: a byte was lost because ``data`` was not taken.

    Latency and throughput: a byte is valid in the cycle after the middle of
    its stop bit is sampled (the line passes a two-flip-flop synchroniser
    first); one byte per bit time times 10, back to back, at a baud rate
    within a few per cent of ``clk / divisor``. After a framing error the
    receiver waits for the line to go high, then for the next start bit.
    """

    def __init__(self, divisor: int):
        self.divisor = _check(divisor)
        super().__init__({"rx": In(1, init=1), "data": Out(stream.Signature(8)), "frame_error": Out(1),
                          "overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(self.divisor))
        bits = Signal(range(10))
        shift = Signal(8)
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):      # the middle of the start bit: still low, or it was a glitch
                with m.If(timer == 0):
                    with m.If(rx):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [timer.eq(self.divisor - 1), bits.eq(0)]
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), shift.eq(Cat(shift[1:], rx)), bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(rx):
                        m.d.sync += [self.data.payload.eq(shift), self.data.valid.eq(1)]
                        with m.If(self.data.valid & ~self.data.ready):
                            m.d.comb += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.frame_error.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):       # wait for the line to go idle (high) again
                with m.If(rx):
                    m.next = "IDLE"
        return m
