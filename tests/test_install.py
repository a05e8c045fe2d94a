"""The install path: the torch this project runs on is one that pyproject.toml admits."""

from __future__ import annotations

import tomllib

import torch
from packaging.requirements import Requirement

from conftest import ROOT


def test_declared_torch_range_admits_the_installed_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    torch_requirement = next(Requirement(r) for r in project["dependencies"] if Requirement(r).name == "torch")
    assert str(torch_requirement.specifier) != "", "torch must be declared with a range"
    assert torch_requirement.specifier.contains(torch.__version__)  # e.g. 2.13.0+cpu: a local build is kept
    assert "==" not in str(torch_requirement.specifier)  # a range, not one release pinned
