"""The serial protocol between the host and a board: frames, commands, status codes, CRC.

``docs/protocol.md`` describes it for people; this module is its single
definition, imported by the host driver and by the gateware's frame engine
and their tests. Like the rest of :mod:`deltarnn.spec` it imports only the
standard library.

Every frame, in both directions, is::

    SYNC  CODE  SEQ  LEN (u16)  PAYLOAD (LEN bytes)  CRC (u16)

with multi-byte fields little-endian. ``SYNC`` is :data:`REQUEST_SYNC` from
the host and :data:`REPLY_SYNC` from the device; ``CODE`` is a
:class:`Command` in a request and a :class:`Status` in a reply; ``SEQ`` is
the host's sequence number, echoed in the reply; the CRC is
:func:`crc16` (CRC-16/CCITT-FALSE) over ``CODE .. PAYLOAD``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

#: First byte of a request and of a reply.
REQUEST_SYNC, REPLY_SYNC = 0xA5, 0x5A
#: Bytes before the payload (SYNC, CODE, SEQ, LEN) and after it (CRC).
HEADER_BYTES, TRAILER_BYTES = 5, 2
#: The longest payload a device takes or sends.
MAX_PAYLOAD = 1024
#: The protocol's version, the first byte of IDENTIFY's reply.
VERSION = 2


class Command(IntEnum):
    """Request codes (``docs/protocol.md`` gives every payload)."""

    IDENTIFY = 0x01        #: -> the protocol version and the core's capabilities (:class:`Identity`)
    SOFT_RESET = 0x02      #: the core's RESET: the start of a sequence
    CLEAR = 0x03           #: the core's CLEAR: every memory and register zeroed
    WRITE_REGS = 0x04      #: ``(addr u16, value u32)`` pairs -> registers
    BURST_WRITE = 0x05     #: ``region u8, offset u32, values i16...`` -> memory; reply: CRC of what was written
    STEP = 0x06            #: ``(index u16, delta i16)`` pairs, then one time step -> its outputs (i16 each), cycles u32
    READ_OUTPUTS = 0x07    #: -> the last step's reply again (after a lost reply)
    READ_COUNTERS = 0x08   #: -> cycles u64, steps u64, last step's cycles u32, errors u32


class Status(IntEnum):
    """Reply codes: :data:`OK`, or why the command was not (or not wholly) run."""

    OK = 0x00
    BAD_CRC = 0x01           #: the request's CRC did not match: nothing was run
    UNKNOWN_COMMAND = 0x02
    BAD_LENGTH = 0x03        #: a payload too long, or not a whole number of its items
    OUT_OF_RANGE = 0x04      #: a register value, a delta index or value the core refused
    TOO_BIG = 0x05           #: a burst beyond the memory: the model is too big for this build
    NO_MODEL = 0x06          #: STEP before a model is loaded (``LAYERS`` or ``HIDDEN`` 0)
    BUSY = 0x07              #: a request arrived before the last one's reply was sent


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def encode(sync: int, code: int, seq: int, payload: bytes = b"") -> bytes:
    """One frame."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a payload of {len(payload)} bytes is longer than the protocol's {MAX_PAYLOAD}")
    body = struct.pack("<BBH", code, seq & 0xFF, len(payload)) + payload
    return bytes([sync]) + body + struct.pack("<H", crc16(body))


def request(command: Command, seq: int, payload: bytes = b"") -> bytes:
    return encode(REQUEST_SYNC, command, seq, payload)


def reply(status: Status, seq: int, payload: bytes = b"") -> bytes:
    return encode(REPLY_SYNC, status, seq, payload)


@dataclass(frozen=True)
class Frame:
    code: int
    seq: int
    payload: bytes


