"""Drive a :class:`deltarnn.hw.core.Core` in the Amaranth simulator (pysim).

:func:`run_core` sends the command sequence the host sends over the serial
link: WRITE the image (or start from an image built into the memories),
RESET, then per time step the layer-0 DELTAs and a STEP, collecting the
outputs. :func:`run_commands` sends any commands at all, and reports each
one's responses and whether the core came back to take the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

from deltarnn.hw.command import command_layout

from deltarnn.spec.memory_map import Op, Reg, Region, addr


@dataclass
class CoreRun:
    outputs: np.ndarray            #: (time, outputs) fixed-point integers
    step_cycles: list[int] = field(default_factory=list)   #: STEP_CYCLES register after each step
    regs: dict[int, int] = field(default_factory=dict)     #: counters read at the end


def _to_signed(v: int, bits: int = 32) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


async def _send(ctx, core, op, a, data, max_cycles: int) -> None:
    """Present one command (``op`` any 3-bit code, also those that are no ``Op``) until the core takes it."""
    layout = command_layout()
    word = (int(op) << layout["op"].offset | int(a) << layout["addr"].offset
            | (int(data) & 0xFFFFFFFF) << layout["data"].offset)
    ctx.set(core.cmd.payload.as_value(), word)
    ctx.set(core.cmd.valid, 1)
    for _ in range(max_cycles):
        ready = ctx.get(core.cmd.ready)
        await ctx.tick()
        if ready:
            break
    else:
        raise TimeoutError(f"the core did not take command {(op, a, data)} in {max_cycles} cycles")
    ctx.set(core.cmd.valid, 0)


def run_core(core, steps: list[list[tuple[int, int]]], n_out: int, writes=(), read_regs=(),
             max_cycles_per_step: int = 2_000_000, vcd: str | None = None, processes=()) -> CoreRun:
    """Simulate ``core`` over ``steps`` (per step, the layer-0 ``(index, delta)`` pairs); ``processes``:
    more simulator processes (``async def process(ctx)``) that run beside, a monitor's for example."""
    outs: list[list[int]] = []
    cycles: list[int] = []
    regs: dict[int, int] = {}

    async def tb(ctx):
        ctx.set(core.rsp.ready, 1)

        async def cmd(op, a=0, data=0):
            await _send(ctx, core, op, a, data, max_cycles_per_step)

        async def read(a):
            await cmd(Op.READ, addr(Region.REG, a))
            for _ in range(100):
                if ctx.get(core.rsp.valid):
                    v = ctx.get(core.rsp.payload)
                    await ctx.tick()
                    return v
                await ctx.tick()
            raise TimeoutError("no response to READ")

        for a, d in writes:
            await cmd(Op.WRITE, a, d)
        await cmd(Op.RESET)
        for t, deltas in enumerate(steps):
            for j, d in deltas:
                await cmd(Op.DELTA, j, d)
            await cmd(Op.STEP)
            vals = []
            for _ in range(max_cycles_per_step):
                if ctx.get(core.rsp.valid):
                    vals.append(_to_signed(ctx.get(core.rsp.payload)))
                    if len(vals) == n_out:
                        await ctx.tick()
                        break
                await ctx.tick()
            else:
                raise TimeoutError(f"step {t}: got {len(vals)} of {n_out} outputs")
            outs.append(vals)
            cycles.append(await read(Reg.STEP_CYCLES))
        writable, readable = core.registers.writable, core.registers.readable
        for a in read_regs:
            if int(a) in writable and int(a) not in readable:     # write-only: the simulator peeks at it
                regs[int(a)] = ctx.get(writable[int(a)])
            else:
                regs[int(a)] = await read(a)

    sim = Simulator(core)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    for process in processes:
        sim.add_process(process)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return CoreRun(np.array(outs, dtype=np.int64).reshape(len(steps), n_out), cycles, regs)


def run_commands(core, commands, max_cycles: int = 200_000) -> list[list[int]]:
    """Send ``commands`` (``(op, addr, data)``, ``op`` any 3-bit code) one after another; return each
    command's response words (signed 32-bit), collected until the core takes commands again.

    Raises
    ------
    TimeoutError
        If the core does not take a command, or does not come back to take the next one, within
        ``max_cycles`` cycles: it hangs.
    """
    replies: list[list[int]] = []

    async def tb(ctx):
        ctx.set(core.rsp.ready, 1)
        for n, (op, a, data) in enumerate(commands):
            await _send(ctx, core, op, a, data, max_cycles)
            words = []
            for _ in range(max_cycles):
                if ctx.get(core.rsp.valid):
                    words.append(_to_signed(ctx.get(core.rsp.payload)))
                if ctx.get(core.cmd.ready):
                    break
                await ctx.tick()
            else:
                raise TimeoutError(f"command {n} {(op, a, data)}: the core did not come back in {max_cycles} cycles")
            replies.append(words)

    sim = Simulator(core)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return replies
