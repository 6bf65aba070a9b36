"""``deltarnn quantize``, ``deltarnn emulate`` and ``deltarnn demo``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .args import add_model_args, bits, load_array, load_qmodel, pos_int
from .errors import UserError


def cmd_quantize(args) -> int:
    import numpy as np

    from deltarnn.models import load_torch_model
    from deltarnn.quant.quantizer import quantize

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



def cmd_emulate(args) -> int:
    import numpy as np

    from deltarnn.cli.report import stats_table
    from deltarnn.quant.qmodel import align_outputs, delay_inputs
    from deltarnn.quant.golden import check_input, emulate

    qm = load_qmodel(args)
    x = load_array(args.input, "input")
    # a model trained with an output delay runs that many zero frames past the input; its outputs are
    # aligned back to the input frames (the operations of the extra frames are counted)
    delay = qm.output_delay
    result = emulate(qm, delay_inputs(check_input(qm, x), delay))
    outputs = align_outputs(result.outputs, delay)
    if args.output:
        np.save(args.output, outputs)
    if args.json:
        print(json.dumps({"model": str(args.model), "input_shape": list(x.shape), "output_delay": delay,
                          "thresholds": {k: a.theta for k, a in qm.paths().items()},
                          "stats": result.stats.as_dict()}, indent=1))
    else:
        print(stats_table(result.stats, title=f"{args.model} on {args.input} {tuple(x.shape)}"))
        if args.output:
            print(f"wrote {args.output}: outputs {outputs.shape}")
    return 0



def cmd_demo(args) -> int:
    from deltarnn.cli.demo import run_demo

    figures = run_demo(work_dir=args.out, board_utterances=args.utterances, bitstream=not args.no_bitstream)
    return 0 if figures["board"]["equal"] else 1



def add_commands(sub) -> None:
    """Add ``quantize``, ``emulate`` and ``demo`` to the ``deltarnn`` parser."""
    q = sub.add_parser("quantize", help="quantize a trained PyTorch model to a .qmodel file",
                       description="Post-training quantization with MMSE clipping. MODEL.pt is a torch.save()d "
                                   "module: an nn.LSTM or nn.GRU, a deltarnn model, or a module holding one "
                                   "nn.LSTM/nn.GRU and at most one nn.Linear head.")
    q.add_argument("model", metavar="MODEL.pt")
    q.add_argument("-o", "--output", required=True, metavar="OUT.qmodel")
    q.add_argument("--wbits", type=bits, default=4, metavar="N", help="weight bits, 2..16 (default 4)")
    q.add_argument("--abits", type=bits, default=8, metavar="N", help="activation bits, 2..16 (default 8)")
    q.add_argument("--skip", nargs="+", default=[], metavar="LAYER.x|LAYER.h",
                   help="paths left at 16 bits, e.g. 0.x 1.h head.x")
    q.add_argument("--calib", metavar="X.npy",
                   help="float32 calibration inputs (batch, time, features); default: random data")
    q.add_argument("--seed", type=int, default=0, help="seed of the random calibration data")
    q.set_defaults(func=cmd_quantize)

    e = sub.add_parser("emulate", help="run a .qmodel bit-exactly on inputs and count operations",
                       description="Bit-exact integer emulation with delta networks (the golden model).")
    add_model_args(e)
    e.add_argument("--output", metavar="Y.npy", help="write the dequantized float outputs (batch, time, outputs)")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    e.set_defaults(func=cmd_emulate)

    d = sub.add_parser("demo", help="a shipped speech model: quantized, swept, run on the simulated board, "
                                    "and the iCEBreaker bitstream",
                       description="The whole path on a speech model the project trained and ships (the study's "
                                   "GRU 2 x 128, with a dozen test utterances): float and quantized accuracy, size "
                                   "and eliminated operations at several delta thresholds, a plot of PER against "
                                   "eliminated operations, a few utterances on the simulated board over the UART "
                                   "protocol (bit-exact verdict, cycles per step, throughput), and the iCEBreaker "
                                   "bitstream's resource and Fmax report. No data or board needed; the simulated "
                                   "board and the bitstream are cached under build/. Exit status 1 if the board's "
                                   "outputs differ from the golden model.")
    d.add_argument("--out", default="build/demo", metavar="DIR", help="where the plot and the bitstream go "
                   "(default build/demo)")
    d.add_argument("--utterances", type=pos_int, default=2, metavar="N",
                   help="utterances run on the simulated board (default 2)")
    d.add_argument("--no-bitstream", action="store_true", help="skip the iCEBreaker build")
    d.set_defaults(func=cmd_demo)

