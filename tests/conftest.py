"""Shared fixtures: one real emulator process and one pair of real workers per test session.

The settings of this process and of every process started here come from the
environment set below, before carcelery is imported: the emulator on a free
loopback port, output in a temporary folder. Tests isolate themselves by
using a bucket of their own.
"""

import os
import socket
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
