"""The browser tests' own rules, without a browser: a missing browser stack skips them with the
command that installs it, except in CI (``CI=true``), where it fails them."""
from __future__ import annotations

import pytest

from . import harness


@pytest.fixture
def no_chromium(monkeypatch):
    monkeypatch.setattr(harness, "chromium_path", lambda: None)


def test_missing_chromium_skips_with_the_command(no_chromium, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as info:
        harness.require_browser()
    assert "apt-get install -y chromium" in str(info.value)


@pytest.mark.parametrize("ci", ["true", "1"])
def test_missing_chromium_fails_in_ci(no_chromium, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception) as info:
        harness.require_browser()
    assert "apt-get install -y chromium" in str(info.value) and "CI=true" in str(info.value)


def test_missing_front_end_fails_in_ci(monkeypatch):
    monkeypatch.setattr(harness, "frontend_of_env", lambda: (None, "ipywidgets is not installed"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        harness.require_frontend()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        harness.require_frontend()
