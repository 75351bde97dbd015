"""The tasks' error policy (``carcelery.policy``): bad images and permanent errors become records, transient ones
are retried with Celery's options, every task a ``Guarded``."""

import contextlib
import json
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from celery import Task

from carcelery import app, tasks
from carcelery.aws import errors
from carcelery.pipeline import notifications, results, runs
from carcelery.policy import MAX_RETRIES, Guarded
from carcelery.replacing import Replaceable
from carcelery.recognizers import ImageError, Label

REF = {"bucket": "b", "key": "k.jpg", "etag": "e"}


@contextlib.contextmanager
def tried(retries, task=tasks.detect_car):
    """``task`` as it runs its try after ``retries`` retries."""
    task.push_request(retries=retries)
    try:
        yield task
    finally:
        task.pop_request()


def attempt(retries, stage, work):
    with tried(retries) as task:
        return tasks._attempt(task, REF, stage, work)


def fail(exc):
    def work():
        raise exc
    return work


def test_image_errors_become_failure_records():
    record = attempt(0, "detect", fail(ImageError("k.jpg is empty")))
    assert record["error"] == {"stage": "detect", "reason": "k.jpg is empty"}
    assert record["image"] == "k.jpg" and record["status"] == "failed" and record["etag"] == "e"
    assert record["car"] is None, "no detection was made: no decision"


def test_a_car_whose_text_failed_stays_a_car_in_its_record(monkeypatch):
    stored = []

    class Unreadable:
        def text(self, image, regions):
            raise ImageError("k.jpg is truncated")

    monkeypatch.setattr(tasks, "recognizer", Unreadable)
    monkeypatch.setattr(tasks.records, "put", lambda record, run: stored.append(record))
    detected = results.detection("k.jpg", bucket="b", key="k.jpg", etag="e", labels=[Label("Car", 99.0)], threshold=90)
    assert tasks.recognize_text.apply((detected,), {"run": "0123456789ab"}).successful()
    (record,) = stored
    assert (record["car"], record["car_confidence"], record["labels"]) == (True, 99.0, detected["labels"])
    assert record["status"] == "failed" and record["error"] == {"stage": "text", "reason": "k.jpg is truncated"}


def test_permanent_aws_errors_are_not_retried():
    exc = ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
    record = attempt(0, "text", fail(exc))
    assert record["error"]["reason"] == ("GetObject on s3://b/k.jpg failed (NoSuchKey): the object is not in the bucket "
                                         "(deleted since it was listed?)")


@pytest.mark.parametrize("exc", [
    ClientError({"Error": {"Code": "ThrottlingException"}}, "DetectLabels"),
    ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "DetectLabels"),
    EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ConnectionResetError(),
])
def test_transient_errors_are_retried_then_recorded(exc):
    for retries in range(MAX_RETRIES):
        with pytest.raises(errors.Transient) as raised:
            attempt(retries, "detect", fail(exc))
        assert raised.value.__cause__ is exc and "image=k.jpg stage=detect" in str(raised.value)
    record = attempt(MAX_RETRIES, "detect", fail(exc))
    assert f"gave up after {MAX_RETRIES} retries" in record["error"]["reason"]


@pytest.mark.parametrize("code, says", [
    ("AccessDeniedException", "DetectLabels on s3://b/k.jpg failed (AccessDeniedException): "
                              "the credentials lack rekognition:DetectLabels; grant it (deploy/iam-policy.json, docs/aws.md)"),
    ("ExpiredTokenException", "DetectLabels on s3://b/k.jpg failed (ExpiredTokenException): "
                              "the AWS session token has expired; renew your credentials"),
])
def test_denied_and_expired_fail_the_image_at_once_naming_call_resource_permission(code, says):
    exc = ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "DetectLabels")
    record = attempt(0, "detect", fail(exc))
    assert record["error"] == {"stage": "detect", "reason": says}


