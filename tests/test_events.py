"""S3 event notifications: provisioning, reading S3's messages, and runs from a stream, with real processes.

One stack (its own bucket and queues, ``provision --events``, both workers,
no beat, no dispatch) takes every case in turn: the cases share its start-up.
"""

import contextlib
import json
import re
import socket
import time
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_pipeline import own_stack

from carcelery import aws
from carcelery.aws import provision
from carcelery import notification_consumer
from carcelery.pipeline import notifications, records, results
from carcelery.recognizers import CAR, Label, TextLine
from carcelery.settings import EVENTS_DEAD_LETTER_QUEUE, EVENTS_QUEUE, settings

TEST_EVENT = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-12-04T18:00:00.000Z", "Bucket": "b"}


def s3_event(name, bucket, key, etag="abc", sequencer="0055AED6DCD90281E5"):
    obj = {"key": key, "sequencer": sequencer}
    if name.startswith("ObjectCreated"):
        obj.update(eTag=etag, size=3)
    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": name,
                         "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"}, "object": obj}}]}


# Unit tests: S3's messages read.

def test_a_key_with_plus_for_spaces_is_decoded():
    [event], [] = notifications.parse(json.dumps(s3_event("ObjectCreated:Put", "b", "my+car+%281%29.jpg")))
    assert event["key"] == "my car (1).jpg" and event["kind"] == notifications.CREATED and event["etag"] == "abc"


def test_the_test_event_says_nothing():
    assert notifications.parse(json.dumps(TEST_EVENT)) == notifications.Parsed([], [])


@pytest.mark.parametrize("body, why", [
    ("not json", r"^not JSON: 'not json'$"),
    ("[1, 2]", r"^not a JSON object: \[1, 2\]$"),
    ('{"hello": "world"}', r"^no Records: keys \['hello'\]$"),
    ('{"Records": []}', r"^no Records: keys \['Records'\]$"),
    ("[" * 100_000 + "]" * 100_000, r"^JSON nested too deep to read"),
])
def test_a_body_that_is_not_an_s3_event_is_refused_with_why(body, why):
    with pytest.raises(notifications.NotAnEvent, match=why):
        notifications.parse(body)


def set_field(record, path, value):
    """Put ``value`` at dotted ``path`` of ``record`` (TypeError, KeyError: a parent is not an object)."""
    *parents, name = path.split(".")
    holder = record
    for parent in parents:
        holder = holder[parent]
    holder[name] = value
    return record


def record_with(path, value):
    """An S3 creation record whose field at dotted ``path`` holds ``value``."""
    return set_field(s3_event("ObjectCreated:Put", "b", "1.jpg")["Records"][0], path, value)


@pytest.mark.parametrize("path, value, why", [
    ("eventName", "x", r"event 'x' is neither ObjectCreated nor ObjectRemoved"),
    ("eventName", "ObjectRestore:Post", r"event 'ObjectRestore:Post' is neither ObjectCreated nor ObjectRemoved"),
    ("eventName", 5, r"eventName is 5, not a non-empty string"),
    ("s3.object.key", None, r"s3.object.key is None, not a non-empty string"),
    ("s3.object.key", 7, r"s3.object.key is 7, not a non-empty string"),
    ("s3.object.key", "a\ud800", r"s3.object.key is 'a\\ud800', not valid Unicode"),
    ("s3.object.size", "3", r"s3.object.size is '3', not a whole number of bytes"),
    ("s3.object.size", 1e400, r"s3.object.size is inf, not a whole number of bytes"),
    ("s3.object.size", True, r"s3.object.size is True, not a whole number"),
    ("s3.object.eTag", ["a"], r"s3.object.eTag is \['a'\], not a string"),
    ("s3.object.sequencer", "0055AED6DCD90281EZ", r"s3.object.sequencer is '0055AED6DCD90281EZ', not up to 40 hex"),
    ("s3.object.sequencer", "1" * 41, r"s3.object.sequencer is '1{41}', not up to 40 hexadecimal digits"),
    ("s3.object", "k", r"s3.object is 'k', not an object"),
    ("s3.bucket", {}, r"no s3.bucket.name"),
])
def test_a_record_that_is_not_an_s3_event_is_rejected_with_why_and_the_good_ones_kept(path, value, why):
    good = s3_event("ObjectCreated:Put", "b", "2.jpg")["Records"][0]
    body = json.dumps({"Records": [good, record_with(path, value), 5]})
    found, rejected = notifications.parse(body)
    assert [e["key"] for e in found] == ["2.jpg"]
    assert re.match(rf"record 1: {why}", str(rejected[0])), str(rejected[0])
    assert str(rejected[1]) == "record 2: the record is 5, not an object"
    assert notifications.why(rejected) == f"{rejected[0]}; {rejected[1]}"


