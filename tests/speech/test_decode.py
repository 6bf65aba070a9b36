"""The Viterbi phone decoder: estimates, optimality against brute force, flicker removal, tuning."""

import itertools

import numpy as np
import pytest

from deltarnn.speech.datasets.scoring import score
from deltarnn.speech.decode import PhoneDecoder, log_softmax, tune_insertion_penalty


def test_estimates_from_labels():
    labels = [np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2]), np.array([1, 1, 0, 0])]
    d = PhoneDecoder.from_labels(labels, 4)
    # phone 0: 6 frames in 2 runs (mean 3) -> stay 2/3; phone 2: 6 frames in 1 run -> 5/6
    np.testing.assert_allclose(np.exp(d.log_stay[:3]), [2 / 3, 1 / 2, 5 / 6])
    big = np.exp(d.log_bigram)
    np.testing.assert_allclose(big.sum(axis=1), 1.0)
    assert np.all(np.diag(big) == 0)
    # 0->1 once, 1->2 once, 1->0 once, plus add-one smoothing over the 3 other phones
    np.testing.assert_allclose(big[1, [0, 2, 3]], [2 / 5, 2 / 5, 1 / 5])
    with pytest.raises(ValueError, match="labels must lie in 0..3"):
        PhoneDecoder.from_labels([np.array([0, 4])], 4)


def _path_score(d, emit, path):
    trans = d.transitions()
    return emit[0, path[0]] + sum(trans[a, b] + emit[t + 1, b] for t, (a, b) in enumerate(zip(path, path[1:])))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("penalty", [0.0, 2.5])
def test_viterbi_finds_the_best_path(seed, penalty):
    rng = np.random.default_rng(seed)
    d = PhoneDecoder.from_labels([rng.integers(0, 3, 40)], 3, insertion_penalty=penalty)
    emit = log_softmax(rng.normal(size=(6, 3)) * 2)
    path = d.decode(emit, log_posteriors=True)
    best = max(_path_score(d, emit, p) for p in itertools.product(range(3), repeat=6))
    assert _path_score(d, emit, list(path)) == pytest.approx(best)


def _flickering(rng, truth, classes, flicker=0.15):
    """Posteriors that favour the true phone, with single frames that favour a random other one."""
    logits = rng.normal(0, 0.3, size=(truth.size, classes))
    logits[np.arange(truth.size), truth] += 2.0
    for t in np.flatnonzero(rng.random(truth.size) < flicker):
        logits[t, (truth[t] + 1 + rng.integers(classes - 1)) % classes] += 3.0
    return logits


def test_decoding_removes_flicker_and_tuning_finds_a_penalty():
    rng = np.random.default_rng(7)
    classes = 6
    truths = [np.repeat(rng.integers(0, classes, 12), rng.integers(4, 10, 12)) for _ in range(8)]
    scores = [_flickering(rng, t, classes) for t in truths]
    d = PhoneDecoder.from_labels(truths, classes)
    raw = score(scores, truths)
    tuned = tune_insertion_penalty(d, scores, truths)
    decoded = score([tuned.decode(s) for s in scores], truths)
    assert raw.insertions > 20 and decoded.insertions < raw.insertions / 4
    assert decoded.per < raw.per / 2
    # tuning picks the grid's best penalty
    pers = {p: score([d.with_penalty(p).decode(s) for s in scores], truths).per for p in (0.0, 4.0, 15.0)}
    assert score([tuned.decode(s) for s in scores], truths).per <= min(pers.values())


def test_bad_shapes_are_refused():
    d = PhoneDecoder.from_labels([np.array([0, 1, 2])], 3)
    with pytest.raises(ValueError, match=r"expected \(T, 3\) scores"):
        d.decode(np.zeros((5, 4)))
    assert d.decode(np.zeros((0, 3))).shape == (0,)
