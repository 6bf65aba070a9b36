"""deltarnn.hw.executor: the protocol end to end in the Amaranth simulator, bytes in and bytes out.

A model is loaded with CLEAR, WRITE_REGS and BURST_WRITE, run with STEP frames
and compared with the golden model; every error status is provoked once.
"""

from dataclasses import replace

import pytest
from amaranth.sim import Simulator

from deltarnn.device.image import input_deltas, pack
from deltarnn.hw.engine import WIDE_LANES
from deltarnn.hw.executor import Link, identity
from deltarnn.quant.golden import emulate
from deltarnn.quant.quantizer import quantize
from deltarnn.spec import protocol as P
from deltarnn.spec.memory_map import DeviceParams, Reg, Region

from tests.helpers import random_input, random_model

PARAMS = DeviceParams("gru", lanes=4, max_input=8, max_hidden=12, max_layers=2, max_classes=4, wmem_bits=8,
                      abits=8, acc_bits=32)
#: above WIDE_LANES lanes the executor's commands reach the core through a register (StreamRegister)
WIDE = replace(PARAMS, lanes=WIDE_LANES * 2)
CLOCK, BAUD = 12_000_000, 1_000_000


def converse(requests: list[bytes], max_cycles: int = 3_000_000, params: DeviceParams = PARAMS) -> list[P.Frame]:
    """Send each request, wait for its reply; return the replies."""
    dut = Link(params, CLOCK, BAUD, max_payload=1024, timeout=200)
    parser = P.FrameParser(P.REPLY_SYNC)
    replies = []

    async def tb(ctx):
        ctx.set(dut.tx.ready, 1)
        for req in requests:
            for b in req:
                ctx.set(dut.rx.payload, b)
                ctx.set(dut.rx.valid, 1)
                await ctx.tick()
            ctx.set(dut.rx.valid, 0)
            want = len(replies) + 1
            for _ in range(max_cycles):
                if ctx.get(dut.tx.valid):
                    replies.extend(parser.feed(bytes([ctx.get(dut.tx.payload)])))
                await ctx.tick()
                if len(replies) == want:
                    break
            else:
                raise TimeoutError(f"no reply to request {want - 1}")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return replies


def load_requests(qm, seq0=10, params: DeviceParams = PARAMS):
    """CLEAR, the registers, and every memory in bursts of whole words; the CRC each burst should answer."""
    img = pack(qm, params)
    reqs = [P.request(P.Command.CLEAR, seq0)]
    pairs = sorted(img.regs.items())
    for i in range(0, len(pairs), 100):
        reqs.append(P.request(P.Command.WRITE_REGS, seq0 + 1, P.write_regs_payload(pairs[i:i + 100])))
    crcs = []
    for region, values, bits in ((Region.WEIGHT, img.weights.reshape(-1), params.wmem_bits),
                                 (Region.MULT, img.mult, 15), (Region.VEC, img.vec, 16)):
        for i in range(0, len(values), 500):
            chunk = [int(v) for v in values[i:i + 500]]
            reqs.append(P.request(P.Command.BURST_WRITE, seq0 + 2, P.burst_payload(region, i, chunk)))
            crcs.append(P.crc16(b"".join(((v & ((1 << bits) - 1)) & 0xFFFF).to_bytes(2, "little") for v in chunk)))
    return reqs, crcs


@pytest.mark.parametrize("params", [PARAMS, WIDE], ids=["narrow", "wide"])
def test_a_model_runs_over_the_protocol(params):
    qm = quantize(random_model("gru", 6, 10, 2, False, 3, seed=1), random_input(4, 20, 6, seed=2), 6, 8)
    qm.set_thresholds(1, 1)
    x = random_input(1, 3, 6, seed=3)
    gold = emulate(qm, x).outputs_fx[0]
    load, crcs = load_requests(qm, params=params)
    steps = [P.request(P.Command.STEP, 40 + t, P.step_payload(d)) for t, d in enumerate(input_deltas(qm, x[0]))]
    replies = converse([P.request(P.Command.IDENTIFY, 1)] + load + [P.request(P.Command.SOFT_RESET, 30)] + steps
                       + [P.request(P.Command.READ_OUTPUTS, 50), P.request(P.Command.READ_COUNTERS, 51)],
                       params=params)
    assert all(r.code == P.Status.OK for r in replies), [(r.code, r.seq) for r in replies]
    assert P.Identity.unpack(replies[0].payload) == identity(params, CLOCK, BAUD, 1024)
    bursts = [r for r in replies if r.seq == 12]
    assert [int.from_bytes(r.payload, "little") for r in bursts] == crcs
    steps = [P.unpack_step(r.payload) for r in replies if 40 <= r.seq < 50]
    assert [outputs for outputs, _ in steps] == [list(v) for v in gold]
    assert P.unpack_step(replies[-2].payload) == steps[-1]
    counters = P.unpack_counters(replies[-1].payload)
    assert steps[-1][1] == counters["step_cycles"] and all(cycles > 0 for _, cycles in steps)
    assert counters["steps"] == len(steps) and counters["errors"] == 0 and counters["cycles"] > counters["step_cycles"] > 0


def test_every_error_has_its_status():
    qm = quantize(random_model("gru", 6, 10, 1, False, 3, seed=4), random_input(4, 20, 6, seed=5), 6, 8)
    load, _ = load_requests(qm)
    corrupt = bytearray(P.request(P.Command.SOFT_RESET, 7))
    corrupt[-1] ^= 0xFF
    reg = Reg.HIDDEN
    cases = [
        (P.request(P.Command.STEP, 1, P.step_payload([(0, 1)])), P.Status.NO_MODEL),
        (bytes(corrupt), P.Status.BAD_CRC),
        (P.request(0x7E, 2), P.Status.UNKNOWN_COMMAND),
        (P.request(P.Command.WRITE_REGS, 3, b"\x00" * 5), P.Status.BAD_LENGTH),
        (P.request(P.Command.WRITE_REGS, 4, P.write_regs_payload([(reg, PARAMS.max_hidden + 1)])),
         P.Status.OUT_OF_RANGE),
        (P.request(P.Command.BURST_WRITE, 5, P.burst_payload(Region.VEC, PARAMS.vec_depth - 1, [1, 2])),
         P.Status.TOO_BIG),
        (P.request(P.Command.BURST_WRITE, 6, b"\x01\x00"), P.Status.BAD_LENGTH),
    ]
    after = [(P.request(P.Command.STEP, 8, P.step_payload([(6, 1)])), P.Status.OUT_OF_RANGE),
             (P.request(P.Command.STEP, 9, b"\x00" * 3), P.Status.BAD_LENGTH)]
    replies = converse([c for c, _ in cases] + load + [P.request(P.Command.SOFT_RESET, 60)] + [c for c, _ in after])
    got = [r.code for r in replies]
    n = len(cases)
    assert got[:n] == [s for _, s in cases]
    assert replies[1].seq == 7                                       # a bad CRC still names the request
    assert all(s == P.Status.OK for s in got[n:-len(after)])
    assert got[-len(after):] == [s for _, s in after]