# Any JSON value, as S3's fields or as the whole body (json.dumps writes inf as Infinity, as a sender could).
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                    max_leaves=10)
FIELDS = ["eventName", "s3", "s3.bucket", "s3.bucket.name", "s3.object", "s3.object.key", "s3.object.eTag",
          "s3.object.size", "s3.object.sequencer"]


def parsed_or_refused(body):
    """``notifications.parse(body)``: every event well formed, or the whole body refused (NotAnEvent with a reason)."""
    try:
        found, rejected = notifications.parse(body)
    except notifications.NotAnEvent as exc:
        assert str(exc)
        return [], [exc]
    for event in found:
        assert event["kind"] in (notifications.CREATED, notifications.REMOVED) and event["key"] and event["bucket"]
        assert isinstance(event["etag"], str) and isinstance(event["size"], int) and event["size"] >= 0
        assert re.fullmatch(r"[0-9A-F]{40}", event["sequencer"])
    assert all(isinstance(r, notifications.NotAnEvent) and str(r).startswith("record ") for r in rejected)
    return found, rejected


@given(JSON)
def test_any_json_body_is_read_or_refused_with_a_reason(value):
    parsed_or_refused(json.dumps(value))


@given(st.lists(st.tuples(st.sampled_from(FIELDS), JSON), max_size=3), st.integers(0, 3))
def test_any_json_in_any_field_of_a_record_gives_events_or_a_rejection_with_a_reason(changes, good):
    records = [s3_event("ObjectRemoved:Delete", "b", f"{n}.jpg")["Records"][0] for n in range(good)]
    changed = s3_event("ObjectCreated:Put", "b", "x.jpg")["Records"][0]
    for path, value in changes:
        try:
            set_field(changed, path, value)
        except (TypeError, KeyError):
            pass  # a parent replaced by a value that holds no fields: the changes before it stand
    found, rejected = parsed_or_refused(json.dumps({"Records": records + [changed]}))
    assert len(found) + len(rejected) == good + 1
    assert [e["key"] for e in found[:good]] == [f"{n}.jpg" for n in range(good)], "the good records are kept"
    # A batch that could not be applied is set aside in S3's form (tasks.apply_events): it reads back the same.
    if found:
        assert notifications.parse(json.dumps(notifications.notification(found))).events == found


def test_sequencers_compare_as_s3_says_right_padded():
    assert notifications.sequence("0055AED6DCD90281E5") > notifications.sequence("0055AED6DCD90281E4")
    assert notifications.sequence("0055AED6DCD90281E5") < notifications.sequence("0055AED6DCD90281E501")
    assert notifications.sequence("0055aed6dcd90281e5") == notifications.sequence("0055AED6DCD90281E500")


def test_of_one_keys_events_the_latest_counts():
    early, late = (notifications.parse(json.dumps(s3_event("ObjectCreated:Put", "b", "1.jpg", sequencer=s))).events[0]
                   for s in ("0A", "0B"))
    removed = notifications.parse(json.dumps(s3_event("ObjectRemoved:Delete", "b", "1.jpg", sequencer="0C"))).events[0]
    assert notifications.latest([late, early]) == [late]
    assert notifications.latest([early, removed, late]) == [removed]


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
    from carcelery.settings import BACKFILL_INTERVAL

    monkeypatch.setattr(notification_consumer, "queue_url", lambda name=None: "https://sqs/q")
    beat = Beat(app)
    notification_consumer.backfill_interval(beat)
    [entry] = beat.scheduler.updated.values()
    assert entry["task"] == "carcelery.tasks.scan_bucket" and entry["schedule"] == BACKFILL_INTERVAL
    monkeypatch.setattr(notification_consumer, "settings", settings.__class__(scan_interval_set=True))
    beat = Beat(app)
    notification_consumer.backfill_interval(beat)
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
        assert int(attributes["MaximumMessageSize"]) == 262144  # encryption: test_provision_encrypts_the_events_queue
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

        # A re-upload's creation (the same bytes: nothing to send), then the removal before it, delivered late:
        # 1.jpg is in the bucket, its record stays.
        etag = s3.head_object(Bucket=bucket, Key="1.jpg")["ETag"].strip('"')
        for event in (s3_event("ObjectCreated:Put", bucket, "1.jpg", etag, sequencer="9" * 18),
                      s3_event("ObjectRemoved:Delete", bucket, "1.jpg", sequencer="8" * 18)):
            since = len(stack.log("worker_a").encode())
            sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(event))
            wait_until(lambda since=since: "events: 1 in, runs -: 0 images sent, 0 removed, 1 dropped"
                       in stack.log("worker_a", since),
                       f"{event['Records'][0]['eventName']} of 1.jpg dropped")
        assert {r["key"] for r in records.read(bucket)} == {"1.jpg", "3.jpg"}

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


