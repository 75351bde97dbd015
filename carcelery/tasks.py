"""The pipeline's tasks.

Per image, ``detect_car`` (Instance A) runs in one chord; for a car image it
hands on to ``recognize_text`` (Instance B) by replacing itself. Each stores
its image's record in the records table (``carcelery.pipeline.records``) as it ends.
The chord's callback, ``terminate``, is the ``-1`` terminator: Instance B
writes the run's outputs from the records table when it arrives. Images
without a car never reach Instance B's queue. ``watch_run`` ends a run whose
parts stopped coming (``carcelery.pipeline.runs``). ``scan_bucket`` is the beat's
periodic scan for new images; ``apply_events`` makes runs of S3's events
(``carcelery.pipeline.stream``), gathered by Instance A's worker (``carcelery.events``).

A task never raises for a bad image or a permanent AWS error: it stores a
record with ``error`` set, so the chord still completes and the failure is
written down. Transient errors are retried with backoff, a bounded number of times.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import time
from pathlib import Path

from celery.concurrency import get_implementation
from celery.concurrency.thread import TaskPool as ThreadPool
from celery.signals import worker_init, worker_process_init
from celery.utils.log import get_task_logger

from . import aws, recognizers
from . import events as s3events
from .pipeline import costs, outputs, records, results, runs, images, stream
from .aws import errors
from .app import app
from .dispatch import dispatch
from .settings import settings

logger = get_task_logger(__name__)

MAX_RETRIES = 5


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


def _stored(record: dict, run_id: str | None) -> dict:
    # Before the task's result counts as its chord part: the terminator reads it.
    records.put(record, run_id or "")
    return record


def _image(ref: dict) -> recognizers.Image:
    return recognizers.Image(ref["key"], lambda: images.read(ref["bucket"], ref["key"]),
                             bucket=ref["bucket"], key=ref["key"])


def _backoff(retries: int) -> float:
    # Exponential, capped, with jitter so that throttled workers do not retry in step.
    return min(60.0, 2.0 ** retries) * random.uniform(0.5, 1.5)


# CPU time of the task: its process's, or under the threads pool its thread's.
_cpu_time = time.thread_time if settings.pool == "threads" else time.process_time


def _attempt(task, ref: dict, stage: str, work) -> dict:
    """``work()``'s record, or a failure record naming the reason; transient errors are retried."""
    started, cpu = time.perf_counter(), _cpu_time()
    try:
        record = work()
    except recognizers.ImageError as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - sorted below into permanent and transient
        reason = errors.explain(exc, ref["bucket"], ref["key"])
        if reason is None:
            if task.request.retries < MAX_RETRIES:
                logger.warning("image=%s stage=%s transient error, retrying: %r", ref["key"], stage, exc)
                raise task.retry(exc=exc, countdown=_backoff(task.request.retries), max_retries=MAX_RETRIES)
            reason = f"{type(exc).__name__}: {exc} (gave up after {MAX_RETRIES} retries)"
    else:
        elapsed, cpu = time.perf_counter() - started, _cpu_time() - cpu
        if stage == "detect":
            outcome = f"car={'yes' if record['car'] else 'no'} confidence={record['car_confidence']:.1f}"
        else:
            outcome = f"lines={len(record['text'])}"
        # cpu below time: the process waited (for S3, or for a core).
        logger.info("image=%s stage=%s %s time=%.3fs cpu=%.3fs", ref["key"], stage, outcome, elapsed, cpu)
        return record
    logger.error("image=%s stage=%s failed: %s", ref["key"], stage, reason)
    return results.failure(ref["key"], stage, reason, bucket=ref["bucket"], key=ref["key"], etag=ref.get("etag"))


@app.task(bind=True, name="carcelery.tasks.detect_car")
def detect_car(self, ref: dict) -> dict:
    """Instance A: does the image ``ref`` (bucket, key, etag, run) hold a car?

    A car image is handed on: this task is replaced by ``recognize_text``
    (same task id, same place in the chord), which Instance B runs. Any other
    image ends here, and its record is stored and is this task's result.
    """
    def work():
        labels = recognizer().labels(_image(ref))
        return results.detection(ref["key"], bucket=ref["bucket"], key=ref["key"], etag=ref.get("etag"),
                                 labels=labels, threshold=threshold())
    record = _attempt(self, ref, "detect", work)
    if record["car"]:
        return self.replace(recognize_text.s(record, run=ref.get("run")))
    return _stored(record, ref.get("run"))


