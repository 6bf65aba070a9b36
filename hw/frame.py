"""The board's frame receiver: requests of :mod:`deltarnn.spec.protocol` out of the UART's bytes.

:class:`FrameReceiver` finds each request frame in the byte stream, keeps
its payload in a buffer, checks its CRC and hands the frame to the command
executor; :func:`crc16_byte` is the CRC's step for one byte, the same
function as :func:`deltarnn.spec.protocol.crc16`.
"""

from __future__ import annotations

from contextlib import contextmanager

from amaranth import Cat, Module, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from deltarnn.spec import protocol as P

__all__ = ["FrameReceiver", "crc16_byte"]


def crc16_byte(crc, byte):
    """CRC-16/CCITT-FALSE of ``crc`` (16 bits) after one more ``byte`` (8 bits): XOR trees, combinational."""
    bits = [crc[i] for i in range(16)]
    for k in range(7, -1, -1):            # the byte's bits, most significant first
        feedback = bits[15] ^ byte[k]
        bits = [feedback] + bits[:15]     # shift left by one
        for tap in (5, 12):               # 0x1021: x^12 + x^5 + 1
            bits[tap] = bits[tap] ^ feedback
    return Cat(*bits)


class FrameReceiver(wiring.Component):
    """Request frames out of a byte stream.

    States: hunting for :data:`~deltarnn.spec.protocol.REQUEST_SYNC`, then
    ``CODE``, ``SEQ``, ``LEN`` (two bytes), the payload (into the buffer) and
    the CRC. A ``LEN`` above ``max_payload`` abandons the frame
    (``bad_length``), so does a gap of more than ``timeout`` cycles between
    two bytes of a frame (a truncated frame); either way the receiver hunts
    for the next sync byte. A whole frame is handed over with ``valid``
    (``crc_ok`` low if its CRC does not match, which the executor answers
    with ``BAD_CRC``) and held, the buffer readable, until ``ack``; bytes
    that arrive meanwhile are dropped and counted in ``dropped`` (the host
    waits for each reply).

    Parameters
    ----------
    max_payload : int
        The longest payload taken (at most :data:`~deltarnn.spec.protocol.MAX_PAYLOAD`).
    timeout : int
        Cycles without a byte after which a frame begun counts as truncated.

    Members
    -------
    rx : In(stream.Signature(8))
        Bytes from the UART (always ready).
    valid : Out(1)
        A frame is complete: ``code``, ``seq``, ``length``, ``crc_ok`` and the buffer hold it.
    code, seq : Out(8)
    length : Out(range(max_payload + 1))
    crc_ok : Out(1)
    ack : In(1)
        The executor is done with the frame (a one-cycle pulse while ``valid``).
    buf_addr : In(range(max_payload))
    buf_data : Out(8)
        The payload buffer's read port (data one cycle after the address).
    bad_length, timed_out : Out(1)
        One-cycle pulses: a frame abandoned.
    dropped : Out(16)
        Bytes that arrived while a frame was held (saturating).

    Latency and throughput: ``valid`` rises in the cycle after the CRC's
    second byte arrives; one byte per cycle at most.
    """

    def __init__(self, max_payload: int = P.MAX_PAYLOAD, timeout: int = 100_000):
        if not 1 <= max_payload <= P.MAX_PAYLOAD:
            raise ValueError(f"max_payload must be 1 .. {P.MAX_PAYLOAD}, not {max_payload}")
        if timeout < 1:
            raise ValueError("timeout must be at least 1 cycle")
        self.max_payload, self.timeout = max_payload, timeout
        super().__init__({
            "rx": In(stream.Signature(8)), "valid": Out(1), "code": Out(8), "seq": Out(8),
            "length": Out(range(max_payload + 1)), "crc_ok": Out(1), "ack": In(1),
            "buf_addr": In(range(max_payload)), "buf_data": Out(8),
            "bad_length": Out(1), "timed_out": Out(1), "dropped": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.buf = buf = memory.Memory(shape=8, depth=self.max_payload, init=[])
        wr, rd = buf.write_port(), buf.read_port()
        m.d.comb += [rd.addr.eq(self.buf_addr), self.buf_data.eq(rd.data), self.rx.ready.eq(1)]

        byte = self.rx.payload
        got = self.rx.valid
        crc = Signal(16)
        length = Signal(16)
        count = Signal(range(self.max_payload + 1))
        crc_lo = Signal(8)
        idle = Signal(range(self.timeout + 1))     # cycles since the last byte (saturating)
        with m.If(got):
            m.d.sync += idle.eq(0)
        with m.Elif(idle != self.timeout):
            m.d.sync += idle.eq(idle + 1)

        def step_crc():
            m.d.sync += crc.eq(crc16_byte(crc, byte))

        @contextmanager
        def frame_byte(name):
            """A state inside a frame: abandoned after ``timeout`` idle cycles, the body runs on a byte."""
            with m.State(name):
                with m.If(idle == self.timeout):
                    m.d.comb += self.timed_out.eq(1)
                    m.next = "HUNT"
                with m.Elif(got):
                    yield

        with m.FSM():
            with m.State("HUNT"):
                with m.If(got & (byte == P.REQUEST_SYNC)):
                    m.d.sync += crc.eq(0xFFFF)
                    m.next = "CODE"
            with frame_byte("CODE"):
                m.d.sync += self.code.eq(byte)
                step_crc()
                m.next = "SEQ"
            with frame_byte("SEQ"):
                m.d.sync += self.seq.eq(byte)
                step_crc()
                m.next = "LEN0"
            with frame_byte("LEN0"):
                m.d.sync += length[:8].eq(byte)
                step_crc()
                m.next = "LEN1"
            with frame_byte("LEN1"):
                full = Cat(length[:8], byte)
                step_crc()
                m.d.sync += [length[8:].eq(byte), count.eq(0)]
                with m.If(full > self.max_payload):
                    m.d.comb += self.bad_length.eq(1)
                    m.next = "HUNT"
                with m.Elif(full == 0):
                    m.next = "CRC0"
                with m.Else():
                    m.next = "PAYLOAD"
            with frame_byte("PAYLOAD"):
                m.d.comb += [wr.addr.eq(count), wr.data.eq(byte), wr.en.eq(1)]
                m.d.sync += count.eq(count + 1)
                step_crc()
                with m.If(count + 1 == length):
                    m.next = "CRC0"
            with frame_byte("CRC0"):
                m.d.sync += crc_lo.eq(byte)
                m.next = "CRC1"
            with frame_byte("CRC1"):
                m.d.sync += [self.crc_ok.eq(Cat(crc_lo, byte) == crc), self.length.eq(length)]
                m.next = "HELD"
            with m.State("HELD"):
                m.d.comb += self.valid.eq(1)
                with m.If(got & (self.dropped != 0xFFFF)):
                    m.d.sync += self.dropped.eq(self.dropped + 1)
                with m.If(self.ack):
                    m.next = "HUNT"
        return m
