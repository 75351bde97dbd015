"""Tasks that say so when they are replaced: Celery's ``Task.replace`` ends a task with no event.

A replaced task (``detect_car`` handing a car image on to ``recognize_text``)
is acknowledged on its worker and sends neither task-succeeded nor task-failed,
so Flower counts it received there and nothing else. ``Replaceable`` sends a
``task-replaced`` event when it is replaced, through Celery's ``Task.send_event``
(custom task events, which monitors show as a state of their own): Flower shows
the task REPLACED until its replacement's own events come from the other worker,
and counts ``task-replaced`` per worker (``/api/workers``), so that a worker's
received tasks are its succeeded, failed and replaced ones.
"""

from __future__ import annotations

from celery.exceptions import Ignore

from .policy import Guarded

REPLACED = "task-replaced"


class Replaceable(Guarded):
    """A task class whose replacement is an event (``REPLACED``), when the worker sends task events;
    its errors sorted by the one policy (``carcelery.policy``)."""

    def on_replace(self, sig):
        try:
            return super().on_replace(sig)
        except Ignore:  # sent on: this task's execution ends here
            if self.app.conf.worker_send_task_events and self.request.hostname:
                # Not retried: a monitor missing it must not hold the task up.
                self.send_event(REPLACED, retry=False, replaced_by=sig.name)
            raise
