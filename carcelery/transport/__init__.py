"""kombu's SQS transport, with broadcast over SNS for Flower and ``celery inspect``, and fewer requests.

Used through Celery's ``broker_transport`` setting (``carcelery.transport:Transport``).
Its Channel is kombu's SQS Channel with one mixin per concern:

- ``broadcast``: with the transport option ``supports_fanout``, events and
  remote control over SNS topics (sent only while somebody watches), replies
  routed to the caller's queue, no-ack messages deleted without an event loop;
- ``leases``: exclusive and auto-delete queues get a lease, deleted with their
  SNS subscriptions when the process exits, swept when left behind;
- ``batching``: within ``batched_sends()`` messages go out ten per
  SendMessageBatch request (the dispatcher's many tasks);
- ``acks``: a worker deletes its done messages in batches gathered over
  ACK_DELAY seconds; a requeued message is made visible again, not copied;
- ``visibility``: a worker keeps the messages it holds (prefetched, running)
  hidden while it holds them, however long a task runs;
- ``receiving``: a worker receives when half its prefetch is free, not one
  message per task done, and schedules no receive after close;
- ``dead_letters``: a message that cannot run (an envelope kombu cannot read,
  a reject without requeue) goes to the dead-letter queue at once, with its reason.

The Transport declares fanout when ``supports_fanout`` is set, so that workers
start remote control.
"""

from __future__ import annotations

from kombu.transport import SQS

from .acks import GatheredAcks
from .batching import BatchedSends, batched_sends
from .broadcast import Broadcast
from .dead_letters import DeadLetters
from .leases import TransientQueues
from .receiving import Receiving
from .visibility import HeldVisible

__all__ = ["Channel", "Transport", "batched_sends"]


class Channel(Broadcast, TransientQueues, GatheredAcks, HeldVisible, BatchedSends, Receiving, DeadLetters,
              SQS.Channel):
    """kombu's SQS channel with this package's mixins (see the package); no two override one name."""


class Transport(SQS.Transport):
    """kombu's SQS transport with this package's Channel; declares fanout when ``supports_fanout``."""

    Channel = Channel

    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        if client.transport_options.get("supports_fanout"):
            # Celery starts a worker's remote control only on a transport that declares fanout.
            self.implements = self.implements.extend(exchange_type=self.implements.exchange_type | {"fanout"})
