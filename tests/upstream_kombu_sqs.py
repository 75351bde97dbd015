"""pytest plugin: kombu's own SQS tests, run on carcelery's transport (tests/test_upstream_kombu.py).

Loaded with ``-p`` before kombu's tests are collected, it puts carcelery's
Channel and Transport where kombu's tests take kombu's (``SQS.Channel``,
``SQS.Transport``, ``kombu.transport.SQS.Channel.<method>`` patches). A test
that fails on purpose, for a deliberate difference of carcelery's transport,
is listed in DIFFERENT with the reason, and expected to fail (strictly: one
that passes again must leave the list). The outcomes go, as JSON, to the
file named by the environment variable CARCELERY_UPSTREAM_REPORT.
"""

from __future__ import annotations

import json
import os

import pytest
from kombu import asynchronous
from kombu.transport import SQS

from carcelery import transport

SQS.Channel, SQS.Transport = transport.Channel, transport.Transport

# kombu's test id: why it fails on carcelery's transport, on purpose.
DIFFERENT = {
    "t/unit/transport/SQS/test_SQS.py::test_Channel::test_basic_reject_with_requeue_does_not_delete_message":
        "a requeued message is made visible again (its receive count grows), not restored as a copy",
}

_outcomes: dict[str, str] = {}  # test id: passed, failed, xfailed or skipped
_missing: list[str] = []  # listed in DIFFERENT, not among kombu's tests


@pytest.fixture(autouse=True)
def _no_event_loop_left():
    """kombu's ``hub`` fixture leaves its event loop set; a channel made later would take it."""
    yield
    asynchronous.set_event_loop(None)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.nodeid in DIFFERENT:
            item.add_marker(pytest.mark.xfail(reason=DIFFERENT[item.nodeid], strict=True))
    _missing.extend(sorted(set(DIFFERENT) - {item.nodeid for item in items}))


def pytest_runtest_logreport(report):
    if report.failed:  # in setup, call or teardown; a listed test that passed fails too (strict)
        outcome = "failed"
    elif hasattr(report, "wasxfail"):
        outcome = "xfailed"
    elif report.skipped:
        outcome = "skipped"
    elif report.when == "call":
        outcome = "passed"
    else:
        return
    if _outcomes.get(report.nodeid) != "failed":
        _outcomes[report.nodeid] = outcome


def pytest_sessionfinish(session):
    path = os.environ.get("CARCELERY_UPSTREAM_REPORT")
    if path:
        with open(path, "w") as out:
            json.dump({"outcomes": _outcomes, "missing": _missing}, out)