@app.task(bind=True, name="carcelery.tasks.recognize_text")
def recognize_text(self, record: dict, run: str | None = None) -> dict:
    """Instance B: read the text of a car image of run ``run``; its record is stored and is this task's result."""
    regions = recognizers.text_regions(record["labels"], settings.text_region)
    work = lambda: results.with_text(record, recognizer().text(_image(record), regions))  # noqa: E731
    return _stored(_attempt(self, record, "text", work), run)


@app.task(name="carcelery.tasks.terminate")
def terminate(run: dict) -> dict:
    """Instance B, the ``-1`` terminator: write the run's output.txt, results.jsonl and report.html.

    They are made from the records table, a record at a time: every image of
    the run's bucket (and prefix) the store knows, this run's and earlier ones';
    a run of S3 events (its ``keys`` named) reads its own records alone (``pipeline.index``).

    Returns:
      The run's summary: counts, the first failures, where the outputs are.
    """
    summary = outputs.write(run, settings.output_dir, settings.output_uri)
    # The calls behind the records written (results.jsonl, read back a line at a time; a run of events: its own).
    summary.update(costs.summary(outputs.run_records(run, Path(summary["output_dir"])), settings.recognizer, settings.region))
    failed = summary["failed"]
    logger.info("run=%s terminator -1: %d images, %d cars, %d failed, output in %s; calls %s, cost %s USD",
                run["id"], summary["images"], summary["cars"], summary["failed_count"],
                summary["output_uri"] or summary["output_dir"], summary["calls"], summary.get("cost_usd", 0))
    for failure in failed:
        logger.warning("run=%s image=%s failed at %s: %s", run["id"], failure["image"],
                       failure["stage"], failure["reason"])
    main_pid = app.conf.get("carcelery_worker_pid")
    if app.conf.get("carcelery_stop_on_terminator") and main_pid:
        logger.info("run=%s: --stop-on-terminator, shutting this worker down", run["id"])
        os.kill(main_pid, signal.SIGTERM)  # warm shutdown: this task finishes first
    return summary


@app.task(name="carcelery.tasks.watch_run")
def watch_run(run: dict, group_id: str, terminator_id: str, parts_seen: int = -1, since: float | None = None) -> dict:
    """Instance B: look at run ``run`` again later, or end it if its parts stopped coming (``carcelery.pipeline.runs``)."""
    complete, parts_seen, since = runs.progress(group_id, parts_seen, since)
    if complete:
        return {"run": run["id"], "ended": "complete"}
    if not runs.overdue(since):
        watch_run.apply_async((run, group_id, terminator_id, parts_seen, since), countdown=runs.look_every())
        return {"run": run["id"], "ended": False}
    failed = runs.fail_missing(run)
    logger.warning("run=%s: no part done for %.0f s (CARCELERY_RUN_DEADLINE): ending it with %d images missing",
                   run["id"], settings.run_deadline, failed)
    # The chord's own terminator, by its task id: dispatch --wait sees the run end.
    terminate.apply_async((run,), task_id=terminator_id)
    return {"run": run["id"], "ended": "deadline", "missing": failed}


@app.task(name="carcelery.tasks.scan_bucket")
def scan_bucket() -> dict:
    """The beat's scan: dispatch the images that are new or changed since they were last dispatched.

    With S3 events on (their queue exists), the backfill: the same, and the
    records of images no longer in the bucket removed (``stream.backfill``).

    Nothing new, nothing sent: a terminator alone would write the bucket's files again at every scan.
    """
    if s3events.queue_url() is not None:
        # Events find what is new within seconds; this is the backfill (removals too).
        run = stream.backfill(settings.bucket, settings.key_prefix)
        return {key: run[key] for key in ("id", "images", "skipped", "removed")}
    run = dispatch(settings.bucket, settings.key_prefix, if_empty=False)
    return {key: run[key] for key in ("id", "images", "skipped")}


@app.task(bind=True, name="carcelery.tasks.apply_events", max_retries=MAX_RETRIES)
def apply_events(self, batch: list[dict]) -> dict:
    """Instance A: a batch of S3 events (``carcelery.pipeline.events``) applied: removals, and one run of what is new."""
    try:
        done = stream.apply(batch)
    except Exception as exc:  # noqa: BLE001 - sorted below into permanent and transient
        reason = errors.explain(exc, settings.bucket)
        if reason is not None:
            # The events are lost for now; the beat's next scan (the backfill) finds their images.
            logger.error("events: %d dropped: %s", len(batch), reason)
            return {"runs": [], "images": 0, "removed": 0, "dropped": len(batch), "error": reason}
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries))
    logger.info("events: %d in, runs %s: %d images sent, %d removed, %d dropped (duplicates, older, not images)",
                len(batch), ",".join(done["runs"]) or "-", done["images"], done["removed"], done["dropped"])
    return done
