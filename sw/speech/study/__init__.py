"""The speech study: "Shrink and Eliminate" on this project's golden model.

For each cell type (LSTM, GRU, LiGRU, SRU) on a phone-recognition corpus:

1. a float model (trained here with :func:`deltarnn.speech.train.train_speech` unless a
   trained ``CELL.pt`` is given) and its phone error rate (PER);
2. post-training quantization at every weight width x activation width of
   the configuration, each evaluated with the golden model at threshold 0;
3. the chosen widths: the smallest activation width that costs at most
   ``act_tol`` points over the widest, then weight widths from the smallest
   up, each with a greedy choice of paths left at 16 bits (skip the path
   whose restoration lowers the PER most, while the compression stays above
   ``compression_floor``) until the PER change is at most ``tol`` points;
4. a grid of delta thresholds ``(theta_x, theta_h)`` on the chosen QModel,
   the Pareto front of PER against eliminated operations, and the chosen
   point: the most operations eliminated with a PER change of at most
   ``tol`` points.

Selection (widths, skipped paths, Pareto front, chosen point) uses the
``select_split`` (dev); the figures reported use the ``report_split`` (test).
Every evaluation runs :func:`deltarnn.quant.golden.emulate` on padded batches of
utterances of similar length. For a unidirectional model frames past an
utterance's end never influence its earlier frames, so its outputs are
exact; the operation counts are recounted over real frames only
(:func:`masked_stats`, equal to the sum of per-utterance :func:`emulate`
statistics, which a test checks). Bidirectional models are emulated one
utterance at a time.

The sweeps run as Dask tasks (a ``LocalCluster`` unless a scheduler address
is given). Outputs: ``study.md``, ``study.json``, ``pareto.png``,
``sparsity.png``, ``widths.png``, ``qmodels/CELL.qmodel`` and
``models/CELL.pt``. See ``docs/study.md``.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CELLS = ("lstm", "gru", "ligru", "sru")


class StudyError(ValueError):
    """Bad study options (shown as a one-line error by the CLI)."""


# --- configuration --------------------------------------------------------------------


@dataclass
class StudyConfig:
    name: str = "full"
    dataset: str = "espeak"
    out: str = "benchmarks/results/study"
    cells: list[str] = field(default_factory=lambda: list(CELLS))
    models_dir: str | None = None
    # training of missing models
    layers: int = 2
    hidden: int = 128
    epochs: int = 12
    batch: int = 32
    lr: float = 2e-3
    max_train_utts: int | None = None
    # quantization
    wbits: list[int] = field(default_factory=lambda: [2, 3, 4, 6, 8])
    abits: list[int] = field(default_factory=lambda: [4, 6, 8])
    tol: float = 1.0
    act_tol: float = 0.5
    compression_floor: float = 85.0
    skip_budget: int = 3
    max_greedy: int = 3
    #: greedy skipping is tried only where the PER change without skips is at most this (points)
    greedy_max_delta: float = 10.0
    calib_utts: int = 64
    # thresholds
    thetas_x: list[int] = field(default_factory=lambda: [0, 1, 2, 4, 8, 16])
    thetas_h: list[int] = field(default_factory=lambda: [0, 1, 2, 4, 8, 16])
    # evaluation sets
    select_split: str = "dev"
    select_utts: int | None = 80
    report_split: str = "test"
    report_utts: int | None = None
    eval_batch: int = 24
    export_inputs: bool = False
    # execution
    workers: int = 2
    scheduler: str | None = None
    seed: int = 0


def study_config(quick: bool = False, tiny: bool = False, dataset: str | None = None, out: str | None = None,
                 cells=None, models=None, workers: int = 2, scheduler: str | None = None,
                 epochs: int | None = None, hidden: int | None = None, layers: int | None = None) -> StudyConfig:
    """The full, ``--quick`` or tiny (test-suite) configuration, with overrides."""
    from deltarnn.speech.datasets import DATASETS

    if quick and tiny:
        raise StudyError("--quick and --tiny exclude each other")
    if tiny:
        cfg = StudyConfig(name="tiny", dataset="espeak-tiny", out="benchmarks/results/study-tiny",
                          layers=1, hidden=8, epochs=2, batch=8, lr=1e-2, wbits=[2, 4], abits=[6, 8],
                          skip_budget=1, max_greedy=1, greedy_max_delta=1000.0, calib_utts=8, thetas_x=[0, 2], thetas_h=[0, 4],
                          select_utts=None, eval_batch=4, export_inputs=True, compression_floor=0.0)
    elif quick:
        cfg = StudyConfig(name="quick", out="benchmarks/results/study-quick", layers=2, hidden=32, epochs=2,
                          max_train_utts=400, wbits=[3, 4, 8], abits=[6, 8], skip_budget=2, max_greedy=2,
                          calib_utts=32, thetas_x=[0, 2, 8], thetas_h=[0, 2, 8], select_utts=40,
                          report_utts=64)
    else:
        cfg = StudyConfig()
    if dataset is not None:
        if dataset.lower() not in DATASETS:
            raise StudyError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
        cfg.dataset = dataset.lower()
    if out is not None:
        cfg.out = str(out)
    if cells:
        bad = [c for c in cells if c not in CELLS]
        if bad:
            raise StudyError(f"unknown cell(s) {', '.join(bad)}; choose from {', '.join(CELLS)}")
        cfg.cells = list(dict.fromkeys(cells))
    cfg.models_dir = str(models) if models is not None else None
    if cfg.models_dir is not None and not Path(cfg.models_dir).is_dir():
        raise StudyError(f"--models {cfg.models_dir}: no such folder")
    cfg.workers = workers
    cfg.scheduler = scheduler
    for name, v in (("epochs", epochs), ("hidden", hidden), ("layers", layers)):
        if v is not None:
            setattr(cfg, name, v)
    return cfg


# --- evaluation sets and statistics ---------------------------------------------------


@dataclass
class EvalSet:
    """Utterances of one split as padded batches of similar length."""

    name: str
    batches: list  # [(x (B, T, F) float32, lengths (B,) int)]
    order: list  # utterance indices of each batch
    labels: list  # per utterance (T,) int64
    ids: list

    @property
    def frames(self) -> int:
        return int(sum(len(lab) for lab in self.labels))

    def __len__(self) -> int:
        return len(self.labels)


def make_evalset(name: str, utts, batch: int) -> EvalSet:
    from deltarnn.speech.train import length_batches

    feats = [u.features for u in utts]
    order = length_batches([len(f) for f in feats], batch)
    batches = []
    for idx in order:
        lens = np.array([len(feats[i]) for i in idx])
        x = np.zeros((len(idx), lens.max(), feats[0].shape[1]), dtype=np.float32)
        for j, i in enumerate(idx):
            x[j, :lens[j]] = feats[i]
        batches.append((x, lens))
    return EvalSet(name, batches, [list(map(int, o)) for o in order], [u.labels for u in utts],
                   [u.id for u in utts])


def _zero_counts(qm) -> dict:
    out = {}
    for name in qm.paths():
        ms = qm.matrices(name)
        out[name] = {"rows": sum(m.rows for m in ms), "cols": ms[0].cols, "elements": 0, "deltas": 0,
                     "macs_dense": 0, "macs_needed": 0}
    return out


def masked_stats(qm, result, lengths, counts: dict | None = None) -> dict:
    """Operation counts of a padded-batch emulation over real frames only.

    ``result`` is ``emulate(qm, x)`` for a zero-padded unidirectional batch and
    ``lengths`` the real lengths. The delta rule is causal, so re-encoding each
    path's integers and counting the frames before each end gives exactly the
    per-utterance :func:`deltarnn.quant.golden.emulate` counts, summed. Adds to ``counts``.
    """
    from deltarnn.spec import contract as C
    from deltarnn.quant.golden import delta_encode, quantize_path_input

    if qm.bidirectional:
        raise ValueError("masked_stats applies to unidirectional models only")
    counts = counts if counts is not None else _zero_counts(qm)
    lengths = np.asarray(lengths)
    bsz, steps = result.outputs_fx.shape[:2]
    valid = np.arange(steps)[None, :] < lengths[:, None]

    def add(name, fired, elements, dense_per_element):
        p = counts[name]
        n = int(np.count_nonzero(fired & valid[:, :, None]))
        p["elements"] += int(elements)
        p["deltas"] += n
        p["macs_dense"] += int(elements) * dense_per_element
        p["macs_needed"] += n * p["rows"]

    for i, layer in enumerate(qm.layers):
        q_x = result.input_q if i == 0 else quantize_path_input(result.layer_outputs_fx[i - 1], layer.x_act, False)
        _, fired = delta_encode(q_x, layer.x_act.theta)
        add(f"{i}.x", fired, int(lengths.sum()) * q_x.shape[2], counts[f"{i}.x"]["rows"])
        if layer.h_act is not None:
            h = result.layer_outputs_fx[i]
            prev = np.concatenate([np.zeros_like(h[:, :1]), h[:, :-1]], axis=1)
            act = layer.h_act
            q_h = C.quantize_act(prev, act.mult, act.shift, act.bits)
            _, fired = delta_encode(q_h, act.theta)
            p = counts[f"{i}.h"]
            add(f"{i}.h", fired, int((lengths - 1).sum()) * h.shape[2], p["rows"])
    if qm.head is not None:
        q = quantize_path_input(result.layer_outputs_fx[-1], qm.head.act, False)
        _, fired = delta_encode(q, qm.head.act.theta)
        add("head.x", fired, int(lengths.sum()) * q.shape[2], counts["head.x"]["rows"])
    return counts


def summarize_counts(counts: dict) -> dict:
    dense = sum(p["macs_dense"] for p in counts.values())
    needed = sum(p["macs_needed"] for p in counts.values())
    paths = {}
    for k, p in counts.items():
        paths[k] = dict(p, eliminated_pct=100.0 * (1 - p["macs_needed"] / p["macs_dense"]) if p["macs_dense"] else 0.0)
    return {"macs_dense": dense, "macs_needed": needed,
            "eliminated_pct": 100.0 * (1 - needed / dense) if dense else 0.0, "paths": paths}


def evaluate_qmodel(qm, evalset: EvalSet, theta_x: int = 0, theta_h: int = 0) -> dict:
    """PER (%) and operation counts of ``qm`` at the given thresholds on ``evalset``."""
    from deltarnn.speech.datasets import phone_error_rate
    from deltarnn.quant.golden import emulate

    qm = copy.deepcopy(qm)
    qm.set_thresholds(theta_x, theta_h)
    scores = [None] * len(evalset)
    counts = _zero_counts(qm)
    for (x, lens), idx in zip(evalset.batches, evalset.order):
        if qm.bidirectional:  # padding would reach the real frames backwards: one utterance at a time
            for j, i in enumerate(idx):
                r = emulate(qm, x[j:j + 1, :lens[j]])
                scores[i] = r.outputs[0]
                for name, p in r.stats.paths.items():
                    for key in ("elements", "deltas", "macs_dense", "macs_needed"):
                        counts[name][key] += getattr(p, key)
            continue
        r = emulate(qm, x)
        out = r.outputs
        for j, i in enumerate(idx):
            scores[i] = out[j, :lens[j]]
        masked_stats(qm, r, lens, counts)
    res = summarize_counts(counts)
    res["per"] = 100.0 * phone_error_rate(scores, evalset.labels)
    res["frame_error"] = 100.0 * float(np.mean(np.concatenate(
        [s.argmax(-1) != lab for s, lab in zip(scores, evalset.labels)])))
    res["theta_x"], res["theta_h"] = int(theta_x), int(theta_h)
    res["compression_pct"] = 100.0 * (1 - qm.storage_bits() / (32 * qm.float_params))
    res["size_kb"] = qm.storage_bits() / 8 / 1024
    return res


def float_per(model, evalset: EvalSet) -> float:
    from deltarnn.speech.datasets import phone_error_rate
    from deltarnn.speech.train import predict

    feats = [None] * len(evalset)
    for (x, lens), idx in zip(evalset.batches, evalset.order):
        for j, i in enumerate(idx):
            feats[i] = x[j, :lens[j]]
    return 100.0 * phone_error_rate(predict(model, feats), evalset.labels)


# --- Pareto front -----------------------------------------------------------------------


def pareto_front(points: list[dict], err: str = "per", gain: str = "eliminated_pct") -> list[int]:
    """Indices of the points no other point beats (lower ``err`` and higher ``gain``).

    A point is dominated when another has ``err <=`` and ``gain >=`` with at
    least one strict; of identical points the first is kept. Sorted by gain.
    """
    keep = []
    for i, p in enumerate(points):
        dominated = False
        for j, q in enumerate(points):
            if j == i:
                continue
            if q[err] <= p[err] and q[gain] >= p[gain] and (q[err] < p[err] or q[gain] > p[gain]):
                dominated = True
                break
            if q[err] == p[err] and q[gain] == p[gain] and j < i:
                dominated = True
                break
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: (points[i][gain], -points[i][err]))


def choose_point(points: list[dict], base_per: float, tol: float, err: str = "per",
                 gain: str = "eliminated_pct") -> int | None:
    """Index of the point with the most ``gain`` among those with ``err - base_per <= tol``."""
    ok = [i for i, p in enumerate(points) if p[err] - base_per <= tol + 1e-9]
    if not ok:
        return None
    return max(ok, key=lambda i: (points[i][gain], -points[i][err]))


# --- Dask tasks (module-level, so workers can import them) ----------------------------------


def _threads():
    import torch

    torch.set_num_threads(1)


_MODEL_CACHE: dict = {}


def model_bytes(model) -> bytes:
    """A float model as ``torch.save`` bytes (torch modules do not pickle; files may not be shared)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(model, buf)
    return buf.getvalue()


