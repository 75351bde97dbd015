"""kombu's SQS transport, with what Flower and ``celery inspect`` need: broadcast over SNS.

Used through Celery's ``broker_transport`` setting (``carcelery.transport:Transport``).
Out of the box, over SQS, Celery neither starts remote control (the transport
declares no fanout) nor gets events out of a worker (its event exchange is a
topic exchange, which a virtual transport routes inside one process only). With
the transport option ``supports_fanout`` this transport:

- declares fanout, so workers start remote control; kombu publishes fanout
  messages to an SNS topic to which each bound queue is subscribed;
- broadcasts the exchanges named in ``broadcast_exchanges`` (Celery's event
  exchange) as fanout; their receivers bind them with ``#``, i.e. everything;
  while no queue is subscribed to such a topic (nobody watches), its messages
  are not published at all: SNS would drop them, after one request each;
- routes a remote-control reply to the caller's reply queue, which was bound in
  the caller's process, not the replier's;
- deletes no-ack messages with the blocking client, a batch per receive, where
  there is no event loop (Flower, ``celery events``, ``celery inspect``);
- gives exclusive and auto-delete queues a lease (``carcelery.transport.leases``): deleted
  with their SNS subscriptions when the process exits, swept when left behind.

And it saves SQS requests: within ``batched_sends()`` it sends messages ten per
SendMessageBatch request instead of one SendMessage each (the dispatcher's many
tasks); a worker receives when half its prefetch is free, not one message
per task done; and it deletes the messages of done tasks with one
DeleteMessageBatch for those acknowledged within ACK_DELAY seconds of each
other (ten at most), instead of one DeleteMessage each. A worker killed within
that delay leaves them to be delivered again, as SQS does for any message not
deleted: tasks are idempotent and their chord parts count once.
"""

from __future__ import annotations

import contextlib
import contextvars
import fnmatch
import time

from botocore.exceptions import ClientError
from kombu.exceptions import ChannelError
from kombu.log import get_logger
from kombu.pidbox import Mailbox
from kombu.transport import SQS
from kombu.transport.SQS.exceptions import DoesNotExistQueueException
from kombu.utils.encoding import bytes_to_str
from kombu.utils.objects import cached_property

from . import leases

logger = get_logger(__name__)

# How long a transient queue outlives its owner's last declare or poll before a
# start-up sweeps it: long enough that a busy owner never loses its queue.
LEASE_SECONDS = 300

# How long a process trusts its last look at a broadcast topic's subscribers:
# a new watcher (Flower) gets events at most WATCH_SECONDS after subscribing;
# one that left is still sent events for up to WATCHED_SECONDS. Each look is a
# request from every worker: at 1 s they were 4 % of a run's requests.
WATCH_SECONDS, WATCHED_SECONDS = 3.0, 10.0

# SQS's limits for one SendMessageBatch request: 10 messages, 256 KiB of bodies.
SEND_BATCH, SEND_BATCH_BYTES = 10, 256 * 1024
# Seconds a worker gathers acknowledgements before deleting their messages: with
# tasks of a few tenths of a second, 0.2 s gathered 2.4 per request, 1 s 4 to 5.
ACK_DELAY = 1.0

# The batching clients of the current batched_sends() block, if any.
_batching: contextvars.ContextVar[list | None] = contextvars.ContextVar("carcelery_batching", default=None)


@contextlib.contextmanager
def batched_sends():
    """Within it, messages put on SQS queues go out ten per SendMessageBatch request.

    A batch goes when it is full; the rest when the block ends without an error
    (an error in the block sends nothing more).

    Raises (as the block ends, or on a full batch):
      kombu.exceptions.ChannelError: SQS refused some of a batch's messages; it says how many and why.
      botocore.exceptions.ClientError: the request itself failed (no such queue, no permission).
    """
    clients: list[_BatchingClient] = []
    token = _batching.set(clients)
    try:
        yield
    finally:
        _batching.reset(token)
    for client in clients:
        client.flush()


class _BatchingClient:
    """A boto3 SQS client whose ``send_message`` waits to go out in a SendMessageBatch."""

    def __init__(self, client):
        self.client = client
        self._pending: dict[str, list[dict]] = {}  # by queue URL

    def __getattr__(self, name):
        return getattr(self.client, name)

    def send_message(self, QueueUrl, **entry):  # noqa: N803 - boto3's parameter name
        pending = self._pending.get(QueueUrl, [])
        size = sum(len(e["MessageBody"].encode()) for e in pending) + len(entry["MessageBody"].encode())
        if len(pending) == SEND_BATCH or (pending and size > SEND_BATCH_BYTES):
            self._send(QueueUrl)
        self._pending.setdefault(QueueUrl, []).append(entry)

    def flush(self) -> None:
        for url in list(self._pending):
            self._send(url)

    def _send(self, url: str) -> None:
        entries = {str(n): entry for n, entry in enumerate(self._pending.pop(url))}
        failed = self.client.send_message_batch(
            QueueUrl=url, Entries=[{"Id": n, **entry} for n, entry in entries.items()]).get("Failed")
        if failed:
            raise ChannelError(f"SQS refused {len(failed)} of {len(entries)} messages to {url}: "
                               f"{failed[0].get('Message') or failed[0].get('Code')}")


