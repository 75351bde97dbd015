"""The store's items (``pipeline.store``): where each lives, under which key, and records kept in an older shape."""

import json
import uuid

from carcelery import aws
from carcelery.pipeline import records, store
from carcelery.pipeline.model import Status
from carcelery.settings import settings


def test_a_runs_skipped_counts_are_a_ledger_item_that_expires_and_nothing_of_celerys_table(emulator):
    run = uuid.uuid4().hex[:12]
    assert store.skipped(run) == {}
    store.note_skipped(run, {"not an image": 2, "a folder": 1})
    assert store.skipped(run) == {"a folder": 1, "not an image": 2}
    dynamodb = aws.client("dynamodb")
    item = dynamodb.get_item(TableName=settings.ledger_table, Key={"image": {"S": f"run:{run}"}})["Item"]
    assert int(item[store.EXPIRES]["N"]) > 0, "it expires"
    ttl = dynamodb.describe_time_to_live(TableName=settings.ledger_table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", store.EXPIRES)
    celerys = dynamodb.scan(TableName=settings.results_table, FilterExpression="contains(#id, :run)",
                            ExpressionAttributeNames={"#id": "id"}, ExpressionAttributeValues={":run": {"S": run}})
    assert celerys["Items"] == []
    store.note_skipped(run + "x", {"a folder": 0})
    assert "Item" not in dynamodb.get_item(TableName=settings.ledger_table, Key={"image": {"S": f"run:{run}x"}})


def test_a_pending_record_kept_as_a_failure_reads_as_pending_and_fails_once(emulator):
    bucket, run = f"r-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:12]
    # As the dispatcher wrote a pending image before records had a status.
    old = {"image": "1.jpg", "bucket": bucket, "key": "1.jpg", "etag": "e", "car": False, "car_confidence": 0.0,
           "labels": [], "text": [], "error": {"stage": "pending", "reason": f"no result yet (run {run})"}}
    aws.client("dynamodb").put_item(TableName=settings.records_table, Item={
        **store.record_key(bucket, "1.jpg"), "record": {"S": json.dumps(old)}, "run": {"S": run},
        "pending": {"BOOL": True}})
    (pending,) = records.pending(bucket, run)
    assert pending["status"] == Status.PENDING and "error" not in pending and pending["car"] is None
    assert records.fail(pending, run, "no result") is True
    (failed,) = records.read(bucket)
    assert failed["status"] == Status.FAILED and failed["error"] == {"stage": "result", "reason": "no result"}
    assert list(records.pending(bucket, run)) == []