def _model(blob):
    """The model of ``model_bytes`` output (cached per worker process)."""
    if not isinstance(blob, (bytes, bytearray)):
        return blob
    import hashlib
    import io

    import torch

    key = hashlib.sha1(blob).hexdigest()
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False).eval()
    return _MODEL_CACHE[key]


def task_train(cell: str, cfg: dict, out: str) -> str:
    _threads()
    from deltarnn.speech.train import TrainConfig, train_speech

    tc = TrainConfig(cell=cell, dataset=cfg["dataset"], layers=cfg["layers"], hidden=cfg["hidden"],
                     epochs=cfg["epochs"], lr=cfg["lr"], batch=cfg["batch"], seed=cfg["seed"],
                     max_utts=cfg["max_train_utts"])
    train_speech(tc, out, progress=False, log=lambda *a: None)
    return out


def task_float_per(model, evalset) -> float:
    _threads()
    return float_per(_model(model), evalset)


def task_quantize(model, calib, wbits: int, abits: int, skip: tuple):
    _threads()
    from deltarnn.quant.quantizer import quantize

    return quantize(_model(model), calib, wbits=wbits, abits=abits, skip=list(skip),
                    meta={"study": "deltarnn study", "calibration": "train-split utterances"})


def task_eval(qm, evalset, theta_x: int = 0, theta_h: int = 0) -> dict:
    _threads()
    return evaluate_qmodel(qm, evalset, theta_x, theta_h)


