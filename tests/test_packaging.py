"""The package's metadata installs without deprecation warnings."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_license_is_an_spdx_expression_with_a_setuptools_that_reads_it():
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["license"] == "Apache-2.0"  # a TOML table here is deprecated by setuptools
    requirement = next(r for r in data["build-system"]["requires"] if r.startswith("setuptools"))
    minimum = re.search(r">=\s*([\d.]+)", requirement)
    assert minimum and tuple(int(p) for p in minimum.group(1).split(".")) >= (77,), requirement  # PEP 639 support
