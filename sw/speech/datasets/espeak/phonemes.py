"""The phone table: eSpeak NG English phoneme mnemonics -> the 39 TIMIT phone classes.

Also turns a list of eSpeak phoneme events into labelled sample segments
(:func:`events_to_segments`), the first step of an utterance's frame labels.

Phone mapping
-------------
eSpeak's English mnemonics (see eSpeak NG's ``phsource/ph_english*``)
mapped to the TIMIT 39 set, for the rhotic American voice ``en-us``.
Stress marks (``'``, ``,``) are stripped first.

====================================  =============================
eSpeak                                TIMIT-39
====================================  =============================
p b t d k g f v s z m n l r w h       same (h -> hh)
T D S Z N j tS dZ                     th dh sh sh ng y ch jh
t# d# (flaps, *water*)                dx
t2 t[ (t variants)                    t
z# z/2, w#, r- r/, l/2, n-, @L        z, w, r, l, n, l (syllabic)
x (*loch*)                            hh (closest voiceless fricative)
; (linking j, *carry an*)             y
? (glottal stop)                      merged into the previous phone,
                                      like TIMIT's q
_ _: _! _| ... (pauses)               sil
@ @2 @5 @# a# a#2 V                   ah
3 (unstressed, *butter*)              er (non-rhotic: ah)
3: VR IR                              er
a a2 a/ aa A#                         ae (RP aa: aa)
A: 0 0# 02 O O: O2 A~ O~              aa
E E# E2 e e#                          eh
e: eI                                 ey
I I2 I# I2#                           ih
i i:                                  iy
U / u:                                uh / uw
aU oU oU# o: aI aI2 OI                aw ow ow ow ay ay oy
A@ O@ o@                              aa r   (non-rhotic: aa)
e@ i@3 U@                             eh r, ih r, uh r
                                      (non-rhotic: eh ah, iy ah, uh ah)
i@                                    iy ah
aI@ aI3 aU@                           ay er, ay er, aw er
                                      (non-rhotic: ay ah, ay ah, aw ah)
====================================  =============================

Non-rhotic accents (``en``, ``en-gb-x-rp``, ``en-us-nyc``, ``en-029``,
``en-gb-x-gbclan``, ``en-gb-x-gbcwmd``) use the "non-rhotic" column;
``en-gb-scotland`` writes its ``r`` as a separate phoneme, so its r-vowels
map to the plain vowel (:data:`ACCENT_OVERRIDES`).  A mnemonic missing
from the table is retried without eSpeak's variant marks (trailing digits,
``#``, ``/``, ``-``); if that fails too it becomes ``sil`` and is counted in
the corpus manifest (``unmapped``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from deltarnn.speech.datasets.phones import PHONE_TO_ID, SIL

__all__ = [
    "ESPEAK_TO_TIMIT",
    "ACCENT_OVERRIDES",
    "RHOTIC_ACCENTS",
    "map_phoneme",
    "events_to_segments",
]

_R = "r"
#: eSpeak English phoneme mnemonic -> TIMIT-39 phone(s), rhotic American.
#: ``None`` merges the segment into the previous phone.
ESPEAK_TO_TIMIT: dict[str, str | tuple[str, ...] | None] = {
    # consonants
    "p": "p", "b": "b", "t": "t", "d": "d", "k": "k", "g": "g",
    "f": "f", "v": "v", "T": "th", "D": "dh", "s": "s", "z": "z",
    "S": "sh", "Z": "sh", "h": "hh", "x": "hh",
    "m": "m", "n": "n", "N": "ng", "l": "l", "r": "r", "w": "w", "j": "y",
    "tS": "ch", "dZ": "jh",
    "t#": "dx", "d#": "dx", "t2": "t", "t[": "t",
    "z#": "z", "z/2": "z", "w#": "w", "r-": "r", "r/": "r", "l/2": "l",
    "n-": "n", "@L": "l", ";": "y", "?": None,
    # vowels
    "@": "ah", "@2": "ah", "@5": "ah", "@#": "ah", "a#": "ah", "a#2": "ah", "V": "ah",
    "3": "er", "3:": "er", "VR": "er", "IR": "er",
    "a": "ae", "a2": "ae", "a/": "ae", "aa": "ae", "A#": "ae",
    "A:": "aa", "0": "aa", "0#": "aa", "02": "aa", "O": "aa", "O:": "aa",
    "O2": "aa", "A~": "aa", "O~": "aa",
    "E": "eh", "E#": "eh", "E2": "eh", "e": "eh", "e#": "eh",
    "e:": "ey", "eI": "ey",
    "I": "ih", "I2": "ih", "I#": "ih", "I2#": "ih",
    "i": "iy", "i:": "iy",
    "U": "uh", "u:": "uw",
    "aU": "aw", "oU": "ow", "oU#": "ow", "o:": "ow",
    "aI": "ay", "aI2": "ay", "OI": "oy",
    "A@": ("aa", _R), "O@": ("aa", _R), "o@": ("aa", _R),
    "e@": ("eh", _R), "i@3": ("ih", _R), "U@": ("uh", _R),
    "i@": ("iy", "ah"),
    "aI@": ("ay", "er"), "aI3": ("ay", "er"), "aU@": ("aw", "er"),
}  # fmt: skip

_NON_RHOTIC: dict[str, str | tuple[str, ...] | None] = {
    "3": "ah",
    "A@": "aa", "O@": "aa", "o@": "aa",
    "e@": ("eh", "ah"), "i@3": ("iy", "ah"), "U@": ("uh", "ah"),
    "aI@": ("ay", "ah"), "aI3": ("ay", "ah"), "aU@": ("aw", "ah"),
}  # fmt: skip

#: Accents whose r-vowels are r-coloured inside the vowel (base table).
RHOTIC_ACCENTS = frozenset({"en-us"})

#: Per-accent changes to :data:`ESPEAK_TO_TIMIT` (checked with eSpeak's IPA
#: output of each accent).
ACCENT_OVERRIDES: dict[str, dict[str, str | tuple[str, ...] | None]] = {
    "en-us": {},
    "en-us-nyc": dict(_NON_RHOTIC),
    "en": dict(_NON_RHOTIC),
    "en-gb-x-rp": {**_NON_RHOTIC, "aa": "aa"},
    "en-029": dict(_NON_RHOTIC),
    "en-gb-x-gbclan": dict(_NON_RHOTIC),
    "en-gb-x-gbcwmd": {**_NON_RHOTIC, "e@": "er"},
    # Scottish English: rhotic, but the r is a phoneme of its own.
    "en-gb-scotland": {
        "3": "ah", "A@": "aa", "O@": "aa", "o@": "ow", "e@": "ey", "i@3": "ih",
        "U@": "uw", "aI@": ("ay", "ah"), "aI3": ("ay", "ah"), "aU@": ("aw", "ah"),
    },
}  # fmt: skip


def _strip_variant(symbol: str) -> str:
    """Drop eSpeak's trailing variant marks (digits, ``#``, ``/``, ``-``, ``[``, ``;``).

    Parameters
    ----------
    symbol : str
        eSpeak mnemonic without stress marks.

    Returns
    -------
    str
        The mnemonic without its variant marks (never empty).
    """
    s = symbol
    while len(s) > 1 and (s[-1].isdigit() or s[-1] in "#/-[;"):
        s = s[:-1]
    return s


def map_phoneme(symbol: str, accent: str = "en-us") -> tuple[str, ...] | None:
    """Map one eSpeak phoneme mnemonic to TIMIT-39 phones.

    Parameters
    ----------
    symbol : str
        eSpeak mnemonic as found in a phoneme event (stress marks allowed).
    accent : str
        eSpeak voice the phoneme came from (selects the overrides).

    Returns
    -------
    tuple of str, or None
        One or two TIMIT-39 phones; ``None`` merges the segment into the
        previous phone (glottal stop); ``("sil",)`` for pauses and for
        symbols that cannot be mapped.
    """
    s = symbol.lstrip("',%=")
    if not s or s.startswith("_"):
        return (SIL,)
    table = ACCENT_OVERRIDES.get(accent, {})
    for candidate in (s, _strip_variant(s)):
        if candidate in table:
            value = table[candidate]
            break
        if candidate in ESPEAK_TO_TIMIT:
            value = ESPEAK_TO_TIMIT[candidate]
            break
    else:
        return (SIL,)
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


def _is_mapped(symbol: str, accent: str) -> bool:
    """Whether :func:`map_phoneme` finds ``symbol`` in the tables (pauses count as mapped).

    Parameters
    ----------
    symbol : str
        eSpeak mnemonic (stress marks allowed).
    accent : str
        eSpeak accent (selects the overrides).

    Returns
    -------
    bool
        ``False`` if the symbol would become ``sil`` for want of a mapping.
    """
    s = symbol.lstrip("',%=")
    if not s or s.startswith("_"):
        return True
    table = ACCENT_OVERRIDES.get(accent, {})
    return any(c in table or c in ESPEAK_TO_TIMIT for c in (s, _strip_variant(s)))


def events_to_segments(
    events: Sequence[tuple[int, str]],
    num_samples: int,
    accent: str = "en-us",
    unmapped: Counter | None = None,
) -> list[tuple[int, int, int]]:
    """Turn eSpeak phoneme events into labelled sample segments.

    Parameters
    ----------
    events : sequence of (int, str)
        ``(sample, mnemonic)`` in time order, sample positions in the
        signal the segments refer to.
    num_samples : int
        Signal length; the last phoneme lasts until here.
    accent : str
        eSpeak accent (for the mapping overrides).
    unmapped : collections.Counter, optional
        Incremented for every mnemonic without a mapping.

    Returns
    -------
    list of (int, int, int)
        ``(start, end, class_id)``; samples before the first event are not
        covered (they take the ``sil`` fill when framed).
    """
    segs: list[list[int]] = []
    bounds = [int(s) for s, _ in events] + [int(num_samples)]
    for i, (_, sym) in enumerate(events):
        start, end = min(bounds[i], num_samples), min(max(bounds[i + 1], bounds[i]), num_samples)
        if unmapped is not None and not _is_mapped(sym, accent):
            unmapped[sym.lstrip("',%=")] += 1
        phones = map_phoneme(sym, accent)
        if phones is None:
            if segs:
                segs[-1][1] = max(segs[-1][1], end)
            continue
        if end <= start:
            continue
        cuts = np.linspace(start, end, len(phones) + 1).round().astype(int)
        for k, p in enumerate(phones):
            if cuts[k + 1] > cuts[k]:
                segs.append([int(cuts[k]), int(cuts[k + 1]), PHONE_TO_ID[p]])
    return [tuple(s) for s in segs]

