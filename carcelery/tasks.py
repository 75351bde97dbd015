"""The pipeline's tasks.

Per image, ``detect_car`` (Instance A) runs in one chord; for a car image it
hands on to ``recognize_text`` (Instance B) by replacing itself. Each stores
its image's record in the records table (``carcelery.pipeline.records``) as it ends.
The chord's callback, ``terminate``, is the ``-1`` terminator: Instance B
writes the run's outputs from the records table when it arrives. Images
without a car never reach Instance B's queue. ``watch_run`` ends a run whose
parts stopped coming (``carcelery.pipeline.runs``). ``scan_bucket`` is the beat's
periodic scan for new images; ``apply_events`` makes runs of S3's events
(``carcelery.pipeline.stream``), gathered by Instance A's worker (``carcelery.notification_consumer``).

Every task is a ``policy.Guarded``: the one error policy. A transient error
is retried by Celery (exponential backoff, full jitter), ``policy.MAX_RETRIES``
times; anything else, or a transient error on the last try, is a failure: an
image task stores a record with ``error`` set, at once, so the chord still
completes and the failure is written down; a batch ``apply_events`` cannot
apply goes to the events' dead-letter queue with the reason; a terminator
that cannot write the run's files fails the run (``runs.RunFailed``).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import time
from typing import Callable, cast

from celery.concurrency import get_implementation
from celery.exceptions import Ignore
from celery.concurrency.thread import TaskPool as ThreadPool
from celery.signals import worker_init, worker_process_init
from celery.utils.log import get_task_logger

from . import aws, recognizers
from . import notification_consumer
from .pipeline import costs, notifications, outputs, records, results, runs, images, store, stream
from .pipeline.model import Record, Ref, Run, RunId, Stage
from .printable import printable
from .aws import errors
from .app import app
from .pipeline.sending import dispatch
from .policy import Guarded
from .replacing import Replaceable
from .settings import EVENTS_DEAD_LETTER_QUEUE, TEXT_QUEUE, settings

logger = get_task_logger(__name__)

def recognizer() -> recognizers.Recognizer:
    return recognizers.get(settings.recognizer)


def threshold() -> float:
    return recognizers.threshold(recognizer(), settings.car_threshold)


@worker_process_init.connect
def _load_models(**_):
    # Each worker process makes its clients and loads its models before the
    # first task, not during it: a boto3 client takes about 0.2 s of CPU to make.
    recognizer()
    aws.client("s3")
    app.backend.client  # noqa: B018 - the result backend's DynamoDB client
    with app.producer_or_acquire() as producer:
        producer.channel  # noqa: B018 - the SQS client of the hand-off to Instance B
    # What is loaded now lives as long as the process: out of the garbage
    # collector's full passes, which took a tenth of a second or more each.
    gc.freeze()


@worker_init.connect
def _load_models_for_threads(sender, **_):
    # The threads pool runs tasks in the worker's own process and sends no
    # worker_process_init: load here, before the first task, not in its threads.
    if get_implementation(sender.pool_cls) is ThreadPool:
        _load_models()


def _stored(task: Guarded, record: Record, run_id: RunId | None) -> Record:
    """``record`` stored, before the task's result counts as its chord part: the terminator reads it.

    Raises:
      aws.errors.Transient: the write failed for a moment; Celery retries the task.
      aws.errors.Failure: the write failed for good (its line logged): no record can say so.
    """
    try:
        records.put(record, run_id or "")
    except Exception as exc:  # sorted by the policy: retried, or raised as the failure it is
        raise task.given_up(exc, f"image={printable(record['image'])} record",
                            table=settings.records_table) from exc
    return record


def _image(ref: Ref | Record) -> recognizers.Image:
    return recognizers.Image(ref["key"], lambda: images.read(ref["bucket"], ref["key"]),
                             bucket=ref["bucket"], key=ref["key"])


# CPU time of the task: its process's, or under the threads pool its thread's.
_cpu_time = time.thread_time if settings.pool == "threads" else time.process_time


def _attempt(task: Guarded, ref: Ref | Record, stage: Stage, work: Callable[[], Record]) -> Record:
    """``work()``'s record, or at once a failure record naming the reason (``Guarded.image_failed``).

    Raises:
      aws.errors.Transient: ``work`` failed with a transient error and the task has
        retries left; Celery retries it.
    """
    started, cpu = time.perf_counter(), _cpu_time()
    try:
        record = work()
    except Exception as exc:  # noqa: BLE001 - sorted by the policy: retried, or a failure record
        # At text, ``ref`` is the detection: its car decision stays in the failure record.
        return task.image_failed(ref, stage, exc, detected=cast(Record, ref) if stage == Stage.TEXT else None)
    elapsed, cpu = time.perf_counter() - started, _cpu_time() - cpu
    if stage == Stage.DETECT:
        outcome = f"car={'yes' if record['car'] else 'no'} confidence={record['car_confidence']:.1f}"
    else:
        outcome = f"lines={len(record['text'])}"
    # cpu below time: the process waited (for S3, or for a core).
    logger.info("image=%s stage=%s %s time=%.3fs cpu=%.3fs", printable(ref["key"]), stage, outcome, elapsed, cpu)
    return record


# A failure an image task raises (its record's write refused) is logged by the policy: Celery's expected errors.
@app.task(bind=True, base=Replaceable, name="carcelery.tasks.detect_car", throws=(errors.Failure,))
def detect_car(self, ref: Ref) -> Record:
    """Instance A: does the image ``ref`` (bucket, key, etag, run) hold a car?

    A car image is handed on: this task is replaced by ``recognize_text``
    (same task id, same place in the chord), which Instance B runs. Any other
    image ends here, and its record is stored and is this task's result.
    """
    def work():
        labels = recognizer().labels(_image(ref))
        return results.detection(ref["key"], bucket=ref["bucket"], key=ref["key"], etag=ref.get("etag"),
                                 labels=labels, threshold=threshold())
    record = _attempt(self, ref, Stage.DETECT, work)
    if record["car"]:
        try:
            return self.replace(recognize_text.s(record, run=ref.get("run")))
        except Ignore:  # replace's way of ending this task, once the hand-off is sent
            raise
        except Exception as exc:  # noqa: BLE001 - the hand-off to Instance B: retried, or a failure record
            record = self.image_failed(ref, Stage.TEXT, exc, queue=settings.queue_name(TEXT_QUEUE), detected=record)
    return _stored(self, record, ref.get("run"))


@app.task(bind=True, base=Guarded, name="carcelery.tasks.recognize_text", throws=(errors.Failure,))
def recognize_text(self, record: Record, run: RunId | None = None) -> Record:
    """Instance B: read the text of a car image of run ``run``; its record is stored and is this task's result."""
    regions = recognizers.text_regions(record["labels"], settings.text_region)
    work = lambda: results.with_text(record, recognizer().text(_image(record), regions))  # noqa: E731
    return _stored(self, _attempt(self, record, Stage.TEXT, work), run)


