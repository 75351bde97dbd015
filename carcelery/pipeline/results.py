"""Per-image result records, and the files Instance B writes from them.

A record is plain JSON data (it travels through Celery's JSON serializer):
``image``, ``bucket``, ``key``, ``etag``, ``car``, ``car_confidence``,
``threshold``, ``labels``, ``text`` and, for an image that failed, ``error``
(the stage and the reason).

``output.txt`` has one line per car image in which text was found,
``<image>: <text lines joined by spaces>``, in natural order (1, 2, ..., 10).
The image's key and the text come from outside and may hold any character:
both are written ``printable`` (control characters and backslashes escaped,
``carcelery.pipeline.printable``), and a ``: `` in the key is written
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
from typing import Any, Iterable, Iterator, TextIO

from ..recognizers import Label, TextLine, car_confidence, to_dict
from .printable import printable

OUTPUT = "output.txt"
RESULTS = "results.jsonl"
REPORT = "report.html"  # written by carcelery.pipeline.report
# A run's summary (the terminator's result, one DynamoDB item) names this many failures at most; results.jsonl has them all.
MAX_FAILURES = 100
# Between an image and its text in output.txt; in the image's key, written with its colon escaped.
SEPARATOR, ESCAPED_SEPARATOR = ": ", "\\x3a "


def detection(image: str, *, bucket=None, key=None, etag=None, labels: list[Label], threshold: float) -> dict:
    """The record of an image after car detection."""
    confidence = car_confidence(labels)
    return {
        "image": image, "bucket": bucket, "key": key, "etag": etag,
        "car": confidence >= threshold, "car_confidence": confidence, "threshold": threshold,
        "labels": [to_dict(label) for label in labels], "text": [],
    }


def failure(image: str, stage: str, reason: str, *, bucket=None, key=None, etag=None) -> dict:
    """The record of an image that could not be processed, with why."""
    return {"image": image, "bucket": bucket, "key": key, "etag": etag, "car": False,
            "car_confidence": 0.0, "labels": [], "text": [], "error": {"stage": stage, "reason": reason}}


def with_text(record: dict, lines: list[TextLine]) -> dict:
    return {**record, "text": [to_dict(line) for line in lines]}


def natural_key(name: str) -> list:
    """Sorts "2.jpg" before "10.jpg"; the order ``records.order`` gives the records table.

    Its numbers are runs of decimal digits (``\\d``; "²" is not one); each text
    part ends with "\\x01", as in ``records.order``, so that a key holding
    "\\x00" sorts as it does there.
    """
    return [int(part) if index % 2 else part.lower() + "\x01" for index, part in enumerate(re.split(r"(\d+)", name))]


def output_line(record: dict) -> str | None:
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


def read_records(folder: Path) -> Iterator[dict]:
    """The records of ``folder``'s results.jsonl, one line at a time (none if there is none)."""
    path = folder / RESULTS
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def write(folder: Path, records: Iterable[dict]) -> dict:
    """Write results.jsonl and output.txt of ``records``, taken one at a time, into ``folder``.

    Parameters:
      records: in the order of the files (natural order of their images).

    Returns:
      What they hold: ``images``, ``cars``, ``lines`` (of output.txt), ``failed``
      (how many) and ``failures`` (image, stage, reason of the first MAX_FAILURES).
    """
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Any] = {"images": 0, "cars": 0, "lines": 0, "failed": 0, "failures": []}
    with atomic_file(folder / RESULTS) as results, atomic_file(folder / OUTPUT) as output:
        for record in records:
            results.write(json.dumps(record, sort_keys=True) + "\n")
            counts["images"] += 1
            counts["cars"] += bool(record["car"])
            line = output_line(record)
            if line is not None:
                output.write(line + "\n")
                counts["lines"] += 1
            if "error" in record:
                counts["failed"] += 1
                if len(counts["failures"]) < MAX_FAILURES:
                    counts["failures"].append({"image": record["image"], **record["error"]})
    return counts
