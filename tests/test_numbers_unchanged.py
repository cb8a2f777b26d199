"""Issue 13, "numbers do not move": every measure's matrices and the study's outputs for a handful of
offline items and the study's three smoke models equal the snapshot recorded before the package was
restructured (``scripts/numbers_snapshot.py``; ``tests/data/numbers_snapshot.json``).

Bit-identical where the platform (CPU capability, torch/transformers/numpy versions) is the one the
snapshot was written on; elsewhere the float64 sums and sampled values agree to 1e-5.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import sys

import pytest

from ctxmix_lite.paths import repo_root

SCRIPT = repo_root() / "scripts" / "numbers_snapshot.py"


def _snapshot_module():
    spec = importlib.util.spec_from_file_location("numbers_snapshot", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("numbers_snapshot", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def snap():
    return _snapshot_module()


@pytest.fixture(scope="module")
def recorded(snap):
    return json.loads(snap.SNAPSHOT.read_text())


@pytest.fixture(scope="module")
def now(snap):
    import torch

    threads = torch.get_num_threads()
    try:
        return snap.compute()
    finally:
        torch.set_num_threads(threads)


def test_every_recorded_number_is_unchanged(snap, recorded, now):
    exact = recorded["platform"] == snap.platform_id()
    bad = snap.compare(recorded["arrays"], now, exact)
    assert not bad, ("numbers moved since the snapshot (" + ("bit-identity" if exact else "1e-5") + "):\n"
                     + "\n".join(bad[:40]))
    assert len(now) == len(recorded["arrays"]) >= 100


def test_the_comparison_can_fail(snap, recorded, now):
    """A one-ulp change in one array, a changed sum and a missing array are each reported."""
    key = next(k for k, v in recorded["arrays"].items() if "sha256" in v and v["sum"])
    moved = copy.deepcopy(now)
    moved[key] = dict(moved[key], sha256="0" * 64)
    assert any(key in line for line in snap.compare(recorded["arrays"], moved, exact=True))
    moved[key] = dict(moved[key], sum=moved[key]["sum"] * (1 + 1e-3) + 1e-3)
    assert any(key in line for line in snap.compare(recorded["arrays"], moved, exact=False))
    del moved[key]
    assert any("missing" in line for line in snap.compare(recorded["arrays"], moved, exact=False))
