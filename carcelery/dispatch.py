"""Instance A's dispatcher: scan the bucket and send one task per image, in one chord.

    python -m carcelery.dispatch [--from DIR] [--bucket B] [--prefix P] [--force] [--wait]

Shows progress on stderr while it lists, sends and (with ``--wait``) waits: a
bar on a terminal, a line every few seconds otherwise.

Per image, ``detect_car`` (sent ten per SQS request), which hands a car image on to ``recognize_text``; the chord's
callback is the ``-1`` terminator, delivered to Instance B's queue, and
``watch_run`` ends the run if its parts stop coming (CARCELERY_RUN_DEADLINE).
Each image gets a pending record in the records table before its task is
sent. Images dispatched before with the same ETag are skipped unless ``--force``.

The bucket is listed, checked against the ledger, recorded as pending and sent
CHUNK images at a time, so the dispatcher's memory does not grow with the
bucket. The chord's tasks are sent one by one with its group id and callback,
as Celery's ``chord`` sends them, but without building the list of every
task's signature and result first; the chord's size is stored before its last
task is sent, as Celery does.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Iterable, Iterator, NotRequired, TextIO

from botocore.exceptions import EndpointConnectionError
from celery.result import AsyncResult

from .pipeline import ledger, records, runs, images, store
from .aws import provision, errors
from .app import app
from .pipeline.printable import printable
from .pipeline.progress import Progress
from .settings import settings
from .pipeline.images import S3Image
from .pipeline.model import Ref, Run
from .transport import batched_sends

# Seconds between two looks of ``--wait`` at the run (two DynamoDB reads each):
# at 0.5 s they were a tenth of the requests of a run of 200 images.
WAIT_POLL = 1.0
# Images listed, checked against the ledger, recorded as pending and sent at a
# time: the dispatcher holds two chunks, whatever the bucket's size.
CHUNK = 1000


class Dispatched(Run):
    """A run as its dispatcher sent it (``dispatch``'s answer); the terminator gets its ``Run`` fields."""
    images: int
    skipped: int
    skipped_by_reason: collections.Counter[str]
    result: NotRequired[AsyncResult | None]


def _task(name: str, *args, **options):
    # By name: carcelery.tasks imports this module (the beat's scans dispatch).
    return app.signature(f"carcelery.tasks.{name}", args=args, **options)


def dispatch(bucket: str, prefix: str = "", force: bool = False, stream: TextIO | None = None,
             if_empty: bool = True, found: Iterable[S3Image] | None = None, keys: list[str] | None = None) -> Dispatched:
    """List ``bucket`` under ``prefix`` and send the run.

    Parameters:
      bucket, prefix: where the images are.
      force: send images already dispatched with the same ETag too.
      found: these images instead of the bucket's listing (those S3 events announced).
      keys: the keys whose records the run changes (``found``'s, and those removed): the terminator
        then updates the outputs with them alone (``pipeline.index``); None: a run of the whole bucket.
      stream: where to show progress while listing and sending (None: nowhere).
      if_empty: with nothing to recognize, send the terminator alone (it writes
        the files again); otherwise send nothing (the beat's scans).

    Raises:
      botocore.exceptions.ClientError: the bucket or the ledger is missing or not reachable
        (``errors.explain`` says which, and the fix); nothing has been sent then, unless
        it was the ledger's write, after sending: the next scan sends those images again.
      kombu.exceptions.ChannelError: SQS refused messages; the images are not recorded
        as dispatched, so the next scan sends them again.

    Returns:
      The run: ``id``, ``bucket``, ``prefix``, ``images`` (count sent), ``skipped``
      (already dispatched), ``skipped_by_reason`` (objects the listing passed over, by
      reason: ``images.skip_reason``) and ``result`` (the terminator's AsyncResult; None
      if nothing was sent).
    """
    run: Dispatched = {"id": uuid.uuid4().hex[:12], "bucket": bucket, "prefix": prefix, "images": 0, "skipped": 0,
                       "skipped_by_reason": collections.Counter()}
    ended: Run = {"id": run["id"], "bucket": bucket, "prefix": prefix}
    if keys is not None:
        ended["keys"] = keys
    # Immutable: the terminator reads the records from the store, not the parts' results.
    body = _task("terminate", ended, immutable=True)
    terminator, group_id = body.freeze(uuid.uuid4().hex), uuid.uuid4().hex
    listing = Progress("listed", stream=stream) if stream else None
    sending, held = None, None

    def send(images: list[S3Image], last: S3Image | None = None) -> None:
        """Send ``images`` and then, the chord's size stored first, its ``last`` image."""
        def one(image: S3Image) -> None:
            ref: Ref = {"bucket": image.bucket, "key": image.key, "etag": image.etag, "run": run["id"]}
            _task("detect_car", ref).apply_async(group_id=group_id, group_index=run["images"], chord=body)
            run["images"] += 1
            if sending:
                sending.update(run["images"])

        if not run["images"]:
            # Before the first part: whoever dies, dispatcher or worker, the run ends (carcelery.pipeline.runs).
            _task("watch_run", ended, group_id, terminator.id).apply_async(**runs.later())
        with batched_sends():
            for image in images:
                one(image)
            if last:
                # Before the last part is sent: the parts remaining reach 0 with it, and the terminator
                # reads what the listing, over by now, passed over.
                store.note_skipped(run["id"], run["skipped_by_reason"])
                app.backend.set_chord_size(group_id, run["images"] + 1)
                one(last)
        # Sent (the batches flushed): recorded, so that a failed send leaves them to the next scan.
        ledger.record(images + ([last] if last else []), run["id"])

    for chunk, final in _chunks(images.list_images(bucket, prefix, run["skipped_by_reason"]) if found is None else found):
        if listing:
            listing.update(listing.done + len(chunk))
        todo = ledger.new(chunk, force)
        run["skipped"] += len(chunk) - len(todo)
        if not todo:
            continue
        if stream and sending is None:
            sending = Progress("sent", total=len(todo) if final else None, stream=stream)
        records.put_pending(todo, run["id"])
        # The last image waits until it is known to be the last one.
        send(([held] if held else []) + todo[:-1], last=todo[-1] if final else None)
        held = None if final else todo[-1]
    if held:
        send([], last=held)
    if listing:
        listing.close()
    if sending:
        sending.close()
    if run["images"]:
        run["result"] = app.AsyncResult(terminator.id, parent=app.GroupResult(group_id, []))
    elif if_empty:
        store.note_skipped(run["id"], run["skipped_by_reason"])
        run["result"] = body.delay()  # nothing to recognize: the terminator alone writes the files again
    else:
        run["result"] = None
    return run


def _chunks(images: Iterable[S3Image]) -> Iterator[tuple[list[S3Image], bool]]:
    """``images`` CHUNK at a time, each with whether it is the last one (an empty one if there are none)."""
    images = iter(images)
    chunk = list(itertools.islice(images, CHUNK))
    while True:
        following = list(itertools.islice(images, CHUNK))
        yield chunk, not following
        if not following:
            return
        chunk = following


def wait(run: Dispatched, timeout: float, stream: TextIO) -> dict:
    """Wait for the run's terminator, showing the images done as they advance.

    Raises:
      TimeoutError: the run did not end within ``timeout`` seconds.
      runs.RunFailed: the run ended without its files (its terminator not sent, or not done); the message says why.

    Returns:
      The terminator's summary, its failures (``failed``, ``failed_count``) the run's own images'
      (``runs.own_failures``): not those of another run under the same prefix.
    """
    result = run["result"]
    assert result is not None, "a run that sent nothing has nothing to wait for"
    group = result.parent
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
    if result.failed():
        raise runs.RunFailed(str(result.result))
    # Not its parents: they are the run's images, and reading each one's result
    # back would be one request per image; their failures are in the records.
    summary = result.get(follow_parents=False)
    if summary.get("failed_count"):
        # The files' failures may be another run's under the same prefix: a second read, only then.
        summary["failed_count"], summary["failed"] = runs.own_failures(run)
    return summary


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
            keys = images.upload_folder(args.folder, args.bucket, args.prefix)
            print(f"uploaded {len(keys)} images from {args.folder} to s3://{args.bucket}/{args.prefix}")
        run = dispatch(args.bucket, args.prefix, args.force, stream=sys.stderr)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except EndpointConnectionError as exc:
        print(f"error: {errors.unreachable(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # known AWS errors become one clear line
        reason = errors.explain(exc, args.bucket)
        if reason is None:
            raise
        print(f"error: {reason}", file=sys.stderr)
        return 2
    passed_over = images.describe_skipped(run["skipped_by_reason"])
    print(f"run {run['id']}: dispatched {run['images']} images from s3://{args.bucket}/{args.prefix}"
          + (f", skipped {run['skipped']} already dispatched (--force to redo)" if run["skipped"] else "")
          + (f"; {passed_over}" if passed_over else ""))
    if not run["images"]:
        print("nothing to recognize: the terminator was sent alone, output.txt will be empty of new lines")
    if not args.wait:
        return 0
    try:
        summary = wait(run, args.timeout, sys.stderr)
    except TimeoutError as exc:
        print(f"error: {exc}; the workers may be down or busy (is Instance B's worker running?)", file=sys.stderr)
        return 3
    except runs.RunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    except Exception as exc:  # known AWS errors become one clear line
        reason = errors.explain(exc, table=settings.results_table)
        if reason is None:
            raise
        print(f"error: run {run['id']} was sent, but cannot be followed: {reason}", file=sys.stderr)
        return 2
    passed_over = images.describe_skipped(summary["skipped_by_reason"])
    print(f"run {summary['run']}: {summary['images']} images, {summary['cars']} cars, "
          f"{summary['failed_count']} failed{', ' + passed_over if passed_over else ''}; output in {summary['output_dir']}, report {summary['report']}"
          + (f", uploaded to {summary['output_uri']}" if summary["output_uri"] else ""))
    for failure in summary["failed"]:
        print(f"  failed: {printable(failure['image'])} at {failure['stage']}: {printable(failure['reason'])}")
    if summary["failed_count"] > len(summary["failed"]):
        print(f"  ... and {summary['failed_count'] - len(summary['failed'])} more failed: see results.jsonl")
    print(json.dumps({k: summary[k] for k in ("run", "images", "cars")}))
    return 1 if summary["failed_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
