"""The board top's serial lines against an independent UART: cocotbext-uart's source and sink under cocotb.

The simulated board (``tests/sim/test_board.py``) drives the board's lines with its own C++ UART; here the
other end is cocotbext-uart's model, so the two UARTs of the project are checked against a third party's.
"""

from __future__ import annotations

import json
import os

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, with_timeout

from deltarnn.spec import protocol as P
from deltarnn.spec.memory_map import DeviceParams

THIS_FILE = os.path.abspath(__file__)
PARAMS = DeviceParams("sru", lanes=2, max_input=8, max_hidden=8, max_layers=1, max_classes=2, wmem_bits=4,
                      abits=8, acc_bits=24)
CLOCK_HZ, BAUD = 10_000_000, 1_000_000        # 100 ns clock, 1 us bits: whole nanoseconds for the UART model


def test_the_board_speaks_8n1_to_cocotbext_uart():
    from deltarnn.hw.top import BoardTop
    from deltarnn.sim.runner import check_results, run_component

    results = run_component(BoardTop(PARAMS, CLOCK_HZ, BAUD), THIS_FILE, toplevel="board",
                            build_key={"params": PARAMS.as_dict(), "clock": CLOCK_HZ, "baud": BAUD},
                            extra_env={"BOARD_TB_PARAMS": json.dumps(PARAMS.as_dict())})
    assert check_results(results) == (1, 0)


async def _reply(sink, parser):
    while True:
        frames = parser.feed(bytes(await sink.read(1)))
        if frames:
            return frames[0]


@cocotb.test()
async def board_answers_over_its_uart(dut):
    from cocotbext.uart import UartSink, UartSource

    from deltarnn.hw.executor import identity

    params = DeviceParams(**json.loads(os.environ["BOARD_TB_PARAMS"]))
    cocotb.start_soon(Clock(dut.clk, 1e9 / CLOCK_HZ, unit="ns").start())
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    source, sink = UartSource(dut.rx, baud=BAUD, bits=8), UartSink(dut.tx, baud=BAUD, bits=8)
    parser = P.FrameParser(P.REPLY_SYNC)

    async def converse(data: bytes) -> P.Frame:
        await source.write(data)
        return await with_timeout(_reply(sink, parser), 5, "ms")

    frame = await converse(P.request(P.Command.IDENTIFY, 9))
    assert (frame.code, frame.seq) == (P.Status.OK, 9)
    assert P.Identity.unpack(frame.payload) == identity(params, CLOCK_HZ, BAUD)
    bad = bytearray(P.request(P.Command.CLEAR, 10))
    bad[-1] ^= 0x80
    frame = await converse(bytes(bad))
    assert (frame.code, frame.seq) == (P.Status.BAD_CRC, 10)
    frame = await converse(b"\x00\x11\xff" + P.request(P.Command.READ_COUNTERS, 11))   # garbage first
    assert (frame.code, frame.seq) == (P.Status.OK, 11)
    assert P.unpack_counters(frame.payload)["steps"] == 0


if __name__ == "__main__":
    pytest.main([THIS_FILE])
