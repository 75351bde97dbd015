"""Celery's DynamoDB result backend, counting each chord part once.

SQS delivers at least once: a task whose worker dies after it stored its
result but before it acknowledged its message runs again. Celery's backend
would then count that chord part twice, fire the terminator before the last
image is done, and fail the run. Here a part counts only the first time its
task id reports; the second run's result (the same record) just replaces the
first.

``celeryconfig.result_backend`` names this class in front of the
``dynamodb://`` URL (Celery's ``module:Class+url`` form).
"""

from __future__ import annotations

from botocore.exceptions import ClientError
from celery.backends.dynamodb import DynamoDBBackend
from celery.utils.log import get_logger

logger = get_logger(__name__)


class OncePerPartDynamoDBBackend(DynamoDBBackend):
    def _first_report(self, task_id: str, group_id: str) -> bool:
        """True the first time ``task_id`` reports as a part of chord ``group_id``."""
        marker = self._prepare_put_request(f"chord-part-{group_id}-{task_id}", "1")
        try:
            self._get_client().put_item(**marker, ConditionExpression="attribute_not_exists(#k)",
                                        ExpressionAttributeNames={"#k": self._key_field.name})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def on_chord_part_return(self, request, state, result, **kwargs):
        if request.group and not self._first_report(request.id, request.group):
            logger.warning("task %s of chord %s ran again (redelivered); counted once", request.id, request.group)
            return
        super().on_chord_part_return(request, state, result, **kwargs)
