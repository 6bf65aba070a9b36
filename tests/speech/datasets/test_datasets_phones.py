"""The TIMIT phone sets and the 61 -> 39 folding."""

import numpy as np
import pytest

from deltarnn.speech.datasets import phones as ph


def test_sizes_and_ids():
    assert len(ph.PHONES_61) == len(set(ph.PHONES_61)) == 61
    assert len(ph.PHONES_39) == ph.NUM_PHONES == 39
    assert list(ph.PHONES_39) == sorted(ph.PHONES_39)
    assert ph.PHONES_39[ph.SIL_ID] == "sil" and ph.SIL_ID == 30
    assert all(ph.PHONE_TO_ID[p] == i for i, p in enumerate(ph.PHONES_39))


def test_folding_table_matches_lee_hon():
    merged = {
        "ao": "aa", "ax": "ah", "ax-h": "ah", "axr": "er", "hv": "hh", "ix": "ih",
        "el": "l", "em": "m", "en": "n", "nx": "n", "eng": "ng", "zh": "sh", "ux": "uw",
        "pcl": "sil", "tcl": "sil", "kcl": "sil", "bcl": "sil", "dcl": "sil",
        "gcl": "sil", "h#": "sil", "pau": "sil", "epi": "sil",
    }  # fmt: skip
    for src, dst in merged.items():
        assert ph.fold(src) == dst
    # every other label maps to itself, and q is deleted
    for p in ph.PHONES_61:
        if p == "q":
            assert ph.fold(p) is None
        elif p not in merged:
            assert ph.fold(p) == p
    assert set(ph.FOLD_61_TO_39.values()) == set(ph.PHONES_39)
    # 61 labels - q = 60 labels onto 39 classes
    assert len(ph.FOLD_61_TO_39) == 60


def test_fold_is_case_insensitive_and_idempotent():
    assert ph.fold("AX-H") == "ah"
    assert ph.fold(" H# ") == "sil"
    for p in ph.PHONES_39:
        assert ph.fold(p) == p
    with pytest.raises(KeyError):
        ph.fold("xyz")


def test_sequence_helpers():
    seq = ["h#", "sh", "ix", "hv", "q", "eh", "dcl", "d", "h#"]
    assert ph.fold_sequence(seq) == ["sil", "sh", "ih", "hh", "eh", "sil", "d", "sil"]
    ids = ph.encode(seq)
    assert ids.dtype == np.int64
    assert ph.decode(ids) == ph.fold_sequence(seq)
    assert ph.phone_to_id("zh") == ph.PHONE_TO_ID["sh"]
    assert ph.id_to_phone(ph.SIL_ID) == "sil"
    with pytest.raises(KeyError):
        ph.phone_to_id("q")


def test_fold_segments_merges_q():
    segs = [(0, 100, "h#"), (100, 200, "iy"), (200, 260, "q"), (260, 400, "ix"), (400, 500, "h#")]
    assert ph.fold_segments(segs) == [
        (0, 100, "sil"), (100, 260, "iy"), (260, 400, "ih"), (400, 500, "sil"),
    ]  # fmt: skip
    # a leading q is merged into the following phone
    assert ph.fold_segments([(0, 50, "q"), (50, 90, "ae")]) == [(0, 90, "ae")]
    # only q: silence
    assert ph.fold_segments([(0, 50, "q")]) == [(0, 50, "sil")]
