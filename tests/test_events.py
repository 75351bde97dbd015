"""S3 event notifications: provisioning, reading S3's messages, and runs from a stream, with real processes.

One stack (its own bucket and queues, ``provision --events``, both workers,
no beat, no dispatch) takes every case in turn: the cases share its start-up.
"""

import json
import re
import time

import pytest
from test_pipeline import own_stack

from carcelery import aws
from carcelery.aws import provision
from carcelery import events as s3events
from carcelery.pipeline import events, records, results
from carcelery.recognizers import CAR, Label, TextLine
from carcelery.settings import EVENTS_DEAD_LETTER_QUEUE, EVENTS_QUEUE

TEST_EVENT = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-12-04T18:00:00.000Z", "Bucket": "b"}


def s3_event(name, bucket, key, etag="abc", sequencer="0055AED6DCD90281E5"):
    obj = {"key": key, "sequencer": sequencer}
    if name.startswith("ObjectCreated"):
        obj.update(eTag=etag, size=3)
    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": name,
                         "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"}, "object": obj}}]}


# Unit tests: S3's messages read.

def test_a_key_with_plus_for_spaces_is_decoded():
    [event] = events.parse(json.dumps(s3_event("ObjectCreated:Put", "b", "my+car+%281%29.jpg")))
    assert event["key"] == "my car (1).jpg" and event["kind"] == events.CREATED and event["etag"] == "abc"


def test_the_test_event_says_nothing():
    assert events.parse(json.dumps(TEST_EVENT)) == []


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '{"hello": "world"}', '{"Records": [{"eventName": "x"}]}',
                                  json.dumps(s3_event("ObjectRestore:Post", "b", "1.jpg"))])
def test_a_body_that_is_not_an_s3_event_is_refused_with_why(body):
    with pytest.raises(events.NotAnEvent):
        events.parse(body)


def test_sequencers_compare_as_s3_says_right_padded():
    assert events.sequence("0055AED6DCD90281E5") > events.sequence("0055AED6DCD90281E4")
    assert events.sequence("0055AED6DCD90281E5") < events.sequence("0055AED6DCD90281E501")
    assert events.sequence("0055aed6dcd90281e5") == events.sequence("0055AED6DCD90281E500")


def test_of_one_keys_events_the_latest_counts():
    early, late = (events.parse(json.dumps(s3_event("ObjectCreated:Put", "b", "1.jpg", sequencer=s)))[0]
                   for s in ("0A", "0B"))
    removed = events.parse(json.dumps(s3_event("ObjectRemoved:Delete", "b", "1.jpg", sequencer="0C")))[0]
    assert events.latest([late, early]) == [late]
    assert events.latest([early, removed, late]) == [removed]


def test_the_queue_policy_lets_only_s3_send_for_one_bucket_and_account():
    policy = provision.events_policy("arn:aws:sqs:us-east-1:123456789012:q", "photos", "123456789012")
    [statement] = policy["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"} and statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": "arn:aws:s3:::photos"},
                                      "StringEquals": {"aws:SourceAccount": "123456789012"}}


class Scheduler:
    def __init__(self):
        self.updated = {}

    def update_from_dict(self, entries):
        self.updated.update(entries)


class Beat:
    def __init__(self, app):
        self.app, self.scheduler = app, Scheduler()


def test_with_events_the_beats_scan_is_the_backfill_unless_its_interval_is_set(monkeypatch):
    from carcelery.app import app
    from carcelery.settings import BACKFILL_INTERVAL, settings

    monkeypatch.setattr(s3events, "queue_url", lambda name=None: "https://sqs/q")
    beat = Beat(app)
    s3events.backfill_interval(beat)
    [entry] = beat.scheduler.updated.values()
    assert entry["task"] == "carcelery.tasks.scan_bucket" and entry["schedule"] == BACKFILL_INTERVAL
    monkeypatch.setattr(s3events, "settings", settings.__class__(scan_interval_set=True))
    beat = Beat(app)
    s3events.backfill_interval(beat)
    assert beat.scheduler.updated == {}


# Integration: one stack, every case.

