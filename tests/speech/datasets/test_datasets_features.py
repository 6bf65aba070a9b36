"""Log mel filterbank features and the frame/label helpers."""

import numpy as np
import pytest

from deltarnn.speech.datasets import features as fx


def _tone(freq, seconds=0.5, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return 0.5 * np.sin(2 * np.pi * freq * t)


def test_shape_dtype_and_frame_count():
    x = _tone(440.0, 1.0)
    f = fx.log_mel_fbank(x)
    assert f.dtype == np.float32
    assert f.shape == (1 + (16000 - 400) // 160, 40) == (98, 40)
    assert fx.num_frames(16000) == 98
    assert fx.log_mel_fbank(x, n_mels=23).shape == (98, 23)
    # shorter than a window: one zero-padded frame
    assert fx.log_mel_fbank(np.zeros(100)).shape == (1, 40)
    assert fx.num_frames(400) == 1 and fx.num_frames(560) == 2


def test_deterministic_and_int16_equivalent():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(8000) * 0.1
    a = fx.log_mel_fbank(x)
    b = fx.log_mel_fbank(x.copy())
    assert np.array_equal(a, b)
    q = np.round(x * 32768).clip(-32768, 32767).astype(np.int16)
    np.testing.assert_allclose(fx.log_mel_fbank(q), fx.log_mel_fbank(q / 32768.0), rtol=0, atol=1e-5)
    with pytest.raises(TypeError):
        fx.log_mel_fbank(np.zeros(1000, dtype=np.int32))


def test_tone_lands_in_the_right_band_and_floor():
    f = fx.log_mel_fbank(_tone(1000.0))
    fb = fx.mel_filterbank()
    bins = np.arange(257) * 16000 / 512
    expected = int(np.argmax(fb[:, np.argmin(abs(bins - 1000.0))]))
    assert np.all(f.argmax(axis=1) == expected)
    silent = fx.log_mel_fbank(np.zeros(4000))
    assert np.allclose(silent, np.log(1e-10))


def test_mel_filterbank_layout():
    fb = fx.mel_filterbank(16000, 512, 40)
    assert fb.shape == (40, 257)
    assert (fb >= 0).all() and fb.max() <= 1.0
    peaks = fb.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0)
    assert fx.hz_to_mel(700.0) == pytest.approx(1127.0 * np.log(2.0))
    assert fx.mel_to_hz(fx.hz_to_mel(1234.5)) == pytest.approx(1234.5)
    with pytest.raises(ValueError):
        fx.mel_filterbank(16000, 512, 40, fmin=0, fmax=9000)


def test_sample_ranges_to_frames():
    # frame t is centred on 160 t + 200
    assert list(fx.frame_centers(3)) == [200, 360, 520]
    assert fx.sample_range_to_frames(0, 2400) == (0, 14)
    assert fx.sample_range_to_frames(200, 360) == (0, 1)
    assert fx.sample_range_to_frames(201, 360) == (1, 1)  # empty
    assert fx.sample_range_to_frames(300, 10_000, n_frames=20) == (1, 20)
    segs = [(0, 1000, 3), (1000, 1200, 5), (1200, 3000, 7)]
    labels = fx.segments_to_frame_labels(segs, 20, fill=30)
    assert labels.dtype == np.int64 and labels.shape == (20,)
    centers = fx.frame_centers(20)
    for t, c in enumerate(centers):
        want = 3 if c < 1000 else 5 if c < 1200 else 7 if c < 3000 else 30
        assert labels[t] == want


def test_normalisation_helpers():
    rng = np.random.default_rng(1)
    f = (rng.standard_normal((300, 40)) * 3 + 5).astype(np.float32)
    g = fx.cmvn(f)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(g.std(0), 1, atol=1e-4)
    parts = [f[:100], f[100:]]
    mean, std = fx.compute_cmvn_stats(parts)
    np.testing.assert_allclose(mean, f.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, f.astype(np.float64).std(0), rtol=1e-5)
    np.testing.assert_allclose(fx.apply_cmvn(f, mean, std), g, atol=1e-4)
