"""A run sent: the bucket's images listed, checked against the ledger, recorded as pending, sent in one chord.

Per image, ``detect_car`` (sent ten per SQS request), which hands a car image on to ``recognize_text``; the chord's
callback is the ``-1`` terminator, delivered to Instance B's queue, and
``watch_run`` ends the run if its parts stop coming (CARCELERY_RUN_DEADLINE).
Each image gets a pending record in the records table before its task is
sent. Images dispatched before with the same ETag are skipped unless ``force``.
The command, ``python -m carcelery.dispatch``, uploads, sends with this and waits.

The bucket is listed, checked against the ledger, recorded as pending and sent
CHUNK images at a time, so the dispatcher's memory does not grow with the
bucket.

**Why not Celery's ``chord``.** Its header may be a generator (``group._apply_tasks``
looks one task ahead and stores the chord's size before the last), but Celery
keeps every part: ``group._freeze_group_tasks`` caches each frozen signature
(``regen``), and ``group.apply_async`` lists every part's AsyncResult, with a
ready barrier on each: memory grows with the bucket (a run is of any size, a
bucket's listing streamed). And a run has steps a header cannot order with its
sends: records pending before a chunk is sent, the ledger written once its
batches are flushed, ``watch_run`` before the first part, the skipped counts
before the last. So the parts are sent as Celery's chord sends them, one by one:
the same message options (``group_id``, ``group_index``, ``chord``: the body),
the chord's size stored before the last part (``backend.set_chord_size``); the
result backend (``carcelery.backend``) counts each part once and sends the body,
never storing the group. What this relies on of Celery is rows of
``tests/test_library_debts.py``.
"""

from __future__ import annotations

import collections
import itertools
import uuid
from typing import Iterable, Iterator, NotRequired, TextIO

from celery.result import AsyncResult

from ..app import app
from ..transport import batched_sends
from ..settings import settings
from . import images, index, ledger, records, runs, store
from .images import S3Image
from .model import Ref, Run
from .progress import Progress

# Images listed, checked against the ledger, recorded as pending and sent at a
# time: the dispatcher holds two chunks, whatever the bucket's size.
CHUNK = 1000


class Dispatched(Run):
    """A run as its dispatcher sent it (``dispatch``'s answer); the terminator gets its ``Run`` fields."""
    images: int
    skipped: int
    skipped_by_reason: collections.Counter[str]
    result: NotRequired[AsyncResult | None]


def _task(name: str, *args, **options):
    # By name: carcelery.tasks imports this module (the beat's scans dispatch).
    return app.signature(f"carcelery.tasks.{name}", args=args, **options)


def dispatch(bucket: str, prefix: str = "", force: bool = False, stream: TextIO | None = None,
             if_empty: bool = True, found: Iterable[S3Image] | None = None, keys: list[str] | None = None) -> Dispatched:
    """List ``bucket`` under ``prefix`` and send the run.

    Parameters:
      bucket, prefix: where the images are.
      force: send images already dispatched with the same ETag too.
      found: these images instead of the bucket's listing (those S3 events announced).
      keys: the keys whose records the run changes (``found``'s, and those removed): the terminator
        then updates the outputs with them alone (``pipeline.index``); None: a run of the whole bucket.
      stream: where to show progress while listing and sending (None: nowhere).
      if_empty: with nothing to recognize, send the terminator alone (it writes
        the files again); otherwise send nothing (the beat's scans).

    Raises:
      settings.ConfigError: on AWS without CARCELERY_OUTPUT_URI (the outputs' index is kept there).
      botocore.exceptions.ClientError: the bucket or the ledger is missing or not reachable
        (``errors.sort`` names which, and the fix); nothing has been sent then, unless
        it was the ledger's write, after sending: the next scan sends those images again.
      kombu.exceptions.ChannelError: SQS refused messages; the images are not recorded
        as dispatched, so the next scan sends them again.

    Returns:
      The run: ``id``, ``bucket``, ``prefix``, ``images`` (count sent), ``skipped``
      (already dispatched), ``skipped_by_reason`` (objects the listing passed over, by
      reason: ``images.skip_reason``) and ``result`` (the terminator's AsyncResult; None
      if nothing was sent).
    """
    # On AWS without CARCELERY_OUTPUT_URI the terminator would have nowhere to keep the outputs' index:
    # its ConfigError now, before anything is sent.
    index.location(bucket, prefix, settings.output_uri)
    run: Dispatched = {"id": uuid.uuid4().hex[:12], "bucket": bucket, "prefix": prefix, "images": 0, "skipped": 0,
                       "skipped_by_reason": collections.Counter()}
    ended: Run = {"id": run["id"], "bucket": bucket, "prefix": prefix}
    if keys is not None:
        ended["keys"] = keys
    # Immutable: the terminator reads the records from the store, not the parts' results.
    body = _task("terminate", ended, immutable=True)
    terminator, group_id = body.freeze(uuid.uuid4().hex), uuid.uuid4().hex
    listing = Progress("listed", stream=stream) if stream else None
    sending, held = None, None

    def send(images: list[S3Image], last: S3Image | None = None) -> None:
        """Send ``images`` and then, the chord's size stored first, its ``last`` image."""
        def one(image: S3Image) -> None:
            ref: Ref = {"bucket": image.bucket, "key": image.key, "etag": image.etag, "run": run["id"]}
            _task("detect_car", ref).apply_async(group_id=group_id, group_index=run["images"], chord=body)
            run["images"] += 1
            if sending:
                sending.update(run["images"])

        if not run["images"]:
            # Before the first part: whoever dies, dispatcher or worker, the run ends (carcelery.pipeline.runs).
            _task("watch_run", ended, group_id, terminator.id).apply_async(**runs.later())
        with batched_sends():
            for image in images:
                one(image)
            if last:
                # Before the last part is sent: the parts remaining reach 0 with it, and the terminator
                # reads what the listing, over by now, passed over.
                store.note_skipped(run["id"], run["skipped_by_reason"])
                app.backend.set_chord_size(group_id, run["images"] + 1)
                one(last)
        # Sent (the batches flushed): recorded, so that a failed send leaves them to the next scan.
        ledger.record(images + ([last] if last else []), run["id"])

    for chunk, final in _chunks(images.list_images(bucket, prefix, run["skipped_by_reason"]) if found is None else found):
        if listing:
            listing.update(listing.done + len(chunk))
        todo = ledger.new(chunk, force)
        run["skipped"] += len(chunk) - len(todo)
        if not todo:
            continue
        if stream and sending is None:
            sending = Progress("sent", total=len(todo) if final else None, stream=stream)
        records.put_pending(todo, run["id"])
        # The last image waits until it is known to be the last one.
        send(([held] if held else []) + todo[:-1], last=todo[-1] if final else None)
        held = None if final else todo[-1]
    if held:
        send([], last=held)
    if listing:
        listing.close()
    if sending:
        sending.close()
    if run["images"]:
        run["result"] = app.AsyncResult(terminator.id, parent=app.GroupResult(group_id, []))
    elif if_empty:
        store.note_skipped(run["id"], run["skipped_by_reason"])
        run["result"] = body.delay()  # nothing to recognize: the terminator alone writes the files again
    else:
        run["result"] = None
    return run


def _chunks(images: Iterable[S3Image]) -> Iterator[tuple[list[S3Image], bool]]:
    """``images`` CHUNK at a time, each with whether it is the last one (an empty one if there are none)."""
    images = iter(images)
    chunk = list(itertools.islice(images, CHUNK))
    while True:
        following = list(itertools.islice(images, CHUNK))
        yield chunk, not following
        if not following:
            return
        chunk = following
