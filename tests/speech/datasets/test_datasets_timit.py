"""TIMIT loader on a small corpus written here in TIMIT's own file formats."""

import wave

import numpy as np
import pytest

from deltarnn.speech.datasets import load_dataset
from deltarnn.speech.datasets import timit
from deltarnn.speech.datasets.features import frame_centers, log_mel_fbank
from deltarnn.speech.datasets.phones import PHONE_TO_ID, SIL_ID

# (start, end, label) in samples; q and closures exercise the folding.
PHN = [
    (0, 1000, "h#"), (1000, 2500, "sh"), (2500, 3500, "iy"), (3500, 3800, "q"),
    (3800, 5000, "ix"), (5000, 5600, "dcl"), (5600, 6200, "d"), (6200, 7800, "h#"),
]  # fmt: skip
N_SAMPLES = 8000
EXPECTED_SEGMENTS = [  # folded; q merged into iy
    (0, 1000, "sil"), (1000, 2500, "sh"), (2500, 3800, "iy"), (3800, 5000, "ih"),
    (5000, 5600, "sil"), (5600, 6200, "d"), (6200, 7800, "sil"),
]  # fmt: skip


def sphere_bytes(samples, coding=None, byte_format="01", rate=16000):
    fields = [
        "database_id -s5 TIMIT",
        "database_version -s3 1.0",
        "utterance_id -s8 xxx_sx1",
        "channel_count -i 1",
        f"sample_count -i {len(samples)}",
        f"sample_rate -i {rate}",
        f"sample_min -i {int(samples.min())}",
        f"sample_max -i {int(samples.max())}",
        "sample_n_bytes -i 2",
        f"sample_byte_format -s2 {byte_format}",
        "sample_sig_bits -i 16",
    ]
    if coding is not None:
        fields.append(f"sample_coding -s{len(coding)} {coding}")
    head = ("NIST_1A\n   1024\n" + "\n".join(fields) + "\nend_head\n").encode()
    head += b" " * (1024 - len(head))
    dtype = "<i2" if byte_format == "01" else ">i2"
    return head + samples.astype(dtype).tobytes()


def signal(seed):
    rng = np.random.default_rng(seed)
    t = np.arange(N_SAMPLES) / 16000
    x = 3000 * np.sin(2 * np.pi * (300 + 50 * seed) * t) + 200 * rng.standard_normal(N_SAMPLES)
    return x.astype(np.int16)


