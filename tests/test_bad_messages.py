"""A task message with any JSON in any field: the worker hands it to the pool or dead-letters it with a reason.

In this process, through the real receiving path of a worker: the transport's
``_on_messages_ready`` (kombu's SQS channel with carcelery's mixins), kombu's
message, and carcelery's Celery consumer with the app's real task strategies;
SQS is a recorder of the dead letters sent and the messages deleted.
"""

from __future__ import annotations

import base64
import copy
import inspect
import json
from types import SimpleNamespace
from unittest.mock import Mock

import kombu
import pytest
from celery.worker import state as worker_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carcelery import arguments, tasks  # noqa: F401 - tasks: the app knows them (strategies)
from carcelery.app import app
from carcelery.rejecting import Consumer
from carcelery.transport import Channel
from carcelery.transport.dead_letters import Unrunnable, envelope_problem

URL, DEAD = "https://sqs.example/1/q-text", "https://sqs.example/1/q-dead-letter"
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)
REF = {"bucket": "b", "key": "1.jpg", "etag": "e", "run": "0123456789ab"}
RUN = {"id": "0123456789ab", "bucket": "b", "prefix": ""}
RECORD = {"image": "1.jpg", "bucket": "b", "key": "1.jpg", "etag": "e", "car": True, "car_confidence": 99.0,
          "threshold": 90.0, "labels": [{"name": "Car", "confidence": 99.0,
                                         "boxes": [{"left": 0.1, "top": 0.1, "width": 0.5, "height": 0.5}]}],
          "text": []}
GOOD = {"carcelery.tasks.detect_car": ([REF], {}), "carcelery.tasks.recognize_text": ([RECORD], {"run": RUN["id"]}),
        "carcelery.tasks.terminate": ([RUN], {}), "carcelery.tasks.watch_run": ([RUN, "g", "t", 3, 1.5], {})}


class SQS:
    """The SQS client of the channel: records what is sent and deleted."""

    def __init__(self):
        self.sent, self.deleted = [], []

    def send_message(self, **request):
        self.sent.append(request)

    def delete_message(self, **request):
        self.deleted.append(request)


class Worker:
    """A worker's receiving path, in this process: the transport's channel, then carcelery's consumer."""

    def __init__(self):
        self.sqs, self.pool = SQS(), []
        channel = Channel.__new__(Channel)  # kombu's own __init__ connects to SQS
        channel.sqs = lambda queue=None: self.sqs
        channel._new_queue = lambda name, **_: f"https://sqs.example/1/q-{name}"
        # No restore of unacknowledged messages at exit: those handed to the (absent) pool.
        channel._qos, channel.hub, channel.do_restore = None, None, False
        channel.connection = SimpleNamespace(_callbacks={"q-text": self._consume}, _noack_queues=set(),
                                             client=SimpleNamespace(transport_options={}))
        self.channel = channel
        consumer = Consumer(on_task_request=self.pool.append, init_callback=Mock(), pool=Mock(), app=app,
                            timer=Mock(), controller=Mock(state=worker_state), hub=None, hostname="w@test")
        consumer.event_dispatcher, consumer.connection_errors = Mock(enabled=False), (ConnectionError,)
        consumer.update_strategies()
        # Celery's task consumer: kombu's Consumer, whose messages go to the consumer's handler.
        self.kombu = kombu.Consumer(channel, [], on_message=consumer.create_task_handler(), auto_declare=False,
                                    on_decode_error=consumer.on_decode_error, accept=["json"])

    def _consume(self, payload):
        # kombu's virtual Channel.basic_consume's callback.
        message = self.channel.Message(payload, channel=self.channel)
        self.channel.qos.append(message, message.delivery_tag)
        self.kombu._receive_callback(message)

    def receive(self, body: str) -> None:
        self.channel._on_messages_ready(URL, "q-text", {"Messages": [
            {"Body": body, "ReceiptHandle": "r1", "MessageId": "m1"}]})

    def outcome(self):
        """("pool", request) or ("dead", kind, reason): exactly one of them."""
        if self.pool:
            assert not self.sqs.sent and len(self.pool) == 1
            return ("pool", self.pool[0])
        (sent,) = self.sqs.sent
        assert sent["QueueUrl"] == DEAD and self.sqs.deleted == [{"QueueUrl": URL, "ReceiptHandle": "r1"}]
        kind, reason = sent["MessageAttributes"]["kind"]["StringValue"], sent["MessageAttributes"]["reason"]["StringValue"]
        assert Unrunnable(kind) and reason, sent
        return ("dead", Unrunnable(kind), reason)


