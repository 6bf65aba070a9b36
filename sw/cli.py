"""The ``deltarnn`` command line.

Heavy modules (torch, the gateware, the simulators) are imported inside the
commands, so ``deltarnn --help`` stays fast. A user's mistake ends in one
line ``deltarnn: error: ...`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _user_errors():
    """Exception types that mean "the user's input is wrong"."""
    from .golden import EmulationError
    from .models import UnsupportedModelError
    from .qmodel import QModelFormatError
    from .quant import QuantizationError
    return (UserError, EmulationError, UnsupportedModelError, QModelFormatError, QuantizationError)


def load_array(path: str, what: str):
    """Load a ``.npy`` file or fail with a message naming it."""
    import numpy as np

    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} file {path}: no such file")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy raises several kinds for a bad file
        raise UserError(f"{what} file {path} is not a NumPy .npy array ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise UserError(f"{what} file {path} is not a NumPy .npy array (it is a zip archive, such as .npz "
                        "or a torch file); give one (batch, time, features) .npy array")
    return arr


# --- quantize ---------------------------------------------------------------------------


def cmd_quantize(args) -> int:
    import numpy as np

    from .models import load_torch_model
    from .quant import quantize

    out = Path(args.output)
    if not out.parent.exists():
        raise UserError(f"output directory {out.parent} does not exist")
    model = load_torch_model(args.model)
    if args.calib:
        calib = load_array(args.calib, "calibration")
        if calib.ndim != 3 or calib.shape[2] != model.input_size:
            raise UserError(f"calibration data {args.calib} has shape {calib.shape}; "
                            f"expected (batch, time, {model.input_size})")
        source = args.calib
    else:
        calib = np.random.default_rng(args.seed).normal(size=(16, 100, model.input_size)).astype(np.float32)
        source = "random normal data"
        print("deltarnn: no --calib given: calibrating activation ranges on random normal data "
              "(give real inputs with --calib X.npy for accurate clipping)", file=sys.stderr)
    qm = quantize(model, calib, wbits=args.wbits, abits=args.abits, skip=args.skip,
                  meta={"source": str(args.model), "calibration": source})
    qm.save(out)
    print(f"wrote {out}: {qm.cell}, {qm.num_layers} layer(s) x {qm.hidden_size} units"
          f"{' bidirectional' if qm.bidirectional else ''}, weights {args.wbits} bit, activations "
          f"{args.abits} bit, skipped paths: {', '.join(args.skip) or 'none'}, "
          f"accumulators {qm.accumulator_bits()} bit")
    return 0


# --- emulate ----------------------------------------------------------------------------


def cmd_emulate(args) -> int:
    import numpy as np

    from .golden import emulate
    from .qmodel import QModel
    from .report import stats_table

    qm = QModel.load(args.model)
    try:
        qm.set_thresholds(args.theta_x, args.theta_h)
    except ValueError as e:
        raise UserError(str(e)) from None
    x = load_array(args.input, "input")
    result = emulate(qm, x)
    if args.output:
        np.save(args.output, result.outputs)
    if args.json:
        print(json.dumps({"model": str(args.model), "input_shape": list(x.shape),
                          "thresholds": {k: a.theta for k, a in qm.paths().items()},
                          "stats": result.stats.as_dict()}, indent=1))
    else:
        print(stats_table(result.stats, title=f"{args.model} on {args.input} {tuple(x.shape)}"))
        if args.output:
            print(f"wrote {args.output}: outputs {result.outputs.shape}")
    return 0


# --- demo ------------------------------------------------------------------------------


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(seed=args.seed, cell=args.cell)
    return 0


# --- cosim -----------------------------------------------------------------------------


def cmd_cosim(args) -> int:
    import time

    from .device import DeviceFitError
    from .golden import check_input
    from .qmodel import QModel

    if args.lanes < 1 or args.lanes & (args.lanes - 1):
        raise UserError(f"--lanes must be a power of two, got {args.lanes}")
    qm = QModel.load(args.model)
    try:
        qm.set_thresholds(args.theta_x, args.theta_h)
    except ValueError as e:
        raise UserError(str(e)) from None
    x = check_input(qm, load_array(args.input, "input"))
    from sim import cosim, runner   # heavy (Amaranth, cocotb): only here

    try:
        params = cosim.device_params_for(qm, lanes=args.lanes)
    except DeviceFitError as e:
        raise UserError(str(e)) from None
    waves = None
    if args.waves:
        waves = Path(args.waves).suffix.lower().lstrip(".")
        if waves not in ("vcd", "fst"):
            raise UserError(f"--waves {args.waves}: give a .vcd or .fst file name")
        if waves == "vcd" and args.simulator == "icarus":
            raise UserError("Icarus records FST waves only: give --waves OUT.fst")
        if waves == "fst" and args.simulator == "verilator" and not runner.fst_supported():
            raise UserError("this Verilator cannot write FST (no <lz4.h>; install liblz4-dev): "
                            "give --waves OUT.vcd")
    total = x.shape[0] * x.shape[1]
    t0 = time.perf_counter()

    def progress(info):
        print(f"deltarnn: cosim: {info['timesteps']:,}/{total:,} time steps, "
              f"{info['sim_cycles_per_s']:,.0f} simulated cycles/s", file=sys.stderr, flush=True)

    print(f"deltarnn: cosim: {args.simulator} model of a {qm.cell.upper()} core with {params.lanes} lanes "
          f"(the first build of a core size takes one to two minutes; later runs reuse it) ...",
          file=sys.stderr, flush=True)
    try:
        res = cosim.run_cosim(qm, x, params=params, simulator=args.simulator, waves=waves,
                              wave_path=args.waves, progress=progress, keep_run_dir=False)
    except runner.SimulatorNotFound as e:
        raise UserError(str(e)) from None
    except runner.SimulationError as e:     # the build failed or the simulator crashed
        print(f"deltarnn: cosim: the simulation failed: {e}", file=sys.stderr)
        return 1
    if args.json:
        keys = ("mismatches", "output_mismatches", "state_mismatches", "first_divergence", "timesteps",
                "sequences", "cycles", "cycles_per_timestep", "sim_cycles", "sim_cycles_per_s",
                "sim_cycles_per_cpu_s", "cycle_model_mismatches", "build_s", "rebuilt", "error", "waves", "log")
        out = {"model": str(args.model), "input_shape": list(x.shape), "simulator": args.simulator,
               "params": params.as_dict(), **{k: getattr(res, k) for k in keys},
               "wall_s": time.perf_counter() - t0}
        print(json.dumps(out, indent=1))
    else:
        status = "OK" if res.ok else "FAILED"
        print(f"{status}: {args.model} ({qm.cell.upper()}, {qm.num_layers} x {qm.hidden_size}) on {args.input} "
              f"{tuple(x.shape)}: {res.timesteps:,} time steps in {res.sequences} sequence(s), "
              f"{res.mismatches} mismatches ({res.output_mismatches} outputs, {res.state_mismatches} hidden-state "
              f"words)")
        if res.first_divergence:
            print(f"first divergence: {res.describe_divergence()}")
        if res.error:
            print(f"error: {res.error}")
        print(f"core: {res.cycles:,} cycles, {res.cycles_per_timestep:,.1f} per time step "
              f"({params.lanes} lanes)")
        print(f"{args.simulator}: {res.sim_cycles_per_s:,.0f} simulated cycles/s; build "
              f"{'%.1f s' % res.build_s if res.rebuilt else 'reused'}; total {time.perf_counter() - t0:.1f} s")
        if res.waves:
            print(f"waves: {res.waves}")
        if not res.ok:
            print(f"log: {res.log}")
    return 0 if res.ok else 1


# --- parser ----------------------------------------------------------------------------


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _bits(text: str) -> int:
    v = _nonneg_int(text)
    if not 2 <= v <= 16:
        raise argparse.ArgumentTypeError(f"must be between 2 and 16, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deltarnn",
        description="Quantize recurrent networks, emulate them bit-exactly with delta networks, "
                    "and run them on FPGA gateware.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    q = sub.add_parser("quantize", help="quantize a trained PyTorch model to a .qmodel file",
                       description="Post-training quantization with MMSE clipping. MODEL.pt is a torch.save()d "
                                   "module: an nn.LSTM or nn.GRU, a deltarnn model, or a module holding one "
                                   "nn.LSTM/nn.GRU and at most one nn.Linear head.")
    q.add_argument("model", metavar="MODEL.pt")
    q.add_argument("-o", "--output", required=True, metavar="OUT.qmodel")
    q.add_argument("--wbits", type=_bits, default=4, metavar="N", help="weight bits, 2..16 (default 4)")
    q.add_argument("--abits", type=_bits, default=8, metavar="N", help="activation bits, 2..16 (default 8)")
    q.add_argument("--skip", nargs="+", default=[], metavar="LAYER.x|LAYER.h",
                   help="paths left at 16 bits, e.g. 0.x 1.h head.x")
    q.add_argument("--calib", metavar="X.npy",
                   help="float32 calibration inputs (batch, time, features); default: random data")
    q.add_argument("--seed", type=int, default=0, help="seed of the random calibration data")
    q.set_defaults(func=cmd_quantize)

    e = sub.add_parser("emulate", help="run a .qmodel bit-exactly on inputs and count operations",
                       description="Bit-exact integer emulation with delta networks (the golden model).")
    e.add_argument("model", metavar="MODEL.qmodel")
    e.add_argument("--input", required=True, metavar="X.npy", help="float32 inputs (batch, time, features)")
    e.add_argument("--theta-x", type=_nonneg_int, default=None, metavar="T",
                   help="delta threshold of every x path (and the head), in quantization steps "
                        "(default: the value stored in the model, 0 unless set)")
    e.add_argument("--theta-h", type=_nonneg_int, default=None, metavar="T",
                   help="delta threshold of every h path, in quantization steps")
    e.add_argument("--output", metavar="Y.npy", help="write the dequantized float outputs (batch, time, outputs)")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    e.set_defaults(func=cmd_emulate)

    d = sub.add_parser("demo", help="train a tiny model, quantize it, emulate it, print the statistics",
                       description="End-to-end demo on a synthetic sequence-labelling task (seconds).")
    d.add_argument("--cell", choices=["lstm", "gru", "ligru", "sru"], default="gru")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("cosim", help="run a .qmodel on the simulated gateware and compare with the golden model",
                       description="Co-simulation: elaborate a core sized to the model, load the model with WRITE "
                                   "commands, run every sequence (RESET before each) in Verilator (or Icarus) "
                                   "under cocotb, and compare every output and every layer's hidden state with "
                                   "the golden model. Exit status 1 on any mismatch.")
    c.add_argument("model", metavar="MODEL.qmodel")
    c.add_argument("--input", required=True, metavar="X.npy", help="float32 inputs (batch, time, features)")
    c.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    c.add_argument("--theta-x", type=_nonneg_int, default=None, metavar="T",
                   help="delta threshold of every x path (and the head), in quantization steps")
    c.add_argument("--theta-h", type=_nonneg_int, default=None, metavar="T",
                   help="delta threshold of every h path, in quantization steps")
    c.add_argument("--waves", metavar="OUT.vcd", help="record waves (.vcd; .fst where supported); about 1 kB per "
                   "simulated cycle")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    c.add_argument("--lanes", type=_nonneg_int, default=4, metavar="P", help="MAC lanes of the core (power of two, "
                   "default 4)")
    c.set_defaults(func=cmd_cosim)

    from .study_cli import add_commands as add_study_commands
    add_study_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"deltarnn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deltarnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Import by name, so `python -m sw.cli` and the subcommands share one UserError class.
    from sw.cli import main as _main
    sys.exit(_main())
