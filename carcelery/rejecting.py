"""The worker's consumer: a task message it cannot run is rejected with its reason, and the worker goes on.

Celery's consumer rejects what it cannot run (not a task message, an unknown
task, content that is not JSON), logging why; a reject without requeue sends
the message to the dead-letter queue (``carcelery.transport.dead_letters``),
and here the reason goes with it. Added to Celery's:

- a message that cannot be decoded is rejected too (Celery's acknowledges it:
  it was gone without a trace);
- the headers and arguments of the pipeline's tasks are checked before the
  task is handed to the pool (``carcelery.arguments``);
- anything else Celery raises while reading a message (a header of a type it
  does not expect: it raised out of the event loop and the worker died) rejects
  that message, with the error as its reason.

Celery's setting ``worker_consumer`` (celeryconfig.py) names this class.
"""

from __future__ import annotations

from celery.utils.log import get_logger
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.message import Message
from vine import promise

from . import arguments
from .printable import printable
from .transport.dead_letters import Unrunnable, mark

logger = get_logger(__name__)


class Consumer(CeleryConsumer):
    """Celery's consumer, whose every reject of a message says why (see the module)."""

    def _reject(self, message: Message, kind: Unrunnable, reason: str) -> None:
        """Reject ``message`` without requeue: to the dead-letter queue, with ``kind`` and ``reason``."""
        if message.acknowledged:
            return
        mark(message.delivery_info, kind, printable(reason))
        message.reject_log_error(logger, self.connection_errors)

    # Debt: overrides Celery's `Consumer.create_task_handler` (5.7.0): the message handler it
    # makes is wrapped, so that its arguments are checked first and what it raises rejects the message.
    def create_task_handler(self, promise=promise):
        handle = super().create_task_handler(promise)

        def on_task_received(message: Message) -> None:
            try:
                problem = self._unrunnable(message)
                if problem is not None:  # logged as it is dead-lettered
                    return self._reject(message, Unrunnable.ARGUMENTS, problem)
                return handle(message)
            except self.connection_errors:
                raise  # the connection's: Celery reconnects
            except Exception as exc:
                logger.exception("task message of headers %r could not be read", message.headers)
                self._reject(message, Unrunnable.UNREADABLE, f"the worker could not read it: "
                                                             f"{type(exc).__name__}: {exc}")
                return None

        return on_task_received

    def _unrunnable(self, message: Message) -> str | None:
        """Why the headers or arguments of ``message`` cannot run (``arguments.problem``), or None.

        A message Celery rejects itself (no task header, an unknown task, not
        JSON, not decodable) is left to Celery's handler, which says why.
        """
        headers = message.headers
        if not isinstance(headers, dict) or message.content_type != "application/json":
            return None
        if "task" in headers and not isinstance(headers["task"], str):
            return f"the headers.task is {arguments.json_kind(headers['task'])}, not a task's name"
        try:
            body = message.decode()
        except Exception:  # noqa: BLE001 - Celery's handler decodes it again and says why
            return None
        if "task" not in headers and isinstance(body, dict) and isinstance(body.get("task"), str):
            # Celery's protocol 1: the task's name, id, arguments and options in the body, as headers are in 2.
            headers, body = body, [body.get("args", []), body.get("kwargs", {}), None]
        return arguments.problem(headers, body) if headers.get("task") in self.strategies else None

    # Debt: overrides Celery's `Consumer.on_unknown_message` (5.7.0), to give the reject a reason.
    def on_unknown_message(self, body, message):
        mark(message.delivery_info, Unrunnable.NOT_A_TASK,
             "not a Celery task message: no task header, and the body names no task (send tasks with Celery)")
        return super().on_unknown_message(body, message)

    # Debt: overrides Celery's `Consumer.on_unknown_task` (5.7.0), to give the reject a reason.
    def on_unknown_task(self, body, message, exc):
        name = message.headers.get("task") if isinstance(message.headers, dict) else None
        mark(message.delivery_info, Unrunnable.UNKNOWN_TASK,
             printable(f"unknown task {name!r}: these workers run {', '.join(sorted(self.strategies))}"))
        return super().on_unknown_task(body, message, exc)

    # Debt: overrides Celery's `Consumer.on_invalid_task` (5.7.0), to give the reject a reason.
    def on_invalid_task(self, body, message, exc):
        mark(message.delivery_info, Unrunnable.CONTENT,
             printable(f"{type(exc).__name__}: {exc} (the workers accept JSON only: accept_content)"))
        return super().on_invalid_task(body, message, exc)

    # Debt: overrides Celery's `Consumer.on_decode_error` (5.7.0): Celery's acknowledges (deletes)
    # the message; here it is rejected, to the dead-letter queue with the error.
    def on_decode_error(self, message, exc):
        logger.error("task message could not be decoded (content type %r): %r", message.content_type, exc)
        self._reject(message, Unrunnable.CONTENT, f"its body could not be decoded as {message.content_type!r}: "
                                                  f"{type(exc).__name__}: {exc}")
