"""Where a run's outputs go: a folder per run, the latest one easy to find, and S3 if asked.

    CARCELERY_OUTPUT_DIR/
      runs/<run id>/output.txt, results.jsonl, report.html
      latest -> runs/<run id>                  (the newest run that ended)
      output.txt, results.jsonl, report.html -> latest/...
      index/                                   this host's copy of the outputs' index (``index``)

With CARCELERY_OUTPUT_URI=s3://bucket/prefix the three files are also uploaded
to ``<prefix>runs/<run id>/`` and ``<prefix>latest/``, where every host and
user can read them, and the outputs' index is kept under ``<prefix>index/``,
where every Instance B host continues it. ``latest`` and ``<prefix>latest/``
only move forward: a terminator that ends after a later run's leaves them to
that run (``latest``).

The files are made through the index: a run of S3 events (one that names its
keys) reads its own records once, puts them in the index, and its report
shows them; another run rebuilds the index from the records table. A run of
events every second would leave a folder a second: the terminator that makes
its run ``latest`` deletes the folders of all but the CARCELERY_KEEP_RUNS
newest runs that ended, here and under ``<prefix>runs/`` (``retention``).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Iterator

from . import costs, images, index, latest, records
from .latest import FILES, LATEST, RUNS
from .model import Run

__all__ = ["FILES", "LATEST", "RUNS", "write"]
log = logging.getLogger(__name__)


def write(run: Run, root: Path, uri: str = "") -> dict:
    """Write run ``run``'s files from the records table into ``root`` (and to ``uri``); the run's summary.

    Raises:
      ValueError: the run's id is not one the dispatcher makes (it names a folder).
      ConfigError: on AWS without ``uri`` (the index is kept there).
      botocore.exceptions.ClientError: the records table or the S3 bucket of ``uri`` is not reachable.
      aws.errors.Transient: other hosts' runs kept replacing the index while this one wrote.
    """
    # Imported here: the dispatcher imports the tasks for their names, and the
    # report's imaging libraries would add a seventh of a second to its start.
    from . import report

    run_id, bucket, prefix, keys = run["id"], run["bucket"], run.get("prefix", ""), run.get("keys")
    if not re.fullmatch(r"[0-9a-f]{12}", run_id):
        raise ValueError(f"run id {run_id!r} is not 12 hex digits; runs are made by python -m carcelery.dispatch")
    folder = root / RUNS / run_id
    where = index.location(bucket, prefix, uri)
    calls = costs.calls()
    shown: list[dict] = []  # the report's records, read once: a run of events' own, or the bucket's first ones

    def change(copy: Path, manifest: index.Manifest) -> list[dict]:
        """The segments of ``manifest`` with the run's records, read now (after the manifest)."""
        calls.update(costs.calls())
        shown.clear()
        if keys is not None and manifest.etag:
            changed = records.get(bucket, keys)
            shown.extend(record for order in sorted(changed) if (record := changed[order]) is not None)
            for record in shown:
                costs.count(calls, record)
            return index.update(copy, where, manifest.segments, changed)
        wanted = None if keys is None else {records.order(key) for key in keys}

        def counted(pairs: Iterator[tuple[str, dict]]) -> Iterator[dict]:
            # (run id, record): the records; this run's calls counted, the report's records kept.
            for writer, record in pairs:
                if writer == run_id:
                    costs.count(calls, record)
                if (records.order(record["key"]) in wanted) if wanted is not None else len(shown) < report.MAX_FIGURES:
                    shown.append(record)
                yield record
        return index.rebuild(copy, where, counted(records.with_runs(bucket, prefix)))

    started = time.monotonic()
    made, counts = index.run(index.folder(root, bucket, prefix), where, change, folder)
    indexed = time.monotonic()
    page = report.write(folder, run_id, shown, counts, read=lambda r: images.read(r["bucket"], r["key"]))
    reported = time.monotonic()
    output_uri = latest.publish(root, run_id, made.epoch, made.version, uri)
    log.info("run=%s outputs: index version %d in %.2f s, report %.2f s, published %.2f s", run_id, made.version,
             indexed - started, reported - indexed, time.monotonic() - reported)
    return {
        "run": run_id, "bucket": bucket, "prefix": prefix,
        "images": counts["images"], "cars": counts["cars"], "lines": counts["lines"],
        "failed": counts["failures"], "failed_count": counts["failed"], "pending": counts["pending"], "calls": calls,
        "output_dir": str(folder.resolve()), "report": str(page.resolve()),
        "output_uri": output_uri,
    }
