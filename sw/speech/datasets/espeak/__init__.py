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
   :data:`ESPEAK_TO_TIMIT` (and the accent's overrides; see
   :mod:`.phonemes`), a two-phone mapping splitting the segment in two
   equal halves.  Then every run of at least ``min_silence_frames`` (3)
   frames whose 10 ms centre windows are more than ``silence_db`` below the
   loudest frame of the clean signal is relabelled ``sil``: eSpeak emits a
   stop's closure *before* the stop's event, so without this step the
   closure would be labelled as the preceding phone, whereas TIMIT labels
   closures (``bcl``, ``tcl``...) and pauses, which fold to ``sil``. Shorter
   quiet runs keep their phone, and label runs shorter than
   ``min_segment_frames`` (2) are merged into the preceding run (generator
   version 2; version 1 relabelled every quiet frame and kept 1-frame
   fragments, which split one phone into three tokens such as ``s sil s``).
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
The eSpeak -> TIMIT-39 table and its per-accent overrides are documented
in :mod:`deltarnn.speech.datasets.espeak.phonemes`.

Modules
-------
One responsibility each; every name below is also importable from this
package.  Each module imports only modules listed before it (no cycles).

:mod:`.engine`
    ctypes binding of libespeak-ng: :class:`EspeakEngine`,
    :class:`EspeakError`, :func:`~.engine.espeak_version`.
:mod:`.phonemes`
    the phone table (:data:`ESPEAK_TO_TIMIT`, :data:`ACCENT_OVERRIDES`),
    :func:`map_phoneme`, :func:`events_to_segments`.
:mod:`.voices`
    accents, voice variants and their families (:data:`DEFAULT_ACCENTS`,
    :data:`VARIANTS`, :data:`VARIANT_FAMILIES`).
:mod:`.config`
    :class:`EspeakConfig`, :data:`CONFIGS`, :func:`get_config`,
    :data:`SPLITS`, the configuration's JSON form.
:mod:`.plan`
    the corpus planner: :class:`UtteranceSpec`, :func:`plan_corpus`, the
    worker jobs.
:mod:`.render`
    one utterance to features and labels: :func:`render_utterance`,
    :func:`resample`.
:mod:`.worker`
    the worker-process protocol (a job on stdin, a shard file out).
:mod:`.cache`
    :func:`config_hash`, :func:`default_cache_dir`,
    :data:`GENERATOR_VERSION`, the split files.
:mod:`.corpus`
    :func:`generate_corpus` and :func:`load_espeak`.
"""

from __future__ import annotations

from .engine import EspeakEngine, EspeakError
from .phonemes import (
    ACCENT_OVERRIDES,
    ESPEAK_TO_TIMIT,
    RHOTIC_ACCENTS,
    events_to_segments,
    map_phoneme,
)
from .voices import DEFAULT_ACCENTS, VARIANT_FAMILIES, VARIANTS
from .config import CONFIGS, SPLITS, EspeakConfig, get_config
from .plan import UtteranceSpec, plan_corpus
from .render import merge_short_runs, relabel_silence, render_utterance, resample
from .cache import GENERATOR_VERSION, config_hash, default_cache_dir
from .corpus import generate_corpus, load_espeak

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
    "resample",
    "relabel_silence",
    "merge_short_runs",
    "generate_corpus",
    "load_espeak",
]
