"""The outputs' index: a bucket's records in segments in S3, which every Instance B host reads and continues.

    <CARCELERY_OUTPUT_URI>index/<digest of the bucket and prefix>/          (``location``)
      manifest.json     epoch, version; per segment: its name, first record's order, counts, ``split``
      segments/<name>   a segment: its results.jsonl, then its output.txt (``split``: the first's bytes)

Without CARCELERY_OUTPUT_URI, on the embedded default, the location is
``s3://carcelery-outputs/index/`` in the emulator's S3 (the bucket made when
missing); on AWS a terminator needs CARCELERY_OUTPUT_URI.

A run reads the manifest (and its ETag), then the records it changes, writes
the segments it makes (each named anew: an object is never overwritten), and
replaces the manifest only if it is still the one it read (PutObject with
``If-Match``; the first with ``If-None-Match: *``). Of two terminators, on any
hosts, S3 answers 412 to the later: it reads the manifest again, reads its
records again, applies them again, and deletes the segments it made for
nothing. The records are read after the manifest, so the run that replaces a
manifest holds records at least as new as the ones it replaced: no host's
records are lost, none go back. The segments a manifest no longer names are
deleted by the run that replaced it.

A run that names its keys (a run of S3 events) reads those keys' records
alone (``records.get``) and rewrites the segments they fall in (SEGMENT records
each, split at twice that), whichever host runs it; a run of the whole bucket
(a dispatch, the backfill) and the first run of a location rebuild the index
from the bucket's records (``records.with_runs``). The cost of a run of 10
images is 10 records read and at most 10 segments rewritten, whatever the
bucket holds.

The version is the manifest's: each run that replaces it takes the next one,
and ``latest`` shows a run only if its version is above the one shown
(``latest``). A location's first manifest starts an epoch (a new emulator's S3
is a new one), in which versions count from 1.

The local copy, CARCELERY_OUTPUT_DIR/index/<digest>/, holds the segments this
host has fetched or written, a folder each (results.jsonl, output.txt): a name
never changes, so a segment is fetched once, and one no manifest names is
deleted. A run's output.txt and results.jsonl are the segments' files joined,
as bytes. Terminators of one host take turns on the copy (a file lock).
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from botocore.exceptions import ClientError

from .. import aws
from ..aws.errors import Transient, error_code
from ..settings import ConfigError, settings
from . import conditional, records, results

log = logging.getLogger(__name__)
INDEX = "index"
MANIFEST, SEGMENTS = "manifest.json", "segments/"
EMULATOR_BUCKET = "carcelery-outputs"  # the embedded default's location, without CARCELERY_OUTPUT_URI
SEGMENT = 500  # records per segment when cut; one grows to twice this before it is split
COUNTS = ("images", "cars", "lines", "failed", "pending")
ATTEMPTS = 20  # tries of a run against other hosts' runs before its terminator is retried (Transient)


class Stale(Exception):
    """A segment of the manifest read is gone: another run replaced the manifest meanwhile."""


@dataclass(frozen=True)
class Location:
    """Where an index is in S3: its bucket, and its prefix (ending in ``/``)."""

    bucket: str
    prefix: str


@dataclass
class Manifest:
    """manifest.json: which segments, in order, hold the index's records; its version within its epoch."""

    epoch: str = ""
    version: int = 0
    segments: list[dict] = field(default_factory=list)  # {"name", "first" (order), counts..., "failures", "split"}
    etag: str | None = None  # of the object read; None: there is none yet


def _digest(bucket: str, prefix: str) -> str:
    return hashlib.sha1(f"{bucket}/{prefix}".encode()).hexdigest()[:16]


def location(bucket: str, prefix: str, uri: str) -> Location:
    """Where the index of ``bucket``'s ``prefix`` is: under ``uri`` (CARCELERY_OUTPUT_URI), or the emulator's.

    Raises:
      ConfigError: on AWS without ``uri``.
    """
    if uri:
        out, under = aws.split_uri(uri)
        return Location(out, f"{under}{INDEX}/{_digest(bucket, prefix)}/")
    if settings.target != "emulator":
        raise ConfigError("the outputs' index is kept under CARCELERY_OUTPUT_URI, which is not set: set it to "
                          "s3://bucket/prefix/ (the stack's OutputLocation)")
    return Location(EMULATOR_BUCKET, f"{INDEX}/{_digest(bucket, prefix)}/")


