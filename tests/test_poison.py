"""Bad task messages: the workers go on, each bad message is in the dead-letter queue once, with its reason."""

import base64
import json
import time
import uuid

from test_monitoring import inspect_ping
from test_pipeline import dispatch, output, own_stack

from carcelery import aws


def envelope(task, args, kwargs=None, marker="", content_type="application/json", **headers):
    """A task message as kombu's SQS transport sends it (base64 of the JSON envelope)."""
    body = base64.b64encode(json.dumps([args, kwargs or {}, {}]).encode()).decode()
    message = {"body": body, "content-encoding": "utf-8", "content-type": content_type,
               "headers": {"task": task, "id": marker or uuid.uuid4().hex, **headers},
               "properties": {"body_encoding": "base64", "delivery_info": {}, "marker": marker}}
    return base64.b64encode(json.dumps(message).encode()).decode()


def bad_bodies(marker):
    """(queue, body, what its dead letter's reason says) of the bad messages sent."""
    ref = {"bucket": "b", "key": "k.jpg"}
    return [
        ("text", json.dumps({"properties": 5, "marker": marker}), "properties is a number"),
        ("text", f"not JSON, not base64 {marker}", "not a Celery task message"),
        ("text", json.dumps([marker, 1]), "not a Celery task message"),
        ("text", json.dumps({"properties": {}, "body": [1], "headers": {}, "m": marker}), "body is an array"),
        ("text", json.dumps({"properties": {}, "body": "", "headers": [marker]}), "headers is an array"),
        ("text", envelope("carcelery.tasks.nope", [], marker=f"{marker}-unknown"), "unknown task"),
        ("text", envelope("carcelery.tasks.terminate", [{"id": "x"}], marker=f"{marker}-xml",
                          content_type="application/xml"), "accept JSON only"),
        ("text", envelope("carcelery.tasks.recognize_text", [5], marker=f"{marker}-record"),
         "record is a number, not an object"),
        ("text", envelope("carcelery.tasks.watch_run", [], marker=f"{marker}-watch"), "missing a required argument"),
        ("detect", envelope("carcelery.tasks.detect_car", [{**ref, "key": 7}], marker=f"{marker}-ref"),
         "ref.key is a number"),
        ("detect", envelope("carcelery.tasks.detect_car", [ref], marker=f"{marker}-retries", retries="many"),
         "headers.retries is a string"),
        ("detect", json.dumps({"properties": {"delivery_info": 3}, "body": "", "m": marker}),
         "delivery_info is a number"),
    ]


def dead_letters(url, seen):
    """``seen`` (message id: (body, attributes)) with what the dead-letter queue at ``url`` has now."""
    batch = aws.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                              VisibilityTimeout=2, MessageAttributeNames=["All"]).get("Messages", [])
    seen.update({m["MessageId"]: (m["Body"], {k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()})
                 for m in batch})
    return seen


def test_bad_messages_go_to_the_dead_letter_queue_once_and_the_workers_go_on(emulator, bucket, seed_dir, tmp_path):
    marker = uuid.uuid4().hex
    with own_stack(tmp_path) as stack:
        prefix = stack.env["CARCELERY_QUEUE_PREFIX"]
        assert stack.run("carcelery.aws.provision").returncode == 0
        stack.start_worker("worker_a", "detect", 1)
        stack.start_worker("worker_b", "text", 1)
        sqs = aws.client("sqs")
        url = {name: sqs.get_queue_url(QueueName=f"{prefix}{name}")["QueueUrl"] for name in ("detect", "text")}
        dead = sqs.get_queue_url(QueueName=f"{prefix}dead-letter")["QueueUrl"]
        bad = bad_bodies(marker)
        for queue, body, _ in bad:
            sqs.send_message(QueueUrl=url[queue], MessageBody=body)

        deadline, seen = time.monotonic() + 180, {}
        while len(dead_letters(dead, seen)) < len(bad):
            died = [name for name, proc in stack.procs.items() if proc.poll() is not None]
            assert not died, f"{died} died: {stack.log(died[0])[-3000:]}"
            assert time.monotonic() < deadline, f"{len(seen)} of {len(bad)} in the dead-letter queue: {seen}"
        found = list(seen.values())
        ping = inspect_ping(stack)
        assert ping.returncode == 0 and "worker_a@" in ping.stdout and "worker_b@" in ping.stdout, ping.stdout
        assert sorted(body for body, _ in found) == sorted(body for _, body, _ in bad), "each one, once"
        for queue, body, says in bad:
            (attributes,) = [a for b, a in found if b == body]
            assert says in attributes["reason"] and attributes["queue"] == f"{prefix}{queue}", (body, attributes)
        for name in url.values():  # none left to come back (each is deleted just after it is sent)
            while (counts := sqs.get_queue_attributes(QueueUrl=name, AttributeNames=["All"])["Attributes"])[
                    "ApproximateNumberOfMessages"] + counts["ApproximateNumberOfMessagesNotVisible"] != "00":
                assert time.monotonic() < deadline, f"left in {name}: {counts}"
                time.sleep(0.1)

        aws.client("s3").put_object(Bucket=bucket, Key="7.jpg", Body=(seed_dir / "7.jpg").read_bytes())
        done = dispatch(stack, "--bucket", bucket)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "7.jpg: " in output(stack)
        dlq = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["All"])["Attributes"]
        assert int(dlq["ApproximateNumberOfMessages"]) + int(dlq["ApproximateNumberOfMessagesNotVisible"]) == len(bad)
