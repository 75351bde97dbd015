"""Celery's DynamoDB result backend, counting each chord part once.

SQS delivers at least once: a task whose worker dies after it reported its
result but before it acknowledged its message runs again. Celery's counter
would then count that chord part twice and fire the terminator before the
last image is done. Here the counter is the set of the task ids that have
reported, grown atomically (DynamoDB ``ADD`` to a string set): a second report
of the same task leaves the count as it was.

``celeryconfig.result_backend`` names this class in front of the
``dynamodb://`` URL (Celery's ``module:Class+url`` form).
"""

from __future__ import annotations

import contextlib
import threading

from celery.backends.dynamodb import DynamoDBBackend


class OncePerPartDynamoDBBackend(DynamoDBBackend):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reporting = threading.local()  # the task whose chord part is being counted

    @contextlib.contextmanager
    def counting(self, task_id: str):
        """Within it, ``incr`` counts ``task_id`` (once, however often)."""
        self._reporting.task_id = task_id
        try:
            yield
        finally:
            self._reporting.task_id = None

    def on_chord_part_return(self, request, state, result, **kwargs):
        with self.counting(request.id):
            super().on_chord_part_return(request, state, result, **kwargs)

    def incr(self, key: bytes) -> int:
        """The number of distinct tasks that have reported to chord counter ``key``, this one included."""
        task_id = getattr(self._reporting, "task_id", None)
        if task_id is None:
            return super().incr(key)
        # str(key), as Celery's own incr and delete name the item.
        answer = self._get_client().update_item(
            **self._prepare_get_request(str(key)),
            UpdateExpression="ADD parts :part",
            ExpressionAttributeValues={":part": {"SS": [task_id]}},
            ReturnValues="ALL_NEW",
        )
        return len(answer["Attributes"]["parts"]["SS"])

    def parts_done(self, group_id: str) -> int:
        """How many tasks of chord ``group_id`` have reported so far (0 once the chord is done)."""
        key = str(self.get_key_for_chord(group_id))
        item = self._get_client().get_item(**self._prepare_get_request(key)).get("Item", {})
        return len(item.get("parts", {}).get("SS", []))
