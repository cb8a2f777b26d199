#!/usr/bin/env python3
"""Check that the running environment holds Colab's stack as pinned in ci/colab-stack.txt.

    python ci/check_colab_stack.py [ci/colab-stack.txt]

Exit 1, naming each package, when one is missing or its version is outside its pin -- e.g. when
installing the course (`pip install -e ".[offline]"`, as Colab's set-up cell does) moved one of
Colab's own packages. The torch pin is the one in the file's ``TORCH_SPEC:`` comment (a CPU stand-in
for Colab's CUDA build; see the file).
"""
from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version


def read_pins(path: Path) -> list:
    reqs = []
    for line in path.read_text().splitlines():
        m = re.match(r"#\s*TORCH_SPEC:\s*(\S+)", line.strip())
        if m:
            reqs.append(Requirement(m.group(1)))
            continue
        line = line.split("#", 1)[0].strip()
        if line:
            reqs.append(Requirement(line))
    return reqs


def problems(reqs: list) -> list:
    out = []
    for req in reqs:
        try:
            have = version(req.name)
        except PackageNotFoundError:
            out.append(f"{req.name}: not installed (pinned {req.specifier})")
            continue
        # a local build tag (torch 2.13.0+cpu) satisfies ==2.13.0
        public = Version(Version(have).public)
        if not req.specifier.contains(public, prereleases=True):
            out.append(f"{req.name}: {have} installed, Colab's pin is {req.specifier}")
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else Path(__file__).with_name("colab-stack.txt")
    reqs = read_pins(path)
    bad = problems(reqs)
    for req in reqs:
        try:
            print(f"  {req.name:<14} {version(req.name):<14} pin {req.specifier}")
        except PackageNotFoundError:
            print(f"  {req.name:<14} {'-':<14} pin {req.specifier}")
    if bad:
        print("NOT Colab's stack:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    print(f"Colab's stack as pinned in {path} ({len(reqs)} packages).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
