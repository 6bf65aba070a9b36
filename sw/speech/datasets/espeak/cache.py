"""The corpus cache: its key (:func:`config_hash`), its folder, and the split files in it.

A corpus lives in one folder, by default ``~/.cache/deltarnn/espeak-<hash>``
(:func:`default_cache_dir`), where ``<hash>`` covers the configuration,
:data:`GENERATOR_VERSION` and the eSpeak NG version.  The folder holds
``manifest.json`` and one ``<split>.npz`` per split (:func:`write_split`); it
is complete when all of them are there (:func:`cache_complete`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .config import SPLITS, EspeakConfig, config_to_dict
from .engine import espeak_version
from .plan import UtteranceSpec

__all__ = [
    "GENERATOR_VERSION",
    "config_hash",
    "default_cache_dir",
    "write_split",
    "cache_complete",
]

#: Bumped whenever a change to this package changes the generated data.
GENERATOR_VERSION = 2


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
        "config": config_to_dict(config),
        "generator": GENERATOR_VERSION,
        "espeak": espeak_version(),
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


def write_split(path: Path, specs: list[UtteranceSpec], shards: list[dict]) -> None:
    """Write one split's ``.npz`` from its utterances and the worker shards.

    Parameters
    ----------
    path : pathlib.Path
        The ``<split>.npz`` file.
    specs : list of UtteranceSpec
        The split's utterances, in shard order.
    shards : list of dict
        The worker shards of the split, in job order
        (:func:`~.worker.run_worker`).

    Notes
    -----
    The file holds ``features`` and ``labels`` (all utterances
    concatenated), ``offsets`` (utterance ``i`` is frames
    ``offsets[i]:offsets[i + 1]``), ``samples`` (16 kHz samples per
    utterance), and per utterance ``ids``, ``speakers``, ``texts``,
    ``voices``, ``rates``, ``pitches``, ``pitch_ranges``, ``snr_db`` and
    ``noise``.
    """
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


def cache_complete(folder: Path) -> bool:
    """Whether a folder holds a complete corpus (manifest and every split).

    Parameters
    ----------
    folder : pathlib.Path
        A corpus cache folder.

    Returns
    -------
    bool
        ``True`` if ``manifest.json`` and all ``<split>.npz`` files exist.
    """
    return (folder / "manifest.json").is_file() and all(
        (folder / f"{s}.npz").is_file() for s in SPLITS
    )
