"""The pipeline's tasks.

Per image, ``detect_car`` (Instance A) runs in one chord; for a car image it
hands on to ``recognize_text`` (Instance B) by replacing itself. The chord's
callback, ``terminate``, is the ``-1`` terminator: Instance B writes output.txt
when it arrives. Images without a car never reach Instance B's queue.
``scan_bucket`` is the beat's periodic scan for new images.

A task never raises for a bad image or a permanent AWS error: it returns a
record with ``error`` set, so the chord still completes and the failure is
written down. Transient errors are retried with backoff, a bounded number of times.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import time

from celery.concurrency import get_implementation
from celery.concurrency.thread import TaskPool as ThreadPool
from celery.signals import worker_init, worker_process_init
from celery.utils.log import get_task_logger

from . import aws, costs, recognizers, results, storage
from .app import app
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


def _image(ref: dict) -> recognizers.Image:
    return recognizers.Image(ref["key"], lambda: storage.read(ref["bucket"], ref["key"]),
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
        reason = storage.explain(exc, ref["bucket"], ref["key"])
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
    """Instance A: does the image ``ref`` (bucket, key, etag) hold a car?

    A car image is handed on: this task is replaced by ``recognize_text``
    (same task id, same place in the chord), which Instance B runs. Any other
    image ends here, and its record is this task's result.
    """
    def work():
        labels = recognizer().labels(_image(ref))
        return results.detection(ref["key"], bucket=ref["bucket"], key=ref["key"], etag=ref.get("etag"),
                                 labels=labels, threshold=threshold())
    record = _attempt(self, ref, "detect", work)
    if record["car"]:
        return self.replace(recognize_text.s(record))
    return record


@app.task(bind=True, name="carcelery.tasks.recognize_text")
def recognize_text(self, record: dict) -> dict:
    """Instance B: read the text of a car image."""
    regions = recognizers.text_regions(record["labels"], settings.text_region)
    return _attempt(self, record, "text", lambda: results.with_text(record, recognizer().text(_image(record), regions)))


@app.task(name="carcelery.tasks.terminate")
def terminate(records: list[dict], run: dict) -> dict:
    """Instance B, the ``-1`` terminator: write output.txt, results.jsonl and report.html for the run.

    Returns:
      The run's summary, with the text of output.txt.
    """
    text = results.write(settings.output_dir, run["bucket"], records)
    # Imported here: the dispatcher imports this module for the tasks' names, and
    # the report's imaging libraries would add a seventh of a second to its start.
    from . import report

    page = report.write(settings.output_dir, run["id"], sorted(records, key=lambda r: results.natural_key(r["image"])),
                        read=lambda r: storage.read(r["bucket"], r["key"]))
    failed = [{"image": r["image"], **r["error"]} for r in records if "error" in r]
    summary = {
        "run": run["id"], "bucket": run["bucket"], "images": len(records),
        "cars": sum(1 for r in records if r["car"]), "failed": failed,
        "output_dir": str(settings.output_dir.resolve()), "output": text, "report": str(page.resolve()),
        **costs.summary(records, settings.recognizer, settings.region),
    }
    logger.info("run=%s terminator -1: %d images, %d cars, %d failed, output in %s; calls %s, cost %s USD",
                run["id"], summary["images"], summary["cars"], len(failed), summary["output_dir"],
                summary["calls"], summary.get("cost_usd", 0))
    for failure in failed:
        logger.warning("run=%s image=%s failed at %s: %s", run["id"], failure["image"],
                       failure["stage"], failure["reason"])
    main_pid = app.conf.get("carcelery_worker_pid")
    if app.conf.get("carcelery_stop_on_terminator") and main_pid:
        logger.info("run=%s: --stop-on-terminator, shutting this worker down", run["id"])
        os.kill(main_pid, signal.SIGTERM)  # warm shutdown: this task finishes first
    return summary


@app.task(name="carcelery.tasks.scan_bucket")
def scan_bucket() -> dict:
    """The beat's scan: dispatch the images that are new or changed since they were last dispatched."""
    from .dispatch import dispatch

    run = dispatch(settings.bucket, settings.key_prefix)
    return {key: run[key] for key in ("id", "images", "skipped")}