def read(where: Location) -> Manifest:
    """The manifest of ``where`` now, with its ETag (none yet: an empty one of a new epoch)."""
    try:
        found = conditional.get(where.bucket, f"{where.prefix}{MANIFEST}")
    except ClientError as exc:
        if not (error_code(exc) == "NoSuchBucket" and where.bucket == EMULATOR_BUCKET):
            raise
        # Imported here: provision imports the pipeline's modules.
        from ..aws import provision

        provision.bucket(EMULATOR_BUCKET)
        found = None
    if found is None:
        return Manifest(uuid.uuid4().hex)
    return Manifest(found[0]["epoch"], found[0]["version"], found[0]["segments"], found[1])


def commit(where: Location, base: Manifest, segments: list[dict]) -> Manifest | None:
    """Replace ``base`` (the manifest read) with one of ``segments``, the next version; None if another run did first."""
    made = Manifest(base.epoch, base.version + 1, segments)
    held = {"epoch": made.epoch, "version": made.version, "segments": segments}
    return made if conditional.put_if(where.bucket, f"{where.prefix}{MANIFEST}", held, base.etag) else None


def run(here: Path, where: Location, change: Callable[[Path, Manifest], list[dict]], into: Path) -> tuple[Manifest, dict]:
    """Apply a run's changes to the index of ``where`` and write its files into folder ``into``.

    ``change`` (which reads the run's records and makes their segments in the
    copy) is applied to the manifest read, until its manifest is the one S3
    keeps; then the segments it replaced are deleted, and the files are the
    segments' joined. ``here``: the copy's folder, this terminator's alone meanwhile.

    Returns:
      The manifest the run made, and what the files hold (``join``).

    Raises:
      aws.errors.Transient: other runs replaced the manifest ATTEMPTS times in a row.
    """
    with locked(here) as copy:
        for _ in range(ATTEMPTS):
            base = read(where)
            try:
                fetch(copy, where, base)
                segments = change(copy, base)
            except Stale:
                continue
            made = commit(where, base, segments)
            named = {segment["name"] for segment in segments}
            if made is None:  # another run's manifest is there: this one's segments are garbage
                log.info("index: s3://%s/%s%s version %d replaced by another run first: this run's changes again",
                         where.bucket, where.prefix, MANIFEST, base.version + 1)
                discard(copy, where, sorted(named - {segment["name"] for segment in base.segments}))
                continue
            discard(copy, where, [segment["name"] for segment in base.segments if segment["name"] not in named])
            tidy(copy, made)
            return made, join(copy, made, into)
    raise Transient(f"the outputs' index at s3://{where.bucket}/{where.prefix} was replaced by other runs "
                    f"{ATTEMPTS} times while this one wrote")


def folder(root: Path, bucket: str, prefix: str) -> Path:
    """The local copy's folder of ``bucket``'s ``prefix``'s index under output folder ``root``."""
    return root / INDEX / _digest(bucket, prefix)


