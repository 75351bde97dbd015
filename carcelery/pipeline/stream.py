"""Runs from a stream of S3 events: a batch of events becomes one run, as a dispatch would send it.

Instance A's worker gathers the events of its events queue for a short window
(``carcelery.notification_consumer``) and hands the batch to ``apply``, which decides, per
object, what is left to do:

- of one key's events, the one with the greatest ``sequencer`` counts (S3's
  order); one not newer than what the ledger holds for the key (the same
  event delivered twice, or an older one after a newer) is dropped, but for
  the removal the ledger marked from that very event, which is applied again
  (a retried batch sends the run that names its key);
- a key that is not an image (``images.is_image_key``) or outside
  CARCELERY_KEY_PREFIX is left alone;
- what is done with the rest is what the bucket holds now (HeadObject), not
  what the event says: S3 delivers a key's events in any order, and the ledger
  has no sequencer for what a scan dispatched. An image in the bucket whose
  ETag the ledger does not hold is sent in the run (``dispatch``, with its
  chord and ``-1`` terminator); one whose ETag it holds is dropped (a removal
  that came after the re-upload's creation among them); an image no longer
  in the bucket is removed: its record is deleted and the ledger marks it
  removed, and its line leaves the outputs when the run's terminator writes them.

A batch that leaves only removals sends the terminator alone.

With events on, the beat's scan is the backfill (``backfill``): it sends what
events missed, and removes the records of images no longer in the bucket
(removed while events were off).
"""

from __future__ import annotations

from typing import Iterator

from botocore.exceptions import ClientError

from .. import aws
from ..aws.errors import error_code
from ..settings import settings
from . import ledger, notifications, records
from .images import S3Image, is_image_key, list_images
from .sending import dispatch


def _current(event: dict) -> S3Image | None:
    """The object of an event's key as it is now in the bucket; None if it is gone."""
    try:
        head = aws.client("s3").head_object(Bucket=event["bucket"], Key=event["key"])
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey"):
            return None
        raise
    return S3Image(event["bucket"], event["key"], head["ETag"].strip('"'), head["ContentLength"], event["sequencer"])


def sort(batch: list[dict]) -> tuple[list[S3Image], list[S3Image], int]:
    """(images to send, images removed, events dropped) of ``batch`` (``notifications.parse``'s events).

    Raises:
      botocore.exceptions.ClientError: the ledger or the bucket is not reachable.
    """
    wanted = [e for e in notifications.latest(batch) if is_image_key(e["key"]) and e["key"].startswith(settings.key_prefix)]
    known = ledger.entries([S3Image(e["bucket"], e["key"], e["etag"], e["size"]) for e in wanted])
    send, removed = [], []
    for event in wanted:
        before = known.get(f"{event['bucket']}/{event['key']}", {"etag": "", "sequencer": ""})
        # The removal the ledger marked from this very event: applied again, its key in the run, for the
        # run may not have been sent (apply_events retried after a failure in dispatching).
        again = event["sequencer"] == before["sequencer"] and not before["etag"]
        if event["sequencer"] <= before["sequencer"] and not again:
            continue  # delivered before, or older than what the ledger holds
        image = _current(event)
        if image is None:
            removed.append(S3Image(event["bucket"], event["key"], "", 0, event["sequencer"]))
        elif image.etag != before["etag"]:
            send.append(image)
    return send, removed, len(batch) - len(send) - len(removed)


def apply(batch: list[dict]) -> dict:
    """Apply ``batch`` (``notifications.parse``'s events, of one bucket or more): removals, then one run per bucket.

    Raises:
      botocore.exceptions.ClientError: a table, the bucket or the queues are not reachable.

    Returns:
      ``runs`` (their ids), ``images`` (sent), ``removed`` and ``dropped`` (counts).
    """
    send, removed, dropped = sort(batch)
    remove(removed)
    runs = []
    for bucket in sorted({i.bucket for i in send + removed}):
        found = [i for i in send if i.bucket == bucket]
        keys = [i.key for i in found + removed if i.bucket == bucket]
        # force: sort() has checked the ledger already; the terminator alone when only removals came.
        runs.append(dispatch(bucket, settings.key_prefix, force=True, found=found, keys=keys)["id"])
    return {"runs": runs, "images": len(send), "removed": len(removed), "dropped": dropped}


def remove(images: list[S3Image]) -> None:
    """Delete the records of ``images``, gone from their bucket, and mark them removed in the ledger."""
    if images:
        records.delete(images)
        ledger.removed(images)


def backfill(bucket: str, prefix: str = "") -> dict:
    """The beat's scan with events on: send what is new (one listing), then remove the records of images gone.

    Returns:
      The run (``dispatch``'s), with ``removed`` (count); a second run, the terminator alone, wrote the files if any were.
    """
    listed: set[str] = set()

    def listing() -> Iterator[S3Image]:
        for image in list_images(bucket, prefix):
            listed.add(image.key)
            yield image

    run = dispatch(bucket, prefix, found=listing(), if_empty=False)
    gone = [S3Image(r["bucket"], r["key"], "", 0) for r in records.read(bucket, prefix) if r["key"] not in listed]
    remove(gone)
    if gone and not run["images"]:
        dispatch(bucket, prefix, found=[])  # the terminator alone: the files without them
    return {**run, "removed": len(gone)}
