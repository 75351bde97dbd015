"""Celery's DynamoDB result backend, counting each chord part once.

SQS delivers at least once: a task whose worker dies after it reported its
result but before it acknowledged its message runs again. Celery's counter
would then count that chord part twice and fire the terminator before the
last image is done. Here each part that reports marks itself in the chord's
counter item, and the count grows in the same conditional UpdateItem, only if
the mark was not there: a second report of the same task leaves the count as
it was.

Celery's backend reads the whole group back for every part it counts, and the
part that completes the chord reads each part's result with its own GetItem.
Here the counter item also holds how many parts remain (``set_chord_size``
adds the chord's size, each part takes one away), so a part that is not the
last one only counts (one UpdateItem, whose answer is two numbers), and the
results are read with BatchGetItem, 100 per request. And a result is stored
with one conditional PutItem, where Celery reads the stored result first so
as not to overwrite a success.

``celeryconfig.result_backend`` names this class in front of the
``dynamodb://`` URL (Celery's ``module:Class+url`` form).
"""

from __future__ import annotations

import contextlib
import threading

from botocore.exceptions import ClientError
from celery import states
from celery.backends.dynamodb import DynamoDBBackend
from kombu.utils.encoding import bytes_to_str

from . import aws


class OncePerPartDynamoDBBackend(DynamoDBBackend):
    # Joining the chord's parts reads them through get_many, hence mget (as
    # Celery's cache backend does), not one polling get() per part.
    supports_native_join = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reporting = threading.local()  # the task whose chord part is being counted

    def _get_client(self, access_key_id=None, secret_access_key=None):
        # The process's DynamoDB client (aws.client, the ledger's too), not a new
        # boto3 session's: it is made again in a forked worker process, where the
        # parent's kept-alive connections must not carry a second process's
        # requests, and it spares each process a session (about 0.1 s). The table
        # is provision's (python -m carcelery.provision), not created here.
        return aws.client("dynamodb")

    @contextlib.contextmanager
    def counting(self, task_id: str):
        """Within it, ``incr`` counts ``task_id`` (once, however often)."""
        self._reporting.task_id = task_id
        try:
            yield
        finally:
            self._reporting.task_id = None

    def set_chord_size(self, group_id, chord_size):
        """Add the chord's size to its parts remaining; the dispatcher calls this before sending its last part.

        Parts that reported before it have taken their one away already, so
        the parts remaining reach 0 with the last part either way.
        """
        self.client.update_item(**self._prepare_get_request(str(self.get_key_for_chord(group_id))),
                                UpdateExpression="ADD remaining :size",
                                ExpressionAttributeValues={":size": {"N": str(chord_size)}})

    def on_chord_part_return(self, request, state, result, **kwargs):
        if request.group and self._add_part(str(self.get_key_for_chord(request.group)), request.id)[1] != 0:
            return  # not the last part: nothing to read back
        # The last part: Celery's own code, whose count of this part (again)
        # leaves the count as it is.
        with self.counting(request.id):
            super().on_chord_part_return(request, state, result, **kwargs)

    def _store_result(self, task_id, result, state, traceback=None, request=None, **kwargs):
        """Store a task's result, unless a success is stored for it already.

        A task delivered twice (its worker died before acknowledging it) may run
        twice; its first success stands. One conditional write, on an item
        attribute ``state``; items without it (Celery's own) are overwritten.
        """
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        put = self._prepare_put_request(str(self.get_key_for_task(task_id)), self.encode(meta))
        put["Item"]["state"] = {"S": state}
        try:
            self.client.put_item(**put, ConditionExpression="attribute_not_exists(#s) OR #s <> :success",
                                 ExpressionAttributeNames={"#s": "state"},
                                 ExpressionAttributeValues={":success": {"S": states.SUCCESS}})
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
        return result

    def mget(self, keys):
        """The values under ``keys``, in their order (None where missing), in batches."""
        keys = [str(key) for key in keys]
        key, value = self._key_field, self._value_field
        items = aws.batch_get(self.client, self.table_name, [{key.name: {key.data_type: k}} for k in dict.fromkeys(keys)])
        found = {item[key.name][key.data_type]: item[value.name][value.data_type] for item in items}
        return [found.get(k) for k in keys]

    def incr(self, key: bytes) -> int:
        """The number of distinct tasks that have reported to chord counter ``key``, this one included."""
        task_id = getattr(self._reporting, "task_id", None)
        if task_id is None:
            return super().incr(key)
        # str(key), as Celery's own incr and delete name the item.
        return self._add_part(str(key), task_id)[0]

    def _add_part(self, key: str, task_id: str) -> tuple[int, int | None]:
        """Count ``task_id`` in chord counter ``key`` once: (parts counted, parts remaining).

        Parts remaining are below 0 until ``set_chord_size`` has added the size,
        and None if the counter went (the chord completed) as this part reported again.
        """
        try:
            answer = self.client.update_item(
                **self._prepare_get_request(key),
                UpdateExpression="SET #part = :yes ADD parts :one, remaining :minus_one",
                ConditionExpression="attribute_not_exists(#part)",
                ExpressionAttributeNames={"#part": f"part-{task_id}"},
                ExpressionAttributeValues={":yes": {"BOOL": True}, ":one": {"N": "1"}, ":minus_one": {"N": "-1"}},
                ReturnValues="UPDATED_NEW",
            )["Attributes"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            # Counted before (delivered again): the count as it stands. Its first
            # run may have died before firing the terminator; if it was the last
            # part, remaining is 0 and this run fires it.
            return self._counts(key)
        return int(answer["parts"]["N"]), int(answer["remaining"]["N"])

    def _counts(self, key: str) -> tuple[int, int | None]:
        """(parts counted, parts remaining) of chord counter ``key``; (0, None) once it is gone (the chord completed)."""
        item = self.client.get_item(**self._prepare_get_request(key), ConsistentRead=True,
                                    ProjectionExpression="parts, remaining").get("Item")
        if item is None:
            return 0, None
        # Before any part reports, the item holds the size set_chord_size added, no parts.
        return int(item.get("parts", {"N": 0})["N"]), int(item["remaining"]["N"])

    def parts_done(self, group_id: str) -> int:
        """How many tasks of chord ``group_id`` have reported so far (0 once the chord is done)."""
        return self._counts(str(self.get_key_for_chord(group_id)))[0]
