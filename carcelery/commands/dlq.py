"""The dead-letter queue: what is in it, and sending it back to the queue it came from.

    python -m carcelery.commands.dlq              # one line per message: image, task, run, receives, queue, why
    python -m carcelery.commands.dlq redrive      # SQS's redrive: every message back to the queue it came from

SQS moves a task's message there once it was received CARCELERY_MAX_RECEIVES
times without being done: its worker process died every time (an image that
crashes a model, memory), or it was never acknowledged. Fix the cause (or
not: a message that kills its worker again comes back here), then redrive.
A message a worker cannot run (not a task, an unknown task, not JSON,
arguments of the wrong shape) is sent there at once, and listed with its
kind and reason; redrive leaves it there (it was sent, not moved, so SQS
knows no queue to move it back to).
"""

from __future__ import annotations

import argparse
import sys

from botocore.exceptions import EndpointConnectionError

from ..aws.errors import explain, unreachable
from ..pipeline.dead_letters import RedriveFailed, messages, redrive
from ..printable import printable
from ..settings import DEAD_LETTER_QUEUE, settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carcelery.commands.dlq", description=__doc__.split("\n")[0])
    parser.add_argument("action", nargs="?", choices=("list", "redrive"), default="list")
    args = parser.parse_args(argv)
    name = settings.queue_name(DEAD_LETTER_QUEUE)
    try:
        return _run(args.action, name)
    except Exception as exc:  # known AWS errors become one clear line
        reason = unreachable(exc) if isinstance(exc, EndpointConnectionError) else explain(exc, queue=name)
        if reason is None:
            raise
        print(f"error: {reason}", file=sys.stderr)
        return 2


def _run(action: str, name: str) -> int:
    if action == "redrive":
        try:
            sent = redrive()
        except RedriveFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: {sent} messages sent back to their queues")
        return 0
    found = messages()
    for m in found:
        cannot = f"\tcannot run ({m['kind']}): {printable(m['reason'] or '')}" if m["kind"] else ""
        print(f"{printable(m['image'] or '?')}\tbucket={m['bucket']}\ttask={m['task']}\trun={m['run']}\t"
              f"receives={m['receives']}\tqueue={m['queue']}{cannot}")
    print(f"{name}: {len(found)} messages" + (" (python -m carcelery.commands.dlq redrive sends them back)" if found else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
