"""``deltarnn run``: a QModel on a board, or on the simulated board, through the host driver."""

from __future__ import annotations

import json
import sys
import time

from .args import add_model_args, lanes, load_array, load_qmodel, pos_float, pos_int
from .errors import UserError

#: The serial rate of every bitstream ``deltarnn build`` makes.
DEFAULT_BAUD = 3_000_000


def _board(name):
    """The :class:`~deltarnn.fpga.boards.BoardSpec` of ``--board``, or None."""
    if name is None:
        return None
    from deltarnn.fpga.build import BoardError, board_spec

    try:
        return board_spec(name)
    except BoardError as e:
        raise UserError(str(e)) from None


def _open_link(args, qm, spec):
    """The link to the board (``--port``) or to a simulated board (``--sim``): the core of ``spec``'s default
    build, or one sized to the model."""
    from deltarnn.device.link import SerialLink

    if args.port:
        return SerialLink(args.port, args.baud or (spec.baud if spec else DEFAULT_BAUD))
    from deltarnn.device.image import DeviceFitError
    from deltarnn.sim import board, runner

    clock_hz, baud = board.SIM_CLOCK_HZ, board.SIM_BAUD    # 4 cycles per bit: the fewest simulated cycles
    if spec:
        params = spec.params
        what = f"the core of the {spec.description} default build"
    else:
        try:
            params = board.params_for(qm, lanes=args.lanes)
        except DeviceFitError as e:
            raise UserError(str(e)) from None
        what = "a core sized to the model"
    print(f"deltarnn: run: simulated board, {what} ({params.cell.upper()}, {params.lanes} lanes, "
          f"{clock_hz / 1e6:g} MHz, UART at {baud:,} baud; the first build of a core takes a minute or more) ...",
          file=sys.stderr, flush=True)
    try:
        return board.SimLink.for_params(params, clock_hz, baud)
    except runner.SimulatorNotFound as e:
        raise UserError(str(e)) from None


def cmd_run(args) -> int:
    import numpy as np

    from deltarnn.device.driver import Device
    from deltarnn.quant.golden import check_input, emulate

    from deltarnn.quant.qmodel import align_outputs, delay_inputs

    qm = load_qmodel(args)
    x = load_array(args.input, "input")
    if x.ndim == 2:
        x = x[None]                                   # one sequence
    # a model trained with an output delay runs that many zero frames past the input (as in emulate)
    x = delay_inputs(check_input(qm, x), qm.output_delay)
    spec = _board(args.board)
    t0 = time.perf_counter()
    with Device(_open_link(args, qm, spec), timeout=args.timeout) as dev:
        dev.load(qm)
        passes = dev.passes(qm)
        total = passes * x.shape[0]
        done = [0]

        def progress(n):
            done[0] += n
            if not args.json or sys.stderr.isatty():
                print(f"deltarnn: run: {done[0]}/{total} sequence passes", file=sys.stderr, flush=True)

        res = dev.run(x, progress=progress)
        ident = dev.identify()
    seconds = time.perf_counter() - t0
    mismatches = None
    if args.verify:
        gold = emulate(qm, x).outputs_fx
        mismatches = int(np.count_nonzero(gold != res.outputs))
    if args.output:
        np.save(args.output, align_outputs(res.outputs, qm.output_delay))
    steps = int(res.step_cycles.size)
    cycles = int(res.step_cycles.sum())
    mhz = (spec.clock_hz if spec else ident.clock_hz) / 1e6    # a simulated board's times at its board's clock
    if args.json:
        print(json.dumps({
            "model": str(args.model), "input_shape": list(x.shape), "link": args.port or "sim",
            "mismatches": mismatches, "timesteps": steps, "sequences": int(x.shape[0]), "passes": res.passes,
            "bytes_sent": res.stats["bytes_sent"], "bytes_received": res.stats["bytes_received"],
            "retries": res.stats["retries"], "reloads": res.stats["reloads"], "device_cycles": cycles,
            "cycles_per_timestep": cycles / steps, "clock_mhz": mhz, "seconds": seconds,
            "output": args.output}, indent=1))
    else:
        where = f"board on {args.port}" if args.port else "simulated board"
        print(f"{args.model} ({qm.cell.upper()}, {qm.num_layers} x {qm.hidden_size}"
              f"{', bidirectional' if qm.bidirectional else ''}) on the {where}: {x.shape[0]} sequence(s), "
              f"{steps:,} time steps, {res.passes} device pass(es) per sequence")
        print(f"device: {cycles:,} cycles, {cycles / steps:,.1f} per time step, {cycles / steps / mhz:,.1f} us per "
              f"time step at its {mhz:g} MHz clock")
        print(f"link: {res.stats['bytes_sent']:,} bytes sent, {res.stats['bytes_received']:,} received, "
              f"{res.stats['retries']} retries, {res.stats['reloads']} reloads; {seconds:.1f} s")
        if mismatches is not None:
            print(f"{'OK' if mismatches == 0 else 'FAILED'}: {mismatches} of {res.outputs.size:,} outputs differ "
                  f"from the golden model")
        if args.output:
            print(f"outputs: {args.output} {res.outputs.shape}")
    return 1 if mismatches else 0


def add_commands(sub) -> None:
    """Add ``run`` to the ``deltarnn`` parser."""
    c = sub.add_parser("run", help="run a .qmodel on a board (--port) or on the simulated board (--sim)",
                       description="Load a QModel onto a board over its serial port, or onto the simulated board "
                                   "(the whole board top, UART included, in Verilator), stream every sequence's "
                                   "input deltas and read the outputs back. A model bigger than the device (more "
                                   "layers, bidirectional) runs in host passes. With --verify, exit status 1 when "
                                   "any output differs from the golden model.")
    add_model_args(c)
    where = c.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", metavar="DEV", help="the board's serial port (/dev/ttyUSB1, COM3)")
    where.add_argument("--sim", action="store_true", help="the simulated board, with a core sized to the model")
    c.add_argument("--board", metavar="B", help="icebreaker or ulx3s-85f: with --sim, simulate the core of that board's "
                   "default build (times at its clock); with --port, its baud rate")
    c.add_argument("--baud", type=pos_int, default=None, help=f"serial rate of --port (default {DEFAULT_BAUD:,}, "
                   "what deltarnn build uses)")
    c.add_argument("--lanes", type=lanes, default=4, metavar="P", help="--sim without --board: MAC lanes of the core "
                   "sized to the model (default 4)")
    c.add_argument("--timeout", type=pos_float, default=0.5, metavar="S",
                   help="seconds to wait for a reply before a retry (default 0.5)")
    c.add_argument("--verify", action="store_true", help="compare every output with the golden model")
    c.add_argument("--output", metavar="Y.npy", help="save the outputs (batch, time, outputs) fixed-point integers")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    c.set_defaults(func=cmd_run)
