"""Flower's own tests of its broker module, and of the Broker page and /api/queues/length, pass with
carcelery's broker factory in Flower's place: the installed Flower's source package (tests/upstream.py),
its tests in a pytest of their own (the plugin tests/upstream_flower.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from upstream import source

TESTS = Path(__file__).parent
# Flower's tests of what carcelery's factory takes the place of, and of its two callers.
SUITES = ("tests/unit/utils/test_broker.py", "tests/unit/views/test_broker.py", "tests/unit/api/test_tasks.py")


@pytest.mark.integration  # a pytest (or python) process of its own
def test_flowers_broker_tests_pass_with_carcelerys_factory(tmp_path):
    outcomes = tmp_path / "outcomes.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    # -P: Flower's tests, with the installed Flower (the plugin imports it before the source tree is on the path).
    run = subprocess.run([sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "upstream_flower",
                          "--outcomes", str(outcomes), *SUITES],
                         cwd=source("flower"), env=env, capture_output=True, text=True, timeout=300)
    assert outcomes.is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    ran = json.loads(outcomes.read_text())
    failing = sorted(test for test, outcome in ran.items() if outcome != "passed")
    assert len(ran) > 50 and not failing, f"Flower's tests failing with carcelery's broker factory: {failing}\n" \
                                          f"{run.stdout[-4000:]}"
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
