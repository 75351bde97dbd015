"""Which run's files ``latest`` shows, here and at CARCELERY_OUTPUT_URI: a run's, only if it is newer.

    CARCELERY_OUTPUT_DIR/
      runs/<run id>/output.txt, results.jsonl, report.html
      latest -> runs/<run id>                  (the newest run that ended here)
      output.txt, results.jsonl, report.html -> latest/...
      index/shown.json                         epoch and version of the run ``latest`` shows

    <CARCELERY_OUTPUT_URI>
      runs/<run id>/...                        every run's files (with its ``.version-<n>``, ``retention``)
      latest/...                               copies of the newest run's
      latest.json                              epoch, version and id of that run

A run's version is the index's manifest's that it made (``index``): a
terminator that ends after a later run's (its report took longer) leaves
``latest`` to that run, here (shown.json, under a file lock) and in S3
(latest.json, replaced only if unchanged: ``conditional``). Two hosts may
copy into ``latest/`` at once: each copies the run latest.json names, until it
names the run it copied (``_settle``). Where a run is made
``latest``, the old runs' folders there are pruned (``retention``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mimetypes
import os
import uuid
from pathlib import Path
from typing import Iterator

from botocore.exceptions import ClientError

from .. import aws
from ..aws.errors import Transient, error_code
from ..settings import settings
from . import conditional, results, retention
from .index import INDEX

RUNS, LATEST = "runs", "latest"
FILES = (results.OUTPUT, results.RESULTS, results.REPORT)
SHOWN, LATEST_JSON = Path(INDEX) / "shown.json", "latest.json"  # SHOWN: beside the copies of the index
ATTEMPTS = 20  # tries against other hosts' runs before the terminator is retried (Transient)


def _link(path: Path, target: Path) -> None:
    """Make ``path`` a symbolic link to ``target``, in one step (readers never find it missing)."""
    # A name of its own per call: two terminators may link at once, in two processes or in two threads of one.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    os.symlink(target, temporary)
    os.replace(temporary, path)


def _upload(folder: Path, bucket: str, under: str) -> None:
    """Upload ``folder``'s files to ``under`` (a prefix ending in ``/``) of ``bucket``."""
    s3 = aws.client("s3")
    for name in FILES:
        kind, body = mimetypes.guess_type(name)[0] or "text/plain", (folder / name).read_bytes()
        # One PutObject each (the files are of bounded size): its ClientError as is, where upload_file's
        # transfer manager would wrap it in an S3UploadFailedError.
        s3.put_object(Bucket=bucket, Key=f"{under}{name}", Body=body, ContentType=kind)


@contextlib.contextmanager
def _shown_here(root: Path) -> Iterator[dict]:
    """``root``'s index/shown.json ({"epoch", "version"}), this process's alone until the block ends; saved then."""
    path = root / SHOWN
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        held = json.loads(path.read_text()) if path.exists() else {"epoch": "", "version": 0}
        yield held
        results.write_atomically(path, json.dumps(held))


def _newer(held: dict, epoch: str, version: int) -> bool:
    """Whether run ``version`` of ``epoch`` is newer than ``held``'s (another epoch: a new store, whose runs are)."""
    return held["epoch"] != epoch or version > held["version"]


def _claim(bucket: str, key: str, epoch: str, version: int, run_id: str) -> bool:
    """Whether run ``run_id`` is newer than the one latest.json (``key``) names; if so, it names this one now.

    Raises:
      aws.errors.Transient: other runs replaced latest.json ATTEMPTS times in a row.
    """
    for _ in range(ATTEMPTS):
        found = conditional.get(bucket, key)
        if found and not _newer(found[0], epoch, version):
            return False
        if conditional.put_if(bucket, key, {"epoch": epoch, "version": version, "run": run_id}, found and found[1]):
            return True
    raise Transient(f"s3://{bucket}/{key} was replaced by other runs {ATTEMPTS} times while this one wrote")


def _settle(bucket: str, prefix: str, run_id: str) -> None:
    """Copy the files of the run latest.json names into ``latest/`` (in S3, no upload), again while it names
    another run than the one copied last (``run_id``): two hosts may copy at once, the later run's stay."""
    s3 = aws.client("s3")
    for _ in range(ATTEMPTS):
        found = conditional.get(bucket, f"{prefix}{LATEST_JSON}")
        if found is None or found[0]["run"] == run_id:
            return
        run_id = found[0]["run"]
        try:
            for name in FILES:
                s3.copy_object(Bucket=bucket, Key=f"{prefix}{LATEST}/{name}",
                               CopySource={"Bucket": bucket, "Key": f"{prefix}{RUNS}/{run_id}/{name}"})
        except ClientError as exc:  # pruned by a later run's terminator: latest.json names that one now
            if error_code(exc) not in ("NoSuchKey", "404"):
                raise


def publish(root: Path, run_id: str, epoch: str, version: int, uri: str) -> str | None:
    """Make ``latest`` show run ``run_id`` (``version`` of ``epoch``), here and at ``uri``, unless a later run's is there.

    Its own files stay in its folder and are uploaded to ``uri``'s ``runs/<run id>/`` whatever ``latest`` shows.

    Returns:
      Where at ``uri`` the run's files are (None without ``uri``).
    """
    with _shown_here(root) as held:
        here = _newer(held, epoch, version)
        if here:
            held.update(epoch=epoch, version=version)
            _link(root / LATEST, Path(RUNS) / run_id)
            for name in FILES:
                if not (root / name).is_symlink():
                    _link(root / name, Path(LATEST) / name)
    there = False
    if uri:
        bucket, prefix = aws.split_uri(uri)
        retention.mark_s3(bucket, f"{prefix}{RUNS}/{run_id}/", version)
        _upload(root / RUNS / run_id, bucket, f"{prefix}{RUNS}/{run_id}/")
        there = _claim(bucket, f"{prefix}{LATEST_JSON}", epoch, version, run_id)
        if there:
            _settle(bucket, prefix, "")
    # Pruned last, where this run is latest: the run latest shows is this one.
    if here:
        retention.prune_here(root / RUNS, settings.keep_runs, run_id)
    if there:
        retention.prune_s3(bucket, f"{prefix}{RUNS}/", settings.keep_runs, run_id)
    return f"{uri}{RUNS}/{run_id}/" if uri else None
