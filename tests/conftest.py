"""Shared fixtures: one real emulator process and one pair of real workers per test session.

The settings of this process and of every process started here come from the
environment set below, before carcelery is imported: the emulator on a free
loopback port, output in a temporary folder. Tests isolate themselves by
using a bucket of their own.

Two speeds: a test is ``integration`` if it uses a fixture that starts a
process (``PROCESS_FIXTURES``) or is marked so; every other test is a unit
test, run in this process, and fails if it starts a process or reaches the
emulator (``pytest -m "not integration"`` runs the unit tests alone).
"""

import _posixsubprocess
import contextlib
import os
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Before carcelery is imported: it reads its settings once, at import.
_PORT = free_port()
_WORKDIR = Path(tempfile.mkdtemp(prefix="carcelery-tests-"))
os.environ.update({
    "CARCELERY_TARGET": "emulator",
    "CARCELERY_EMULATOR_HOST": "127.0.0.1",
    "CARCELERY_EMULATOR_PORT": str(_PORT),
    "CARCELERY_OUTPUT_DIR": str(_WORKDIR / "output"),
    "CARCELERY_RECOGNIZER": "local",
    # The emulator records requests only when a test asks it to (test_iam.py).
    "MOTO_RECORDER_FILEPATH": str(_WORKDIR / "emulator-requests.jsonl"),
    # The emulator injects the faults a test writes there (the ``faults`` fixture).
    "CARCELERY_EMULATOR_FAULTS": str(_WORKDIR / "faults.json"),
})
for name in ("CARCELERY_BUCKET", "CARCELERY_KEY_PREFIX", "CARCELERY_CAR_THRESHOLD", "CARCELERY_QUEUE_PREFIX"):
    os.environ.pop(name, None)

from carcelery.embedded.demo import SEED_IMAGES, Stack  # noqa: E402


@pytest.fixture
def port() -> int:
    """A free loopback port, for a server a test starts."""
    return free_port()


@pytest.fixture(scope="session")
def seed_dir() -> Path:
    assert SEED_IMAGES.is_dir(), f"the seed images are expected at {SEED_IMAGES} (../shared beside the project)"
    return SEED_IMAGES


@pytest.fixture(scope="session")
def emulator():
    """The real emulator process, for tests that talk to S3, SQS or DynamoDB."""
    with Stack(_WORKDIR / "emulator") as stack:
        stack.start_emulator()
        yield stack


@pytest.fixture(scope="session")
def pipeline(emulator):
    """Both real workers (Instance A and B) on the session's emulator."""
    with Stack(_WORKDIR / "pipeline") as stack:
        stack.start_worker("worker_a", "detect")
        stack.start_worker("worker_b", "text")
        yield stack


@pytest.fixture
def bucket(emulator) -> str:
    """A new, empty bucket of this test's own."""
    from carcelery.aws import provision

    name = f"test-{uuid.uuid4().hex[:12]}"
    provision.bucket(name)
    return name


@pytest.fixture
def index_s3(monkeypatch):
    """S3 in this process (moto's ``mock_aws``), for unit tests: bucket ``outputs-bucket``; ``aws.client`` is its client."""
    import boto3
    from moto import mock_aws

    from carcelery import aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="outputs-bucket")
        monkeypatch.setattr(aws, "client", lambda service: client)
        yield client


class Faults:
    """The emulator's injected faults (``carcelery.embedded.faults``): ``set(rule, ...)``, ``hits()``."""

    path = _WORKDIR / "faults.json"

    def set(self, *rules: dict) -> None:
        from carcelery.embedded import faults

        faults.write_rules(self.path, rules)

    def hits(self) -> list[int]:
        from carcelery.embedded import faults

        return faults.hits(self.path)


@pytest.fixture
def faults(emulator):
    """AWS faults the session's emulator injects, none once the test ends."""
    injected = Faults()
    yield injected
    injected.set()


# Fixtures that start a process: a test using one, even through another fixture, is an integration test.
PROCESS_FIXTURES = {"emulator", "pipeline"}


def pytest_collection_modifyitems(items):
    for item in items:
        if PROCESS_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.integration)


class ProcessInUnitTest(AssertionError):
    """A unit test started a process or reached the emulator: it is an integration test."""


@contextlib.contextmanager
def _in_process_only(item):
    """While a unit test runs or sets up its fixtures, starting a process or connecting to the emulator fails it."""
    if item.get_closest_marker("integration"):
        yield
        return

    def refuse(what):
        def refused(*args, **kwargs):
            raise ProcessInUnitTest(f"{item.nodeid} {what}: mark it @pytest.mark.integration")
        return refused

    connect = socket.socket.connect

    def guarded_connect(sock, address):
        if address[:2] == ("127.0.0.1", _PORT):
            refuse("connects to the emulator")()
        return connect(sock, address)

    with pytest.MonkeyPatch.context() as patch:
        # Every way Python starts a process: subprocess (and asyncio), multiprocessing, os.
        patch.setattr(subprocess.Popen, "_execute_child", refuse("starts a process"))
        patch.setattr(_posixsubprocess, "fork_exec", refuse("starts a process"))
        for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
            patch.setattr(os, name, refuse("starts a process"))
        patch.setattr(socket.socket, "connect", guarded_connect)
        yield


# Around setup too: a module or session fixture is set up by the first test that uses it.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    with _in_process_only(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with _in_process_only(item):
        return (yield)
