"""The first logged losses of each trainer, on a fixed seed, equal those pinned in tests/data/pinned_losses.json
(recorded by the commit it names; see tests/pinned_losses.py)."""

import json

import pytest

from pinned_losses import PIN_FILE, RUNS, compute


def pinned() -> dict:
    with open(PIN_FILE) as fh:
        return json.load(fh)["losses"]


def test_every_trainer_has_a_pin():
    assert set(pinned()) == set(RUNS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_first_logged_losses_equal_the_pinned_ones(name):
    expected = pinned()[name]
    got = compute(name)
    assert len(got) == len(expected) == 3
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-6), (name, got, expected)