class Channel(SQS.Channel):
    """An SQS channel with SNS broadcast, reply routing, transient queues and batched sends (see the module)."""

    def sqs(self, queue=None):
        client = super().sqs(queue)
        batching = _batching.get()
        if batching is None:
            return client
        for batcher in batching:
            if batcher.client is client:
                return batcher
        batching.append(_BatchingClient(client))
        return batching[-1]

    @cached_property
    def broadcast_exchanges(self) -> frozenset[str]:
        return frozenset(self.transport_options.get("broadcast_exchanges", ()))

    @cached_property
    def _watchers(self) -> dict[str, tuple[bool, float]]:
        return {}  # exchange: (watched, until when that answer holds)

    def _watched(self, exchange: str) -> bool:
        """Whether any queue is subscribed to broadcast ``exchange``'s SNS topic (as of a recent look)."""
        watched, until = self._watchers.get(exchange, (False, 0.0))
        now = time.monotonic()
        if now >= until:
            try:
                arn = self.fanout._get_or_create_topic(exchange)
                watched = bool(self.fanout.get_client(exchange).list_subscriptions_by_topic(
                    TopicArn=arn).get("Subscriptions"))
            except ClientError as exc:
                # Not allowed to look (an older IAM policy): publish, as without this check.
                logger.warning("cannot list the subscribers of %s (%s); publishing its messages anyway "
                               "(allow sns:ListSubscriptionsByTopic to skip them while nobody watches)",
                               exchange, exc.response["Error"].get("Code"))
                watched = True
            self._watchers[exchange] = watched, now + (WATCHED_SECONDS if watched else WATCH_SECONDS)
        return watched

    def _put_fanout(self, exchange, message, routing_key, **kwargs):
        if exchange in self.broadcast_exchanges and not self._watched(exchange):
            return  # nobody watches
        return super()._put_fanout(exchange, message, routing_key, **kwargs)

    def exchange_declare(self, exchange=None, type="direct", *args, **kwargs):
        """Declare ``exchange``; a broadcast exchange is declared fanout whatever its type.

        Parameters, raises and returns: kombu's ``Channel.exchange_declare``.
        """
        if self.supports_fanout and exchange in self.broadcast_exchanges:
            type = "fanout"
        return super().exchange_declare(exchange, type, *args, **kwargs)

    def queue_declare(self, queue=None, passive=False, **kwargs):
        """Declare ``queue``; an exclusive or auto-delete one gets a lease.

        Parameters, raises and returns: kombu's ``Channel.queue_declare``.
        """
        if not (kwargs.get("exclusive") or kwargs.get("auto_delete")):
            return super().queue_declare(queue, passive, **kwargs)
        registry = self._leases(keep=queue)
        declared = super().queue_declare(queue, passive, **kwargs)
        if not registry.claim(self._new_queue(declared.queue)):
            # Swept by another process after this one cached its URL: make it again.
            self._queue_cache.pop(self.canonical_queue_name(declared.queue), None)
            registry.claim(self._new_queue(declared.queue))
        return declared

    def _create_queue(self, queue_name, attributes):
        registry = leases.existing(self._leases_key)
        if registry is not None and registry.closed:
            # This process is exiting and has deleted its transient queues; a
            # consumer thread reconnecting (Flower's) would make its queue again.
            raise ChannelError(f"not creating queue {queue_name!r}: this process is exiting")
        return super()._create_queue(queue_name, attributes)

    def after_reply_message_received(self, queue):
        """Keep the reply queue for the next call (kombu deletes it after each call).

        SQS refuses to create a queue for 60 s after one of the same name was
        deleted, and a caller (Flower) reuses its reply queue's name; the
        queue's lease deletes it when the caller exits.
        """

    @property
    def _leases_key(self) -> tuple:
        return (self.endpoint_url, self.region, self.queue_name_prefix)

    def _leases(self, keep: str) -> leases.Leases:
        """This process's leases; made, and stale queues swept, on the first transient queue."""
        registry, made = leases.for_process(self._leases_key, lambda: leases.Leases(
            self.sqs(), self.fanout.get_client(), self.queue_name_prefix, LEASE_SECONDS))
        if made:
            for url in registry.sweep(keep=[self.canonical_queue_name(keep)]):
                self._queue_cache.pop(url.rsplit("/", 1)[-1], None)
        return registry

    def _renew(self, queue: str) -> None:
        registry = leases.existing(self._leases_key)
        if registry is not None:
            registry.renew(self._new_queue(queue))

    def _receive_message(self, queue, *args, **kwargs):
        self._renew(queue)
        return super()._receive_message(queue, *args, **kwargs)

    def _get_async(self, queue, *args, **kwargs):
        self._renew(queue)
        return super()._get_async(queue, *args, **kwargs)

    def _lookup(self, exchange, routing_key, default=None):
        queues = super()._lookup(exchange, routing_key, default)
        if queues or not fnmatch.fnmatchcase(exchange or "", Mailbox.reply_exchange_fmt % "*"):
            return queues
        # A reply queue is bound in the caller's process, so it is unknown here;
        # kombu's pidbox names it "<routing key>.<reply exchange>".
        queue = f"{routing_key}.{exchange}"
        try:
            self._resolve_queue_url(queue)
        except DoesNotExistQueueException:
            return []  # the caller is gone: nobody waits for this reply
        return [queue]

    def _messages_to_python(self, messages, queue):
        if self.hub is not None or queue not in self._noack_queues:
            return super()._messages_to_python(messages, queue)
        # A no-ack message is deleted on receipt. kombu deletes each with its
        # asynchronous client, which needs an event loop that Flower's, `celery
        # events`' and `celery inspect`'s receivers lack; one batch call per
        # receive also spares SQS nine calls in ten.
        self._delete(self.canonical_queue_name(queue), self._new_queue(queue), [m["ReceiptHandle"] for m in messages])
        return [self._prepare_json_payload(bytes_to_str(self._decode_python_message_body(m["Body"])))
                for m in messages]

    def _loop1(self, queue, messages_fetched=None):
        # A receive that completes after the channel closed (a worker shutting
        # down) schedules no next one; kombu's raised in the timer and logged an error.
        if self.connection is not None:
            super()._loop1(queue, messages_fetched)

    def _get_message_estimate(self, max_if_unlimited=SQS.SQS_MAX_MESSAGES):
        estimate = super()._get_message_estimate(max_if_unlimited)
        # In a worker, wait (polling_interval at a time) until half its prefetch
        # is free, so that one ReceiveMessage fetches several messages rather
        # than one per task done; the other half keeps its processes busy.
        half = (self.qos.prefetch_count + 1) // 2
        if self.hub is not None and estimate < min(half, max_if_unlimited):
            return 0
        return estimate

    @cached_property
    def _acked(self) -> dict[tuple[str | None, str], list[str]]:
        return {}  # (queue, queue URL): receipt handles of acknowledged messages, not yet deleted

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
        # The threads pool acknowledges from its threads: gathering is left to
        # the event loop's thread (call_soon is kombu's thread-safe way in).
        self.hub.call_soon(self._gather_ack, key, handle)

    def _gather_ack(self, key, handle: str) -> None:
        pending = self._acked.setdefault(key, [])
        pending.append(handle)
        if len(pending) == SQS.SQS_MAX_MESSAGES or self.closed:  # closed: a thread's last ack
            self._delete_acked(key)
        elif len(pending) == 1:
            self.hub.call_later(ACK_DELAY, self._delete_acked, key)

    def basic_reject(self, delivery_tag, requeue=False):
        """Reject a message; one to be requeued (its worker process died) is made visible again in SQS.

        kombu's requeue publishes a copy, a new message whose receive count
        starts at 0, and leaves the original to come back after its visibility
        timeout: a message that kills its worker every time (a poison) doubled
        at each death and never reached the dead-letter queue. Made visible
        again, it is the same message, received once more: its receive count
        grows, and the queue's redrive policy moves it to the dead-letter queue.

        Parameters: kombu's ``Channel.basic_reject``.
        """
        try:
            info = self.qos.get(delivery_tag).delivery_info
            queue = self.canonical_queue_name(info["routing_key"]) if "routing_key" in info else None
            url, handle = info["sqs_queue"], info["sqs_message"]["ReceiptHandle"]
        except KeyError:
            return super().basic_reject(delivery_tag, requeue)
        if not requeue:
            return super().basic_reject(delivery_tag, requeue)
        self.sqs(queue=queue).change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
        self.qos.reject(delivery_tag, requeue=False)  # released here; SQS delivers it again

    def _delete_acked(self, key) -> None:
        handles = self._acked.pop(key, None)
        if handles:
            self._delete(*key, handles)

    def _delete(self, queue: str | None, url: str, handles: list[str]) -> None:
        """Delete messages from SQS with one request; what is not deleted is delivered again, with a warning."""
        try:
            failed = self.sqs(queue=queue).delete_message_batch(
                QueueUrl=url, Entries=[{"Id": str(n), "ReceiptHandle": h} for n, h in enumerate(handles)]
            ).get("Failed", [])
        except Exception as exc:  # noqa: BLE001 - logged; SQS delivers the messages again
            failed = [{"Message": f"{type(exc).__name__}: {exc}"}] * len(handles)
        if failed:
            logger.warning("SQS did not delete %d of %d done messages of %s (%s): they will be delivered again "
                           "after the visibility timeout (is sqs:DeleteMessage allowed?)", len(failed), len(handles),
                           url.rsplit("/", 1)[-1], failed[0].get("Message") or failed[0].get("Code"))

    def close(self):
        for key in list(self._acked):
            self._delete_acked(key)
        super().close()


class Transport(SQS.Transport):
    """kombu's SQS transport with this module's Channel; declares fanout when ``supports_fanout``."""

    Channel = Channel

    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        if client.transport_options.get("supports_fanout"):
            # Celery starts a worker's remote control only on a transport that declares fanout.
            self.implements = self.implements.extend(exchange_type=self.implements.exchange_type | {"fanout"})
