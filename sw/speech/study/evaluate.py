"""One evaluation of the study: a QModel's PER, operation counts and size on a set of utterances.

Every evaluation runs :func:`deltarnn.quant.golden.emulate` on padded batches of
utterances of similar length. For a unidirectional model frames past an
utterance's end never influence its earlier frames, so its outputs are exact,
and :func:`masked_stats` recounts the operations over real frames only (equal
to the sum of per-utterance :func:`~deltarnn.quant.golden.emulate` statistics,
which a test checks). Bidirectional models are emulated one utterance at a time.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from deltarnn.quant.golden import FLOAT_BITS, Stats, compression_pct, emulate, path_stats
from deltarnn.spec.contract import MAX_BITS


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

    def utterances(self, batched: list[np.ndarray]) -> list[np.ndarray]:
        """Per utterance, in set order, its real frames of per-batch arrays ``(B, T, ...)``."""
        out = [None] * len(self)
        for values, (_, lengths), idx in zip(batched, self.batches, self.order):
            for j, i in enumerate(idx):
                out[i] = values[j, :lengths[j]]
        return out

    def features(self) -> list[np.ndarray]:
        """Every utterance's features ``(T, F)``, in set order."""
        return self.utterances([x for x, _ in self.batches])


def make_evalset(name: str, utts, batch: int) -> EvalSet:
    """Group utterances (with ``features``, ``labels`` and ``id``) into zero-padded batches of about ``batch``."""
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


def masked_stats(qm, result, lengths, counts: dict | None = None) -> dict:
    """Operation counts of a padded-batch emulation over real frames only.

    Parameters
    ----------
    qm : QModel
        A unidirectional model.
    result : EmulationResult
        ``emulate(qm, x)`` for a zero-padded batch ``x``.
    lengths : array of int
        The real length of each sequence of the batch.
    counts : dict of str to PathStats, optional
        Counts to add to (default: :func:`~deltarnn.quant.golden.path_stats` of ``qm``).

    Returns
    -------
    dict of str to PathStats
        ``counts``. The delta rule is causal, so the deltas each path emitted
        before each end (``result.step_deltas``) are exactly the per-utterance
        :func:`~deltarnn.quant.golden.emulate` counts, summed.
    """
    if qm.bidirectional:
        raise ValueError("masked_stats applies to unidirectional models only")
    counts = counts if counts is not None else path_stats(qm)
    lengths = np.asarray(lengths)
    valid = np.arange(result.outputs_fx.shape[1])[None, :] < lengths[:, None]
    for name, p in counts.items():
        # an h path does no work at its first step (h = 0)
        steps = int((lengths - 1).sum()) if name.endswith(".h") else int(lengths.sum())
        p.add(steps * p.cols, int(result.step_deltas[name][valid].sum()), p.rows)
    return counts


def kilobytes(bits: int) -> float:
    return bits / 8 / 1024


def evaluate_qmodel(qm, evalset: EvalSet, theta_x: int = 0, theta_h: int = 0) -> dict:
    """PER (%), frame error (%), operation counts and size of ``qm`` at the given thresholds on ``evalset``.

    Returns
    -------
    dict
        :meth:`~deltarnn.quant.golden.Stats.op_counts`, then ``per``,
        ``frame_error``, ``theta_x``, ``theta_h``, ``compression_pct`` and ``size_kb``.
    """
    from deltarnn.speech.datasets import phone_error_rate

    qm = copy.deepcopy(qm)
    qm.set_thresholds(theta_x, theta_h)
    counts = path_stats(qm)
    if qm.bidirectional:  # padding would reach the real frames backwards: one utterance at a time
        scores = []
        for f in evalset.features():
            r = emulate(qm, f[None])
            scores.append(r.outputs[0])
            for name, p in r.stats.paths.items():
                counts[name].merge(p)
    else:
        outputs = []
        for x, lengths in evalset.batches:
            r = emulate(qm, x)
            masked_stats(qm, r, lengths, counts)
            outputs.append(r.outputs)
        scores = evalset.utterances(outputs)
    stats = Stats.for_model(qm, counts)
    res = stats.op_counts()
    res["per"] = 100.0 * phone_error_rate(scores, evalset.labels)
    res["frame_error"] = 100.0 * float(np.mean(np.concatenate(
        [s.argmax(-1) != lab for s, lab in zip(scores, evalset.labels)])))
    res["theta_x"], res["theta_h"] = int(theta_x), int(theta_h)
    res["compression_pct"] = stats.compression_pct
    res["size_kb"] = kilobytes(stats.weight_bits)
    return res


def float_per(model, evalset: EvalSet) -> float:
    """PER (%) of a float torch model on ``evalset``."""
    from deltarnn.speech.datasets import phone_error_rate
    from deltarnn.speech.train import predict

    return 100.0 * phone_error_rate(predict(model, evalset.features()), evalset.labels)


@dataclass(frozen=True)
class Footprint:
    """What a QModel quantized without skipped paths would store with some of its paths skipped."""

    storage_bits: int
    float_bits: int
    #: per path, in the model's path order: the bits skipping it adds (its weights widened to 16 bits)
    skip_bits: dict[str, int]

    def compression_pct(self, skip=()) -> float:
        return compression_pct(self.storage_bits + sum(self.skip_bits[p] for p in skip), self.float_bits)


def footprint(qm) -> Footprint:
    """The :class:`Footprint` of ``qm``, quantized with no path skipped."""
    extra = {name: sum(m.weights.size * (MAX_BITS - m.wbits) for m in qm.matrices(name)) for name in qm.paths()}
    return Footprint(qm.storage_bits(), FLOAT_BITS * qm.float_params, extra)
