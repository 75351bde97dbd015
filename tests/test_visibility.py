"""Long tasks: one longer than the visibility timeout runs once; one over the time limit fails its image."""

import signal
import time
import uuid

import kombu
from botocore.exceptions import ClientError

from carcelery import aws
from carcelery.app import app
from carcelery.embedded.demo import Stack
from carcelery.transport import visibility


def test_extension_comes_every_third_of_the_visibility_timeout_at_least_a_second_apart():
    assert visibility.every(300) == 100 and visibility.every(3) == 1 and visibility.every(0) == 1


def test_the_messages_held_are_extended_and_those_acknowledged_or_gone_passed_over(emulator, caplog, monkeypatch):
    connection = app.connection_for_write()
    connection.transport_options["queue_name_prefix"] = f"t{uuid.uuid4().hex[:8]}-"
    try:
        chan = connection.default_channel
        queue = kombu.Queue("held", channel=chan)
        queue.declare()
        for n in range(4):
            kombu.Producer(chan).publish({"n": n}, routing_key="held")
        got = [queue.get(no_ack=False) for _ in range(4)]
        got[0].ack()
        url = got[1].delivery_info["sqs_queue"]
        # Deleted behind the worker's back (another consumer's delete after a redelivery): its handle is stale.
        aws.client("sqs").delete_message(QueueUrl=url, ReceiptHandle=got[1].delivery_info["sqs_message"]["ReceiptHandle"])
        assert chan.extend_held() == 2

        def refused(**_):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "ChangeMessageVisibilityBatch")
        monkeypatch.setattr(chan.sqs(queue="held"), "change_message_visibility_batch", refused)
        assert chan.extend_held() == 0
        assert "could not keep 3 messages of queue" in caplog.text and "sqs:ChangeMessageVisibility" in caplog.text
    finally:
        connection.release()


def test_a_task_longer_than_the_visibility_timeout_runs_once(emulator, bucket, seed_dir, tmp_path):
    # Each recognizer call waits 8 s; SQS hides a received message for 3 s only.
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    with Stack(tmp_path, {"CARCELERY_QUEUE_PREFIX": prefix, "CARCELERY_RECOGNIZER": "latency",
                          "CARCELERY_LATENCY": "8", "CARCELERY_LATENCY_JITTER": "0",
                          "CARCELERY_VISIBILITY_TIMEOUT": "3"}) as stack:
        stack.start_worker("worker_a", "detect", 2)
        stack.start_worker("worker_b", "text", 2)
        names = ["1.jpg", "2.jpg", "3.jpg"]
        for name in names:
            aws.client("s3").put_object(Bucket=bucket, Key=name, Body=(seed_dir / name).read_bytes())
        done = stack.run("carcelery.dispatch", "--bucket", bucket, "--wait", "--timeout", "300")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "3 images" in done.stdout and "0 failed" in done.stdout, done.stdout
        for name in names:
            ran = stack.log("worker_a").count(f"image={name} stage=detect")
            assert ran == 1, f"{name} was detected {ran} times:\n{stack.log('worker_a')[-3000:]}"
        # Waiting in the prefetch counts too: the text tasks queue behind each other in Instance B.
        text = stack.log("worker_b")
        assert all(text.count(f"image={name} stage=text") <= 1 for name in names), text[-3000:]


def received(stack, name):
    return stack.log(name).count("] received")


def test_a_worker_stopped_warm_keeps_the_message_of_its_running_task_hidden_to_its_end(emulator, bucket, seed_dir,
                                                                                        tmp_path):
    # The drain at scale-in: a warm stop lets the running task finish; meanwhile no other worker may get its message.
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    with Stack(tmp_path, {"CARCELERY_QUEUE_PREFIX": prefix, "CARCELERY_RECOGNIZER": "latency",
                          "CARCELERY_LATENCY": "8", "CARCELERY_LATENCY_JITTER": "0",
                          "CARCELERY_VISIBILITY_TIMEOUT": "3"}) as stack:
        for name in ("a1", "a2"):
            stack.start_worker(name, "detect", 1)
        stack.start_worker("b", "text", 1)
        aws.client("s3").put_object(Bucket=bucket, Key="3.jpg", Body=(seed_dir / "3.jpg").read_bytes())
        stack.run("carcelery.dispatch", "--bucket", bucket)
        deadline = time.monotonic() + 60
        while not (holder := next((n for n in ("a1", "a2") if received(stack, n)), None)):
            assert time.monotonic() < deadline, stack.log("a1")[-2000:] + stack.log("a2")[-2000:]
            time.sleep(0.2)
        other = "a2" if holder == "a1" else "a1"
        proc = stack.procs[holder]
        stack.kill(holder, signal.SIGTERM)
        assert proc.wait(60) == 0
        log = stack.log(holder)
        assert log.index("Warm shutdown") < log.index("image=3.jpg stage=detect"), "stopped while its task ran"
        assert received(stack, holder) + received(stack, other) == 1, stack.log(other)[-3000:]


def test_an_image_task_over_the_time_limit_fails_its_image_with_why_and_the_run_goes_on(emulator, bucket, seed_dir,
                                                                                        tmp_path):
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    with Stack(tmp_path, {"CARCELERY_QUEUE_PREFIX": prefix, "CARCELERY_RECOGNIZER": "latency",
                          "CARCELERY_POOL": "prefork", "CARCELERY_LATENCY": "6", "CARCELERY_LATENCY_JITTER": "0",
                          "CARCELERY_TASK_TIME_LIMIT": "2"}) as stack:
        stack.start_worker("worker_a", "detect", 1)
        stack.start_worker("worker_b", "text", 1)
        aws.client("s3").put_object(Bucket=bucket, Key="3.jpg", Body=(seed_dir / "3.jpg").read_bytes())
        done = stack.run("carcelery.dispatch", "--bucket", bucket, "--wait", "--timeout", "300")
        assert done.returncode == 1, done.stdout + done.stderr
        assert ("failed: 3.jpg at detect: ran longer than 2 s (CARCELERY_TASK_TIME_LIMIT)" in done.stdout), done.stdout
        assert stack.procs["worker_a"].poll() is None, "the worker goes on"