def lines(stack):
    path = stack.output_dir / results.OUTPUT
    return path.read_text().splitlines() if path.exists() else []


def wait_until(check, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"not within {timeout} s: {what}")


def test_uploads_and_removals_reach_output_txt_by_events(emulator, bucket, seed_dir, tmp_path):
    with own_stack(tmp_path, CARCELERY_RECOGNIZER="noop", CARCELERY_BUCKET=bucket,
                   CARCELERY_EVENTS_WINDOW="0.3") as stack:
        # Instance A's worker, started before the events queue exists, consumes it once it does.
        stack.start_worker("worker_a", "detect", 1)
        done = stack.run("carcelery.aws.provision", "--events")
        assert done.returncode == 0, done.stderr
        prefix = stack.env["CARCELERY_QUEUE_PREFIX"]
        sqs, s3 = aws.client("sqs"), aws.client("s3")
        queue = sqs.get_queue_url(QueueName=prefix + EVENTS_QUEUE)["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        assert attributes["SqsManagedSseEnabled"] == "true" and int(attributes["MaximumMessageSize"]) == 262144
        assert EVENTS_DEAD_LETTER_QUEUE in json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
        assert json.loads(attributes["Policy"])["Statement"][0]["Condition"]["ArnEquals"] == {
            "aws:SourceArn": f"arn:aws:s3:::{bucket}"}
        stack.start_worker("worker_b", "text", 1)
        wait_until(lambda: "events: consuming" in stack.log("worker_a"), "worker_a consuming the events", 30)
        assert "events: no queue" in stack.log("worker_a")
        assert not re.search(r"events: (no queue|consuming)", stack.log("worker_b")), "Instance B's worker stays out"

        # An upload becomes a line; S3's test event (sent when provision set the notification) does nothing.
        s3.put_object(Bucket=bucket, Key="1.jpg", Body=(seed_dir / "1.jpg").read_bytes())
        wait_until(lambda: lines(stack) == ["1.jpg: NOOP"], "1.jpg's line")
        # A key with spaces (S3 sends "my+car.jpg"), and a key that is not an image.
        s3.put_object(Bucket=bucket, Key="my car.jpg", Body=(seed_dir / "2.jpg").read_bytes())
        s3.put_object(Bucket=bucket, Key="notes.txt", Body=b"not an image")
        wait_until(lambda: lines(stack) == ["1.jpg: NOOP", "my car.jpg: NOOP"], "my car.jpg's line")

        # The same event twice, then an older event of a key after a newer one: nothing is sent again.
        [created] = [json.dumps(s3_event("ObjectCreated:Put", bucket, "1.jpg",
                                         s3.head_object(Bucket=bucket, Key="1.jpg")["ETag"].strip('"'),
                                         sequencer="7" * 18))]
        older = json.dumps(s3_event("ObjectCreated:Put", bucket, "1.jpg", "0ld", sequencer="0" * 17 + "1"))
        for body in (created, created, older):
            sqs.send_message(QueueUrl=queue, MessageBody=body)
        # A body that is not an S3 event: to the dead-letter queue, with why, once.
        sqs.send_message(QueueUrl=queue, MessageBody="hello, not an event")
        dead = sqs.get_queue_url(QueueName=prefix + EVENTS_DEAD_LETTER_QUEUE)["QueueUrl"]
        got = []
        wait_until(lambda: got.extend(sqs.receive_message(QueueUrl=dead, MessageAttributeNames=["All"],
                                                          WaitTimeSeconds=1).get("Messages", [])) or got,
                   "the junk body in the dead-letter queue")
        assert got[0]["Body"] == "hello, not an event"
        assert got[0]["MessageAttributes"]["reason"]["StringValue"].startswith("not JSON")

        # A removal takes the line out; an event for an object already gone sends nothing.
        s3.delete_object(Bucket=bucket, Key="my car.jpg")
        wait_until(lambda: lines(stack) == ["1.jpg: NOOP"], "my car.jpg's line gone")
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(
            s3_event("ObjectCreated:Put", bucket, "gone.jpg", sequencer="8" * 18)))
        s3.put_object(Bucket=bucket, Key="3.jpg", Body=(seed_dir / "3.jpg").read_bytes())
        wait_until(lambda: lines(stack) == ["1.jpg: NOOP", "3.jpg: NOOP"], "3.jpg's line")

        # The beat's scan as the backfill: it removes the record of an image removed while events were off.
        ghost = results.with_text(results.detection("ghost.jpg", bucket=bucket, key="ghost.jpg", etag="x",
                                                    labels=[Label(CAR, 100.0)], threshold=90), [TextLine("BOO", 99.0)])
        records.put(ghost, "")
        stack.env["CARCELERY_SCAN_INTERVAL"] = "1"
        stack.start("beat", ["-m", "celery", "-A", "carcelery", "beat", "--loglevel", "INFO",
                             "--schedule", str(tmp_path / "beat-schedule")], "beat: Starting")
        wait_until(lambda: re.search(r"scan_bucket\[.*'removed': 1", stack.log("worker_a")), "the backfill's removal")
        assert {r["key"] for r in records.read(bucket)} == {"1.jpg", "3.jpg"}
        wait_until(lambda: "ghost.jpg" not in (stack.output_dir / results.RESULTS).read_text(), "ghost gone")

        log = stack.log("worker_a")
        detected = [line.split("image=")[1].split()[0] for line in log.splitlines() if "stage=detect" in line]
        assert sorted(detected) == ["1.jpg", "3.jpg", "my"], "each image recognized once, none gone, no duplicate"
        assert "Traceback" not in log, log[-3000:]


