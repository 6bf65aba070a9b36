"""The corpus configuration: :class:`EspeakConfig`, the named :data:`CONFIGS`, and its JSON form.

Everything that determines a generated corpus is a field of
:class:`EspeakConfig`; :func:`config_to_dict` is the JSON form that enters the
cache key and the manifest and is sent to the worker processes, and
:func:`config_from_dict` rebuilds the configuration from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from deltarnn.speech.datasets.features import FbankConfig

from .phonemes import ACCENT_OVERRIDES
from .voices import DEFAULT_ACCENTS, VARIANTS

__all__ = [
    "SPLITS",
    "EspeakConfig",
    "CONFIGS",
    "get_config",
    "config_to_dict",
    "config_from_dict",
]

#: Split names.
SPLITS = ("train", "dev", "test")


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
        Voice families (:data:`~.voices.VARIANT_FAMILIES`; a variant without a
        family is its own) reserved for dev and for test; the rest train.
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
        quiet; runs of at least ``min_silence_frames`` quiet frames are
        labelled ``sil``.
    min_silence_frames : int
        Shortest run of quiet frames relabelled ``sil`` (shorter ones, inside
        a phone, keep the phone's label).
    min_segment_frames : int
        Label runs shorter than this are merged into the preceding run (the
        following one at the start of an utterance).
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
    min_silence_frames: int = 3
    min_segment_frames: int = 2
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
    """Turn tuples into lists, recursively through dicts and lists (JSON's view of the data)."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj



def config_to_dict(config: EspeakConfig) -> dict:
    """The configuration as plain JSON data (tuples become lists).

    Parameters
    ----------
    config : EspeakConfig
        The configuration.

    Returns
    -------
    dict
        Its fields, nested :class:`FbankConfig` included; the input of the
        cache key, the manifest and the worker jobs.
    """
    return _jsonable(asdict(config))


def config_from_dict(d: dict) -> EspeakConfig:
    """Rebuild a configuration from :func:`config_to_dict`'s output.

    Parameters
    ----------
    d : dict
        JSON data of a configuration (lists where the fields hold tuples).

    Returns
    -------
    EspeakConfig
        The configuration, equal to the one that was converted.
    """
    d = dict(d)
    d["fbank"] = FbankConfig(**d["fbank"])
    for key in ("rate_wpm", "pitch", "pitch_range", "snr_db", "level_dbfs", "noise_types"):
        d[key] = tuple(d[key])
    d["accents"] = tuple((a, float(w)) for a, w in d["accents"])
    d["variants"] = tuple((v, g) for v, g in d["variants"])
    return EspeakConfig(**d)

