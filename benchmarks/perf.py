#!/usr/bin/env python3
"""The core on speech: cycles per step against the sparse bound, Fmax, effective GOp/s.

For each reference configuration (a board, a cell, a model of the study) the
study's test utterances run through the golden model at the study's chosen
delta thresholds and at threshold 0. Every step's deltas per path give:

- cycles per step, from the cycle model (:mod:`deltarnn.hw.cycles`), which
  the co-simulation confirms: the first utterance's first ``--cosim-steps``
  steps run in Verilator on the configuration's core, and the core's
  ``STEP_CYCLES`` must equal the model on every one of them;
- the sparse bound, ``sum over paths of nnz(deltas) * ceil(rows / P)``: the
  MxV cycles alone, and the ratio of the two (``bound_ratio``);
- with the post-place-and-route Fmax of the configuration's synthesis record
  (``benchmarks/results/synth/``): latency per step, real-time factor for
  10 ms frames, effective GOp/s (``2 * dense MACs per step / time per
  step``) and the dense peak (``2 * P * Fmax``). A configuration whose build
  does not fit has no Fmax and none of these; the page then gives them at the
  Fmax of the nearest build that fits, named as such.

Side by side: the previous design (the sequential cell engine, 54 / 45 / 28 /
40 cycles per LSTM / GRU / LiGRU / SRU neuron and 7 / 3 per output, at its
measured Fmax) recomputed from the same deltas, and EdgeDRNN's published
20.2 GOp/s. Per cell type, the study's 2 x 128 models give the ratio to the
bound at P = 8 and P = 32. A plot shows cycles per step against the bound
over sparsity (a sweep of thresholds on the ECP5 GRU). Last, the study's own
choice for the 2 x 256 GRU, its skipped 16-bit path included, on the ECP5
core with 4-bit slots: what the slices of the skipped matrix cost in cycles
per step, and a co-simulation of it.

Writes ``perf.md``, ``perf.json`` and ``perf.png`` to ``--out``
(``benchmarks/results``). Run by ``make bench``::

    python benchmarks/perf.py [--utterances N] [--cosim-steps T] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from deltarnn.fpga.harness import CONFIGS
from deltarnn.hw import cycles as CY
from deltarnn.hw.mxv import pass_cycles
from deltarnn.quant.golden import emulate
from deltarnn.quant.qmodel import QModel, delay_inputs
from deltarnn.spec.memory_map import H_BLOCKS, X_BLOCKS, DeviceParams, ceil_div

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "benchmarks" / "results" / "study"
STUDY_256 = ROOT / "benchmarks" / "results" / "study-256"
SYNTH = ROOT / "benchmarks" / "results" / "synth"
FRAME_MS = 10.0
EDGEDRNN_GOPS = 20.2
#: The previous design: cycles per neuron of the sequential engine, and its Fmax (synthesis records of commit 0d35115).
OLD_PROGRAM_CYCLES = {"lstm": 54, "gru": 45, "ligru": 28, "sru": 40}
OLD_HEAD_OUT, OLD_H_OUT = 7, 3
OLD_FMAX_MHZ = {"ulx3s-85f": 36.73, "icebreaker": 10.28}
#: Fitting builds whose Fmax stands in, labelled, for a configuration that does not fit.
NEAREST_FIT = {"ulx3s-85f": "ecp5-p32", "icebreaker": "ice40-p8"}


@dataclass(frozen=True)
class PerfConfig:
    name: str
    synth: str            #: key of deltarnn.fpga.harness.CONFIGS
    study_dir: Path
    cell: str

    @property
    def board(self) -> str:
        return CONFIGS[self.synth].board

    @property
    def params(self):
        return CONFIGS[self.synth].params


REFERENCE = [
    PerfConfig("ecp5-gru-2x256", "ecp5-p32-2x256", STUDY_256, "gru"),
    PerfConfig("ecp5-lstm-2x256", "ecp5-p32-lstm-2x256", STUDY_256, "lstm"),
    PerfConfig("ice40-gru-2x128", "ice40-p8-2x128", STUDY, "gru"),
]


# --- models and inputs ----------------------------------------------------------------------------

def chosen(study_dir: Path, cell: str) -> dict:
    """The study's dev-chosen point of ``cell``: widths and thresholds."""
    s = json.loads((study_dir / "study.json").read_text())["cells"][cell]
    return {**s["chosen"], "theta_x": s["chosen_point_select"]["theta_x"],
            "theta_h": s["chosen_point_select"]["theta_h"],
            "model_file": str((study_dir / "models" / f"{cell}.pt").relative_to(ROOT))}