@pytest.mark.integration
def test_the_demo_watches_uploads_become_lines(seed_dir, tmp_path, port):
    from carcelery.embedded.demo import Stack

    stack = Stack(tmp_path, {"CARCELERY_EMULATOR_PORT": str(port), "CARCELERY_OUTPUT_DIR": str(tmp_path / "out"),
                             "CARCELERY_RECOGNIZER": "noop", "CARCELERY_QUEUE_PREFIX": "watch-"})
    done = stack.run("carcelery.embedded.demo", "--watch", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    printed = [line.strip() for line in done.stdout.splitlines() if line.startswith("  ")]
    assert printed == [f"{n}.jpg: NOOP" for n in range(1, 11)]
    assert "events: s3://" in done.stdout and "uploading 1.jpg" in done.stdout


def test_a_batch_is_sorted_into_images_to_send_and_removed(monkeypatch):
    from carcelery.pipeline import stream
    from carcelery.pipeline.images import S3Image

    def event(name, key, sequencer, etag="new"):
        return events.parse(json.dumps(s3_event(name, "b", key, etag, sequencer)))[0]

    ledger_holds = {"b/same.jpg": {"etag": "new", "sequencer": ""},        # dispatched by a scan
                    "b/newer.jpg": {"etag": "x", "sequencer": events.sequence("09")},
                    "b/back.jpg": {"etag": "", "sequencer": events.sequence("02")}}  # removed, then uploaded again
    in_bucket = {"fresh.jpg", "same.jpg", "newer.jpg", "back.jpg"}
    monkeypatch.setattr(stream.ledger, "entries", lambda images: ledger_holds)
    monkeypatch.setattr(stream, "_current", lambda e: S3Image("b", e["key"], e["etag"], 1, e["sequencer"])
                        if e["key"] in in_bucket else None)
    batch = [event("ObjectCreated:Put", "fresh.jpg", "01"), event("ObjectCreated:Put", "fresh.jpg", "01"),
             event("ObjectCreated:Put", "same.jpg", "05"), event("ObjectCreated:Put", "newer.jpg", "03"),
             event("ObjectCreated:Put", "gone.jpg", "04"), event("ObjectRemoved:Delete", "old.jpg", "06"),
             event("ObjectCreated:Put", "notes.txt", "07"), event("ObjectCreated:Put", "back.jpg", "08")]
    send, removed, dropped = stream.sort(batch)
    assert [i.key for i in send] == ["fresh.jpg", "back.jpg"]
    assert [i.key for i in removed] == ["gone.jpg", "old.jpg"] and dropped == 4