class FrameParser:
    """Frames out of a byte stream, resynchronising after garbage, truncation or corruption.

    Bytes before a ``sync`` byte are skipped; a frame whose length exceeds
    :data:`MAX_PAYLOAD` or whose CRC does not match is dropped and the
    search for ``sync`` starts again from the byte after the false start, so
    a good frame that follows garbage (even garbage holding a ``sync`` byte)
    is found. A frame cut short is only known as such when no more bytes
    come: the reader calls :meth:`expire` after its timeout. :attr:`dropped`
    counts the bytes skipped, :attr:`bad_crc` the frames dropped for their CRC.
    """

    def __init__(self, sync: int):
        self.sync = sync
        self.buffer = bytearray()
        self.dropped = 0
        self.bad_crc = 0

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the whole frames now found, in order."""
        self.buffer += data
        frames = []
        while True:
            start = self.buffer.find(self.sync)
            if start < 0:
                self.dropped += len(self.buffer)
                self.buffer.clear()
                return frames
            if start:
                self.dropped += start
                del self.buffer[:start]
            if len(self.buffer) < HEADER_BYTES:
                return frames
            code, seq, length = struct.unpack_from("<BBH", self.buffer, 1)
            if length > MAX_PAYLOAD:
                self.dropped += 1
                del self.buffer[:1]
                continue
            end = HEADER_BYTES + length + TRAILER_BYTES
            if len(self.buffer) < end:
                return frames
            body = bytes(self.buffer[1:HEADER_BYTES + length])
            (crc,) = struct.unpack_from("<H", self.buffer, HEADER_BYTES + length)
            if crc != crc16(body):
                self.bad_crc += 1
                self.dropped += 1
                del self.buffer[:1]
                continue
            frames.append(Frame(code, seq, body[HEADER_BYTES - 1:]))
            del self.buffer[:end]

    def expire(self) -> list[Frame]:
        """No byte came for a while: the frame begun in the buffer was truncated. Drop its sync byte
        and look for frames in the rest (the device does the same after its inter-byte timeout)."""
        if not self.buffer:
            return []
        self.dropped += 1
        del self.buffer[:1]
        return self.feed(b"")


# --- payloads ---------------------------------------------------------------------------------------

#: IDENTIFY's reply: version, cell code, lanes, maxima, widths, weight words, clock and baud rate, longest payload.
IDENTITY_FORMAT = "<BBHHHBHBBBBIIIHB"


@dataclass(frozen=True)
class Identity:
    """What a device reports to IDENTIFY: enough to refuse a model before sending it."""

    version: int
    cell: int            #: :data:`deltarnn.spec.memory_map.CELL_CODES`
    lanes: int
    max_input: int
    max_hidden: int
    max_layers: int
    max_classes: int
    wmem_bits: int
    max_wbits: int
    abits: int
    acc_bits: int
    weight_words: int
    clock_hz: int
    baud: int
    max_payload: int     #: the longest request payload the device takes
    engine_lanes: int    #: neurons the cell engine updates at once (the memory map's word width)

    def pack(self) -> bytes:
        return struct.pack(IDENTITY_FORMAT, *(getattr(self, f) for f in self.__dataclass_fields__))

    @classmethod
    def unpack(cls, payload: bytes) -> Identity:
        if len(payload) != struct.calcsize(IDENTITY_FORMAT):
            raise ValueError(f"an IDENTIFY reply holds {struct.calcsize(IDENTITY_FORMAT)} bytes, not {len(payload)}")
        return cls(*struct.unpack(IDENTITY_FORMAT, payload))


def write_regs_payload(pairs) -> bytes:
    """WRITE_REGS: ``(register address, value)`` pairs."""
    return b"".join(struct.pack("<HI", a, v & 0xFFFFFFFF) for a, v in pairs)


def burst_payload(region: int, offset: int, values) -> bytes:
    """BURST_WRITE: ``values`` (each fits 16 bits, signed or not) from element ``offset`` of ``region``."""
    return struct.pack("<BI", region, offset) + b"".join(struct.pack("<H", v & 0xFFFF) for v in values)


def step_payload(deltas) -> bytes:
    """STEP: the layer-0 ``(index, delta)`` pairs of one time step."""
    return b"".join(struct.pack("<Hh", j, d) for j, d in deltas)


def unpack_step(payload: bytes) -> tuple[list[int], int]:
    """STEP's and READ_OUTPUTS' reply: the signed 16-bit outputs, and the step's cycles (u32)."""
    if len(payload) % 2 or len(payload) < 4:
        raise ValueError(f"a step's reply is 2 bytes per output and 4 of cycles; {len(payload)} bytes is not")
    n = len(payload) // 2 - 2
    return list(struct.unpack_from(f"<{n}h", payload)), struct.unpack_from("<I", payload, 2 * n)[0]


#: READ_COUNTERS' reply.
COUNTERS_FORMAT = "<QQII"


def unpack_counters(payload: bytes) -> dict:
    cycles, steps, step_cycles, errors = struct.unpack(COUNTERS_FORMAT, payload)
    return {"cycles": cycles, "steps": steps, "step_cycles": step_cycles, "errors": errors}
