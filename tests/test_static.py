"""Static checks: ruff (lint) and mypy (types), as configured in pyproject.toml, find nothing.

Both run from the project's root, over what pyproject.toml names; a finding fails the test
with the tool's own report. Each is shown to find a planted bug with the project's
configuration, so that a configuration that checks nothing cannot pass."""

import subprocess
import sys
from pathlib import Path

import pytest

from carcelery.embedded.demo import ROOT

BIN = Path(sys.executable).parent
CONFIG = ROOT / "pyproject.toml"

# An undefined name (pyflakes), a mutable default (bugbear), a str returned as an int (mypy).
PLANTED = '''\
def planted(seen: list = []) -> int:
    seen.append(undefined_name)
    return "not an int"
'''


def check(*command: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([BIN / command[0], *command[1:]], capture_output=True, text=True, cwd=ROOT,
                          stdin=subprocess.DEVNULL)


@pytest.mark.integration
def test_ruff_finds_nothing():
    lint = check("ruff", "check")
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.integration
def test_mypy_finds_nothing():
    types = check("mypy")
    assert types.returncode == 0, types.stdout + types.stderr


@pytest.mark.integration
def test_the_checks_find_a_planted_bug(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text(PLANTED)
    lint = check("ruff", "check", "--no-cache", "--config", CONFIG, "--output-format", "concise", planted)
    assert lint.returncode == 1 and "F821" in lint.stdout and "B006" in lint.stdout, lint.stdout + lint.stderr
    types = check("mypy", "--config-file", CONFIG, "--no-incremental", planted)
    assert types.returncode == 1 and "[return-value]" in types.stdout, types.stdout + types.stderr
