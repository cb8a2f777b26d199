#!/usr/bin/env python3
"""Print the requirements of one optional-dependency group of pyproject.toml, one per line.

    python ci/extra.py book        # -> jupyter-book>=1.0.4,<2 ...

For environments that must not hold the course package itself (the site's venv) or that add one
group on top of a fixed stack (the Colab-stack venv): pyproject.toml stays the one list.
"""
import re
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def extra(name: str) -> list:
    text = PYPROJECT.read_text()
    try:
        import tomllib
        groups = tomllib.loads(text)["project"]["optional-dependencies"]
        reqs = groups[name]
    except ImportError:  # Python 3.10: the group is a plain TOML list of strings
        m = re.search(rf"^{re.escape(name)}\s*=\s*\[(.*?)\]", text, re.S | re.M)
        if not m:
            raise SystemExit(f"no optional-dependencies group {name!r} in {PYPROJECT}")
        reqs = re.findall(r'"([^"]+)"', re.sub(r"#.*", "", m.group(1)))
    except KeyError:
        raise SystemExit(f"no optional-dependencies group {name!r} in {PYPROJECT}")
    return [r for r in reqs if not r.startswith("ctxmix_lite")]


if __name__ == "__main__":
    print("\n".join(extra(sys.argv[1])))