@contextlib.contextmanager
def locked(where: Path) -> Iterator[Path]:
    """The copy in folder ``where``, this process's alone until the block ends."""
    where.mkdir(parents=True, exist_ok=True)
    with open(where / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield where


def fetch(copy: Path, where: Location, manifest: Manifest) -> None:
    """Put the segments of ``manifest`` that ``copy`` lacks into it, from S3.

    Raises:
      Stale: one is gone (another run replaced the manifest and deleted it).
    """
    for segment in manifest.segments:
        if (copy / segment["name"]).is_dir():
            continue
        try:
            body = aws.client("s3").get_object(Bucket=where.bucket, Key=f"{where.prefix}{SEGMENTS}{segment['name']}")["Body"].read()
        except ClientError as exc:
            if error_code(exc) == "NoSuchKey":
                raise Stale(segment["name"]) from exc
            raise
        temporary = copy / f".{segment['name']}.{uuid.uuid4().hex}"
        temporary.mkdir()
        (temporary / results.RESULTS).write_bytes(body[:segment["split"]])
        (temporary / results.OUTPUT).write_bytes(body[segment["split"]:])
        os.replace(temporary, copy / segment["name"])


def _write(copy: Path, where: Location, chunk: list[tuple[str, dict]]) -> dict:
    """A new segment of ``chunk`` ((order, record), in order), in S3 and in ``copy``: its manifest entry."""
    name = uuid.uuid4().hex
    temporary = copy / f".{name}"
    counts = results.write(temporary, (record for _, record in chunk))
    jsonl, txt = (temporary / results.RESULTS).read_bytes(), (temporary / results.OUTPUT).read_bytes()
    aws.client("s3").put_object(Bucket=where.bucket, Key=f"{where.prefix}{SEGMENTS}{name}", Body=jsonl + txt)
    os.replace(temporary, copy / name)
    return {"name": name, "first": chunk[0][0], **{k: counts[k] for k in COUNTS}, "failures": counts["failures"],
            "split": len(jsonl)}


def _cut(copy: Path, where: Location, ordered: Iterable[tuple[str, dict]], size: int | None = None) -> list[dict]:
    """New segments of ``ordered`` ((order, record), in order), ``size`` (SEGMENT) records each."""
    size, made, chunk = size or SEGMENT, [], []
    for item in ordered:
        chunk.append(item)
        if len(chunk) == size:
            made.append(_write(copy, where, chunk))
            chunk = []
    if chunk:
        made.append(_write(copy, where, chunk))
    return made


def discard(copy: Path, where: Location, names: list[str]) -> None:
    """Delete segments ``names`` from S3 and from ``copy``; a deletion refused is logged (the run goes on)."""
    for name in names:
        shutil.rmtree(copy / name, ignore_errors=True)
    try:
        for at in range(0, len(names), 1000):  # DeleteObjects' most
            aws.client("s3").delete_objects(Bucket=where.bucket, Delete={"Quiet": True, "Objects": [
                {"Key": f"{where.prefix}{SEGMENTS}{name}"} for name in names[at:at + 1000]]})
    except ClientError as exc:
        log.warning("outputs: old segments of the index under s3://%s/%s not deleted: %s (the role needs "
                    "s3:DeleteObject there)", where.bucket, where.prefix, exc)


def tidy(copy: Path, manifest: Manifest) -> None:
    """Delete from ``copy`` the segments ``manifest`` does not name (other hosts' runs replaced them), and
    what a terminator that died left half-written (the copy is this one's alone meanwhile)."""
    named = {segment["name"] for segment in manifest.segments}
    for path in copy.iterdir():
        if path.is_dir() and path.name not in named:
            shutil.rmtree(path, ignore_errors=True)


def rebuild(copy: Path, where: Location, found: Iterable[dict]) -> list[dict]:
    """The segments of ``found`` (every record of the bucket, in natural order), written."""
    return _cut(copy, where, ((records.order(r["key"]), r) for r in found))


def update(copy: Path, where: Location, segments: list[dict], changes: dict[str, dict | None]) -> list[dict]:
    """``segments`` with ``changes`` (by order: the record now, or None for one removed) put in those they fall in."""
    segments, firsts = list(segments), [segment["first"] for segment in segments]
    touched: dict[int, dict[str, dict | None]] = {}
    for order, record in changes.items():
        touched.setdefault(max(0, bisect.bisect_right(firsts, order) - 1), {})[order] = record
    for at in sorted(touched, reverse=True):  # from the end: the positions before stay put
        old = segments[at:at + 1]
        held: dict[str, dict | None] = {records.order(r["key"]): r for s in old
                                        for r in results.read_records(copy / s["name"])}
        held.update(touched[at])
        kept = sorted((order, r) for order, r in held.items() if r is not None)
        segments[at:at + 1] = _cut(copy, where, kept, SEGMENT if len(kept) > 2 * SEGMENT else max(len(kept), 1))
    return segments


def join(copy: Path, manifest: Manifest, into: Path) -> dict:
    """Write results.jsonl and output.txt into folder ``into``: ``manifest``'s segments' files joined; what they hold.

    Returns:
      ``results.write``'s counts, summed over the segments.
    """
    into.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Any] = {**{k: 0 for k in COUNTS}, "failures": []}
    with results.atomic_file(into / results.RESULTS) as jsonl, results.atomic_file(into / results.OUTPUT) as txt:
        for segment in manifest.segments:
            for name, handle in ((results.RESULTS, jsonl), (results.OUTPUT, txt)):
                with open(copy / segment["name"] / name, encoding="utf-8") as part:
                    shutil.copyfileobj(part, handle)
            for k in COUNTS:
                counts[k] += segment.get(k, 0)  # a manifest written before a count existed: none
            counts["failures"] += segment["failures"][:results.MAX_FAILURES - len(counts["failures"])]
    return counts
