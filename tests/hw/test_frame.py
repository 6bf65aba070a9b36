# amaranth: UnusedElaboratable=no
"""deltarnn.hw.frame: the CRC against the protocol's, and the receiver against garbage, corruption,
over-long lengths, truncation and bytes that arrive while a frame is held."""

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from deltarnn.hw.frame import FrameReceiver, crc16_byte
from deltarnn.spec import protocol as P


def test_crc_step_is_the_protocols():
    rng = np.random.default_rng(0)
    data = bytes(rng.integers(0, 256, 64).tolist())
    m = Module()
    crc, byte = Signal(16), Signal(8)
    nxt = Signal(16)
    m.d.comb += nxt.eq(crc16_byte(crc, byte))
    got = []

    async def tb(ctx):
        value = 0xFFFF
        for b in data:
            ctx.set(crc, value)
            ctx.set(byte, b)
            await ctx.delay(1e-9)
            value = ctx.get(nxt)
            got.append(value)

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    assert got == [P.crc16(data[:i + 1]) for i in range(len(data))]


def _receive(stream_bytes, timeout=50, gap=1, hold_cycles=0):
    """Feed ``stream_bytes`` (``None`` = a pause of ``timeout + 5`` cycles) one every ``gap`` cycles, while a
    second testbench takes each frame (reading its payload, then holding it ``hold_cycles`` more cycles);
    return the frames taken and the abandon events."""
    dut = FrameReceiver(max_payload=64, timeout=timeout)
    frames, events = [], []
    total = len([b for b in stream_bytes if b is not None]) * gap + \
        sum(timeout + 5 for b in stream_bytes if b is None) + 40 * (timeout + hold_cycles + 70)

    async def feeder(ctx):
        for b in stream_bytes:
            if b is None:
                for _ in range(timeout + 5):
                    await ctx.tick()
                continue
            ctx.set(dut.rx.payload, b)
            ctx.set(dut.rx.valid, 1)
            await ctx.tick()
            ctx.set(dut.rx.valid, 0)
            for _ in range(gap - 1):
                await ctx.tick()

    async def taker(ctx):
        for _ in range(total):
            if ctx.get(dut.bad_length):
                events.append("bad_length")
            if ctx.get(dut.timed_out):
                events.append("timed_out")
            if ctx.get(dut.valid):
                n = ctx.get(dut.length)
                payload = []
                for i in range(n):
                    ctx.set(dut.buf_addr, i)
                    await ctx.tick()
                    payload.append(ctx.get(dut.buf_data))
                for _ in range(hold_cycles):
                    await ctx.tick()
                frames.append((ctx.get(dut.code), ctx.get(dut.seq), bytes(payload), ctx.get(dut.crc_ok)))
                ctx.set(dut.ack, 1)
                await ctx.tick()
                ctx.set(dut.ack, 0)
            else:
                await ctx.tick()
        events.append(("dropped", ctx.get(dut.dropped)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feeder)
    sim.add_testbench(taker)
    sim.run()
    return frames, events


def test_frames_are_found_checked_and_resynchronised():
    a = P.request(P.Command.STEP, 1, P.step_payload([(3, -2), (7, 100)]))
    b = bytearray(P.request(P.Command.WRITE_REGS, 2, P.write_regs_payload([(2, 128)])))
    b[6] ^= 0x04                                                     # corrupted payload
    too_long = bytes([P.REQUEST_SYNC, 0x05, 3, 0xFF, 0x00])          # LEN 255 > 64
    c = P.request(P.Command.IDENTIFY, 3)                             # no payload
    d = P.request(P.Command.CLEAR, 4, bytes(10))
    e = P.request(P.Command.READ_COUNTERS, 5)
    # the host waits for each reply: a pause after every whole frame, while the executor takes it
    wire = list(b"\x00\x13\xff") + list(a) + [None] + list(b) + [None] + list(too_long) + list(c) + [None] \
        + list(d[:7]) + [None] + list(e)
    frames, events = _receive(wire)
    assert frames == [(P.Command.STEP, 1, P.step_payload([(3, -2), (7, 100)]), 1),
                      (P.Command.WRITE_REGS, 2, bytes(b[5:-2]), 0),
                      (P.Command.IDENTIFY, 3, b"", 1), (P.Command.READ_COUNTERS, 5, b"", 1)]
    assert events[:2] == ["bad_length", "timed_out"] and events[-1] == ("dropped", 0)


@pytest.mark.parametrize("gap", [1, 3])
def test_frames_one_after_another(gap):
    """Random frames of every length, each after the previous one was taken (bytes every ``gap`` cycles)."""
    rng = np.random.default_rng(gap)
    sent = [(int(rng.integers(1, 9)), i, bytes(rng.integers(0, 256, int(rng.integers(0, 65))).tolist()))
            for i in range(12)]
    wire = [x for code, seq, pl in sent for x in list(P.request(code, seq, pl)) + [None]]
    frames, _ = _receive(wire, gap=gap, timeout=80)
    assert frames == [(code, seq, pl, 1) for code, seq, pl in sent]


def test_bytes_while_a_frame_is_held_are_dropped_and_counted():
    a, b = P.request(P.Command.IDENTIFY, 1), P.request(P.Command.IDENTIFY, 2)
    frames, events = _receive(list(a) + list(b), hold_cycles=100)
    assert [f[1] for f in frames] == [1] and events[-1] == ("dropped", len(b))


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="max_payload"):
        FrameReceiver(max_payload=P.MAX_PAYLOAD + 1)
    with pytest.raises(ValueError, match="timeout"):
        FrameReceiver(timeout=0)