@pytest.fixture(autouse=True)
def no_results(monkeypatch):
    # Celery marks an unknown task's id failed in the result backend; none here.
    monkeypatch.setattr(type(app.backend), "mark_as_failure", lambda *a, **k: None)


def message(task="carcelery.tasks.detect_car", args=None, kwargs=None, encoded=True, **fields):
    """An SQS body as carcelery's dispatcher sends it, with ``fields`` of the envelope replaced."""
    args, kwargs = GOOD[task] if args is None else (args, kwargs or {})
    body = base64.b64encode(json.dumps([args, kwargs, {"callbacks": None, "errbacks": None, "chain": None,
                                                       "chord": None}]).encode()).decode()
    envelope = {"body": body, "content-encoding": "utf-8", "content-type": "application/json",
                "headers": {"lang": "py", "task": task, "id": "i1", "retries": 0, "root_id": "i1",
                            "parent_id": None, "group": None, "eta": None, "expires": None,
                            "timelimit": [None, None]},
                "properties": {"body_encoding": "base64", "delivery_info": {"routing_key": "text"},
                               "priority": 0, "correlation_id": "i1"}}
    for path, value in fields.items():
        *parents, last = path.split("__")
        target = envelope
        for part in parents:
            target = target[part]
        target[last] = value
    text = json.dumps(envelope)
    return base64.b64encode(text.encode()).decode() if encoded else text


@pytest.mark.parametrize("task", sorted(GOOD))
@pytest.mark.parametrize("protocol", [1, 2])
def test_a_good_task_message_is_handed_to_the_pool(task, protocol):
    worker = Worker()
    if protocol == 1:
        args, kwargs = GOOD[task]
        worker.receive(message(headers={}, body=base64.b64encode(json.dumps(
            {"task": task, "id": "i1", "args": args, "kwargs": kwargs}).encode()).decode()))
    else:
        worker.receive(message(task))
    kind, request = worker.outcome()
    assert kind == "pool" and request.name == task


@pytest.mark.parametrize("body, kind, says", [
    ('{"properties": 5}', Unrunnable.ENVELOPE, "properties is a number"),  # killed worker B
    ("not JSON", Unrunnable.NOT_A_TASK, "not a Celery task message"),
    ("[1, 2]", Unrunnable.NOT_A_TASK, "not a Celery task message"),
    (message(properties__body_encoding="rot13"), Unrunnable.ENVELOPE, "body_encoding"),
    (message(body="%%%"), Unrunnable.ENVELOPE, "not base64"),
    (message(headers__compression="zip"), Unrunnable.CONTENT, "could not be decoded"),
    (message(**{"content-type": "application/x-python-serialize"}), Unrunnable.CONTENT, "accept JSON only"),
    (message(**{"content-type": "application/json"}, body=base64.b64encode(b"{no").decode()), Unrunnable.CONTENT,
     "could not be decoded"),
    (message(headers__task="carcelery.tasks.nope"), Unrunnable.UNKNOWN_TASK, "unknown task 'carcelery.tasks.nope'"),
    (message(headers__task=["x"]), Unrunnable.ARGUMENTS, "headers.task is an array"),
    (message(headers__eta=5), Unrunnable.ARGUMENTS, "headers.eta is a number"),
    (message(args=[{"bucket": "b"}]), Unrunnable.ARGUMENTS, "detect_car: ref has no key"),
    # Celery's protocol 1: all in the body.
    (message(headers={}, body=base64.b64encode(json.dumps({"task": "carcelery.tasks.detect_car", "id": "i1",
                                                           "args": [5]}).encode()).decode()),
     Unrunnable.ARGUMENTS, "detect_car: ref is a number"),
    (message("carcelery.tasks.terminate", args=[{**RUN, "id": "../x"}]), Unrunnable.ARGUMENTS, "12 hex digits"),
    (message("carcelery.tasks.watch_run", args=[RUN, "g"]), Unrunnable.ARGUMENTS, "missing a required argument"),
    (message("carcelery.tasks.recognize_text", args=[{**RECORD, "labels": [{"name": "Car"}]}]),
     Unrunnable.ARGUMENTS, "record.labels[0] has no confidence"),
])
def test_a_bad_message_is_dead_lettered_with_its_kind_and_reason(body, kind, says):
    worker = Worker()
    worker.receive(body)
    outcome = worker.outcome()
    assert outcome[:2] == ("dead", kind) and says in outcome[2], outcome


