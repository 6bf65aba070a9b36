"""``make demo`` / ``deltarnn demo``: a speech model from float to the simulated board and a bitstream.

Runs on a fresh clone with no data and no board, from the assets shipped in
``sw/data/demo/`` (``benchmarks/demo_assets.py`` makes them): the study's
2 x 128 GRU, a dozen short test utterances of the eSpeak corpus, calibration
utterances and the study's phone decoder. Five steps, each printing what it
does:

1. the float model's decoded phone error rate (PER) and frame error rate (FER);
2. quantized as the study chose for the GRU (on dev), emulated bit-exactly at
   several delta thresholds: the accuracy, size and eliminated-operations table;
3. a plot of PER against eliminated operations, the study's choice marked;
4. a few utterances through the accelerator on the simulated board (the whole
   board top, UART included, in Verilator) with the host driver: the bit-exact
   verdict, cycles per step, and the throughput at the ULX3S build's Fmax;
5. the iCEBreaker bitstream and its resource and Fmax report.

The simulated board and the bitstream are cached (``build/``): a second run
reuses both.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parents[1] / "data" / "demo"
#: Delta thresholds (x, h) the demo sweeps, besides the study's choice.
THRESHOLDS = ((0, 0), (1, 1), (2, 2), (4, 4), (8, 8))
#: The board whose default build the simulated board runs (its Fmax gives the throughput).
SIM_BOARD = "ulx3s-85f"
BASELINES = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "boards"


def load_assets() -> dict:
    """The shipped model, utterances, decoder and the study's choice."""
    from deltarnn.models import load_torch_model
    from deltarnn.speech.datasets.base import Utterance
    from deltarnn.speech.decode import PhoneDecoder

    z = np.load(ASSETS / "speech.npz")

    def utterances(prefix):
        bounds = np.cumsum(np.r_[0, z[f"{prefix}_lengths"]])
        feats, labels = z[f"{prefix}_features"].astype(np.float32), z[f"{prefix}_labels"].astype(np.int64)
        return [Utterance(feats[a:b], labels[a:b], "", f"{prefix}{i}") for i, (a, b) in
                enumerate(zip(bounds[:-1], bounds[1:]))]

    wbits, abits, theta_x, theta_h = (int(v) for v in z["chosen"])
    return {"model": load_torch_model(ASSETS / "gru.pt"), "test": utterances("test"), "calib": utterances("calib"),
            "decoder": PhoneDecoder(z["log_stay"], z["log_bigram"], float(z["insertion_penalty"])),
            "wbits": wbits, "abits": abits, "theta": (theta_x, theta_h)}


def run_demo(out=print, work_dir: str | Path = "build/demo", board_utterances: int = 2,
             bitstream: bool = True) -> dict:
    """Run the demo; return its figures (for tests)."""
    from deltarnn.quant.quantizer import quantize
    from deltarnn.speech.study.evaluate import evaluate_qmodel, float_eval, make_evalset

    t0 = time.perf_counter()
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    a = load_assets()
    model, test, decoder = a["model"], a["test"], a["decoder"]
    frames = sum(len(u.labels) for u in test)
    out(f"1/5 the float model: the study's {model.cell.upper()} {model.num_layers} x {model.hidden_size} "
        f"(sw/data/demo/gru.pt), on {len(test)} test utterances of the eSpeak corpus ({frames:,} frames)")
    evalset = make_evalset("demo", test, 16)
    fl = float_eval(model, evalset, decoder)
    out(f"    decoded PER {fl['per']:.1f} %, FER {fl['fer']:.1f} %")

    thresholds = sorted(set(THRESHOLDS) | {a["theta"]})
    out(f"2/5 quantizing as the study chose for the GRU on dev: {a['wbits']}-bit weights, {a['abits']}-bit "
        f"activations; golden-model emulation at delta thresholds {', '.join(f'{x}/{h}' for x, h in thresholds)}")
    calib = np.concatenate([u.features for u in a["calib"]])[None]
    qm = quantize(model, calib, wbits=a["wbits"], abits=a["abits"])
    points = [evaluate_qmodel(qm, evalset, decoder, x, h) for x, h in thresholds]
    chosen = next(p for p in points if (p["theta_x"], p["theta_h"]) == a["theta"])
    float_kb = model_kb(model)
    out(_table(fl, float_kb, points, a["theta"]))
    plot = _plot(work / "per_vs_eliminated.png", fl, points, chosen)
    out(f"3/5 plot of PER against eliminated operations, the study's choice marked: {plot}")

    figures = {"float": {k: fl[k] for k in ("per", "fer")}, "points": [_point(p) for p in points],
               "chosen": _point(chosen), "compression_pct": points[0]["compression_pct"], "plot": str(plot)}
    qm.set_thresholds(*a["theta"])
    figures["board"] = _simulated_board(qm, [u.features for u in test[:board_utterances]], out)
    if bitstream:
        figures["bitstream"] = _bitstream(work / "icebreaker", out)
    figures["seconds"] = time.perf_counter() - t0
    out(f"done in {figures['seconds']:.0f} s")
    return figures


