"""Celery's own tests of its DynamoDB backend pass on carcelery's, but for the differences
tests/upstream_dynamodb.py lists: t/unit/backends/test_dynamodb.py of the installed Celery's
source package (tests/upstream.py), with its own conftest, in a pytest of its own."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from upstream import source
from upstream_dynamodb import DIFFERENT

TESTS = Path(__file__).parent


@pytest.mark.integration  # a pytest (or python) process of its own
def test_celerys_dynamodb_backend_tests_pass_on_ours(tmp_path):
    celery = source("celery")
    outcomes = tmp_path / "outcomes.json"
    # The installed Celery and carcelery on the path, not the source package's copy of Celery.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]),
           # Celery's tests mean AWS, mocked by moto in their process, never an emulator
           # on this machine; and no real credentials.
           "CARCELERY_TARGET": "aws", "CARCELERY_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "upstream_dynamodb",
                          "--import-mode=importlib", "--outcomes", str(outcomes),
                          str(celery / "t" / "unit" / "backends" / "test_dynamodb.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert outcomes.is_file(), run.stdout + run.stderr
    ran = json.loads(outcomes.read_text())
    failing = sorted(test for test, outcome in ran.items() if outcome != ("xfailed" if test in DIFFERENT else "passed"))
    gone = sorted(set(DIFFERENT) - set(ran))
    assert ran and not failing and not gone, (
        f"Celery {celery.name}'s tests failing on our backend: {failing}; "
        f"listed in tests/upstream_dynamodb.py but no longer in Celery's tests: {gone}\n{run.stdout[-4000:]}")