def task_quant_eval(model, calib, wbits: int, abits: int, skip: tuple, evalset) -> dict:
    qm = task_quantize(model, calib, wbits, abits, skip)
    r = evaluate_qmodel(qm, evalset)
    r.update(wbits=wbits, abits=abits, skip=list(skip))
    return r


# --- the driver ------------------------------------------------------------------------------


def storage_with_skip(qm, skip) -> int:
    """Storage bits of ``qm`` (quantized without skips) if ``skip`` were left at 16 bits."""
    from deltarnn.spec import contract as C

    bits = qm.storage_bits()
    for p in skip:
        for m in qm.matrices(p):
            bits += m.weights.size * (C.MAX_BITS - m.wbits)
    return bits


class _Log:
    def __init__(self, progress: bool):
        self.progress = progress
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.0f} s] {msg}", flush=True)


def _gather(client, futures, log, what: str, progress: bool):
    from distributed import as_completed

    if not futures:
        return []
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(futures), desc=what, unit="task", leave=False, file=sys.stdout)
        for _ in as_completed(futures):
            bar.update(1)
        bar.close()
    return client.gather(futures)


def _client(cfg: StudyConfig):
    from distributed import Client, LocalCluster

    if cfg.scheduler:
        try:
            return Client(cfg.scheduler, timeout="20s"), None
        except OSError as e:
            raise StudyError(f"cannot reach the Dask scheduler at {cfg.scheduler}: {e}") from None
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    cluster = LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    return Client(cluster), cluster


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
    """Run the whole study; write its outputs to ``cfg.out``; return the results."""
    log = _Log(progress)
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
    train_ds, train_utts = _load(cfg.dataset, "train", None)
    _, sel_utts = _load(cfg.dataset, cfg.select_split, cfg.select_utts)
    _, rep_utts = _load(cfg.dataset, cfg.report_split, cfg.report_utts)
    sel = make_evalset(cfg.select_split, sel_utts, cfg.eval_batch)
    rep = make_evalset(cfg.report_split, rep_utts, cfg.eval_batch)
    calib = calibration_inputs(train_utts, cfg.calib_utts, cfg.seed)
    log(f"selection set: {cfg.select_split} {len(sel)} utterances ({sel.frames} frames); report set: "
        f"{cfg.report_split} {len(rep)} utterances ({rep.frames} frames); calibration {calib.shape}")

    client, cluster = _client(cfg)
    try:
        results = _run(cfg, client, log, progress, models_dir, out, sel, rep, calib, train_ds)
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


