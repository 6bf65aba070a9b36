"""Rendering one utterance: eSpeak audio -> 16 kHz noisy signal -> features and frame labels.

:func:`render_utterance` synthesises an :class:`~.plan.UtteranceSpec` with the
engine, resamples to 16 kHz (:func:`resample`, FFT method), pads silence,
labels the frames from the phoneme events (relabelling runs of near-silent
frames ``sil`` and merging 1-frame fragments into a neighbour), scales to the peak level, adds white or pink noise at the planned SNR
and computes the log mel features.  Everything is determined by the spec and
the configuration.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from deltarnn.speech.datasets.features import (
    frame_centers,
    log_mel_fbank,
    num_frames,
    segments_to_frame_labels,
)
from deltarnn.speech.datasets.phones import SIL_ID

from .config import EspeakConfig
from .engine import EspeakEngine
from .phonemes import events_to_segments
from .plan import UtteranceSpec

__all__ = ["merge_short_runs", "relabel_silence", "resample", "render_utterance"]


def _runs(mask_or_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and lengths of the runs of equal values."""
    a = np.asarray(mask_or_labels)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    return starts, np.diff(np.r_[starts, a.size])


def relabel_silence(labels: np.ndarray, quiet: np.ndarray, min_run: int, sil_id: int = SIL_ID) -> np.ndarray:
    """``labels`` with every run of at least ``min_run`` ``quiet`` frames set to ``sil_id``.

    Shorter quiet runs (a stop's closure inside a word, a dip inside a vowel)
    keep their phone labels, so one phone is not split into three tokens.
    """
    out = np.array(labels, dtype=np.int64, copy=True)
    starts, lengths = _runs(quiet)
    for s, n in zip(starts, lengths):
        if quiet[s] and n >= min_run:
            out[s:s + n] = sil_id
    return out


def merge_short_runs(labels: np.ndarray, min_len: int) -> np.ndarray:
    """``labels`` with every run shorter than ``min_len`` frames merged into its neighbour.

    A short run takes the label of the run before it (after that run's own
    merge), or of the run after it at the start of the sequence. A sequence
    that is one short run stays as it is.
    """
    out = np.array(labels, dtype=np.int64, copy=True)
    starts, lengths = _runs(out)
    for k, (s, n) in enumerate(zip(starts, lengths)):
        if n >= min_len or len(starts) == 1:
            continue
        if s > 0:
            out[s:s + n] = out[s - 1]
        else:
            out[s:s + n] = out[starts[1]]
    return out


def _smooth_length(n: int) -> int:
    """Smallest k >= n whose prime factors are 2, 3 and 5 (a fast FFT length).

    Parameters
    ----------
    n : int
        Minimum length.

    Returns
    -------
    int
        The length, at least 1.
    """
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
    """Noise with a 1/f power spectrum (white noise shaped in the FFT domain).

    Parameters
    ----------
    n : int
        Number of samples.
    rng : numpy.random.Generator
        Source of the white noise.

    Returns
    -------
    numpy.ndarray
        float64 noise of length ``n`` (not normalised).
    """
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
    labels = merge_short_runs(relabel_silence(labels, silent, config.min_silence_frames), config.min_segment_frames)

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