# RunFailed is the run's failure, its line logged by the policy: Celery's expected error (``throws``), no traceback.
@app.task(bind=True, base=Guarded, name="carcelery.tasks.terminate", throws=(runs.RunFailed,))
def terminate(self, run: Run) -> dict:
    """Instance B, the ``-1`` terminator: write the run's output.txt, results.jsonl and report.html.

    They are made from the records table, a record at a time: every image of
    the run's bucket (and prefix) the store knows, this run's and earlier ones';
    a run of S3 events (its ``keys`` named) reads its own records alone (``pipeline.index``).
    The calls and their cost are this run's.

    Returns:
      The run's summary: counts, the first failures, what the listing passed over
      (``skipped_by_reason``), where the outputs are.
    """
    try:
        summary = outputs.write(run, settings.output_dir, settings.output_uri)
    except Exception as exc:  # sorted by the policy: retried, or the run's failure
        failure = self.given_up(exc, f"run={run['id']} terminator", **_written_to(run, exc))
        raise runs.RunFailed(f"run {run['id']}: the terminator could not write the run's files: {failure}") from exc
    summary.update(costs.summary(summary["calls"], settings.recognizer, settings.region))
    summary["skipped_by_reason"] = store.skipped(run["id"])
    passed_over = images.describe_skipped(summary["skipped_by_reason"])
    failed = summary["failed"]
    logger.info("run=%s terminator -1: %d images, %d cars, %d failed%s, output in %s; calls %s, cost %s USD",
                run["id"], summary["images"], summary["cars"], summary["failed_count"],
                f", {passed_over}" if passed_over else "",
                summary["output_uri"] or summary["output_dir"], summary["calls"], summary.get("cost_usd", 0))
    for failure in failed:
        logger.warning("run=%s image=%s failed at %s: %s", run["id"], printable(failure["image"]),
                       failure["stage"], printable(failure["reason"]))
    main_pid = app.conf.get("carcelery_worker_pid")
    if app.conf.get("carcelery_stop_on_terminator") and main_pid:
        logger.info("run=%s: --stop-on-terminator, shutting this worker down", run["id"])
        os.kill(main_pid, signal.SIGTERM)  # warm shutdown: this task finishes first
    return summary


def _written_to(run: Run, exc: Exception) -> dict[str, str]:
    """What the terminator's failed call was made on: the records table, the output bucket or the run's bucket."""
    # PutObject is the upload to CARCELERY_OUTPUT_URI; the terminator's other S3 calls read the run's bucket.
    output = getattr(exc, "operation_name", "") == "PutObject"
    return {"bucket": aws.split_uri(settings.output_uri)[0] if output else run["bucket"],
            "table": settings.records_table}