def device_qmodel(study_dir: Path, cell: str, train_utts) -> tuple[QModel, dict]:
    """The study's model quantized for a build with 4-bit weight slots: 4-bit weights, no skipped path,
    the study's chosen activation width and thresholds."""
    import torch  # noqa: F401  (the float model)

    from deltarnn.models import load_torch_model
    from deltarnn.quant.quantizer import quantize
    from deltarnn.speech.study.driver import calibration_inputs

    ch = chosen(study_dir, cell)
    model = load_torch_model(ROOT / ch["model_file"])
    qm = quantize(model, calibration_inputs(train_utts, 64, 0), wbits=4, abits=ch["abits"], skip=[])
    qm.set_thresholds(ch["theta_x"], ch["theta_h"])
    return qm, ch


def path_rows(qm: QModel) -> dict[str, int]:
    """Rows of every path's matrix."""
    rows = {}
    for i, layer in enumerate(qm.layers):
        ident = qm.cell == "sru" and layer.directions[0].highway is not None
        rows[f"{i}.x"] = (X_BLOCKS[qm.cell] - int(ident)) * qm.hidden_size
        if H_BLOCKS[qm.cell]:
            rows[f"{i}.h"] = H_BLOCKS[qm.cell] * qm.hidden_size
    if qm.head is not None:
        rows["head.x"] = qm.num_classes
    return rows


def dense_macs(qm: QModel) -> int:
    """Multiply-accumulates of one dense step."""
    return sum(m.rows * m.cols for name in qm.paths() for m in qm.matrices(name))


def old_step_cycles(qm: QModel, lanes: int, deltas: dict) -> int:
    """The previous design's cycle model: the same phases, the sequential engine, every encode a scan in a phase
    of its own, passes of 2 and 3 words padded to 4 cycles."""
    new = dict(CY.step_phases(qm.cell, lanes, qm.hidden_size, qm.num_classes, deltas,
                              [d.directions[0].highway is not None for d in qm.layers]))
    total = sum(new.values())
    total += sum(deltas[p] * (pass_cycles(ceil_div(rows, lanes)) - pass_cycles(ceil_div(rows, lanes), lanes))
                 for p, rows in path_rows(qm).items())
    total += sum(CY.encode_cycles(qm.hidden_size) - c for name, c in new.items() if name.endswith(" encode"))
    for i in range(qm.num_layers):
        total += qm.hidden_size * OLD_PROGRAM_CYCLES[qm.cell] + 2 - new[f"{i} cell"]
    total += (qm.num_classes * OLD_HEAD_OUT if qm.num_classes else qm.hidden_size * OLD_H_OUT) + 2 - new["output"]
    return total


def step_figures(qm: QModel, utts, lanes: int, slices: dict | None = None, width: int = 1) -> dict:
    """Per-step cycles (model, previous design) and sparse bound over ``utts``, and the deltas' sparsity.

    ``slices``: the weight slices of each path on the build (default 1: every weight in one slot);
    ``width``: the engine's lanes.
    """
    rows = path_rows(qm)
    new, old, bound, nnz, dense_in = [], [], [], 0, 0
    for u in utts:
        r = emulate(qm, delay_inputs(u.features[None].astype(np.float32), qm.output_delay), threads=1)
        steps = r.outputs_fx.shape[1]
        for t in range(steps):
            d = {k: int(v[0, t]) for k, v in r.step_deltas.items()}
            new.append(CY.step_cycles(qm.cell, lanes, qm.hidden_size, qm.num_classes, d,
                                      [x.directions[0].highway is not None for x in qm.layers], slices, width))
            old.append(old_step_cycles(qm, lanes, d))
            bound.append(sum(d[p] * ceil_div(rows[p], lanes) for p in rows))
        nnz += r.stats.macs_needed
        dense_in += r.stats.macs_dense
    total = np.sum(bound)      # 0 when every delta is suppressed: no ratio
    return {"steps": len(new), "cycles": float(np.mean(new)), "old_cycles": float(np.mean(old)),
            "bound": float(np.mean(bound)), "bound_ratio": float(np.sum(new) / total) if total else None,
            "old_bound_ratio": float(np.sum(old) / total) if total else None,
            "eliminated_pct": 100.0 * (1 - nnz / dense_in), "per_step_cycles": new}


