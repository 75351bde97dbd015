"""The emulator under concurrent requests, as the workers send them: no update lost."""

import uuid
from concurrent.futures import ThreadPoolExecutor

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