def model_kb(model) -> float:
    return sum(p.numel() for p in model.parameters()) * 4 / 1024


def _point(p: dict) -> dict:
    return {k: p[k] for k in ("theta_x", "theta_h", "per", "fer", "eliminated_pct", "size_kb", "compression_pct")}


def _table(fl: dict, float_kb: float, points: list[dict], theta) -> str:
    from rich.table import Table

    from deltarnn.cli.report import render

    t = Table(title="accuracy, size and operations (12 short test utterances)")
    for col in ("model", "thresholds x/h", "PER %", "S / D / I %", "FER %", "size KB", "eliminated %"):
        t.add_column(col, justify="right")
    t.add_row("float", "-", f"{fl['per']:.1f}", f"{fl['sub_pct']:.1f} / {fl['del_pct']:.1f} / {fl['ins_pct']:.1f}",
              f"{fl['fer']:.1f}", f"{float_kb:.0f}", "0")
    for p in points:
        mark = " (study's choice)" if (p["theta_x"], p["theta_h"]) == tuple(theta) else ""
        t.add_row("quantized" + mark, f"{p['theta_x']}/{p['theta_h']}", f"{p['per']:.1f}",
                  f"{p['sub_pct']:.1f} / {p['del_pct']:.1f} / {p['ins_pct']:.1f}", f"{p['fer']:.1f}",
                  f"{p['size_kb']:.0f}", f"{p['eliminated_pct']:.1f}")
    return render(t)


