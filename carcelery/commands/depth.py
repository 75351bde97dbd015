"""Queue depths: messages waiting, in flight and delayed per SQS queue (Flower's Broker page shows the same).

    python -m carcelery.commands.depth

Prints one line per SQS queue of this pipeline (``CARCELERY_QUEUE_PREFIX``):
messages waiting, in flight (received, not yet acknowledged) and delayed, as
SQS approximates them. Event and mailbox queues are listed too: a growing
``celeryev`` queue is a monitor that does not keep up.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

from .. import aws
from ..settings import settings
from ..aws.errors import explain

ATTRIBUTES = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
              "ApproximateNumberOfMessagesDelayed"]


class Depth(NamedTuple):
    queue: str
    waiting: int
    in_flight: int
    delayed: int


def depths(prefix: str) -> list[Depth]:
    """The depth of every SQS queue whose name starts with ``prefix``, by name.

    Raises:
      botocore.exceptions.ClientError: SQS refused (credentials, rights).
    """
    sqs = aws.client("sqs")
    found = []
    for page in sqs.get_paginator("list_queues").paginate(QueueNamePrefix=prefix):
        for url in page.get("QueueUrls", []):
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=ATTRIBUTES)["Attributes"]
            found.append(Depth(url.rsplit("/", 1)[-1], *(int(attrs.get(a, 0)) for a in ATTRIBUTES)))
    return sorted(found)


def main() -> int:
    try:
        found = depths(settings.queue_prefix)
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a traceback
        print(f"error: {explain(exc) or exc}", file=sys.stderr)
        return 1
    width = max([len(d.queue) for d in found] + [5])
    print(f"{'queue':<{width}}  waiting  in_flight  delayed")
    for d in found:
        print(f"{d.queue:<{width}}  {d.waiting:>7}  {d.in_flight:>9}  {d.delayed:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
