"""Common data types of the speech corpora: :class:`Utterance` and
:class:`SpeechDataset`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from deltarnn.speech.datasets.phones import NUM_PHONES, PHONES_39, SIL_ID

__all__ = ["Utterance", "SpeechDataset", "normalize_utterances", "NORMALIZE_CHOICES"]

#: Accepted values of the ``normalize`` option of the loaders.
NORMALIZE_CHOICES = ("utterance", "global", "none")


@dataclass(frozen=True, eq=False)
class Utterance:
    """One utterance: features and aligned frame labels.

    Attributes
    ----------
    features : numpy.ndarray
        float32, shape ``(T, F)``: one feature vector per 10 ms frame.
    labels : numpy.ndarray
        int64, shape ``(T,)``: 39-phone class id of each frame
        (see :data:`deltarnn.speech.datasets.phones.PHONES_39`).
    speaker : str
        Speaker identifier (unique within the corpus).
    id : str
        Utterance identifier (unique within the corpus).
    """

    features: np.ndarray
    labels: np.ndarray
    speaker: str
    id: str

    def __post_init__(self):
        if self.features.ndim != 2 or self.labels.shape != (self.features.shape[0],):
            raise ValueError(
                f"utterance {self.id}: features {self.features.shape} and labels "
                f"{self.labels.shape} do not align"
            )

    @property
    def num_frames(self) -> int:
        """Number of frames ``T``."""
        return int(self.features.shape[0])


@dataclass
class SpeechDataset(Sequence[Utterance]):
    """A list of utterances of one split, with the facts a model needs.

    Behaves as a read-only sequence of :class:`Utterance`.

    Attributes
    ----------
    name : str
        Corpus name (``"timit"``, ``"espeak"``, ``"espeak-tiny"``).
    split : str
        Split name (``"train"``, ``"dev"``, ``"test"``...).
    utterances : list of Utterance
        The utterances, in a fixed (sorted) order.
    feature_dim : int
        ``F``, the feature dimension.
    num_classes : int
        Number of phone classes (39).
    phones : tuple of str
        Class names; ``phones[i]`` is the name of class ``i``.
    sil_id : int
        Class id of silence.
    frame_shift_ms : float
        Frame hop in milliseconds (10).
    info : dict
        Free-form facts about how the data was made (configuration, cache
        path, normalisation statistics...).
    """

    name: str
    split: str
    utterances: list[Utterance]
    feature_dim: int
    num_classes: int = NUM_PHONES
    phones: tuple[str, ...] = PHONES_39
    sil_id: int = SIL_ID
    frame_shift_ms: float = 10.0
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index):
        return self.utterances[index]

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances)

    def __repr__(self) -> str:
        return (
            f"SpeechDataset(name={self.name!r}, split={self.split!r}, "
            f"utterances={len(self)}, speakers={len(self.speakers)}, "
            f"frames={self.num_frames}, feature_dim={self.feature_dim}, "
            f"num_classes={self.num_classes})"
        )

    @property
    def speakers(self) -> list[str]:
        """Sorted list of distinct speakers."""
        return sorted({u.speaker for u in self.utterances})

    @property
    def num_frames(self) -> int:
        """Total number of frames."""
        return sum(u.num_frames for u in self.utterances)

    @property
    def hours(self) -> float:
        """Total duration in hours (frames times frame shift)."""
        return self.num_frames * self.frame_shift_ms / 1000.0 / 3600.0

    def label_counts(self) -> np.ndarray:
        """Number of frames of each class.

        Returns
        -------
        numpy.ndarray
            int64, shape ``(num_classes,)``.
        """
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for u in self.utterances:
            counts += np.bincount(u.labels, minlength=self.num_classes)
        return counts


def normalize_utterances(
    utterances: list[Utterance],
    normalize: str | None,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[Utterance]:
    """Apply the loaders' ``normalize`` option to raw-feature utterances.

    Parameters
    ----------
    utterances : list of Utterance
        Utterances with raw log mel features.
    normalize : {"utterance", "global", "none", None}
        ``"utterance"``: per-utterance mean and variance normalisation;
        ``"global"``: ``(f - mean) / std`` with ``stats`` (training-split
        statistics); ``"none"``/``None``: features unchanged.
    stats : (numpy.ndarray, numpy.ndarray), optional
        ``(mean, std)``, required for ``"global"``.

    Returns
    -------
    list of Utterance
        New utterances (labels, speaker and id shared with the input).
    """
    from deltarnn.speech.datasets.features import apply_cmvn, cmvn

    if normalize is None or normalize == "none":
        return list(utterances)
    if normalize == "utterance":
        fn = cmvn
    elif normalize == "global":
        if stats is None:
            raise ValueError("global normalisation needs (mean, std) statistics")
        mean, std = stats

        def fn(f):
            return apply_cmvn(f, mean, std)

    else:
        raise ValueError(f"normalize must be one of {NORMALIZE_CHOICES}, got {normalize!r}")
    return [Utterance(fn(u.features), u.labels, u.speaker, u.id) for u in utterances]
