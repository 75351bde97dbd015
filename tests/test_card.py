"""The design card's three commands, as it writes them, run a dispatch end to end on the emulator.

``celery -A carcelery worker`` (Instance B), ``celery -A carcelery worker -Q detect``
(Instance A's worker, as README's first diagram has it) and ``python -m
carcelery.dispatch``: no other option; the settings come from the environment,
as on a host.
"""

import re
import sys
import time
import uuid
from pathlib import Path

from test_pipeline import SEED_OUTPUT

from carcelery.embedded.demo import Stack
from carcelery.pipeline import images, results

CELERY = str(Path(sys.executable).with_name("celery"))  # the console script, as a user types it


def test_the_cards_commands_as_written_run_a_dispatch(emulator, bucket, seed_dir, tmp_path):
    images.upload_folder(seed_dir, bucket)
    # One machine stands for two hosts: one model process per worker, and no remote control
    # (both workers are celery@<this host>, which share a mailbox; on two hosts they do not).
    stack = Stack(tmp_path, {"CARCELERY_QUEUE_PREFIX": f"card{uuid.uuid4().hex[:8]}-", "CARCELERY_BUCKET": bucket,
                             "CARCELERY_CONCURRENCY": "1", "CARCELERY_MONITORING": "off"})
    with stack:
        # Celery's banner (its log level is WARNING: no "ready" line); SQS keeps what is sent before they poll.
        stack.start("instance_b", ["-A", "carcelery", "worker"], "[queues]", timeout=120, executable=CELERY)
        stack.start("instance_a", ["-A", "carcelery", "worker", "-Q", "detect"], "[queues]", timeout=120,
                    executable=CELERY)
        # Each consumes its own queue: B the text queue (the default), A the detect queue.
        assert ".> text" in stack.log("instance_b") and ".> detect" not in stack.log("instance_b")
        assert ".> detect" in stack.log("instance_a") and ".> text" not in stack.log("instance_a")
        done = stack.run("carcelery.dispatch")
        assert done.returncode == 0, done.stdout + done.stderr
        output = stack.output_dir / results.OUTPUT
        deadline = time.monotonic() + 300
        while not output.exists() and time.monotonic() < deadline:
            time.sleep(1)
        assert output.exists(), stack.log("instance_b")[-3000:]
        lines = output.read_text().splitlines()
        assert len(lines) == 3 and all(re.match(p, line) for line, p in zip(lines, SEED_OUTPUT, strict=True)), lines
        got = {r["image"]: r for r in results.read_records(stack.output_dir)}
        assert len(got) == 10 and not [r for r in got.values() if "error" in r]