def skipped_path(study_dir: Path, cell: str, train_utts, test_utts, synth: str, cosim_steps: int) -> dict:
    """The study's own choice for ``cell``, its skipped 16-bit path included, on a build with 4-bit slots:
    the skipped matrix runs as weight slices. Cycles per step against the same steps with every weight
    in one slot (what a build with 16-bit slots would take, were it to fit), and a co-simulation."""
    from dataclasses import replace

    from deltarnn.models import load_torch_model
    from deltarnn.quant.quantizer import quantize
    from deltarnn.speech.study.driver import calibration_inputs
    from deltarnn.device.image import weight_words

    ch = chosen(study_dir, cell)
    model = load_torch_model(ROOT / ch["model_file"])
    qm = quantize(model, calibration_inputs(train_utts, 64, 0), wbits=ch["wbits"], abits=ch["abits"],
                  skip=ch["skip"])
    qm.set_thresholds(ch["theta_x"], ch["theta_h"])
    base = CONFIGS[synth].params
    params = replace(base, abits=16, max_wbits=16, acc_bits=max(base.acc_bits, qm.accumulator_bits()))
    params = replace(params, weight_words=max(params.weight_depth, weight_words(qm, params)))
    slices = CY.model_slices(qm, params.wmem_bits)
    sliced = step_figures(qm, test_utts, params.lanes, slices, params.engine_width)
    whole = step_figures(qm, test_utts, params.lanes, width=params.engine_width)
    out = {"cell": cell, "model": ch["model_file"], "wbits": ch["wbits"], "abits": ch["abits"], "skip": ch["skip"],
           "theta_x": ch["theta_x"], "theta_h": ch["theta_h"], "slices": {k: v for k, v in slices.items() if v > 1},
           "params": params.as_dict(), "weight_words": weight_words(qm, params),
           "cycles": sliced["cycles"], "cycles_one_slot": whole["cycles"],
           "extra_cycles": sliced["cycles"] - whole["cycles"],
           "extra_pct": 100 * (sliced["cycles"] / whole["cycles"] - 1), "bound_ratio": sliced["bound_ratio"],
           "eliminated_pct": sliced["eliminated_pct"]}
    if cosim_steps:
        out["cosim"] = cosim_check(qm, test_utts[0], params, cosim_steps)
    print(f"{cell} with {ch['skip']} skipped on {params.wmem_bits}-bit slots: {out['cycles']:,.0f} cycles per step, "
          f"+{out['extra_cycles']:,.0f} ({out['extra_pct']:.1f} %) for the slices", flush=True)
    return out


def cosim_check(qm: QModel, utt, params, steps: int) -> dict:
    """Run the first ``steps`` steps of ``utt`` on the configuration's core in Verilator."""
    from deltarnn.sim.cosim import run_cosim

    x = delay_inputs(utt.features[None].astype(np.float32), qm.output_delay)[:, :steps]
    t0 = time.perf_counter()
    res = run_cosim(qm, x, params=params, check_state=True, keep_run_dir=False)
    gold = emulate(qm, x, threads=1)
    model = CY.model_step_cycles(qm, params, gold.step_deltas)
    return {"steps": res.timesteps, "mismatches": res.mismatches,
            "cycle_model_mismatches": res.cycle_model_mismatches,
            "measured_cycles_per_step": res.cycles / max(res.timesteps, 1),
            "model_cycles_per_step": float(np.mean(model)), "wall_s": time.perf_counter() - t0}


# --- hardware figures -------------------------------------------------------------------------------

def synth_record(name: str) -> dict | None:
    f = SYNTH / f"{name}.json"
    return json.loads(f.read_text()) if f.exists() else None


def resources(rec: dict | None) -> dict:
    if rec is None:
        return {}
    return {k: f"{v['used']}/{v['available']}" for k, v in rec.get("nextpnr_utilisation", {}).items()
            if k in ("ICESTORM_LC", "ICESTORM_RAM", "ICESTORM_DSP", "ICESTORM_SPRAM", "TRELLIS_COMB", "TRELLIS_FF",
                     "DP16KD", "MULT18X18D")}