@contextlib.contextmanager
def events_stack(tmp_path, bucket):
    """Both workers on queues of their own, S3 events of ``bucket`` on; ``stack.events``, ``stack.dead_letters``: URLs."""
    with own_stack(tmp_path, CARCELERY_RECOGNIZER="noop", CARCELERY_BUCKET=bucket,
                   CARCELERY_EVENTS_WINDOW="0.3") as stack:
        done = stack.run("carcelery.aws.provision", "--events")
        assert done.returncode == 0, done.stderr
        stack.start_worker("worker_a", "detect", 1)
        stack.start_worker("worker_b", "text", 1)
        sqs, prefix = aws.client("sqs"), stack.env["CARCELERY_QUEUE_PREFIX"]
        stack.events = sqs.get_queue_url(QueueName=prefix + EVENTS_QUEUE)["QueueUrl"]
        stack.dead_letters = sqs.get_queue_url(QueueName=prefix + EVENTS_DEAD_LETTER_QUEUE)["QueueUrl"]
        wait_until(lambda: "events: consuming" in stack.log("worker_a"), "worker_a consuming the events", 30)
        yield stack


def test_an_event_met_by_a_transient_fault_reaches_output_txt_once_the_fault_clears(bucket, seed_dir, tmp_path,
                                                                                    faults):
    with events_stack(tmp_path, bucket) as stack:
        faults.set({"call": "s3:HeadObject", "match": [bucket, "late.jpg"], "fault": "transient", "times": None})
        aws.client("s3").put_object(Bucket=bucket, Key="late.jpg", Body=(seed_dir / "1.jpg").read_bytes())
        # botocore's own retries, then Celery's (RETRY): the task is retried, its events held in SQS.
        wait_until(lambda: re.search(r"apply_events\[[^]]+\] retry: Retry in", stack.log("worker_a")),
                   "apply_events retried by Celery")
        assert re.search(r"events=1 transient error, retrying: .*HeadObject operation \(reached max retries",
                         stack.log("worker_a")), "botocore's retries first"
        assert lines(stack) == []
        faults.set()
        cleared = time.monotonic()
        wait_until(lambda: lines(stack) == ["late.jpg: NOOP"], "late.jpg's line after the fault cleared", 120)
        print(f"fault cleared to late.jpg's line: {time.monotonic() - cleared:.1f} s")
        log = stack.log("worker_a")
        assert "Traceback" not in log and "events: 1 to" not in log, log[-3000:]
        got = aws.client("sqs").receive_message(QueueUrl=stack.dead_letters, WaitTimeSeconds=1).get("Messages", [])
        assert got == [], "nothing set aside"


