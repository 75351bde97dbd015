"""Acknowledgements that save SQS requests, rejects that keep a message's receive count or dead-letter it.

In a worker (a channel with an event loop), the messages of done tasks are
deleted with one DeleteMessageBatch for those acknowledged within ACK_DELAY
seconds of each other (ten at most), instead of one DeleteMessage each. A
worker killed within that delay leaves them to be delivered again, as SQS does
for any message not deleted: tasks are idempotent and their chord parts count
once. A worker stopped warm deletes, as its channel closes, the messages of the
tasks it finished, those acknowledged after its event loop stopped included.
A message rejected to be requeued, or left unacknowledged when the channel
closes (prefetched, not started), is made visible again, not copied.

A delete that fails is sorted as kombu's ``basic_ack`` sorts it: refused
(``AccessDenied``, or any permanent error of the call) raises, kombu's
``AccessDeniedQueueException`` for a denial, from the event loop as kombu's
would, so the worker stops with one line naming the call, the queue, the
missing permission and the fix, instead of running every task again until it
is dead-lettered. Entries SQS failed on its side (``SenderFault`` false) are
tried once more; entries it refuses (a receipt handle no longer valid) are
forgotten, as kombu forgets them, with one line each batch.
"""

from __future__ import annotations

import threading

from kombu.log import get_logger
from kombu.transport import SQS
from kombu.utils.objects import cached_property

from ..aws import errors
from .mixin import Mixin

logger = get_logger(__name__)

# Seconds a worker gathers acknowledgements before deleting their messages: with
# tasks of a few tenths of a second, 0.2 s gathered 2.4 per request, 1 s 4 to 5.
ACK_DELAY = 1.0


