"""The ``deltarnn`` command line.

One module per group of commands, each with an ``add_commands(sub)``:
:mod:`~deltarnn.cli.model` (quantize, emulate, demo), :mod:`~deltarnn.cli.cosim`
(cosim) and :mod:`~deltarnn.cli.study` (train, study, study-inputs). Heavy
modules (torch, the gateware, the simulators) are imported inside the
commands, so ``deltarnn --help`` stays fast. A user's mistake ends in one line
``deltarnn: error: ...`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from . import build, cosim, model, run, study
from .errors import UserError, user_errors

__all__ = ["UserError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deltarnn",
        description="Quantize recurrent networks, emulate them bit-exactly with delta networks, "
                    "and run them on FPGA gateware.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in (model, cosim, study, build, run):
        group.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except user_errors() as e:
        print(f"deltarnn: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:            # a file the user named cannot be read or written
        where = f"{e.filename}: " if e.filename else ""
        print(f"deltarnn: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deltarnn: interrupted", file=sys.stderr)
        return 130
