"""Speech corpora for phone recognition, with one common API.

>>> from deltarnn.speech.datasets import load_dataset
>>> train = load_dataset("espeak-tiny", "train")           # doctest: +SKIP
>>> train.feature_dim, train.num_classes                    # doctest: +SKIP
(40, 39)
>>> u = train[0]; u.features.shape, u.labels.shape          # doctest: +SKIP
((212, 40), (212,))

Corpora (``name``):

``"timit"``
    The TIMIT corpus, which you must hold (LDC93S1); pass ``root=`` or set
    ``DELTARNN_TIMIT``.  Splits ``"train"`` (462 speakers), ``"dev"`` (50),
    ``"test"`` (24-speaker core test set), ``"test-full"``.
``"espeak"``
    A TIMIT-sized synthetic corpus spoken by eSpeak NG, generated on first
    use (about a minute or two on 2 cores) and cached.  Splits ``"train"``,
    ``"dev"``, ``"test"`` with disjoint speakers.
``"espeak-tiny"``
    A few dozen short synthetic utterances, for tests (seconds).

Every loader returns a :class:`SpeechDataset` of :class:`Utterance` objects:
float32 features ``(T, F)`` (40 log mel bands every 10 ms, normalised per
utterance by default), int64 frame labels ``(T,)`` in the 39 TIMIT phone
classes (:mod:`deltarnn.speech.datasets.phones`; ``"sil"`` is class
:data:`~deltarnn.speech.datasets.phones.SIL_ID`), a speaker and an id.  Phone error
rates are computed with :func:`deltarnn.speech.datasets.scoring.phone_error_rate`.
"""

from __future__ import annotations

from deltarnn.speech.datasets.base import SpeechDataset, Utterance
from deltarnn.speech.datasets.phones import NUM_PHONES, PHONES_39, SIL_ID
from deltarnn.speech.datasets.scoring import phone_error_rate

__all__ = [
    "DATASETS",
    "SpeechDataset",
    "Utterance",
    "NUM_PHONES",
    "PHONES_39",
    "SIL_ID",
    "load_dataset",
    "phone_error_rate",
]

#: Names accepted by :func:`load_dataset`.
DATASETS = ("timit", "espeak", "espeak-tiny")


def load_dataset(name: str, split: str, **opts) -> SpeechDataset:
    """Load one split of a corpus.

    Parameters
    ----------
    name : {"timit", "espeak", "espeak-tiny"}
        Corpus.
    split : str
        ``"train"``, ``"dev"`` or ``"test"`` (TIMIT also ``"test-full"``).
    **opts
        Passed to the corpus loader.  Common: ``normalize`` (``"utterance"``
        (default), ``"global"`` with training-split statistics, or
        ``"none"``).  TIMIT (:func:`deltarnn.speech.datasets.timit.load_timit`):
        ``root`` (default ``$DELTARNN_TIMIT``), ``n_mels``, ``fbank``,
        ``include_sa``, ``progress``.  eSpeak
        (:func:`deltarnn.speech.datasets.espeak.load_espeak`): ``cache_dir``,
        ``workers``, ``progress``, ``config`` and any
        :class:`~deltarnn.speech.datasets.espeak.EspeakConfig` field (``seed=1``...).

    Returns
    -------
    SpeechDataset
        The utterances, with ``feature_dim`` and ``num_classes`` (39).

    Raises
    ------
    ValueError
        For an unknown corpus or split.
    deltarnn.speech.datasets.timit.TimitNotFoundError
        If TIMIT is asked for and not found (the message names the path
        and ``DELTARNN_TIMIT``).
    """
    key = name.lower()
    if key == "timit":
        from deltarnn.speech.datasets.timit import load_timit

        return load_timit(split, **opts)
    if key in ("espeak", "espeak-tiny"):
        from deltarnn.speech.datasets.espeak import load_espeak

        if key == "espeak-tiny":
            if "config" in opts and opts["config"] not in (None, "tiny"):
                raise ValueError("'espeak-tiny' fixes config='tiny'; use 'espeak' for others")
            opts["config"] = "tiny"
        return load_espeak(split, **opts)
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
