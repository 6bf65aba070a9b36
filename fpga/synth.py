"""Synthesis, place and route of Amaranth designs for the project's boards.

Two entry points:

- :func:`synthesize` runs the full open flow (Yosys, nextpnr, the bitstream
  packer) through an amaranth-boards platform and returns a :class:`SynthReport`
  with resource use, the maximum frequency of every clock and the paths of the
  bitstream and logs;
- :func:`synth_stats` runs Yosys synthesis only (``synth_ice40`` /
  ``synth_ecp5``) on a bare component and returns its cell counts, for quick
  resource checks in tests.

Both run the YoWASP tools selected by :mod:`deltarnn.fpga.toolchain`, with the build
directory as working directory and relative file names only (the YoWASP sandbox
maps ``/tmp`` to a private directory, so absolute ``/tmp`` paths would not be
seen; a build directory anywhere, pytest's ``tmp_path`` included, is fine).

Boards
------
``"icebreaker"``
    iCEBreaker, iCE40 UltraPlus UP5K (SG48), 12 MHz clock.  Yosys runs with
    ``-dsp`` so that multipliers map to ``SB_MAC16``.
``"ulx3s-85f"``
    ULX3S with an ECP5 LFE5U-85F (CABGA381, speed 6), 25 MHz clock.  The
    platform's programmer (openFPGALoader) is neither needed nor run.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deltarnn.fpga.outreg import absorb_in_file
from deltarnn.fpga.toolchain import ToolchainError, require_tools, setup_environment

__all__ = [
    "BOARDS",
    "SynthesisError",
    "SynthReport",
    "synthesize",
    "synth_stats",
]


@dataclass(frozen=True)
class _Board:
    family: str                 # "ice40" | "ecp5"
    platform: str               # "module:Class" in amaranth_boards
    tools: tuple[str, ...]      # deltarnn.fpga.toolchain variables the flow runs
    bitstream_ext: str
    netlist_ext: str            # nextpnr's output that icepack / ecppack read
    lut_resource: str           # nextpnr utilisation name of the logic cells
    ff_resource: str | None     # nextpnr utilisation name of the flip-flops, if any
    dsp_resource: str
    ram_resources: Mapping[str, str]    # our name -> nextpnr utilisation name
    default_synth_opts: tuple[str, ...]


#: Boards :func:`synthesize` knows, by name.
BOARDS: dict[str, _Board] = {
    "icebreaker": _Board(
        family="ice40",
        platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
        tools=("YOSYS", "NEXTPNR_ICE40", "ICEPACK"),
        bitstream_ext="bin",
        netlist_ext="asc",
        lut_resource="ICESTORM_LC",
        ff_resource=None,
        dsp_resource="ICESTORM_DSP",
        ram_resources={"EBR": "ICESTORM_RAM", "SPRAM": "ICESTORM_SPRAM"},
        default_synth_opts=("-dsp",),
    ),
    "ulx3s-85f": _Board(
        family="ecp5",
        platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        tools=("YOSYS", "NEXTPNR_ECP5", "ECPPACK"),
        bitstream_ext="bit",
        netlist_ext="config",
        lut_resource="TRELLIS_COMB",
        ff_resource="TRELLIS_FF",
        dsp_resource="MULT18X18D",
        ram_resources={"DP16KD": "DP16KD"},
        default_synth_opts=(),
    ),
}

# Yosys cell types, per family, counted by ``synth_stats``.
_FAMILY_CELLS = {
    "ice40": {
        "lut": ("SB_LUT4",),
        "dsp": ("SB_MAC16",),
        "ram": {"EBR": ("SB_RAM40_4K", "SB_RAM40_4KNR", "SB_RAM40_4KNW", "SB_RAM40_4KNRNW"),
                "SPRAM": ("SB_SPRAM256KA",)},
        "ff_prefix": "SB_DFF",
        "synth": "synth_ice40 -dsp",
    },
    "ecp5": {
        "lut": ("LUT4",),
        "dsp": ("MULT18X18D",),
        "ram": {"DP16KD": ("DP16KD",)},
        "ff_prefix": "TRELLIS_FF",
        "synth": "synth_ecp5",
    },
}

_FAMILY_ALIASES = {"ice40": "ice40", "up5k": "ice40", "icebreaker": "ice40",
                   "ecp5": "ecp5", "ulx3s-85f": "ecp5", "85f": "ecp5"}

#: Yosys' ``stat -json`` output in a build directory.
STAT_FILE = "stat.json"
_REPORT_FILE = "report.json"

#: ``synth_ecp5``'s ``map_luts`` step as run after ``synth_ecp5 -run begin:map_luts``, with the
#: netlist's unused internal wires purged before ``abc9``: Yosys 0.70's ``abc9`` otherwise fails an
#: assertion (``GetSize(conn.first) == GetSize(conn.second)`` in ``abc_ops_reintegrate``) on some
#: builds of the core, the ULX3S's default among them. Then the rest, from ``map_cells``, with the
#: same options (``{opts}``).
ECP5_MAP_LUTS = ("check -latchonly -assert", "techmap -map +/lattice/latches_map.v", "opt_clean -purge",
                 "abc9 -W 300", "clean", "synth_ecp5 {opts} -top {top} -run map_cells:")


def _ecp5_map_luts(opts: str, top: str) -> str:
    """:data:`ECP5_MAP_LUTS` as Yosys commands, after ``synth_ecp5 <opts> -run begin:map_luts``."""
    return "\n".join(ECP5_MAP_LUTS).format(opts=opts, top=top)


class SynthesisError(ToolchainError):
    """A synthesis, place-and-route or packing step failed.

    Attributes
    ----------
    step : str
        The tool that failed (``"yosys"``, ``"nextpnr"``, ``"icepack"``,
        ``"ecppack"``).
    log : pathlib.Path
        The log file to read.
    """

    def __init__(self, message: str, *, step: str, log: Path):
        super().__init__(message)
        self.step = step
        self.log = log


@dataclass
class SynthReport:
    """Result of one :func:`synthesize` run.

    Resource counts come from nextpnr's JSON report (after packing), except the
    flip-flop count on iCE40, whose report only counts logic cells: there it
    is the number of ``SB_DFF*`` cells in Yosys' netlist.  With
    ``report=False`` the nextpnr-derived fields are ``None`` or empty.

    Attributes
    ----------
    board, family, device : str
        ``"icebreaker"`` / ``"ice40"`` / ``"iCE40UP5K"`` or
        ``"ulx3s-85f"`` / ``"ecp5"`` / ``"LFE5U-85F"``.
    top_name : str
        Name of the top module and stem of every file in ``build_dir``.
    build_dir : pathlib.Path
        Absolute path of the build directory.
    luts : int or None
        Logic cells used (``ICESTORM_LC`` on iCE40, each a LUT4 with its
        flip-flop and carry; ``TRELLIS_COMB`` on ECP5, LUT4 slots).
    ffs : int or None
        Flip-flops used.
    dsps : int or None
        Multiplier blocks used (``SB_MAC16`` on iCE40, ``MULT18X18D`` on ECP5).
    ram_blocks : dict of str to int
        Block RAMs used, by kind: ``{"EBR": n, "SPRAM": m}`` on iCE40,
        ``{"DP16KD": n}`` on ECP5.
    capacity : dict of str to int
        What the device offers, with the same keys (``"luts"``, ``"ffs"``,
        ``"dsps"`` and the RAM kinds).
    fmax_mhz : dict of str to float
        Achieved maximum frequency per clock net (nextpnr's name, with
        ECP5's ``$glbnet$`` prefix removed), in MHz.
    constraint_mhz : dict of str to float
        The frequency each clock was constrained to, in MHz.
    utilisation : dict
        nextpnr's ``utilization`` table, entries with ``used > 0`` only:
        ``{bel: {"used": n, "available": m}}``.
    cells : dict of str to int
        Yosys' cell counts of the synthesised netlist, by cell type.
    bitstream : pathlib.Path
        ``<top>.bin`` (iCE40) or ``<top>.bit`` (ECP5).
    logs : dict of str to pathlib.Path
        ``"build"`` (the combined console output), ``"yosys"`` (``<top>.rpt``),
        ``"nextpnr"`` (``<top>.tim``) and, with ``report=True``, ``"report"``
        (nextpnr's ``report.json``) and ``"summary"`` (this report as JSON).
    elapsed_s : float
        Wall-clock time of the tool runs, in seconds.
    step_times_s : dict of str to float
        The same per step: ``"yosys"``, ``"nextpnr"``, ``"icepack"`` /
        ``"ecppack"``.
    output_registers : dict of str to int
        ECP5: the block RAM read ports whose following flip-flops became the
        blocks' output registers (:mod:`deltarnn.fpga.outreg`): ``ports``,
        ``flops`` removed, read ports ``kept`` as they were; the multiplier
        blocks' register groups (inputs, output) moved into the blocks,
        ``multipliers``, and ``multiplier_flops`` removed.
    """

    board: str
    family: str
    device: str
    top_name: str
    build_dir: Path
    luts: int | None = None
    ffs: int | None = None
    dsps: int | None = None
    ram_blocks: dict[str, int] = field(default_factory=dict)
    capacity: dict[str, int] = field(default_factory=dict)
    fmax_mhz: dict[str, float] = field(default_factory=dict)
    constraint_mhz: dict[str, float] = field(default_factory=dict)
    utilisation: dict[str, dict[str, int]] = field(default_factory=dict)
    cells: dict[str, int] = field(default_factory=dict)
    bitstream: Path | None = None
    logs: dict[str, Path] = field(default_factory=dict)
    elapsed_s: float = 0.0
    step_times_s: dict[str, float] = field(default_factory=dict)
    output_registers: dict[str, int] = field(default_factory=dict)

    @property
    def min_fmax_mhz(self) -> float | None:
        """The lowest achieved frequency over all clocks, or ``None``."""
        return min(self.fmax_mhz.values()) if self.fmax_mhz else None

    def as_dict(self) -> dict[str, Any]:
        """Return the report as JSON-serialisable data (paths become strings).

        Returns
        -------
        dict
        """
        def conv(value):
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {k: conv(v) for k, v in value.items()}
            return value
        data = {k: conv(v) for k, v in asdict(self).items()}
        data["min_fmax_mhz"] = self.min_fmax_mhz
        return data


def _load_platform(board: str):
    try:
        spec = BOARDS[board]
    except KeyError:
        raise ValueError(f"unknown board {board!r}; expected one of {', '.join(BOARDS)}") from None
    module_name, class_name = spec.platform.split(":")
    module = __import__(module_name, fromlist=[class_name])
    return spec, getattr(module, class_name)()


def _join_opts(*parts) -> str:
    out = []
    for part in parts:
        if part is None:
            continue
        if isinstance(part, str):
            part = part.split()
        out.extend(part)
    return " ".join(out)


def _last_errors(path: Path, limit: int = 5) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line.strip() for line in lines if "ERROR" in line or "Error" in line]
    picked = errors[-limit:] if errors else [line for line in lines if line.strip()][-limit:]
    return "\n".join(picked)


def yosys_cells(stat_path: str | os.PathLike) -> dict[str, int]:
    """Yosys' cell counts by type from its ``stat -json`` file (``{}`` if it is missing or damaged)."""
    try:
        data = json.loads(Path(stat_path).read_text())
    except (OSError, ValueError):
        return {}
    design = data.get("design") or {}
    cells = design.get("num_cells_by_type")
    if cells is None:   # older Yosys: only per-module tables
        cells = {}
        for module in data.get("modules", {}).values():
            for cell, count in module.get("num_cells_by_type", {}).items():
                cells[cell] = cells.get(cell, 0) + count
    return {k: int(v) for k, v in cells.items() if not k.startswith("$scopeinfo")}


def _count_ffs(cells: Mapping[str, int], family: str) -> int:
    prefix = _FAMILY_CELLS[family]["ff_prefix"]
    return sum(n for cell, n in cells.items() if cell.startswith(prefix))


def _tool_env_var(tool: str) -> str:
    # The variable Amaranth reads for a tool (as amaranth._toolchain.tool_env_var).
    return tool.upper().replace("-", "_").replace("+", "X")


def _clean_clock(name: str) -> str:
    return name[len("$glbnet$"):] if name.startswith("$glbnet$") else name


def synthesize(elaboratable, board: str, build_dir: str | os.PathLike = "build/synth", *,
               top_name: str = "top", report: bool = True, seed: int | None = None,
               timing_allow_fail: bool = False, extra_constraints: str | os.PathLike | None = None,
               progress=None, **overrides) -> SynthReport:
    """Build a bitstream for ``board`` and report resources and timing.

    The platform's build plan is written to ``build_dir`` (``plat.build(...,
    do_build=False)``, so the board's programmer is never required) and its
    commands (Yosys, nextpnr, icepack / ecppack) are run there one by one, with
    the tools :mod:`deltarnn.fpga.toolchain` selects.  The console output of the tools
    goes to ``build_dir/build.log``; nothing is printed.  The build script
    ``build_<top_name>.sh`` is left there too, to rerun the flow by hand.

    Parameters
    ----------
    elaboratable : amaranth.hdl.Elaboratable
        The board top: it requests the pins it uses from the platform (for
        example ``platform.request("led", 0)``).  Logic that drives no pin is
        removed by Yosys.
    board : str
        A key of :data:`BOARDS`: ``"icebreaker"`` or ``"ulx3s-85f"``.
    build_dir : str or os.PathLike
        Directory of the build, created if needed (relative paths are relative
        to the current directory).  Outputs of an earlier build there are
        removed first.
    top_name : str
        Name of the top module and stem of the build files.
    report : bool
        Ask nextpnr for its JSON report (``--report report.json``), fill in the
        resource and Fmax fields, and write the report's :meth:`SynthReport.as_dict`
        to ``build_dir/<top_name>.summary.json``.
    seed : int, optional
        nextpnr placement seed.
    timing_allow_fail : bool
        Pass ``--timing-allow-fail`` to nextpnr, which otherwise fails the build
        when a clock misses its constraint (the iCEBreaker's 12 MHz or the
        ULX3S's 25 MHz unless the design adds its own).  Use it to measure
        Fmax of a design that is not meant to meet timing.
    extra_constraints : str or os.PathLike, optional
        A file whose text is appended to the generated constraints (``.pcf``
        for iCE40, ``.lpf`` for ECP5), for example a file of ``constraints/``.
    progress : callable, optional
        Called with each step's name (``"yosys"``, ``"nextpnr"``, ``"icepack"`` /
        ``"ecppack"``) before it runs.
    **overrides
        Amaranth build overrides, passed to ``platform.build``.  ``synth_opts``
        and ``nextpnr_opts`` are appended to this function's own options
        (``-dsp`` on iCE40; ``--report``, ``--seed``, ``--timing-allow-fail``).

    Returns
    -------
    SynthReport

    Raises
    ------
    ValueError
        If ``board`` is unknown.
    deltarnn.fpga.toolchain.ToolchainError
        If a tool of the flow cannot be found.
    SynthesisError
        If a step fails; the message names the step, quotes its last error
        lines and gives the log file to read.
    """
    spec, platform = _load_platform(board)
    setup_environment()
    require_tools(*spec.tools)

    overrides = dict(overrides)
    overrides["synth_opts"] = _join_opts(spec.default_synth_opts, overrides.get("synth_opts"))
    nextpnr = []
    if report:
        nextpnr += ["--report", _REPORT_FILE]
    if seed is not None:
        nextpnr += ["--seed", str(int(seed))]
    if timing_allow_fail:
        nextpnr += ["--timing-allow-fail"]
    overrides["nextpnr_opts"] = _join_opts(nextpnr, overrides.get("nextpnr_opts"))
    # Yosys' cell counts, written next to its netlist.
    stat_cmd = f"tee -q -o {STAT_FILE} stat -json"
    after = [overrides.get("script_after_synth"), stat_cmd]
    if spec.family == "ecp5":    # the LUT mapping by hand (ECP5_MAP_LUTS), before the script after synthesis
        after.insert(0, _ecp5_map_luts(overrides["synth_opts"], top_name))
        overrides["synth_opts"] = _join_opts(overrides["synth_opts"], ["-run", "begin:map_luts"])
    overrides["script_after_synth"] = "\n".join(s for s in after if s)
    if extra_constraints is not None:
        text = Path(extra_constraints).read_text()
        key = "add_constraints" if spec.family == "ice40" else "add_preferences"
        overrides[key] = "\n".join(s for s in (overrides.get(key), text) if s)

    plan = platform.build(elaboratable, name=top_name, do_build=False, **overrides)
    root = Path(build_dir).absolute()
    root.mkdir(parents=True, exist_ok=True)
    products = {
        "yosys": root / f"{top_name}.json",
        "nextpnr": root / f"{top_name}.{spec.netlist_ext}",
        "pack": root / f"{top_name}.{spec.bitstream_ext}",
    }
    for stale in (*products.values(), root / _REPORT_FILE, root / STAT_FILE,
                  root / f"{top_name}.summary.json"):
        stale.unlink(missing_ok=True)
    plan.extract(root)

    logs = {"build": root / "build.log", "yosys": root / f"{top_name}.rpt",
            "nextpnr": root / f"{top_name}.tim"}
    step_logs = {"yosys": logs["yosys"], "nextpnr": logs["nextpnr"]}
    # Run the plan's commands one by one (the same ones as its shell script,
    # from its JSON twin), so that a failure is pinned to its step.  Amaranth's
    # toolchain environment script (AMARANTH_ENV_<toolchain>) is not sourced.
    commands = json.loads(plan.files[f"{plan.script}.json"])["commands"]
    step_times: dict[str, float] = {}
    absorbed = None
    start = time.monotonic()
    with open(logs["build"], "w") as log_file:
        for argv in commands:
            tool = argv[0]
            step = "nextpnr" if tool.startswith("nextpnr") else tool
            if progress is not None:
                progress(step)
            log_file.write(f"$ {' '.join(argv)}\n")
            log_file.flush()
            t0 = time.monotonic()
            result = subprocess.run([os.environ.get(_tool_env_var(tool)) or tool, *argv[1:]],
                                    cwd=root, stdout=log_file, stderr=subprocess.STDOUT)
            step_times[step] = time.monotonic() - t0
            if result.returncode != 0:
                log = step_logs.get(step, logs["build"])
                if not log.exists() or log.stat().st_size == 0:
                    log = logs["build"]
                log_file.flush()
                details = _last_errors(log) or _last_errors(logs["build"])
                raise SynthesisError(
                    f"{step} failed (exit status {result.returncode}) building {top_name!r} for "
                    f"{board}:\n{details}\nsee {log}", step=step, log=log)
            if step == "yosys" and spec.family == "ecp5":
                absorbed = absorb_in_file(products["yosys"])
                log_file.write(f"output registers: {absorbed.as_dict()}\n")
    elapsed = time.monotonic() - start

    cells = yosys_cells(root / STAT_FILE)
    synth = SynthReport(
        board=board, family=spec.family, device=platform.device, top_name=top_name,
        build_dir=root, cells=cells, bitstream=products["pack"], logs=logs,
        elapsed_s=elapsed, step_times_s=step_times,
        output_registers=absorbed.as_dict() if absorbed is not None else {})
    if spec.ff_resource is None:
        synth.ffs = _count_ffs(cells, spec.family)

    if report:
        logs["report"] = root / _REPORT_FILE
        data = json.loads(logs["report"].read_text())
        util = {k: {"used": int(v.get("used", 0)), "available": int(v.get("available", 0))}
                for k, v in data.get("utilization", {}).items()}
        synth.utilisation = {k: v for k, v in util.items() if v["used"]}

        def used(name):
            return util.get(name, {}).get("used", 0)

        def avail(name):
            return util.get(name, {}).get("available", 0)

        synth.luts = used(spec.lut_resource)
        synth.dsps = used(spec.dsp_resource)
        synth.capacity = {"luts": avail(spec.lut_resource), "dsps": avail(spec.dsp_resource)}
        if spec.ff_resource is not None:
            synth.ffs = used(spec.ff_resource)
            synth.capacity["ffs"] = avail(spec.ff_resource)
        else:   # on iCE40 every logic cell has one flip-flop
            synth.capacity["ffs"] = avail(spec.lut_resource)
        for kind, bel in spec.ram_resources.items():
            synth.ram_blocks[kind] = used(bel)
            synth.capacity[kind] = avail(bel)
        for clock, entry in data.get("fmax", {}).items():
            synth.fmax_mhz[_clean_clock(clock)] = float(entry["achieved"])
            synth.constraint_mhz[_clean_clock(clock)] = float(entry["constraint"])
        logs["summary"] = root / f"{top_name}.summary.json"
        logs["summary"].write_text(json.dumps(synth.as_dict(), indent=2) + "\n")
    return synth


def synth_stats(elaboratable, family: str, *, ports=None, top_name: str = "top",
                work_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Synthesise with Yosys only and count the cells of the netlist.

    Much faster than :func:`synthesize` for large designs (no placement and
    routing), and needs no board top: the elaboratable's ports become the
    top module's ports, and a ``sync`` domain gets ``clk`` and ``rst`` ports.
    Counts are pre-packing: ``luts`` is the number of LUT4 cells, carry
    chains not included.

    Parameters
    ----------
    elaboratable : amaranth.hdl.Elaboratable
        A :class:`amaranth.lib.wiring.Component`, or any elaboratable together
        with ``ports``.
    family : str
        ``"ice40"`` (``synth_ice40 -dsp``) or ``"ecp5"`` (``synth_ecp5``); the
        board names ``"icebreaker"`` and ``"ulx3s-85f"`` are accepted too.
    ports : optional
        Passed to :func:`amaranth.back.rtlil.convert`; not needed for a
        component.
    top_name : str
        Name of the top module.
    work_dir : str or os.PathLike, optional
        Where the RTLIL, script, log and statistics are written; a temporary
        directory (removed afterwards) when omitted.

    Returns
    -------
    dict
        ``{"family", "luts", "ffs", "dsps", "ram_blocks": {kind: n},
        "cells": {type: n}, "elapsed_s", "log"}`` (``log`` is ``None`` when
        ``work_dir`` was omitted).

    Raises
    ------
    ValueError
        If ``family`` is unknown.
    deltarnn.fpga.toolchain.ToolchainError
        If Yosys cannot be found.
    SynthesisError
        If Yosys fails.
    """
    import tempfile

    from amaranth.back import rtlil

    try:
        family = _FAMILY_ALIASES[family.lower()]
    except KeyError:
        raise ValueError(f"unknown family {family!r}; expected 'ice40' or 'ecp5'") from None
    info = _FAMILY_CELLS[family]
    yosys = require_tools("YOSYS")["YOSYS"]
    il_text = rtlil.convert(elaboratable, name=top_name, ports=ports)

    def run(root: Path) -> dict[str, Any]:
        (root / f"{top_name}.il").write_text(il_text)
        synth = f"{info['synth']} -top {top_name}"
        if family == "ecp5":      # the LUT mapping of the board builds (ECP5_MAP_LUTS)
            synth += f" -run begin:map_luts\n{_ecp5_map_luts('', top_name)}"
        (root / f"{top_name}.ys").write_text(
            f"read_rtlil {top_name}.il\n"
            f"{synth}\n"
            f"tee -q -o {STAT_FILE} stat -json\n")
        log = root / f"{top_name}.rpt"
        start = time.monotonic()
        result = subprocess.run([yosys, "-q", "-l", log.name, f"{top_name}.ys"], cwd=root,
                                capture_output=True, text=True)
        elapsed = time.monotonic() - start
        if result.returncode != 0:
            details = _last_errors(log) or result.stderr.strip()[-2000:]
            raise SynthesisError(f"yosys failed (exit status {result.returncode}) "
                                 f"synthesising {top_name!r} for {family}:\n{details}\nsee {log}",
                                 step="yosys", log=log)
        cells = yosys_cells(root / STAT_FILE)
        return {
            "family": family,
            "luts": sum(cells.get(c, 0) for c in info["lut"]),
            "ffs": _count_ffs(cells, family),
            "dsps": sum(cells.get(c, 0) for c in info["dsp"]),
            "ram_blocks": {kind: sum(cells.get(c, 0) for c in types)
                           for kind, types in info["ram"].items()},
            "cells": cells,
            "elapsed_s": elapsed,
            "log": log,
        }

    if work_dir is not None:
        root = Path(work_dir).absolute()
        root.mkdir(parents=True, exist_ok=True)
        return run(root)
    with tempfile.TemporaryDirectory(prefix="synth_stats_") as tmp:
        stats = run(Path(tmp))
        stats["log"] = None
        return stats
