"""kombu's own SQS tests, run on carcelery's transport: all pass but the deliberate differences.

The plugin tests/upstream_kombu_sqs.py puts carcelery's Channel and Transport
in kombu's place and lists the deliberate differences; kombu's tests run in a
pytest of their own, in the unpacked source package of the installed kombu.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from upstream import source

TESTS = Path(__file__).parent


@pytest.mark.integration  # a pytest (or python) process of its own
def test_kombus_sqs_tests_pass_on_carcelerys_transport(tmp_path):
    report = tmp_path / "report.json"
    env = {**os.environ, "CARCELERY_UPSTREAM_REPORT": str(report),
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    # -P: kombu's tests, not the source tree's kombu package; the installed one is under test.
    run = subprocess.run([sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "upstream_kombu_sqs", "t/unit/transport/SQS"],
                         cwd=source("kombu"), env=env, capture_output=True, text=True, timeout=300)
    assert report.exists(), f"kombu's tests did not run:\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
    result = json.loads(report.read_text())
    failed = sorted(test for test, outcome in result["outcomes"].items() if outcome == "failed")
    assert not failed, f"kombu's tests that fail on carcelery's transport: {failed}\n{run.stdout[-3000:]}"
    # A test skipped tests nothing: kombu's tests of the SQS transport all run here.
    skipped = sorted(test for test, outcome in result["outcomes"].items() if outcome == "skipped")
    passed = [test for test, outcome in result["outcomes"].items() if outcome == "passed"]
    assert passed and not skipped, f"kombu's tests skipped: {skipped}\n{run.stdout[-3000:]}"
    assert not result["missing"], f"listed as deliberate differences, gone from kombu's tests: {result['missing']}"
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
