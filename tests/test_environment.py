"""environment.yml (conda) installs what pyproject.toml declares: same packages, same ranges."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
# PyPI name -> conda-forge name where they differ
CONDA_NAME = {"torch": "pytorch", "soundfile": "pysoundfile"}
CONDA_EXTRAS = ("lab", "dev")  # installed from conda-forge; "offline" goes through pip (PyPI only)


def _split(req: str):
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    name, spec = m.group(1).lower().replace("_", "-"), m.group(2)
    return name, ",".join(sorted(part.strip() for part in spec.replace(" ", "").split(",") if part))


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def environment():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def conda_requirements(env) -> dict:
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name, spec = _split(dep)
            out[name] = spec
    return out


def expected_conda_requirements() -> dict:
    project = pyproject()
    reqs = list(project["dependencies"])
    for extra in CONDA_EXTRAS:
        reqs += project["optional-dependencies"][extra]
    out = {}
    for req in reqs:
        name, spec = _split(req)
        name = CONDA_NAME.get(name, name)
        assert out.get(name, spec) == spec, f"{name} has two different ranges in pyproject.toml"
        out[name] = spec
    return out


def test_same_packages_and_ranges():
    conda = conda_requirements(environment())
    conda.pop("pip")
    python = conda.pop("python")
    expected = expected_conda_requirements()
    missing = sorted(set(expected) - set(conda))
    extra = sorted(set(conda) - set(expected))
    assert not missing, f"environment.yml lacks {missing} (in pyproject.toml)"
    assert not extra, f"environment.yml has {extra}, which pyproject.toml does not declare"
    differ = {n: (conda[n], expected[n]) for n in expected if conda[n] != expected[n]}
    assert not differ, f"version ranges differ (environment.yml, pyproject.toml): {differ}"
    assert python == pyproject()["requires-python"].replace(" ", "")


def test_pip_section_installs_the_package_with_offline_extra():
    env = environment()
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert pip_sections == [["-e .[offline]"]]
    assert "offline" in pyproject()["optional-dependencies"]
    assert env["channels"] == ["conda-forge"]


def test_colab_install_does_not_pull_jupyterlab():
    """Colab's set-up cell installs `.[offline]`: neither base nor offline may bring JupyterLab,
    papermill, or an ipywidgets 8 requirement (Colab runs ipywidgets 7)."""
    project = pyproject()
    names = {_split(r)[0]: _split(r)[1] for r in project["dependencies"]
             + project["optional-dependencies"]["offline"]}
    assert "jupyterlab" not in names and "papermill" not in names
    assert "<9" in names["ipywidgets"] and ">=7" in names["ipywidgets"]


@pytest.mark.parametrize("name,colab_version", [("torch", "2.11"), ("transformers", "5.15"),
                                                ("ipywidgets", "7.7.1"), ("numpy", "2.1"),
                                                ("librosa", "0.11"), ("matplotlib", "3.10"),
                                                ("datasets", "4.0")])
def test_ranges_accept_colab_stack(name, colab_version):
    from packaging.specifiers import SpecifierSet

    spec = dict(_split(r) for r in pyproject()["dependencies"])[name]
    assert colab_version in SpecifierSet(spec), f"{name} {spec} rejects Colab's {colab_version}"
