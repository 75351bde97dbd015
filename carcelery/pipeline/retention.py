"""Which runs' folders are kept: the CARCELERY_KEEP_RUNS newest that ended, here and at CARCELERY_OUTPUT_URI.

A run has ended where its report is: report.html is the last of its files
written into its folder and the last uploaded to ``<prefix>runs/<run id>/``.
A folder without it is a run still being written (an earlier run's
terminator whose report takes long, or another host's upload), and is never
deleted. Of the runs that ended, the newest by when their report was written
are kept, and the one ``latest`` shows whatever its age. S3 gives that time
to the second, so a run's folder there also holds an empty ``.version-<n>``,
its version (the index manifest's it made, ``index``): of two reports of one second, the later run's
is the newer. Only the terminator that has just made its run ``latest``
prunes, so the run ``latest`` shows is its own.

In S3 the runs' objects are listed under ``<prefix>runs/`` (ListObjectsV2)
and deleted a thousand keys a call (DeleteObjects). ``<prefix>latest/`` holds
copies and is never deleted. A listing or a deletion refused is logged with
the permission it needs, and the run goes on: its outputs are written.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Mapping

from botocore.exceptions import ClientError

from .. import aws
from . import results

log = logging.getLogger(__name__)
BATCH = 1000  # keys per DeleteObjects, S3's most
VERSION = ".version-"  # in S3, a run's folder's ``.version-<n>``: run ``n`` of its store


def pruned(ended: Mapping[str, tuple[float, int]], keep: int, shown: str) -> list[str]:
    """The runs of ``ended`` to delete: all but the ``keep`` newest and ``shown``.

    ``ended``: run id: (when its report was written, its version or 0), which orders them.
    """
    newest_first = sorted(ended, key=lambda run: (*ended[run], run), reverse=True)
    return sorted(run for run in newest_first[keep:] if run != shown)


def _ended_here(runs: Path) -> dict[str, tuple[float, int]]:
    """The runs of folder ``runs`` whose report is written: run id: (its time, 0); the time to the nanosecond."""
    ended = {}
    for folder in runs.iterdir():
        try:
            ended[folder.name] = ((folder / results.REPORT).stat().st_mtime, 0)
        except (FileNotFoundError, NotADirectoryError):  # still being written, or not a run's folder
            continue
    return ended


def prune_here(runs: Path, keep: int, shown: str) -> list[str]:
    """Delete the folders in ``runs`` but the ``keep`` newest that ended and ``shown``'s; the runs deleted."""
    gone = pruned(_ended_here(runs), keep, shown)
    for run in gone:
        shutil.rmtree(runs / run, ignore_errors=True)  # another terminator of this host may be deleting it too
    return gone


def mark_s3(bucket: str, folder: str, version: int) -> None:
    """Put the empty ``.version-<version>`` in ``folder`` (a run's prefix, ending in ``/``) of ``bucket``."""
    aws.client("s3").put_object(Bucket=bucket, Key=f"{folder}{VERSION}{version}", Body=b"")


def prune_s3(bucket: str, runs: str, keep: int, shown: str) -> list[str]:
    """Delete the runs under ``runs`` (a prefix ending in ``/``) in ``bucket`` as ``prune_here`` does; the runs deleted.

    A refused call is logged (with the permission it needs) and nothing more is deleted.
    """
    s3 = aws.client("s3")
    written: dict[str, float] = {}
    versions: dict[str, int] = {}
    keys: dict[str, list[str]] = {}
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=runs):
            for item in page.get("Contents", []):
                run, _, name = item["Key"][len(runs):].partition("/")
                keys.setdefault(run, []).append(item["Key"])
                if name == results.REPORT:
                    written[run] = item["LastModified"].timestamp()
                elif name.startswith(VERSION) and name[len(VERSION):].isdigit():
                    versions[run] = max(versions.get(run, 0), int(name[len(VERSION):]))
        gone = pruned({run: (at, versions.get(run, 0)) for run, at in written.items()}, keep, shown)
        doomed = [key for run in gone for key in keys[run]]
        for at in range(0, len(doomed), BATCH):
            answer = s3.delete_objects(Bucket=bucket, Delete={
                "Objects": [{"Key": key} for key in doomed[at:at + BATCH]], "Quiet": True})
            for error in answer.get("Errors", []):
                log.warning("outputs: s3://%s/%s not deleted: %s %s (the role needs s3:DeleteObject on %s*)",
                            bucket, error.get("Key"), error.get("Code"), error.get("Message"), runs)
    except ClientError as exc:
        log.warning("outputs: old runs under s3://%s/%s not pruned: %s (the role needs s3:ListBucket on the bucket "
                    "and s3:DeleteObject on %s*; deploy/iam-policy.json)", bucket, runs, exc, runs)
        return []
    return gone
