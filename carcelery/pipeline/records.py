"""The records table: one record (``model.Record``) per image, read back a bucket at a time.

Its items and keys are ``store``'s schema: hash ``bucket``, range ``order``
(the key in natural order), so that a Query pages through a bucket's records
in output.txt's order (1, 2, ..., 10), any number of them, a page (1 MB) at a
time. The dispatcher writes a pending record for each image before it sends
the image's task, and the task replaces it with the image's record. The
outputs are made from this table, so they describe the bucket as the store
knows it, whatever the output folder held before.

Records read back are ``model.record``'s (records kept before ``status`` existed
read as what they stood for); they are handed out as dicts, the shape their
readers index.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator, Mapping, cast

from botocore.exceptions import ClientError

from .. import aws
from . import model, results
from ..settings import settings
from .images import S3Image
from .model import RunId, Stage, Status, Stored
from .store import RECORDS_HASH as HASH, RECORDS_RANGE as RANGE, order, record_key

def _item(given: Mapping[str, Any], run_id: RunId) -> dict:
    record = model.record(given)
    item = {**record_key(given["bucket"], given["key"]),
            "record": {"S": json.dumps(record, sort_keys=True)}, "run": {"S": run_id}}
    if record["status"] == Status.PENDING:
        item["pending"] = {"BOOL": True}
    return item


def _record(item: dict) -> Stored:
    return cast(Stored, model.record(json.loads(item["record"]["S"])))


def put(record: model.Record, run_id: RunId) -> None:
    """Store an image's record (written by its task; a task run twice writes the same)."""
    aws.client("dynamodb").put_item(TableName=settings.records_table, Item=_item(record, run_id))


def put_pending(images: Iterable[S3Image], run_id: RunId) -> None:
    """Store a pending record for each of ``images``, which run ``run_id`` is about to send.

    Raises:
      botocore.exceptions.ClientError: the table is missing or not writable.
    """
    put_many((results.pending(image.key, bucket=image.bucket, key=image.key, etag=image.etag) for image in images),
             run_id)


def put_many(found: Iterable[model.Record], run_id: RunId) -> None:
    """Store records ``found`` of run ``run_id``, WRITE_BATCH per request.

    Raises:
      botocore.exceptions.ClientError: the table is missing or not writable.
    """
    dynamodb, chunk = aws.client("dynamodb"), []
    for record in found:
        chunk.append({"PutRequest": {"Item": _item(record, run_id)}})
        if len(chunk) == aws.WRITE_BATCH:
            aws.batch_write(dynamodb, settings.records_table, chunk)
            chunk = []
    if chunk:
        aws.batch_write(dynamodb, settings.records_table, chunk)


def delete(images: Iterable[S3Image]) -> None:
    """Delete the records of ``images`` (removed from their bucket): their lines leave the outputs at the next run.

    Raises:
      botocore.exceptions.ClientError: the table is missing or not writable.
    """
    requests = [{"DeleteRequest": {"Key": record_key(i.bucket, i.key)}} for i in images]
    dynamodb = aws.client("dynamodb")
    for start in range(0, len(requests), aws.WRITE_BATCH):
        aws.batch_write(dynamodb, settings.records_table, requests[start:start + aws.WRITE_BATCH])


def _items(bucket: str, prefix: str) -> Iterator[tuple[dict, Stored]]:
    """(item, record) of ``bucket``'s keys under ``prefix``, in natural order of their keys, page by page."""
    query = {"TableName": settings.records_table, "KeyConditionExpression": "#b = :b",
             "ExpressionAttributeNames": {"#b": HASH}, "ExpressionAttributeValues": {":b": {"S": bucket}},
             "ConsistentRead": True}
    for page in aws.client("dynamodb").get_paginator("query").paginate(**query):
        for item in page["Items"]:
            record = _record(item)
            if record["key"].startswith(prefix):
                yield item, record


def read(bucket: str, prefix: str = "") -> Iterator[Stored]:
    """The records of ``bucket`` (keys under ``prefix``), in natural order of their keys, page by page."""
    return (record for _, record in _items(bucket, prefix))


def with_runs(bucket: str, prefix: str = "") -> Iterator[tuple[RunId, Stored]]:
    """(run id, record) of ``bucket``'s records, as ``read``: the run that wrote each one with it."""
    return ((item["run"]["S"], record) for item, record in _items(bucket, prefix))


def get(bucket: str, keys: Iterable[str]) -> dict[str, Stored | None]:
    """The records of ``bucket``'s ``keys`` now, by ``order`` of each key: None for a key without one (removed).

    Raises:
      botocore.exceptions.ClientError: the table is missing or not readable.
    """
    found: dict[str, Stored | None] = {order(key): None for key in keys}
    wanted = [{HASH: {"S": bucket}, RANGE: {"S": at}} for at in found]
    for item in aws.batch_get(aws.client("dynamodb"), settings.records_table, wanted):
        found[item[RANGE]["S"]] = _record(item)
    return found


def pending(bucket: str, run_id: RunId, prefix: str = "") -> Iterator[Stored]:
    """The records of ``bucket`` that run ``run_id`` sent and that no task has replaced."""
    return (record for item, record in _items(bucket, prefix)
            if "pending" in item and item["run"]["S"] == run_id)


def fail(record: Mapping[str, Any], run_id: RunId, reason: str) -> bool:
    """Store ``record`` as failed with ``reason``, only if it is still pending in run ``run_id``.

    Returns:
      Whether it was (a result that came meanwhile stands).
    """
    failed = results.failure(record["image"], Stage.RESULT, reason, bucket=record["bucket"], key=record["key"],
                             etag=record.get("etag"))
    try:
        aws.client("dynamodb").put_item(
            TableName=settings.records_table, Item=_item(failed, run_id),
            ConditionExpression="#p = :yes AND #run = :run",
            ExpressionAttributeNames={"#p": "pending", "#run": "run"},
            ExpressionAttributeValues={":yes": {"BOOL": True}, ":run": {"S": run_id}})
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
        return False
    return True
