"""``deltarnn train``, ``deltarnn study`` and ``deltarnn study-inputs``: the speech study."""

from __future__ import annotations

import argparse

from .args import CELLS, nonneg_int, pos_float, pos_int, unit_float
from .errors import UserError


# --- train ------------------------------------------------------------------------------


def cmd_train(args) -> int:
    from deltarnn.speech.train import TrainConfig, TrainError, train_speech

    cfg = TrainConfig(cell=args.cell, dataset=args.dataset, layers=args.layers, hidden=args.hidden,
                      bidirectional=args.bidirectional, epochs=args.epochs, lr=args.lr, batch=args.batch,
                      seed=args.seed, max_utts=args.max_utts, dropout=args.dropout,
                      delay=args.delay if args.delay is not None else (0 if args.bidirectional else 3))
    try:
        res = train_speech(cfg, args.output, resume=args.resume, progress=not args.no_progress,
                           threads=args.threads)
    except TrainError as e:
        raise UserError(str(e)) from None
    print(f"wrote {res.model_path}: best dev FER {res.best_dev_fer:.2f} % (undecoded PER {res.best_dev_per:.2f} %, "
          f"epoch {res.best_epoch + 1}); "
          f"checkpoint {res.checkpoint_path}")
    return 0


# --- study ------------------------------------------------------------------------------


def cmd_study(args) -> int:
    from deltarnn.speech.study import StudyError, run_study, study_config

    try:
        cfg = study_config(quick=args.quick, tiny=args.tiny, dataset=args.dataset, out=args.out,
                           cells=args.cells, models=args.models, workers=args.workers,
                           scheduler=args.scheduler, epochs=args.epochs, hidden=args.hidden,
                           layers=args.layers)
        run_study(cfg, progress=not args.no_progress)
    except StudyError as e:
        raise UserError(str(e)) from None
    return 0


def cmd_study_inputs(args) -> int:
    from pathlib import Path

    from deltarnn.speech.study import StudyError, export_inputs, make_evalset
    from deltarnn.speech.train import TrainError, load_split

    try:
        _, utts = load_split(args.dataset, args.split, args.max_utts)
    except (TrainError, StudyError) as e:
        raise UserError(str(e)) from None
    out = Path(args.output)
    if not out.parent.exists():
        raise UserError(f"output directory {out.parent} does not exist")
    export_inputs(make_evalset(args.split, utts, 1), out)
    print(f"wrote {len(utts)} inputs {out}/0000.npy ... (1, T, {utts[0].features.shape[1]}) and {out}/labels.npz")
    return 0


def add_commands(sub) -> None:
    """Add the study's subcommands to the ``deltarnn`` parser."""
    t = sub.add_parser("train", help="train a phone classifier on a speech corpus",
                       description="Train a per-frame phone classifier (RNNModel with a linear head) on "
                                   "a speech corpus, report the dev-split frame error rate (FER) and "
                                   "undecoded phone error rate every epoch, save a checkpoint every epoch "
                                   "(MODEL.pt.ckpt) and keep the model with the best dev FER in MODEL.pt "
                                   "(accepted by 'deltarnn quantize').")
    t.add_argument("--cell", required=True, choices=CELLS)
    t.add_argument("--dataset", required=True, metavar="NAME", help="espeak, espeak-tiny or timit")
    t.add_argument("--layers", type=pos_int, default=2, metavar="N", help="recurrent layers (default 2)")
    t.add_argument("--hidden", type=pos_int, default=128, metavar="H", help="units per layer (default 128)")
    t.add_argument("--bidirectional", action="store_true")
    t.add_argument("-o", "--output", required=True, metavar="MODEL.pt")
    t.add_argument("--epochs", type=pos_int, default=20, metavar="N", help="(default 20)")
    t.add_argument("--lr", type=pos_float, default=2e-3, help="Adam learning rate (default 0.002), annealed "
                   "along a cosine to 5 %% of it by the last epoch")
    t.add_argument("--batch", type=pos_int, default=16, metavar="N", help="utterances per batch (default 16)")
    t.add_argument("--delay", type=nonneg_int, default=None, metavar="D",
                   help="output delay in frames: the output at frame t+D labels frame t (lookahead for a "
                        "streaming model; default 3, and 0 with --bidirectional)")
    t.add_argument("--dropout", type=unit_float, default=0.1, metavar="P",
                   help="dropout on every layer's output in training (default 0.1)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-utts", type=pos_int, default=None, metavar="N",
                   help="use only the first N utterances of train and dev (quick runs)")
    t.add_argument("--resume", action="store_true", help="continue from MODEL.pt.ckpt")
    t.add_argument("--threads", type=pos_int, default=None, metavar="N", help="torch CPU threads")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("study", help="quantization and delta-threshold study on a speech corpus",
                       description="For each cell type: float baseline PER, quantization at several widths, "
                                   "greedy choice of paths left at 16 bits, a grid of delta thresholds and "
                                   "the Pareto front of PER against eliminated operations (golden model). "
                                   "Sweeps run on Dask (a LocalCluster unless --scheduler). Writes "
                                   "study.md, study.json and PNG plots to --out. See docs/study.md.")
    s.add_argument("--quick", action="store_true", help="small models, few epochs, small grids (< 10 min)")
    s.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the test suite's version
    s.add_argument("--dataset", default=None, metavar="NAME", help="espeak (default), espeak-tiny, timit")
    s.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default benchmarks/results/study or study-quick)")
    s.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of a running Dask scheduler (default: start a LocalCluster)")
    s.add_argument("--workers", type=pos_int, default=2, metavar="N",
                   help="LocalCluster worker processes, one thread each (default 2)")
    s.add_argument("--cells", nargs="+", choices=CELLS, default=None, help="cell types (default all four)")
    s.add_argument("--models", default=None, metavar="DIR",
                   help="folder of trained CELL.pt models to use (those missing are trained)")
    s.add_argument("--epochs", type=pos_int, default=None, metavar="N", help="training epochs")
    s.add_argument("--hidden", type=pos_int, default=None, metavar="H", help="units per layer")
    s.add_argument("--layers", type=pos_int, default=None, metavar="N", help="recurrent layers")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_study)

    e = sub.add_parser("study-inputs", help="export a corpus split as one .npy per utterance (for emulate)",
                       description="Write NNNN.npy (1, T, features) float32 per utterance, in corpus order, and "
                                   "labels.npz: the inputs on which the study's statistics can be reproduced "
                                   "with 'deltarnn emulate' (see docs/study.md).")
    e.add_argument("--dataset", required=True, metavar="NAME")
    e.add_argument("--split", default="test")
    e.add_argument("--max-utts", type=pos_int, default=None, metavar="N", help="only the first N utterances")
    e.add_argument("-o", "--output", required=True, metavar="DIR")
    e.set_defaults(func=cmd_study_inputs)