def speed(cycles: float, fmax_mhz: float | None, macs: int, lanes: int) -> dict:
    if not fmax_mhz:
        return {"latency_us": None, "rtf": None, "effective_gops": None, "peak_gops": None}
    latency_us = cycles / fmax_mhz
    return {"latency_us": latency_us, "rtf": latency_us / (FRAME_MS * 1000),
            "effective_gops": 2 * macs / (latency_us * 1e3), "peak_gops": 2 * lanes * fmax_mhz / 1e3}


# --- the run ------------------------------------------------------------------------------------------

def run(args) -> dict:
    from deltarnn.speech.train import load_split

    _, train = load_split("espeak", "train")
    _, test = load_split("espeak", "test", args.utterances)
    configs, sweep = [], None
    for pc in [c for c in REFERENCE if not args.configs or c.name in args.configs]:
        qm, ch = device_qmodel(pc.study_dir, pc.cell, train)
        lanes = pc.params.lanes
        width = pc.params.engine_for(qm.hidden_size).engine_width
        at_chosen = step_figures(qm, test, lanes, width=width)
        zero = copy.deepcopy(qm)
        zero.set_thresholds(0, 0)
        at_zero = step_figures(zero, test, lanes, width=width)
        rec = synth_record(pc.synth)
        fits = bool(rec and rec.get("fits"))
        fmax = rec.get("fmax_mhz") if fits else None
        near = synth_record(NEAREST_FIT[pc.board])
        near_fmax = near.get("fmax_mhz") if near and near.get("fits") else None
        macs = dense_macs(qm)
        entry = {
            "name": pc.name, "board": pc.board, "synth_config": pc.synth, "cell": pc.cell,
            "layers": qm.num_layers, "hidden": qm.hidden_size, "input": qm.input_size, "classes": qm.num_classes,
            "lanes": lanes, "engine_lanes": width, "model": ch["model_file"], "abits": ch["abits"], "wbits": 4,
            "theta_x": ch["theta_x"], "theta_h": ch["theta_h"],
            "fits": fits, "fmax_mhz": fmax, "resources": resources(rec),
            "synth_error": None if fits or rec is None else rec.get("error"),
            "dense_macs_per_step": macs,
            "chosen": {k: v for k, v in at_chosen.items() if k != "per_step_cycles"},
            "theta0": {k: v for k, v in at_zero.items() if k != "per_step_cycles"},
            "bound_ratio": at_chosen["bound_ratio"],
            **speed(at_chosen["cycles"], fmax, macs, lanes),
            "nearest_fit": NEAREST_FIT[pc.board], "nearest_fmax_mhz": near_fmax,
            "at_nearest_fmax": speed(at_chosen["cycles"], near_fmax, macs, lanes),
            "previous": {"fmax_mhz": OLD_FMAX_MHZ[pc.board], "cycles": at_chosen["old_cycles"],
                         "bound_ratio": at_chosen["old_bound_ratio"],
                         **speed(at_chosen["old_cycles"], OLD_FMAX_MHZ[pc.board], macs, lanes)},
        }
        if args.cosim_steps:
            entry["cosim"] = cosim_check(qm, test[0], pc.params, args.cosim_steps)
        configs.append(entry)
        print(f"{pc.name}: {at_chosen['cycles']:,.0f} cycles per step at the chosen thresholds "
              f"({at_chosen['eliminated_pct']:.1f} % eliminated), {at_chosen['bound_ratio']:.2f}x the bound "
              f"(previous design {at_chosen['old_bound_ratio']:.2f}x)", flush=True)
        if pc.name == "ecp5-gru-2x256":
            sweep = threshold_sweep(qm, test[:max(2, len(test) // 4)], lanes, width)
    cells = []
    for cell in args.cells:
        qm, ch = device_qmodel(STUDY, cell, train)
        for lanes in (8, 32):
            width = DeviceParams(cell, lanes=lanes, max_hidden=qm.hidden_size).engine_width
            f = step_figures(qm, test, lanes, width=width)
            cells.append({"cell": cell, "hidden": qm.hidden_size, "lanes": lanes, "engine_lanes": width,
                          "theta_x": ch["theta_x"],
                          "theta_h": ch["theta_h"], **{k: v for k, v in f.items() if k != "per_step_cycles"}})
            print(f"{cell} 2x{qm.hidden_size} P={lanes}: {f['bound_ratio']:.2f}x the bound", flush=True)
    skipped = skipped_path(STUDY_256, "gru", train, test, "ecp5-p32-2x256", args.cosim_steps) \
        if not args.configs or "ecp5-gru-2x256" in args.configs else None
    return {"configs": configs, "cells": cells, "sweep": sweep, "skipped": skipped, "edgedrnn_gops": EDGEDRNN_GOPS}


def threshold_sweep(qm: QModel, utts, lanes: int, width: int = 1) -> list[dict]:
    points = []
    for theta in (0, 1, 2, 3, 4, 6):
        q = copy.deepcopy(qm)
        q.set_thresholds(theta, theta)
        f = step_figures(q, utts, lanes, width=width)
        points.append({"theta": theta, **{k: v for k, v in f.items() if k != "per_step_cycles"}})
    return points


def plot(sweep: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [p["eliminated_pct"] for p in sweep]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [p["cycles"] for p in sweep], "o-", label="this design")
    ax.plot(x, [p["old_cycles"] for p in sweep], "s--", label="previous design (sequential engine)")
    ax.plot(x, [p["bound"] for p in sweep], "k:", label="sparse bound nnz x ceil(rows / P)")
    for p in sweep:
        ax.annotate(f"θ={p['theta']}", (p["eliminated_pct"], p["cycles"]), fontsize=7)
    ax.set_xlabel("operations eliminated by the deltas (%)")
    ax.set_ylabel("cycles per step")
    ax.set_title("2 x 256 GRU, P = 32, speech (test split)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(v, spec=",.1f"):
    return "n/a" if v is None else format(v, spec)


def markdown(res: dict, meta: dict) -> str:
    lines = ["# Performance of the core on speech", "",
             f"`{meta['command']}`, {meta['date']}, {meta['machine']}, {meta['wall_s']:.0f} s, commit {meta['commit']}.",
             "", "Cycles per step are the cycle model's, averaged over the test utterances' steps; the "
             "co-simulation column gives the core's own `STEP_CYCLES` on the first steps of one utterance "
             "(cycle model mismatches must be 0). Speed is cycles x the post-place-and-route Fmax of the "
             "configuration's build; where the build does not fit, the figures in brackets use the Fmax of "
             "the nearest build that fits, named in the row.", "",
             "| configuration | model | thresholds x/h | eliminated | cycles / step | bound | ratio | "
             "co-simulation | fits | Fmax (MHz) | latency (µs) | x real time | GOp/s | peak GOp/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in res["configs"]:
        ch = c["chosen"]
        cs = c.get("cosim")
        cos = (f"{cs['measured_cycles_per_step']:,.0f} (model {cs['model_cycles_per_step']:,.0f}) over the first "
               f"{cs['steps']} steps, {cs['cycle_model_mismatches']} cycle / {cs['mismatches']} data mismatches"
               ) if cs else "not run"
        if c["fits"]:
            sp = c
            fmax = _fmt(c["fmax_mhz"])
        else:
            sp = c["at_nearest_fmax"]
            fmax = f"does not fit ({_fmt(c['nearest_fmax_mhz'])} of {c['nearest_fit']})"
        xrt = None if sp["rtf"] is None else 1 / sp["rtf"]
        br = (lambda s: s) if c["fits"] else (lambda s: f"({s})")
        lines.append(
            f"| {c['name']} ({c['board']}, P={c['lanes']}) | {c['cell']} {c['layers']}x{c['hidden']}, w4 a{c['abits']} "
            f"| {c['theta_x']}/{c['theta_h']} | {ch['eliminated_pct']:.1f} % | {ch['cycles']:,.0f} | {ch['bound']:,.0f} "
            f"| {ch['bound_ratio']:.2f} | {cos} | {'yes' if c['fits'] else 'no'} | {fmax} "
            f"| {br(_fmt(sp['latency_us']))} | {br(_fmt(xrt))} | {br(_fmt(sp['effective_gops'], '.2f'))} "
            f"| {br(_fmt(sp['peak_gops'], '.2f'))} |")
    lines += ["", "At threshold 0 (every changed value sent):", "",
              "| configuration | eliminated | cycles / step | bound | ratio |", "|---|---|---|---|---|"]
    for c in res["configs"]:
        z = c["theta0"]
        lines.append(f"| {c['name']} | {z['eliminated_pct']:.1f} % | {z['cycles']:,.0f} | {z['bound']:,.0f} "
                     f"| {z['bound_ratio']:.2f} |")
    lines += ["", "## Against the previous design and EdgeDRNN", "",
              "| configuration | previous: cycles / step | ratio | Fmax (MHz) | GOp/s | this design: ratio | "
              "GOp/s | EdgeDRNN GOp/s |", "|---|---|---|---|---|---|---|---|"]
    for c in res["configs"]:
        pv = c["previous"]
        now = c["effective_gops"] if c["fits"] else c["at_nearest_fmax"]["effective_gops"]
        now_s = _fmt(now, ".2f") if c["fits"] else f"({_fmt(now, '.2f')})"
        lines.append(f"| {c['name']} | {pv['cycles']:,.0f} | {pv['bound_ratio']:.2f} | {pv['fmax_mhz']} "
                     f"| {_fmt(pv['effective_gops'], '.2f')} | {c['bound_ratio']:.2f} | {now_s} | {res['edgedrnn_gops']} |")
    lines += ["", "## Per cell type (the study's 2 x 128 models, chosen thresholds)", "",
              "| cell | P | E | thresholds x/h | eliminated | cycles / step | bound | ratio |",
              "|---|---|---|---|---|---|---|---|"]
    for c in res["cells"]:
        lines.append(f"| {c['cell']} | {c['lanes']} | {c['engine_lanes']} | {c['theta_x']}/{c['theta_h']} "
                     f"| {c['eliminated_pct']:.1f} % "
                     f"| {c['cycles']:,.0f} | {c['bound']:,.0f} | {c['bound_ratio']:.2f} |")
    sk = res.get("skipped")
    if sk:
        cs = sk.get("cosim")
        lines += ["", "## A skipped 16-bit path on 4-bit slots", "",
                  f"The study's own choice for the 2 x 256 {sk['cell'].upper()}: {sk['wbits']}-bit weights, "
                  f"{sk['abits']}-bit activations, {', '.join(sk['skip'])} skipped (16-bit), thresholds "
                  f"{sk['theta_x']}/{sk['theta_h']}, on the `ecp5-p32-2x256` core with 16-bit activations and "
                  f"`max_wbits` 16: the skipped matrix runs as {sk['slices']} slices of the 4-bit slots "
                  f"({sk['weight_words']:,} weight words).", "",
                  "| cycles / step | with every weight in one slot | extra for the slices | ratio to the bound | "
                  "co-simulation |", "|---|---|---|---|---|",
                  f"| {sk['cycles']:,.0f} | {sk['cycles_one_slot']:,.0f} | {sk['extra_cycles']:,.0f} "
                  f"({sk['extra_pct']:.1f} %) | {sk['bound_ratio']:.2f} | " + (
                      f"{cs['steps']} steps, {cs['cycle_model_mismatches']} cycle / {cs['mismatches']} data "
                      f"mismatches" if cs else "not run") + " |"]
    if res["sweep"]:
        lines += ["", "![cycles per step against the bound](perf.png)", ""]
    lines += ["", "Resources (nextpnr):", ""]
    for c in res["configs"]:
        err = f" — {'; '.join(c['synth_error'])}" if c.get("synth_error") else ""
        lines.append(f"- {c['name']} (`{c['synth_config']}`): {c['resources'] or 'no record'}{err}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=40, help="test utterances (default 40)")
    ap.add_argument("--cosim-steps", type=int, default=20,
                    help="steps of one utterance co-simulated per configuration (0: none; default 20)")
    ap.add_argument("--configs", nargs="+", choices=[c.name for c in REFERENCE], help="only these configurations")
    ap.add_argument("--cells", nargs="*", default=["lstm", "gru", "ligru", "sru"],
                    help="cell types of the per-cell table (default all four)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    res = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if res["sweep"]:
        plot(res["sweep"], out / "perf.png")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    def arg(k, v):
        return f"--{k.replace('_', '-')} " + (" ".join(v) if isinstance(v, list) else str(v))

    meta = {"command": "python benchmarks/perf.py " + " ".join(arg(k, v) for k, v in vars(args).items()
                                                            if k != "out" and v),
            "date": date.today().isoformat(), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
            "wall_s": time.perf_counter() - t0, "commit": commit.strip()}
    (out / "perf.json").write_text(json.dumps({**meta, **res}, indent=1))
    (out / "perf.md").write_text(markdown(res, meta))
    print(f"wrote {out / 'perf.md'}, perf.json" + (", perf.png" if res["sweep"] else ""))


if __name__ == "__main__":
    main()
