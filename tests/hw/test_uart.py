# amaranth: UnusedElaboratable=no
"""deltarnn.hw.uart: the transmitter's bit timing, the receiver against lines at off-nominal baud rates,
noise, framing errors and overruns, and a loopback."""

import numpy as np
import pytest
from amaranth import Module
from amaranth.sim import Simulator

from deltarnn.hw.uart import MIN_DIVISOR, UARTRx, UARTTx, divisor_for


def _line(data: bytes, bit_cycles: float, gap_bits=(0,), stop=1, rng=None):
    """The rx line, one value per cycle: idle, then each byte 8N1 with ``bit_cycles`` per bit."""
    levels = [1] * 20
    t = 0.0
    for i, byte in enumerate(data):
        bits = [0] + [(byte >> k) & 1 for k in range(8)] + [stop]
        gap = gap_bits[i % len(gap_bits)] if rng is None else int(rng.integers(0, 3))
        for b in bits + [1] * gap:
            t += bit_cycles
            levels += [b] * (round(t) - round(t - bit_cycles))
    return levels + [1] * int(3 * bit_cycles)


def _receive(levels, divisor, ready=1):
    dut = UARTRx(divisor)
    got, errors, overruns = [], [], []

    async def tb(ctx):
        ctx.set(dut.data.ready, ready)
        for n, v in enumerate(levels):
            ctx.set(dut.rx, v)
            if ctx.get(dut.data.valid) and ready:
                got.append(ctx.get(dut.data.payload))
            if ctx.get(dut.frame_error):
                errors.append(n)
            if ctx.get(dut.overrun):
                overruns.append(n)
            await ctx.tick()
        if not ready and ctx.get(dut.data.valid):
            got.append(ctx.get(dut.data.payload))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return got, errors, overruns


@pytest.mark.parametrize("divisor", [MIN_DIVISOR, 7, 16])
def test_transmitter_bit_timing(divisor):
    data = bytes([0x00, 0xFF, 0x55, 0xA3, 0x01, 0x80])
    dut = UARTTx(divisor)
    line = []

    async def tb(ctx):
        for byte in data:
            ctx.set(dut.data.payload, byte)
            ctx.set(dut.data.valid, 1)
            while True:
                line.append(ctx.get(dut.tx))
                ready = ctx.get(dut.data.ready)
                await ctx.tick()
                if ready:
                    break
        ctx.set(dut.data.valid, 0)
        for _ in range(12 * divisor):
            line.append(ctx.get(dut.tx))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    start = line.index(0)
    assert all(line[:start])
    want = []
    for byte in data:     # back to back: exactly 10 bits of `divisor` cycles each
        want += [0] * divisor + sum(([(byte >> k) & 1] * divisor for k in range(8)), []) + [1] * divisor
    assert line[start:start + len(want)] == want and all(line[start + len(want):])


@pytest.mark.parametrize("skew", [-0.03, 0.0, 0.03])
def test_receiver_tolerates_baud_skew(skew):
    divisor = 16
    data = bytes(np.random.default_rng(1).integers(0, 256, 40).tolist()) + b"\x00\xff"
    got, errors, overruns = _receive(_line(data, divisor * (1 + skew), rng=np.random.default_rng(2)), divisor)
    assert bytes(got) == data and not errors and not overruns


def test_receiver_ignores_glitches_and_flags_framing_errors():
    divisor = 8
    glitch = [1] * 10 + [0] * (divisor // 2 - 2) + [1] * 20
    bad = _line(b"\x5a", divisor, stop=0)
    # a frame whose stop bit is low, then a break (the line low for longer than a frame): two framing
    # errors, and the receiver takes the next bytes once the line is high again
    levels = glitch + _line(b"\x11", divisor) + bad + [0] * (12 * divisor) + _line(b"\x22\x33", divisor)
    got, errors, overruns = _receive(levels, divisor)
    assert bytes(got) == b"\x11\x22\x33" and len(errors) == 2 and not overruns


def test_receiver_overrun():
    got, errors, overruns = _receive(_line(b"\x01\x02\x03", 8), 8, ready=0)
    assert got == [3] and len(overruns) == 2 and not errors


def test_loopback():
    divisor = 5
    data = bytes(range(256))
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor)
    m.submodules.rx = rx = UARTRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got = []

    async def tb(ctx):
        ctx.set(rx.data.ready, 1)
        for byte in data:
            ctx.set(tx.data.payload, byte)
            ctx.set(tx.data.valid, 1)
            while True:
                if ctx.get(rx.data.valid):
                    got.append(ctx.get(rx.data.payload))
                ready = ctx.get(tx.data.ready)
                await ctx.tick()
                if ready:
                    break
        ctx.set(tx.data.valid, 0)
        for _ in range(12 * divisor):
            if ctx.get(rx.data.valid):
                got.append(ctx.get(rx.data.payload))
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert bytes(got) == data


def test_divisor_for():
    assert divisor_for(48e6, 3_000_000) == 16
    assert divisor_for(12e6, 115_200) == 104
    with pytest.raises(ValueError, match="at least 4 cycles per bit"):
        divisor_for(8e6, 3_000_000)
    with pytest.raises(ValueError, match="off with 5 cycles per bit"):
        divisor_for(12e6, 2_200_000)
    with pytest.raises(ValueError, match="at least 4"):
        UARTRx(3)
