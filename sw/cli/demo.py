"""``make demo``: the end-to-end path on a task that trains in seconds.

Train a small recurrent classifier on :mod:`deltarnn.speech.synthetic` data, quantize it
(4-bit weights, 8-bit activations), emulate it bit-exactly at a few delta
thresholds, print accuracy, compression and operations eliminated, then run
a few steps on the gateware core in the Amaranth simulator.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from rich.table import Table

from deltarnn.quant.golden import emulate
from deltarnn.models import RNNModel
from deltarnn.quant.quantizer import quantize
from deltarnn.cli.report import render, stats_table
from deltarnn.speech.synthetic import make_task
from deltarnn.speech.train import frame_accuracy, train_frames


def run_demo(seed: int = 0, cell: str = "gru", hidden: int = 32, out=print, gateware: bool = True,
             gateware_steps: int = 3) -> dict:
    """Run the demo and return its figures (for tests)."""
    t0 = time.perf_counter()
    x_train, y_train = make_task(96, 60, seed=seed)
    x_test, y_test = make_task(32, 200, seed=seed + 1)
    torch.manual_seed(seed)
    model = RNNModel(cell, x_train.shape[2], hidden, num_layers=2, num_classes=int(y_train.max()) + 1)
    out(f"1. training a 2-layer {cell.upper()} ({hidden} units) on a synthetic frame-labelling task ...")
    losses = train_frames(model, x_train, y_train, epochs=12, lr=1e-2, seed=seed)
    with torch.no_grad():
        float_acc = frame_accuracy(model(torch.as_tensor(x_test)).numpy(), y_test)
    out(f"   loss {losses[0]:.3f} -> {losses[-1]:.3f}; float frame accuracy {100 * float_acc:.1f} %")

    out("2. quantizing: 4-bit weights, 8-bit activations, MMSE clipping on the training inputs ...")
    qm = quantize(model, x_train[:32], wbits=4, abits=8)

    out("3. bit-exact emulation with delta networks at several thresholds (x, h in quantization steps):")
    table = Table()
    for col in ("theta_x", "theta_h", "frame accuracy %", "MACs needed", "eliminated %"):
        table.add_column(col, justify="right")
    figures = {"float_accuracy": float_acc, "points": []}
    first = None
    for theta in (0, 1, 2, 4, 8):
        qm.set_thresholds(theta, theta)
        r = emulate(qm, x_test)
        acc = frame_accuracy(r.outputs, y_test)
        first = first or r
        table.add_row(str(theta), str(theta), f"{100 * acc:.1f}", f"{r.stats.macs_needed:,}",
                      f"{r.stats.eliminated_pct:.1f}")
        figures["points"].append({"theta": theta, "accuracy": acc, "eliminated_pct": r.stats.eliminated_pct})
    out(render(table))
    out("")
    out(stats_table(first.stats, title="per-path statistics at theta 0"))
    figures["compression_pct"] = first.stats.compression_pct

    if gateware:
        figures["gateware"] = _gateware(qm, x_test[:1, :gateware_steps], out)
    out(f"done in {time.perf_counter() - t0:.1f} s")
    return figures


def _gateware(qm, x, out) -> dict:
    """Run the quantized model on the core in the Amaranth simulator and compare with the golden model."""
    from deltarnn.hw.core import Core
    from deltarnn.hw.cycles import model_step_cycles
    from deltarnn.hw.drive import run_core

    from deltarnn.spec.memory_map import DeviceParams

    from deltarnn.device.image import input_deltas, pack

    qm.set_thresholds(2, 2)
    params = DeviceParams(qm.cell, lanes=8, max_input=qm.input_size, max_hidden=qm.hidden_size,
                          max_layers=qm.num_layers, max_classes=max(qm.num_classes, 1), wmem_bits=4, abits=8,
                          acc_bits=qm.accumulator_bits())
    out(f"4. the gateware core (P = {params.lanes} lanes) in the Amaranth simulator, {x.shape[1]} steps at theta 2 ...")
    gold = emulate(qm, x)
    run = run_core(Core(params, **pack(qm, params).core_init()), input_deltas(qm, x[0]), qm.output_size)
    equal = bool(np.array_equal(run.outputs, gold.outputs_fx[0]))
    predicted = model_step_cycles(qm, params, gold.step_deltas)
    out(f"   outputs bit-identical to the golden model: {'yes' if equal else 'NO'}; cycles per step "
        f"{run.step_cycles} (cycle model {'agrees' if predicted == run.step_cycles else 'DISAGREES'})")
    return {"equal": equal, "step_cycles": run.step_cycles, "predicted": predicted}
