"""Instance A's dispatcher: scan the bucket and send one task per image, in one chord.

    python -m carcelery.dispatch [--from DIR] [--bucket B] [--prefix P] [--force] [--wait]

Shows progress on stderr while it lists, sends and (with ``--wait``) waits: a
bar on a terminal, a line every few seconds otherwise. ``--from`` uploads a
folder's images into the bucket first. The run is built and sent by
``carcelery.pipeline.sending`` (the library); this is the command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from botocore.exceptions import EndpointConnectionError

from .aws import errors, provision
from .app import app
from .pipeline import images, runs
from .printable import printable
from .pipeline.progress import Progress
from .pipeline.sending import Dispatched, dispatch
from .settings import settings

# Seconds between two looks of ``--wait`` at the run (two DynamoDB reads each):
# at 0.5 s they were a tenth of the requests of a run of 200 images.
WAIT_POLL = 1.0


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
    if summary.get("failed_count") or summary.get("pending"):
        # The files' failures and pending images may be another run's under the same prefix: a second
        # read, only then. Its own images still pending are failures: their tasks could not store a result.
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
    except Exception as exc:  # a permanent AWS error becomes one clear line (the one policy: errors.sort)
        failure = errors.sort(exc, args.bucket)
        if not isinstance(failure, (errors.Permanent, errors.Misconfigured)):
            raise
        print(f"error: {failure}", file=sys.stderr)
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
    except Exception as exc:  # a permanent AWS error becomes one clear line (the one policy: errors.sort)
        failure = errors.sort(exc, table=settings.results_table)
        if not isinstance(failure, errors.Permanent):
            raise
        print(f"error: run {run['id']} was sent, but cannot be followed: {failure}", file=sys.stderr)
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
