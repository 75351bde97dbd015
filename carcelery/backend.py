"""Celery's DynamoDB result backend, counting each chord part once, for chords of any size.

SQS delivers at least once: a task whose worker dies after it reported its
result but before it acknowledged its message runs again. Celery's counter
would then count that chord part twice and fire the terminator before the
last image is done. Here each part that reports writes a mark item of its own
(``<counter>-part-<task id>``) and counts in the chord's counter item in one
transaction (TransactWriteItems), only if its mark was not there: a second
report of the same task leaves the count as it was, and a worker dying
between the two writes cannot happen, as there is one write. The counter
holds three attributes whatever the chord's size: the parts counted, the
parts remaining (``set_chord_size`` adds the chord's size, each part takes one
away) and, once it is reached, the last part.

The chord's callback is immutable (``terminate.si(run)``): it reads the run's
records from the records table (``carcelery.pipeline.records``), not from the parts'
results. So the last part sends it without reading any part's result back,
and the group of every part's task id is never stored (Celery stores it as one
item, which DynamoDB's 400 KB would cap at about 8,000 parts).

The last part marks the counter ``sent`` once the callback is sent. When the
send fails, the chord is not failed, as Celery's would be (which left a run
"complete" with no output): the counter is left unmarked and the signal
``callback_not_sent`` goes out (the backend as sender; the chord's group id,
the callback, the exception). What that means is the chord's owner's to say:
the backend only counts parts and sends the callback. carcelery's runs
connect to it (``carcelery.pipeline.runs``): a failure no retry can fix is
stored as the run's, and otherwise ``watch_run`` sends the callback at its
next look.

**Debts** (Celery's code overridden, and why):
- ``on_chord_part_return`` replaces Celery's ``BaseKeyValueStoreBackend``
  version, which reads the group back, counts with ``incr`` (a count of
  deliveries, not of parts) and joins every part's result into one list in the
  last part's memory before sending the callback with it.
- ``_apply_chord_incr`` (private, what Celery's ``apply_chord`` is for
  backends that count) replaces the one that saves the group as one item.
- ``_store_result`` (private) replaces ``BaseKeyValueStoreBackend``'s read
  then write with one conditional PutItem (below), of Celery's item
  (``_get_result_meta``, ``_prepare_put_request``, ``encode``).
- ``_get_client`` (private) returns the process's client (``aws.client``) when
  the URL names only a region (the deployment's) and a table; else it is
  Celery's, keyed on what Celery's ``__init__`` parsed from the URL
  (``endpoint_url``, ``aws_region``, the credentials it passes to
  ``_get_client``) and on its client cache ``_client``.
- Items expire as Celery's do: ``_has_ttl``, ``time_to_live_seconds`` and
  ``_ttl_field`` (private) give the counter and the part marks the expiry
  ``_prepare_put_request`` gives results.
  Check them all when Celery is upgraded (written against 5.7.0);
  tests/test_upstream_celery.py runs Celery's own tests of its backend against this one.

A result is stored with one conditional PutItem, where Celery reads the
stored result first so as not to overwrite a success.

Every item written (results, chord counters, part marks) carries Celery's
``ttl`` attribute, now + the URL's ``ttl_seconds`` (CARCELERY_RESULT_EXPIRES):
DynamoDB's TTL, which provision and the CloudFormation template enable on the
table, deletes it then.

``celeryconfig.result_backend`` (celeryconfig.py) names this class in front of the
``dynamodb://`` URL (Celery's ``module:Class+url`` form).
"""

from __future__ import annotations

import os
import random
import time
import weakref
from typing import NamedTuple

from botocore.exceptions import ClientError
from celery import states
from celery.canvas import maybe_signature
from celery.utils.dispatch import Signal
from celery.utils.log import get_logger
from celery.backends.dynamodb import DynamoDBBackend
from kombu.utils.encoding import bytes_to_str

from . import aws
from .settings import settings

logger = get_logger(__name__)


# The counter's conditions: a part that leaves parts remaining, and the last one.
_NOT_LAST = "attribute_not_exists(remaining) OR remaining <> :one"
_LAST = "remaining = :one"
# Transactions of one part, at most (conflicts with other parts' counts, the last part's two).
MAX_ATTEMPTS = 20

