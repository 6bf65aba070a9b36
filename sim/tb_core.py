"""cocotb testbench of the whole core (:class:`deltarnn.hw.core.Core`) against the golden model.

This module runs *inside the simulator process* (Verilator or Icarus), started
by :func:`deltarnn.sim.cosim.run_cosim`.  It imports nothing of the project beyond
NumPy: everything it needs (the WRITE commands of the packed QModel, the
layer-0 deltas of every time step, the golden model's outputs and every
layer's hidden state, the cycle model's predictions, the names of the state
memories in the generated Verilog) arrives in one ``.npz`` file whose path is
in the environment variable ``DELTARNN_COSIM_DATA``.  Results go to the JSON
file named in that file's ``config`` (and progress, while it runs, to another);
the cocotb test fails if any compared integer differs.

The host path is followed exactly (:mod:`deltarnn.hw.drive` does the same in pysim):
WRITE the image, then per sequence RESET, and per time step the layer-0
DELTA commands and a STEP, collecting the outputs from ``rsp``.  After every
step the testbench also reads each layer's ``h`` (the core's state memory,
through the simulator's hierarchy: VPI handles of the Verilog memory array),
so that a divergence is located at the first layer and neuron that went
wrong, even when it shows at the outputs only later, or never.

Speed: the clock is cocotb's C (GPI) clock and the testbench never wakes up
once per cycle while the core computes.  It acts only at falling clock edges
(all waits are ``Timer``s of whole periods), holds ``rsp.ready`` low so that
an output waits for it (the stream's back-pressure), and sleeps through each
STEP for the number of cycles the cycle model (:mod:`deltarnn.hw.cycles`) predicts
until the next output, then polls cycle by cycle.  With an exact cycle model
no cycle is polled and no cycle is stalled, so ``STEP_CYCLES`` equals the
model; the testbench checks that too (``cycle_model_mismatches``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.handle import Immediate
from cocotb.triggers import FallingEdge, Timer

DATA_ENV = "DELTARNN_COSIM_DATA"

# Opcodes and registers (deltarnn.spec.memory_map.Op / Reg; repeated here so that the
# simulator process imports NumPy only, and checked by tests/sim/test_cosim.py).
OP_WRITE, OP_READ, OP_DELTA, OP_STEP, OP_RESET = 0, 1, 2, 3, 4
REG_CYCLES, REG_STEP_CYCLES, REG_STEPS = 0x110, 0x111, 0x112
#: bit positions of the flattened ``cmd__payload`` (op:3, addr:28, data:32)
ADDR_SHIFT, DATA_SHIFT = 3, 31
ADDR_MASK, DATA_MASK = (1 << 28) - 1, (1 << 32) - 1


class SimulationStuck(RuntimeError):
    """The core did not accept a command or deliver a response in time."""


class XValue(RuntimeError):
    """A 4-state simulator returned X or Z where a value was expected."""


def _to_signed(v: int, bits: int = 32) -> int:
    return v - (1 << bits) if v >> (bits - 1) & 1 else v


def _int(handle, what: str) -> int:
    value = handle.value
    try:
        return int(value)
    except ValueError:
        raise XValue(f"{what} is {value} (X/Z): the core computed with an undefined value") from None


class CoreTB:
    """Clock, reset and the command/response drivers of one core.

    Every method is called, and returns, at a falling clock edge: inputs
    written there are sampled at the next rising edge, outputs read there
    settled after the previous one.  ``self.cycle`` counts the clock cycles
    since :meth:`start`.

    Parameters
    ----------
    dut : cocotb handle of the core's top module
    period_ns : int
        Clock period (only simulated time; it does not change any result).
    state_memory : str, optional
        Name of the ``h`` state memory in the top module (from the Verilog).
    state_lanes : int
        Elements per word of that memory (the engine's lanes: element ``i`` in lane ``i mod E`` of word ``i // E``).
    """

    def __init__(self, dut, period_ns: int = 10, state_memory: str | None = None, state_lanes: int = 1):
        self.dut = dut
        self.period_ns = period_ns
        self.cycle = 0
        self.polls = 0          # cycles spent polling (the cycle model's hints fell short)
        self.awaits = 0         # simulator callbacks awaited
        self.await_s = 0.0      # wall time spent in them (the simulator's share)
        self._timers: dict[int, Timer] = {}
        self._payload = dut.cmd__payload
        self._valid = dut.cmd__valid
        self._ready = dut.cmd__ready
        self._rsp_valid = dut.rsp__valid
        self._rsp_ready = dut.rsp__ready
        self._rsp_payload = dut.rsp__payload
        self._state = getattr(dut, state_memory) if state_memory else None
        self._state_cells: dict[int, object] = {}
        self._state_lanes = state_lanes

    # --- time -------------------------------------------------------------------------------

    def _timer(self, n: int) -> Timer:
        t = self._timers.get(n)
        if t is None:
            t = self._timers[n] = Timer(n * self.period_ns, unit="ns")
        return t

    async def cycles(self, n: int = 1) -> None:
        """Let ``n >= 1`` clock cycles pass (one simulator callback, no per-cycle Python)."""
        t = time.perf_counter()
        await self._timer(n)
        self.await_s += time.perf_counter() - t
        self.awaits += 1
        self.cycle += n

    async def start(self, reset_cycles: int = 4) -> None:
        """Start the clock, hold ``rst`` for ``reset_cycles`` rising edges, end at a falling edge."""
        dut = self.dut
        for sig, v in ((self._valid, 0), (self._payload, 0), (self._rsp_ready, 0), (dut.rst, 1)):
            sig.set(Immediate(v))
        Clock(dut.clk, self.period_ns, unit="ns", impl="gpi").start(start_high=False)
        await FallingEdge(dut.clk)
        await self.cycles(reset_cycles)
        dut.rst.set(Immediate(0))
        self.cycle = 0

    # --- commands -----------------------------------------------------------------------------

    async def send(self, op: int, addr: int = 0, data: int = 0, limit: int = 1_000_000) -> None:
        """Present one command and wait for the rising edge that takes it (valid stays high)."""
        self._payload.set(Immediate(op | (addr & ADDR_MASK) << ADDR_SHIFT | (data & DATA_MASK) << DATA_SHIFT))
        self._valid.set(Immediate(1))
        for _ in range(limit):
            ready = _int(self._ready, "cmd.ready")
            await self.cycles(1)
            if ready:
                return
        raise SimulationStuck(f"the core did not accept command op={op} addr={addr:#x} "
                              f"within {limit} cycles")

    def idle(self) -> None:
        """Lower ``cmd.valid`` (no command)."""
        self._valid.set(Immediate(0))

    async def write_all(self, writes) -> None:
        """WRITE every ``(addr, data)`` pair, one per cycle."""
        for a, d in writes:
            await self.send(OP_WRITE, int(a), int(d))
        self.idle()

    async def receive(self, hint: int = 0, limit: int = 1_000_000) -> int:
        """Take one response word: sleep ``hint`` cycles, poll ``rsp.valid``, then handshake.

        ``rsp.ready`` is held low between words, so a word waits for the
        testbench however long it sleeps; the handshake takes one cycle.
        """
        if hint > 0:
            await self.cycles(hint)
        for _ in range(limit):
            if _int(self._rsp_valid, "rsp.valid"):
                break
            await self.cycles(1)
            self.polls += 1
        else:
            raise SimulationStuck(f"no response within {limit} cycles")
        value = _int(self._rsp_payload, "rsp.payload")
        self._rsp_ready.set(Immediate(1))
        await self.cycles(1)
        self._rsp_ready.set(Immediate(0))
        return value

    async def read_reg(self, reg: int) -> int:
        """READ one register (region 0)."""
        await self.send(OP_READ, reg)
        self.idle()
        return await self.receive()

    async def reset(self) -> None:
        """RESET: clears accumulators, references, state and counters (the next command waits for it)."""
        await self.send(OP_RESET)
        self.idle()

    async def step(self, deltas, n_out: int, first_hint: int = 0, gap_hint: int = 0,
                   limit: int = 1_000_000) -> list[int]:
        """DELTA each ``(index, delta)``, STEP, and return the ``n_out`` signed outputs."""
        for j, d in deltas:
            await self.send(OP_DELTA, int(j), int(d))
        await self.send(OP_STEP)
        self.idle()
        out = []
        for i in range(n_out):
            out.append(_to_signed(await self.receive(first_hint if i == 0 else gap_hint, limit)))
        return out

    # --- internal state -------------------------------------------------------------------------

    def state(self, base: int, n: int) -> list[int]:
        """Words ``base .. base+n-1`` of the ``h`` state memory, signed (16 bit)."""
        if self._state is None:
            raise RuntimeError("no state memory name given")
        out = []
        lanes = self._state_lanes
        for i in range(base, base + n):
            word = i // lanes
            cell = self._state_cells.get(word)
            if cell is None:
                cell = self._state_cells[word] = self._state[word]
            out.append(_to_signed(_int(cell, f"h[{word}]") >> (16 * (i % lanes)) & 0xFFFF, 16))
        return out


# --- the co-simulation test -------------------------------------------------------------------


class _Progress:
    def __init__(self, path: str | None, total: int, every_s: float = 1.0):
        self.path = Path(path) if path else None
        self.total = total
        self.every_s = every_s
        self.last = 0.0

    def update(self, done: int, cycles: int, t0: float, force: bool = False) -> None:
        if self.path is None:
            return
        now = time.perf_counter()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = now - t0
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"timesteps": done, "total": self.total, "sim_cycles": cycles,
                                   "elapsed_s": elapsed,
                                   "sim_cycles_per_s": cycles / elapsed if elapsed > 0 else 0.0}))
        os.replace(tmp, self.path)


def _divergence(seq, step, stage, neuron, golden, rtl, cycle):
    return {"sequence": int(seq), "step": int(step), "layer": stage, "neuron": int(neuron),
            "golden": int(golden), "rtl": int(rtl), "cycle": int(cycle)}


def describe(d: dict) -> str:
    """One line naming a divergence (the format of the cocotb failure message)."""
    where = f"layer {d['layer']}" if isinstance(d["layer"], int) else str(d["layer"])
    return (f"sequence {d['sequence']}, time step {d['step']}, {where}, neuron {d['neuron']}: "
            f"golden {d['golden']}, RTL {d['rtl']}")


@cocotb.test()
async def cosim_core(dut):
    """Load a QModel with WRITE commands and run every sequence; compare with the golden model."""
    data = np.load(os.environ[DATA_ENV], allow_pickle=False)
    cfg = json.loads(str(data["config"]))
    writes = data["writes"].tolist()
    ptr, idx, val = data["delta_ptr"], data["delta_idx"].tolist(), data["delta_val"].tolist()
    gold_out = data["outputs"]                     # (B, T, O)
    gold_layers = data["layers"]                   # (L, B, T, H)
    model_cycles = data["step_cycles"]             # (B, T)
    bsz, steps, n_out = gold_out.shape
    n_layers, hidden, stride = cfg["layers"], cfg["hidden"], cfg["state_stride"]
    head = cfg["head"]
    check_state = cfg["check_state"]
    out_tail, out_gap = cfg["out_tail"], cfg["out_gap"]
    max_details = cfg.get("max_details", 20)

    tb = CoreTB(dut, cfg.get("period_ns", 10), cfg["state_memory"] if check_state else None, cfg.get("state_lanes", 1))
    progress = _Progress(cfg.get("progress"), bsz * steps)
    result = {"timesteps": 0, "sequences": 0, "output_mismatches": 0, "state_mismatches": 0,
              "cycle_model_mismatches": 0, "first_divergence": None, "first_output_mismatch": None,
              "details": [], "cycles": 0, "cycles_per_sequence": [], "sim_cycles": 0, "polls": 0,
              "load_cycles": 0, "error": None}

    def record(kind: str, d: dict) -> None:
        result[kind] += 1
        if result["first_divergence"] is None:
            result["first_divergence"] = d
        if kind == "output_mismatches" and result["first_output_mismatch"] is None:
            result["first_output_mismatch"] = d
        if len(result["details"]) < max_details:
            result["details"].append(d)

    t0, c0 = time.perf_counter(), time.process_time()
    try:
        await tb.start()
        await tb.write_all(writes)
        result["load_cycles"] = tb.cycle
        limit = cfg.get("step_cycle_limit", 1_000_000)
        for b in range(bsz):
            await tb.reset()
            gl = gold_layers[:, b].tolist()          # (L, T, H)
            go = gold_out[b].tolist()
            mc = model_cycles[b].tolist()
            for t in range(steps):
                k = b * steps + t
                deltas = list(zip(idx[ptr[k]:ptr[k + 1]], val[ptr[k]:ptr[k + 1]]))
                # the first output comes out_tail cycles before the step's end, the others
                # out_gap cycles after each other (deltarnn.hw.cycles.output_timing)
                outs = await tb.step(deltas, n_out, first_hint=max(mc[t] - out_tail, 0), gap_hint=out_gap,
                                     limit=limit)
                cycle = tb.cycle
                if check_state:
                    for layer in range(n_layers):
                        rtl = tb.state(layer * stride, hidden)
                        want = gl[layer][t]
                        if rtl != want:
                            for n, (g, r) in enumerate(zip(want, rtl)):
                                if g != r:
                                    record("state_mismatches", _divergence(b, t, layer, n, g, r, cycle))
                want = go[t]
                if outs != want:
                    for n, (g, r) in enumerate(zip(want, outs)):
                        if g != r:
                            stage = "head" if head else n_layers - 1
                            record("output_mismatches", _divergence(b, t, stage, n, g, r, cycle))
                if cfg.get("check_step_cycles", True):
                    measured = await tb.read_reg(REG_STEP_CYCLES)
                    result["cycles"] += measured
                    if measured != mc[t]:
                        result["cycle_model_mismatches"] += 1
                        if result.get("first_cycle_mismatch") is None:
                            result["first_cycle_mismatch"] = {"sequence": b, "step": t, "model": mc[t],
                                                              "rtl": measured}
                else:
                    result["cycles"] += mc[t]
                result["timesteps"] += 1
                progress.update(result["timesteps"], tb.cycle, t0)
            result["cycles_per_sequence"].append(await tb.read_reg(REG_CYCLES))
            result["sequences"] += 1
    except (SimulationStuck, XValue) as e:
        result["error"] = f"{type(e).__name__} at sequence {result['sequences']}, time step " \
                          f"{result['timesteps'] - result['sequences'] * steps}: {e}"
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    result.update(sim_cycles=tb.cycle, polls=tb.polls, awaits=tb.awaits, await_s=tb.await_s,
                  testbench_s=wall - tb.await_s, sim_wall_s=wall, sim_cpu_s=cpu,
                  sim_cycles_per_s=tb.cycle / wall if wall > 0 else 0.0,
                  sim_cycles_per_cpu_s=tb.cycle / cpu if cpu > 0 else 0.0)
    progress.update(result["timesteps"], tb.cycle, t0, force=True)
    out = Path(cfg["result"])
    out.write_text(json.dumps(result, indent=1) + "\n")

    assert result["error"] is None, result["error"]
    total = result["output_mismatches"] + result["state_mismatches"]
    assert total == 0, (f"{total} mismatches ({result['output_mismatches']} outputs, "
                        f"{result['state_mismatches']} state words); first divergence: "
                        f"{describe(result['first_divergence'])}")
    if cfg.get("require_cycle_model", False):
        assert result["cycle_model_mismatches"] == 0, \
            f"STEP_CYCLES differs from the cycle model: {result['first_cycle_mismatch']}"
