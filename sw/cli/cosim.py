"""``deltarnn cosim``: a QModel on the simulated gateware, compared with the golden model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .args import add_model_args, lanes, load_array, load_qmodel
from .errors import UserError


def cmd_cosim(args) -> int:
    import time

    from deltarnn.device.image import DeviceFitError
    from deltarnn.quant.golden import check_input

    qm = load_qmodel(args)
    x = check_input(qm, load_array(args.input, "input"))
    from deltarnn.sim import cosim, runner   # heavy (Amaranth, cocotb): only here

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



def add_commands(sub) -> None:
    """Add ``cosim`` to the ``deltarnn`` parser."""
    c = sub.add_parser("cosim", help="run a .qmodel on the simulated gateware and compare with the golden model",
                       description="Co-simulation: elaborate a core sized to the model, load the model with WRITE "
                                   "commands, run every sequence (RESET before each) in Verilator (or Icarus) "
                                   "under cocotb, and compare every output and every layer's hidden state with "
                                   "the golden model. Exit status 1 on any mismatch.")
    add_model_args(c)
    c.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    c.add_argument("--waves", metavar="OUT.vcd", help="record waves (.vcd; .fst where supported); about 1 kB per "
                   "simulated cycle")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    c.add_argument("--lanes", type=lanes, default=4, metavar="P", help="MAC lanes of the core (power of two, "
                   "default 4)")
    c.set_defaults(func=cmd_cosim)

