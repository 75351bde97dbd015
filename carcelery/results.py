"""Per-image result records, and the files Instance B writes from them.

A record is plain JSON data (it travels through Celery's JSON serializer):
``image``, ``bucket``, ``key``, ``etag``, ``car``, ``car_confidence``,
``threshold``, ``labels``, ``text`` and, for an image that failed, ``error``
(the stage and the reason).

``output.txt`` has one line per car image in which text was found,
``<image>: <text lines joined by spaces>``, in natural order (1, 2, ..., 10);
``results.jsonl`` has every image's record. Both are written atomically.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable

from .recognizers import Label, TextLine, car_confidence, to_dict

OUTPUT = "output.txt"
RESULTS = "results.jsonl"


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
    """Sorts "2.jpg" before "10.jpg"."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def output_lines(records: Iterable[dict]) -> list[str]:
    lines = []
    for record in sorted(records, key=lambda r: natural_key(r["image"])):
        words = " ".join(line["text"] for line in record["text"]).strip()
        if record["car"] and words:
            lines.append(f"{record['image']}: {words}")
    return lines


def write_atomically(path: Path, text: str) -> None:
    # Readers see the old file or the new one, never half of one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the output from other readers
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_records(folder: Path) -> list[dict]:
    path = folder / RESULTS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write(folder: Path, bucket: str, records: Iterable[dict]) -> str:
    """Write a run's ``records`` of ``bucket`` to ``folder``.

    The files describe one bucket: records already there for the same bucket
    are kept unless a new record of the same image replaces them (so a task run
    twice, or an image dispatched again, leaves one result and one line, and a
    scan of new images only keeps the older lines); records of another bucket
    are dropped.

    Returns:
      The text of output.txt.
    """
    folder.mkdir(parents=True, exist_ok=True)
    merged = {r["image"]: r for r in read_records(folder) if r.get("bucket") == bucket}
    merged.update({r["image"]: r for r in records})
    ordered = sorted(merged.values(), key=lambda r: natural_key(r["image"]))
    write_atomically(folder / RESULTS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in ordered))
    text = "".join(line + "\n" for line in output_lines(ordered))
    write_atomically(folder / OUTPUT, text)
    return text
