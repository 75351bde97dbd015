"""A run always ends: the deadline of a run whose parts stopped coming.

The dispatcher sends ``watch_run`` (Instance B) with each run. It looks at the
chord's count every ``look_every()`` seconds: a task sent again, delayed by
SQS itself (``later()``), so that no worker holds it while it waits and no
monitor shows it received for a minute, as a countdown's would. While parts
are done, the run goes on; once no part has been done for
CARCELERY_RUN_DEADLINE seconds, the run ends with what it has: each image
still pending (its task dead-lettered, or lost) is stored as failed with why,
and the chord's terminator is sent by its own task id, so that
``dispatch --wait`` sees the run end.

A result that comes after that (a message sent back from the dead-letter
queue, a worker that was only slow) lands in the records table, replacing the
failure. If it was the last part missing, the chord completes after all and
its terminator writes the run's files again, now with it; otherwise the next
run of the bucket (or prefix) has it in its files.
"""

from __future__ import annotations

import math
import time

from . import dead_letters, records
from ..app import app
from ..settings import settings


def look_every() -> float:
    """Seconds between two looks at a run: a tenth of the deadline, within 1 s to 60 s."""
    return max(1.0, min(60.0, settings.run_deadline / 10))


def later() -> dict:
    """``apply_async``'s options that send the next look ``look_every()`` seconds from now.

    kombu's SQS transport turns ``delay_seconds`` into the message's
    DelaySeconds (at most 900 s; a look comes every 60 s at most): SQS keeps
    it, counted as delayed, until then. A countdown's message is received at
    once and held by a worker until its ETA, shown as received meanwhile.
    """
    return {"delay_seconds": math.ceil(look_every())}


def progress(group_id: str, parts_seen: int, since: float | None) -> tuple[bool, int, float]:
    """(complete, parts done, when the count last moved) of chord ``group_id``, seen ``parts_seen`` at ``since``."""
    parts, remaining = app.backend.chord_counts(group_id)
    now = time.time()
    if since is None or parts != parts_seen:
        since = now
    return remaining == 0, parts, since


def overdue(since: float) -> bool:
    return time.time() - since >= settings.run_deadline


def fail_missing(run: dict) -> int:
    """Store the run's images still pending as failed, with why; how many they were."""
    dead = {(message["bucket"], message["image"]) for message in dead_letters.messages() if message["run"] == run["id"]}
    failed = 0
    for record in records.pending(run["bucket"], run["id"], run.get("prefix", "")):
        if (record["bucket"], record["key"]) in dead:
            # SQS moves a message there once it was received CARCELERY_MAX_RECEIVES times.
            reason = (f"in the dead-letter queue after {settings.max_receives} receives; "
                      f"python -m carcelery.commands.dlq lists it, python -m carcelery.commands.dlq redrive sends it back")
        else:
            reason = (f"no result: no part of run {run['id']} was done for {settings.run_deadline:.0f} s "
                      f"(CARCELERY_RUN_DEADLINE); a late result replaces this record")
        failed += records.fail(record, run["id"], reason)
    return failed