def test_a_programming_error_fails_the_image_at_once(caplog):
    record = attempt(0, "text", fail(KeyError("labels")))
    assert record["error"] == {"stage": "text",
                               "reason": "KeyError: 'labels' (a programming error in carcelery, not retried)"}
    assert "Traceback" in caplog.text


def test_the_tasks_retry_with_celerys_options(monkeypatch):
    """In-process (apply): Celery's autoretry retries a throttled call, then the image has its record."""
    calls, stored = [], []

    class Throttled:
        def labels(self, image):
            calls.append(image.name)
            if len(calls) < 3:
                raise ClientError({"Error": {"Code": "ThrottlingException"}}, "DetectLabels")
            return [Label("Tree", 99.0)]

    monkeypatch.setattr(tasks, "recognizer", Throttled)
    monkeypatch.setattr(tasks, "threshold", lambda: 50.0)
    monkeypatch.setattr(tasks.records, "put", lambda record, run: stored.append(record))
    result = tasks.detect_car.apply((REF,))
    assert result.successful() and result.result["car"] is False and "error" not in result.result
    assert calls == ["k.jpg"] * 3 and len(stored) == 1
    assert tasks.detect_car.autoretry_for == (errors.Transient,) and tasks.detect_car.retry_backoff_max == 60


# Celery's Task names the policy's class sets for what Celery means by them.
CELERYS_OWN = {"max_retries", "on_replace"}


def test_every_task_is_guarded_and_reuses_no_name_of_celerys_task():
    ours = [task for name, task in app.tasks.items() if name.startswith("carcelery.")]
    assert len(ours) == 6 and all(isinstance(task, Guarded) for task in ours)
    for cls in (Guarded, Replaceable):
        defined = set(vars(cls)) - {"__module__", "__doc__", "__qualname__", "__firstlineno__", "__static_attributes__"}
        assert defined & set(dir(Task)) <= CELERYS_OWN, f"{cls.__name__} reuses {defined & set(dir(Task))}"


def test_a_hand_off_that_stays_transient_is_the_images_failure_record(monkeypatch):
    """The hand-off to Instance B retried, and on the last try a failure record: the chord part still completes."""
    stored = []
    monkeypatch.setattr(tasks, "recognizer", lambda: SimpleNamespace(labels=lambda image: [Label("Car", 99.0)]))
    monkeypatch.setattr(tasks, "threshold", lambda: 50.0)
    monkeypatch.setattr(tasks.records, "put", lambda record, run: stored.append(record))
    tries = []

    def replace(self, sig):
        tries.append(sig.name)
        raise ConnectionResetError("SQS went away")

    monkeypatch.setattr(Replaceable, "replace", replace)
    result = tasks.detect_car.apply((REF,))
    assert result.successful() and len(tries) == MAX_RETRIES + 1
    assert result.result["error"] == {"stage": "text", "reason": "ConnectionResetError: SQS went away "
                                                                 f"(gave up after {MAX_RETRIES} retries)"}
    assert stored == [result.result]


RUN = {"id": "r1", "bucket": "b", "prefix": ""}


def test_the_terminator_retries_a_transient_error_then_fails_the_run_naming_it(monkeypatch):
    writes = []

    def write(run, folder, uri):
        writes.append(run["id"])
        raise TRANSIENT

    monkeypatch.setattr(tasks.outputs, "write", write)
    result = tasks.terminate.apply((RUN,))
    assert len(writes) == MAX_RETRIES + 1 and isinstance(result.result, runs.RunFailed)
    assert str(result.result).startswith("run r1: the terminator could not write the run's files: ClientError: ")
    assert str(result.result).endswith(f"(gave up after {MAX_RETRIES} retries)")


