"""Instance A's dispatcher: scan the bucket and send one task per image, in one chord.

    python -m carcelery.dispatch [--from DIR] [--bucket B] [--prefix P] [--force] [--wait]

Shows progress on stderr while it lists, sends and (with ``--wait``) waits: a
bar on a terminal, a line every few seconds otherwise.

Per image, ``detect_car`` (sent ten per SQS request), which hands a car image on to ``recognize_text``; the chord's
callback is the ``-1`` terminator, delivered to Instance B's queue, and
``watch_run`` ends the run if its parts stop coming (CARCELERY_RUN_DEADLINE).
Each image gets a pending record in the records table before its task is
sent. Images dispatched before with the same ETag are skipped unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import TextIO

from botocore.exceptions import EndpointConnectionError
from celery import chord
from celery.signals import after_task_publish

from . import ledger, provision, records, runs, storage
from .app import app
from .progress import Progress
from .settings import settings
from .tasks import detect_car, terminate, watch_run
from .transport import batched_sends

# Seconds between two looks of ``--wait`` at the run (two DynamoDB reads each):
# at 0.5 s they were a tenth of the requests of a run of 200 images.
WAIT_POLL = 1.0


def dispatch(bucket: str, prefix: str = "", force: bool = False, stream: TextIO | None = None) -> dict:
    """List ``bucket`` under ``prefix`` and send the run.

    Parameters:
      bucket, prefix: where the images are.
      force: send images already dispatched with the same ETag too.
      stream: where to show progress while listing and sending (None: nowhere).

    Raises:
      botocore.exceptions.ClientError: the bucket or the ledger is missing or not reachable
        (``storage.explain`` says which, and the fix); nothing has been sent then, unless
        it was the ledger's write, after sending: the next scan sends those images again.
      kombu.exceptions.ChannelError: SQS refused messages; the images are not recorded
        as dispatched, so the next scan sends them again.

    Returns:
      The run: ``id``, ``bucket``, ``prefix``, ``images`` (count sent), ``skipped``
      (already dispatched) and ``result`` (the terminator's AsyncResult).
    """
    run = {"id": uuid.uuid4().hex[:12], "bucket": bucket, "prefix": prefix}
    listing = Progress("listed", stream=stream) if stream else None
    listed = []
    for image in storage.list_images(bucket, prefix):
        listed.append(image)
        if listing:
            listing.update(len(listed))
    if listing:
        listing.close()
    todo = ledger.new(listed, force)
    run["images"], run["skipped"] = len(todo), len(listed) - len(todo)
    records.put_pending(todo, run["id"])
    header = [detect_car.s({"bucket": i.bucket, "key": i.key, "etag": i.etag, "run": run["id"]}) for i in todo]
    # Immutable: the terminator reads the records from the store, not the parts' results.
    body = terminate.si({k: run[k] for k in ("id", "bucket", "prefix", "images")})
    sending = Progress("sent", total=len(todo), stream=stream) if stream and todo else None

    def sent(sender=None, **_):
        if sender == detect_car.name:
            sending.update(sending.done + 1)

    if sending:
        after_task_publish.connect(sent, weak=False)
    try:
        # A chord of no tasks never fires its callback: send the terminator alone.
        with batched_sends():
            run["result"] = chord(header)(body) if header else body.delay()
    finally:
        if sending:
            after_task_publish.disconnect(sent)
            sending.close()
    if header:
        watch_run.apply_async((body.args[0], run["result"].parent.id, run["result"].id), countdown=runs.look_every())
    ledger.record(todo, run["id"])
    return run


def wait(run: dict, timeout: float, stream: TextIO) -> dict:
    """Wait for the run's terminator, showing the images done as they advance.

    Raises:
      TimeoutError: the run did not end within ``timeout`` seconds.

    Returns:
      The terminator's summary.
    """
    result, group = run["result"], run["result"].parent
    done = Progress("done", total=run["images"], stream=stream) if group else None
    deadline = time.monotonic() + timeout
    while not result.ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run['id']} did not end within {timeout:.0f} s")
        if done:
            done.update(app.backend.chord_counts(group.id)[0])
        time.sleep(WAIT_POLL)
    if done:
        done.update(run["images"])
        done.close()
    # Not its parents: they are the run's images, and reading each one's result
    # back would be one request per image; their failures are in the summary.
    return result.get(follow_parents=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carcelery.dispatch", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="folder", type=Path, help="upload this folder's images into the bucket first")
    parser.add_argument("--bucket", default=settings.bucket, help="S3 bucket (default: CARCELERY_BUCKET)")
    parser.add_argument("--prefix", default=settings.key_prefix, help="only keys under this prefix")
    parser.add_argument("--force", action="store_true", help="dispatch images already dispatched with the same ETag")
    parser.add_argument("--wait", action="store_true", help="follow the run to its terminator and print its summary")
    parser.add_argument("--timeout", type=float, default=600, help="seconds --wait waits (default 600)")
    args = parser.parse_args(argv)
    try:
        if args.folder:
            provision.bucket(args.bucket)
            keys = storage.upload_folder(args.folder, args.bucket, args.prefix)
            print(f"uploaded {len(keys)} images from {args.folder} to s3://{args.bucket}/{args.prefix}")
        run = dispatch(args.bucket, args.prefix, args.force, stream=sys.stderr)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except EndpointConnectionError as exc:
        hint = "start it: python -m carcelery.emulator" if settings.target == "emulator" else "check the network"
        print(f"error: cannot reach {settings.endpoint_url or exc.kwargs.get('endpoint_url')}; {hint}",
              file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - known AWS errors become one clear line
        reason = storage.explain(exc, args.bucket)
        if reason is None:
            raise
        print(f"error: {reason}", file=sys.stderr)
        return 2
    print(f"run {run['id']}: dispatched {run['images']} images from s3://{args.bucket}/{args.prefix}"
          + (f", skipped {run['skipped']} already dispatched (--force to redo)" if run["skipped"] else ""))
    if not run["images"]:
        print("nothing to recognize: the terminator was sent alone, output.txt will be empty of new lines")
    if not args.wait:
        return 0
    try:
        summary = wait(run, args.timeout, sys.stderr)
    except TimeoutError as exc:
        print(f"error: {exc}; the workers may be down or busy (is Instance B's worker running?)", file=sys.stderr)
        return 3
    print(f"run {summary['run']}: {summary['images']} images, {summary['cars']} cars, "
          f"{summary['failed_count']} failed; output in {summary['output_dir']}, report {summary['report']}"
          + (f", uploaded to {summary['output_uri']}" if summary["output_uri"] else ""))
    for failure in summary["failed"]:
        print(f"  failed: {failure['image']} at {failure['stage']}: {failure['reason']}")
    if summary["failed_count"] > len(summary["failed"]):
        print(f"  ... and {summary['failed_count'] - len(summary['failed'])} more failed: see results.jsonl")
    print(json.dumps({k: summary[k] for k in ("run", "images", "cars")}))
    return 1 if summary["failed_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
