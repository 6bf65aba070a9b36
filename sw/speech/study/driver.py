"""``run_study``: the corpus, the float models, the search on Dask and the outputs of one study."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from deltarnn.quant.golden import FLOAT_BITS

from .config import StudyConfig, StudyError
from .evaluate import UTTERANCE_SCORES, EvalSet, kilobytes, make_evalset
from .output import export_inputs, write_outputs
from .search import REPORT, SELECT, CellResult, search
from .tasks import DaskEvaluator, connect, gather, model_bytes, task_train, task_tune_decoder


class Log:
    """Print a message with the seconds since the study started."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.0f} s] {msg}", flush=True)


def _load(name: str, split: str, n: int | None):
    from deltarnn.speech.train import TrainError, load_split

    try:
        return load_split(name, split, n)
    except TrainError as e:
        raise StudyError(str(e)) from None


def calibration_inputs(utts, n: int, seed: int = 0) -> np.ndarray:
    """``n`` training utterances cropped to the shortest of them: ``(n, T, F)``."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(utts), size=min(n, len(utts)), replace=False)
    t = min(len(utts[i].features) for i in idx)
    return np.stack([utts[i].features[:t] for i in idx]).astype(np.float32)


def run_study(cfg: StudyConfig, progress: bool = True) -> dict:
    """Run the whole study; write its outputs to ``cfg.out``; return the results (``study.json``)."""
    cfg.check()
    log = Log()
    t_start = time.perf_counter()
    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StudyError(f"cannot create output folder {out}: {e}") from None
    models_dir = Path(cfg.models_dir) if cfg.models_dir else out / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    (out / "qmodels").mkdir(exist_ok=True)

    log(f"study '{cfg.name}' on {cfg.dataset}: cells {', '.join(cfg.cells)}; output {out}")
    _, train_utts = _load(cfg.dataset, "train", None)
    _, sel_utts = _load(cfg.dataset, cfg.select_split, cfg.select_utts)
    _, rep_utts = _load(cfg.dataset, cfg.report_split, cfg.report_utts)
    sets = {SELECT: make_evalset(cfg.select_split, sel_utts, cfg.eval_batch),
            REPORT: make_evalset(cfg.report_split, rep_utts, cfg.eval_batch)}
    calib = calibration_inputs(train_utts, cfg.calib_utts, cfg.seed)
    decoder = phone_decoder(train_utts)
    sel, rep = sets[SELECT], sets[REPORT]
    log(f"selection set: {cfg.select_split} {len(sel)} utterances ({sel.frames} frames); report set: "
        f"{cfg.report_split} {len(rep)} utterances ({rep.frames} frames); calibration {calib.shape}")

    client, cluster = connect(cfg)
    try:
        results = _run(cfg, client, log, progress, models_dir, out, sets, calib, decoder)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    results["wall_s"] = time.perf_counter() - t_start
    if cfg.export_inputs:
        export_inputs(rep, out / "inputs")
        results["inputs"] = str(out / "inputs")
    write_outputs(results, out)
    log(f"done in {results['wall_s']:.0f} s: {out / 'study.md'}")
    return results


def phone_decoder(train_utts):
    """The study's phone decoder: durations and the phone bigram of the training labels (no penalty yet)."""
    from deltarnn.speech.datasets import NUM_PHONES
    from deltarnn.speech.decode import PhoneDecoder

    return PhoneDecoder.from_labels([u.labels for u in train_utts], NUM_PHONES)


def without_utterance_scores(value):
    """``value`` with every per-utterance count array left out (they are not part of ``study.json``)."""
    if isinstance(value, dict):
        return {k: without_utterance_scores(v) for k, v in value.items() if k != UTTERANCE_SCORES}
    if isinstance(value, list):
        return [without_utterance_scores(v) for v in value]
    return value


