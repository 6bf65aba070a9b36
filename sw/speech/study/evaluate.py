"""One evaluation of the study: a QModel's PER, FER, operation counts and size on a set of utterances.

Scoring (:func:`score_outputs`): the frame scores are decoded into phones
with the study's :class:`~deltarnn.speech.decode.PhoneDecoder` (bigram,
durations and a dev-tuned insertion penalty), the decoded PER is split into
substitutions, deletions and insertions, and the frame error rate is that of
the network's own arg-max frames. A model trained with an output delay is run
on its inputs followed by that many zero frames and its outputs are aligned
back to the input frames (:func:`deltarnn.quant.qmodel.delay_inputs`); the
operations of those extra frames are counted, as a device would do them.

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

from deltarnn.quant.qmodel import align_outputs, delay_inputs
from deltarnn.quant.golden import FLOAT_BITS, Stats, compression_pct, emulate, path_stats
from deltarnn.spec.contract import MAX_BITS

#: Key of the per-utterance counts (:func:`deltarnn.speech.datasets.scoring.utterance_scores`) in a result;
#: the driver turns them into bootstrap intervals and leaves them out of ``study.json``.
UTTERANCE_SCORES = "utterance_scores"


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


def score_outputs(scores: list[np.ndarray], labels: list[np.ndarray], decoder) -> dict:
    """Decoded PER with its S / D / I split, FER and undecoded PER (all %) of per-utterance frame scores.

    The result also holds the per-utterance counts under :data:`UTTERANCE_SCORES`
    (decoded edits, arg-max frame errors).
    """
    from deltarnn.speech.datasets.scoring import COLUMNS, totals, utterance_scores

    frames = utterance_scores(scores, labels)
    rows = utterance_scores([decoder.decode(s) for s in scores], labels)
    fe = COLUMNS.index("frame_errors")
    rows[:, fe] = frames[:, fe]
    res = totals(rows).as_dict()
    out = {k: res[k] for k in ("per", "fer", "sub_pct", "del_pct", "ins_pct")}
    out["undecoded_per"] = 100.0 * totals(frames).per
    out[UTTERANCE_SCORES] = rows
    return out


def evaluate_qmodel(qm, evalset: EvalSet, decoder, theta_x: int = 0, theta_h: int = 0,
                    threads: int | None = None) -> dict:
    """PER, FER (%), operation counts and size of ``qm`` at the given thresholds on ``evalset``.

    ``threads``: the golden model's (:func:`~deltarnn.quant.golden.emulate`).

    Returns
    -------
    dict
        :meth:`~deltarnn.quant.golden.Stats.op_counts`, then the :func:`score_outputs`
        figures, ``theta_x``, ``theta_h``, ``compression_pct`` and ``size_kb``.
    """
    qm = copy.deepcopy(qm)
    qm.set_thresholds(theta_x, theta_h)
    delay = qm.output_delay
    counts = path_stats(qm)
    if qm.bidirectional:  # padding would reach the real frames backwards: one utterance at a time
        scores = []
        for f in evalset.features():
            r = emulate(qm, delay_inputs(f[None], delay), threads=threads)
            scores.append(align_outputs(r.outputs, delay)[0])
            for name, p in r.stats.paths.items():
                counts[name].merge(p)
    else:
        outputs = []
        for x, lengths in evalset.batches:
            r = emulate(qm, delay_inputs(x, delay), threads=threads)
            masked_stats(qm, r, lengths + delay, counts)
            outputs.append(align_outputs(r.outputs, delay))
        scores = evalset.utterances(outputs)
    stats = Stats.for_model(qm, counts)
    res = stats.op_counts()
    res.update(score_outputs(scores, evalset.labels, decoder))
    res["theta_x"], res["theta_h"] = int(theta_x), int(theta_h)
    res["compression_pct"] = stats.compression_pct
    res["size_kb"] = kilobytes(stats.weight_bits)
    return res


def float_scores(model, evalset: EvalSet) -> list[np.ndarray]:
    """The float torch model's frame scores on ``evalset``, per utterance (its output delay applied)."""
    from deltarnn.speech.train import predict

    return predict(model, evalset.features())


def float_eval(model, evalset: EvalSet, decoder) -> dict:
    """The :func:`score_outputs` figures of a float torch model on ``evalset``."""
    return score_outputs(float_scores(model, evalset), evalset.labels, decoder)


def tune_decoder(model, evalset: EvalSet, decoder):
    """``decoder`` with the insertion penalty that gives the float model its lowest PER on ``evalset`` (dev)."""
    from deltarnn.speech.decode import tune_insertion_penalty

    return tune_insertion_penalty(decoder, float_scores(model, evalset), evalset.labels)


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
