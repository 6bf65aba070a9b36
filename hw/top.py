"""The board top without the board: UART, frame receiver, command executor and core, two pins.

:class:`BoardTop` is what every board build and the simulated board run:
the serial line in and out, and nothing that depends on a board. The board
wrappers of :mod:`deltarnn.fpga.boards` add the clock (a PLL), the reset and
the pins; :mod:`deltarnn.sim.board` runs this same component in Verilator
behind the host driver's ``SimLink``.
"""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from deltarnn.spec import protocol as P
from deltarnn.spec.memory_map import DeviceParams

from deltarnn.hw.executor import Link
from deltarnn.hw.uart import UARTRx, UARTTx, divisor_for

__all__ = ["BoardTop", "FRAME_TIMEOUT_S"]

#: The gap between two bytes of a request after which the board drops the frame as truncated (seconds).
#: Longer than a USB serial adapter's packet gaps, shorter than any host timeout.
FRAME_TIMEOUT_S = 0.02


class BoardTop(wiring.Component):
    """The accelerator behind a serial port.

    Parameters
    ----------
    params : DeviceParams
        The core.
    clock_hz : int
        The ``sync`` clock the board gives it.
    baud : int
        The serial rate (:func:`~deltarnn.hw.uart.divisor_for` checks that the clock can make it).
    max_payload : int
        The longest request payload taken (``docs/protocol.md``).

    Members
    -------
    rx : In(1)
        The serial line from the host (idle high).
    tx : Out(1)
        The serial line to the host (idle high).

    Latency and throughput: one request at a time, each answered when it has
    run; the link carries ``baud / 10`` bytes per second each way.
    """

    def __init__(self, params: DeviceParams, clock_hz: int, baud: int, max_payload: int = P.MAX_PAYLOAD):
        self.p, self.clock_hz, self.baud = params, int(clock_hz), int(baud)
        self.divisor = divisor_for(clock_hz, baud)
        self.max_payload = max_payload
        self.timeout = max(1, round(FRAME_TIMEOUT_S * clock_hz))
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = urx = UARTRx(self.divisor)
        m.submodules.uart_tx = utx = UARTTx(self.divisor)
        m.submodules.link = link = Link(self.p, self.clock_hz, self.baud, self.max_payload, self.timeout)
        wiring.connect(m, urx.data, link.rx)
        wiring.connect(m, link.tx, utx.data)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        return m
