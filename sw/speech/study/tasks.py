"""The study on Dask: the tasks (module-level, so workers can import them), the client and the evaluator.

:class:`DaskEvaluator` is the ``evaluate`` of :func:`deltarnn.speech.study.search.search`:
one task per request, a batch's tasks submitted at once and gathered together.
Each distinct QModel (cell, widths, skipped paths) is quantized once, by one
task whose result stays on the workers for every evaluation that needs it.
"""

from __future__ import annotations

import os
import sys

from .config import StudyConfig, StudyError
from .evaluate import evaluate_qmodel, float_eval, footprint, tune_decoder
from .search import FloatPoint, FootprintQuery, QuantPoint

_MODEL_CACHE: dict = {}


def _threads():
    import torch

    torch.set_num_threads(1)


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
    """Train the float model of ``cell`` as ``cfg`` (a :class:`StudyConfig` as a dict) says; save it to ``out``."""
    _threads()
    from deltarnn.speech.train import TrainConfig, train_speech

    tc = TrainConfig(cell=cell, dataset=cfg["dataset"], layers=cfg["layers"], hidden=cfg["hidden"],
                     epochs=cfg["epochs"], lr=cfg["lr"], batch=cfg["batch"], seed=cfg["seed"],
                     max_utts=cfg["max_train_utts"], delay=cfg["delay"])
    train_speech(tc, out, progress=False, log=lambda *a: None)
    return out


def task_float_eval(model, evalset, decoder) -> dict:
    _threads()
    return float_eval(_model(model), evalset, decoder)


def task_tune_decoder(model, evalset, decoder):
    _threads()
    return tune_decoder(_model(model), evalset, decoder)


def task_quantize(model, calib, wbits: int, abits: int, skip: tuple):
    _threads()
    from deltarnn.quant.quantizer import quantize

    return quantize(_model(model), calib, wbits=wbits, abits=abits, skip=list(skip),
                    meta={"study": "deltarnn study", "calibration": "train-split utterances"})


def task_eval(qm, evalset, decoder, theta_x: int = 0, theta_h: int = 0) -> dict:
    _threads()
    return evaluate_qmodel(qm, evalset, decoder, theta_x, theta_h, threads=1)  # one thread per worker


def task_footprint(qm):
    return footprint(qm)


# --- client ----------------------------------------------------------------------------------


def connect(cfg: StudyConfig):
    """A client of ``cfg.scheduler``, or of a new ``LocalCluster``: ``(client, cluster or None)``."""
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


def gather(client, futures: list, what: str, progress: bool) -> list:
    """The results of ``futures``, in order, with a progress bar named ``what``."""
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


class DaskEvaluator:
    """The search's ``evaluate`` on a Dask client.

    Parameters
    ----------
    models : dict of str to Future
        Each cell's float model, scattered as :func:`model_bytes`.
    calib : Future
        The scattered calibration inputs.
    sets : dict of str to Future
        The scattered :class:`~deltarnn.speech.study.evaluate.EvalSet` of
        :data:`~deltarnn.speech.study.search.SELECT` and
        :data:`~deltarnn.speech.study.search.REPORT`.
    decoders : dict of str to PhoneDecoder
        Each cell's phone decoder (its insertion penalty tuned on the float model).
    """

    def __init__(self, client, models: dict, calib, sets: dict, decoders: dict, progress: bool):
        self.client, self.models, self.calib, self.sets, self.progress = client, models, calib, sets, progress
        self.decoders = decoders
        self._qmodels: dict = {}

    def qmodel(self, cell: str, wbits: int, abits: int, skip: tuple = ()):
        """The future of one QModel, quantized once."""
        key = (cell, wbits, abits, tuple(sorted(skip)))
        if key not in self._qmodels:
            self._qmodels[key] = self.client.submit(task_quantize, self.models[cell], self.calib, *key[1:],
                                                    pure=False)
        return self._qmodels[key]

    def submit(self, request):
        """The future of one request's result."""
        if isinstance(request, FloatPoint):
            return self.client.submit(task_float_eval, self.models[request.cell], self.sets[request.split],
                                      self.decoders[request.cell], pure=False)
        if isinstance(request, QuantPoint):
            qm = self.qmodel(request.cell, request.wbits, request.abits, request.skip)
            return self.client.submit(task_eval, qm, self.sets[request.split], self.decoders[request.cell],
                                      request.theta_x, request.theta_h, pure=False)
        if isinstance(request, FootprintQuery):
            return self.client.submit(task_footprint, self.qmodel(request.cell, request.wbits, request.abits),
                                      pure=False)
        raise TypeError(f"not a study request: {request!r}")

    def gather(self, futures: list, stage: str) -> list:
        return gather(self.client, futures, stage, self.progress)

    def __call__(self, requests: list, stage: str) -> list:
        return self.gather([self.submit(r) for r in requests], stage)
