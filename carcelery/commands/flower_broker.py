"""Flower's Broker page and ``/api/queues/length`` over SQS, which stock Flower refuses.

Flower picks a class that reads queue lengths by the broker URL's scheme
(``flower.utils.broker.Broker``) and has none for SQS: both answer "'sqs' broker
is not supported". ``Broker`` here is Flower's factory with SQS added, and
``install()`` puts it where Flower's handlers look it up; ``python -m
carcelery.commands.flower`` calls it before Flower starts. Flower itself is
not changed.

The figures are SQS's ``ApproximateNumberOf*`` attributes (``carcelery.commands.depth``),
of every queue of the pipeline's prefix: detect, text, the dead-letter queue, and
any other (events, Flower's own event queue). In Flower's columns: Ready is
waiting, Unacked in flight (received, not yet deleted), Messages all three with
the delayed ones; each figure reads "≈ N" on the page, a plain number in the API,
which also has ``waiting``, ``in_flight`` and ``delayed``. SQS counts no consumers
and keeps no idle time: those columns stay empty.
"""

from __future__ import annotations

import asyncio
import logging

import flower.views
from botocore.exceptions import BotoCoreError, ClientError
from flower.utils import broker as flower_broker
from kombu.transport import get_transport_cls
from kombu.transport.SQS import Transport as SQSTransport

from ..aws.errors import explain
from .depth import Depth, depths

logger = logging.getLogger(__name__)


class Approximate(int):
    """A count SQS approximates: a plain number in JSON, "≈ N" where Flower's page prints it."""

    def __str__(self) -> str:
        return f"≈ {int(self)}"


def row(name: str, depth: Depth) -> dict:
    """Flower's row of a queue (the keys its Broker page reads) for ``depth``, named ``name``."""
    total = depth.waiting + depth.in_flight + depth.delayed
    return {"name": name, "sqs_queue": depth.queue, "approximate": True,
            "messages": Approximate(total), "messages_ready": Approximate(depth.waiting),
            "messages_unacknowledged": Approximate(depth.in_flight),
            "waiting": depth.waiting, "in_flight": depth.in_flight, "delayed": depth.delayed}


class SQS(flower_broker.BrokerBase):
    """Queue lengths from SQS, for Flower.

    Parameters:
      broker_url: the app's broker URL (Flower's; only its transport matters here).
      broker_options: Celery's ``broker_transport_options``; ``queue_name_prefix`` is the pipeline's prefix.
    """

    def __init__(self, broker_url, *_, broker_options=None, **__):
        super().__init__(broker_url)
        self.prefix = (broker_options or {}).get("queue_name_prefix", "")

    async def queues(self, names):
        """The rows of the queues ``names`` (Celery's names) first, then the prefix's others, one process's last.

        Returns:
          One row per SQS queue found (``row``); none if SQS could not be asked, which is logged.
        """
        try:
            # boto3 blocks: in Flower's executor, off its event loop.
            found = await asyncio.get_running_loop().run_in_executor(None, depths, self.prefix)
        except (BotoCoreError, ClientError) as exc:
            logger.error("SQS did not give the queues' lengths: %s", explain(exc) or exc)
            return []
        by_name = {depth.queue.removeprefix(self.prefix): depth for depth in found}
        others = sorted(set(by_name) - set(names), key=lambda name: (_per_process(name), name))
        return [row(name, by_name[name]) for name in [name for name in names if name in by_name] + others]


def _per_process(name: str) -> bool:
    # kombu's queues of one process: an event receiver's (celeryev-...), a mailbox or a reply queue (...pidbox).
    return name.startswith("celeryev") or name.endswith("pidbox")


def _is_sqs(broker_url: str) -> bool:
    # Celery's URL names the transport (``sqs://``, or a class path as this app's
    # ``carcelery.transport:Transport://``): SQS's or a subclass of it.
    try:
        transport = get_transport_cls(broker_url.partition("://")[0])
    except (KeyError, ImportError):
        return False
    return isinstance(transport, type) and issubclass(transport, SQSTransport)


class Broker(flower_broker.Broker):
    """Flower's factory of broker classes, which also knows SQS (``SQS``)."""

    # Debt: overrides Flower's factory `flower.utils.broker.Broker.__new__` (2.2.0), which picks by the
    # URL's scheme and raises NotImplementedError for SQS; other URLs still get Flower's classes.
    def __new__(cls, broker_url, *args, **kwargs):
        if _is_sqs(broker_url):
            return SQS(broker_url, *args, **kwargs)
        return super().__new__(cls, broker_url, *args, **kwargs)


def install() -> None:
    """Make Flower's handlers (Broker page, ``/api/queues/length``) use ``Broker``, in this process."""
    # Debt: replaces Flower's module global `flower.views.Broker` (2.2.0), the name its
    # BaseHandler.get_broker calls: the one place both handlers get their broker class.
    flower.views.Broker = Broker
