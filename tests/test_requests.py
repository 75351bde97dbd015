"""What one run asks of AWS, request by request, as the emulator records it.

Each request costs SQS, S3 or DynamoDB time (and money on AWS); these are the
savings the pipeline counts on (docs/architecture.md, "Requests"), checked on a run of the
ten seed images in which every image is a car (noop recognizer), monitoring on
and nobody watching.
"""

import collections
import json

from test_iam import action, body, recorded, recorder
from test_pipeline import dispatch, own_stack

IMAGES = 10


def key_read(entry) -> str:
    """The item key a DynamoDB GetItem asked for."""
    key = json.loads(body(entry))["Key"]
    (value,) = (typed for field in key.values() for typed in field.values())
    return value


def test_one_run_makes_only_the_requests_it_needs(emulator, bucket, seed_dir, tmp_path):
    with own_stack(tmp_path, CARCELERY_RECOGNIZER="noop") as stack:
        prefix = stack.env["CARCELERY_QUEUE_PREFIX"]
        stack.start_worker("worker_a", "detect", 2)
        stack.start_worker("worker_b", "text", 2)
        recorder(emulator, "reset-recording")
        recorder(emulator, "start-recording")
        try:
            done = dispatch(stack, "--from", str(seed_dir), "--bucket", bucket)
        finally:
            recorder(emulator, "stop-recording")
        assert done.returncode == 0, done.stderr
        assert f"{IMAGES} images, {IMAGES} cars, 0 failed" in done.stdout
    entries = list(recorded(recorder(emulator, "download-recording")))
    calls = collections.Counter()
    reads = collections.Counter()
    for entry in entries:
        target = entry["headers"].get("X-Amz-Target", "")
        name = json.loads(body(entry)).get("QueueUrl", "").rsplit("/", 1)[-1] if target.startswith("AmazonSQS") else ""
        target = target.split(".")[-1]
        calls[target, name] += 1
        if target == "GetItem":
            reads[key_read(entry)] += 1
    # The dispatcher's ten tasks: one SendMessageBatch, no SendMessage.
    assert calls["SendMessageBatch", f"{prefix}detect"] == 1
    assert calls["SendMessage", f"{prefix}detect"] == 0
    # The workers delete the messages of done tasks in batches.
    for queue in ("detect", "text"):
        assert calls["DeleteMessage", f"{prefix}{queue}"] == 0
        assert 1 <= calls["DeleteMessageBatch", f"{prefix}{queue}"] < IMAGES
    # Nobody watches: no event is published.
    assert not [e for e in entries if action(e) == "sns:Publish"]
    # No part's result is read back (the terminator reads the records table): no
    # group, no batch of results (the one BatchGetItem is the ledger's); each part
    # counts in one transaction, the last in two.
    assert not [key for key in reads if "taskset-meta" in key] and calls["BatchGetItem", ""] == 1, reads
    assert calls["TransactWriteItems", ""] == IMAGES + 1
    assert calls["Query", ""] == 1, "the terminator reads the bucket's records in one page"
    # No part's result is read alone: the terminator's is (dispatch --wait follows it) and, on a loaded
    # machine, at most one other task's (Celery reads a result before it stores one: a watch_run look's,
    # a retried task's); ten parts read back would be ten more.
    task_results = [key for key in reads if "task-meta" in key]
    assert 1 <= len(task_results) <= 2, reads
