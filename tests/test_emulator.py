"""The emulator: no update lost under concurrent requests, DynamoDB answers as moto itself gives them, empty uploads, SQS counts,
no web page's request served."""

import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.exceptions import ClientError

from carcelery import aws
from carcelery.settings import settings

THREADS = 8


def test_concurrent_updates_of_one_item_all_count(emulator):
    # Every worker process counts its chord parts in one DynamoDB item; a lost
    # update leaves a run one part short and its terminator never comes.
    dynamodb = aws.client("dynamodb")
    key = {"id": {"S": f"test-counter-{uuid.uuid4().hex}"}}
    parts = [f"part-{i}" for i in range(400)]

    def count(part):
        dynamodb.update_item(TableName=settings.results_table, Key=key,
                             UpdateExpression="SET #part = :yes ADD parts :one",
                             ConditionExpression="attribute_not_exists(#part)",
                             ExpressionAttributeNames={"#part": part},
                             ExpressionAttributeValues={":yes": {"BOOL": True}, ":one": {"N": "1"}})

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(count, parts))
    item = dynamodb.get_item(TableName=settings.results_table, Key=key, ConsistentRead=True)["Item"]
    assert int(item["parts"]["N"]) == len(parts)
    assert sum(1 for name in item if name.startswith("part-")) == len(parts)


def test_dynamodb_answers_as_moto_gives_them():
    # The emulator writes DynamoDB's answers itself (emulator._dynamodb_values_as_held):
    # every kind of value, nested and binary, comes back as moto's serializer gives it.
    from moto import mock_aws

    from carcelery.embedded.emulator import _dynamodb_values_as_held

    item = {"id": {"S": "k"}, "n": {"N": "1.5"}, "b": {"B": b"\x00\xffbin"}, "bs": {"BS": [b"a", b"\x01"]},
            "t": {"BOOL": True}, "z": {"NULL": True}, "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2"]},
            "m": {"M": {"x": {"B": b"q"}, "y": {"L": [{"S": "s"}, {"B": b"r"}, {"M": {}}]}}}, "l": {"L": []}}
    key = {"id": {"S": "k"}}

    def answers():
        with mock_aws():
            dynamodb = boto3.client("dynamodb", region_name="us-east-1")
            dynamodb.create_table(TableName="t", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                                  AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                                  BillingMode="PAY_PER_REQUEST")
            dynamodb.put_item(TableName="t", Item=item)
            got = [dynamodb.get_item(TableName="t", Key=key)["Item"],
                   dynamodb.batch_get_item(RequestItems={"t": {"Keys": [key]}})["Responses"],
                   dynamodb.update_item(TableName="t", Key=key, UpdateExpression="ADD c :one",
                                        ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="ALL_NEW")["Attributes"],
                   dynamodb.scan(TableName="t")["Items"]]
            with pytest.raises(ClientError) as failed:
                dynamodb.put_item(TableName="t", Item=item, ConditionExpression="attribute_not_exists(id)",
                                  ReturnValuesOnConditionCheckFailure="ALL_OLD")
            return got + [failed.value.response["Item"]]

    by_moto = answers()
    _dynamodb_values_as_held()
    assert answers() == by_moto
    assert by_moto[0] == item