def write_utt(folder, name, seed, upper=True, fmt="sphere"):
    folder.mkdir(parents=True, exist_ok=True)
    stem = name.upper() if upper else name.lower()
    phn_ext, wav_ext = (".PHN", ".WAV") if upper else (".phn", ".wav")
    (folder / (stem + phn_ext)).write_text("".join(f"{s} {e} {p}\n" for s, e, p in PHN))
    x = signal(seed)
    if fmt == "riff":
        with wave.open(str(folder / (stem + ".WAV.wav")), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(x.astype("<i2").tobytes())
    else:
        order = "10" if fmt == "big" else "01"
        (folder / (stem + wav_ext)).write_bytes(sphere_bytes(x, byte_format=order))
    return x


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("timit") / "TIMIT"
    layout = {
        ("TRAIN", "DR1", "FCJF0"): True,  # upper-case names
        ("TRAIN", "DR2", "mabc0"): False,  # lower-case names
        ("TEST", "DR1", "FAKS0"): True,  # dev speaker
        ("TEST", "DR1", "MDAB0"): True,  # core test speaker
        ("TEST", "DR2", "MXYZ0"): True,  # complete test set only
    }
    seed = 0
    for (part, dr, spk), upper in layout.items():
        # TRAIN/ in upper case, test/ in lower case
        folder = root / (part if part == "TRAIN" else part.lower()) / dr / spk
        if not upper:
            folder = root / part / dr.lower() / spk  # mixed case
        for utt in ("sa1", "si1027", "sx37"):
            seed += 1
            fmt = "riff" if spk == "MXYZ0" and utt == "sx37" else "sphere"
            fmt = "big" if spk == "FAKS0" and utt == "si1027" else fmt
            write_utt(folder, utt, seed, upper, fmt)
    return root


def test_speaker_lists():
    assert len(timit.DEV_SPEAKERS) == 50 and len(timit.CORE_TEST_SPEAKERS) == 24
    assert not timit.DEV_SPEAKERS & timit.CORE_TEST_SPEAKERS
    # 2 male + 1 female per dialect region in the core test set
    assert sum(s.startswith("f") for s in timit.CORE_TEST_SPEAKERS) == 8
    assert {"faks0", "mrws1", "fmml0"} <= timit.DEV_SPEAKERS
    assert {"mdab0", "fmld0", "mtas1"} <= timit.CORE_TEST_SPEAKERS


def test_read_sphere_roundtrip(tmp_path):
    x = signal(3)
    p = tmp_path / "a.wav"
    p.write_bytes(sphere_bytes(x))
    y, rate = timit.read_sphere(p)
    assert rate == 16000 and y.dtype == np.int16 and np.array_equal(x, y)
    p.write_bytes(sphere_bytes(x, byte_format="10"))
    assert np.array_equal(timit.read_sphere(p)[0], x)
    p.write_bytes(sphere_bytes(x, coding="pcm"))
    assert np.array_equal(timit.read_wav(p)[0], x)


def test_compressed_sphere_is_a_clear_error(tmp_path):
    p = tmp_path / "SX1.WAV"
    p.write_bytes(sphere_bytes(signal(1), coding="pcm,embedded-shorten-v2.00"))
    with pytest.raises(timit.SphereError, match="shorten"):
        timit.read_sphere(p)
    p.write_bytes(b"RIFX not sphere")
    with pytest.raises(timit.SphereError, match="NIST"):
        timit.read_sphere(p)


def test_split_membership(corpus):
    ids = {s: [e.id for e in timit.list_utterances(corpus, s)] for s in timit.SPLITS}
    assert ids["train"] == [
        "train/dr1/fcjf0/si1027", "train/dr1/fcjf0/sx37",
        "train/dr2/mabc0/si1027", "train/dr2/mabc0/sx37",
    ]  # fmt: skip
    assert ids["dev"] == ["test/dr1/faks0/si1027", "test/dr1/faks0/sx37"]
    assert ids["test"] == ["test/dr1/mdab0/si1027", "test/dr1/mdab0/sx37"]
    assert len(ids["test-full"]) == 6  # all TEST speakers, SA excluded
    with_sa = timit.list_utterances(corpus, "train", include_sa=True)
    assert len(with_sa) == 6
    # the folder holding TIMIT/ is accepted as root too
    assert len(timit.list_utterances(corpus.parent, "dev")) == 2
    with pytest.raises(ValueError):
        timit.list_utterances(corpus, "valid")


def test_loader_labels_and_features(corpus):
    ds = load_dataset("timit", "train", root=corpus, normalize="none")
    assert ds.name == "timit" and len(ds) == 4 and ds.num_classes == 39
    assert ds.feature_dim == 40 and ds.speakers == ["fcjf0", "mabc0"]
    centers = frame_centers(ds[0].num_frames)
    expected = np.full(len(centers), SIL_ID)
    for s, e, p in EXPECTED_SEGMENTS:
        expected[(centers >= s) & (centers < e)] = PHONE_TO_ID[p]
    for u in ds:
        assert u.features.dtype == np.float32 and u.labels.dtype == np.int64
        assert u.features.shape == (48, 40) and len(u.labels) == len(u.features)
        assert np.array_equal(u.labels, expected)
    # raw features equal the feature module's output on the same samples
    x, _ = timit.read_wav(timit.list_utterances(corpus, "train")[0].wav)
    assert np.array_equal(ds[0].features, log_mel_fbank(x))


def test_normalisation_options(corpus):
    utt = load_dataset("timit", "dev", root=corpus)  # per utterance (default)
    f = utt[0].features
    np.testing.assert_allclose(f.mean(0), 0, atol=1e-4)
    glob = load_dataset("timit", "test", root=corpus, normalize="global")
    mean, std = glob.info["cmvn_stats"]
    assert mean.shape == std.shape == (40,)
    raw = load_dataset("timit", "test", root=corpus, normalize="none")
    np.testing.assert_allclose(glob[0].features, (raw[0].features - mean) / (std + 1e-8), atol=1e-4)
    riff = load_dataset("timit", "test-full", root=corpus, n_mels=23)
    assert riff.feature_dim == 23 and len(riff) == 6
    with pytest.raises(ValueError):
        load_dataset("timit", "dev", root=corpus, normalize="speaker")


def test_missing_root_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(timit.TIMIT_ENV, raising=False)
    with pytest.raises(timit.TimitNotFoundError, match="DELTARNN_TIMIT"):
        load_dataset("timit", "train")
    missing = tmp_path / "nowhere"
    with pytest.raises(timit.TimitNotFoundError, match="nowhere"):
        load_dataset("timit", "train", root=missing)
    monkeypatch.setenv(timit.TIMIT_ENV, str(missing))
    with pytest.raises(timit.TimitNotFoundError, match="DELTARNN_TIMIT") as e:
        load_dataset("timit", "train")
    assert "nowhere" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(timit.TimitNotFoundError, match="TRAIN"):
        load_dataset("timit", "train", root=tmp_path / "empty")


def test_env_variable_root(corpus, monkeypatch):
    monkeypatch.setenv(timit.TIMIT_ENV, str(corpus))
    assert len(load_dataset("timit", "test")) == 2
