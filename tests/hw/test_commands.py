"""Commands a host may get wrong: the core refuses them, flags them in ERRORS, and never stops taking commands.

Every case runs the core in the Amaranth simulator with
:func:`deltarnn.hw.drive.run_commands`, which fails with ``TimeoutError`` if
the core does not come back to take the next command (a hang).
"""

import numpy as np
from amaranth.sim import Simulator

from deltarnn.device.image import input_deltas, pack
from deltarnn.hw.core import Core
from deltarnn.hw.cycles import model_step_cycles
from deltarnn.hw.drive import run_commands
from deltarnn.quant.golden import emulate
from deltarnn.quant.quantizer import quantize
from deltarnn.spec.memory_map import DeviceParams, Error, Op, Reg, Region, addr

from tests.helpers import random_input, random_model

PARAMS = DeviceParams("gru", lanes=4, max_input=8, max_hidden=12, max_layers=2, max_classes=4, wmem_bits=8,
                      abits=8, acc_bits=32)
READ_ERRORS = (Op.READ, addr(Region.REG, Reg.ERRORS), 0)
CLEAR_ERRORS = (Op.WRITE, addr(Region.REG, Reg.ERRORS), 0)


def _model(seed, theta=0):
    qm = quantize(random_model("gru", 6, 10, 2, False, 3, seed=seed), random_input(4, 20, 6, seed=seed + 1), 6, 8)
    qm.set_thresholds(theta, theta)
    return qm


def _load(qm, every_word=False):
    return [(Op.WRITE, a, d) for a, d in pack(qm, PARAMS).writes(every_word=every_word)]


def _step(deltas):
    return [(Op.DELTA, j, d) for j, d in deltas] + [(Op.STEP, 0, 0)]


def test_step_without_a_model_is_refused():
    """STEP at power-up (LAYERS = 0) once hung the core; so did a STEP after DELTAs with HIDDEN = 0."""
    reg = lambda a, v: (Op.WRITE, addr(Region.REG, a), v)   # noqa: E731
    replies = run_commands(Core(PARAMS), [
        (Op.STEP, 0, 0), READ_ERRORS, CLEAR_ERRORS,
        reg(Reg.LAYERS, 1), reg(Reg.INPUT, 4), (Op.DELTA, 1, 3), (Op.STEP, 0, 0), READ_ERRORS])
    assert replies[0] == [] and replies[1] == [Error.NO_MODEL]
    assert replies[6] == [] and replies[7] == [Error.NO_MODEL]


def test_refused_deltas_leave_the_step_exact():
    """A DELTA beyond INPUT, one too wide for the core's deltas, and one beyond the buffer are refused;
    the step runs on the others, equal to the golden model."""
    qm = _model(3)
    x = random_input(1, 2, 6, seed=4)
    steps = input_deltas(qm, x[0])
    gold = emulate(qm, x).outputs_fx[0]
    bad = [(Op.DELTA, 6, 1), (Op.DELTA, 1 << 20, 1), (Op.DELTA, 0, 1 << 9), (Op.DELTA, 0, -(1 << 9) - 1)]
    replies = run_commands(Core(PARAMS), _load(qm) + [(Op.RESET, 0, 0)] + bad + [READ_ERRORS, CLEAR_ERRORS]
                           + _step(steps[0]) + _step(steps[1]) + [READ_ERRORS])
    n = len(_load(qm)) + 1 + len(bad)
    assert replies[n] == [Error.BAD_INDEX | Error.BAD_VALUE]
    outputs = [r for r in replies[n + 2:] if r]
    assert outputs[:2] == [list(gold[0]), list(gold[1])] and outputs[2] == [0]
    # a full buffer: PARAMS.dbuf_depth deltas fit, the next is refused
    fill = [(Op.DELTA, 0, 1)] * (PARAMS.dbuf_depth + 1)
    replies = run_commands(Core(PARAMS), _load(qm) + [(Op.RESET, 0, 0)] + fill + [READ_ERRORS])
    assert replies[-1] == [Error.OVERFLOW]