def _run(cfg, client, log, progress, models_dir, out, sel, rep, calib, train_ds) -> dict:
    from deltarnn.models import load_torch_model

    gather = lambda futs, what: _gather(client, futs, log, what, progress)  # noqa: E731
    sel_f, rep_f, calib_f = (client.scatter(v, broadcast=True) for v in (sel, rep, calib))

    # 1. models
    paths = {c: models_dir / f"{c}.pt" for c in cfg.cells}
    missing = [c for c in cfg.cells if not paths[c].exists()]
    if missing:
        log(f"training {', '.join(missing)} ({cfg.layers} x {cfg.hidden}, {cfg.epochs} epochs) on Dask")
        d = asdict(cfg)
        gather([client.submit(task_train, c, d, str(paths[c]), pure=False) for c in missing], "training")
    models = {c: load_torch_model(paths[c]) for c in cfg.cells}
    histories = {}
    for c in cfg.cells:
        hist = Path(str(paths[c]) + ".json")
        histories[c] = json.loads(hist.read_text()) if hist.exists() else None
    model_f = {c: client.scatter(model_bytes(models[c]), broadcast=True) for c in cfg.cells}

    # 2. float baselines
    futs = {(c, s): client.submit(task_float_per, model_f[c], f, pure=False)
            for c in cfg.cells for s, f in (("sel", sel_f), ("rep", rep_f))}
    vals = gather(list(futs.values()), "float PER")
    base = {k: v for k, v in zip(futs, vals)}
    R = {c: {"model": models[c].config(), "model_file": str(paths[c]), "training": histories[c],
             "float_params": int(sum(p.numel() for p in models[c].parameters())),
             "float_per_select": base[(c, "sel")], "float_per_report": base[(c, "rep")]} for c in cfg.cells}
    for c in cfg.cells:
        log(f"{c}: float PER {cfg.select_split} {base[(c, 'sel')]:.2f} %, {cfg.report_split} {base[(c, 'rep')]:.2f} %")

    # 3. width sweep
    cache: dict = {}

    def submit_q(c, w, a, skip):
        key = (c, w, a, tuple(sorted(skip)))
        if key not in cache:
            cache[key] = client.submit(task_quant_eval, model_f[c], calib_f, w, a, key[3], sel_f, pure=False)
        return cache[key]

    futs = {(c, w, a): submit_q(c, w, a, ()) for c in cfg.cells for w in cfg.wbits for a in cfg.abits}
    vals = gather(list(futs.values()), "width sweep")
    sweep = {k: v for k, v in zip(futs, vals)}
    for c in cfg.cells:
        R[c]["width_sweep"] = [dict(sweep[(c, w, a)], delta_per=sweep[(c, w, a)]["per"] - base[(c, "sel")])
                               for w in cfg.wbits for a in cfg.abits]

    # 4. activation width, then weight widths with greedy skipping
    state = {}
    for c in cfg.cells:
        b = base[(c, "sel")]
        wmax, amax = max(cfg.wbits), max(cfg.abits)
        ref = sweep[(c, wmax, amax)]["per"]
        a_star = min([a for a in cfg.abits if sweep[(c, wmax, a)]["per"] - ref <= cfg.act_tol] or [amax])
        state[c] = {"a": a_star, "cands": sorted(cfg.wbits), "tried": 0, "trace": [], "done": None,
                    "cur": None, "base": b}
    # templates of each cell's no-skip QModel at each width (for storage of skipped variants)
    tmpl_f = {(c, w): client.submit(task_quantize, model_f[c], calib_f, w, state[c]["a"], (), pure=False)
              for c in cfg.cells for w in cfg.wbits}
    tmpl = dict(zip(tmpl_f, gather(list(tmpl_f.values()), "quantize")))

    def next_candidate(c):
        st = state[c]
        while st["cands"]:
            w = st["cands"].pop(0)
            r = sweep[(c, w, st["a"])]
            if r["per"] - st["base"] <= cfg.tol:
                st["done"] = (w, ())
                st["trace"].append({"wbits": w, "skip": [], "per": r["per"], "accepted": True})
                return
            if st["tried"] >= cfg.max_greedy or r["per"] - st["base"] > cfg.greedy_max_delta:
                continue
            st["tried"] += 1
            st["cur"] = {"w": w, "skip": (), "per": r["per"]}
            st["trace"].append({"wbits": w, "skip": [], "per": r["per"], "accepted": False})
            return
        st["cur"] = None

    for c in cfg.cells:
        next_candidate(c)
    def allowed_paths(c):
        """Paths the current candidate of ``c`` may skip next (advancing candidates as needed)."""
        st = state[c]
        while st["done"] is None and st["cur"] is not None:
            cur = st["cur"]
            q0 = tmpl[(c, cur["w"])]
            ok = [p for p in q0.paths() if p not in cur["skip"]
                  and 100 * (1 - storage_with_skip(q0, cur["skip"] + (p,)) / (32 * q0.float_params))
                  >= cfg.compression_floor]
            if ok and len(cur["skip"]) < cfg.skip_budget:
                return ok
            next_candidate(c)
        return []

    rnd = 0
    while True:
        jobs = {}
        for c in cfg.cells:
            for p in allowed_paths(c):
                cur = state[c]["cur"]
                jobs[(c, p)] = submit_q(c, cur["w"], state[c]["a"], cur["skip"] + (p,))
        if not jobs:
            break
        rnd += 1
        vals = dict(zip(jobs, gather(list(jobs.values()), f"greedy skip round {rnd}")))
        for c in cfg.cells:
            st = state[c]
            mine = {p: v for (cc, p), v in vals.items() if cc == c}
            if not mine:
                continue
            p_best = min(mine, key=lambda p: mine[p]["per"])
            cur = st["cur"]
            for p, v in mine.items():
                st["trace"].append({"wbits": cur["w"], "skip": list(cur["skip"] + (p,)), "per": v["per"],
                                    "accepted": False})
            if mine[p_best]["per"] >= cur["per"]:
                log(f"{c}: w{cur['w']}a{st['a']}: no path recovers PER; next width")
                next_candidate(c)
                continue
            cur["skip"] = cur["skip"] + (p_best,)
            cur["per"] = mine[p_best]["per"]
            log(f"{c}: w{cur['w']}a{st['a']}: skip {'+'.join(cur['skip'])} -> PER change "
                f"{cur['per'] - st['base']:+.2f}")
            if cur["per"] - st["base"] <= cfg.tol:
                st["done"] = (cur["w"], cur["skip"])
                st["trace"].append({"wbits": cur["w"], "skip": list(cur["skip"]), "per": cur["per"],
                                    "accepted": True})
    for c in cfg.cells:
        st = state[c]
        # every configuration within tol: the greedy result and any width that needs no skipping;
        # the most compressed wins (ties: fewer skipped paths, then fewer bits)
        options = []
        if st["done"] is not None:
            w, skip = st["done"]
            options.append((w, tuple(skip), cache[(c, w, st["a"], tuple(sorted(skip)))].result()))
        for w in cfg.wbits:
            r = sweep[(c, w, st["a"])]
            if r["per"] - st["base"] <= cfg.tol and (w, ()) != (options[0][:2] if options else None):
                options.append((w, (), r))
        if options:
            best = max(options, key=lambda o: (round(o[2]["compression_pct"], 9), -len(o[1]), -o[0]))
            st["done"] = (best[0], best[1])
        else:  # nothing within tol: the widest pair, no skips
            st["done"] = (max(cfg.wbits), ())
            st["a"] = max(cfg.abits)
            st["fallback"] = True
        R[c]["options_within_tol"] = [{"wbits": o[0], "skip": list(o[1]), "compression_pct": o[2]["compression_pct"],
                                       "per": o[2]["per"]} for o in options]
        w, skip = st["done"]
        R[c]["chosen"] = {"wbits": w, "abits": st["a"], "skip": list(skip), "fallback": st.get("fallback", False),
                          "select": dict(cache[(c, w, st["a"], tuple(sorted(skip)))].result())}
        R[c]["greedy_trace"] = st["trace"]
        log(f"{c}: chosen w{w} a{st['a']} skip [{' '.join(skip)}]")

    # 5. chosen QModels
    qm_f = {c: client.submit(task_quantize, model_f[c], calib_f, R[c]["chosen"]["wbits"], R[c]["chosen"]["abits"],
                             tuple(sorted(R[c]["chosen"]["skip"])), pure=False) for c in cfg.cells}
    qms = dict(zip(qm_f, gather(list(qm_f.values()), "quantize chosen")))
    for c in cfg.cells:
        f = out / "qmodels" / f"{c}.qmodel"
        qms[c].save(f)
        R[c]["qmodel"] = str(f)
        R[c]["accumulator_bits"] = qms[c].accumulator_bits()

    # 6. threshold grid on the selection set
    grid = {}
    for c in cfg.cells:
        ths = cfg.thetas_h if any(p.endswith(".h") for p in qms[c].paths()) else [0]
        for tx in cfg.thetas_x:
            for th in ths:
                grid[(c, tx, th)] = client.submit(task_eval, qm_f[c], sel_f, tx, th, pure=False)
    vals = dict(zip(grid, gather(list(grid.values()), "threshold grid")))
    for c in cfg.cells:
        pts = [v for (cc, _, _), v in vals.items() if cc == c]
        R[c]["grid_select"] = pts
        front = pareto_front(pts)
        R[c]["front_select"] = [pts[i] for i in front]
        k = choose_point([pts[i] for i in front], base[(c, "sel")], cfg.tol)
        R[c]["chosen_point_select"] = R[c]["front_select"][k] if k is not None else None

    # 7. report set: theta 0, every point of the selection front
    rj = {}
    for c in cfg.cells:
        todo = {(0, 0)} | {(p["theta_x"], p["theta_h"]) for p in R[c]["front_select"]}
        for tx, th in sorted(todo):
            rj[(c, tx, th)] = client.submit(task_eval, qm_f[c], rep_f, tx, th, pure=False)
    vals = dict(zip(rj, gather(list(rj.values()), "report set")))
    for c in cfg.cells:
        b = base[(c, "rep")]
        pts = [dict(v, delta_per=v["per"] - b) for (cc, _, _), v in vals.items() if cc == c]
        R[c]["report_points"] = pts
        q0 = next(p for p in pts if p["theta_x"] == 0 and p["theta_h"] == 0)
        R[c]["quantized_report"] = q0
        cp = R[c]["chosen_point_select"]
        R[c]["chosen_point_report"] = (next(p for p in pts if (p["theta_x"], p["theta_h"]) ==
                                            (cp["theta_x"], cp["theta_h"])) if cp else None)
        front = pareto_front(pts)
        R[c]["front_report"] = [pts[i] for i in front]
        k = choose_point(R[c]["front_report"], b, cfg.tol)
        R[c]["best_report_within_tol"] = R[c]["front_report"][k] if k is not None else None
        R[c]["float_size_kb"] = 4 * R[c]["float_params"] / 1024
        log(f"{c}: {cfg.report_split}: quantized PER change {q0['delta_per']:+.2f}, compression "
            f"{q0['compression_pct']:.1f} %, eliminated at theta 0 {q0['eliminated_pct']:.1f} %")

    return {"config": asdict(cfg), "cells": R, "select": {"split": cfg.select_split, "utterances": len(sel),
            "frames": sel.frames}, "report": {"split": cfg.report_split, "utterances": len(rep),
            "frames": rep.frames, "ids": rep.ids},
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "workers": cfg.workers if not cfg.scheduler else f"scheduler {cfg.scheduler}"}


