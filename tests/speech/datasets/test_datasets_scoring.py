"""Phone error rate on hand-computed cases."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltarnn.speech.datasets.phones import SIL_ID
from deltarnn.speech.datasets.scoring import (
    align_counts,
    collapse,
    edit_distance,
    bootstrap_interval,
    phone_error_rate,
    score,
    totals,
    utterance_scores,
)

S = SIL_ID
A, B, C, D = 0, 1, 2, 3


def test_collapse():
    assert collapse([]) == []
    assert collapse([A, A, A]) == [A]
    assert collapse([A, A, B, B, A]) == [A, B, A]
    # sil is dropped after collapsing, so the two A stay two phones
    assert collapse([S, A, A, S, S, A, B, S], drop=[S]) == [A, A, B]
    assert collapse(np.array([B, B, C])) == [B, C]


def test_edit_distance_hand_cases():
    assert edit_distance([], []) == 0
    assert edit_distance([A, B, C], []) == 3
    assert edit_distance([], [A, B]) == 2
    assert edit_distance([A, B, C], [A, B, C]) == 0
    assert edit_distance([A, D, C], [A, B, C]) == 1  # substitution
    assert edit_distance([A, C], [A, B, C]) == 1  # deletion
    assert edit_distance([A, B, D, C], [A, B, C]) == 1  # insertion
    # kitten -> sitting: 3
    k, i, t, e, n, s, g = range(7)
    assert edit_distance([s, i, t, t, i, n, g], [k, i, t, t, e, n]) == 3


def test_align_counts_breakdown():
    assert align_counts([A, D, C], [A, B, C]) == (1, 0, 0)
    assert align_counts([A, C], [A, B, C]) == (0, 1, 0)
    assert align_counts([A, B, D, C], [A, B, C]) == (0, 0, 1)
    assert align_counts([], [A, B]) == (0, 2, 0)
    assert align_counts([D, D], [A]) == (1, 0, 1)


def test_per_identical_is_zero():
    ref = np.array([S, S, A, A, B, B, B, S])
    assert phone_error_rate([ref], [ref]) == 0.0


def test_per_frame_errors_that_do_not_change_phones_are_free():
    ref = np.array([S, A, A, A, B, B, S])
    hyp = np.array([S, S, A, B, B, B, S])  # boundaries moved, same phone string
    assert phone_error_rate([hyp], [ref]) == 0.0


def test_per_deletion_insertion_substitution():
    # ref phones: sil a b c sil (5); hyp: sil a c sil -> 1 deletion
    ref = [S, A, A, B, B, C, C, S]
    hyp = [S, A, A, A, C, C, C, S]
    assert phone_error_rate([hyp], [ref]) == pytest.approx(1 / 5)
    # a one-frame blip is an insertion
    hyp2 = [S, A, D, A, B, C, C, S]
    r = score([hyp2], [ref])
    assert (r.errors, r.ref_phones) == (2, 5)  # a d a b c vs a b c: insert d, insert a
    assert (r.substitutions, r.deletions, r.insertions) == (0, 0, 2)


def test_per_is_pooled_over_utterances():
    refs = [[A, A, B, B], [A, B, C, D]]  # 2 + 4 reference phones
    hyps = [[A, A, A, A], [A, B, C, D]]  # 1 deletion in the first
    assert phone_error_rate(hyps, refs) == pytest.approx(1 / 6)  # not mean(1/2, 0)


def test_drop_sil():
    ref = [S, S, A, A, S, A, B, S]  # collapsed: sil a sil a b sil -> without sil: a a b
    hyp = [S, A, A, A, A, B, B, S]  # collapsed: sil a b sil -> a b
    r_keep = score([hyp], [ref])
    assert (r_keep.errors, r_keep.ref_phones) == (2, 6)  # deletions of sil and a
    r_drop = score([hyp], [ref], drop_sil=True)
    assert (r_drop.errors, r_drop.ref_phones) == (1, 3)
    assert phone_error_rate([hyp], [ref], drop_sil=True) == pytest.approx(1 / 3)


def test_scores_are_argmaxed():
    ref = np.array([A, A, B, B])
    logits = np.full((4, 39), -1.0)
    logits[[0, 1], A] = 5.0
    logits[[2, 3], C] = 5.0
    r = score([logits], [ref])
    assert (r.errors, r.ref_phones, r.substitutions) == (1, 2, 1)
    with pytest.raises(ValueError):
        score([np.zeros((2, 2, 2))], [ref])
    with pytest.raises(ValueError):
        score([ref, ref], [ref])  # lengths differ


def test_empty_reference_gives_nan():
    assert np.isnan(phone_error_rate([[S]], [[S]], drop_sil=True))


seqs = st.lists(st.integers(0, 4), max_size=12)


@settings(max_examples=200, deadline=None)
@given(seqs, seqs)
def test_edit_distance_properties(a, b):
    d = edit_distance(a, b)
    assert d == edit_distance(b, a)
    assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))
    assert (d == 0) == (a == b)
    assert sum(align_counts(a, b)) == d


def test_frame_error_rate_and_split():
    r = score([[A, A, B, B, B, C], [A, A]], [[A, A, C, C, C, C], [A, B]])
    assert (r.frame_errors, r.frames) == (3 + 1, 8) and r.fer == pytest.approx(0.5)
    assert (r.substitutions, r.deletions, r.insertions, r.errors, r.ref_phones) == (0, 1, 1, 2, 4)
    d = r.as_dict()
    assert d["per"] == pytest.approx(50.0) and d["fer"] == pytest.approx(50.0) and d["ins_pct"] == pytest.approx(25.0)
    with pytest.raises(ValueError, match="utterance 0: 2 hypothesis frames for 3 reference frames"):
        score([[A, A]], [[A, A, B]])


def test_utterance_scores_sum_to_the_totals():
    rng = np.random.default_rng(0)
    refs = [np.repeat(rng.integers(0, 5, 8), rng.integers(1, 6, 8)) for _ in range(10)]
    hyps = [np.where(rng.random(r.size) < 0.2, rng.integers(0, 5, r.size), r) for r in refs]
    rows = utterance_scores(hyps, refs)
    assert rows.shape == (10, 7)
    assert totals(rows) == score(hyps, refs)


def test_bootstrap_interval_of_a_change():
    rng = np.random.default_rng(1)
    refs = [np.repeat(rng.integers(0, 6, 10), rng.integers(2, 6, 10)) for _ in range(60)]
    good = [r.copy() for r in refs]
    bad = [np.where(rng.random(r.size) < 0.15, rng.integers(0, 6, r.size), r) for r in refs]
    base, worse = utterance_scores(good, refs), utterance_scores(bad, refs)
    lo, hi = bootstrap_interval(base, worse)
    change = 100 * (totals(worse).per - totals(base).per)
    assert 0 < lo < change < hi
    lo0, hi0 = bootstrap_interval(base, base)
    assert lo0 == hi0 == 0.0
    flo, fhi = bootstrap_interval(base, worse, rate="fer")
    assert flo < 100 * totals(worse).fer < fhi
    with pytest.raises(ValueError, match="same utterances"):
        bootstrap_interval(base, worse[:5])