# A failure is logged by the policy, a bug's traceback with it: Celery's expected errors (``throws``).
@app.task(bind=True, base=Guarded, name="carcelery.tasks.watch_run", throws=(errors.Failure,))
def watch_run(self, run: Run, group_id: str, terminator_id: str, parts_seen: int = -1,
              since: float | None = None) -> dict:
    """Instance B: look at run ``run`` again later, until its terminator has a result (``carcelery.pipeline.runs``).

    Its chord complete but the terminator not sent a look later: sends it. The
    terminator sent but without a result a deadline later: the run failed. No
    part done for the deadline: ends the run with what it has. A transient error
    is retried (the policy): a look that fails for a moment does not leave the run unwatched.
    """
    try:
        return _look(run, group_id, terminator_id, parts_seen, since)
    except Exception as exc:  # sorted by the policy: retried, or raised as the failure it is
        raise self.given_up(exc, f"run={run['id']} watch_run", table=settings.results_table) from exc


def _look(run: Run, group_id: str, terminator_id: str, parts_seen: int, since: float | None) -> dict:
    ended = runs.ended(terminator_id)
    if ended:
        return {"run": run["id"], "ended": ended}
    counts, since = runs.progress(group_id, parts_seen, since)
    if counts.remaining == 0 and not counts.sent and runs.overdue(since, runs.look_every()):
        logger.warning("run=%s: complete, but its terminator was not sent: sending it", run["id"])
        runs.send_terminator(run, group_id, terminator_id)
    elif counts.remaining == 0 and counts.sent and runs.overdue(since):
        runs.give_up(run, terminator_id)
        logger.error("run=%s failed: its terminator was sent %.0f s ago and has no result", run["id"],
                     settings.run_deadline)
        return {"run": run["id"], "ended": "failed"}
    elif counts.remaining != 0 and runs.overdue(since):
        # remaining None or below 0: the dispatcher never stored the chord's size (it died while sending).
        failed = runs.fail_missing(run, sized=counts.remaining is not None and counts.remaining > 0)
        logger.warning("run=%s: no part done for %.0f s (CARCELERY_RUN_DEADLINE): ending it with %d images missing",
                       run["id"], settings.run_deadline, failed)
        runs.send_terminator(run, group_id, terminator_id)
        return {"run": run["id"], "ended": "deadline", "missing": failed}
    watch_run.apply_async((run, group_id, terminator_id, counts.parts, since), **runs.later())
    return {"run": run["id"], "ended": False}


# Not retried: the beat's next scan is its retry. A failure is logged by the policy (``throws``).
@app.task(bind=True, base=Guarded, name="carcelery.tasks.scan_bucket", max_retries=0, throws=(errors.Failure,))
def scan_bucket(self) -> dict:
    """The beat's scan: dispatch the images that are new or changed since they were last dispatched.

    With S3 events on (their queue exists), the backfill: the same, and the
    records of images no longer in the bucket removed (``stream.backfill``).

    Nothing new, nothing sent: a terminator alone would write the bucket's files again at every scan.
    """
    try:
        if notification_consumer.queue_url() is not None:
            # Events find what is new within seconds; this is the backfill (removals too).
            run = stream.backfill(settings.bucket, settings.key_prefix)
            return {key: run[key] for key in ("id", "images", "skipped", "removed")}
        sent = dispatch(settings.bucket, settings.key_prefix, if_empty=False)
        return {key: sent[key] for key in ("id", "images", "skipped")}
    except Exception as exc:  # sorted by the policy: raised as the failure it is
        raise self.given_up(exc, f"scan of s3://{settings.bucket}/{settings.key_prefix}", settings.bucket,
                            table=settings.ledger_table) from exc


@app.task(bind=True, base=Guarded, name="carcelery.tasks.apply_events")
def apply_events(self, batch: list[dict]) -> dict:
    """Instance A: a batch of S3 events (``carcelery.pipeline.notifications``) applied: removals, and one run of what is new.

    A transient error is retried as the image tasks' are (the policy); a batch that cannot be applied
    goes to the events' dead-letter queue, in S3's form, with the reason: never lost.
    """
    try:
        done = stream.apply(batch)
    except Exception as exc:  # noqa: BLE001 - sorted by the policy: retried, or set aside with why
        reason = str(self.given_up(exc, f"events={len(batch)}", settings.bucket))
        # Where they went: the failure's one line is the policy's.
        logger.info("events: %d set aside in %s", len(batch), settings.queue_name(EVENTS_DEAD_LETTER_QUEUE))
        notification_consumer.set_aside(json.dumps(notifications.notification(batch)), reason)
        return {"runs": [], "images": 0, "removed": 0, "dropped": len(batch), "error": reason}
    logger.info("events: %d in, runs %s: %d images sent, %d removed, %d dropped (duplicates, older, not images)",
                len(batch), ",".join(done["runs"]) or "-", done["images"], done["removed"], done["dropped"])
    return done
