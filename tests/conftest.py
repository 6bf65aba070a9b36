"""Shared switches and fixtures of the test suite.

``FULL`` is the one switch between the reduced runs of ``make test`` and the
full ones of ``make test-all`` (``DELTARNN_FULL=1``): long co-simulations,
full synthesis, every activation table entry. Test modules read it as
``from tests.conftest import FULL``; a test marked ``@pytest.mark.full`` runs
only in the full form.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

#: True under ``make test-all`` (``DELTARNN_FULL=1``).
FULL = bool(os.environ.get("DELTARNN_FULL"))


def pytest_configure(config):
    config.addinivalue_line("markers", "full: runs only in the full form (make test-all, DELTARNN_FULL=1)")


def pytest_collection_modifyitems(config, items):
    if FULL:
        return
    skip = pytest.mark.skip(reason="runs in the full form only (make test-all, DELTARNN_FULL=1)")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    """A seeded NumPy generator, the same in every test that asks for it."""
    return np.random.default_rng(1234)


@pytest.fixture
def small_model():
    """A 2-layer LSTM with a head, random weights (5 inputs, 6 units, 3 classes)."""
    from tests.helpers import random_model

    return random_model("lstm", 5, 6, 2, False, classes=3)
