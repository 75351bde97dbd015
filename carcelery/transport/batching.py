"""Batched sends: within ``batched_sends()``, messages go out ten per SendMessageBatch request.

The dispatcher sends many tasks at once; one SendMessage each would be ten
requests where one does.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

from kombu.exceptions import ChannelError

# SQS's limits for one SendMessageBatch request: 10 messages, 256 KiB of bodies.
SEND_BATCH, SEND_BATCH_BYTES = 10, 256 * 1024

# The batching clients of the current batched_sends() block, if any.
_batching: contextvars.ContextVar[list | None] = contextvars.ContextVar("carcelery_batching", default=None)


@contextlib.contextmanager
def batched_sends() -> Iterator[None]:
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

    def __init__(self, client) -> None:
        self.client = client
        self._pending: dict[str, list[dict]] = {}  # by queue URL

    def __getattr__(self, name):
        return getattr(self.client, name)

    def send_message(self, QueueUrl, **entry):  # boto3's parameter name
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


class BatchedSends:
    """Channel mixin: inside ``batched_sends()``, ``sqs()`` hands out a batching client."""

    def sqs(self, queue=None):
        # Debt: relies on kombu's private `Channel._put` (5.7.0) sending through `sqs(...).send_message`:
        # the one place a send can be held back.
        client = super().sqs(queue)
        batching = _batching.get()
        if batching is None:
            return client
        for batcher in batching:
            if batcher.client is client:
                return batcher
        batching.append(_BatchingClient(client))
        return batching[-1]
