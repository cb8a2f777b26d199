#!/usr/bin/env python3
"""Install torch into the running interpreter's environment without pulling CUDA by accident.

Used by ``make`` before the course package is installed (its ``torch>=...`` range would
otherwise let pip pick the default wheel, which on Linux x86_64 drags in several GB of CUDA).

* torch already importable -> nothing to do (prints its version).
* ``TORCH_INDEX_URL`` set -> ``pip install $TORCH_SPEC --index-url $TORCH_INDEX_URL``
  (e.g. a CUDA build for the GPU runner: https://download.pytorch.org/whl/cu128).
* an NVIDIA GPU is visible (``nvidia-smi -L`` works) -> ``pip install $TORCH_SPEC`` (the default
  wheel, CUDA included: what a GPU machine wants).
* no GPU -> pip resolves ``$TORCH_SPEC`` first (``--dry-run --report``); if the resolution would
  install any ``nvidia-*`` package, torch comes from the CPU index
  https://download.pytorch.org/whl/cpu instead; otherwise (e.g. a local ``+cpu`` wheel in a
  find-links folder, as on the course's build machines) the plain install is used.

``TORCH_SPEC`` defaults to ``torch==2.13.0``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

DEFAULT_SPEC = "torch==2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def torch_version():
    res = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                         capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else None


def has_nvidia_gpu() -> bool:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    res = subprocess.run([exe, "-L"], capture_output=True, text=True)
    return res.returncode == 0 and "GPU" in res.stdout


def pip(*args) -> None:
    cmd = [sys.executable, "-m", "pip", "install", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def would_pull_cuda(spec: str) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        res = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
                              "--report", report, spec], capture_output=True, text=True)
        if res.returncode != 0 or not os.path.exists(report):
            print("pip could not resolve", spec, "-- trying the CPU index.\n", res.stderr[-2000:])
            return True
        with open(report) as f:
            names = [item["metadata"]["name"].lower() for item in json.load(f).get("install", [])]
    return any(name.startswith("nvidia-") for name in names)


def main() -> int:
    version = torch_version()
    if version is not None:
        print(f"torch {version} already installed")
        return 0
    spec = os.environ.get("TORCH_SPEC", "").strip() or DEFAULT_SPEC
    index = os.environ.get("TORCH_INDEX_URL", "").strip()
    if index:
        pip(spec, "--index-url", index)
    elif has_nvidia_gpu():
        print("NVIDIA GPU found: installing the default (CUDA) build of", spec)
        pip(spec)
    elif would_pull_cuda(spec):
        print(f"No GPU, and the default {spec} would pull CUDA packages: using the CPU build")
        pip(spec, "--index-url", CPU_INDEX, "--extra-index-url", "https://pypi.org/simple")
    else:
        pip(spec)
    version = torch_version()
    if version is None:
        print("torch still cannot be imported after the install", file=sys.stderr)
        return 1
    print(f"torch {version} installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