def test_the_terminator_names_the_table_it_could_not_read(monkeypatch):
    denied = ClientError({"Error": {"Code": "AccessDeniedException"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
                         "Query")
    monkeypatch.setattr(tasks.outputs, "write", lambda run, folder, uri: (_ for _ in ()).throw(denied))
    result = tasks.terminate.apply((RUN,))
    assert isinstance(result.result, runs.RunFailed)
    assert f"Query on table {tasks.settings.records_table} failed (AccessDeniedException)" in str(result.result)


def test_a_look_at_a_run_that_fails_for_a_moment_is_retried(monkeypatch):
    """A transient error in watch_run: retried; the run is watched to its end, not left unwatched."""
    looks = []

    def ended(terminator_id):
        looks.append(terminator_id)
        if len(looks) < 3:
            raise TRANSIENT
        return "complete"

    monkeypatch.setattr(tasks.runs, "ended", ended)
    result = tasks.watch_run.apply((RUN, "g", "t"))
    assert result.successful() and result.result == {"run": "r1", "ended": "complete"} and len(looks) == 3


EVENTS = [{"kind": "created", "name": "ObjectCreated:Put", "bucket": "b", "key": "new.jpg", "etag": "e", "size": 3,
           "sequencer": "0055AED6DCD90281E5".ljust(40, "0")}]


def events_applied(monkeypatch, *outcomes):
    """``apply_events`` run in-process (apply) on EVENTS, ``stream.apply`` raising or returning ``outcomes`` in turn."""
    calls, aside = [], []

    def apply(batch):
        calls.append(batch)
        outcome = outcomes[min(len(calls), len(outcomes)) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(tasks.stream, "apply", apply)
    monkeypatch.setattr(tasks.notification_consumer, "set_aside", lambda body, reason: aside.append((json.loads(body), reason)))
    return tasks.apply_events.apply((EVENTS,)), calls, aside


TRANSIENT = ClientError({"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, "HeadObject")


def test_apply_events_retries_a_transient_error_with_the_image_tasks_options(monkeypatch):
    done = {"runs": ["r"], "images": 1, "removed": 0, "dropped": 0}
    result, calls, aside = events_applied(monkeypatch, TRANSIENT, TRANSIENT, done)
    assert result.successful() and result.result == done and calls == [EVENTS] * 3 and not aside
    options = ("autoretry_for", "max_retries", "retry_backoff", "retry_backoff_max", "retry_jitter")
    assert {o: getattr(tasks.apply_events, o) for o in options} == {o: getattr(tasks.detect_car, o) for o in options}


def test_events_that_cannot_be_applied_go_to_the_dead_letters_in_s3s_form_with_why(monkeypatch):
    result, calls, aside = events_applied(monkeypatch, TRANSIENT)
    assert len(calls) == MAX_RETRIES + 1
    [(body, reason)] = aside
    assert notifications.parse(json.dumps(body)).events == EVENTS
    assert reason.startswith("ClientError: ") and reason.endswith(f"(gave up after {MAX_RETRIES} retries)")
    assert result.successful() and result.result["dropped"] == 1 and result.result["error"] == reason

    denied = ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "HeadObject")
    result, calls, aside = events_applied(monkeypatch, denied)
    assert len(calls) == 1 and aside[0][1].startswith("HeadObject on bucket")
    assert "the credentials lack s3:GetObject" in aside[0][1]


def test_a_records_write_that_fails_for_a_moment_is_retried_and_one_refused_is_named(monkeypatch, caplog):
    writes = []

    def put(record, run):
        writes.append(record["image"])
        if len(writes) < 3:
            raise TRANSIENT
        if len(writes) == 3:
            raise ClientError({"Error": {"Code": "AccessDeniedException"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
                              "PutItem")

    monkeypatch.setattr(tasks, "recognizer", lambda: SimpleNamespace(labels=lambda image: [Label("Tree", 99.0)]))
    monkeypatch.setattr(tasks, "threshold", lambda: 50.0)
    monkeypatch.setattr(tasks.records, "put", put)
    result = tasks.detect_car.apply((REF,))
    assert len(writes) == 3 and isinstance(result.result, errors.Permanent)
    assert (f"image=k.jpg record failed: PutItem on table {tasks.settings.records_table} failed (AccessDeniedException): "
            "the credentials lack dynamodb:PutItem") in caplog.text
    assert tasks.detect_car.apply((REF,)).successful() and len(writes) == 4
