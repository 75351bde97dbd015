"""Per-image result records, and the files Instance B writes from them.

A record (``model.Record``) is plain JSON data (it travels through Celery's
JSON serializer): ``image``, ``bucket``, ``key``, ``etag``, ``status`` (done,
failed, pending), ``car`` (the detection's decision; null if none was made),
``car_confidence``, ``threshold``, ``labels``, ``text`` and, for an image that
failed, ``error`` (the stage and the reason). ``detection``, ``with_text``,
``failure`` and ``pending`` make them.

output.txt`` has one line per car image in which text was found,
``<image>: <text lines joined by spaces>``, in natural order (1, 2, ..., 10).
The image's key and the text come from outside and may hold any character:
both are written ``printable`` (control characters and backslashes escaped,
``carcelery.printable``), and a ``: `` in the key is written
``\\x3a `` (``:`` escaped), so that a line is split at its first ``: `` and no
key or text can split a line or forge one. ``results.jsonl`` has every
image's record, exact (JSON escapes what it must). Both are written
atomically, a record at a time (any number of them).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, TextIO, cast

from .. import recognizers
from ..recognizers import TextLine, car_confidence, to_dict
from . import model
from .model import Record, Stage, Status, record as read_record
from ..printable import printable

OUTPUT = "output.txt"
RESULTS = "results.jsonl"
REPORT = "report.html"  # written by carcelery.pipeline.report
# A run's summary (the terminator's result, one DynamoDB item) names this many failures at most; results.jsonl has them all.
MAX_FAILURES = 100
# Between an image and its text in output.txt; in the image's key, written with its colon escaped.
SEPARATOR, ESCAPED_SEPARATOR = ": ", "\\x3a "


def detection(image: str, *, bucket: str = "", key: str | None = None, etag: str | None = None,
              labels: list[recognizers.Label], threshold: float) -> Record:
    """The record of an image after car detection (``key``: ``image`` by default)."""
    confidence = car_confidence(labels)
    return {
        "image": image, "bucket": bucket, "key": image if key is None else key, "etag": etag, "status": Status.DONE,
        "car": confidence >= threshold, "car_confidence": confidence, "threshold": threshold,
        "labels": [cast(model.Label, to_dict(label)) for label in labels], "text": [],
    }


def failure(image: str, stage: Stage, reason: str, *, bucket: str = "", key: str | None = None,
            etag: str | None = None, detected: Record | None = None) -> Record:
    """The record of an image that could not be processed, with why (``key``: ``image`` by default).

    Parameters:
      detected: the image's detection, if it was made (it failed after: at ``text``): its decision is kept.
    """
    found: Record = {"image": image, "bucket": bucket, "key": image if key is None else key, "etag": etag, "status": Status.FAILED,
                     "car": None, "car_confidence": 0.0, "labels": [], "text": [],
                     "error": {"stage": stage, "reason": reason}}
    if detected is not None and detected.get("car") is not None:
        found["car"], found["car_confidence"] = detected["car"], detected["car_confidence"]
        found["labels"] = detected["labels"]
        if "threshold" in detected:
            found["threshold"] = detected["threshold"]
    return found


def pending(image: str, *, bucket: str, key: str, etag: str | None) -> Record:
    """The record of an image sent and not yet recognized."""
    return {"image": image, "bucket": bucket, "key": key, "etag": etag, "status": Status.PENDING,
            "car": None, "car_confidence": 0.0, "labels": [], "text": []}


def with_text(record: Record, lines: list[TextLine]) -> Record:
    return {**record, "status": Status.DONE, "text": [cast(model.Line, to_dict(line)) for line in lines]}


def natural_key(name: str) -> list:
    """Sorts "2.jpg" before "10.jpg"; the order ``records.order`` gives the records table.

    Its numbers are runs of decimal digits (``\\d``; "²" is not one); each text
    part ends with "\\x01", as in ``records.order``, so that a key holding
    "\\x00" sorts as it does there.
    """
    return [int(part) if index % 2 else part.lower() + "\x01" for index, part in enumerate(re.split(r"(\d+)", name))]


def output_line(record: Mapping[str, Any]) -> str | None:
    """The record's line of output.txt; None unless it is a car image with text.

    Its image and text are escaped (the module's docstring): the line holds no
    line break, no control character, and no ``: `` before the separator.
    """
    words = " ".join(line["text"] for line in record["text"]).strip()
    if not (record["car"] and words):
        return None
    return f"{printable(record['image']).replace(SEPARATOR, ESCAPED_SEPARATOR)}{SEPARATOR}{printable(words)}"


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[TextIO]:
    """A file to write ``path``'s text into, put in its place at the end; readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the output from other readers
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_atomically(path: Path, text: str) -> None:
    with atomic_file(path) as handle:
        handle.write(text)


def read_records(folder: Path) -> Iterator[model.Stored]:
    """The records of ``folder``'s results.jsonl, one line at a time (none if there is none)."""
    path = folder / RESULTS
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield cast(model.Stored, read_record(json.loads(line)))


def write(folder: Path, records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Write results.jsonl and output.txt of ``records``, taken one at a time, into ``folder``.

    Parameters:
      records: in the order of the files (natural order of their images).

    Returns:
      What they hold: ``images``, ``cars``, ``lines`` (of output.txt), ``failed``
      (how many), ``failures`` (image, stage, reason of the first MAX_FAILURES) and ``pending``
      (how many have no result yet: another run's, still going, or of a task that could not store one).
    """
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Any] = {"images": 0, "cars": 0, "lines": 0, "failed": 0, "pending": 0, "failures": []}
    with atomic_file(folder / RESULTS) as results, atomic_file(folder / OUTPUT) as output:
        for given in records:
            record = read_record(given)
            results.write(json.dumps(record, sort_keys=True) + "\n")
            counts["images"] += 1
            counts["cars"] += bool(record["car"])
            line = output_line(record)
            if line is not None:
                output.write(line + "\n")
                counts["lines"] += 1
            counts["pending"] += record["status"] == Status.PENDING
            if record["status"] == Status.FAILED:
                counts["failed"] += 1
                if len(counts["failures"]) < MAX_FAILURES:
                    counts["failures"].append({"image": record["image"], **record["error"]})
    return counts
