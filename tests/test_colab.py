"""ctxmix_lite.colab: the set-up cell and the system-package installer (without running apt)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctxmix_lite import colab

ROOT = Path(__file__).resolve().parents[1]

DEBIAN = {"ID": "debian", "VERSION_CODENAME": "bookworm"}
UBUNTU = {"ID": "ubuntu", "ID_LIKE": "debian", "VERSION_CODENAME": "jammy",
          "UBUNTU_CODENAME": "jammy"}
MINT = {"ID": "linuxmint", "ID_LIKE": "ubuntu debian", "VERSION_CODENAME": "virginia",
        "UBUNTU_CODENAME": "jammy"}


def test_not_in_colab():
    assert colab.in_colab() is False


def test_setup_cell_compiles_and_mentions_the_essentials():
    src = colab.COLAB_SETUP_CELL
    compile(src, "<setup>", "exec")
    assert '"google.colab" in sys.modules' in src
    assert "https://github.com/ctxmix/ctxmix" in src
    assert '"[offline]"' in src and "install_system_packages()" in src
    assert "ipywidgets 8" in src  # the warning not to install it on Colab
    assert "!" not in "".join(line.split("#")[0] for line in src.splitlines())  # no shell magics


def test_setup_cell_runs_locally_from_notebooks_dir():
    """Outside Colab the cell only makes the package importable (here from a bare interpreter
    started in notebooks/ with no PYTHONPATH), and clones/installs nothing."""
    code = colab.COLAB_SETUP_CELL + "\nimport ctxmix_lite.paths\nprint(IN_COLAB, ctxmix_lite.paths.repo_root())\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    (ROOT / "notebooks").mkdir(exist_ok=True)
    # -S: no site-packages, so the editable install cannot be what makes it importable
    res = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT / "notebooks", env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", str(ROOT)]


def test_os_release_parsing(tmp_path):
    f = tmp_path / "os-release"
    f.write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
                 "VERSION_CODENAME=bookworm\n# comment\n")
    info = colab.read_os_release(f)
    assert info["ID"] == "debian" and info["VERSION_CODENAME"] == "bookworm"
    assert colab.read_os_release(tmp_path / "missing") == {}


@pytest.mark.parametrize("info,family", [(DEBIAN, "debian"), (UBUNTU, "ubuntu"), (MINT, "ubuntu"),
                                         ({"ID": "fedora"}, None), ({}, None)])
def test_distro_family(info, family):
    assert colab.distro_family(info) == family


def test_debian_sources_entry():
    path, text = colab.sources_entry(DEBIAN, existing="Types: deb\nComponents: main\n")
    assert path.name.endswith(".sources")
    assert "Suites: bookworm\n" in text and "Components: contrib non-free\n" in text
    assert "debian-archive-keyring.gpg" in text
    # already enabled (the lead's deb822 file, or an old-style line) -> nothing to add
    assert colab.sources_entry(DEBIAN, existing="Components: contrib non-free\n") is None
    assert colab.sources_entry(
        DEBIAN, existing="deb http://deb.debian.org/debian bookworm main contrib non-free\n") is None
    # non-free-firmware alone does not provide the MBROLA voices
    assert colab.sources_entry(DEBIAN, existing="Components: main non-free-firmware\n") is not None


def test_ubuntu_sources_entry():
    path, text = colab.sources_entry(UBUNTU, existing="deb http://archive.ubuntu.com/ubuntu jammy main\n")
    assert "Components: multiverse" in text and "jammy jammy-updates" in text
    assert colab.sources_entry(
        UBUNTU, existing="deb http://archive.ubuntu.com/ubuntu jammy main universe multiverse\n") is None


def test_install_commands_name_every_package(monkeypatch):
    monkeypatch.setattr(colab, "_existing_sources_text", lambda: "Components: main\n")
    cmds = colab.install_commands(DEBIAN, sudo=True)
    assert cmds[0].startswith("sudo tee /etc/apt/sources.list.d/")
    assert cmds[1] == "sudo apt-get update -qq"
    for pkg in ["espeak-ng", "mbrola"] + [f"mbrola-fr{i}" for i in range(1, 8)]:
        assert f" {pkg}" in cmds[2]


def test_system_packages_ok_matches_missing_list():
    assert colab.system_packages_ok() == (colab.missing_system_packages() == [])


def test_missing_packages_detected(monkeypatch, tmp_path):
    monkeypatch.setattr(colab, "MBROLA_DIR", tmp_path)  # no voices there
    missing = colab.missing_system_packages()
    assert [f"mbrola-fr{i}" for i in range(1, 8)] == [m for m in missing if m.startswith("mbrola-")]
    assert not colab.system_packages_ok()


def test_install_not_root_prints_commands(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(colab, "MBROLA_DIR", tmp_path)
    monkeypatch.setattr(colab, "read_os_release", lambda path="/etc/os-release": DEBIAN)
    monkeypatch.setattr(colab.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(colab.subprocess, "run", _forbidden)
    assert colab.install_system_packages() == "printed"
    out = capsys.readouterr().out
    assert "sudo apt-get update" in out and "mbrola-fr7" in out


def test_install_dry_run_runs_nothing(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(colab, "MBROLA_DIR", tmp_path)
    monkeypatch.setattr(colab, "read_os_release", lambda path="/etc/os-release": UBUNTU)
    monkeypatch.setattr(colab.subprocess, "run", _forbidden)
    assert colab.install_system_packages(dry_run=True) == "dry-run"
    assert "apt-get install" in capsys.readouterr().out


def test_install_unsupported_system(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(colab, "MBROLA_DIR", tmp_path)
    monkeypatch.setattr(colab, "read_os_release", lambda path="/etc/os-release": {"ID": "fedora"})
    monkeypatch.setattr(colab.subprocess, "run", _forbidden)
    assert colab.install_system_packages() == "unsupported"
    assert "MBROLA" in capsys.readouterr().out


def test_install_as_root_calls_apt(monkeypatch, tmp_path):
    """As root: writes the sources file, then apt-get update and install (apt faked here)."""
    monkeypatch.setattr(colab, "MBROLA_DIR", tmp_path / "mbrola")
    monkeypatch.setattr(colab, "read_os_release", lambda path="/etc/os-release": DEBIAN)
    monkeypatch.setattr(colab, "_existing_sources_text", lambda: "")
    monkeypatch.setattr(colab, "DEBIAN_SOURCES_FILE", tmp_path / "apt" / "ctxmix.sources")
    monkeypatch.setattr(colab.os, "geteuid", lambda: 0)
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        if cmd[:2] == ["apt-get", "install"]:  # "install" the voices
            for i in range(1, 8):
                d = tmp_path / "mbrola" / f"fr{i}"
                d.mkdir(parents=True, exist_ok=True)
                (d / f"fr{i}").write_bytes(b"x")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(colab.subprocess, "run", fake_run)
    monkeypatch.setattr(colab.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert colab.install_system_packages(quiet=True) == "installed"
    assert (tmp_path / "apt" / "ctxmix.sources").read_text().startswith("Types: deb")
    assert calls[0][:2] == ["apt-get", "update"] and calls[1][:2] == ["apt-get", "install"]


def test_install_failure_is_reported_not_raised(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(colab, "MBROLA_DIR", tmp_path)
    monkeypatch.setattr(colab, "read_os_release", lambda path="/etc/os-release": DEBIAN)
    monkeypatch.setattr(colab, "sources_entry", lambda info, existing=None: None)
    monkeypatch.setattr(colab.os, "geteuid", lambda: 0)

    def failing(cmd, **kw):
        raise subprocess.CalledProcessError(100, cmd)

    monkeypatch.setattr(colab.subprocess, "run", failing)
    assert colab.install_system_packages() == "failed"
    assert "fall back" in capsys.readouterr().out


def test_cli_print_setup_cell():
    res = subprocess.run([sys.executable, "-m", "ctxmix_lite.colab", "--print-setup-cell"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    assert res.stdout == colab.COLAB_SETUP_CELL


def _forbidden(*a, **k):
    raise AssertionError(f"subprocess.run must not be called here: {a}")
