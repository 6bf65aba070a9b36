"""The synthetic eSpeak corpus: the tiny configuration, end to end."""

import ast
import importlib
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from deltarnn.speech.datasets import load_dataset
from deltarnn.speech.datasets import espeak as es
from deltarnn.speech.datasets.phones import PHONE_TO_ID, PHONES_39, SIL_ID
from deltarnn.speech.datasets.sentences import generate_sentences, vocabulary


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("espeak") / "tiny"
    t0 = time.perf_counter()
    es.generate_corpus("tiny", cache_dir=folder, workers=2, progress=False)
    assert time.perf_counter() - t0 < 30
    return folder


@pytest.fixture(scope="module")
def splits(cache):
    return {s: load_dataset("espeak-tiny", s, cache_dir=cache) for s in es.SPLITS}


def test_sizes_and_types(splits):
    cfg = es.CONFIGS["tiny"]
    for split, ds in splits.items():
        assert ds.name == "espeak-tiny" and ds.split == split
        assert ds.feature_dim == 40 and ds.num_classes == 39
        assert len(ds) == cfg.n_speakers[split] * cfg.utts_per_speaker
        for u in ds:
            assert u.features.dtype == np.float32 and u.features.shape[1] == 40
            assert u.labels.dtype == np.int64 and u.labels.shape == (u.features.shape[0],)
            assert u.labels.min() >= 0 and u.labels.max() < 39
            assert np.isfinite(u.features).all()
            # per-utterance normalisation by default
            np.testing.assert_allclose(u.features.mean(0), 0, atol=1e-3)
            # utterances start and end in silence, like TIMIT's h#
            assert u.labels[0] == SIL_ID and u.labels[-1] == SIL_ID


def test_label_statistics(splits):
    train = splits["train"]
    counts = train.label_counts()
    assert counts.sum() == train.num_frames
    assert (counts > 0).sum() >= 25  # broad coverage even in the tiny corpus
    sil = counts[SIL_ID] / counts.sum()
    assert 0.05 < sil < 0.5


def test_labels_have_no_fragments(splits):
    """No 1-frame label runs, and no 1-2 frame silences that split one phone (``s sil s``)."""
    split_phones = 0
    for ds in splits.values():
        for u in ds:
            lab = u.labels
            starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
            lengths = np.diff(np.r_[starts, lab.size])
            assert lengths.min() >= 2, u.id
            phones = lab[starts]
            for k in range(1, len(phones) - 1):
                if phones[k] == SIL_ID and phones[k - 1] == phones[k + 1] and lengths[k] < 3:
                    split_phones += 1
    assert split_phones == 0


