"""The worker protocol: one job of utterances rendered in a fresh Python process.

eSpeak keeps state from one utterance to the next, so each job (a fixed group
of speakers, :func:`~.plan.plan_jobs`) is rendered by a new process,
``python -c`` :data:`WORKER_CODE`.  :func:`run_worker` (parent side) writes the
job as JSON to the worker's stdin: ``{"config": config_to_dict(config), "specs":
[asdict(spec), ...], "output": path}``.  :func:`main` (worker side) renders
the utterances and writes one ``.npz`` shard to ``output`` with ``features``
and ``labels`` (concatenated), ``lengths`` (frames per utterance),
``samples`` (16 kHz samples per utterance) and ``unmapped`` (JSON counts of
unmapped eSpeak symbols), which :func:`run_worker` reads back.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .config import EspeakConfig, config_from_dict, config_to_dict
from .engine import EspeakEngine, EspeakError
from .plan import UtteranceSpec
from .render import render_utterance

__all__ = ["WORKER_CODE", "main", "run_worker"]

#: Code a worker process runs (``python -c WORKER_CODE``; the job comes on stdin).
WORKER_CODE = "from deltarnn.speech.datasets.espeak.worker import main; main()"


def _render_job(specs: list[UtteranceSpec], config: EspeakConfig) -> dict:
    """Render a list of utterances in this process; arrays for one shard.

    Parameters
    ----------
    specs : list of UtteranceSpec
        The job's utterances, rendered in order.
    config : EspeakConfig
        The configuration.

    Returns
    -------
    dict
        The shard's arrays (see the module documentation).
    """
    engine = EspeakEngine.get()
    unmapped: Counter = Counter()
    feats, labels, lengths, samples = [], [], [], []
    for spec in specs:
        f, lab, wav = render_utterance(spec, config, engine, unmapped)
        feats.append(f)
        labels.append(lab)
        lengths.append(len(lab))
        samples.append(len(wav))
    return {
        "features": np.concatenate(feats) if feats else np.zeros((0, config.fbank.n_mels), np.float32),
        "labels": np.concatenate(labels) if labels else np.zeros(0, np.int64),
        "lengths": np.array(lengths, dtype=np.int64),
        "samples": np.array(samples, dtype=np.int64),
        "unmapped": json.dumps(dict(unmapped)),
    }


def main() -> None:
    """Entry point of a worker process: job JSON on stdin, shard written to the job's ``output``."""
    job = json.loads(sys.stdin.read())
    config = config_from_dict(job["config"])
    specs = [UtteranceSpec(**s) for s in job["specs"]]
    out = _render_job(specs, config)
    buf = io.BytesIO()
    np.savez(buf, **out)
    Path(job["output"]).write_bytes(buf.getvalue())


def run_worker(specs: list[UtteranceSpec], config: EspeakConfig, output: Path) -> dict:
    """Render one job in a fresh worker process and read its shard back.

    Parameters
    ----------
    specs : list of UtteranceSpec
        The job (one :func:`~.plan.plan_jobs` group).
    config : EspeakConfig
        The configuration.
    output : pathlib.Path
        Where the worker writes its shard (left for the caller to remove).

    Returns
    -------
    dict
        The shard's arrays (see the module documentation).

    Raises
    ------
    EspeakError
        If the worker exits with an error (the end of its stderr is included).
    """
    # The worker is this interpreter, in which deltarnn is installed.
    env = dict(os.environ)
    # One process per core: keep BLAS from spawning (busy-waiting) threads.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    job = {
        "config": config_to_dict(config),
        "specs": [asdict(s) for s in specs],
        "output": str(output),
    }
    proc = subprocess.run(
        [sys.executable, "-c", WORKER_CODE],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise EspeakError(
            f"eSpeak worker failed (exit {proc.returncode}) on {specs[0].speaker}...:\n"
            + proc.stderr[-3000:]
        )
    with np.load(output) as z:
        return {k: z[k] for k in z.files}
