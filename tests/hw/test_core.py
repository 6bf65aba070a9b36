"""The whole core in the Amaranth simulator against the golden model, bit for bit.

Every output of every time step equals the golden model's integers, and the
STEP_CYCLES register equals the cycle model, step by step.
"""


import numpy as np
import pytest

from deltarnn.hw.core import COLLISION_FREE, Core
from deltarnn.hw.cycles import model_step_cycles
from deltarnn.hw.drive import run_core
from deltarnn.spec.memory_map import DeviceParams, Reg
from deltarnn.device.image import DeviceFitError, input_deltas, pack
from deltarnn.quant.golden import emulate
from deltarnn.quant.quantizer import quantize
from tests.helpers import random_input, random_model

from tests.conftest import FULL

PARAMS = dict(lanes=4, max_input=16, max_hidden=40, max_layers=3, max_classes=8, wmem_bits=16, abits=16,
              acc_bits=48)

# (cell, input, hidden, layers, classes, wbits, abits, skip, theta, steps)
CASES = [
    ("lstm", 13, 37, 2, 5, 4, 8, ["1.h"], 0, 4),
    ("gru", 13, 37, 3, 0, 2, 6, ["0.x"], 2, 4),
    ("ligru", 13, 37, 2, 5, 8, 8, ["head.x"], 0, 4),
    ("sru", 13, 37, 3, 5, 4, 8, ["1.x"], 1, 4),
    ("sru", 9, 9, 2, 0, 4, 8, [], 0, 4),            # identity highway in every layer
]
if FULL:
    CASES += [
        ("lstm", 13, 37, 3, 0, 2, 4, ["0.x", "2.h"], 3, 12),
        ("gru", 13, 37, 2, 7, 8, 8, ["head.x", "1.h"], 0, 12),
        ("ligru", 13, 37, 3, 0, 4, 6, ["2.x"], 2, 12),
        ("sru", 16, 16, 3, 7, 8, 8, ["0.x"], 4, 12),
    ]