class GatheredAcks(Mixin):
    """Channel mixin: gathered deletes of acknowledged messages; requeue by visibility."""

    @cached_property
    def _acked(self) -> dict[tuple[str | None, str], list[str]]:
        return {}  # (queue, queue URL): receipt handles of acknowledged messages, not yet deleted

    @cached_property
    def _acked_lock(self) -> threading.Lock:
        return threading.Lock()  # the threads pool acknowledges from its threads

    def basic_ack(self, delivery_tag, multiple=False):
        """Acknowledge a message: its delivery is released now, its deletion from SQS gathered (see the module).

        Parameters, raises and returns: kombu's ``Channel.basic_ack``; without an
        event loop (no worker), kombu's own, one DeleteMessage each.
        """
        try:
            info = self.qos.get(delivery_tag).delivery_info
            key = (self.canonical_queue_name(info["routing_key"]) if "routing_key" in info else None,
                   info["sqs_queue"])
            handle = info["sqs_message"]["ReceiptHandle"]
        except KeyError:
            return super().basic_ack(delivery_tag, multiple)
        if self.hub is None:
            return super().basic_ack(delivery_tag, multiple)
        self.qos.ack(delivery_tag)  # frees the prefetch slot: the next message may come
        self._gather_ack(key, handle)

    def _gather_ack(self, key, handle: str) -> None:
        # Gathered at once, from any thread (the threads pool acknowledges from its
        # threads), so that close() finds every acknowledgement: in a warm shutdown
        # the tasks finish after the event loop has stopped.
        with self._acked_lock:
            pending = self._acked.setdefault(key, [])
            pending.append(handle)
            count = len(pending)
        if self.closed:  # a thread's last ack, after close
            self._delete_acked(key)
        # Deleted from the event loop's thread (call_soon is kombu's thread-safe way in), through
        # its ready queue, not in the timer: an error raised there leaves the event loop as kombu's
        # basic_ack's does (the timer would log it and go on).
        elif count == SQS.SQS_MAX_MESSAGES:
            self.hub.call_soon(self._delete_acked, key)
        elif count == 1:
            self.hub.call_soon(self.hub.call_later, ACK_DELAY, self.hub.call_soon, self._delete_acked, key)

    def basic_reject(self, delivery_tag, requeue=False):
        """Reject a message; one to be requeued (its worker process died) is made visible again in SQS.

        kombu's requeue publishes a copy, a new message whose receive count
        starts at 0, and leaves the original to come back after its visibility
        timeout: a message that kills its worker every time (a poison) doubled
        at each death and never reached the dead-letter queue. Made visible
        again, it is the same message, received once more: its receive count
        grows, and the queue's redrive policy moves it to the dead-letter queue.

        Rejected without requeue (a message that cannot run), it goes to the
        dead-letter queue with its reason (``transport.dead_letters``).

        Parameters: kombu's ``Channel.basic_reject``.
        """
        try:
            info = self.qos.get(delivery_tag).delivery_info
            queue = self.canonical_queue_name(info["routing_key"]) if "routing_key" in info else None
            url, handle = info["sqs_queue"], info["sqs_message"]["ReceiptHandle"]
        except KeyError:
            return super().basic_reject(delivery_tag, requeue)
        if not requeue:
            # Rejected for good: a message that cannot run, to the dead-letter queue at once
            # (kombu's left it to come back until the redrive policy moved it).
            try:
                sent = self._dead_letter_rejected(info, queue)
            except Exception:
                self.qos.reject(delivery_tag, requeue=False)  # released, as kombu's is when its delete fails
                raise
            if not sent:  # kombu's reject: deleted, unless the queue's redrive policy is to move it
                return super().basic_reject(delivery_tag, requeue)
            self.qos.reject(delivery_tag, requeue=False)
            return None
        self.sqs(queue=queue).change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
        self.qos.reject(delivery_tag, requeue=False)  # released here; SQS delivers it again

    def _delete_acked(self, key: tuple[str | None, str]) -> None:
        with self._acked_lock:
            handles = self._acked.pop(key, None)
        if handles:
            self._delete_batch(*key, handles)

    # Not `_delete`: that is kombu's queue deletion (virtual Channel.queue_delete calls it).
    def _delete_batch(self, queue: str | None, url: str, handles: list[str]) -> None:
        """Delete messages from SQS with one request (two if SQS fails some entries on its side).

        Raises:
          kombu.transport.SQS.AccessDeniedQueueException: the call was denied (as kombu's basic_ack).
          aws.errors.Permanent: any other error no retry can fix (expired credentials, no such queue).
          Exception: a programming error.
        """
        entries = [{"Id": str(n), "ReceiptHandle": h} for n, h in enumerate(handles)]
        name = url.rsplit("/", 1)[-1]
        for _ in range(2):
            try:
                failed = self.sqs(queue=queue).delete_message_batch(QueueUrl=url, Entries=entries).get("Failed", [])
            except Exception as exc:
                # Sorted by the one policy; permanent, or a bug: raised, as kombu's basic_ack raises.
                failure = errors.sort(exc, queue=name)
                if isinstance(failure, errors.Bug):
                    raise
                if isinstance(failure, errors.Permanent):
                    if failure.kind is errors.Kind.DENIED:
                        raise SQS.AccessDeniedQueueException(str(failure)) from exc
                    raise failure from exc
                failed = [{"Id": e["Id"], "SenderFault": False, "Message": f"{type(exc).__name__}: {exc}"}
                          for e in entries]
            refused = [f for f in failed if f.get("SenderFault")]
            if refused:  # kombu forgets them too (a stale receipt handle)
                logger.error("DeleteMessageBatch on queue %s refused %d of %d entries (%s: %s): those messages "
                             "will be delivered again", name, len(refused), len(entries),
                             refused[0].get("Code"), refused[0].get("Message"))
            again = [f for f in failed if not f.get("SenderFault")]
            entries = [e for e in entries if e["Id"] in {f["Id"] for f in again}]
            if not entries:
                return
        logger.warning("SQS did not delete %d done messages of queue %s (%s): they will be delivered again "
                       "after the visibility timeout", len(entries), name, again[0].get("Code") or again[0].get("Message"))

    def _restore(self, message):
        """Make ``message``, left unacknowledged as the channel closes, visible again in SQS.

        kombu's publishes a copy (and SQS delivers the original again after its
        visibility timeout too: the task ran twice); made visible, the message
        is received at once by another worker, once. A debt: kombu's private
        method, called by its QoS.restore_unacked (tests/test_library_debts.py).

        Parameters: kombu's ``Channel._restore``.
        """
        info = message.delivery_info
        try:
            url, handle = info["sqs_queue"], info["sqs_message"]["ReceiptHandle"]
        except KeyError:
            return super()._restore(message)
        queue = self.canonical_queue_name(info["routing_key"]) if "routing_key" in info else None
        self.sqs(queue=queue).change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)

    def close(self):
        """Delete the messages of the acknowledgements still gathered, then close."""
        try:
            with self._acked_lock:
                keys = list(self._acked)
            for key in keys:
                self._delete_acked(key)
        finally:
            super().close()
