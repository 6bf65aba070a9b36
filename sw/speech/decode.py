"""Viterbi decoding of frame posteriors into phone sequences.

A per-frame classifier's arg-max flickers between phones, and every flicker
is an insertion once the frames are collapsed into phones. The decoder here
is the usual hybrid recipe's smallest form: one HMM state per phone, a
geometric duration per phone (its self-loop probability from the mean
duration in the training labels), a phone bigram between phones (from the
training labels, add-one smoothed) and one insertion penalty, added on every
change of phone and tuned on the dev split (:func:`tune_insertion_penalty`).
Emission scores are the network's log-posteriors.

>>> dec = PhoneDecoder.from_labels(train_labels, num_classes=39)     # doctest: +SKIP
>>> dec = tune_insertion_penalty(dec, dev_logits, dev_labels)        # doctest: +SKIP
>>> frames = dec.decode(logits)            # (T,) phone ids, runs of the same id   # doctest: +SKIP

``docs/study.md`` states how the study uses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["PhoneDecoder", "log_softmax", "tune_insertion_penalty", "PENALTY_GRID"]

#: Insertion penalties (log domain, per phone change) tried by :func:`tune_insertion_penalty`.
PENALTY_GRID = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 11.0, 15.0)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Log-posteriors from logits over the last axis (float64)."""
    s = np.asarray(scores, dtype=np.float64)
    s = s - s.max(axis=-1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class PhoneDecoder:
    """One-state-per-phone HMM over frame log-posteriors.

    Parameters
    ----------
    log_stay : numpy.ndarray
        ``(C,)`` log probability that a frame of phone ``c`` is followed by another frame of ``c``.
    log_bigram : numpy.ndarray
        ``(C, C)`` log ``P(next phone b | phone a)`` over changes of phone: the
        diagonal is ``-inf`` (staying is :attr:`log_stay`'s).
    insertion_penalty : float
        Subtracted from the score of every change of phone (``>= 0`` lowers insertions).
    """

    log_stay: np.ndarray
    log_bigram: np.ndarray
    insertion_penalty: float = 0.0

    @property
    def num_classes(self) -> int:
        return self.log_stay.size

    @classmethod
    def from_labels(cls, labels: Iterable[np.ndarray], num_classes: int, smoothing: float = 1.0,
                    insertion_penalty: float = 0.0) -> PhoneDecoder:
        """Estimate durations and the phone bigram from frame label sequences (the train split).

        Parameters
        ----------
        labels : iterable of numpy.ndarray
            Per utterance, ``(T,)`` frame labels in ``0 .. num_classes - 1``.
        num_classes : int
            Number of phone classes.
        smoothing : float
            Add-k smoothing of the bigram counts (``> 0``: every change stays possible).
        insertion_penalty : float
            Initial insertion penalty.
        """
        if smoothing <= 0:
            raise ValueError(f"smoothing must be > 0, got {smoothing}")
        frames = np.zeros(num_classes)
        runs = np.zeros(num_classes)
        bigram = np.full((num_classes, num_classes), float(smoothing))
        for seq in labels:
            seq = np.asarray(seq, dtype=np.int64).ravel()
            if seq.size == 0:
                continue
            if seq.min() < 0 or seq.max() >= num_classes:
                raise ValueError(f"labels must lie in 0..{num_classes - 1}")
            starts = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1]])
            phones = seq[starts]
            np.add.at(frames, seq, 1)
            np.add.at(runs, phones, 1)
            np.add.at(bigram, (phones[:-1], phones[1:]), 1)
        np.fill_diagonal(bigram, 0.0)
        mean_duration = np.where(runs > 0, frames / np.maximum(runs, 1), 1.0)
        # geometric duration with this mean: P(stay) = 1 - 1/mean (a 1-frame mean still leaves a chance)
        stay = np.clip(1.0 - 1.0 / np.maximum(mean_duration, 1.0), 1e-3, 1.0 - 1e-3)
        with np.errstate(divide="ignore"):
            log_bigram = np.log(bigram / bigram.sum(axis=1, keepdims=True))
        return cls(np.log(stay), log_bigram, insertion_penalty)

    def with_penalty(self, insertion_penalty: float) -> PhoneDecoder:
        """The same decoder with another insertion penalty."""
        return replace(self, insertion_penalty=float(insertion_penalty))

    def transitions(self) -> np.ndarray:
        """``(C, C)`` log transition scores from state ``a`` (rows) to ``b`` (columns), penalty included."""
        change = np.log1p(-np.exp(self.log_stay))[:, None] + self.log_bigram - self.insertion_penalty
        np.fill_diagonal(change, self.log_stay)
        return change

    def decode(self, scores: np.ndarray, log_posteriors: bool = False) -> np.ndarray:
        """The most likely phone of every frame.

        Parameters
        ----------
        scores : numpy.ndarray
            ``(T, C)`` logits (or log-posteriors with ``log_posteriors=True``).

        Returns
        -------
        numpy.ndarray
            ``(T,)`` int64 phone ids.
        """
        scores = np.asarray(scores)
        if scores.ndim != 2 or scores.shape[1] != self.num_classes:
            raise ValueError(f"expected (T, {self.num_classes}) scores, got shape {scores.shape}")
        t_max = scores.shape[0]
        if t_max == 0:
            return np.zeros(0, dtype=np.int64)
        emit = scores.astype(np.float64) if log_posteriors else log_softmax(scores)
        trans = self.transitions()
        back = np.empty((t_max, self.num_classes), dtype=np.int32)
        states = np.arange(self.num_classes)
        delta = emit[0].copy()
        for t in range(1, t_max):
            cand = delta[:, None] + trans
            back[t] = cand.argmax(axis=0)
            delta = cand[back[t], states] + emit[t]
        path = np.empty(t_max, dtype=np.int64)
        path[-1] = int(delta.argmax())
        for t in range(t_max - 1, 0, -1):
            path[t - 1] = back[t, path[t]]
        return path


def tune_insertion_penalty(decoder: PhoneDecoder, scores: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                           grid: Sequence[float] = PENALTY_GRID) -> PhoneDecoder:
    """The decoder with the penalty of ``grid`` that gives the lowest PER on ``scores`` / ``labels`` (dev).

    Ties go to the smaller penalty.
    """
    from deltarnn.speech.datasets.scoring import score

    best = None
    for penalty in grid:
        d = decoder.with_penalty(penalty)
        per = score([d.decode(s) for s in scores], labels).per
        if best is None or per < best[0]:
            best = (per, d)
    return best[1]