def test_bad_messages_go_to_the_dead_letters_once_and_instance_a_goes_on(bucket, seed_dir, tmp_path):
    s3, sqs = aws.client("s3"), aws.client("sqs")
    # Uploaded before S3 events are on: only the good record of the mixed message below announces it.
    s3.put_object(Bucket=bucket, Key="early.jpg", Body=(seed_dir / "2.jpg").read_bytes())
    with events_stack(tmp_path, bucket) as stack:
        def one(path, value):
            return json.dumps({"Records": [record_with(path, value)]})

        good = s3_event("ObjectCreated:Put", bucket, "early.jpg", sequencer="1" * 18)["Records"][0]
        bad = {one("eventName", 5): "record 0: eventName is 5, not a non-empty string",
               one("s3.object.key", None): "record 0: s3.object.key is None, not a non-empty string",
               one("s3.object.key", 7): "record 0: s3.object.key is 7, not a non-empty string",
               one("s3.object.size", "3"): "record 0: s3.object.size is '3', not a whole number of bytes",
               one("s3.object.size", 0).replace('"size": 0', '"size": 1e400'):
                   "record 0: s3.object.size is inf, not a whole number of bytes",
               "[" * 100_000 + "]" * 100_000: "JSON nested too deep to read (S3's events are 5 levels deep)",
               "not json": "not JSON: 'not json'",
               "[1, 2]": "not a JSON object: [1, 2]",
               json.dumps({"Records": [good, 5]}): "record 1: the record is 5, not an object"}
        for body in [*bad, json.dumps(TEST_EVENT)]:
            sqs.send_message(QueueUrl=stack.events, MessageBody=body)
        got = {}

        def dead_lettered():
            for m in sqs.receive_message(QueueUrl=stack.dead_letters, MessageAttributeNames=["All"],
                                         MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
                assert m["Body"] not in got, "a message dead-lettered twice"
                got[m["Body"]] = m["MessageAttributes"]["reason"]["StringValue"]
            return len(got) >= len(bad)

        wait_until(dead_lettered, "every bad message in the dead-letter queue")
        assert got == bad
        # The mixed message's good record applied; then the next upload, on the same worker.
        wait_until(lambda: lines(stack) == ["early.jpg: NOOP"], "early.jpg's line, from the mixed message")
        s3.put_object(Bucket=bucket, Key="next.jpg", Body=(seed_dir / "3.jpg").read_bytes())
        wait_until(lambda: lines(stack) == ["early.jpg: NOOP", "next.jpg: NOOP"], "next.jpg's line")
        ping = stack.run("celery", "-A", "carcelery", "inspect", "ping", "-d", f"worker_a@{socket.gethostname()}",
                         "--timeout", "10")
        assert ping.returncode == 0 and "worker_a@" in ping.stdout, ping.stdout + ping.stderr
        assert stack.procs["worker_a"].poll() is None and "Unrecoverable error" not in stack.log("worker_a")
        assert not sqs.receive_message(QueueUrl=stack.dead_letters, WaitTimeSeconds=1).get("Messages"), "once each"


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
        return notifications.parse(json.dumps(s3_event(name, "b", key, etag, sequencer))).events[0]

    ledger_holds = {"b/same.jpg": {"etag": "new", "sequencer": ""},        # dispatched by a scan
                    "b/newer.jpg": {"etag": "x", "sequencer": notifications.sequence("09")},
                    "b/back.jpg": {"etag": "", "sequencer": notifications.sequence("02")}}  # removed, then uploaded again
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


class Message:
    """What the bootstep is handed: an SQS message as kombu gives it."""

    def __init__(self, body):
        self.body, self.delivery_info, self.settled = body, {"sqs_message": {"Body": body}}, []

    def ack(self):
        self.settled.append("ack")

    def reject(self, requeue):
        self.settled.append(f"reject requeue={requeue}")


def bootstep(monkeypatch, sent_aside, fails=False):
    """The events' consumer bootstep, in this process: its dead-letter queue and its task sends recorded."""
    def set_aside(body, reason):
        if fails:
            raise ConnectionResetError("SQS unreachable")
        sent_aside.append((body, reason))

    monkeypatch.setattr(notification_consumer, "set_aside", set_aside)
    step = notification_consumer.S3Events(SimpleNamespace())
    applied = []
    step.timer = SimpleNamespace(call_after=lambda seconds, send: SimpleNamespace(cancel=lambda: None))
    step.app = SimpleNamespace(signature=lambda name, args: SimpleNamespace(delay=lambda: applied.append(args[0])))
    return step, applied


def test_a_body_nested_too_deep_for_kombu_reaches_the_consumer_as_text():
    from carcelery.transport import Channel

    # kombu reads every SQS body as JSON first, for Celery's envelope: not one, it hands the text over.
    assert object.__new__(Channel)._prepare_json_payload("[" * 100_000 + "]" * 100_000) == {}


def test_a_message_with_a_bad_record_goes_to_the_dead_letters_once_and_its_good_records_are_applied(monkeypatch):
    aside = []
    step, applied = bootstep(monkeypatch, aside)
    good, bad = (s3_event("ObjectCreated:Put", "b", k)["Records"][0] for k in ("good.jpg", "bad.jpg"))
    bad["eventName"] = 5
    body = json.dumps({"Records": [good, bad]})
    message = Message(body)
    step.on_message(body, message)
    assert aside == [(body, "record 1: eventName is 5, not a non-empty string")]
    assert message.settled == [], "held until its good record's run is sent"
    step.send()
    assert [e["key"] for e in applied[0]] == ["good.jpg"] and message.settled == ["ack"]


def test_a_bug_in_reading_a_message_sends_it_to_the_dead_letters_and_the_worker_goes_on(monkeypatch):
    aside = []
    step, applied = bootstep(monkeypatch, aside)
    monkeypatch.setattr(notifications, "parse", lambda body: body.missing)
    message = Message("{}")
    step.on_message("{}", message)
    [(body, reason)] = aside
    assert body == "{}" and reason.startswith("AttributeError: ") and reason.endswith("(a programming error in carcelery)")
    assert message.settled == ["ack"] and not applied


def test_a_message_the_dead_letters_cannot_take_goes_back_to_its_queue(monkeypatch):
    step, _ = bootstep(monkeypatch, [], fails=True)
    message = Message("not json")
    step.on_message("not json", message)
    assert message.settled == ["reject requeue=True"] and not step.held


def test_a_removal_older_than_a_reupload_keeps_the_image(monkeypatch):
    """Uploaded (01), removed (02), uploaded again (03, same bytes): the creation comes first, then the removal."""
    from carcelery.pipeline import stream
    from carcelery.pipeline.images import S3Image

    monkeypatch.setattr(stream.ledger, "entries", lambda images: {"b/1.jpg": {"etag": "e", "sequencer": notifications.sequence("01")}})
    monkeypatch.setattr(stream, "_current", lambda e: S3Image("b", "1.jpg", "e", 3, e["sequencer"]))
    for name, sequencer in (("ObjectCreated:Put", "03"), ("ObjectRemoved:Delete", "02")):
        batch = notifications.parse(json.dumps(s3_event(name, "b", "1.jpg", "e", sequencer))).events
        assert stream.sort(batch) == ([], [], 1), f"{name}: the image is in the bucket, as dispatched"


def test_a_retried_batch_names_its_removals_again(monkeypatch):
    """apply_events retried after its removals were marked and before its run was sent: the run names them."""
    from carcelery.pipeline import stream

    monkeypatch.setattr(stream.ledger, "entries", lambda images: {"b/1.jpg": {"etag": "", "sequencer": notifications.sequence("02")},
                                                                  "b/2.jpg": {"etag": "e", "sequencer": notifications.sequence("02")}})
    monkeypatch.setattr(stream, "_current", lambda e: None)
    batch = [notifications.parse(json.dumps(s3_event(name, "b", key, "e", "02"))).events[0]
             for name, key in (("ObjectRemoved:Delete", "1.jpg"), ("ObjectCreated:Put", "2.jpg"))]
    send, removed, dropped = stream.sort(batch)
    assert [i.key for i in removed] == ["1.jpg"] and send == [] and dropped == 1, "2.jpg: delivered before"

    calls = []
    monkeypatch.setattr(stream, "remove", lambda images: calls.append(("remove", [i.key for i in images])))
    monkeypatch.setattr(stream, "dispatch", lambda bucket, prefix, **kw: calls.append(("run", kw["keys"]))
                        or {"id": "r"})
    stream.apply(batch[:1])
    assert calls == [("remove", ["1.jpg"]), ("run", ["1.jpg"])]


def test_provision_encrypts_the_events_queue_and_its_dead_letters(monkeypatch):
    made = {}

    def queue(name, attributes):
        made[name] = attributes
        return f"https://sqs/{name}"

    class Client:
        def __getattr__(self, call):
            return lambda **_: {"Account": "123456789012"}

    monkeypatch.setattr(provision, "queue", queue)
    monkeypatch.setattr(provision, "queue_arn", lambda url: "arn:aws:sqs:us-east-1:123456789012:" + url.rsplit("/")[-1])
    monkeypatch.setattr(provision.aws, "client", lambda service: Client())
    provision.events("photos")
    assert sorted(made) == sorted(settings.queue_name(q) for q in (EVENTS_QUEUE, EVENTS_DEAD_LETTER_QUEUE))
    assert all(attributes["SqsManagedSseEnabled"] == "true" for attributes in made.values()), made
