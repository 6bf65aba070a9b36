"""Log mel filterbank features with NumPy only, and frame/label helpers.

The front end follows Kaldi's ``compute-fbank-feats`` defaults without
dither (so it is deterministic):

1. framing: 25 ms windows every 10 ms; frame ``t`` covers samples
   ``[t * hop, t * hop + win)``; only whole frames are kept
   (``1 + (n - win) // hop`` frames; a signal shorter than one window is
   zero-padded to one frame);
2. per frame: DC offset removal, pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]``
   (``x[-1] := x[0]``), Hamming window;
3. power spectrum of a 512-point real FFT;
4. ``n_mels`` (40) triangular filters equally spaced on the HTK mel scale
   ``1127 ln(1 + f / 700)`` between ``fmin`` (20 Hz) and ``fmax``
   (Nyquist);
5. natural log of the filter energies, floored at ``log_floor`` (1e-10).

Waveforms are float arrays in [-1, 1]; int16 input is scaled by 1/32768.
Computation is in float64; the result is float32 with shape
``(frames, n_mels)``.

Frame ``t`` is *centred* on sample ``t * hop + win // 2``; a frame takes the
label of the segment that contains its centre (:func:`sample_range_to_frames`,
:func:`segments_to_frame_labels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "FbankConfig",
    "log_mel_fbank",
    "mel_filterbank",
    "hz_to_mel",
    "mel_to_hz",
    "num_frames",
    "frame_centers",
    "sample_range_to_frames",
    "segments_to_frame_labels",
    "cmvn",
    "compute_cmvn_stats",
    "apply_cmvn",
]


@dataclass(frozen=True)
class FbankConfig:
    """Parameters of :func:`log_mel_fbank`.

    Attributes
    ----------
    sample_rate : int
        Sampling rate in Hz (16000).
    win_ms, hop_ms : float
        Window length and hop in milliseconds (25, 10).
    n_mels : int
        Number of mel bands (40).
    n_fft : int
        FFT length (512); must be at least the window length in samples.
    preemph : float
        Pre-emphasis coefficient (0.97).
    fmin, fmax : float
        Filterbank edges in Hz; ``fmax=None`` means Nyquist.
    log_floor : float
        Filter energies are clipped below at this value before the log.
    remove_dc : bool
        Subtract each frame's mean before pre-emphasis.
    """

    sample_rate: int = 16000
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_mels: int = 40
    n_fft: int = 512
    preemph: float = 0.97
    fmin: float = 20.0
    fmax: float | None = None
    log_floor: float = 1e-10
    remove_dc: bool = True

    @property
    def win_length(self) -> int:
        """Window length in samples (400 at 16 kHz)."""
        return int(round(self.sample_rate * self.win_ms / 1000.0))

    @property
    def hop_length(self) -> int:
        """Hop in samples (160 at 16 kHz)."""
        return int(round(self.sample_rate * self.hop_ms / 1000.0))


def hz_to_mel(f):
    """HTK mel scale, ``1127 ln(1 + f / 700)``.

    Parameters
    ----------
    f : float or array_like
        Frequency in Hz.

    Returns
    -------
    float or numpy.ndarray
        Mel value(s).
    """
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    """Inverse of :func:`hz_to_mel`.

    Parameters
    ----------
    m : float or array_like
        Mel value(s).

    Returns
    -------
    float or numpy.ndarray
        Frequency in Hz.
    """
    return 700.0 * np.expm1(np.asarray(m, dtype=np.float64) / 1127.0)


@lru_cache(maxsize=16)
def _mel_filterbank_cached(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    bins = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)
    mel_bins = hz_to_mel(bins)
    edges = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (mel_bins[None, :] - left) / (center - left)
    down = (right - mel_bins[None, :]) / (right - center)
    fb = np.maximum(0.0, np.minimum(up, down))
    fb.setflags(write=False)
    return fb


def mel_filterbank(
    sample_rate: int = 16000,
    n_fft: int = 512,
    n_mels: int = 40,
    fmin: float = 20.0,
    fmax: float | None = None,
) -> np.ndarray:
    """Triangular mel filters (Kaldi style: triangles in the mel domain).

    Parameters
    ----------
    sample_rate : int
        Sampling rate in Hz.
    n_fft : int
        FFT length.
    n_mels : int
        Number of filters.
    fmin, fmax : float
        Lower and upper edge in Hz (``fmax=None``: Nyquist).

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n_mels, n_fft // 2 + 1)``, read-only.
    """
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= fmin < fmax <= Nyquist, got {fmin}, {fmax}")
    return _mel_filterbank_cached(int(sample_rate), int(n_fft), int(n_mels), float(fmin), fmax)


def num_frames(num_samples: int, win_length: int = 400, hop_length: int = 160) -> int:
    """Number of frames :func:`log_mel_fbank` returns for a signal.

    Parameters
    ----------
    num_samples : int
        Signal length in samples.
    win_length, hop_length : int
        Window and hop in samples.

    Returns
    -------
    int
        ``1 + (num_samples - win_length) // hop_length``, at least 1.
    """
    if num_samples <= win_length:
        return 1
    return 1 + (int(num_samples) - win_length) // hop_length


def frame_centers(n_frames: int, win_length: int = 400, hop_length: int = 160) -> np.ndarray:
    """Sample index of each frame's centre, ``t * hop + win // 2``.

    Parameters
    ----------
    n_frames : int
        Number of frames.
    win_length, hop_length : int
        Window and hop in samples.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(n_frames,)``.
    """
    return np.arange(n_frames, dtype=np.int64) * hop_length + win_length // 2


def sample_range_to_frames(
    start: int,
    end: int,
    n_frames: int | None = None,
    win_length: int = 400,
    hop_length: int = 160,
) -> tuple[int, int]:
    """Frames whose centre lies in the sample range ``[start, end)``.

    Parameters
    ----------
    start, end : int
        Sample range, end exclusive.
    n_frames : int, optional
        Number of frames of the utterance; the result is clipped to it.
    win_length, hop_length : int
        Window and hop in samples.

    Returns
    -------
    (int, int)
        ``(first, stop)``: frames ``first .. stop - 1`` (possibly empty,
        ``first == stop``).

    Examples
    --------
    With 25 ms / 10 ms at 16 kHz frame ``t`` is centred on ``160 t + 200``:

    >>> sample_range_to_frames(0, 2400)
    (0, 14)
    """
    half = win_length // 2
    # first t with t*hop + half >= start, i.e. ceil((start - half) / hop)
    first = max(0, -((half - int(start)) // hop_length))
    stop = max(0, -((half - int(end)) // hop_length))
    if n_frames is not None:
        first = min(first, n_frames)
        stop = min(stop, n_frames)
    return first, max(first, stop)


def segments_to_frame_labels(
    segments: Sequence[tuple[int, int, int]],
    n_frames: int,
    fill: int,
    win_length: int = 400,
    hop_length: int = 160,
) -> np.ndarray:
    """Per-frame labels from time-aligned segments.

    Each frame takes the label of the segment containing its centre
    sample; frames outside every segment get ``fill``.  Where segments
    overlap, the later one wins.

    Parameters
    ----------
    segments : sequence of (int, int, int)
        ``(start_sample, end_sample, label_id)``, end exclusive.
    n_frames : int
        Number of frames (as returned by :func:`num_frames`).
    fill : int
        Label for frames covered by no segment (typically silence).
    win_length, hop_length : int
        Window and hop in samples.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(n_frames,)``.
    """
    labels = np.full(n_frames, fill, dtype=np.int64)
    for start, end, label in segments:
        a, b = sample_range_to_frames(start, end, n_frames, win_length, hop_length)
        labels[a:b] = label
    return labels


def _to_float(waveform) -> np.ndarray:
    x = np.asarray(waveform)
    if x.ndim != 1:
        raise ValueError(f"waveform must be 1-D, got shape {x.shape}")
    if x.dtype == np.int16:
        return x.astype(np.float64) / 32768.0
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"waveform must be float or int16, got {x.dtype}")
    return x.astype(np.float64, copy=False)


def log_mel_fbank(
    waveform,
    sample_rate: int = 16000,
    n_mels: int = 40,
    win_ms: float = 25.0,
    hop_ms: float = 10.0,
    n_fft: int = 512,
    preemph: float = 0.97,
    fmin: float = 20.0,
    fmax: float | None = None,
    log_floor: float = 1e-10,
    remove_dc: bool = True,
    config: FbankConfig | None = None,
) -> np.ndarray:
    """Log mel filterbank energies of a waveform.

    Parameters
    ----------
    waveform : array_like
        1-D float signal in [-1, 1], or int16 (scaled by 1/32768).
    sample_rate : int
        Sampling rate in Hz.
    n_mels : int
        Number of mel bands.
    win_ms, hop_ms : float
        Window and hop in milliseconds.
    n_fft : int
        FFT size; at least the window length in samples.
    preemph : float
        Pre-emphasis coefficient (0 disables it).
    fmin, fmax : float
        Filterbank range in Hz (``fmax=None``: Nyquist).
    log_floor : float
        Floor applied to filter energies before the log.
    remove_dc : bool
        Remove each frame's mean first.
    config : FbankConfig, optional
        If given, overrides all the keyword parameters above.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(frames, n_mels)`` with
        ``frames = num_frames(len(waveform), win, hop)``.
    """
    if config is None:
        config = FbankConfig(
            sample_rate=sample_rate, win_ms=win_ms, hop_ms=hop_ms, n_mels=n_mels,
            n_fft=n_fft, preemph=preemph, fmin=fmin, fmax=fmax, log_floor=log_floor,
            remove_dc=remove_dc,
        )  # fmt: skip
    c = config
    win, hop = c.win_length, c.hop_length
    if win > c.n_fft:
        raise ValueError(f"window of {win} samples does not fit a {c.n_fft}-point FFT")
    x = _to_float(waveform)
    n = num_frames(len(x), win, hop)
    need = (n - 1) * hop + win
    if len(x) < need:
        x = np.concatenate([x, np.zeros(need - len(x))])
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:n].copy()
    if c.remove_dc:
        frames -= frames.mean(axis=1, keepdims=True)
    if c.preemph:
        frames[:, 1:] -= c.preemph * frames[:, :-1].copy()
        frames[:, 0] *= 1.0 - c.preemph
    frames *= np.hamming(win)
    spec = np.fft.rfft(frames, n=c.n_fft, axis=1)
    power = spec.real**2 + spec.imag**2
    fb = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax)
    energies = power @ fb.T
    return np.log(np.maximum(energies, c.log_floor)).astype(np.float32)


def cmvn(features: np.ndarray, variance: bool = True, eps: float = 1e-8) -> np.ndarray:
    """Per-utterance mean (and variance) normalisation.

    Parameters
    ----------
    features : numpy.ndarray
        Shape ``(frames, bands)``.
    variance : bool
        Also scale each band to unit variance.
    eps : float
        Added to the standard deviation.

    Returns
    -------
    numpy.ndarray
        float32, same shape.
    """
    f = np.asarray(features, dtype=np.float64)
    out = f - f.mean(axis=0, keepdims=True)
    if variance:
        out /= f.std(axis=0, keepdims=True) + eps
    return out.astype(np.float32)


def compute_cmvn_stats(features: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Global mean and standard deviation over all frames of many utterances.

    Parameters
    ----------
    features : sequence of numpy.ndarray
        Each of shape ``(frames_i, bands)``; typically the training split.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        float64 ``mean`` and ``std``, each of shape ``(bands,)``.
    """
    count = 0
    s = s2 = None
    for f in features:
        f = np.asarray(f, dtype=np.float64)
        if s is None:
            s = np.zeros(f.shape[1])
            s2 = np.zeros(f.shape[1])
        count += f.shape[0]
        s += f.sum(axis=0)
        s2 += np.square(f).sum(axis=0)
    if not count:
        raise ValueError("no frames to compute statistics on")
    mean = s / count
    var = np.maximum(s2 / count - mean**2, 0.0)
    return mean, np.sqrt(var)


def apply_cmvn(
    features: np.ndarray, mean: np.ndarray, std: np.ndarray, eps: float = 1e-8
) -> np.ndarray:
    """Normalise with given (global) statistics: ``(f - mean) / (std + eps)``.

    Parameters
    ----------
    features : numpy.ndarray
        Shape ``(frames, bands)``.
    mean, std : numpy.ndarray
        Shape ``(bands,)``, from :func:`compute_cmvn_stats`.
    eps : float
        Added to ``std``.

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``features``.
    """
    f = np.asarray(features, dtype=np.float64)
    return ((f - mean) / (np.asarray(std) + eps)).astype(np.float32)
