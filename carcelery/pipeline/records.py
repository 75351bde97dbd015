"""The store of result records: a DynamoDB table, one item per image, read back a bucket at a time.

Hash key ``bucket``, range key ``order``: the object key in natural order
(``order``), so that a Query pages through a bucket's records in output.txt's
order (1, 2, ..., 10), any number of them, a page (1 MB) at a time. An item
holds the record (JSON), the run that wrote it and, until its task ends,
``pending``: the dispatcher writes a pending item for each image before it
sends the image's task, and the task replaces it with the image's record. The
outputs are made from this table, so they describe the bucket as the store
knows it, whatever the output folder held before.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Iterable, Iterator

from botocore.exceptions import ClientError

from .. import aws
from ..aws.tables import RECORDS
from . import results
from ..settings import settings
from .images import S3Image

HASH, RANGE = RECORDS.hash, RECORDS.range
# DynamoDB's range keys stop at 1024 bytes; S3 keys may be as long.
ORDER_BYTES = 960


def order(key: str) -> str:
    """A string that sorts (as DynamoDB sorts: by UTF-8 bytes) as ``results.natural_key(key)`` does.

    Each text part, lowercased, ends with "\\x01", below every character of a
    key; each number is its digits after one character giving their count, so
    that 9 sorts before 10. The key's hash at the end keeps keys that sort
    alike (a.jpg, A.jpg) apart.
    """
    encoded = []
    for index, part in enumerate(re.split(r"(\d+)", key)):
        if index % 2:
            digits = str(int(part))
            encoded.append(chr(0x30 + len(digits)) + digits)
        else:
            encoded.append(part.lower() + "\x01")
    head = "".join(encoded).encode()[:ORDER_BYTES].decode(errors="ignore")
    return f"{head}\x01{hashlib.sha1(key.encode()).hexdigest()}"


def _item(record: dict, run_id: str, pending: bool = False) -> dict:
    item = {HASH: {"S": record["bucket"]}, RANGE: {"S": order(record["key"])},
            "record": {"S": json.dumps(record, sort_keys=True)}, "run": {"S": run_id}}
    if pending:
        item["pending"] = {"BOOL": True}
    return item


def put(record: dict, run_id: str) -> None:
    """Store an image's record (written by its task; a task run twice writes the same)."""
    aws.client("dynamodb").put_item(TableName=settings.records_table, Item=_item(record, run_id))


def put_pending(images: Iterable[S3Image], run_id: str) -> None:
    """Store a pending record for each of ``images``, which run ``run_id`` is about to send.

    Raises:
      botocore.exceptions.ClientError: the table is missing or not writable.
    """
    put_many((results.failure(image.key, "pending", f"no result yet (run {run_id})",
                              bucket=image.bucket, key=image.key, etag=image.etag) for image in images),
             run_id, pending=True)


def put_many(found: Iterable[dict], run_id: str, pending: bool = False) -> None:
    """Store records ``found`` of run ``run_id``, WRITE_BATCH per request (``pending``: not results yet).

    Raises:
      botocore.exceptions.ClientError: the table is missing or not writable.
    """
    dynamodb, chunk = aws.client("dynamodb"), []
    for record in found:
        chunk.append({"PutRequest": {"Item": _item(record, run_id, pending=pending)}})
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
    requests = [{"DeleteRequest": {"Key": {HASH: {"S": i.bucket}, RANGE: {"S": order(i.key)}}}} for i in images]
    dynamodb = aws.client("dynamodb")
    for start in range(0, len(requests), aws.WRITE_BATCH):
        aws.batch_write(dynamodb, settings.records_table, requests[start:start + aws.WRITE_BATCH])


def _items(bucket: str, prefix: str) -> Iterator[tuple[dict, dict]]:
    """(item, record) of ``bucket``'s keys under ``prefix``, in natural order of their keys, page by page."""
    query = {"TableName": settings.records_table, "KeyConditionExpression": "#b = :b",
             "ExpressionAttributeNames": {"#b": HASH}, "ExpressionAttributeValues": {":b": {"S": bucket}},
             "ConsistentRead": True}
    for page in aws.client("dynamodb").get_paginator("query").paginate(**query):
        for item in page["Items"]:
            record = json.loads(item["record"]["S"])
            if record["key"].startswith(prefix):
                yield item, record


def read(bucket: str, prefix: str = "") -> Iterator[dict]:
    """The records of ``bucket`` (keys under ``prefix``), in natural order of their keys, page by page."""
    return (record for _, record in _items(bucket, prefix))


def with_runs(bucket: str, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """(run id, record) of ``bucket``'s records, as ``read``: the run that wrote each one with it."""
    return ((item["run"]["S"], record) for item, record in _items(bucket, prefix))


def get(bucket: str, keys: Iterable[str]) -> dict[str, dict | None]:
    """The records of ``bucket``'s ``keys`` now, by ``order`` of each key: None for a key without one (removed).

    Raises:
      botocore.exceptions.ClientError: the table is missing or not readable.
    """
    found: dict[str, dict | None] = {order(key): None for key in keys}
    wanted = [{HASH: {"S": bucket}, RANGE: {"S": at}} for at in found]
    for item in aws.batch_get(aws.client("dynamodb"), settings.records_table, wanted):
        found[item[RANGE]["S"]] = json.loads(item["record"]["S"])
    return found


def pending(bucket: str, run_id: str, prefix: str = "") -> Iterator[dict]:
    """The records of ``bucket`` that run ``run_id`` sent and that no task has replaced."""
    return (record for item, record in _items(bucket, prefix)
            if "pending" in item and item["run"]["S"] == run_id)


def fail(record: dict, run_id: str, reason: str) -> bool:
    """Store ``record`` as failed with ``reason``, only if it is still pending in run ``run_id``.

    Returns:
      Whether it was (a result that came meanwhile stands).
    """
    failed = results.failure(record["image"], "result", reason, bucket=record["bucket"], key=record["key"],
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
