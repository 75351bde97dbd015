"""The transport's own behaviour: events only while watched, quiet close, kombu's queue deletion, no prefetch limit."""

import json
import time
import uuid

import kombu
import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.transport import SQS

from carcelery import aws, transport
from carcelery.app import app
from carcelery.aws.errors import queue_missing
from carcelery.transport import broadcast


def channel():
    connection = app.connection_for_write()
    connection.transport_options["queue_name_prefix"] = f"t{uuid.uuid4().hex[:8]}-"
    return connection, connection.default_channel


def test_events_go_out_only_while_a_queue_is_subscribed(emulator):
    connection, chan = channel()
    try:
        exchange = app.conf.event_exchange
        assert not chan._watched(exchange)
        sqs, sns = aws.client("sqs"), aws.client("sns")
        url = sqs.create_queue(QueueName=f"watcher-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        topic = chan.fanout._get_or_create_topic(exchange)
        subscription = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)["SubscriptionArn"]
        assert not chan._watched(exchange), "the answer holds for WATCH_SECONDS"
        time.sleep(broadcast.WATCH_SECONDS)
        assert chan._watched(exchange)
        sns.unsubscribe(SubscriptionArn=subscription)
        sqs.delete_queue(QueueUrl=url)
    finally:
        connection.release()


def test_events_go_out_when_the_subscribers_cannot_be_listed(emulator, monkeypatch, caplog):
    class Refusing:
        def list_subscriptions_by_topic(self, **_):
            raise ClientError({"Error": {"Code": "AuthorizationError", "Message": "no"}}, "ListSubscriptionsByTopic")

    connection, chan = channel()
    try:
        chan.fanout._get_or_create_topic(app.conf.event_exchange)  # made (and its ARN kept) before
        monkeypatch.setattr(chan.fanout, "get_client", lambda *_: Refusing())
        assert chan._watched(app.conf.event_exchange)
        assert "allow sns:ListSubscriptionsByTopic" in caplog.text
    finally:
        connection.release()


class Hub:
    """A worker's event loop, as far as the transport's receives schedule on it: what they ask for."""

    def __init__(self):
        self.scheduled = []

    def call_soon(self, callback, *args):
        self.scheduled.append(args)

    def call_later(self, delay, callback, *args):
        self.scheduled.append(args)


def test_a_receive_that_completes_after_close_schedules_nothing(emulator):
    connection, chan = channel()
    try:
        chan.hub = Hub()
        chan._loop1("detect", 1)
        chan._loop1("detect", None)
        assert chan.hub.scheduled == [("detect",), ("detect",)], "an open channel schedules the next receive"
        chan.close()
        chan.hub = Hub()
        for fetched in (1, None):
            chan._loop1("detect", fetched)  # kombu's own raised AttributeError here, at some worker shutdowns
        assert chan.hub.scheduled == []
    finally:
        chan.hub = None
        connection.release()


def test_kombus_queue_delete_deletes_the_sqs_queue(emulator):
    connection, chan = channel()
    try:
        queue = kombu.Queue("doomed", kombu.Exchange("doomed"), "doomed", channel=chan)
        queue.declare()
        name = chan.canonical_queue_name("doomed")
        sqs = aws.client("sqs")
        sqs.get_queue_url(QueueName=name)
        queue.delete()
        with pytest.raises(ClientError) as gone:
            sqs.get_queue_url(QueueName=name)
        assert queue_missing(gone.value)
    finally:
        connection.release()


@pytest.mark.parametrize("prefetch", [None, 0])
def test_a_worker_without_a_prefetch_limit_receives_without_waiting(emulator, prefetch):
    connection, chan = channel()
    try:
        chan.hub = object()  # a worker's event loop: only its presence counts here
        chan.qos.prefetch_count = prefetch  # kombu's "no limit"
        assert chan._get_message_estimate() == SQS.SQS_MAX_MESSAGES
    finally:
        chan.hub = None
        connection.release()


def test_each_concern_overrides_names_of_its_own():
    mixins = transport.Channel.__bases__[:-1]
    names = [name for mixin in mixins for name in vars(mixin) if not name.startswith("__")]
    assert len(names) == len(set(names)), "two mixins define one name: only one of them would be used"


@pytest.mark.parametrize("body, status, code, transient", [
    (b'{"__type": "RequestThrottled", "message": "slow down"}', 400, "RequestThrottled", True),
    (b'{"__type": "com.amazonaws.sqs#AccessDenied", "message": "not authorized"}', 400, "AccessDenied", False),
    (b'{"__type": "InternalError", "message": "oops"}', 500, "InternalError", True),
])
def test_a_failed_asynchronous_receive_is_sorted_as_botocore_would(body, status, code, transient):
    # kombu's pycurl client raises a bare Exception; the worker sorts it as every AWS error.
    from carcelery.aws import errors
    from carcelery.transport.receiving import _client_error

    reason = {400: "Bad Request", 500: "Internal Server Error"}[status]
    error = _client_error(Exception(f"Request HTTP Error  HTTP {status}  {reason} ({body})"))
    assert errors.error_code(error) == code and errors.transient(error) is transient
    if not transient:
        assert str(errors.permanent(error, queue="q-text")) == (
            "ReceiveMessage on queue q-text failed (AccessDenied): the credentials lack sqs:ReceiveMessage; "
            "grant it (deploy/iam-policy.json, docs/aws.md)")


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
                    max_leaves=8)


@settings(max_examples=100, deadline=None)
@given(status=st.integers(0, 999), body=JSON | st.fixed_dictionaries({"__type": JSON, "message": JSON}))
def test_any_answer_of_a_failed_receive_is_sorted_once_into_one_type(status, body):
    """Whatever JSON SQS (or a proxy) answers, the receive's error is read and sorted, never raising."""
    from carcelery.aws import errors
    from carcelery.transport.receiving import _client_error

    error = _client_error(Exception(f"Request HTTP Error  HTTP {status}  Whatever ({json.dumps(body).encode()})"))
    assert type(errors.sort(error, queue="q-text")) in (errors.Transient, errors.Permanent, errors.Bug)
