"""Flower as started by ``celery -A carcelery flower`` and by ``python -m carcelery.commands.flower``, real processes.

Both read the project's flowerconfig.py: Flower asks for the whole password
(one holding a comma), serves its Broker page over SQS, listens on 127.0.0.1
only, and does not start without a password.
"""

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import free_port

from carcelery import aws
from carcelery.embedded.demo import ROOT

USER, PASSWORD = "me", "Tr0ub4dor,3"
# Flower's split of "me:Tr0ub4dor,3" at its comma made these two credentials.
PIECES = [("me", "Tr0ub4dor"), ("3", None)]


def answer(port: int, path: str, credential: tuple[str, str | None] | None) -> tuple[int, bytes]:
    """The HTTP status and body of Flower's ``path``, asked with ``credential`` (user, password; None: the user alone)."""
    headers = {}
    if credential is not None:
        user, password = credential
        token = user if password is None else f"{user}:{password}"
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def status(port: int, path: str, credential: tuple[str, str | None] | None) -> int:
    return answer(port, path, credential)[0]


@contextlib.contextmanager
def flower(args: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float = 120):
    """Flower (``python args...`` in ``cwd``) once it serves; ended by its PID (its session) after."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while "Visit me at" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


COMMANDS = {
    # Celery's own command, from the checkout: Flower's convention, ./flowerconfig.py.
    "celery flower, in the checkout": (["-m", "celery", "-A", "carcelery", "flower"], True),
    # From another folder: the app points Flower at the project's file (FLOWER_CONF).
    "celery flower, elsewhere": (["-m", "celery", "-A", "carcelery", "flower"], False),
    "the launcher, elsewhere": (["-m", "carcelery.commands.flower"], False),
}


@pytest.mark.integration
@pytest.mark.parametrize("name", COMMANDS)
def test_flower_wants_the_whole_password_and_serves_its_broker_page_on_loopback(emulator, tmp_path, name):
    args, in_checkout = COMMANDS[name]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_CONF"}
    # PYTHONPATH: elsewhere, this checkout's carcelery, not the one installed.
    env.update({"CARCELERY_QUEUE_PREFIX": "fp-", "CARCELERY_FLOWER_PORT": str(port), "CARCELERY_FLOWER_USER": USER,
                "CARCELERY_FLOWER_PASSWORD": PASSWORD, "PYTHONPATH": str(ROOT)})
    aws.client("sqs").create_queue(QueueName="fp-text")
    with flower(args, ROOT if in_checkout else tmp_path, env, tmp_path / "flower.log") as proc:
        assert status(port, "/api/workers", (USER, PASSWORD)) == 200
        # The Broker page and the queues' lengths over SQS (stock Flower: "'sqs' broker is not supported").
        assert status(port, "/broker", (USER, PASSWORD)) == 200
        code, body = answer(port, "/api/queues/length", (USER, PASSWORD))
        assert code == 200 and {"name": "text", "sqs_queue": "fp-text", "approximate": True}.items() <= \
            next(q for q in json.loads(body)["active_queues"] if q["name"] == "text").items()
        for credential in [*PIECES, None, (USER, "")]:
            assert status(port, "/api/workers", credential) == 401, credential
        listening = {c.laddr.ip for c in psutil.Process(proc.pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}


@pytest.mark.integration
@pytest.mark.parametrize("password", [None, ""])
def test_flower_without_a_password_does_not_start_and_says_which_variable(tmp_path, password):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARCELERY_FLOWER_", "FLOWER_CONF"))}
    env.update({"CARCELERY_FLOWER_USER": USER, "CARCELERY_FLOWER_PORT": str(free_port())})
    if password is not None:
        env["CARCELERY_FLOWER_PASSWORD"] = password
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "carcelery", "flower"], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("error: CARCELERY_FLOWER_PASSWORD is not set or empty"), \
        done.stderr
    assert "Traceback" not in done.stderr and "Visit me at" not in done.stdout + done.stderr
