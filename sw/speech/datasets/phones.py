"""TIMIT phone sets and the standard 61 -> 39 folding.

TIMIT transcribes speech with 61 phone labels (``.PHN`` files).  Phone
recognition results are, by convention, reported on 39 classes obtained by
folding the 61 labels as proposed by Lee & Hon (1989), "Speaker-independent
phone recognition using hidden Markov models", IEEE Trans. ASSP 37(11), and as
used by Kaldi's ``egs/timit`` recipe (``conf/phones.60-48-39.map``):

==========================  =====
61-phone labels             39
==========================  =====
aa, ao                      aa
ah, ax, ax-h                ah
er, axr                     er
hh, hv                      hh
ih, ix                      ih
l, el                       l
m, em                       m
n, en, nx                   n
ng, eng                     ng
sh, zh                      sh
uw, ux                      uw
pcl tcl kcl bcl dcl gcl     sil
h#, pau, epi                sil
q                           (deleted)
all others                  themselves
==========================  =====

The glottal stop ``q`` has no 39-phone class.  In transcriptions it is
deleted; in frame labels its frames are merged into the preceding phone (the
following phone if ``q`` comes first), see :func:`fold_segments`.

The 39 classes get stable integer ids: their index in :data:`PHONES_39`,
which is sorted alphabetically.  Silence ``"sil"`` has id :data:`SIL_ID`
(= 30).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "PHONES_61",
    "PHONES_39",
    "FOLD_61_TO_39",
    "DELETED_PHONES",
    "PHONE_TO_ID",
    "SIL",
    "SIL_ID",
    "NUM_PHONES",
    "fold",
    "fold_sequence",
    "fold_segments",
    "phone_to_id",
    "id_to_phone",
    "encode",
    "decode",
]

#: The 61 TIMIT phone labels as they appear in ``.PHN`` files.
PHONES_61: tuple[str, ...] = (
    "aa", "ae", "ah", "ao", "aw", "ax", "ax-h", "axr", "ay", "b", "bcl", "ch",
    "d", "dcl", "dh", "dx", "eh", "el", "em", "en", "eng", "epi", "er", "ey",
    "f", "g", "gcl", "h#", "hh", "hv", "ih", "ix", "iy", "jh", "k", "kcl", "l",
    "m", "n", "ng", "nx", "ow", "oy", "p", "pau", "pcl", "q", "r", "s", "sh",
    "t", "tcl", "th", "uh", "uw", "ux", "v", "w", "y", "z", "zh",
)  # fmt: skip

#: Labels deleted by the folding (no 39-phone class).
DELETED_PHONES: frozenset[str] = frozenset({"q"})

_MERGES: dict[str, str] = {
    "ao": "aa",
    "ax": "ah",
    "ax-h": "ah",
    "axr": "er",
    "hv": "hh",
    "ix": "ih",
    "el": "l",
    "em": "m",
    "en": "n",
    "nx": "n",
    "eng": "ng",
    "zh": "sh",
    "ux": "uw",
    "pcl": "sil",
    "tcl": "sil",
    "kcl": "sil",
    "bcl": "sil",
    "dcl": "sil",
    "gcl": "sil",
    "h#": "sil",
    "pau": "sil",
    "epi": "sil",
}

#: Mapping of every 61-phone label except ``q`` to its 39-phone class.
FOLD_61_TO_39: dict[str, str] = {
    p: _MERGES.get(p, p) for p in PHONES_61 if p not in DELETED_PHONES
}

#: The 39 folded classes, sorted; a phone's id is its index here.
PHONES_39: tuple[str, ...] = tuple(sorted(set(FOLD_61_TO_39.values())))

#: Number of phone classes (39).
NUM_PHONES: int = len(PHONES_39)

#: Class name of silence.
SIL: str = "sil"

#: Integer id of ``"sil"`` in :data:`PHONES_39` (30).
SIL_ID: int = PHONES_39.index(SIL)

#: 39-phone name -> integer id.
PHONE_TO_ID: dict[str, int] = {p: i for i, p in enumerate(PHONES_39)}

assert len(PHONES_61) == 61 and NUM_PHONES == 39 and SIL_ID == 30


def fold(phone: str) -> str | None:
    """Fold one TIMIT label (61 set, or already one of the 39) to the 39 set.

    Parameters
    ----------
    phone : str
        A TIMIT label, case-insensitive (``"AX-H"``, ``"h#"``...).  Labels
        that already belong to the 39 set (such as ``"sil"``) map to
        themselves.

    Returns
    -------
    str or None
        The 39-phone class, or ``None`` for a deleted label (``q``).

    Raises
    ------
    KeyError
        If ``phone`` is not a TIMIT label.
    """
    p = phone.strip().lower()
    if p in DELETED_PHONES:
        return None
    if p in FOLD_61_TO_39:
        return FOLD_61_TO_39[p]
    if p in PHONE_TO_ID:
        return p
    raise KeyError(f"unknown TIMIT phone label {phone!r}")


def fold_sequence(phones: Iterable[str]) -> list[str]:
    """Fold a transcription to the 39 set, deleting ``q``.

    Parameters
    ----------
    phones : iterable of str
        TIMIT labels.

    Returns
    -------
    list of str
        39-phone classes; deleted labels are left out.  Repeats are kept
        (see :func:`deltarnn.speech.datasets.scoring.collapse` to merge them).
    """
    out = []
    for p in phones:
        f = fold(p)
        if f is not None:
            out.append(f)
    return out


def fold_segments(
    segments: Sequence[tuple[int, int, str]],
) -> list[tuple[int, int, str]]:
    """Fold time-aligned TIMIT segments to the 39 set.

    Segments labelled with a deleted phone (``q``) are merged into their
    neighbour: the preceding segment is extended to the end of the ``q``
    segment, or, when ``q`` comes first, the following segment is extended
    back to its start.  An utterance made of ``q`` only folds to ``sil``.

    Parameters
    ----------
    segments : sequence of (int, int, str)
        ``(start_sample, end_sample, label)`` in time order, as in a ``.PHN``
        file.

    Returns
    -------
    list of (int, int, str)
        Folded segments, labels in :data:`PHONES_39`.
    """
    out: list[list] = []
    pending_start: int | None = None  # start of leading q segments
    for start, end, label in segments:
        f = fold(label)
        if f is None:
            if out:
                out[-1][1] = max(out[-1][1], int(end))
            elif pending_start is None:
                pending_start = int(start)
            continue
        s = int(start)
        if pending_start is not None:
            s = min(s, pending_start)
            pending_start = None
        out.append([s, int(end), f])
    if pending_start is not None and not out:
        last_end = int(segments[-1][1])
        out.append([pending_start, last_end, SIL])
    return [(s, e, p) for s, e, p in out]


def phone_to_id(phone: str) -> int:
    """Integer id of a phone; 61-set labels are folded first.

    Parameters
    ----------
    phone : str
        A 39-set class or a 61-set label (not ``q``).

    Returns
    -------
    int
        Index in :data:`PHONES_39`.

    Raises
    ------
    KeyError
        For unknown labels and for ``q`` (which has no class).
    """
    f = fold(phone)
    if f is None:
        raise KeyError(f"{phone!r} is deleted by the 61->39 folding and has no id")
    return PHONE_TO_ID[f]


def id_to_phone(index: int) -> str:
    """Name of the 39-phone class with id ``index``.

    Parameters
    ----------
    index : int
        Class id in ``range(39)``.

    Returns
    -------
    str
        The phone name.
    """
    return PHONES_39[int(index)]


def encode(phones: Iterable[str]) -> np.ndarray:
    """Fold and encode a transcription as int64 ids (``q`` is deleted).

    Parameters
    ----------
    phones : iterable of str
        TIMIT labels (61 or 39 set).

    Returns
    -------
    numpy.ndarray
        int64 ids, shape ``(n,)``.
    """
    return np.array([PHONE_TO_ID[p] for p in fold_sequence(phones)], dtype=np.int64)


def decode(ids: Iterable[int]) -> list[str]:
    """Names of a sequence of class ids.

    Parameters
    ----------
    ids : iterable of int
        Class ids.

    Returns
    -------
    list of str
        Phone names.
    """
    return [PHONES_39[int(i)] for i in ids]
