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


def _settle(where: index.Location, uri: str, run_id: str) -> None:
    """After run ``run_id``'s files went to ``latest/`` at ``uri``: if latest.json names a later run (whose upload
    ended first), put that run's files back there, until the run named is the one whose files are there."""
    bucket, prefix = _location(uri)
    s3 = aws.client("s3")
    for _ in range(index.ATTEMPTS):
        named = index.shown(where).run
        if named == run_id:
            return
        for name in FILES:
            s3.copy_object(Bucket=bucket, Key=f"{prefix}{LATEST}/{name}",
                           CopySource={"Bucket": bucket, "Key": f"{prefix}{RUNS}/{named}/{name}"})
        run_id = named


def _publish(copy: index.Copy, where: index.Location, made: index.Manifest, run_id: str, root: Path,
             uri: str) -> str | None:
    """Make ``latest`` show run ``run_id`` (which made manifest ``made``), here and at ``uri``, unless a later run's is there.

    Outputs only move forward: a terminator that ends after a later run's (its
    report took longer) leaves ``latest`` to that run, here and in S3; its own
    files stay in its folder and are uploaded to ``uri``'s ``runs/<run id>/``.
    Where the run is made ``latest``, the old runs' folders there are pruned
    (``retention``): the run that is ``latest`` is this one.

    Returns:
      Where at ``uri`` the run's files are (None without ``uri``).
    """
    if copy.epoch == made.epoch and made.version > copy.published:
        copy.published = made.version
        _link(root / LATEST, Path(RUNS) / run_id)
        for name in FILES:
            if not (root / name).is_symlink():
                _link(root / name, Path(LATEST) / name)
        retention.prune_here(root / RUNS, settings.keep_runs, run_id)
    if not uri:
        return None
    bucket, prefix = _location(uri)
    retention.mark_s3(bucket, f"{prefix}{RUNS}/{run_id}/", made.version)
    uploaded = _upload(root / RUNS / run_id, uri, f"{RUNS}/{run_id}")
    if index.publish(where, made.epoch, made.version, run_id):  # no other host's later run
        _upload(root / RUNS / run_id, uri, LATEST)
        _settle(where, uri, run_id)
        retention.prune_s3(bucket, f"{prefix}{RUNS}/", settings.keep_runs, run_id)
    return uploaded


def write(run: dict, root: Path, uri: str = "") -> dict:
    """Write run ``run``'s files from the records table into ``root`` (and to ``uri``); the run's summary.

    Raises:
      ValueError: the run's id is not one the dispatcher makes (it names a folder).
      ConfigError: on AWS without ``uri`` (the index is kept there).
      botocore.exceptions.ClientError: the records table or the S3 bucket of ``uri`` is not reachable.
      aws.errors.Transient: other hosts' runs kept replacing the index while this one wrote.
    """
    run_id, bucket, prefix, keys = run["id"], run["bucket"], run.get("prefix", ""), run.get("keys")
    if not re.fullmatch(r"[0-9a-f]{12}", run_id):
        raise ValueError(f"run id {run_id!r} is not 12 hex digits; runs are made by python -m carcelery.dispatch")
    folder = root / RUNS / run_id
    where = index.location(bucket, prefix, uri)
    calls = costs.calls()
    own: list[dict] = []  # a run of events': its records, read once, for its report

    def change(manifest: index.Manifest) -> list[dict]:
        """The segments of ``manifest`` with the run's records, read now (after the manifest)."""
        calls.update(costs.calls())
        own.clear()
        if keys is not None and manifest.etag:
            changed = records.get(bucket, keys)
            own.extend(record for order in sorted(changed) if (record := changed[order]) is not None)
            for record in own:
                costs.count(calls, record)
            return index.update(copy, where, manifest.segments, changed)
        wanted = {records.order(key) for key in keys or ()}

        def counted(pairs: Iterator[tuple[str, dict]]) -> Iterator[dict]:
            # (run id, record): the records; this run's calls counted, a run of events' own kept.
            for writer, record in pairs:
                if writer == run_id:
                    costs.count(calls, record)
                if wanted and records.order(record["key"]) in wanted:
                    own.append(record)
                yield record
        return index.rebuild(copy, where, counted(records.with_runs(bucket, prefix)))

    with index.locked(index.folder(root, bucket, prefix)) as copy:
        made, replaced = index.run(copy, where, change)
        index.discard(copy, where, [segment["name"] for segment in replaced])
        index.tidy(copy, made)
        counts = index.join(copy, made, folder)
    # Imported here: the dispatcher imports the tasks for their names, and the
    # report's imaging libraries would add a seventh of a second to its start.
    from . import report

    page = report.write(folder, run_id, own if keys is not None else results.read_records(folder), counts,
                        read=lambda r: images.read(r["bucket"], r["key"]))
    with index.locked(index.folder(root, bucket, prefix)) as copy:  # of this host's terminators, one publishes at a time
        output_uri = _publish(copy, where, made, run_id, root, uri)
    return {
        "run": run_id, "bucket": bucket, "prefix": prefix,
        "images": counts["images"], "cars": counts["cars"], "lines": counts["lines"],
        "failed": counts["failures"], "failed_count": counts["failed"], "calls": calls,
        "output_dir": str(folder.resolve()), "report": str(page.resolve()),
        "output_uri": output_uri,
    }