def _run(cell, n_in, hidden, layers, classes, wbits, abits, skip, theta, steps, lanes=4, seed=0):
    model = random_model(cell, n_in, hidden, layers, False, classes, seed=seed)
    x = np.repeat(random_input(1, (steps + 1) // 2, n_in, seed=seed + 1), 2, axis=1)[:, :steps]  # some repeats
    qm = quantize(model, random_input(4, 20, n_in, seed=seed + 2), wbits, abits, skip=skip)
    qm.set_thresholds(theta, theta)
    params = DeviceParams(cell, **{**PARAMS, "lanes": lanes})
    gold = emulate(qm, x)
    run = run_core(Core(params, **pack(qm, params).core_init()), input_deltas(qm, x[0]), qm.output_size)
    return qm, gold, run


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}x{c[2]}x{c[3]}-w{c[5]}a{c[6]}-t{c[8]}")
def test_core_equals_golden_and_cycle_model(case):
    qm, gold, run = _run(*case)
    np.testing.assert_array_equal(run.outputs, gold.outputs_fx[0])
    assert run.step_cycles == model_step_cycles(qm, DeviceParams(qm.cell, **PARAMS), gold.step_deltas)


@pytest.mark.parametrize("lanes", [1, 8])
def test_lane_counts(lanes):
    qm, gold, run = _run("gru", 6, 11, 2, 3, 4, 8, [], 1, 3, lanes=lanes, seed=5)
    np.testing.assert_array_equal(run.outputs, gold.outputs_fx[0])
    assert run.step_cycles == model_step_cycles(qm, DeviceParams(qm.cell, **{**PARAMS, "lanes": lanes}), gold.step_deltas)


# (cell, lanes, engine lanes, hidden, classes): the engine on E neurons at once, its encodes scanned (P = 4) or fed
# by the update (P = 8, 16), with a head and without
ENGINE_CASES = [("gru", 4, 2, 12, 3), ("lstm", 8, 4, 12, 3), ("ligru", 16, 4, 24, 5), ("gru", 16, 4, 20, 0),
                ("gru", 16, 8, 16, 3), ("lstm", 32, 8, 24, 0)]


@pytest.mark.parametrize("cell, lanes, engine_lanes, hidden, classes", ENGINE_CASES,
                         ids=[f"{c[0]}-P{c[1]}-E{c[2]}" for c in ENGINE_CASES])
def test_engine_lanes(cell, lanes, engine_lanes, hidden, classes):
    model = random_model(cell, 7, hidden, 2, False, classes, seed=1)
    x = np.repeat(random_input(1, 3, 7, seed=2), 2, axis=1)
    qm = quantize(model, random_input(4, 20, 7, seed=3), 4, 8)
    qm.set_thresholds(1, 1)
    params = DeviceParams(cell, **{**PARAMS, "lanes": lanes, "engine_lanes": engine_lanes})
    gold = emulate(qm, x)
    run = run_core(Core(params, **pack(qm, params).core_init()), input_deltas(qm, x[0]), qm.output_size)
    np.testing.assert_array_equal(run.outputs, gold.outputs_fx[0])
    assert run.step_cycles == model_step_cycles(qm, params, gold.step_deltas)
    narrow = model_step_cycles(qm, DeviceParams(cell, **{**PARAMS, "lanes": lanes, "engine_lanes": 1}),
                               gold.step_deltas)
    assert all(w < n for w, n in zip(run.step_cycles, narrow))


@pytest.mark.parametrize("lanes, bank_words", [(8, 16), (16, 8)])
def test_banked_weights(lanes, bank_words):
    """A wide core's weight memory in banks, each registered before the bank is selected (the last one shorter):
    bit- and cycle-exact, loaded by the host's WRITE commands."""
    model = random_model("gru", 7, 12, 2, False, 3, seed=6)
    x = np.repeat(random_input(1, 3, 7, seed=7), 2, axis=1)
    qm = quantize(model, random_input(4, 20, 7, seed=8), 4, 8)
    qm.set_thresholds(1, 1)
    params = DeviceParams("gru", **{**PARAMS, "lanes": lanes})
    core = Core(params, bank_words=bank_words)
    assert core.weight_banks == -(-params.weight_depth // bank_words) > 3
    assert Core(DeviceParams("gru", **PARAMS)).weight_banks == 0        # 4 lanes: one memory
    gold = emulate(qm, x)
    run = run_core(core, input_deltas(qm, x[0]), qm.output_size, writes=pack(qm, params).writes())
    np.testing.assert_array_equal(run.outputs, gold.outputs_fx[0])
    assert run.step_cycles == model_step_cycles(qm, params, gold.step_deltas)


def test_a_hidden_size_the_engine_lanes_do_not_divide_is_refused():
    params = DeviceParams("gru", **{**PARAMS, "lanes": 8, "engine_lanes": 4})
    qm = quantize(random_model("gru", 5, 6, 1, False, 0), random_input(2, 4, 5), 4, 8)
    with pytest.raises(DeviceFitError, match="hidden size 6 is not a multiple of the 4 neurons.*--for"):
        pack(qm, params)


def test_loading_by_write_commands_and_counters():
    """The host path: an empty core loaded with WRITE commands; the step cycles match the cycle model (whose input is
    every path's delta count)."""
    model = random_model("lstm", 5, 6, 2, False, 3, seed=3)
    x = random_input(1, 3, 5, seed=4)
    qm = quantize(model, x, 4, 8)
    params = DeviceParams("lstm", **PARAMS)
    gold = emulate(qm, x)
    regs = [Reg.STEPS, Reg.ID_LANES]
    run = run_core(Core(params), input_deltas(qm, x[0]), qm.output_size, writes=pack(qm, params).writes(),
                   read_regs=regs)
    np.testing.assert_array_equal(run.outputs, gold.outputs_fx[0])
    assert run.step_cycles == model_step_cycles(qm, params, gold.step_deltas)
    assert run.regs[Reg.STEPS] == 3 and run.regs[Reg.ID_LANES] == params.lanes


def test_models_that_do_not_fit_are_refused():
    params = DeviceParams("gru", **PARAMS)
    qm = quantize(random_model("gru", 5, 6, 1, True, 0), random_input(2, 4, 5), 4, 8)
    with pytest.raises(DeviceFitError, match="bidirectional"):
        pack(qm, params)
    qm = quantize(random_model("lstm", 20, 50, 1, False, 0), random_input(2, 4, 20), 4, 8)
    with pytest.raises(DeviceFitError, match=r"LSTM but the core was built for GRU.*input size 20 > the core's 16"):
        pack(qm, params)
    small = DeviceParams("gru", **{**PARAMS, "wmem_bits": 4, "abits": 8})
    qm = quantize(random_model("gru", 5, 6, 1, False, 0), random_input(2, 4, 5), 4, 8, skip=["0.h"])
    with pytest.raises(DeviceFitError, match="16-bit weights > the core's widest, 4 bits.*max_wbits 16"):
        pack(qm, small)


@pytest.mark.parametrize("cell, skip, wmem_bits, wbits", [("gru", ["head.x", "0.h"], 4, 4), ("lstm", ["0.x"], 8, 8),
                                                          ("sru", ["1.x"], 4, 3)])
def test_skipped_path_runs_as_slices_of_narrow_slots(cell, skip, wmem_bits, wbits):
    """A 16-bit skipped path on a core whose slots are narrow: exact, and slower on that path only."""
    model = random_model(cell, 7, 10, 2, False, 4, seed=8)
    x = random_input(1, 4, 7, seed=9)
    qm = quantize(model, random_input(4, 20, 7, seed=10), wbits, 6, skip=skip)
    params = DeviceParams(cell, **{**PARAMS, "wmem_bits": wmem_bits, "max_wbits": 16})
    gold = emulate(qm, x)
    run = run_core(Core(params, **pack(qm, params).core_init()), input_deltas(qm, x[0]), qm.output_size)
    np.testing.assert_array_equal(run.outputs, gold.outputs_fx[0])
    assert run.step_cycles == model_step_cycles(qm, params, gold.step_deltas)
    # the same steps on 16-bit slots: the sliced paths' MxV costs (S - 1) * deltas * words more
    wide = DeviceParams(cell, **PARAMS)
    extra = [a - b for a, b in zip(run.step_cycles, model_step_cycles(qm, wide, gold.step_deltas))]
    slices = 16 // wmem_bits
    rows = {"head.x": qm.num_classes, "0.h": 3 * 10, "0.x": 4 * 10, "1.x": 3 * 10}
    want = [sum((slices - 1) * int(gold.step_deltas[p][0, t]) * -(-rows[p] // PARAMS["lanes"]) for p in skip)
            for t in range(x.shape[1])]
    assert extra == want and sum(want) > 0


# (cell, lanes, engine lanes, hidden, layers, classes, theta): narrow and wide cores, with a head and without
COLLISION_CASES = [("gru", 4, 1, 16, 2, 3, 1), ("lstm", 16, 4, 16, 2, 0, 0), ("sru", 8, 1, 16, 2, 3, 1),
                   ("ligru", 16, 4, 40, 1, 3, 1)]


@pytest.mark.parametrize("cell, lanes, engine_lanes, hidden, layers, classes, theta", COLLISION_CASES,
                         ids=[f"{c[0]}-P{c[1]}-E{c[2]}" for c in COLLISION_CASES])
def test_collision_free_memories_never_read_a_word_as_it_is_written(cell, lanes, engine_lanes, hidden, layers, classes,
                                                                    theta):
    """COLLISION_FREE holds: what their reads return when a write to the same word comes in the same cycle is left
    undefined in synthesis (COLLISIONS_UNDEFINED), so no cycle may have both, through loading, steps and outputs."""
    model = random_model(cell, 7, hidden, layers, False, classes, seed=4)
    x = np.repeat(random_input(1, 3, 7, seed=5), 2, axis=1)
    qm = quantize(model, random_input(4, 20, 7, seed=6), 4, 8)
    qm.set_thresholds(theta, theta)
    params = DeviceParams(cell, **{**PARAMS, "lanes": lanes, "engine_lanes": engine_lanes})
    core = Core(params)
    seen = {name: 0 for name in COLLISION_FREE}
    collisions = {name: 0 for name in COLLISION_FREE}

    async def monitor(ctx):
        ports = core.memory_ports
        signals = [s for name in COLLISION_FREE for s in (ports[name].rd.en, ports[name].rd.addr,
                                                          ports[name].wr.en, ports[name].wr.addr)]
        async for _, _, *values in ctx.tick().sample(*signals):
            for i, name in enumerate(COLLISION_FREE):
                rd_en, rd_addr, wr_en, wr_addr = values[4 * i:4 * i + 4]
                if rd_en and wr_en:
                    seen[name] += 1
                    collisions[name] += rd_addr == wr_addr

    gold = emulate(qm, x)
    run = run_core(core, input_deltas(qm, x[0]), qm.output_size, writes=pack(qm, params).writes(),
                   processes=[monitor])
    np.testing.assert_array_equal(run.outputs, gold.outputs_fx[0])
    assert collisions == {name: 0 for name in COLLISION_FREE}
    # the check saw reads beside writes (the MxV's, in every step)
    assert seen["acc"] > 0


@pytest.mark.parametrize("lanes", [4, 8])
def test_a_delta_is_written_to_the_buffer_in_its_next_cycle(lanes):
    """The host's delta-buffer write goes through registers (its checks off the paths into the block RAM): no
    write in the cycle a DELTA is taken, its entry written in the next one, and the step still exact."""
    from deltarnn.hw.command import Op
    model = random_model("gru", 7, 8, 1, False, 3, seed=7)
    x = random_input(1, 3, 7, seed=8)
    qm = quantize(model, random_input(4, 20, 7, seed=9), 4, 8)
    params = DeviceParams("gru", **{**PARAMS, "lanes": lanes})
    core = Core(params, **pack(qm, params).core_init())
    taken, written, early = [], [], []    # the DELTAs' indices; the buffer's write in their next cycle, and in theirs

    async def monitor(ctx):
        dbuf, cmd = core.memory_ports["dbuf"].wr, core.cmd
        after_delta = False
        async for _, _, valid, ready, op, index, en, entry in ctx.tick().sample(
                cmd.valid, cmd.ready, cmd.payload.op, cmd.payload.addr, dbuf.en, dbuf.data.index):
            if after_delta:
                written.append((bool(en), int(entry)))
            after_delta = bool(valid and ready and op == Op.DELTA)
            if after_delta:
                early.append(bool(en))
                taken.append(int(index))

    deltas = input_deltas(qm, x[0])
    run = run_core(core, deltas, qm.output_size, processes=[monitor])
    np.testing.assert_array_equal(run.outputs, emulate(qm, x).outputs_fx[0])
    assert len(taken) == sum(len(s) for s in deltas) > 0
    assert not any(early)
    assert written == [(True, index) for index in taken]


async def _send_step(ctx, core, deltas):
    """A step's DELTA commands, then its STEP."""
    from deltarnn.hw.drive import _send
    from deltarnn.spec.memory_map import Op
    for j, d in deltas:
        await _send(ctx, core, Op.DELTA, j, d, 10_000)
    await _send(ctx, core, Op.STEP, 0, 0, 100_000)


@pytest.mark.parametrize("lanes", [4, 8])
def test_reset_writes_every_word_of_the_cleared_memories_once(lanes):
    """RESET zeroes each word of the accumulator, state and reference memories exactly once (their write
    enables from registers set with its counter, not from comparisons of it) and nothing beyond their depths."""
    from amaranth import Value
    from amaranth.sim import Simulator

    from deltarnn.hw.drive import _send
    from deltarnn.spec.memory_map import Op
    params = DeviceParams("gru", **{**PARAMS, "lanes": lanes})
    core = Core(params)
    depths = {"acc": params.acc_depth, "h": params.state_words, "c": params.state_words, "ref": params.ref_depth}
    written = {name: [] for name in depths}

    async def monitor(ctx):
        ports = core.memory_ports
        signals = [s for name in depths for s in (ports[name].wr.en, ports[name].wr.addr,
                                                  Value.cast(ports[name].wr.data))]
        async for _, _, *values in ctx.tick().sample(*signals):
            for i, name in enumerate(depths):
                en, address, data = values[3 * i:3 * i + 3]
                if en:
                    written[name].append((int(address), int(data)))

    async def tb(ctx):
        await _send(ctx, core, Op.RESET, 0, 0, 10_000)
        for _ in range(10_000):
            if ctx.get(core.cmd.ready):
                break
            await ctx.tick()
        await ctx.tick()

    sim = Simulator(core)
    sim.add_clock(1e-6)
    sim.add_process(monitor)
    sim.add_testbench(tb)
    sim.run()
    for name, depth in depths.items():
        assert written[name] == [(i, 0) for i in range(depth)], name


@pytest.mark.parametrize("lanes", [4, 8])
def test_multiplier_and_vector_writes_are_registered_in_a_wide_core(lanes):
    """Above WIDE_LANES lanes the host's writes of the multiplier and vector memories reach them through
    registers (no decoding before their blocks' write pins): each WRITE's element (its word, its lane's
    enable alone) is written in the cycle after the WRITE is taken; at 4 lanes in the same cycle. The model
    loaded so runs exactly."""
    from deltarnn.hw.command import Op
    from deltarnn.spec.memory_map import REGION_SHIFT, Region
    model = random_model("gru", 7, 8, 2, False, 3, seed=27)
    x = random_input(1, 3, 7, seed=28)
    qm = quantize(model, random_input(4, 20, 7, seed=29), 4, 8)
    params = DeviceParams("gru", **{**PARAMS, "lanes": lanes})
    core = Core(params)
    e = params.engine_width
    late = lanes > 4
    wanted, got = [], []      # per WRITE of either memory: (memory, word, lane); what its port wrote, when due

    async def monitor(ctx):
        ports, cmd = core.memory_ports, core.cmd
        pending = None
        async for _, _, valid, ready, op, a, *pins in ctx.tick().sample(
                cmd.valid, cmd.ready, cmd.payload.op, cmd.payload.addr,
                *(s for n in ("mult", "vec") for s in (ports[n].wr.en, ports[n].wr.addr))):
            written = {n: (int(pins[2 * i]), int(pins[2 * i + 1])) for i, n in enumerate(("mult", "vec"))}
            taken = None
            region = Region(a >> REGION_SHIFT) if (a >> REGION_SHIFT) in iter(Region) else None
            if valid and ready and op == Op.WRITE and region in (Region.MULT, Region.VEC):
                offset = a & ((1 << REGION_SHIFT) - 1)
                taken = ("mult" if region == Region.MULT else "vec", offset // e, offset % e)
                wanted.append(taken)
            due = pending if late else taken
            if due is not None:
                en, word = written[due[0]]
                got.append((due[0], word, en.bit_length() - 1 if en and not en & (en - 1) else None))
            pending = taken

    run = run_core(core, input_deltas(qm, x[0]), qm.output_size, writes=pack(qm, params).writes(),
                   processes=[monitor])
    np.testing.assert_array_equal(run.outputs, emulate(qm, x).outputs_fx[0])
    assert {w[0] for w in wanted} == {"mult", "vec"}
    assert got == wanted


@pytest.mark.parametrize("classes", [5, 0])
def test_outputs_wait_in_the_response_fifo_of_a_wide_core(classes):
    """Above WIDE_LANES lanes the output program never waits for the host (ii 1): its outputs wait in the
    core's response FIFO. With ``rsp.ready`` low through two steps, the first step's STEP_CYCLES is the cycle
    model's (no stall), the second step's output program waits until the FIFO is empty (the core takes no
    command meanwhile), and then every output of both steps comes out, in order, equal to the golden model's."""
    from amaranth.sim import Simulator

    from deltarnn.hw.drive import _send, _to_signed
    from deltarnn.spec.memory_map import Op, Region, addr
    model = random_model("gru", 7, 8, 2, False, classes, seed=17)
    x = random_input(1, 2, 7, seed=18)
    qm = quantize(model, random_input(4, 20, 7, seed=19), 4, 8)
    params = DeviceParams("gru", **{**PARAMS, "lanes": 8})
    core = Core(params, **pack(qm, params).core_init())
    gold = emulate(qm, x)
    deltas = input_deltas(qm, x[0])
    n_out = qm.output_size
    seen = {}

    async def tb(ctx):
        ctx.set(core.rsp.ready, 0)
        await _send(ctx, core, Op.RESET, 0, 0, 10_000)
        for t in range(2):
            await _send_step(ctx, core, deltas[t])
            if t == 0:        # the first step ends with its outputs in the FIFO
                for _ in range(100_000):
                    if ctx.get(core.cmd.ready):
                        break
                    await ctx.tick()
                else:
                    raise AssertionError("the first step waits for the host")
                seen["first"] = ctx.get(core.registers.step_cycles)
        for _ in range(2_000):        # step 1 waits for room: the core takes no command
            assert not ctx.get(core.cmd.ready)
            await ctx.tick()
        ctx.set(core.rsp.ready, 1)
        outs = []
        for _ in range(100_000):
            if ctx.get(core.rsp.valid):
                outs.append(_to_signed(ctx.get(core.rsp.payload)))
            await ctx.tick()
            if len(outs) == 2 * n_out:
                break
        seen["outs"] = outs
        assert not ctx.get(core.rsp.valid)
        await _send(ctx, core, Op.READ, addr(Region.REG, Reg.STEP_CYCLES), 0, 10_000)
        for _ in range(100):
            if ctx.get(core.rsp.valid):
                break
            await ctx.tick()
        else:
            raise AssertionError("no response to READ")
        seen["second"] = ctx.get(core.rsp.payload)

    sim = Simulator(core)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    np.testing.assert_array_equal(np.array(seen["outs"]).reshape(2, n_out), gold.outputs_fx[0][:2])
    model_cycles = model_step_cycles(qm, params, gold.step_deltas)
    assert seen["first"] == model_cycles[0]
    assert seen["second"] > max(model_cycles[1], 2_000)


@pytest.mark.parametrize("lanes", [4, 8])
@pytest.mark.parametrize("classes", [5, 0])
def test_outputs_appear_when_the_cycle_model_says(lanes, classes):
    """``cycles.output_timing`` is exact (the co-simulation's testbench sleeps by it): with ``rsp.ready``
    high, a STEP's first output is valid ``step_cycles - tail`` cycles after the STEP is taken, each next
    one ``gap`` cycles after the previous is taken; narrow (``rsp`` straight from the engine) and wide
    (through the response FIFO and its output register) cores."""
    from amaranth.sim import Simulator

    from deltarnn.hw.cycles import output_timing
    from deltarnn.hw.drive import _send, _to_signed
    from deltarnn.spec.memory_map import Op
    model = random_model("gru", 7, 8, 2, False, classes, seed=21)
    x = random_input(1, 2, 7, seed=22)
    qm = quantize(model, random_input(4, 20, 7, seed=23), 4, 8)
    params = DeviceParams("gru", **{**PARAMS, "lanes": lanes})
    core = Core(params, **pack(qm, params).core_init())
    gold = emulate(qm, x)
    deltas = input_deltas(qm, x[0])
    n_out = qm.output_size
    tail, gap = output_timing(qm.num_classes, qm.hidden_size, lanes)
    model_cycles = model_step_cycles(qm, params, gold.step_deltas)
    seen = {"outs": [], "waits": []}

    async def tb(ctx):
        ctx.set(core.rsp.ready, 1)
        await _send(ctx, core, Op.RESET, 0, 0, 10_000)
        for t in range(2):
            await _send_step(ctx, core, deltas[t])
            waited = 0
            for _ in range(n_out):
                while not ctx.get(core.rsp.valid):
                    await ctx.tick()
                    waited += 1
                    assert waited < 100_000, "no output"
                seen["outs"].append(_to_signed(ctx.get(core.rsp.payload)))
                seen["waits"].append(waited)
                await ctx.tick()            # taken
                waited = 0
            while not ctx.get(core.cmd.ready):
                await ctx.tick()

    sim = Simulator(core)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    np.testing.assert_array_equal(np.array(seen["outs"]).reshape(2, n_out), gold.outputs_fx[0][:2])
    for t in range(2):
        waits = seen["waits"][t * n_out:(t + 1) * n_out]
        assert waits == [model_cycles[t] - tail] + [gap] * (n_out - 1), (t, waits, model_cycles[t], tail, gap)
