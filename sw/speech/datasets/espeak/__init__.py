"""A synthetic phone-recognition corpus that anyone can regenerate offline.

Sentences from a built-in grammar (:mod:`deltarnn.speech.datasets.sentences`) are spoken
by eSpeak NG, loaded with :mod:`ctypes` from the ``espeakng_loader`` wheel
(which ships ``libespeak-ng`` and its data, so nothing else is installed).
Each utterance is labelled frame by frame with the 39 TIMIT phone classes,
featurised exactly like TIMIT (:mod:`deltarnn.speech.datasets.features`) and returned in
the same structure as the TIMIT loader.

How an utterance is made
------------------------
1. *Speaker*: an eSpeak voice ``"<accent>+<variant>"`` (e.g.
   ``"en-us+m3"``, ``"en-gb-scotland+f2"``) with a speaker-specific base
   rate (words per minute), pitch and pitch range.  The *variant* (the
   voice timbre) decides the split: train, dev and test use disjoint sets
   of variant families (:data:`VARIANT_FAMILIES`), hence disjoint
   speakers and timbres.
2. *Synthesis*: ``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, ...,
   espeakINITIALIZE_PHONEME_EVENTS)``, a synth callback that collects the
   22050 Hz samples and the ``espeakEVENT_PHONEME`` events, whose
   ``sample`` field is the output sample at which eSpeak starts generating
   that phoneme.  Rate and pitch (with a small per-utterance jitter) are set
   with ``espeak_SetParameter``; eSpeak's noise generator is seeded per
   utterance (``espeak_ng_SetRandSeed``).
3. *Labels*: each phoneme event opens a segment that lasts until the next
   event; its eSpeak mnemonic is mapped to the 39 classes with
   :data:`ESPEAK_TO_TIMIT` (and the accent's overrides), a two-phone
   mapping splitting the segment in two equal halves.  Then every frame
   whose 10 ms centre window is more than ``silence_db`` below the loudest
   frame of the clean signal is relabelled ``sil``: eSpeak emits a stop's
   closure *before* the stop's event, so without this step the closure
   would be labelled as the preceding phone, whereas TIMIT labels closures
   (``bcl``, ``tcl``...) and pauses, which fold to ``sil``.
4. *Signal*: resampled to 16 kHz (FFT method), padded with 0.1-0.3 s of
   silence at both ends, scaled to a random peak level, and mixed with
   white or pink noise at a random SNR (relative to the power of the
   non-silent frames); then 40 log mel bands, 25/10 ms.

Reproducibility
---------------
eSpeak keeps internal state across utterances (phase, flutter, resonator
memories), so the same text synthesised twice in one process may differ
by a few samples.  The corpus is therefore synthesised in fresh worker
processes, one per fixed group of ``speakers_per_job`` speakers: the same
configuration gives bit-identical corpora, whatever the number of
parallel workers.  The result is cached under
``~/.cache/deltarnn/espeak-<hash>`` (``<hash>`` covers the configuration,
:data:`GENERATOR_VERSION` and the eSpeak NG version).

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

import ctypes
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from deltarnn.speech.datasets.base import SpeechDataset, Utterance, normalize_utterances
from deltarnn.speech.datasets.features import (
    FbankConfig,
    compute_cmvn_stats,
    frame_centers,
    log_mel_fbank,
    num_frames,
    segments_to_frame_labels,
)
from deltarnn.speech.datasets.phones import PHONE_TO_ID, SIL, SIL_ID
from deltarnn.speech.datasets.sentences import generate_sentence

__all__ = [
    "GENERATOR_VERSION",
    "SPLITS",
    "ESPEAK_TO_TIMIT",
    "ACCENT_OVERRIDES",
    "RHOTIC_ACCENTS",
    "VARIANTS",
    "VARIANT_FAMILIES",
    "DEFAULT_ACCENTS",
    "EspeakConfig",
    "CONFIGS",
    "UtteranceSpec",
    "EspeakEngine",
    "EspeakError",
    "get_config",
    "config_hash",
    "default_cache_dir",
    "map_phoneme",
    "events_to_segments",
    "plan_corpus",
    "render_utterance",
    "generate_corpus",
    "load_espeak",
]

#: Bumped whenever a change to this module changes the generated data.
GENERATOR_VERSION = 1

#: Split names.
SPLITS = ("train", "dev", "test")

# eSpeak audio output modes and options (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_ESPEAK_PITCH = 3
_ESPEAK_RANGE = 4
_ESPEAK_SAMPLE_RATE = 22050

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

#: Default accents and their sampling weights (American English first).
DEFAULT_ACCENTS: tuple[tuple[str, float], ...] = (
    ("en-us", 4.0),
    ("en-us-nyc", 1.0),
    ("en", 1.0),
    ("en-gb-x-rp", 1.0),
    ("en-gb-scotland", 1.0),
    ("en-029", 1.0),
    ("en-gb-x-gbclan", 1.0),
    ("en-gb-x-gbcwmd", 1.0),
)

#: Groups of variants that share their formant settings (near-duplicate
#: timbres); a group never straddles two splits.
VARIANT_FAMILIES: dict[str, str] = {
    **dict.fromkeys(["Diogo", "Henrique", "Hugo", "michel", "miguel", "anika"], "br"),
    **dict.fromkeys(["Gene", "Gene2"], "gene"),
    **dict.fromkeys(["grandpa", "john"], "john"),
    **dict.fromkeys(["Nguyen", "m8"], "m8"),
    **dict.fromkeys(["klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6"], "klatt"),
    **dict.fromkeys(["edward", "edward2"], "edward"),
    **dict.fromkeys(["f2", "f5"], "f2"),
    **dict.fromkeys(["iven", "iven2", "iven3", "iven4"], "iven"),
    **dict.fromkeys(["steph", "steph2", "steph3"], "steph"),
    **dict.fromkeys(["Andy", "AnxiousAndy"], "andy"),
    **dict.fromkeys(["Mike", "mike2"], "mike"),
    **dict.fromkeys(["Mario", "Michael"], "mario"),
}

#: eSpeak voice variants used as speaker timbres, with a nominal gender.
#: Left out: robotic or echo-heavy variants (robosoft*, RicishayMax*,
#: UniRobot, anikaRobot, announcer, Demonic, Tweaky), whispered ones
#: (whisper, whisperf, caleb), the unstable ``fast`` and ``Mr serious``
#: (a space in its name).
VARIANTS: tuple[tuple[str, str], ...] = tuple(
    (v, "m")
    for v in """
    m1 m2 m3 m4 m5 m6 m7 m8 Alex Andy AnxiousAndy Denis Diogo Gene Gene2 Henrique
    Hugo Jacky Lee Marco Mario Michael Mike Nguyen Reed Storm adam antonio
    benjamin boris croak david ed edward edward2 grandpa gustave ian iven iven2
    iven3 iven4 john kaukovalta klatt klatt2 klatt3 klatt4 klatt5 klatt6 marcelo
    max michel miguel mike2 norbert pablo paul pedro quincy rob robert sandro
    travis victor
    """.split()
) + tuple(
    (v, "f")
    for v in """
    f1 f2 f3 f4 f5 Alicia Andrea Annie anika aunty belinda grandma linda shelby
    steph steph2 steph3 zac
    """.split()
)


class EspeakError(RuntimeError):
    """eSpeak NG could not be loaded or failed to synthesise."""


@dataclass(frozen=True)
class EspeakConfig:
    """Everything that determines a generated corpus.

    Attributes
    ----------
    name : str
        Label of the configuration (``"default"``, ``"tiny"``...).
    seed : int
        Master seed: speakers, sentences, prosody, noise.
    n_train_speakers, n_dev_speakers, n_test_speakers : int
        Speakers per split (default mirrors TIMIT: 462 / 50 / 24).
    utts_per_speaker : int
        Sentences per speaker (TIMIT: 8 without SA).
    n_dev_variants, n_test_variants : int
        Voice families (:data:`VARIANT_FAMILIES`; a variant without a family
        is its own) reserved for dev and for test; the rest train.
    accents : tuple of (str, float)
        eSpeak English voices and their sampling weights.
    variants : tuple of (str, str)
        Voice variants and their nominal gender (``"m"``/``"f"``).
    min_words, max_words : int
        Sentence length in words.
    rate_wpm : (float, float)
        Range of a speaker's base speaking rate (words per minute).
    rate_jitter : float
        Per-utterance relative rate change, uniform in +-``rate_jitter``.
    pitch : (int, int)
        Range of a speaker's base pitch (eSpeak's 0-100 scale, relative to
        the variant's own pitch).
    pitch_jitter : int
        Per-utterance pitch change, uniform in +-``pitch_jitter``.
    pitch_range : (int, int)
        Range of a speaker's intonation range (0-100).
    snr_db : (float, float)
        Range of the signal-to-noise ratio of the added noise.
    noise_types : tuple of str
        Noise colours drawn from (``"white"``, ``"pink"``).
    level_dbfs : (float, float)
        Range of the peak level after scaling, in dB full scale.
    pad_s : (float, float)
        Range of the silence added before and after the speech (seconds),
        like TIMIT's leading and trailing ``h#``.
    silence_db : float
        Frames of the clean signal this far below its loudest frame are
        labelled ``sil``.
    fbank : FbankConfig
        Feature parameters (16 kHz, 40 bands, 25/10 ms).
    speakers_per_job : int
        Speakers synthesised by one fresh worker process (part of the
        configuration because eSpeak's state carries over within a
        process).
    """

    name: str = "default"
    seed: int = 0
    n_train_speakers: int = 462
    n_dev_speakers: int = 50
    n_test_speakers: int = 24
    utts_per_speaker: int = 8
    n_dev_variants: int = 6
    n_test_variants: int = 6
    accents: tuple[tuple[str, float], ...] = DEFAULT_ACCENTS
    variants: tuple[tuple[str, str], ...] = VARIANTS
    min_words: int = 5
    max_words: int = 14
    rate_wpm: tuple[float, float] = (140.0, 200.0)
    rate_jitter: float = 0.08
    pitch: tuple[int, int] = (30, 70)
    pitch_jitter: int = 5
    pitch_range: tuple[int, int] = (30, 80)
    snr_db: tuple[float, float] = (10.0, 30.0)
    noise_types: tuple[str, ...] = ("white", "pink")
    level_dbfs: tuple[float, float] = (-12.0, -1.0)
    pad_s: tuple[float, float] = (0.1, 0.3)
    silence_db: float = 40.0
    fbank: FbankConfig = field(default_factory=FbankConfig)
    speakers_per_job: int = 16

    def __post_init__(self):
        if self.fbank.sample_rate != 16000:
            raise ValueError("the eSpeak corpus is made at 16 kHz (fbank.sample_rate=16000)")
        for accent, _ in self.accents:
            if accent not in ACCENT_OVERRIDES:
                raise ValueError(
                    f"accent {accent!r} has no phone mapping; choose from "
                    f"{sorted(ACCENT_OVERRIDES)}"
                )
        for n in self.noise_types:
            if n not in ("white", "pink"):
                raise ValueError(f"unknown noise type {n!r}")

    @property
    def n_speakers(self) -> dict[str, int]:
        """Speakers per split."""
        return {
            "train": self.n_train_speakers,
            "dev": self.n_dev_speakers,
            "test": self.n_test_speakers,
        }


#: Named configurations.  ``"default"`` mirrors TIMIT's size (462 / 50 / 24
#: speakers, 8 sentences each); ``"tiny"`` is for tests and takes seconds.
CONFIGS: dict[str, EspeakConfig] = {
    "default": EspeakConfig(),
    "tiny": EspeakConfig(
        name="tiny",
        n_train_speakers=8,
        n_dev_speakers=2,
        n_test_speakers=2,
        utts_per_speaker=3,
        n_dev_variants=2,
        n_test_variants=2,
        min_words=3,
        max_words=6,
        speakers_per_job=6,
    ),
}


def get_config(config: str | EspeakConfig | None = None, **overrides) -> EspeakConfig:
    """Resolve a configuration name (or object) and apply field overrides.

    Parameters
    ----------
    config : str or EspeakConfig, optional
        A key of :data:`CONFIGS` (default ``"default"``) or a configuration.
    **overrides
        :class:`EspeakConfig` fields to replace, e.g. ``seed=3``.

    Returns
    -------
    EspeakConfig
        The configuration.
    """
    if config is None:
        config = "default"
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(f"unknown eSpeak configuration {config!r}; have {sorted(CONFIGS)}")
        config = CONFIGS[config]
    return replace(config, **overrides) if overrides else config


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def config_hash(config: EspeakConfig) -> str:
    """Short hash of a configuration, the generator version and eSpeak's version.

    Parameters
    ----------
    config : EspeakConfig
        The configuration.

    Returns
    -------
    str
        12 hexadecimal digits.
    """
    payload = {
        "config": _jsonable(asdict(config)),
        "generator": GENERATOR_VERSION,
        "espeak": _espeak_version(),
    }
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_cache_dir(config: EspeakConfig) -> Path:
    """Where a configuration's corpus is cached.

    ``$DELTARNN_CACHE/espeak-<hash>`` if ``DELTARNN_CACHE`` is set, else
    ``$XDG_CACHE_HOME/deltarnn/espeak-<hash>`` (``~/.cache/deltarnn/...``).

    Parameters
    ----------
    config : EspeakConfig
        The configuration.

    Returns
    -------
    pathlib.Path
        The cache folder (not created).
    """
    base = os.environ.get("DELTARNN_CACHE")
    if base:
        root = Path(base).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "deltarnn"
    return root / f"espeak-{config_hash(config)}"


# --------------------------------------------------------------------------
# phone mapping


def _strip_variant(symbol: str) -> str:
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


# --------------------------------------------------------------------------
# the eSpeak engine (ctypes)


class _Event(ctypes.Structure):
    class _Id(ctypes.Union):
        _fields_ = [
            ("number", ctypes.c_int),
            ("name", ctypes.c_char_p),
            ("string", ctypes.c_char * 8),
        ]

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _Id),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


def _load_library():
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - dependency of the project
        raise EspeakError(
            "the eSpeak corpus needs the 'espeakng-loader' package (pip install "
            "espeakng-loader)"
        ) from e
    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path()
    except (OSError, RuntimeError) as e:
        raise EspeakError(f"cannot load libespeak-ng from espeakng_loader: {e}") from e
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]  # fmt: skip
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.espeak_Info.restype = ctypes.c_char_p
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = ctypes.c_int
    return lib, data


_version_cache: str | None = None


def _espeak_version() -> str:
    """eSpeak NG version string (without initialising the synthesiser)."""
    global _version_cache
    if _version_cache is None:
        try:
            lib, _ = _load_library()
            _version_cache = lib.espeak_Info(None).decode()
        except EspeakError:
            _version_cache = "unavailable"
    return _version_cache


class EspeakEngine:
    """Thin ctypes wrapper of libespeak-ng in synchronous mode.

    libespeak-ng is a process-wide singleton: use :meth:`get` rather than
    creating several engines.  Not thread-safe.

    Notes
    -----
    Synthesis depends slightly on the utterances synthesised before in the
    same process (see the module documentation); :func:`generate_corpus`
    uses fresh processes for that reason.
    """

    _instance: EspeakEngine | None = None
    _lock = threading.Lock()

    def __init__(self):
        self._lib, data = _load_library()
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS,
            0,
            data.encode(),
            _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT,
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}) with data at {data}")
        #: Output sample rate of eSpeak (22050 Hz).
        self.sample_rate = int(rate)
        self.version = self._lib.espeak_Info(None).decode()
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._callback = _SynthCallback(self._on_synth)  # keep a reference
        self._lib.espeak_SetSynthCallback(self._callback)
        try:
            self._libc = ctypes.CDLL(None)
        except OSError:  # pragma: no cover - non-POSIX
            self._libc = None
        self._voice: str | None = None

    @classmethod
    def get(cls) -> EspeakEngine:
        """The process-wide engine, created on first use.

        Returns
        -------
        EspeakEngine
            The engine.
        """
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_synth(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                name = ev.id.string.decode("ascii", errors="replace")
                self._events.append((int(ev.sample), name))
            i += 1
        return 0

    def set_voice(self, name: str) -> None:
        """Select a voice such as ``"en-us+m3"``.

        Parameters
        ----------
        name : str
            ``"<language>[+<variant>]"``.
        """
        if name != self._voice:
            if self._lib.espeak_SetVoiceByName(name.encode()) != 0:
                raise EspeakError(f"eSpeak has no voice {name!r}")
            self._voice = name

    def synthesize(
        self,
        text: str,
        voice: str = "en-us",
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        seed: int | None = 0,
    ) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Speak ``text``; return the waveform and the phoneme events.

        Parameters
        ----------
        text : str
            Text to speak.
        voice : str
            eSpeak voice name, e.g. ``"en-us+f2"``.
        rate : int
            Words per minute (80-450).
        pitch, pitch_range : int
            eSpeak pitch and range parameters (0-100).
        seed : int or None
            Seed of eSpeak's noise generator (``None``: leave it).

        Returns
        -------
        (numpy.ndarray, list of (int, str))
            int16 samples at :attr:`sample_rate`, and
            ``(sample, mnemonic)`` of each phoneme, in order.
        """
        self.set_voice(voice)
        lib = self._lib
        lib.espeak_SetParameter(_ESPEAK_RATE, int(rate), 0)
        lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
        lib.espeak_SetParameter(_ESPEAK_RANGE, int(pitch_range), 0)
        if seed is not None:
            if hasattr(lib, "espeak_ng_SetRandSeed"):
                lib.espeak_ng_SetRandSeed(int(seed))
            if self._libc is not None:
                self._libc.srand(ctypes.c_uint(int(seed) & 0xFFFFFFFF))
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        err = lib.espeak_Synth(
            data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        if err != 0:
            raise EspeakError(f"espeak_Synth failed with error {err}")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio.astype(np.int16, copy=False), list(self._events)


# --------------------------------------------------------------------------
# planning and rendering


@dataclass(frozen=True)
class UtteranceSpec:
    """Everything needed to render one utterance.

    Attributes
    ----------
    id, speaker, split : str
        Identifiers.
    text : str
        The sentence.
    accent, variant : str
        eSpeak voice ``accent+variant``.
    rate, pitch, pitch_range : int
        eSpeak parameters.
    seed : int
        Seed of eSpeak's noise and of the added noise.
    snr_db : float
        SNR of the added noise.
    noise : str
        ``"white"`` or ``"pink"``.
    level_dbfs : float
        Peak level.
    lead_s, tail_s : float
        Silence added before and after the speech, in seconds.
    """

    id: str
    speaker: str
    split: str
    text: str
    accent: str
    variant: str
    rate: int
    pitch: int
    pitch_range: int
    seed: int
    snr_db: float
    noise: str
    level_dbfs: float
    lead_s: float = 0.0
    tail_s: float = 0.0

    @property
    def voice(self) -> str:
        """eSpeak voice name."""
        return f"{self.accent}+{self.variant}"


def _split_variants(config: EspeakConfig, rng: np.random.Generator) -> dict[str, list[str]]:
    """Assign voice families (see :data:`VARIANT_FAMILIES`) to disjoint splits.

    ``n_test_variants`` and ``n_dev_variants`` count families (timbres); the
    gender ratio of the families is kept where the counts allow it.
    """
    families: dict[str, list[str]] = {}
    gender: dict[str, str] = {}
    for v, g in sorted(config.variants):
        fam = VARIANT_FAMILIES.get(v, v)
        families.setdefault(fam, []).append(v)
        gender.setdefault(fam, g)
    by_gender: dict[str, list[str]] = {}
    for fam in sorted(families):
        by_gender.setdefault(gender[fam], []).append(fam)
    total = len(families)
    if config.n_dev_variants + config.n_test_variants >= total:
        raise ValueError(
            f"only {total} voice families: too few for {config.n_dev_variants} dev and "
            f"{config.n_test_variants} test voices plus training"
        )
    pools = {g: [str(f) for f in rng.permutation(fs)] for g, fs in sorted(by_gender.items())}
    out: dict[str, list[str]] = {}
    for split, n in (("test", config.n_test_variants), ("dev", config.n_dev_variants)):
        chosen: list[str] = []
        minority = sorted(pools, key=lambda g: len(by_gender[g]))[:-1]
        for g in minority:
            share = round(n * len(by_gender[g]) / total)
            if n >= 2:
                share = max(share, 1)
            share = min(share, len(pools[g]))
            chosen += [pools[g].pop() for _ in range(share)]
        while len(chosen) < n:
            g = max(pools, key=lambda g: len(pools[g]))
            chosen.append(pools[g].pop())
        out[split] = sorted(v for fam in chosen for v in families[fam])
    out["train"] = sorted(v for fams in pools.values() for fam in fams for v in families[fam])
    return out


def plan_corpus(config: EspeakConfig) -> list[UtteranceSpec]:
    """Deterministic list of all utterances of a configuration.

    Parameters
    ----------
    config : EspeakConfig
        The configuration.

    Returns
    -------
    list of UtteranceSpec
        Train, then dev, then test utterances, grouped by speaker.
    """
    rng = np.random.default_rng([config.seed, 0])
    text_rng = np.random.default_rng([config.seed, 1])
    variants = _split_variants(config, rng)
    accents = [a for a, _ in config.accents]
    weights = np.array([w for _, w in config.accents], dtype=float)
    weights /= weights.sum()
    specs = []
    for split in SPLITS:
        pool = variants[split]
        order = list(rng.permutation(len(pool)))
        for k in range(config.n_speakers[split]):
            variant = pool[order[k % len(pool)]]
            accent = accents[int(rng.choice(len(accents), p=weights))]
            base_rate = rng.uniform(*config.rate_wpm)
            base_pitch = int(rng.integers(config.pitch[0], config.pitch[1] + 1))
            prange = int(rng.integers(config.pitch_range[0], config.pitch_range[1] + 1))
            speaker = f"{split}{k:03d}-{variant}-{accent}"
            for u in range(config.utts_per_speaker):
                text = generate_sentence(text_rng, config.min_words, config.max_words)
                jitter = rng.uniform(-config.rate_jitter, config.rate_jitter)
                pj = int(rng.integers(-config.pitch_jitter, config.pitch_jitter + 1))
                specs.append(
                    UtteranceSpec(
                        id=f"{speaker}-u{u}",
                        speaker=speaker,
                        split=split,
                        text=text,
                        accent=accent,
                        variant=variant,
                        rate=int(round(base_rate * (1 + jitter))),
                        pitch=min(100, max(0, base_pitch + pj)),
                        pitch_range=prange,
                        seed=int(rng.integers(1, 2**31 - 1)),
                        snr_db=float(rng.uniform(*config.snr_db)),
                        noise=str(config.noise_types[int(rng.integers(len(config.noise_types)))]),
                        level_dbfs=float(rng.uniform(*config.level_dbfs)),
                        lead_s=float(rng.uniform(*config.pad_s)),
                        tail_s=float(rng.uniform(*config.pad_s)),
                    )
                )
    return specs


def _smooth_length(n: int) -> int:
    """Smallest k >= n whose prime factors are 2, 3 and 5."""
    k = max(1, n)
    while True:
        m = k
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return k
        k += 1


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling by the FFT method.

    Parameters
    ----------
    x : numpy.ndarray
        float64 signal.
    rate_in, rate_out : int
        Sample rates; the length becomes ``round(len(x) * rate_out / rate_in)``.

    Returns
    -------
    numpy.ndarray
        float64 resampled signal.
    """
    if rate_in == rate_out:
        return x.copy()
    g = np.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    n_out = int(round(len(x) * rate_out / rate_in))
    k = _smooth_length(-(-len(x) // down))
    padded = np.zeros(k * down)
    padded[: len(x)] = x
    spec = np.fft.rfft(padded)
    m = k * up
    keep = min(len(spec), m // 2 + 1)
    out_spec = np.zeros(m // 2 + 1, dtype=complex)
    out_spec[:keep] = spec[:keep]
    if m % 2 == 0 and keep == m // 2 + 1:
        out_spec[-1] = out_spec[-1].real
    y = np.fft.irfft(out_spec, n=m) * (m / len(padded))
    return y[:n_out]


def _pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with a 1/f power spectrum (white noise shaped in the FFT domain)."""
    m = _smooth_length(n)
    spec = np.fft.rfft(rng.standard_normal(m))
    f = np.arange(len(spec), dtype=float)
    f[0] = 1.0
    return np.fft.irfft(spec / np.sqrt(f), n=m)[:n]


def render_utterance(
    spec: UtteranceSpec,
    config: EspeakConfig,
    engine: EspeakEngine | None = None,
    unmapped: Counter | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthesise one utterance; return features, labels and the waveform.

    Parameters
    ----------
    spec : UtteranceSpec
        What to render.
    config : EspeakConfig
        Signal and feature parameters.
    engine : EspeakEngine, optional
        Engine to use (default: the process-wide one).
    unmapped : collections.Counter, optional
        Counts eSpeak symbols that had no mapping.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        float32 features ``(T, F)``, int64 labels ``(T,)``, and the noisy
        16 kHz float32 waveform.
    """
    engine = engine or EspeakEngine.get()
    fb = config.fbank
    audio, events = engine.synthesize(
        spec.text, spec.voice, spec.rate, spec.pitch, spec.pitch_range, spec.seed
    )
    clean = resample(audio.astype(np.float64) / 32768.0, engine.sample_rate, fb.sample_rate)
    lead = int(round(spec.lead_s * fb.sample_rate))
    tail = int(round(spec.tail_s * fb.sample_rate))
    clean = np.concatenate([np.zeros(lead), clean, np.zeros(tail)])
    scale = fb.sample_rate / engine.sample_rate
    events16 = [(lead + int(round(s * scale)), name) for s, name in events]
    n = num_frames(len(clean), fb.win_length, fb.hop_length)
    segs = events_to_segments(events16, len(clean), spec.accent, unmapped)
    labels = segments_to_frame_labels(segs, n, SIL_ID, fb.win_length, fb.hop_length)

    # Local energy of the clean signal around each frame centre (one hop wide).
    centers = frame_centers(n, fb.win_length, fb.hop_length)
    half = fb.hop_length // 2
    csum = np.concatenate([[0.0], np.cumsum(clean**2)])
    lo = np.clip(centers - half, 0, len(clean))
    hi = np.clip(centers + half, 0, len(clean))
    energy = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    peak = energy.max() if n else 0.0
    silent = energy <= peak * 10.0 ** (-config.silence_db / 10.0)
    labels[silent] = SIL_ID

    rng = np.random.default_rng(spec.seed)
    amp = np.abs(clean).max()
    if amp > 0:
        clean = clean * (10.0 ** (spec.level_dbfs / 20.0) / amp)
        energy = energy * (10.0 ** (spec.level_dbfs / 20.0) / amp) ** 2
    speech_power = energy[~silent].mean() if (~silent).any() else float(np.mean(clean**2))
    noise = (
        _pink_noise(len(clean), rng) if spec.noise == "pink" else rng.standard_normal(len(clean))
    )
    noise *= np.sqrt(speech_power / 10.0 ** (spec.snr_db / 10.0) / max(np.mean(noise**2), 1e-30))
    noisy = np.clip(clean + noise, -1.0, 1.0)
    feats = log_mel_fbank(noisy, config=fb)
    return feats, labels, noisy.astype(np.float32)


# --------------------------------------------------------------------------
# corpus generation in fresh worker processes


def _render_job(specs: list[UtteranceSpec], config: EspeakConfig) -> dict:
    """Render a list of utterances in this process; arrays for one shard."""
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


def _config_from_json(d: dict) -> EspeakConfig:
    d = dict(d)
    d["fbank"] = FbankConfig(**d["fbank"])
    for key in ("rate_wpm", "pitch", "pitch_range", "snr_db", "level_dbfs", "noise_types"):
        d[key] = tuple(d[key])
    d["accents"] = tuple((a, float(w)) for a, w in d["accents"])
    d["variants"] = tuple((v, g) for v, g in d["variants"])
    return EspeakConfig(**d)


def _worker_main() -> None:
    """Entry point of a worker process: job JSON on stdin, shard path in argv."""
    job = json.loads(sys.stdin.read())
    config = _config_from_json(job["config"])
    specs = [UtteranceSpec(**s) for s in job["specs"]]
    out = _render_job(specs, config)
    buf = io.BytesIO()
    np.savez(buf, **out)
    Path(job["output"]).write_bytes(buf.getvalue())


def _run_worker(specs: list[UtteranceSpec], config: EspeakConfig, output: Path) -> dict:
    pkg_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # One process per core: keep BLAS from spawning (busy-waiting) threads.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    job = {
        "config": _jsonable(asdict(config)),
        "specs": [asdict(s) for s in specs],
        "output": str(output),
    }
    proc = subprocess.run(
        [sys.executable, "-c", "from deltarnn.speech.datasets.espeak import _worker_main; _worker_main()"],
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


def _jobs(specs: list[UtteranceSpec], speakers_per_job: int) -> list[list[UtteranceSpec]]:
    jobs: list[list[UtteranceSpec]] = []
    current: list[UtteranceSpec] = []
    speakers: list[str] = []
    for s in specs:
        if current and (s.split != current[-1].split or (
            s.speaker not in speakers and len(speakers) == speakers_per_job
        )):
            jobs.append(current)
            current, speakers = [], []
        if s.speaker not in speakers:
            speakers.append(s.speaker)
        current.append(s)
    if current:
        jobs.append(current)
    return jobs


def _write_split(path: Path, specs: list[UtteranceSpec], shards: list[dict]) -> None:
    lengths = np.concatenate([s["lengths"] for s in shards])
    np.savez(
        path,
        features=np.concatenate([s["features"] for s in shards]),
        labels=np.concatenate([s["labels"] for s in shards]),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        samples=np.concatenate([s["samples"] for s in shards]),
        ids=np.array([s.id for s in specs]),
        speakers=np.array([s.speaker for s in specs]),
        texts=np.array([s.text for s in specs]),
        voices=np.array([s.voice for s in specs]),
        rates=np.array([s.rate for s in specs]),
        pitches=np.array([s.pitch for s in specs]),
        pitch_ranges=np.array([s.pitch_range for s in specs]),
        snr_db=np.array([s.snr_db for s in specs]),
        noise=np.array([s.noise for s in specs]),
    )


def _cache_complete(folder: Path) -> bool:
    return (folder / "manifest.json").is_file() and all(
        (folder / f"{s}.npz").is_file() for s in SPLITS
    )


def generate_corpus(
    config: str | EspeakConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Generate a corpus into its cache folder (no-op if already there).

    Parameters
    ----------
    config : str or EspeakConfig, optional
        Configuration or its name (``"default"``, ``"tiny"``).
    cache_dir : str or os.PathLike, optional
        Folder for this corpus (default :func:`default_cache_dir`).
    workers : int, optional
        Parallel worker processes (default: the number of CPUs).  The
        result does not depend on it.
    progress : bool
        Show a tqdm progress bar.
    force : bool
        Regenerate even if the cache is complete (the old corpus is replaced).

    Returns
    -------
    pathlib.Path
        The cache folder, holding ``manifest.json`` and ``train.npz``,
        ``dev.npz``, ``test.npz``.
    """
    config = get_config(config)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(config)
    if folder.exists():
        if _cache_complete(folder):
            if not force:
                return folder
        elif folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        else:
            raise FileExistsError(
                f"cache folder {folder} exists but holds no complete eSpeak corpus; "
                "remove it or choose another cache_dir"
            )
    workers = max(1, workers or os.cpu_count() or 1)
    specs = plan_corpus(config)
    jobs = _jobs(specs, config.speakers_per_job)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(specs), desc=f"eSpeak corpus '{config.name}'", unit="utt")
    try:
        results: dict[int, dict] = {}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(_run_worker, job, config, tmp / f"shard{i:05d}.npz"): i
                for i, job in enumerate(jobs)
            }
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = fut.result()
                (tmp / f"shard{i:05d}.npz").unlink(missing_ok=True)
                if bar is not None:
                    bar.update(len(jobs[i]))
        unmapped: Counter = Counter()
        for r in results.values():
            unmapped.update(json.loads(str(r["unmapped"])))
        summary = {}
        train_stats = None
        for split in SPLITS:
            idx = [i for i, job in enumerate(jobs) if job[0].split == split]
            split_specs = [s for i in idx for s in jobs[i]]
            shards = [results[i] for i in idx]
            _write_split(tmp / f"{split}.npz", split_specs, shards)
            frames = int(sum(int(s["lengths"].sum()) for s in shards))
            samples = int(sum(int(s["samples"].sum()) for s in shards))
            summary[split] = {
                "utterances": len(split_specs),
                "speakers": len({s.speaker for s in split_specs}),
                "variants": sorted({s.variant for s in split_specs}),
                "frames": frames,
                "hours": samples / config.fbank.sample_rate / 3600.0,
            }
            if split == "train":
                mean, std = compute_cmvn_stats([s["features"] for s in shards])
                train_stats = {"mean": mean.tolist(), "std": std.tolist()}
        manifest = {
            "generator_version": GENERATOR_VERSION,
            "espeak_version": _espeak_version(),
            "config_hash": config_hash(config),
            "config": _jsonable(asdict(config)),
            "splits": summary,
            "train_cmvn": train_stats,
            "unmapped": dict(unmapped),
            "generation_seconds": time.perf_counter() - t0,
            "workers": workers,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if force and folder.exists():
            shutil.rmtree(folder)
        try:
            tmp.rename(folder)
        except OSError:
            # Another process finished the same corpus first; keep theirs.
            if not _cache_complete(folder):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    if unmapped:
        warnings.warn(
            f"eSpeak phonemes without a TIMIT mapping were labelled sil: {dict(unmapped)}",
            stacklevel=2,
        )
    return folder


def load_espeak(
    split: str,
    config: str | EspeakConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    normalize: str | None = "utterance",
    workers: int | None = None,
    progress: bool = True,
    **overrides,
) -> SpeechDataset:
    """Load one split of the eSpeak corpus, generating it on first use.

    Parameters
    ----------
    split : {"train", "dev", "test"}
        Split name.
    config : str or EspeakConfig, optional
        ``"default"`` (TIMIT-sized), ``"tiny"``, or a configuration.
    cache_dir : str or os.PathLike, optional
        Cache folder of this corpus (default
        ``~/.cache/deltarnn/espeak-<hash>``).
    normalize : {"utterance", "global", "none", None}
        Feature normalisation; ``"global"`` uses the training split's
        statistics stored in the manifest.
    workers : int, optional
        Worker processes used if the corpus must be generated.
    progress : bool
        Progress bar during generation.
    **overrides
        :class:`EspeakConfig` fields to change, e.g. ``seed=1``.

    Returns
    -------
    SpeechDataset
        Utterances in generation order (grouped by speaker).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown eSpeak corpus split {split!r}; choose one of {SPLITS}")
    config = get_config(config, **overrides)
    folder = generate_corpus(config, cache_dir, workers=workers, progress=progress)
    manifest = json.loads((folder / "manifest.json").read_text())
    with np.load(folder / f"{split}.npz") as z:
        feats, labels, offsets = z["features"], z["labels"], z["offsets"]
        ids, speakers = z["ids"], z["speakers"]
    utts = [
        Utterance(feats[a:b], labels[a:b], str(spk), str(uid))
        for a, b, spk, uid in zip(offsets[:-1], offsets[1:], speakers, ids)
    ]
    stats = None
    if normalize == "global":
        st = manifest["train_cmvn"]
        stats = (np.array(st["mean"]), np.array(st["std"]))
    utts = normalize_utterances(utts, normalize, stats)
    name = "espeak" if config.name == "default" else f"espeak-{config.name}"
    info = {
        "cache_dir": str(folder),
        "config": config,
        "manifest": manifest,
        "normalize": normalize,
    }
    if stats is not None:
        info["cmvn_stats"] = stats
    return SpeechDataset(name, split, utts, feature_dim=config.fbank.n_mels, info=info)