# The last part of a chord could not send its callback (the counter is left unmarked): Celery's own
# signal class, sent by the backend with ``group_id``, ``callback`` (the signature) and ``exc``.
callback_not_sent = Signal(name="callback_not_sent", providing_args={"group_id", "callback", "exc"})


class Counts(NamedTuple):
    """A chord's counter: parts counted, parts remaining (None: no counter; below 0: its size was never
    set), the part that completed it, and whether its callback was sent."""

    parts: int
    remaining: int | None
    last: str | None
    sent: bool


# Backends with a client of their own (their URL's): a forked child makes its own, as with aws.client.
_own_clients: weakref.WeakSet[OncePerPartDynamoDBBackend] = weakref.WeakSet()


def _forget_own_clients() -> None:
    for backend in _own_clients:
        backend._client = None


os.register_at_fork(after_in_child=_forget_own_clients)


class OncePerPartDynamoDBBackend(DynamoDBBackend):

    # The URL's credentials: Celery's __init__ hands them to _get_client once.
    _url_credentials: tuple[str, str] | tuple[()] = ()

    def _get_client(self, access_key_id=None, secret_access_key=None):
        if access_key_id is not None:
            self._url_credentials = (access_key_id, secret_access_key)
        if self._client is not None:  # made before: Celery's cache of it
            return self._client
        if not self._url_credentials and self.endpoint_url is None and self.aws_region in (None, settings.region):
            # The deployment's DynamoDB: the process's client (aws.client, the ledger's
            # too), not a new boto3 session's: it is made again in a forked worker
            # process, where the parent's kept-alive connections must not carry a
            # second process's requests, and it spares each process a session (about
            # 0.1 s). The table and its TTL are provision's, not made here.
            return aws.client("dynamodb")
        # A DynamoDB the URL names (its endpoint, region or credentials): Celery's
        # client, which creates the table and sets its TTL as Celery does.
        _own_clients.add(self)
        return super()._get_client(*self._url_credentials)

    def _apply_chord_incr(self, header_result_args, body, **kwargs):
        # Debt (see the module's docstring): Celery saves the group here, every
        # part's task id in one item; the last part does not read it back.
        self.ensure_chords_allowed()

    def set_chord_size(self, group_id, chord_size):
        """Add the chord's size to its parts remaining; the dispatcher calls this before sending its last part.

        Parts that reported before it have taken their one away already, so
        the parts remaining reach 0 with the last part either way.
        """
        self.client.update_item(**self._counter_update(str(self.get_key_for_chord(group_id)), "remaining :size",
                                                       {":size": {"N": str(chord_size)}}))

    def on_chord_part_return(self, request, state, result, **kwargs):
        # Debt (see the module's docstring): Celery's version joins every part's result.
        if not request.group or not self._count_part(str(self.get_key_for_chord(request.group)), request.id):
            return
        callback = maybe_signature(request.chord, app=self.app)
        try:
            callback.delay()
        except Exception as exc:  # noqa: BLE001 - the chord's owner says what it means (callback_not_sent)
            logger.warning("chord %s: its callback %s (task %s) was not sent: %r",
                           request.group, callback.task, callback.id, exc)
            callback_not_sent.send(sender=self, group_id=request.group, callback=callback, exc=exc)
            return
        self.mark_callback_sent(request.group)

    def mark_callback_sent(self, group_id: str) -> None:
        """Mark chord ``group_id``'s counter: its callback was sent."""
        assign = {"sent": {"BOOL": True}, **self._expiry()}
        self.client.update_item(**self._prepare_get_request(str(self.get_key_for_chord(group_id))),
                                UpdateExpression="SET " + ", ".join(f"#{name} = :{name}" for name in assign),
                                ExpressionAttributeNames={f"#{name}": name for name in assign},
                                ExpressionAttributeValues={f":{name}": value for name, value in assign.items()})

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

    def _count_part(self, key: str, task_id: str) -> bool:
        """Count ``task_id`` in chord counter ``key`` once; whether it is the chord's last part.

        A part counted before (delivered again) is the last part if it was the
        one that reached 0: its first run may have died before sending the callback.
        """
        mark = {"Put": {"TableName": self.table_name, "ConditionExpression": "attribute_not_exists(#id)",
                        "ExpressionAttributeNames": {"#id": self._key_field.name},
                        "Item": {**self._prepare_get_request(f"{key}-part-{task_id}")["Key"], **self._expiry()}}}
        # Most parts leave parts remaining: one transaction. The last one fails
        # that condition, and counts again as the last, naming itself.
        condition = _NOT_LAST
        for attempt in range(1, MAX_ATTEMPTS + 1):
            count = {**self._counter_update(key, "parts :one, remaining :minus_one",
                                            {":one": {"N": "1"}, ":minus_one": {"N": "-1"}},
                                            {"last": {"S": task_id}} if condition == _LAST else {}),
                     "ConditionExpression": condition}
            try:
                self.client.transact_write_items(TransactItems=[mark, {"Update": count}])
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                marked, counted = (reason["Code"] for reason in exc.response["CancellationReasons"])
                if marked == "ConditionalCheckFailed":
                    return self._counts(key).last == task_id
                if counted == "ConditionalCheckFailed":
                    condition = _LAST if condition == _NOT_LAST else _NOT_LAST  # the other one holds
                elif "TransactionConflict" in (marked, counted):
                    # DynamoDB cancels a transaction on an item another one is writing (every
                    # part counts in one item): again, after a moment, as botocore retries throttling.
                    time.sleep(random.uniform(0, 0.05 * attempt))
                else:
                    raise
                continue
            return condition == _LAST
        raise RuntimeError(f"chord counter {key}: part {task_id} not counted after {MAX_ATTEMPTS} attempts")

    def _expiry(self) -> dict:
        """The expiry attribute of an item written now (none without ttl_seconds), as Celery's ``_prepare_put_request`` sets it."""
        if not self._has_ttl():
            return {}
        return {self._ttl_field.name: {self._ttl_field.data_type: str(int(time.time() + self.time_to_live_seconds))}}

    def _counter_update(self, key: str, add: str, values: dict, assign: dict | None = None) -> dict:
        """UpdateItem parameters of chord counter ``key``: ``ADD add`` (its ``values``), and SET
        ``assign`` (attribute: value) and the expiry, which each write of the counter pushes back."""
        assign = {**(assign or {}), **self._expiry()}
        update = {**self._prepare_get_request(key), "UpdateExpression": f"ADD {add}",
                  "ExpressionAttributeValues": {**values, **{f":{name}": value for name, value in assign.items()}}}
        if assign:
            # Names, as "ttl" is one of DynamoDB's reserved words.
            update["UpdateExpression"] += " SET " + ", ".join(f"#{name} = :{name}" for name in assign)
            update["ExpressionAttributeNames"] = {f"#{name}": name for name in assign}
        return update

    def _counts(self, key: str) -> Counts:
        """The counts of chord counter ``key``; ``Counts(0, None, None, False)`` if there is none."""
        item = self.client.get_item(**self._prepare_get_request(key), ConsistentRead=True,
                                    ProjectionExpression="parts, remaining, #last, sent",
                                    ExpressionAttributeNames={"#last": "last"}).get("Item")
        if item is None:
            return Counts(0, None, None, False)
        # Before any part reports, the item holds the size set_chord_size added, no parts.
        return Counts(int(item.get("parts", {"N": 0})["N"]), int(item["remaining"]["N"]),
                      item.get("last", {}).get("S"), item.get("sent", {}).get("BOOL", False))

    def chord(self, group_id: str) -> Counts:
        """The counts of chord ``group_id``: 0 remaining once it completed, ``sent`` once its callback was."""
        return self._counts(str(self.get_key_for_chord(group_id)))

    def chord_counts(self, group_id: str) -> tuple[int, int | None]:
        """(parts counted, parts remaining) of chord ``group_id``: 0 remaining once it completed."""
        return self.chord(group_id)[:2]
