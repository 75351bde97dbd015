"""Where a run's outputs go: a folder per run, the latest one easy to find, and S3 if asked.

    CARCELERY_OUTPUT_DIR/
      runs/<run id>/output.txt, results.jsonl, report.html
      latest -> runs/<run id>                  (the run that ended last)
      output.txt, results.jsonl, report.html -> latest/...

With CARCELERY_OUTPUT_URI=s3://bucket/prefix the three files are also uploaded
to ``<prefix>runs/<run id>/`` and ``<prefix>latest/``, where every host and
user can read them (the folder is on whichever Instance B host ran the terminator).
"""

from __future__ import annotations

import mimetypes
import os
import re
import uuid
from pathlib import Path

from .. import aws
from . import costs, records, results, images

RUNS, LATEST = "runs", "latest"
FILES = (results.OUTPUT, results.RESULTS, results.REPORT)


def _link(path: Path, target: Path) -> None:
    """Make ``path`` a symbolic link to ``target``, in one step (readers never find it missing)."""
    # A name of its own per call: two terminators may link at once, in two processes or in two threads of one.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    os.symlink(target, temporary)
    os.replace(temporary, path)


def _upload(folder: Path, uri: str, run_id: str) -> str:
    """Upload ``folder``'s files to ``uri`` (s3://bucket/prefix), the run's and the latest; the run's URI."""
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    s3 = aws.client("s3")
    for name in FILES:
        kind, body = mimetypes.guess_type(name)[0] or "text/plain", (folder / name).read_bytes()
        for where in (f"{RUNS}/{run_id}", LATEST):
            # One PutObject each (the files are of bounded size): its ClientError as is, where upload_file's
            # transfer manager would wrap it in an S3UploadFailedError.
            s3.put_object(Bucket=bucket, Key=f"{prefix}{where}/{name}", Body=body, ContentType=kind)
    return f"s3://{bucket}/{prefix}{RUNS}/{run_id}/"


def write(run: dict, root: Path, uri: str = "") -> dict:
    """Write run ``run``'s files from the records table into ``root`` (and to ``uri``); the run's summary.

    The files describe the bucket (prefix) as the records table knows it, this
    run's records and earlier ones'; the summary's ``calls`` (per API,
    ``costs.count``) are those of this run's records only.

    Raises:
      ValueError: the run's id is not one the dispatcher makes (it names a folder).
      botocore.exceptions.ClientError: the records table or the S3 bucket of ``uri`` is not reachable.
    """
    if not re.fullmatch(r"[0-9a-f]{12}", run["id"]):
        raise ValueError(f"run id {run['id']!r} is not 12 hex digits; runs are made by python -m carcelery.dispatch")
    folder = root / RUNS / run["id"]
    calls = costs.calls()

    def bucket_records():
        # The files hold every record of the bucket; the calls counted are this run's.
        for run_id, record in records.with_runs(run["bucket"], run.get("prefix", "")):
            if run_id == run["id"]:
                costs.count(calls, record)
            yield record

    counts = results.write(folder, bucket_records())
    # Imported here: the dispatcher imports the tasks for their names, and the
    # report's imaging libraries would add a seventh of a second to its start.
    from . import report

    page = report.write(folder, run["id"], results.read_records(folder), counts,
                        read=lambda r: images.read(r["bucket"], r["key"]))
    _link(root / LATEST, Path(RUNS) / run["id"])
    for name in FILES:
        if not (root / name).is_symlink():
            _link(root / name, Path(LATEST) / name)
    return {
        "run": run["id"], "bucket": run["bucket"], "prefix": run.get("prefix", ""),
        "images": counts["images"], "cars": counts["cars"], "lines": counts["lines"],
        "failed": counts["failures"], "failed_count": counts["failed"], "calls": calls,
        "output_dir": str(folder.resolve()), "report": str(page.resolve()),
        "output_uri": _upload(folder, uri, run["id"]) if uri else None,
    }
