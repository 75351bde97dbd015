"""The outputs' index: a bucket's records kept in segments on Instance B, so that a run rewrites what it touched.

    CARCELERY_OUTPUT_DIR/index/<bucket and prefix's digest>/
      index.json             store epoch, version, published; per segment: its folder, first record's order, counts
      <segment>/results.jsonl, output.txt   its records and lines (results.write), natural order

A run that names its keys (a run of S3 events) reads the current records of
those keys alone (``records.get``) and rewrites the segments they fall in
(SEGMENT records each, split at twice that); other runs (a dispatch, the
backfill) rebuild the index from the whole bucket's records (``records.read``).
The run's output.txt and results.jsonl are then the segments' files joined, as
bytes: no record is read for them. The cost of a run of 10 images is 10
records read and at most 10 segments rewritten, whatever the bucket holds.

Which runs the index holds is a version: every run's terminator takes the next
one from a counter in the ledger table (``claim``), shared by every Instance
B host. An index one version behind takes the run's keys; any other rebuilds
(another host wrote the runs between, or the store is new: its epoch
changed). A version counts within its epoch alone: a new store's counter
starts again at 1, so an index rebuilt for a new epoch takes the run's version
as it is. Terminators of one host take turns (a file lock).

Which run's files ``latest`` shows is a version too, ``published`` (the
index's, for this host's folder; the ledger item's, for CARCELERY_OUTPUT_URI):
a run's files go there only if its version is greater, so a terminator that
ends after a later run's never puts older files back.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .. import aws
from ..settings import settings
from . import ledger, records, results

INDEX = "index"
SEGMENT = 500  # records per segment when cut; one grows to twice this before it is split
COUNTS = ("images", "cars", "lines", "failed")


@dataclass
class Index:
    folder: Path
    epoch: str = ""
    version: int = 0
    published: int = 0  # of this epoch: the version of the run whose files ``latest`` shows
    segments: list[dict] = field(default_factory=list)  # {"name", "first" (order), counts..., "failures"}


def _counter(bucket: str, prefix: str) -> dict:
    """The key of ``bucket``'s ``prefix``'s item in the ledger table: its epoch, version and published."""
    return {ledger.KEY: {"S": f"outputs:{bucket}/{prefix}"}}


def claim(bucket: str, prefix: str) -> tuple[str, int]:
    """(epoch, version) of a run of ``bucket``'s ``prefix``: the next version, from the ledger table's counter.

    Raises:
      botocore.exceptions.ClientError: the ledger table is missing or not writable.
    """
    answer = aws.client("dynamodb").update_item(
        TableName=settings.ledger_table, Key=_counter(bucket, prefix),
        UpdateExpression="SET epoch = if_not_exists(epoch, :epoch) ADD version :one",
        ExpressionAttributeValues={":epoch": {"S": uuid.uuid4().hex}, ":one": {"N": "1"}}, ReturnValues="ALL_NEW")
    return answer["Attributes"]["epoch"]["S"], int(answer["Attributes"]["version"]["N"])


def publish(bucket: str, prefix: str, epoch: str, version: int) -> bool:
    """Whether run ``version`` of ``epoch`` is newer than the one in the shared ``latest``; if so, it is now that one.

    Raises:
      botocore.exceptions.ClientError: the ledger table is missing or not writable.
    """
    dynamodb = aws.client("dynamodb")
    try:
        dynamodb.update_item(
            TableName=settings.ledger_table, Key=_counter(bucket, prefix),
            UpdateExpression="SET published = :version",
            # Another epoch is another store (the counter made again): its runs publish there, not in this one.
            ConditionExpression="epoch = :epoch AND (attribute_not_exists(published) OR published < :version)",
            ExpressionAttributeValues={":epoch": {"S": epoch}, ":version": {"N": str(version)}})
    except dynamodb.exceptions.ConditionalCheckFailedException:
        return False
    return True


def folder(root: Path, bucket: str, prefix: str) -> Path:
    return root / INDEX / hashlib.sha1(f"{bucket}/{prefix}".encode()).hexdigest()[:16]


@contextlib.contextmanager
def locked(where: Path) -> Iterator[Index]:
    """The index in folder ``where``, this process's alone until the block ends; saved if the block ends well."""
    where.mkdir(parents=True, exist_ok=True)
    with open(where / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = where / "index.json"
        held = json.loads(path.read_text()) if path.exists() else {}
        index = Index(where, held.get("epoch", ""), held.get("version", 0), held.get("published", 0),
                      held.get("segments", []))
        yield index
        save(index)


def save(index: Index) -> None:
    """Write ``index`` to its folder (``locked`` does at the end of its block)."""
    results.write_atomically(index.folder / "index.json", json.dumps(
        {"epoch": index.epoch, "version": index.version, "published": index.published, "segments": index.segments}))


def _write(index: Index, chunk: list[tuple[str, dict]]) -> dict:
    """A new segment of ``chunk`` ((order, record), in order): its index entry."""
    name = uuid.uuid4().hex[:12]
    counts = results.write(index.folder / name, (record for _, record in chunk))
    return {"name": name, "first": chunk[0][0], **{k: counts[k] for k in COUNTS}, "failures": counts["failures"]}


def _cut(index: Index, ordered: Iterable[tuple[str, dict]], size: int | None = None) -> list[dict]:
    """New segments of ``ordered`` ((order, record), in order), ``size`` (SEGMENT) records each."""
    size, made, chunk = size or SEGMENT, [], []
    for item in ordered:
        chunk.append(item)
        if len(chunk) == size:
            made.append(_write(index, chunk))
            chunk = []
    if chunk:
        made.append(_write(index, chunk))
    return made


def _drop(index: Index, segments: list[dict]) -> None:
    for segment in segments:
        shutil.rmtree(index.folder / segment["name"], ignore_errors=True)


def rebuild(index: Index, found: Iterable[dict]) -> None:
    """Make ``index`` hold ``found`` (every record of its bucket, in natural order), a segment at a time."""
    old = index.segments
    index.segments = _cut(index, ((records.order(r["key"]), r) for r in found))
    _drop(index, old)


def update(index: Index, changes: dict[str, dict | None]) -> None:
    """Put ``changes`` (by order: the record now, or None for a record removed) into the segments they fall in."""
    firsts = [segment["first"] for segment in index.segments]
    touched: dict[int, dict[str, dict | None]] = {}
    for order, record in changes.items():
        touched.setdefault(max(0, bisect.bisect_right(firsts, order) - 1), {})[order] = record
    for at in sorted(touched, reverse=True):  # from the end: the positions before stay put
        old = index.segments[at:at + 1]
        held: dict[str, dict | None] = {records.order(r["key"]): r for s in old for r in results.read_records(index.folder / s["name"])}
        held.update(touched[at])
        kept = sorted((order, r) for order, r in held.items() if r is not None)
        index.segments[at:at + 1] = _cut(index, kept, SEGMENT if len(kept) > 2 * SEGMENT else max(len(kept), 1))
        _drop(index, old)


def holds(index: Index, epoch: str, version: int) -> None:
    """Make ``index``'s version that of run ``version`` of ``epoch``, whose records it holds now."""
    if index.epoch != epoch:  # another store: its versions start again, so neither the held one nor latest's counts
        index.epoch, index.version, index.published = epoch, version, 0
    else:  # a later run's rebuild may be in it already
        index.version = max(index.version, version)


def join(index: Index, into: Path) -> dict:
    """Write results.jsonl and output.txt into folder ``into``: the segments' files joined; what they hold.

    Returns:
      ``results.write``'s counts, summed over the segments.
    """
    into.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Any] = {**{k: 0 for k in COUNTS}, "failures": []}
    with results.atomic_file(into / results.RESULTS) as jsonl, results.atomic_file(into / results.OUTPUT) as txt:
        for segment in index.segments:
            for name, handle in ((results.RESULTS, jsonl), (results.OUTPUT, txt)):
                with open(index.folder / segment["name"] / name, encoding="utf-8") as part:
                    shutil.copyfileobj(part, handle)
            for k in COUNTS:
                counts[k] += segment[k]
            counts["failures"] += segment["failures"][:results.MAX_FAILURES - len(counts["failures"])]
    return counts
