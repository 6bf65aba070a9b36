"""``deltarnn build``: a bitstream of the accelerator for a board, its resources and timing, optionally flashed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .args import CELLS, lanes, pos_float, pos_int
from .errors import UserError

#: The boards (the keys of deltarnn.fpga.boards.BOARDS; listed here so that --help needs no gateware import).
BOARD_NAMES = ("icebreaker", "ulx3s-85f")


def _table(rep: dict) -> str:
    from rich.table import Table

    from .report import render

    t = Table(title=f"{rep['description']}: {rep['params']['cell'].upper()} core, {rep['params']['lanes']} lanes")
    for col in ("resource", "used", "available", "%"):
        t.add_column(col, justify="left" if col == "resource" else "right")
    for name, u in rep["utilization"].items():
        pct = f"{100 * u['used'] / u['available']:.1f}" if u.get("available") else ""
        t.add_row(name, f"{u['used']:,}", f"{u['available']:,}" if u.get("available") is not None else "", pct)
    fmax = rep["fmax_mhz"]
    t.add_row("Fmax (MHz)", f"{fmax:.2f}" if fmax is not None else "-", f"{rep['target_mhz']:g} target",
              "met" if rep["timing_met"] else "MISSED", end_section=True)
    return render(t)


def _params_for_model(board: str, qm, lanes: int | None, path):
    """A core just big enough for ``qm`` (:func:`deltarnn.sim.cosim.device_params_for`), with the board's
    default lanes unless ``lanes`` is given, within the board's limits; else a :class:`UserError`."""
    from deltarnn.device.image import DeviceFitError
    from deltarnn.fpga import build as B
    from deltarnn.sim.cosim import device_params_for

    try:
        params = device_params_for(qm, lanes=lanes or B.board_spec(board).params.lanes)
        return B.check_limits(board, params)
    except (DeviceFitError, B.BoardError) as e:
        raise UserError(f"{path} cannot be built for {board}: {e}") from None


def cmd_build(args) -> int:
    from deltarnn.fpga import build as B
    from deltarnn.fpga.synth import SynthesisError
    from deltarnn.fpga.toolchain import ToolchainError

    if args.model is not None:
        sizes = {"--cell": args.cell, "--max-input": args.max_input, "--max-hidden": args.max_hidden,
                 "--max-layers": args.max_layers, "--max-classes": args.max_classes}
        given = [k for k, v in sizes.items() if v is not None]
        if given:
            raise UserError(f"--for sizes the core to the model: leave out {', '.join(given)}")
        path = Path(args.model)
        if not path.is_file():
            raise UserError(f"model file {args.model}: no such file")
        from deltarnn.quant.qmodel import QModel, QModelFormatError

        try:
            qm = QModel.load(path)
        except QModelFormatError as e:
            raise UserError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - a file that is no QModel at all
            raise UserError(f"{args.model} is not a .qmodel file ({type(e).__name__}: {e})") from None
        params = _params_for_model(args.board, qm, args.lanes, path)
    else:
        try:
            params = B.board_params(args.board, cell=args.cell, lanes=args.lanes, max_input=args.max_input,
                                    max_hidden=args.max_hidden, max_layers=args.max_layers,
                                    max_classes=args.max_classes)
        except B.BoardError as e:
            raise UserError(str(e)) from None

    out_dir = Path(args.out) if args.out else Path("build") / "boards" / args.board
    quiet = args.json

    def progress(line):
        if not quiet:
            print(f"deltarnn: build: {line} ...", file=sys.stderr, flush=True)

    try:
        clock_hz, baud = B.check_clock(args.board, args.clock * 1e6 if args.clock is not None else None, args.baud)
    except B.BoardError as e:
        raise UserError(str(e)) from None
    if not quiet:
        print(f"deltarnn: build: {args.board}, {params.cell.upper()} core with {params.lanes} lanes (up to "
              f"{params.max_layers} x {params.max_hidden} units, {params.max_input} inputs, {params.max_classes} "
              f"classes) at {clock_hz / 1e6:g} MHz, {baud:,} baud, into {out_dir}", file=sys.stderr, flush=True)
    try:
        rep = B.build_board(args.board, params, clock_hz, out_dir, baud=baud, seed=args.seed,
                            progress=progress)
    except B.BoardError as e:
        raise UserError(str(e)) from None
    except ToolchainError as e:     # SynthesisError included: a tool failed, or is missing
        first = str(e).splitlines()[0]
        log = f"; see {e.log}" if isinstance(e, SynthesisError) else ""
        raise UserError(f"{first}{log}") from None

    if args.program:
        progress("programming the board (openFPGALoader)")
        try:
            B.program(args.board, rep["bitstream"])
        except B.ProgrammingError as e:
            raise UserError(f"cannot program the {args.board}: {e}") from None

    if args.json:
        keys = ("board", "bitstream", "fmax_mhz", "target_mhz", "utilization")
        print(json.dumps({k: rep[k] for k in keys} | {"timing_met": rep["timing_met"],
                                                       "report": str(out_dir / B.REPORT_FILE)}, indent=1))
    else:
        print(_table(rep))
        print(f"bitstream: {rep['bitstream']}")
        print(f"report: {out_dir / B.REPORT_FILE}")
        if not rep["timing_met"]:
            print(f"deltarnn: build: the design reaches {rep['fmax_mhz']:.2f} MHz, below its "
                  f"{rep['target_mhz']:g} MHz clock: the bitstream may not work; build with a lower --clock",
                  file=sys.stderr)
        if args.program:
            print(f"programmed the {args.board}")
    return 0 if rep["timing_met"] else 1


def add_commands(sub) -> None:
    """Add ``build`` to the ``deltarnn`` parser."""
    c = sub.add_parser(
        "build", help="build a bitstream of the accelerator for a board (and flash it)",
        description="Synthesise, place and route the accelerator (UART, framed protocol, core) for a board with "
                    "the pip-installed Yosys and nextpnr, and print its resources and Fmax. The core is the "
                    "board's default unless sized by the options or by --for MODEL.qmodel. Exit status 1 when "
                    "the design misses its clock.")
    c.add_argument("--board", required=True, choices=BOARD_NAMES)
    c.add_argument("--cell", choices=CELLS, default=None, help="recurrent cell (default: the board's)")
    c.add_argument("--lanes", type=lanes, default=None, metavar="P", help="MAC lanes (a power of two)")
    c.add_argument("--max-input", type=pos_int, default=None, metavar="I", help="largest input size")
    c.add_argument("--max-hidden", type=pos_int, default=None, metavar="H", help="largest hidden size")
    c.add_argument("--max-layers", type=pos_int, default=None, metavar="L", help="most layers")
    c.add_argument("--max-classes", type=pos_int, default=None, metavar="C", help="most head outputs")
    c.add_argument("--for", dest="model", default=None, metavar="MODEL.qmodel",
                   help="size the core to this model (cell, sizes and widths from it)")
    c.add_argument("--clock", type=pos_float, default=None, metavar="MHZ",
                   help="the sync clock the PLL makes (default: the board's)")
    c.add_argument("--baud", type=pos_int, default=None, help="serial rate (default 3000000)")
    c.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    c.add_argument("--out", default=None, metavar="DIR", help="build directory (default build/boards/BOARD)")
    c.add_argument("--json", action="store_true", help="print only a JSON object (board, bitstream, fmax_mhz, "
                   "target_mhz, utilization)")
    c.add_argument("--program", action="store_true", help="flash the bitstream with openFPGALoader")
    c.set_defaults(func=cmd_build)


__all__ = ["add_commands", "cmd_build", "BOARD_NAMES"]
