"""A message held by a worker stays hidden while the worker holds it, however long its task runs.

SQS hides a received message for the visibility timeout
(CARCELERY_VISIBILITY_TIMEOUT), then delivers it again: a task still running
then, or a message still waiting in the worker's prefetch, would run twice.
In a worker, a thread of the consuming channel makes every message the worker
holds unacknowledged (prefetched, running, or waiting for its retry's time)
hidden for the whole visibility timeout again, every third of it, with one
ChangeMessageVisibilityBatch per ten messages. A message is then delivered
again only when its worker is gone (killed, or its host lost), a visibility
timeout after the worker's last extension.

A thread, not the event loop's timer: in a warm shutdown (``systemctl stop``,
the drain at scale-in) the event loop has stopped while the tasks run to
their end, and their messages must stay hidden until then. It stops with the
channel, before the messages not started are made visible again.
A message requeued (``acks``: made visible at once) in the moment an extension
is under way may stay hidden one visibility timeout more: later, not lost.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kombu.log import get_logger
from kombu.transport import SQS

from ..aws import errors

logger = get_logger(__name__)


def every(visibility_timeout: float) -> float:
    """Seconds between two extensions: a third of the visibility timeout, at least 1 s."""
    return max(1.0, visibility_timeout / 3)


class HeldVisible:
    """Channel mixin: the messages a worker holds are hidden again every third of the visibility timeout."""

    if TYPE_CHECKING:  # kombu's SQS Channel's, which this is mixed into
        hub: Any
        qos: Any
        closed: bool
        visibility_timeout: int
        canonical_queue_name: Callable[[str], str]
        sqs: Callable[..., Any]

    # Debt: overrides kombu's `Channel.basic_consume` (5.7.0; tests/test_library_debts.py).
    def basic_consume(self, queue, no_ack, callback, consumer_tag, *args, **kwargs):
        """kombu's ``basic_consume``; in a worker (a channel with an event loop), the first
        acknowledged consumer starts the thread that extends the held messages' visibility."""
        # A visibility timeout of 0 hides nothing: nothing to extend.
        if self.hub is not None and not no_ack and self.visibility_timeout and not getattr(self, "_extending", None):
            self._extending = threading.Thread(target=_extend_while_open,
                                               args=(weakref.ref(self), every(self.visibility_timeout)),
                                               name="carcelery-visibility", daemon=True)
            self._extending.start()
        return super().basic_consume(queue, no_ack, callback, consumer_tag, *args, **kwargs)

    def extend_held(self) -> int:
        """Hide every message this channel holds unacknowledged for the visibility timeout, from now.

        Returns:
          How many messages SQS extended. A message acknowledged meanwhile (its
          receipt handle no longer valid) is passed over; a failed call is logged.
        """
        # Debt: reads kombu's private `QoS._delivered` and `QoS._dirty` (5.7.0): the messages
        # delivered and not acknowledged (tests/test_library_debts.py). Copied at once: the event
        # loop's thread changes them.
        delivered, dirty = self.qos._delivered.copy(), set(self.qos._dirty)
        held: dict[tuple[str | None, str], list[str]] = defaultdict(list)
        for tag, message in delivered.items():
            info = message.delivery_info
            if tag in dirty or "sqs_message" not in info:
                continue
            queue = self.canonical_queue_name(info["routing_key"]) if "routing_key" in info else None
            held[(queue, info["sqs_queue"])].append(info["sqs_message"]["ReceiptHandle"])
        extended = 0
        for (queue, url), handles in held.items():
            for start in range(0, len(handles), SQS.SQS_MAX_MESSAGES):
                extended += self._extend(queue, url, handles[start:start + SQS.SQS_MAX_MESSAGES])
        return extended

    def _extend(self, queue: str | None, url: str, handles: list[str]) -> int:
        """One ChangeMessageVisibilityBatch for ``handles`` of queue ``url``; how many SQS extended."""
        entries = [{"Id": str(n), "ReceiptHandle": h, "VisibilityTimeout": self.visibility_timeout}
                   for n, h in enumerate(handles)]
        name = url.rsplit("/", 1)[-1]
        try:
            answer = self.sqs(queue=queue).change_message_visibility_batch(QueueUrl=url, Entries=entries)
        except Exception as exc:  # noqa: BLE001 - logged: the worker goes on; the next turn tries again
            why = errors.permanent(exc, queue=name)
            logger.warning("could not keep %d messages of queue %s hidden (%s): if their tasks outlast the "
                           "visibility timeout (%d s) they will be delivered again", len(entries), name,
                           why or f"{type(exc).__name__}: {exc}", self.visibility_timeout)
            return 0
        return len(answer.get("Successful", []))


def _extend_while_open(channel_ref: weakref.ref, pause: float) -> None:
    """The thread: extend the held messages every ``pause`` seconds until the channel closes."""
    while True:
        time.sleep(pause)
        channel = channel_ref()  # weak: this thread does not keep a channel dropped elsewhere alive
        if channel is None or channel.closed:
            return
        try:
            channel.extend_held()
        except Exception:  # a bug here must not end the thread: the next turn tries again
            logger.exception("extending the visibility of the messages held failed")
        del channel
