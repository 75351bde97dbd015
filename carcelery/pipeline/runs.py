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

A run is over only when its terminator has a result: ``watch_run`` looks until
then. The chord completed but its terminator not sent (the last part's send
failed for a moment: the backend's ``callback_not_sent``, received here): it
sends it, by its task id. A failure no retry can fix (the terminator's queue
denied) is the run's failure, ``RunFailed``, stored as the terminator's result
at once; ``dispatch --wait`` prints it. The dispatcher sends ``watch_run``
before the run's first part, so a run whose dispatcher died while sending (its
chord's size never stored) ends at its deadline too, its images not sent
failed with why.

What the dispatcher's listing passed over (``images.skip_reason``) reaches
the terminator, which does not list the bucket, through the run's item in
the ledger table (``store.note_skipped``, ``store.skipped``), written before
the run's last task is sent: its summary counts them.
"""

from __future__ import annotations

import math
import time

from botocore.exceptions import ClientError
from celery.canvas import Signature
from celery.utils.log import get_logger

from . import dead_letters, records, results
from ..app import app
from ..aws import errors
from ..backend import Counts, OncePerPartDynamoDBBackend, callback_not_sent
from ..settings import TEXT_QUEUE, settings
from .model import Run, Status

logger = get_logger(__name__)
# The run's terminator: the callback of its chord, ``terminate.si(run)``.
TERMINATOR = "carcelery.tasks.terminate"


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


class RunFailed(Exception):
    """The run could not end with its files written; the message names the call, the resource and the fix."""


def not_sent(run_id: str, exc: Exception) -> str | None:
    """Why run ``run_id``'s terminator could not be sent, in one line, if no retry can fix ``exc``; None if one may."""
    failure = errors.sort(exc, queue=settings.queue_name(TEXT_QUEUE))
    return f"run {run_id}: the terminator (-1) was not sent: {failure}" if isinstance(failure, errors.Permanent) else None


@callback_not_sent.connect
def terminator_not_sent(sender: OncePerPartDynamoDBBackend, group_id: str, callback: Signature, exc: Exception,
                        **_: object) -> None:
    """The last part of a run could not send its terminator (``callback``): a failure no retry can fix is the run's,
    stored as the terminator's result; any other is left to ``watch_run``, which sends it at its next look."""
    if callback.task != TERMINATOR:
        return
    run_id = callback.args[0]["id"] if callback.args else group_id
    reason = not_sent(run_id, exc)
    if reason is None:
        logger.warning("run=%s: the terminator was not sent (%r); watch_run sends it at its next look", run_id, exc)
        return
    logger.error("run=%s failed: %s", run_id, reason)
    sender.mark_as_failure(callback.id, RunFailed(reason))


def progress(group_id: str, parts_seen: int, since: float | None) -> tuple[Counts, float]:
    """(the chord's counts; when its count last moved) of chord ``group_id``, seen ``parts_seen`` parts at ``since``."""
    counts = app.backend.chord(group_id)
    now = time.time()
    if since is None or counts.parts != parts_seen:
        since = now
    return counts, since


def ended(terminator_id: str) -> str | None:
    """How the run of terminator ``terminator_id`` ended: "complete", "failed", or None: not yet."""
    result = app.AsyncResult(terminator_id)
    if result.successful():
        return "complete"
    return "failed" if result.failed() else None


def send_terminator(run: Run, group_id: str, terminator_id: str) -> None:
    """Send the chord's own terminator, by its task id (``dispatch --wait`` follows that id)."""
    app.signature(TERMINATOR, args=(run,)).apply_async(task_id=terminator_id)
    app.backend.mark_callback_sent(group_id)


def give_up(run: Run, terminator_id: str) -> None:
    """Store the run's failure: its terminator was sent, and had no result a deadline later."""
    reason = (f"run {run['id']}: the terminator (-1, task {terminator_id}) was sent but had not ended "
              f"{settings.run_deadline:.0f} s later (CARCELERY_RUN_DEADLINE); is Instance B's worker running? "
              f"python -m carcelery.commands.dlq lists it if it was dead-lettered")
    app.backend.mark_as_failure(terminator_id, RunFailed(reason))


def overdue(since: float, after: float | None = None) -> bool:
    """Whether ``after`` seconds (the run's deadline by default) have gone by since ``since``."""
    return time.time() - since >= (settings.run_deadline if after is None else after)


def fail_missing(run: Run, sized: bool = True) -> int:
    """Store the run's images still pending as failed, with why; how many they were.

    ``sized``: whether the dispatcher stored the chord's size, which it does before sending the last image.
    """
    dead = {(message["bucket"], message["image"]) for message in _dead_letters() if message["run"] == run["id"]}
    failed = 0
    for record in records.pending(run["bucket"], run["id"], run.get("prefix", "")):
        if (record["bucket"], record["key"]) in dead:
            # SQS moves a message there once it was received CARCELERY_MAX_RECEIVES times.
            reason = (f"in the dead-letter queue after {settings.max_receives} receives; "
                      f"python -m carcelery.commands.dlq lists it, python -m carcelery.commands.dlq redrive sends it back")
        else:
            reason = (f"no result: no part of run {run['id']} was done for {settings.run_deadline:.0f} s "
                      f"(CARCELERY_RUN_DEADLINE); a late result replaces this record")
            if not sized:
                reason += "; the dispatcher stopped before it had sent every image: this one may never have been sent"
        failed += records.fail(record, run["id"], reason)
    return failed


# An image of an ended run still pending: its task could not store a result.
NO_RESULT = {"stage": "result", "reason": "no result stored: its task ended without one (worker B's log says why)"}


def own_failures(run: Run) -> tuple[int, list[dict]]:
    """How many of run ``run``'s own images failed, and the first ``results.MAX_FAILURES`` of them
    (``image``, ``stage``, ``reason``), once the run ended.

    The run's files hold every image of its bucket and prefix, those of another run
    under it too (one over a narrower prefix, still going: its images pending);
    a run's failures are those of the images whose record it wrote, and those it
    sent that are still pending: their task ended without storing a result (the
    records table refused its write: the worker's log names why).
    """
    count, first = 0, list[dict]()
    for run_id, record in records.with_runs(run["bucket"], run.get("prefix", "")):
        if run_id == run["id"] and record["status"] != Status.DONE:
            count += 1
            if len(first) < results.MAX_FAILURES:
                first.append({"image": record["image"], **record.get("error", NO_RESULT)})
    return count, first


def _dead_letters() -> list[dict]:
    """What is in the dead-letter queue; nothing if there is none (queues kombu made, not provision)."""
    try:
        return dead_letters.messages()
    except ClientError as exc:
        if not errors.queue_missing(exc):
            raise
        return []

