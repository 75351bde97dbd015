"""pytest plugin: Celery's own tests of its DynamoDB backend, run on carcelery's.

With ``-p upstream_dynamodb`` (tests/ on the path), Celery's tests find
OncePerPartDynamoDBBackend where they look for ``DynamoDBBackend``; those of
what it does differently on purpose (DIFFERENT) are expected to fail, strictly:
one that passes fails. ``--outcomes FILE`` writes each test's outcome there
(JSON), for tests/test_upstream_celery.py.
"""

import json

import pytest
from celery.backends import dynamodb

from carcelery.backend import OncePerPartDynamoDBBackend

# Celery's tests of what carcelery's backend does differently on purpose (carcelery/backend.py): test id, why.
DIFFERENT = {
    "test_chord_publish_retry_does_not_increment_dynamodb_again":
        "parts are counted once each against the size set_chord_size stores (which the test skips), not with incr; "
        "and the deployment's table is provision's, not created by the backend",
    "test_DynamoDBBackend::test_apply_chord":
        "neither the group nor a chord_count item is stored: the last part reads neither back",
}


def test_id(nodeid: str) -> str:
    """A test's id in its module: ``class::test[parameters]``, or ``test`` outside a class."""
    return nodeid.split("::", 1)[1]


def pytest_addoption(parser):
    parser.addoption("--outcomes", help="write each test's outcome (passed, failed, xfailed, skipped) to this JSON file")


def pytest_configure(config):
    dynamodb.DynamoDBBackend = OncePerPartDynamoDBBackend
    if config.getoption("outcomes"):
        config.pluginmanager.register(Outcomes(config.getoption("outcomes")))


def pytest_collection_modifyitems(config, items):
    for item in items:
        reason = DIFFERENT.get(test_id(item.nodeid))
        if reason:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))


class Outcomes:
    """Each test's outcome, by test id, written to ``path`` (JSON) when the session ends."""

    def __init__(self, path: str):
        self.path, self.outcomes = path, {}

    def pytest_runtest_logreport(self, report):
        test = test_id(report.nodeid)
        if self.outcomes.get(test) == "failed":
            return
        if report.failed:  # in setup, the test or teardown; a strict XPASS too
            self.outcomes[test] = "failed"
        elif report.when == "call" or report.skipped:
            self.outcomes[test] = "xfailed" if hasattr(report, "wasxfail") else report.outcome

    def pytest_sessionfinish(self, session):
        with open(self.path, "w") as out:
            json.dump(self.outcomes, out, indent=1)