def test_relabel_silence_and_merge_short_runs():
    lab = np.array([5, 5, 5, 5, 5, 5, 7, 7, 7, 7])
    quiet = np.array([0, 1, 1, 0, 0, 0, 1, 1, 1, 0], dtype=bool)
    out = es.relabel_silence(lab, quiet, 3, sil_id=0)
    np.testing.assert_array_equal(out, [5, 5, 5, 5, 5, 5, 0, 0, 0, 7])
    np.testing.assert_array_equal(es.relabel_silence(lab, quiet, 2, sil_id=0), [5, 0, 0, 5, 5, 5, 0, 0, 0, 7])
    np.testing.assert_array_equal(es.merge_short_runs(np.array([3, 1, 1, 1, 2, 1, 1, 4]), 2),
                                  [1, 1, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(es.merge_short_runs(np.array([1, 1, 2, 2, 9, 2, 2]), 2), [1, 1, 2, 2, 2, 2, 2])
    np.testing.assert_array_equal(es.merge_short_runs(np.array([4]), 2), [4])
    assert es.GENERATOR_VERSION == 2


def test_speakers_are_disjoint(splits):
    speakers = {s: set(ds.speakers) for s, ds in splits.items()}
    assert len(speakers["train"]) == 8 and len(speakers["dev"]) == 2
    assert not speakers["train"] & speakers["dev"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]
    # disjoint voice timbres (variant families), not just speaker names
    fam = {
        s: {es.VARIANT_FAMILIES.get(sp.split("-")[1], sp.split("-")[1]) for sp in spk}
        for s, spk in speakers.items()
    }
    assert not fam["train"] & fam["dev"] and not fam["train"] & fam["test"]
    assert not fam["dev"] & fam["test"]
    assert len(fam["train"]) >= 4


def test_caching_is_fast_and_identical(cache, splits):
    t0 = time.perf_counter()
    again = load_dataset("espeak-tiny", "train", cache_dir=cache)
    assert time.perf_counter() - t0 < 2.0
    first = splits["train"]
    assert [u.id for u in again] == [u.id for u in first]
    for a, b in zip(again, first):
        assert np.array_equal(a.features, b.features) and np.array_equal(a.labels, b.labels)
    manifest = again.info["manifest"]
    assert manifest["config_hash"] == es.config_hash(es.CONFIGS["tiny"])
    assert manifest["unmapped"] == {}
    assert manifest["splits"]["train"]["utterances"] == len(first)


def test_generation_is_reproducible(cache, tmp_path):
    """A fresh generation with one worker gives bit-identical files."""
    (tmp_path / "again").mkdir()  # an existing empty folder is fine
    other = es.generate_corpus("tiny", cache_dir=tmp_path / "again", workers=1, progress=False)
    for split in ("dev", "test"):
        with np.load(cache / f"{split}.npz") as a, np.load(other / f"{split}.npz") as b:
            for key in a.files:
                assert np.array_equal(a[key], b[key]), (split, key)


def test_raw_and_global_normalisation(cache):
    raw = load_dataset("espeak-tiny", "dev", cache_dir=cache, normalize="none")
    glob = load_dataset("espeak-tiny", "dev", cache_dir=cache, normalize="global")
    mean, std = glob.info["cmvn_stats"]
    np.testing.assert_allclose(glob[0].features, (raw[0].features - mean) / (std + 1e-8), atol=1e-4)


def test_default_cache_location(monkeypatch, tmp_path):
    cfg = es.get_config("tiny")
    monkeypatch.delenv("DELTARNN_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert es.default_cache_dir(cfg) == tmp_path / "deltarnn" / f"espeak-{es.config_hash(cfg)}"
    monkeypatch.setenv("DELTARNN_CACHE", str(tmp_path / "c"))
    assert es.default_cache_dir(cfg).parent == tmp_path / "c"
    # any change of configuration changes the hash
    assert es.config_hash(cfg) != es.config_hash(es.get_config("tiny", seed=1))
    assert es.config_hash(cfg) == es.config_hash(es.get_config("tiny"))


def test_plan_is_deterministic():
    cfg = es.get_config("tiny")
    a, b = es.plan_corpus(cfg), es.plan_corpus(cfg)
    assert a == b
    c = es.plan_corpus(es.get_config("tiny", seed=5))
    assert [s.text for s in a] != [s.text for s in c]
    default = es.plan_corpus(es.get_config("default"))
    assert Counter(s.split for s in default) == {"train": 3696, "dev": 400, "test": 192}
    assert len({s.speaker for s in default}) == 462 + 50 + 24


def test_sentences():
    assert generate_sentences(5, seed=3) == generate_sentences(5, seed=3)
    for s in generate_sentences(50, seed=1, min_words=3, max_words=6):
        assert 3 <= len(s.replace(",", " ").split()) <= 6 and s[-1] in ".?"
    assert {"measure", "boy", "book", "thumb"} <= set(vocabulary())


def test_phone_mapping_table():
    for table in [es.ESPEAK_TO_TIMIT, *es.ACCENT_OVERRIDES.values()]:
        for value in table.values():
            if value is None:
                continue
            for p in (value,) if isinstance(value, str) else value:
                assert p in PHONE_TO_ID
    # every phoneme of eSpeak NG's English tables (phsource/ph_english*) is
    # in the table explicitly
    english = """
        0 0# 02 3 3: ? @ @# @2 @5 @L A# A: A@ A~ E E# E2 I I# I2 I2# IR N O O2 O: O@
        OI O~ U U@ V VR a a# a#2 a/ a2 aI aI2 aI3 aI@ aU aU@ aa d d# e# e: e@ eI h i
        i: i@ i@3 l l/2 n o: o@ oU oU# r r- r/ t t# t2 u: w# z# z/2
    """.split()
    assert [p for p in english if p not in es.ESPEAK_TO_TIMIT] == []
    m = es.map_phoneme
    assert m("'A@", "en-us") == ("aa", "r")
    assert m("A@", "en-gb-x-rp") == ("aa",)
    assert m("t#") == ("dx",) and m("Z") == ("sh",) and m(",i:") == ("iy",)
    assert m("_:") == ("sil",) and m("_!") == ("sil",)
    assert m("?") is None  # glottal stop: merged like TIMIT's q
    assert m("I2#7") == ("ih",)  # variant marks stripped
    assert m("@@@") == ("sil",)  # unknown
    # every target class but a few rare ones is reachable
    reachable = {p for v in es.ESPEAK_TO_TIMIT.values() if v for p in ((v,) if isinstance(v, str) else v)}
    assert reachable | {"sil"} == set(PHONES_39)


def test_events_to_segments():
    events = [(0, "_"), (100, "h"), (200, "'A@"), (400, "?"), (450, "n")]
    unmapped = Counter()
    segs = es.events_to_segments(events + [(500, "@@@")], 600, "en-us", unmapped)
    ids = {v: k for k, v in PHONE_TO_ID.items()}
    assert [(s, e, ids[p]) for s, e, p in segs] == [
        (0, 100, "sil"), (100, 200, "hh"), (200, 300, "aa"), (300, 450, "r"),
        (450, 500, "n"), (500, 600, "sil"),
    ]  # fmt: skip
    assert unmapped == {"@@@": 1}


def test_resample():
    t = np.arange(22050) / 22050
    x = np.sin(2 * np.pi * 1000 * t)
    y = es.resample(x, 22050, 16000)
    assert len(y) == 16000
    spec = np.abs(np.fft.rfft(y[2000:14000] * np.hanning(12000)))
    assert abs(np.argmax(spec) * 16000 / 12000 - 1000) < 3


def test_engine_events():
    engine = es.EspeakEngine.get()
    audio, events = engine.synthesize("Hello there.", "en-us+f2", rate=175, seed=1)
    assert engine.sample_rate == 22050 and audio.dtype == np.int16 and len(audio) > 10000
    positions = [s for s, _ in events]
    assert positions == sorted(positions) and positions[-1] <= len(audio)
    names = [n.lstrip("',") for _, n in events]
    assert names[:4] == ["h", "@", "l", "oU"]
    with pytest.raises(es.EspeakError):
        engine.set_voice("xx-nonexistent")


def test_cache_dir_must_not_hold_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="no complete eSpeak corpus"):
        es.generate_corpus("tiny", cache_dir=tmp_path, progress=False)
    assert (tmp_path / "notes.txt").exists()


def test_bad_arguments(cache):
    with pytest.raises(ValueError):
        load_dataset("espeak-tiny", "valid", cache_dir=cache)
    with pytest.raises(ValueError):
        load_dataset("nonexistent", "train")
    with pytest.raises(ValueError):
        es.get_config("huge")
    with pytest.raises(ValueError):
        es.get_config("tiny", accents=(("fr", 1.0),))


MODULES = ("engine", "phonemes", "voices", "config", "plan", "render", "worker", "cache", "corpus")


def test_package_modules_form_no_import_cycle():
    """Each module of the package imports only modules listed before it in MODULES."""
    folder = Path(es.__file__).parent
    assert sorted(p.stem for p in folder.glob("*.py")) == sorted((*MODULES, "__init__"))
    for k, name in enumerate(MODULES):
        tree = ast.parse((folder / f"{name}.py").read_text())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.add(node.module)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(es.__name__):
                # an absolute import of the package itself stays whole and fails below
                deps.add(node.module.removeprefix(f"{es.__name__}."))
        assert deps <= set(MODULES[:k]), (name, deps - set(MODULES[:k]))
    # every module imports on its own in a fresh interpreter
    code = "; ".join(f"import {es.__name__}.{m}" for m in reversed(MODULES))
    subprocess.run([sys.executable, "-c", code], check=True)


def test_package_reexports_public_names():
    for name in es.__all__:
        assert hasattr(es, name), name
    for name in MODULES:
        mod = importlib.import_module(f"{es.__name__}.{name}")
        assert mod.__doc__ and mod.__doc__.strip(), name
        for public in getattr(mod, "__all__", []):
            assert getattr(mod, public) is not None


def test_worker_command_points_at_worker_module():
    from deltarnn.speech.datasets.espeak import worker

    assert f"from {worker.__name__} import main" in worker.WORKER_CODE
    assert worker.__name__ == "deltarnn.speech.datasets.espeak.worker"
    assert callable(worker.main)


def test_config_json_round_trip():
    from deltarnn.speech.datasets.espeak.config import config_from_dict, config_to_dict

    for cfg in es.CONFIGS.values():
        d = config_to_dict(cfg)
        assert config_to_dict(config_from_dict(d)) == d
        assert es.plan_corpus(config_from_dict(d)) == es.plan_corpus(cfg)
