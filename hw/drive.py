"""Drive a :class:`deltarnn.hw.core.Core` in the Amaranth simulator (pysim).

The same command sequence the host sends over the serial link: WRITE the
image (or start from an image built into the memories), RESET, then per time
step the layer-0 DELTAs and a STEP, collecting the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

from deltarnn.spec.memory_map import Op, Reg, Region, addr


@dataclass
class CoreRun:
    outputs: np.ndarray            #: (time, outputs) fixed-point integers
    step_cycles: list[int] = field(default_factory=list)   #: STEP_CYCLES register after each step
    regs: dict[int, int] = field(default_factory=dict)     #: counters read at the end


def _to_signed(v: int, bits: int = 32) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


def run_core(core, steps: list[list[tuple[int, int]]], n_out: int, writes=(), read_regs=(),
             max_cycles_per_step: int = 2_000_000, vcd: str | None = None) -> CoreRun:
    """Simulate ``core`` over ``steps`` (per step, the layer-0 ``(index, delta)`` pairs)."""
    outs: list[list[int]] = []
    cycles: list[int] = []
    regs: dict[int, int] = {}

    async def tb(ctx):
        ctx.set(core.rsp.ready, 1)

        async def cmd(op, a=0, data=0):
            ctx.set(core.cmd.payload, {"op": int(op), "addr": a, "data": data & 0xFFFFFFFF})
            ctx.set(core.cmd.valid, 1)
            for _ in range(max_cycles_per_step):
                ready = ctx.get(core.cmd.ready)
                await ctx.tick()
                if ready:
                    break
            else:
                raise TimeoutError(f"core did not accept command {Op(op).name}")
            ctx.set(core.cmd.valid, 0)

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
        for a in read_regs:
            regs[int(a)] = await read(a)

    sim = Simulator(core)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return CoreRun(np.array(outs, dtype=np.int64).reshape(len(steps), n_out), cycles, regs)
