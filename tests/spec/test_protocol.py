"""The serial protocol's frames (deltarnn.spec.protocol): encoding, CRC, and resynchronisation."""

import numpy as np
import pytest

from deltarnn.spec import protocol as P


def test_crc16_is_ccitt_false():
    assert P.crc16(b"123456789") == 0x29B1          # the catalogued check value of CRC-16/CCITT-FALSE
    assert P.crc16(b"") == 0xFFFF


def test_frame_layout():
    f = P.request(P.Command.STEP, 0x1FF, P.step_payload([(3, -2), (7, 100)]))
    assert f[0] == P.REQUEST_SYNC and f[1] == P.Command.STEP and f[2] == 0xFF
    assert int.from_bytes(f[3:5], "little") == 8 and len(f) == P.HEADER_BYTES + 8 + P.TRAILER_BYTES
    assert int.from_bytes(f[-2:], "little") == P.crc16(f[1:-2])
    with pytest.raises(ValueError, match="longer than the protocol's 1024"):
        P.request(P.Command.BURST_WRITE, 0, bytes(P.MAX_PAYLOAD + 1))


def _frames(rng, n):
    return [P.Frame(int(rng.integers(0, 256)), int(rng.integers(0, 256)),
                    bytes(rng.integers(0, 256, int(rng.integers(0, 40))).tolist())) for _ in range(n)]


def test_parser_finds_every_frame_in_any_chunking():
    rng = np.random.default_rng(0)
    frames = _frames(rng, 30)
    stream = b"".join(P.reply(f.code, f.seq, f.payload) for f in frames)
    parser = P.FrameParser(P.REPLY_SYNC)
    got = []
    i = 0
    while i < len(stream):
        n = int(rng.integers(1, 20))
        got += parser.feed(stream[i:i + n])
        i += n
    assert got == frames and parser.dropped == 0


def test_parser_resynchronises_after_garbage_and_corruption():
    rng = np.random.default_rng(1)
    good = _frames(rng, 3)
    wire = [P.request(f.code, f.seq, f.payload) for f in good]
    corrupt = bytearray(P.request(0x06, 9, b"abcdef"))
    corrupt[7] ^= 0x10
    garbage = bytes([0x00, P.REQUEST_SYNC, 0x01, 0x02, 0xFF, 0x13, P.REQUEST_SYNC])   # false starts
    parser = P.FrameParser(P.REQUEST_SYNC)
    got = parser.feed(garbage + wire[0] + bytes(corrupt) + wire[1])
    got += parser.feed(wire[2][:4])       # truncated: the rest never comes ...
    got += parser.expire()
    got += parser.feed(wire[2])           # ... and the next frame is found
    assert got == [good[0], good[1], good[2]]
    assert parser.bad_crc >= 1


def test_every_single_bit_error_is_caught():
    frame = P.request(P.Command.WRITE_REGS, 5, P.write_regs_payload([(0x2, 128), (0x211, 7)]))
    for bit in range(8, 8 * len(frame)):          # any bit after the sync byte
        bad = bytearray(frame)
        bad[bit // 8] ^= 1 << (bit % 8)
        parser = P.FrameParser(P.REQUEST_SYNC)
        assert parser.feed(bytes(bad)) + parser.expire() == []


def test_payload_helpers():
    ident = P.Identity(P.VERSION, 1, 32, 40, 256, 2, 40, 4, 16, 8, 24, 19904, 48_000_000, 3_000_000, 1024, 4)
    assert P.Identity.unpack(ident.pack()) == ident
    with pytest.raises(ValueError, match="holds"):
        P.Identity.unpack(ident.pack()[:-1])
    assert P.unpack_step(bytes([7, 0, 0, 0])) == ([], 7)
    assert P.unpack_step(bytes([0xFF, 0xFF, 0x01, 0x00, 0, 0, 1, 0])) == ([-1, 1], 1 << 16)
    for bad in (b"\x01", b"\x01\x00", b"\x00" * 5):
        with pytest.raises(ValueError, match="is not"):
            P.unpack_step(bad)
    burst = P.burst_payload(1, 70000, [-1, 5, 0x7FFF])
    assert burst[0] == 1 and int.from_bytes(burst[1:5], "little") == 70000 and burst[5:7] == b"\xff\xff"
    c = P.unpack_counters((1 << 40).to_bytes(8, "little") + (3).to_bytes(8, "little") + bytes([9, 0, 0, 0, 4, 0, 0, 0]))
    assert c == {"cycles": 1 << 40, "steps": 3, "step_cycles": 9, "errors": 4}