def confirmation(cfg: StudyConfig, found: CellResult) -> dict:
    """A cell's ``summary``: the dev-chosen configuration's figures on the report set, with 95 % intervals.

    Keys: ``float_per``, ``float_fer``, ``quantized_per``, ``quantized_fer`` (threshold 0),
    ``quantized_per_change`` and its ``..._ci``, ``compression_pct``, then at the dev-chosen
    thresholds ``chosen_theta``, ``chosen_eliminated_pct``, ``chosen_per_change``, ``chosen_fer_change``
    and their intervals (``None`` where no threshold point was within the tolerances on dev).
    """
    from deltarnn.speech.datasets.scoring import bootstrap_interval

    base = found.float_eval[REPORT]
    q0 = found.thresholds["quantized_report"]
    cp = found.thresholds["chosen_point_report"]

    def ci(point, rate):
        lo, hi = bootstrap_interval(base[UTTERANCE_SCORES], point[UTTERANCE_SCORES], rate, n=cfg.bootstrap,
                                    seed=cfg.seed)
        return [lo, hi]

    out = {"float_per": base["per"], "float_fer": base["fer"], "quantized_per": q0["per"], "quantized_fer": q0["fer"],
           "quantized_per_change": q0["delta_per"], "quantized_per_change_ci": ci(q0, "per"),
           "quantized_fer_change": q0["delta_fer"], "quantized_fer_change_ci": ci(q0, "fer"),
           "compression_pct": q0["compression_pct"], "eliminated_theta0_pct": q0["eliminated_pct"],
           "sub_del_ins_pct": [q0["sub_pct"], q0["del_pct"], q0["ins_pct"]],
           "float_sub_del_ins_pct": [base["sub_pct"], base["del_pct"], base["ins_pct"]],
           "chosen_theta": None, "chosen_eliminated_pct": None, "chosen_per_change": None,
           "chosen_per_change_ci": None, "chosen_fer_change": None, "chosen_fer_change_ci": None}
    if cp is not None:
        out.update(chosen_theta=[cp["theta_x"], cp["theta_h"]], chosen_eliminated_pct=cp["eliminated_pct"],
                   chosen_per_change=cp["delta_per"], chosen_per_change_ci=ci(cp, "per"),
                   chosen_fer_change=cp["delta_fer"], chosen_fer_change_ci=ci(cp, "fer"))
    return out


def float_models(cfg: StudyConfig, client, log, progress: bool, models_dir: Path) -> dict[str, Path]:
    """Each cell's ``CELL.pt`` in ``models_dir``, training the missing ones on Dask."""
    paths = {c: models_dir / f"{c}.pt" for c in cfg.cells}
    missing = [c for c in cfg.cells if not paths[c].exists()]
    if missing:
        log(f"training {', '.join(missing)} ({cfg.layers} x {cfg.hidden}, {cfg.epochs} epochs) on Dask")
        d = asdict(cfg)
        gather(client, [client.submit(task_train, c, d, str(paths[c]), pure=False) for c in missing], "training",
               progress)
    return paths


def model_record(model, path: Path) -> dict:
    """The float model's part of a cell's results: configuration, file, training history, parameters."""
    hist = Path(str(path) + ".json")
    return {"model": model.config(), "model_file": str(path),
            "training": json.loads(hist.read_text()) if hist.exists() else None,
            "float_params": int(sum(p.numel() for p in model.parameters()))}


def cell_record(model: dict, found: CellResult, qmodel: str, qm, decoder) -> dict:
    """One cell's results in ``study.json``."""
    return without_utterance_scores({
        **model, "float_select": found.float_eval[SELECT], "float_report": found.float_eval[REPORT],
        "insertion_penalty": decoder.insertion_penalty, **found.selection, "qmodel": qmodel,
        "accumulator_bits": qm.accumulator_bits(), **found.thresholds,
        "float_size_kb": kilobytes(FLOAT_BITS * model["float_params"])})


def _run(cfg: StudyConfig, client, log, progress: bool, models_dir: Path, out: Path, sets: dict[str, EvalSet],
         calib: np.ndarray, decoder) -> dict:
    from deltarnn.models import load_torch_model

    paths = float_models(cfg, client, log, progress, models_dir)
    models = {c: load_torch_model(paths[c]) for c in cfg.cells}
    scattered = {c: client.scatter(model_bytes(m), broadcast=True) for c, m in models.items()}
    set_futures = {k: client.scatter(v, broadcast=True) for k, v in sets.items()}
    tuned = gather(client, [client.submit(task_tune_decoder, scattered[c], set_futures[SELECT], decoder, pure=False)
                            for c in cfg.cells], "decoder", progress)
    decoders = dict(zip(cfg.cells, tuned))
    for c in cfg.cells:
        log(f"{c}: insertion penalty {decoders[c].insertion_penalty:g} (tuned on {cfg.select_split})")
    evaluator = DaskEvaluator(client, scattered, client.scatter(calib, broadcast=True), set_futures, decoders,
                              progress)
    found = search(cfg, evaluator, log)
    qms = evaluator.gather([evaluator.qmodel(r.widths.cell, r.widths.wbits, r.widths.abits, r.widths.skip)
                            for r in found.values()], "quantize chosen")
    cells, summary = {}, {}
    for (c, r), qm in zip(found.items(), qms):
        f = out / "qmodels" / f"{c}.qmodel"
        qm.save(f)
        cells[c] = cell_record(model_record(models[c], paths[c]), r, str(f), qm, decoders[c])
        summary[c] = confirmation(cfg, r)
    sel, rep = sets[SELECT], sets[REPORT]
    return {"config": asdict(cfg), "summary": summary, "cells": cells,
            "select": {"split": cfg.select_split, "utterances": len(sel), "frames": sel.frames},
            "report": {"split": cfg.report_split, "utterances": len(rep), "frames": rep.frames, "ids": rep.ids},
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "workers": cfg.workers if not cfg.scheduler else f"scheduler {cfg.scheduler}"}
