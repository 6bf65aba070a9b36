"""Byte links between the host and a board: the serial port, and the interface the simulated board shares.

A :class:`Link` moves bytes and nothing else; framing, CRCs, retries and
timeouts are the driver's (:mod:`deltarnn.device.driver`), the same code
over every link. :class:`SerialLink` is a board's USB serial port through
pyserial; ``deltarnn.sim.board.SimLink`` is the board top in Verilator.
"""

from __future__ import annotations

import abc
import time

__all__ = ["Link", "LinkError", "SerialLink"]


class LinkError(RuntimeError):
    """The link cannot be opened or has failed (no such port, the simulated board stopped)."""


class Link(abc.ABC):
    """Bytes to and from a board.

    Timeouts are in seconds of the board's time: wall-clock seconds on a
    real board, simulated seconds (cycles / clock) on the simulated one, so
    the driver's timeouts mean the same on both.
    """

    #: Bits per second of the serial line (the driver adds transfer time to its timeouts).
    baud: int

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send ``data``."""

    @abc.abstractmethod
    def read(self, size: int, timeout: float) -> bytes:
        """Up to ``size`` bytes: fewer only if ``timeout`` seconds pass first."""

    def now(self) -> float:
        """The board's time in seconds (from any origin): what timeouts are measured against."""
        return time.monotonic()

    def discard_input(self) -> None:
        """Drop bytes received and not yet read (before a retry)."""

    def close(self) -> None:
        """Release the port or stop the simulator."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialLink(Link):
    """A board's serial port, through pyserial.

    Parameters
    ----------
    port : str
        The device (``/dev/ttyUSB1``, ``COM3``) or a pyserial URL (``loop://`` for a loopback test).
    baud : int
        The rate the bitstream was built for (``deltarnn build`` prints it).
    """

    def __init__(self, port: str, baud: int):
        import serial

        self.port, self.baud = port, int(baud)
        try:
            self._serial = serial.serial_for_url(port, baudrate=self.baud, timeout=0, write_timeout=5)
        except (serial.SerialException, ValueError, OSError) as e:
            raise LinkError(f"cannot open serial port {port}: {_reason(e)}; connect the board and pass its port "
                            f"(on Linux usually /dev/ttyUSB1 for an iCEBreaker, /dev/ttyUSB0 for a ULX3S; "
                            f"`python -m serial.tools.list_ports` lists them), or use --sim") from None

    def write(self, data: bytes) -> None:
        import serial

        try:
            self._serial.write(data)
            self._serial.flush()
        except serial.SerialException as e:
            raise LinkError(f"writing to {self.port} failed: {_reason(e)}") from None

    def read(self, size: int, timeout: float) -> bytes:
        import serial

        try:
            self._serial.timeout = max(0.0, timeout)
            return bytes(self._serial.read(size))
        except serial.SerialException as e:
            raise LinkError(f"reading from {self.port} failed: {_reason(e)}") from None

    def discard_input(self) -> None:
        self._serial.reset_input_buffer()

    def close(self) -> None:
        self._serial.close()


def _reason(e: Exception) -> str:
    text = str(e).strip()
    if "No such file" in text or "could not open port" in text and "Errno 2" in text:
        return "no such device"
    return text.splitlines()[0] if text else type(e).__name__
