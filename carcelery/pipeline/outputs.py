"""Where a run's outputs go: a folder per run, the latest one easy to find, and S3 if asked.

    CARCELERY_OUTPUT_DIR/
      runs/<run id>/output.txt, results.jsonl, report.html
      latest -> runs/<run id>                  (the newest run that ended)
      output.txt, results.jsonl, report.html -> latest/...

      index/                                   the records in segments (``index``)

With CARCELERY_OUTPUT_URI=s3://bucket/prefix the three files are also uploaded
to ``<prefix>runs/<run id>/`` and ``<prefix>latest/``, where every host and
user can read them (the folder is on whichever Instance B host ran the terminator).
``latest`` and ``<prefix>latest/`` only move forward: a terminator that ends
after a later run's leaves them to that run (``_publish``).

The files are made through the index: a run of S3 events (one that names its
keys) updates it with its own records, and its report shows its own images;
another run rebuilds it from the records table. A run of events every second
would leave a folder a second: the terminator that makes its run ``latest``
deletes the folders of all but the CARCELERY_KEEP_RUNS newest runs that ended,
here and under ``<prefix>runs/`` (``retention``).
"""

from __future__ import annotations

import mimetypes
import os
import re
import uuid
from pathlib import Path
from typing import Iterator

from .. import aws
from ..settings import settings
from . import costs, index, records, results, images, retention

RUNS, LATEST = "runs", "latest"
FILES = (results.OUTPUT, results.RESULTS, results.REPORT)


def _link(path: Path, target: Path) -> None:
    """Make ``path`` a symbolic link to ``target``, in one step (readers never find it missing)."""
    # A name of its own per call: two terminators may link at once, in two processes or in two threads of one.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    os.symlink(target, temporary)
    os.replace(temporary, path)


def _location(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of ``uri``, s3://bucket/prefix."""
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return bucket, prefix


def _upload(folder: Path, uri: str, where: str) -> str:
    """Upload ``folder``'s files to ``where`` under ``uri`` (s3://bucket/prefix); their URI."""
    bucket, prefix = _location(uri)
    s3 = aws.client("s3")
    for name in FILES:
        kind, body = mimetypes.guess_type(name)[0] or "text/plain", (folder / name).read_bytes()
        # One PutObject each (the files are of bounded size): its ClientError as is, where upload_file's
        # transfer manager would wrap it in an S3UploadFailedError.
        s3.put_object(Bucket=bucket, Key=f"{prefix}{where}/{name}", Body=body, ContentType=kind)
    return f"s3://{bucket}/{prefix}{where}/"


def run_records(run: dict, folder: Path) -> Iterator[dict]:
    """The records a run changed, in natural order: a run of events' own (its keys'), or all of ``folder``'s."""
    if "keys" not in run:
        return results.read_records(folder)
    now = records.get(run["bucket"], run["keys"])
    return (record for order in sorted(now) if (record := now[order]) is not None)


def _publish(held: index.Index, run: dict, root: Path, uri: str, epoch: str, version: int) -> str | None:
    """Make ``latest`` show run ``run`` (``version`` of ``epoch``), here and at ``uri``, unless a later run's is there.

    Outputs only move forward: a terminator that ends after a later run's (its
    report took longer) leaves ``latest`` to that run, here and in S3; its own
    files stay in its folder and are uploaded to ``uri``'s ``runs/<run id>/``.
    Where the run is made ``latest``, the old runs' folders there are pruned
    (``retention``): the run that is ``latest`` is this one.

    Returns:
      Where at ``uri`` the run's files are (None without ``uri``).
    """
    folder = root / RUNS / run["id"]
    newest = held.epoch == epoch and version > held.published
    if newest:
        held.published = version
        _link(root / LATEST, Path(RUNS) / run["id"])
        for name in FILES:
            if not (root / name).is_symlink():
                _link(root / name, Path(LATEST) / name)
        index.save(held)  # linked: so it stays, whatever the uploads below meet
        retention.prune_here(root / RUNS, settings.keep_runs, run["id"])
    if not uri:
        return None
    bucket, prefix = _location(uri)
    retention.mark_s3(bucket, f"{prefix}{RUNS}/{run['id']}/", version)
    uploaded = _upload(folder, uri, f"{RUNS}/{run['id']}")
    if newest and index.publish(run["bucket"], run.get("prefix", ""), epoch, version):  # no other host's later run
        _upload(folder, uri, LATEST)
        retention.prune_s3(bucket, f"{prefix}{RUNS}/", settings.keep_runs, run["id"])
    return uploaded


def write(run: dict, root: Path, uri: str = "") -> dict:
    """Write run ``run``'s files from the records table into ``root`` (and to ``uri``); the run's summary.

    Raises:
      ValueError: the run's id is not one the dispatcher makes (it names a folder).
      botocore.exceptions.ClientError: the records table or the S3 bucket of ``uri`` is not reachable.
    """
    if not re.fullmatch(r"[0-9a-f]{12}", run["id"]):
        raise ValueError(f"run id {run['id']!r} is not 12 hex digits; runs are made by python -m carcelery.dispatch")
    folder = root / RUNS / run["id"]
    bucket, prefix = run["bucket"], run.get("prefix", "")
    calls = costs.calls()

    def counted(pairs: Iterator[tuple[str, dict]]) -> Iterator[dict]:
        # (run id, record): the records, the calls counted of this run's.
        for run_id, record in pairs:
            if run_id == run["id"]:
                costs.count(calls, record)
            yield record

    epoch, version = index.claim(bucket, prefix)
    where = index.folder(root, bucket, prefix)
    with index.locked(where) as held:
        if "keys" in run and (held.epoch, held.version) == (epoch, version - 1):
            changed = records.get(bucket, run["keys"])
            for record in changed.values():
                if record is not None:
                    costs.count(calls, record)
            index.update(held, changed)
        elif held.epoch != epoch or held.version < version:
            index.rebuild(held, counted(records.with_runs(bucket, prefix)))
        else:  # a later run's rebuild holds this one's records already: its calls, counted
            for _ in counted(records.with_runs(bucket, prefix)):
                pass
        index.holds(held, epoch, version)
        counts = index.join(held, folder)
    # Imported here: the dispatcher imports the tasks for their names, and the
    # report's imaging libraries would add a seventh of a second to its start.
    from . import report

    page = report.write(folder, run["id"], run_records(run, folder), counts,
                        read=lambda r: images.read(r["bucket"], r["key"]))
    with index.locked(where) as held:  # of this host's terminators, one publishes at a time
        output_uri = _publish(held, run, root, uri, epoch, version)
    return {
        "run": run["id"], "bucket": run["bucket"], "prefix": run.get("prefix", ""),
        "images": counts["images"], "cars": counts["cars"], "lines": counts["lines"],
        "failed": counts["failures"], "failed_count": counts["failed"], "calls": calls,
        "output_dir": str(folder.resolve()), "report": str(page.resolve()),
        "output_uri": output_uri,
    }
