"""Golden-model throughput against PyTorch float inference of the same model.

For each cell type: a 2-layer, 128-unit model with a 40-class head on
40-feature inputs, batch 32 x 200 steps. Both run in this one process,
alternating, several rounds; the figure is sequence steps x batch per
second, and the ratio golden / PyTorch of the medians. Each uses its default
threads: PyTorch its intra-op threads, the golden model one thread per CPU
over parts of the batch (:func:`deltarnn.quant.golden.default_threads`).
The machine's load average before and after is recorded with the figures:
other work on the CPUs slows both sides, PyTorch's threads most. Each timed
call starts after an untimed pause (:data:`SETTLE_S`): PyTorch's OpenMP
workers spin, waiting for more work, for about 10 ms after each call, and
would otherwise take CPUs from the golden model's threads timed next.

    python benchmarks/golden_throughput.py [--rounds N] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

from deltarnn.quant.golden import default_threads, emulate
from deltarnn.models import RNNModel
from deltarnn.quant.quantizer import quantize


#: Seconds of untimed pause before each timed call, longer than PyTorch's workers spin after theirs.
SETTLE_S = 0.05


def timed(fn) -> float:
    time.sleep(SETTLE_S)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(args.batch, args.steps, 40)).astype(np.float32)
    xt = torch.as_tensor(x)
    work = args.batch * args.steps
    rows = []
    load_before = os.getloadavg()[0]
    print(f"threads: torch {torch.get_num_threads()}, golden {default_threads(args.batch)}; batch {args.batch} x {args.steps} steps; "
          f"2 layers x {args.hidden} units, 40 inputs, 40 classes; {args.rounds} rounds")
    print(f"{'cell':6} {'torch float steps/s':>20} {'golden steps/s':>16} {'golden/torch':>13}")
    for cell in ("lstm", "gru", "ligru", "sru"):
        model = RNNModel(cell, 40, args.hidden, 2, False, 40).eval()
        qm = quantize(model, x[:8], 4, 8)
        t_torch, t_gold = [], []
        with torch.no_grad():
            model(xt)
            for _ in range(args.rounds):
                t_torch.append(timed(lambda: model(xt)))
                t_gold.append(timed(lambda: emulate(qm, x)))
        f_torch = work / statistics.median(t_torch)
        f_gold = work / statistics.median(t_gold)
        rows.append({"cell": cell, "torch_steps_per_s": f_torch, "golden_steps_per_s": f_gold,
                     "ratio": f_gold / f_torch})
        print(f"{cell:6} {f_torch:20,.0f} {f_gold:16,.0f} {f_gold / f_torch:13.2f}")
    load = {"before": load_before, "after": os.getloadavg()[0]}
    print(f"load average (1 min): {load['before']:.2f} before, {load['after']:.2f} after")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "settle_s": SETTLE_S, "torch_threads": torch.get_num_threads(),
                       "golden_threads": default_threads(args.batch), "load_average_1min": load,
                       "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
