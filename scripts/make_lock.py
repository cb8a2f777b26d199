#!/usr/bin/env python3
"""Write the lock that ``make`` installs (``make lock``): requirements/lock-pyXY.txt.

The lock pins the exact versions *installed in this interpreter's environment* (the tested
venv), restricted to what the course needs: ``uv pip compile`` resolves pyproject.toml with the
extras ``offline,lab,dev`` (plus torch's own dependencies) under the constraint of this
environment's ``pip freeze``, so every pin is a version that was installed -- and tested -- here,
and the file keeps uv's "via" annotations. torch itself is left out (scripts/install_torch.py
installs it: the CPU wheel without a GPU, a CUDA one with ``TORCH_INDEX_URL``), and so are the
CUDA runtime packages.

Refresh (see the README, "Installing"): ``make test-latest`` (newest releases within the ranges,
tested), then ``make lock VENV=.venv-latest``, review the diff, commit. Needs ``uv`` (``make lock``
installs the pinned one into the venv).
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("offline", "lab", "dev")
SKIP = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$", re.I)


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path,
                    default=ROOT / "requirements" / "lock-py{0}{1}.txt".format(*sys.version_info))
    ap.add_argument("--uv", default=shutil.which("uv") or str(Path(sys.executable).parent / "uv"))
    args = ap.parse_args(argv)

    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
                            check=True, capture_output=True, text=True).stdout.splitlines()
    pins = [line for line in freeze if "==" in line
            and not SKIP.match(norm(line.split("==")[0])) and norm(line.split("==")[0]) != "pip"]
    torch_deps = []
    try:
        for req in md.requires("torch") or []:
            name = norm(re.split(r"[ ;<>=!~\[]", req, maxsplit=1)[0])
            if "extra ==" not in req and not SKIP.match(name):
                torch_deps.append(req)
    except md.PackageNotFoundError:
        pass
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cons, deps, excl = (Path(tmp) / n for n in ("tested.txt", "torch-deps.in", "excl.txt"))
        cons.write_text("\n".join(pins) + "\n")
        deps.write_text("\n".join(torch_deps) + "\n")
        excl.write_text("torch\n")
        cmd = [args.uv, "pip", "compile", str(ROOT / "pyproject.toml"), str(deps),
               *[a for e in EXTRAS for a in ("--extra", e)],
               "--python", sys.executable, "-c", str(cons), "--excludes", str(excl),
               "--no-emit-package", "torch", "--annotation-style", "line", "--quiet",
               "--custom-compile-command", "make lock", "-o", str(args.output)]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        text = args.output.read_text()
        text = text.replace(f"-c {cons}", "tested venv").replace(str(deps), "torch's requirements")
        text = text.replace(str(ROOT) + "/", "")
    py = "{0}.{1}".format(*sys.version_info)
    head = (f"# The exact, tested versions `make` installs (Python {py} only: resolved for this\n"
            f"# interpreter, so Python-version markers are already applied). pyproject.toml keeps\n"
            f"# the ranges (Colab, pip users). torch is installed by scripts/install_torch.py.\n")
    args.output.write_text(head + text)
    n = sum(1 for line in text.splitlines() if re.match(r"^[A-Za-z0-9]", line))
    print(f"wrote {args.output.resolve().relative_to(ROOT)}: {n} pinned packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