def test_a_cancelled_transaction_leaves_every_item_as_it_was(emulator):
    # The emulator rolls back the items a transaction wrote, not a copy of each whole table.
    dynamodb, table = aws.client("dynamodb"), settings.results_table
    new, old, guard = ({"id": {"S": f"test-tx-{name}-{uuid.uuid4().hex}"}} for name in ("new", "old", "guard"))
    dynamodb.put_item(TableName=table, Item={**old, "n": {"N": "1"}})
    dynamodb.put_item(TableName=table, Item={**guard, "n": {"N": "1"}})
    writes = [{"Put": {"TableName": table, "Item": {**new, "n": {"N": "1"}}}},
              {"Update": {"TableName": table, "Key": old, "UpdateExpression": "ADD n :one",
                          "ExpressionAttributeValues": {":one": {"N": "1"}}}}]
    failing = {"Update": {"TableName": table, "Key": guard, "UpdateExpression": "ADD n :one",
                          "ConditionExpression": "n = :two", "ExpressionAttributeValues": {":one": {"N": "1"}, ":two": {"N": "2"}}}}
    with pytest.raises(ClientError) as raised:
        dynamodb.transact_write_items(TransactItems=[*writes, failing])
    assert [r["Code"] for r in raised.value.response["CancellationReasons"]] == ["None", "None", "ConditionalCheckFailed"]
    assert "Item" not in dynamodb.get_item(TableName=table, Key=new)
    assert dynamodb.get_item(TableName=table, Key=old)["Item"]["n"] == {"N": "1"}
    dynamodb.transact_write_items(TransactItems=writes)
    assert dynamodb.get_item(TableName=table, Key=new)["Item"]["n"] == {"N": "1"}
    assert dynamodb.get_item(TableName=table, Key=old)["Item"]["n"] == {"N": "2"}


def test_an_empty_object_is_stored_at_once(bucket):
    # boto3 asks for "100 Continue" before a PutObject's body; waitress then waited for an
    # empty body that had come already (emulator._complete_after_continue).
    from botocore.config import Config

    s3 = aws._session().client("s3", endpoint_url=settings.endpoint_url,
                               config=Config(read_timeout=5, retries={"max_attempts": 1}))
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""


def test_sqs_counts_messages_delayed_by_their_own_delay(emulator):
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName=f"delays-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="now")
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "1", "MessageBody": "later", "DelaySeconds": 60}])
    sqs.send_message(QueueUrl=url, MessageBody="1 s later", DelaySeconds=1)
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed", "ApproximateNumberOfMessagesNotVisible"]

    def counts():
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        return [int(attributes[name]) for name in names]

    assert counts() == [1, 2, 0]
    time.sleep(1.1)
    assert counts() == [2, 1, 0]
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in received) == ["1 s later", "now"]
    assert counts() == [0, 1, 2]
    sqs.delete_queue(QueueUrl=url)


def _form_upload(bucket: str, key: str, headers: dict[str, str]) -> int:
    """The status of an HTML form's upload (multipart POST) of ``key`` into ``bucket``, as a web page makes it."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n{key}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{key}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\nnot a car\r\n--{boundary}--\r\n").encode()
    request = urllib.request.Request(f"{settings.endpoint_url}/{bucket}", data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _stored(bucket: str, key: str) -> bool:
    return aws.client("s3").list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) > 0


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},  # a form's POST, or fetch(..., {mode: "no-cors"})
    {"Origin": "null"},  # a sandboxed frame's, a file:// page's
    {"Origin": f"http://127.0.0.1:{settings.emulator_port}", "Sec-Fetch-Site": "same-origin"},  # DNS rebinding
    {"Sec-Fetch-Site": "cross-site"},  # a browser that sends no Origin
])
def test_a_web_pages_upload_is_refused(bucket, headers):
    assert _form_upload(bucket, "evil.jpg", headers) == 403
    assert not _stored(bucket, "evil.jpg")


def test_the_same_upload_without_a_browsers_headers_is_stored(bucket):
    # What the refusal stands between: the emulator checks no credentials.
    assert _form_upload(bucket, "plain.jpg", {"Sec-Fetch-Site": "none"}) in (200, 204)
    assert _stored(bucket, "plain.jpg")


def test_a_web_pages_simple_get_is_refused(bucket):
    # An <img src> of the emulator's: a GET with no Origin, its answer hidden from the page, still made.
    request = urllib.request.Request(f"{settings.endpoint_url}/{bucket}", headers={"Sec-Fetch-Site": "cross-site"})
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(request, timeout=30)