# --- outputs --------------------------------------------------------------------------------


def export_inputs(evalset: EvalSet, folder: Path) -> None:
    """One ``NNNN.npy`` ``(1, T, F)`` per utterance (in set order) plus ``labels.npz``."""
    folder.mkdir(parents=True, exist_ok=True)
    feats = [None] * len(evalset)
    for (x, lens), idx in zip(evalset.batches, evalset.order):
        for j, i in enumerate(idx):
            feats[i] = x[j:j + 1, :lens[j]]
    for i, f in enumerate(feats):
        np.save(folder / f"{i:04d}.npy", f)
    np.savez(folder / "labels.npz", **{f"{i:04d}": lab for i, lab in enumerate(evalset.labels)})


def _fmt(v, spec=".1f"):
    return "–" if v is None else format(v, spec)


def table_rows(results: dict) -> list[dict]:
    rows = []
    for c, r in results["cells"].items():
        q = r["quantized_report"]
        cp = r["chosen_point_report"]
        best = r["best_report_within_tol"]
        rows.append({
            "cell": c, "float_size_kb": r["float_size_kb"], "size_kb": q["size_kb"],
            "compression_pct": q["compression_pct"], "wbits": r["chosen"]["wbits"], "abits": r["chosen"]["abits"],
            "skip": r["chosen"]["skip"], "float_per": r["float_per_report"], "quant_per": q["per"],
            "delta_per": q["delta_per"], "eliminated_theta0_pct": q["eliminated_pct"],
            "chosen_theta": None if cp is None else [cp["theta_x"], cp["theta_h"]],
            "chosen_per": None if cp is None else cp["per"],
            "chosen_delta_per": None if cp is None else cp["delta_per"],
            "chosen_eliminated_pct": None if cp is None else cp["eliminated_pct"],
            "best_eliminated_within_tol_pct": None if best is None else best["eliminated_pct"],
            "best_theta": None if best is None else [best["theta_x"], best["theta_h"]],
        })
    return rows