def _plot(path: Path, fl: dict, points: list[dict], chosen: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["eliminated_pct"] for p in points], [p["per"] for p in points], "o-", label="quantized, thresholds 0..8")
    for p in points:
        ax.annotate(f"{p['theta_x']}/{p['theta_h']}", (p["eliminated_pct"], p["per"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.plot([chosen["eliminated_pct"]], [chosen["per"]], "r*", markersize=14, label="the study's choice (dev)")
    ax.axhline(fl["per"], color="grey", linestyle="--", label="float")
    ax.set_xlabel("multiply-accumulates eliminated (%)")
    ax.set_ylabel("decoded phone error rate (%)")
    ax.set_title("deltarnn demo: GRU 2 x 128 on eSpeak speech")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _simulated_board(qm, feats: list[np.ndarray], out) -> dict:
    """The model on the simulated board (the ULX3S default build's core), compared with the golden model."""
    from deltarnn.device.driver import Device
    from deltarnn.fpga.boards import BOARDS
    from deltarnn.quant.golden import emulate
    from deltarnn.quant.qmodel import delay_inputs
    from deltarnn.sim.board import SIM_BAUD, SIM_CLOCK_HZ, SimLink, build_board

    spec = BOARDS[SIM_BOARD]
    p = spec.params
    out(f"4/5 the simulated board: the {spec.description} default build's core ({p.cell.upper()}, P = {p.lanes}), "
        f"its UART at {SIM_BAUD:,} baud, in Verilator (the first build takes a few minutes; later runs reuse it) ...")
    t = time.perf_counter()
    build = build_board(p, SIM_CLOCK_HZ, SIM_BAUD)
    out(f"    {'built' if build.built else 'reused'} in {time.perf_counter() - t:.0f} s; loading the model over the "
        f"UART, then {len(feats)} utterances ...")
    equal, cycles, steps, sent = True, 0, 0, 0
    with Device(SimLink(build)) as dev:
        dev.load(qm)
        for f in feats:
            x = delay_inputs(f[None], qm.output_delay)
            res = dev.run(x)
            gold = emulate(qm, x)
            equal &= bool(np.array_equal(res.outputs, gold.outputs_fx))
            cycles += int(res.step_cycles.sum())
            steps += int(res.step_cycles.size)
            macs = gold.stats.macs_dense
        sent = dev.stats["bytes_sent"]
    per_step = cycles / steps
    dense_per_step = macs / steps                              # of the last utterance; the same every step
    fmax = _fmax(SIM_BOARD)
    fig = {"equal": equal, "steps": steps, "cycles_per_step": per_step, "bytes_sent": sent, "fmax_mhz": fmax}
    out(f"    outputs {'bit-identical to' if equal else 'DIFFERENT from'} the golden model over {steps} time steps; "
        f"{per_step:,.0f} cycles per step; {sent:,} bytes sent")
    if fmax:
        fig["gops"] = 2 * dense_per_step / (per_step / (fmax * 1e6)) / 1e9
        fig["us_per_step"] = per_step / fmax
        out(f"    at the {SIM_BOARD} build's Fmax of {fmax:.1f} MHz: {per_step / fmax:.0f} us per 10 ms frame "
            f"({10_000 / (per_step / fmax):.0f}x real time), {fig['gops']:.2f} GOp/s effective")
    return fig


def _fmax(board: str) -> float | None:
    try:
        return float(json.loads((BASELINES / f"{board}.json").read_text())["fmax_mhz"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _bitstream(out_dir: Path, out) -> dict:
    """The iCEBreaker default build, reused while the gateware and the tools are unchanged."""
    from deltarnn.fpga.build import BoardFitError, build_board
    from deltarnn.quant.qmodel import write_atomically
    from deltarnn.sim.cosim import gateware_digest

    stamp = out_dir / "demo.json"             # the gateware's digest and the report of the build made from it
    digest = gateware_digest()
    try:
        cached = json.loads(stamp.read_text())
    except (OSError, ValueError):
        cached = {}
    bitstream = cached.get("report", {}).get("bitstream")
    if cached.get("digest") == digest and (bitstream is None or Path(bitstream).is_file()):
        report = cached["report"]
        out("5/5 the iCEBreaker bitstream: reused (the gateware is unchanged)")
    else:
        out("5/5 the iCEBreaker bitstream (Yosys and nextpnr from pip; about two minutes) ...")
        try:
            report = build_board("icebreaker", out_dir=out_dir, progress=lambda line: out(f"    {line}"))
        except BoardFitError as e:
            report = {**e.report, "fits": False, "bitstream": None}
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(stamp, json.dumps({"digest": digest, "report": report}, default=str).encode())
    util = ", ".join(f"{k} {v['used']}/{v['available']}" for k, v in report["utilization"].items())
    if report.get("fits", True) and report.get("bitstream"):
        out(f"    {report['bitstream']}: {util}; Fmax {report['fmax_mhz']:.1f} MHz against the "
            f"{report['target_mhz']:.0f} MHz clock")
    else:
        out(f"    the design does not fit the UP5K: {util}")
    return {k: report.get(k) for k in ("bitstream", "fmax_mhz", "target_mhz", "utilization", "fits")}