FIELDS = ["properties", "properties__delivery_info", "properties__body_encoding", "headers", "headers__task",
          "headers__id", "headers__retries", "headers__eta", "headers__expires", "headers__timelimit",
          "headers__root_id", "headers__group", "body", "content-type", "content-encoding"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(task=st.sampled_from(sorted(GOOD)), field=st.sampled_from(FIELDS), value=JSON, encoded=st.booleans())
def test_any_json_in_any_envelope_field_is_run_or_dead_lettered(task, field, value, encoded):
    worker = Worker()
    worker.receive(message(task, encoded=encoded, **{field: value}))
    worker.outcome()


def _replaced(value, path, new):
    """``value`` with the part at ``path`` (indexes and keys) replaced by ``new``."""
    if not path:
        return new
    copied = copy.deepcopy(value)
    target = copied
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copied


def _paths(value, path=()):
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for step, inner in items:
        yield from _paths(inner, (*path, step))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(task=st.sampled_from(sorted(GOOD)), data=st.data(), value=JSON)
def test_any_json_anywhere_in_the_arguments_is_run_or_dead_lettered(task, data, value):
    args, kwargs = GOOD[task]
    path = data.draw(st.sampled_from(list(_paths([args, kwargs]))))
    new_args, new_kwargs = _replaced([args, kwargs], path, value) if path else (value, {})
    worker = Worker()
    worker.receive(message(task, args=new_args, kwargs=new_kwargs) if isinstance(new_args, list) and isinstance(
        new_kwargs, dict) else message(task, body=base64.b64encode(json.dumps(value).encode()).decode()))
    outcome = worker.outcome()
    if outcome[0] == "pool":  # run: the arguments are of the shape the task reads
        assert arguments.problem({"task": task, "id": "i1"}, [new_args, new_kwargs, None]) is None


@given(body=st.text(max_size=40) | JSON.map(json.dumps))
@settings(max_examples=200, deadline=None)
def test_any_body_at_all_is_run_or_dead_lettered(body):
    worker = Worker()
    worker.receive(body)
    worker.outcome()


@given(payload=st.dictionaries(st.sampled_from(["properties", "body", "headers", "content-type", "content-encoding"]),
                               JSON))
def test_an_envelope_kombu_reads_has_no_problem_and_one_it_cannot_has_one(payload):
    problem = envelope_problem(payload)
    assert problem is None or problem.startswith("the envelope's ")
    if problem is None and "properties" in payload:
        kombu = Channel.__new__(Channel)
        kombu.Message(kombu._envelope_payload(payload, "", {"ReceiptHandle": "r"}, URL), channel=kombu)


@pytest.mark.parametrize("name", sorted(arguments.CHECKS))
def test_each_check_has_its_tasks_signature(name):
    def parameters(function):
        return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]

    assert parameters(arguments.CHECKS[name]) == parameters(app.tasks[name].run), \
        f"{name}'s arguments changed: change carcelery.arguments.{name.rpartition('.')[2]} with them"


def test_an_unreadable_envelope_on_the_events_queue_goes_to_the_events_dead_letter_queue():
    worker = Worker()
    events = worker.channel.canonical_queue_name("events")
    worker.channel.connection._callbacks[events] = worker._consume
    worker.channel._on_messages_ready("https://sqs.example/1/q-events", events, {"Messages": [
        {"Body": '{"properties": []}', "ReceiptHandle": "r1", "MessageId": "m1"}]})
    (sent,) = worker.sqs.sent
    assert sent["QueueUrl"] == "https://sqs.example/1/q-events-dead-letter"