def markdown(results: dict) -> str:
    cfg = results["config"]
    rows = table_rows(results)
    sel, rep = results["select"], results["report"]
    lines = [f"# Shrink and Eliminate on `{cfg['dataset']}` ({cfg['name']} study)", "",
             f"Selection on `{sel['split']}` ({sel['utterances']} utterances, {sel['frames']} frames); "
             f"figures below on `{rep['split']}` ({rep['utterances']} utterances, {rep['frames']} frames). "
             f"PER in %, changes in points against the float model; operations are the multiply-accumulates "
             f"of every matrix-vector product (golden model). {results['date']}, {results['wall_s']:.0f} s.", "",
             "| model | float KB | quantized KB | compression % | widths w/a | skipped paths | float PER | "
             "quantized PER | PER change | eliminated % (theta 0) | chosen (theta_x, theta_h) | PER change there | "
             "eliminated % there | most eliminated % on the front with PER change <= "
             f"{cfg['tol']:g} |",
             "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        th = "–" if r["chosen_theta"] is None else f"({r['chosen_theta'][0]}, {r['chosen_theta'][1]})"
        bt = "–" if r["best_theta"] is None else f" ({r['best_theta'][0]}, {r['best_theta'][1]})"
        lines.append(
            f"| {r['cell'].upper()} | {r['float_size_kb']:.1f} | {r['size_kb']:.1f} | {r['compression_pct']:.1f} | "
            f"{r['wbits']}/{r['abits']} | {', '.join(r['skip']) or 'none'} | {r['float_per']:.2f} | "
            f"{r['quant_per']:.2f} | {r['delta_per']:+.2f} | {r['eliminated_theta0_pct']:.1f} | {th} | "
            f"{_fmt(r['chosen_delta_per'], '+.2f')} | {_fmt(r['chosen_eliminated_pct'])} | "
            f"{_fmt(r['best_eliminated_within_tol_pct'])}{bt if r['best_theta'] else ''} |")
    lines += ["", f"## Goals (compression > {cfg['compression_floor']:g} % with PER change <= {cfg['tol']:g} "
              "point for LSTM, GRU and SRU; > 50 % of operations eliminated)", ""]
    for r in rows:
        comp = r["compression_pct"] - 85.0
        dp = r["delta_per"] - cfg["tol"]
        el = (r["best_eliminated_within_tol_pct"] or 0.0) - 50.0
        lines.append(
            f"- {r['cell'].upper()}: compression {r['compression_pct']:.1f} % "
            f"({'met' if comp > 0 else f'missed by {-comp:.1f} points'}), PER change {r['delta_per']:+.2f} "
            f"({'met' if dp <= 1e-9 else f'missed by {dp:.2f} points'}), eliminated "
            f"{_fmt(r['best_eliminated_within_tol_pct'])} % within {cfg['tol']:g} point "
            f"({'met' if el > 0 else f'missed by {-el:.1f} points'})")
    lines += ["", "## Width sweep (selection set, theta 0, no skipped paths): PER change", ""]
    wb, ab = cfg["wbits"], cfg["abits"]
    lines.append("| model | " + " | ".join(f"w{w}/a{a}" for w in wb for a in ab) + " |")
    lines.append("|---|" + "---:|" * (len(wb) * len(ab)))
    for c, r in results["cells"].items():
        lines.append(f"| {c.upper()} | " + " | ".join(f"{p['delta_per']:+.2f}" for p in r["width_sweep"]) + " |")
    lines += ["", "## Pareto fronts (report set)", ""]
    for c, r in results["cells"].items():
        pts = ", ".join(f"({p['theta_x']},{p['theta_h']}): {p['delta_per']:+.2f} / {p['eliminated_pct']:.1f} %"
                        for p in r["front_report"])
        lines.append(f"- {c.upper()} (theta_x,theta_h): PER change / eliminated: {pts}")
    lines += ["", "Plots: `pareto.png`, `sparsity.png`, `widths.png`; data: `study.json`; QModels: `qmodels/`.", ""]
    return "\n".join(lines)


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(results["cells"])
    n = len(cells)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), squeeze=False)
    for ax, c in zip(axes[0], cells):
        r = results["cells"][c]
        g = r["grid_select"]
        bs = r["float_per_select"]
        ax.scatter([p["eliminated_pct"] for p in g], [p["per"] - bs for p in g], s=14, c="0.6",
                   label=f"grid ({results['select']['split']})")
        fs = r["front_select"]
        ax.plot([p["eliminated_pct"] for p in fs], [p["per"] - bs for p in fs], "o-", c="C0", ms=4,
                label=f"front ({results['select']['split']})")
        fr = r["front_report"]
        ax.plot([p["eliminated_pct"] for p in fr], [p["delta_per"] for p in fr], "s--", c="C1", ms=4,
                label=f"front ({results['report']['split']})")
        cp = r["chosen_point_report"]
        if cp:
            ax.plot([cp["eliminated_pct"]], [cp["delta_per"]], "*", c="C3", ms=13, label="chosen")
        ax.axhline(results["config"]["tol"], c="k", lw=0.8, ls=":")
        ax.set_title(f"{c.upper()} w{r['chosen']['wbits']}/a{r['chosen']['abits']}")
        ax.set_xlabel("operations eliminated (%)")
        ax.set_ylabel("PER change (points)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    for ax, c in zip(axes[0], cells):
        g = results["cells"][c]["grid_select"]
        has_h = any(p["theta_h"] for p in g)
        series = [("theta_x = theta_h", lambda p: p["theta_x"] == p["theta_h"], "theta_x")]
        if has_h:
            series = [("theta_x = theta_h", lambda p: p["theta_x"] == p["theta_h"], "theta_x"),
                      ("theta_x (theta_h = 0)", lambda p: p["theta_h"] == 0, "theta_x"),
                      ("theta_h (theta_x = 0)", lambda p: p["theta_x"] == 0, "theta_h")]
        else:
            series = [("theta_x (no h path)", lambda p: True, "theta_x")]
        for label, sel_fn, key in series:
            pts = sorted((p for p in g if sel_fn(p)), key=lambda p: p[key])
            ax.plot([p[key] for p in pts], [p["eliminated_pct"] for p in pts], "o-", ms=4, label=label)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_title(c.upper())
        ax.set_xlabel("threshold (quantization steps)")
        ax.set_ylabel("operations eliminated (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "sparsity.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    for ax, c in zip(axes[0], cells):
        sw = results["cells"][c]["width_sweep"]
        for a in results["config"]["abits"]:
            pts = sorted((p for p in sw if p["abits"] == a), key=lambda p: p["wbits"])
            ax.plot([p["wbits"] for p in pts], [p["delta_per"] for p in pts], "o-", ms=4, label=f"a{a}")
        ax.axhline(results["config"]["tol"], c="k", lw=0.8, ls=":")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_title(c.upper())
        ax.set_xlabel("weight bits")
        ax.set_ylabel("PER change (points)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "widths.png", dpi=110)
    plt.close(fig)


def write_outputs(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results["table"] = table_rows(results)
    (out / "study.json").write_text(json.dumps(results, indent=1, default=float))
    (out / "study.md").write_text(markdown(results))
    plot(results, out)