def test_unknown_opcodes_and_addresses_are_refused():
    replies = run_commands(Core(PARAMS), [
        (6, 0, 0), (7, 0, 0), READ_ERRORS, CLEAR_ERRORS,
        (Op.WRITE, addr(Region.VEC, PARAMS.vec_depth), 1), (Op.WRITE, (7 << 24), 1), READ_ERRORS, CLEAR_ERRORS,
        (Op.WRITE, addr(Region.WEIGHT, PARAMS.weight_depth * PARAMS.lanes), 1),
        (Op.WRITE, addr(Region.MULT, PARAMS.acc_depth * PARAMS.lanes), 1), READ_ERRORS,
        (Op.READ, addr(Region.REG, Reg.ID_LANES), 0)])
    assert replies[2] == [Error.BAD_OP] and replies[6] == [Error.BAD_ADDR] and replies[10] == [Error.BAD_ADDR]
    assert replies[11] == [PARAMS.lanes]


def test_clear_leaves_no_word_of_the_previous_model():
    """Load model A, then model B by its non-zero words only: without CLEAR, A's words survive where B's
    are zero (the outputs differ from B's golden model); after CLEAR they equal it."""
    a, b = _model(5), _model(7)
    x = random_input(1, 3, 6, seed=8)
    want = [list(v) for v in emulate(b, x).outputs_fx[0]]
    run = [(Op.RESET, 0, 0)] + [c for s in input_deltas(b, x[0]) for c in _step(s)]
    stale = [r for r in run_commands(Core(PARAMS), _load(a, every_word=True) + _load(b) + run) if r]
    fresh = [r for r in run_commands(Core(PARAMS), _load(a, every_word=True) + [(Op.CLEAR, 0, 0)] + _load(b) + run)
             if r]
    assert fresh == want and stale != want
    # CLEAR zeroes the registers too, and the errors
    replies = run_commands(Core(PARAMS), _load(a) + [(6, 0, 0), (Op.CLEAR, 0, 0), READ_ERRORS,
                                                     (Op.READ, addr(Region.REG, Reg.HIDDEN), 0)])
    assert replies[-2:] == [[0], [0]]


def test_cycle_counter_does_not_wrap_at_32_bits():
    core = Core(PARAMS)
    got = {}

    async def tb(ctx):
        ctx.set(core.rsp.ready, 1)
        await ctx.tick()
        ctx.set(core.registers.cycles, (1 << 32) - 3)
        for _ in range(10):
            await ctx.tick()
        for name in ("CYCLES", "CYCLES_HI"):
            ctx.set(core.cmd.payload, {"op": Op.READ, "addr": addr(Region.REG, Reg[name]), "data": 0})
            ctx.set(core.cmd.valid, 1)
            await ctx.tick()
            ctx.set(core.cmd.valid, 0)
            for _ in range(5):           # the response, a cycle or two after the command
                if ctx.get(core.rsp.valid):
                    break
                await ctx.tick()
            got[name] = ctx.get(core.rsp.payload)
            await ctx.tick()

    sim = Simulator(core)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert got["CYCLES_HI"] == 1 and got["CYCLES"] < 20


def test_threshold_beyond_the_widest_delta_suppresses_every_delta():
    """A 9-bit delta core once cut a threshold of 600 to its low 9 bits (88), sending deltas the golden
    model suppresses."""
    from deltarnn.hw.drive import run_core

    qm = _model(9, theta=600)
    x = random_input(1, 4, 6, seed=10, scale=2.0)
    run = run_core(Core(PARAMS, **pack(qm, PARAMS).core_init()), input_deltas(qm, x[0]), qm.output_size)
    gold = emulate(qm, x)
    np.testing.assert_array_equal(run.outputs, gold.outputs_fx[0])
    assert gold.stats.paths["0.h"].deltas == 0
    assert run.step_cycles == model_step_cycles(qm, PARAMS, gold.step_deltas)     # no delta on any inner path
