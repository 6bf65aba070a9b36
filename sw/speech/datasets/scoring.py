"""Phone error rate (PER) of frame-wise phone predictions.

Scoring rule (documented in ``docs/datasets.md``):

1. hypothesis frames: the arg-max class of each frame (or given labels);
2. collapse runs of the same class into one phone, in both the hypothesis
   and the reference frame labels (so a phone lasting 12 frames counts
   once; two instances separated by another phone count twice);
3. optionally drop ``sil`` from both sequences (after collapsing, so that
   ``a sil a`` stays two ``a``);
4. Levenshtein distance (substitutions, deletions and insertions all cost
   1) between hypothesis and reference phone sequences;
5. ``PER = total edits / total reference phones`` over the whole set (not
   an average of per-utterance rates).

The frame error rate (FER) compares the frame labels before any collapsing:
``FER = frames whose class differs / frames``. :func:`utterance_scores` keeps
the counts of every utterance, so that :func:`bootstrap_interval` can give a
paired bootstrap interval of a change in PER or FER between two systems
scored on the same utterances.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from deltarnn.speech.datasets.phones import SIL_ID

__all__ = ["PERResult", "collapse", "edit_distance", "align_counts", "phone_error_rate", "score",
           "utterance_scores", "totals", "bootstrap_interval", "COLUMNS"]


def collapse(seq: Iterable[int], drop: Iterable[int] = ()) -> list[int]:
    """Merge runs of equal labels, then remove the ``drop`` labels.

    Parameters
    ----------
    seq : iterable of int
        Frame labels.
    drop : iterable of int
        Labels removed after collapsing (e.g. ``[SIL_ID]``).

    Returns
    -------
    list of int
        The phone sequence.

    Examples
    --------
    >>> collapse([1, 1, 2, 2, 2, 1, 30, 30, 1], drop=[30])
    [1, 2, 1, 1]
    """
    drop = set(int(d) for d in drop)
    out: list[int] = []
    prev = None
    for x in np.asarray(list(seq) if not isinstance(seq, np.ndarray) else seq).ravel():
        x = int(x)
        if x != prev:
            out.append(x)
            prev = x
    return [x for x in out if x not in drop]


def align_counts(hyp: Sequence[int], ref: Sequence[int]) -> tuple[int, int, int]:
    """Numbers of substitutions, deletions and insertions of a minimal alignment.

    Parameters
    ----------
    hyp, ref : sequence of int
        Hypothesis and reference sequences.

    Returns
    -------
    (int, int, int)
        ``(substitutions, deletions, insertions)``; their sum is the
        Levenshtein distance.  Among minimal alignments, the one with the
        most substitutions is reported.
    """
    n, m = len(ref), len(hyp)
    # cost[i][j]: (edits, -subs, dels, ins) for ref[:i] vs hyp[:j]
    prev = [(j, 0, 0, j) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, m + 1):
            if ref[i - 1] == hyp[j - 1]:
                diag = prev[j - 1]
            else:
                e, s, d, ins = prev[j - 1]
                diag = (e + 1, s - 1, d, ins)
            e, s, d, ins = prev[j]
            dele = (e + 1, s, d + 1, ins)
            e, s, d, ins = cur[j - 1]
            inse = (e + 1, s, d, ins + 1)
            cur.append(min(diag, dele, inse))
        prev = cur
    e, s, d, ins = prev[m]
    return -s, d, ins


def edit_distance(hyp: Sequence[int], ref: Sequence[int]) -> int:
    """Levenshtein distance with unit costs.

    Parameters
    ----------
    hyp, ref : sequence of int
        The two sequences.

    Returns
    -------
    int
        Minimum number of substitutions, deletions and insertions turning
        ``ref`` into ``hyp``.

    Examples
    --------
    >>> edit_distance([1, 2, 3], [1, 3])
    1
    """
    a = np.asarray(hyp, dtype=np.int64)
    row = np.arange(len(a) + 1, dtype=np.int64)
    for i, r in enumerate(np.asarray(ref, dtype=np.int64), 1):
        sub = row[:-1] + (a != r)
        new = np.empty_like(row)
        new[0] = i
        # deletions: row[j] + 1; substitutions: row[j-1] + cost
        new[1:] = np.minimum(row[1:] + 1, sub)
        # insertions need a left-to-right scan: new[j] = min(new[j], new[j-1] + 1)
        new = np.minimum.accumulate(new - np.arange(len(new))) + np.arange(len(new))
        row = new
    return int(row[-1])


@dataclass(frozen=True)
class PERResult:
    """Outcome of :func:`score`.

    Attributes
    ----------
    errors : int
        Total edit distance.
    ref_phones : int
        Total number of reference phones (after collapsing / dropping).
    substitutions, deletions, insertions : int
        Breakdown of ``errors``.
    utterances : int
        Number of utterances scored.
    """

    errors: int
    ref_phones: int
    substitutions: int
    deletions: int
    insertions: int
    utterances: int
    frame_errors: int = 0
    frames: int = 0

    @property
    def per(self) -> float:
        """Phone error rate, ``errors / ref_phones`` (``nan`` if no phones)."""
        return self.errors / self.ref_phones if self.ref_phones else float("nan")

    @property
    def fer(self) -> float:
        """Frame error rate, ``frame_errors / frames`` (``nan`` if no frames)."""
        return self.frame_errors / self.frames if self.frames else float("nan")

    def as_dict(self) -> dict:
        """The counts and both rates, in percent (``per``, ``fer``) and as S / D / I percentages."""
        ref = self.ref_phones or float("nan")
        return {"per": 100.0 * self.per, "fer": 100.0 * self.fer, "sub_pct": 100.0 * self.substitutions / ref,
                "del_pct": 100.0 * self.deletions / ref, "ins_pct": 100.0 * self.insertions / ref,
                "errors": self.errors, "ref_phones": self.ref_phones, "substitutions": self.substitutions,
                "deletions": self.deletions, "insertions": self.insertions, "frame_errors": self.frame_errors,
                "frames": self.frames, "utterances": self.utterances}


#: Columns of :func:`utterance_scores`.
COLUMNS = ("errors", "ref_phones", "substitutions", "deletions", "insertions", "frame_errors", "frames")


def _frame_labels(x) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 2:
        return a.argmax(axis=1)
    if a.ndim == 1:
        return a
    raise ValueError(f"expected (T,) labels or (T, C) scores, got shape {a.shape}")


def utterance_scores(hyps: Iterable, refs: Iterable, drop_sil: bool = False, sil_id: int = SIL_ID) -> np.ndarray:
    """Per utterance, the counts of :data:`COLUMNS`, as an int64 array ``(N, 7)``.

    Parameters are those of :func:`score`. An utterance whose hypothesis has
    another number of frames than its reference is refused (``ValueError``).
    """
    drop = (sil_id,) if drop_sil else ()
    rows = []
    for k, (hyp, ref) in enumerate(zip(hyps, refs, strict=True)):
        hf, rf = _frame_labels(hyp), _frame_labels(ref)
        if hf.shape != rf.shape:
            raise ValueError(f"utterance {k}: {hf.size} hypothesis frames for {rf.size} reference frames")
        h, r = collapse(hf, drop), collapse(rf, drop)
        s, d, i = align_counts(h, r)
        rows.append((s + d + i, len(r), s, d, i, int(np.count_nonzero(hf != rf)), rf.size))
    return np.array(rows, dtype=np.int64).reshape(-1, len(COLUMNS))


def score(
    hyps: Iterable,
    refs: Iterable,
    drop_sil: bool = False,
    sil_id: int = SIL_ID,
) -> PERResult:
    """Score frame-wise predictions against frame labels.

    Parameters
    ----------
    hyps : iterable of array_like
        Per utterance, either ``(T, C)`` scores (logits or posteriors; the
        arg-max is taken) or ``(T,)`` predicted class ids, as many frames as
        the reference.
    refs : iterable of array_like
        Per utterance, ``(T,)`` reference class ids.
    drop_sil : bool
        Remove silence from both sequences after collapsing.  Default
        ``False`` (Kaldi's TIMIT recipe scores ``sil`` as a phone).
    sil_id : int
        Class id of silence.

    Returns
    -------
    PERResult
        Totals over all utterances; ``.per`` is the phone error rate, ``.fer`` the frame error rate.
    """
    rows = utterance_scores(hyps, refs, drop_sil, sil_id)
    return totals(rows)


def totals(rows: np.ndarray) -> PERResult:
    """The :class:`PERResult` of per-utterance counts (:func:`utterance_scores`)."""
    t = dict(zip(COLUMNS, (int(v) for v in np.asarray(rows).reshape(-1, len(COLUMNS)).sum(axis=0))))
    return PERResult(t["errors"], t["ref_phones"], t["substitutions"], t["deletions"], t["insertions"],
                     len(rows), t["frame_errors"], t["frames"])


def bootstrap_interval(base: np.ndarray, new: np.ndarray, rate: str = "per", n: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Paired bootstrap interval of ``rate(new) - rate(base)``, in percentage points.

    Parameters
    ----------
    base, new : numpy.ndarray
        :func:`utterance_scores` of two systems on the same utterances, in the same order.
    rate : {"per", "fer"}
        The rate whose change is measured.
    n : int
        Resamples of the utterances (with replacement).
    level : float
        Coverage of the interval (percentile method).
    """
    base, new = np.asarray(base), np.asarray(new)
    if base.shape != new.shape:
        raise ValueError(f"both systems must be scored on the same utterances, got {base.shape} and {new.shape}")
    num, den = (COLUMNS.index("errors"), COLUMNS.index("ref_phones")) if rate == "per" else \
        (COLUMNS.index("frame_errors"), COLUMNS.index("frames"))
    idx = np.random.default_rng(seed).integers(0, len(base), size=(n, len(base)))
    b, w = base[idx], new[idx]
    change = 100.0 * (w[..., num].sum(1) / w[..., den].sum(1) - b[..., num].sum(1) / b[..., den].sum(1))
    lo, hi = np.percentile(change, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def phone_error_rate(
    hyps: Iterable, refs: Iterable, drop_sil: bool = False, sil_id: int = SIL_ID
) -> float:
    """Phone error rate of frame-wise predictions (see :func:`score`).

    Parameters
    ----------
    hyps : iterable of array_like
        Per utterance ``(T, C)`` scores or ``(T,)`` predicted ids.
    refs : iterable of array_like
        Per utterance ``(T,)`` reference ids.
    drop_sil : bool
        Ignore silence (removed after collapsing repeats).
    sil_id : int
        Class id of silence.

    Returns
    -------
    float
        Total edits divided by total reference phones.

    Examples
    --------
    >>> phone_error_rate([[1, 1, 2, 2]], [[1, 1, 3, 3]])
    0.5
    """
    return score(hyps, refs, drop_sil, sil_id).per
