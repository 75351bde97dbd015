"""The embedded AWS: a moto server for S3, SQS, SNS and DynamoDB on 127.0.0.1.

Starts the server, creates the bucket, queues and tables, optionally uploads a
folder of images, prints one ``ready`` line, and serves until stopped
(SIGINT or SIGTERM). State lives in this process's memory.

    python -m carcelery.embedded.emulator [--from DIR]

**Debts**: the patches below replace names of moto 5.2.5 and waitress 3.0.2,
private ones among them, or add what moto lacks. Each says which, and why:
correctness, a feature, or speed with
what it saves, in CPU time per request, in two runs of ``python -m
bench.emulator_patches`` (5,000 messages queued and 50 in flight, 2,000 items
in the results table; with every patch a request takes 2 to 3.5 ms).
tests/test_library_debts.py checks each replaced name against the installed
versions: it exists, takes the parameters the patch was written for, and is
still called where it was.
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Collection

from ..settings import settings

# A thread serves one request at a time, and a long poll holds it for up to
# wait_time_seconds; every worker process, Flower and the dispatcher poll.
THREADS = 32
# Connections are kept alive: each boto3 client pools up to 10, pycurl a few.
CONNECTIONS = 500

# The library's own object of each name replaced here, by (owner, name).
_REPLACED: dict[tuple[object, str], object] = {}
# The names added here, that the library lacks, as (owner, name).
_ADDED: set[tuple[object, str]] = set()


def _replace(owner: object, name: str, new: object) -> Any:
    """Put ``new`` in the place of library name ``owner.name``.

    Returns:
      What the library had there (its own, when this patch was applied before).
    Raises:
      AttributeError: the library has no such name any more.
    """
    original = _REPLACED.setdefault((owner, name), getattr(owner, name))
    setattr(owner, name, new)
    return original


def _add(owner: type, name: str, new: object) -> None:
    """Give library class ``owner`` the name ``name``, which it lacks.

    Raises:
      RuntimeError: the library has that name now: its own may do the job (drop the patch).
    """
    if (owner, name) not in _ADDED and hasattr(owner, name):
        raise RuntimeError(f"{owner.__module__}.{owner.__qualname__}.{name} exists now: drop the emulator's")
    _ADDED.add((owner, name))
    setattr(owner, name, new)


def replaced(owner: object, name: str) -> object:
    """The library's own ``owner.name``, whether a patch here replaced it or not."""
    return _REPLACED.get((owner, name), getattr(owner, name))


def _sqs_clock() -> None:
    """Speed. Replaces ``moto.sqs.models.unix_time_millis``.

    moto's SQS reads the clock through datetime arithmetic (4 us a time) for
    each message a ReceiveMessage looks at, those in flight at the queue's
    front included: 100 times with 50 in flight. time.time() gives the same
    milliseconds (0.1 us). Saves 0.43 to 0.45 ms of the 3.45 to 3.93 a
    ReceiveMessage takes without it. (Its ``unix_time``, read once per
    ReceiveMessage, is left: 4 us.)
    """
    from moto.sqs import models

    _replace(models, "unix_time_millis", lambda: time.time() * 1000.0)


def _sqs_retention_check() -> None:
    """Speed. Replaces ``moto.sqs.models.SQSBackend.is_message_valid_based_on_retention_period``.

    moto's computes every attribute of the queue, counts of its messages
    included, for each message a ReceiveMessage returns; this reads the one it
    needs. Saves 1.7 to 2.5 ms of the 5.2 to 5.5 a ReceiveMessage takes without it.
    """
    from moto.sqs import models

    def retained(self, queue_name, message):
        queue = self.get_queue(queue_name)
        return queue.message_retention_period + message.sent_timestamp / 1000 > time.time()

    _replace(models.SQSBackend, "is_message_valid_based_on_retention_period", retained)


def _dynamodb_values_as_held() -> None:
    """Speed. Replaces ``moto.core.serialize.BaseJSONSerializer._serialize_type_structure``, for AttributeValue.

    moto's model-driven serializer writes DynamoDB's answers value by value,
    trying every member of AttributeValue's shape for each; moto's items hold
    that shape already, and only their blobs need base64. Saves 230 to 250 ms
    of the 300 a Query of 1,000 records takes without it (the outputs are read so).
    """
    from moto.core import serialize

    def attribute_value(self, serialized, value, shape, key):
        if shape.name != "AttributeValue" or self.operation_model.service_model.service_name != "dynamodb":
            return structure(self, serialized, value, shape, key)
        self._default_serialize(serialized, _wire(self, value), shape, key)

    structure = _replace(serialize.BaseJSONSerializer, "_serialize_type_structure", attribute_value)


def _wire(serializer, value: dict) -> dict:
    """A DynamoDB AttributeValue as moto holds it, as it goes on the wire: blobs in base64."""
    kind, data = next(iter(value.items()))
    if kind == "B":
        return {kind: serializer._base64(data)}
    if kind == "BS":
        return {kind: [serializer._base64(blob) for blob in data]}
    if kind == "M":
        return {kind: {name: _wire(serializer, member) for name, member in data.items()}}
    if kind == "L":
        return {kind: [_wire(serializer, member) for member in data]}
    return value


def _queues_scan_from_the_front() -> None:
    """Speed. Replaces ``moto.sqs.models.Queue``'s ``messages``, ``delete_message``, ``add_message`` and counts
    of messages: ``approximate_number_of_messages``, ``approximate_number_of_messages_delayed`` and
    ``approximate_number_of_messages_not_visible``.

    moto keeps a queue's messages in a list; every ReceiveMessage listed all
    its visible messages to take the first ten, every DeleteMessage scanned
    the whole list twice and rebuilt it, and every SendMessage counted the
    queue's messages three times over (it reads the queue's attributes, counts
    included, for one of them). A queue is worked from its front (the oldest
    messages are received first, so the ones received and being deleted are
    there): here a receive stops at the messages it takes, a delete at the
    message it deletes, and the counts come from the list's and the in-flight
    set's lengths (and of the list of messages sent with a delay of their own,
    which ``add_message`` keeps). Saves, with 5,000 messages queued, 2.4 to 2.6 ms of the
    4.5 to 4.8 a SendMessage takes without it, 1.1 to 1.35 of a
    ReceiveMessage's 4.4 to 4.6 and 7.5 of a DeleteMessageBatch's 9.6 to 9.9:
    each grows with the queue.
    """
    from moto.sqs import models
    from moto.sqs.exceptions import ReceiptHandleIsInvalid

    class Visible:
        """A queue's visible messages, found as they are iterated."""

        def __init__(self, queue):
            self._queue = queue

        def __iter__(self):
            return (m for m in list.__iter__(self._queue._messages) if m.visible and not m.delayed)

        def __bool__(self):
            return any(True for _ in self)

        def __len__(self):
            return sum(1 for _ in self)

    def delete_message(self, receipt_handle: str) -> None:
        if receipt_handle in self.deleted_messages:
            return  # deleted before: SQS accepts it again
        for index, message in enumerate(self._messages):
            if message.had_receipt_handle(receipt_handle):
                del self._messages[index]
                self.pending_messages.discard(message)
                self.deleted_messages.update(message.all_receipt_handles)
                return
        raise ReceiptHandleIsInvalid()

    def add_message(self, message) -> None:
        add(self, message)
        if message.delayed:  # a delay of its own (a run's next look): counted while it lasts
            self.__dict__.setdefault("carcelery_delayed", []).append(message)

    def delayed(self) -> int:
        if self.delay_seconds:  # a default delay: any message may be delayed, scanned
            return sum(1 for m in self._messages if m.delayed)
        held = self.__dict__.get("carcelery_delayed")
        if held:
            held[:] = [m for m in held if m.delayed]
        return len(held or ())

    _replace(models.Queue, "messages", property(Visible))
    _replace(models.Queue, "delete_message", delete_message)
    add = _replace(models.Queue, "add_message", add_message)
    # Counted without a scan: in flight are the messages received and not deleted (one
    # whose visibility ran out counts until it is received again: the counts are approximate).
    _replace(models.Queue, "approximate_number_of_messages_delayed", property(delayed))
    _replace(models.Queue, "approximate_number_of_messages_not_visible",
             property(lambda self: len(self._pending_messages)))
    _replace(models.Queue, "approximate_number_of_messages",
             property(lambda self: len(self._messages) - len(self._pending_messages) - delayed(self)))


def _transactions_copy_items() -> None:
    """Speed. Replaces ``moto.dynamodb.models.DynamoDBBackend.transact_write_items``, and ``copy`` during it.

    moto keeps a deep copy of each table a transaction writes to, and puts it
    back if the transaction fails: every chord part counts in one transaction,
    in the results table, so each cost a copy of that table, O(results).
    Here the tables are not copied (moto's ``copy.deepcopy`` leaves a Table as
    it is, during the call; the emulator serves one request at a time) and the
    items the transaction names are copied and put back instead. Saves, with
    2,000 results, 43 to 45 ms of the 46 to 49 a chord part's count takes
    without it (it grows with the run), and the copies' garbage: the bench's
    full collections went from 17 to 8, their longest pause from 680-740 ms
    to 66-80.
    """
    import copy

    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    transact = replaced(models.DynamoDBBackend, "transact_write_items")

    class TablesNotCopied:
        @staticmethod
        def deepcopy(value):
            return value if isinstance(value, Table) else copy.deepcopy(value)

    def item_key(backend, op_type: str, op: dict) -> dict:
        if op_type != "Put":
            return op["Key"]
        table = backend.get_table(op["TableName"])
        names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
        return {name: op["Item"][name] for name in names}

    def transact_write_items(self, transact_items):
        before = []
        for entry in transact_items:
            for op_type, op in entry.items():
                try:
                    key = item_key(self, op_type, op)
                    before.append((op["TableName"], key, copy.deepcopy(self.get_item(op["TableName"], key))))
                except Exception:  # noqa: BLE001 - moto's own call answers for a bad request
                    pass
        models.copy = TablesNotCopied
        try:
            return transact(self, transact_items)
        except Exception:
            for table, key, item in reversed(before):
                if item is None:
                    self.delete_item(table, key)
                else:
                    self.put_item(table, item.to_json()["Attributes"])
            raise
        finally:
            models.copy = copy

    _replace(models.DynamoDBBackend, "transact_write_items", transact_write_items)


def _backends_cached(dispatcher_class):
    """Speed. Overrides ``moto.moto_server.werkzeug_app.DomainDispatcherApplication.get_backend_for_host``.

    moto's looks for each request's backend by listing moto's package
    directory (0.7 ms a time); the answer depends on the host alone. Saves
    0.5 to 0.9 ms of every request.

    Returns:
      A subclass of ``dispatcher_class`` whose backend lookup is cached per host.
    """
    class Dispatcher(dispatcher_class):
        def get_backend_for_host(self, host):
            # get_application holds self.lock around the call.
            cache = self.__dict__.setdefault("_backends", {})
            if host not in cache:
                cache[host] = super().get_backend_for_host(host)
            return cache[host]

    return Dispatcher


def _one_request_at_a_time(dispatcher_class):
    """Correctness. Overrides ``DomainDispatcherApplication.__call__``, replaces ``Queue.wait_for_messages``.

    moto's backends are not safe for concurrent requests, and the server serves
    many at once: two UpdateItems of one item lost a count (a chord part short,
    so a run's terminator never came; tests/test_emulator.py), and SQS's
    DeleteMessage rebuilds its queue's list of messages, dropping one that
    another request appends meanwhile. Every request holds one lock, but for a
    ReceiveMessage while it waits for messages (a long poll would hold the
    server for up to 20 s). Under the GIL the requests did not run in parallel anyway.

    Returns:
      A subclass of ``dispatcher_class`` whose requests hold the lock.
    """
    from moto.sqs import models

    lock = threading.Lock()
    wait_for_messages = replaced(models.Queue, "wait_for_messages")

    def waiting_unlocked(self, timeout):
        lock.release()
        try:
            wait_for_messages(self, timeout)
        finally:
            lock.acquire()

    _replace(models.Queue, "wait_for_messages", waiting_unlocked)

    class Dispatcher(dispatcher_class):
        def __call__(self, environ, start_response):
            # The response's body is made within the call; waitress sends it after.
            with lock:
                return super().__call__(environ, start_response)

    return Dispatcher


def _complete_after_continue(channel_class):
    """Correctness. Overrides ``waitress.channel.HTTPChannel.send_continue``; ``server`` makes it the channel_class.

    Waitress 3.0.2 marks a request incomplete when it sends "100 Continue", even
    when its body is empty and already read, and then waits for a body that
    never comes: boto3's PutObject of an empty object hung until its read timeout.
    """
    class Channel(channel_class):
        def send_continue(self):
            completed = self.request.completed
            super().send_continue()
            self.request.completed = completed

    return Channel


def _sqs_message_move_tasks() -> None:
    """Feature. Added: ``SQSResponse.start_message_move_task``, ``list_message_move_tasks``; replaces ``Queue.add_message``.

    moto 5.2.5 answers SQS's StartMessageMoveTask and ListMessageMoveTasks
    (the dead-letter queue's redrive, ``python -m carcelery.commands.dlq
    redrive``) with "not implemented". Here a task moves at once, within its
    request (the emulator serves one request at a time): each visible message
    of the source queue is sent again, as a new message, to DestinationArn or
    else to the queue it was first sent to, and deleted from the source; the
    task is then listed COMPLETED, or FAILED with the messages of no known
    queue left where they were. The queue a message was first sent to is
    remembered as SQS remembers it, when it is first added to a queue
    (``Queue.add_message``: moto's moves the same message object to the
    dead-letter queue).
    """
    import uuid
    from moto.sqs import models, responses
    from moto.core.responses import ActionResult
    from moto.sqs.exceptions import InvalidParameterValue

    tasks: dict[str, list[dict]] = {}  # source queue ARN: its tasks, the latest first
    # What is there now: another patch's (the counts of delayed messages) when it is applied, moto's otherwise.
    add_message = models.Queue.add_message

    def remembering_its_first_queue(self, message):
        if not hasattr(message, "carcelery_first_queue"):
            message.carcelery_first_queue = self.name
        add_message(self, message)

    def start_message_move_task(self):
        backend, source_arn = self.sqs_backend, self._get_param("SourceArn")
        destination_arn = self._get_param("DestinationArn")
        source = backend.get_queue(source_arn.rsplit(":", 1)[-1])
        if not backend.list_dead_letter_source_queues(source.name):
            raise InvalidParameterValue(f"Source queue {source_arn} is not a dead-letter queue of any queue")
        moved = left = 0
        for message in [m for m in list.__iter__(source._messages) if m.visible and not m.delayed]:
            target = destination_arn.rsplit(":", 1)[-1] if destination_arn else message.carcelery_first_queue
            if target == source.name:
                left += 1
                continue
            backend.send_message(target, message.body, message_attributes=message.message_attributes)
            source._messages.remove(message)
            moved += 1
        task = {"TaskHandle": uuid.uuid4().hex, "Status": "FAILED" if left else "COMPLETED", "SourceArn": source_arn,
                "ApproximateNumberOfMessagesMoved": moved, "ApproximateNumberOfMessagesToMove": moved + left,
                "StartedTimestamp": int(time.time() * 1000)}
        if destination_arn:
            task["DestinationArn"] = destination_arn
        if left:
            task["FailureReason"] = f"{left} messages were sent to the dead-letter queue itself: give a DestinationArn"
        tasks.setdefault(source_arn, []).insert(0, task)
        return ActionResult({"TaskHandle": task["TaskHandle"]})

    def list_message_move_tasks(self):
        found = tasks.get(self._get_param("SourceArn"), [])
        return ActionResult({"Results": found[:int(self._get_param("MaxResults") or 1)]})

    _replace(models.Queue, "add_message", remembering_its_first_queue)
    _add(responses.SQSResponse, "start_message_move_task", start_message_move_task)
    _add(responses.SQSResponse, "list_message_move_tasks", list_message_move_tasks)


def _s3_event_sequencer() -> None:
    """Feature. Replaces ``moto.s3.notifications._get_s3_event``: its events get a ``sequencer``.

    S3 puts a ``sequencer`` in every object event (hex digits; of two events
    of one key, the later one's is greater), and the events' consumer orders
    events by it (``carcelery.pipeline.notifications``); moto 5.2.5's events carry
    none. Here each gets one, from the clock in nanoseconds, always
    increasing: the emulator makes its events one request at a time.
    """
    from moto.s3 import notifications

    made = replaced(notifications, "_get_s3_event")
    last = [0]

    def with_sequencer(event_name, bucket, key, notification_id):
        event = made(event_name, bucket, key, notification_id)
        last[0] = max(last[0] + 1, time.time_ns())
        event["Records"][0]["s3"]["object"]["sequencer"] = f"{last[0]:018X}"
        return event

    _replace(notifications, "_get_s3_event", with_sequencer)


def _cloudformation_s3_events() -> None:
    """Feature. Replaces ``moto.s3.models.FakeBucket.create_from_cloudformation_json``; adds AWS::SQS::QueuePolicy.

    moto 5.2.5's CloudFormation makes a bucket without its
    NotificationConfiguration and knows no AWS::SQS::QueuePolicy: the
    template's S3 events (deploy/carcelery.yaml, MakeBucket) would be made on
    the emulator without the two things that make them work. Here a bucket
    gets its queue notifications (as PutBucketNotificationConfiguration sets
    them, test event included), and a queue policy becomes its queues' Policy
    (moto's CloudFormation finds models among ``CloudFormationModel``'s subclasses).
    """
    import json

    from moto.core.common_models import CloudFormationModel
    from moto.s3 import models
    from moto.sqs.models import sqs_backends

    made = replaced(models.FakeBucket, "create_from_cloudformation_json")

    def with_notifications(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        bucket = made(resource_name, cloudformation_json, account_id, region_name, **kwargs)
        queues = cloudformation_json.get("Properties", {}).get("NotificationConfiguration", {}).get(
            "QueueConfigurations", [])
        if queues:
            bucket.set_notification_configuration({"QueueConfiguration": [
                {"Queue": q["Queue"], "Event": [q["Event"]], "Id": f"{resource_name}-{n}"} for n, q in enumerate(queues)]})
        return bucket

    _replace(models.FakeBucket, "create_from_cloudformation_json", classmethod(with_notifications))

    class QueuePolicy(CloudFormationModel):
        # moto's model metaclass files a model under its module's second name: not "__main__" (``-m``).
        __module__ = "carcelery.embedded.emulator"

        def __init__(self, name: str):
            self.physical_resource_id = name

        @staticmethod
        def cloudformation_name_type() -> str:
            return ""

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::SQS::QueuePolicy"

        @classmethod
        def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
            properties = cloudformation_json["Properties"]
            for url in properties["Queues"]:
                sqs_backends[account_id][region_name].set_queue_attributes(
                    url.rsplit("/", 1)[-1], {"Policy": json.dumps(properties["PolicyDocument"])})
            return cls(resource_name)

    _QUEUE_POLICY.append(QueuePolicy)


# The model class the patch above made (once: moto lists the subclasses of CloudFormationModel).
_QUEUE_POLICY: list = []


# The patches for speed, by name (``python -m bench.emulator_patches`` leaves each out in turn).
SPEED: dict[str, Callable[..., Any]] = {
    "sqs_clock": _sqs_clock,
    "sqs_retention_check": _sqs_retention_check,
    "dynamodb_values_as_held": _dynamodb_values_as_held,
    "queues_scan_from_the_front": _queues_scan_from_the_front,
    "transactions_copy_items": _transactions_copy_items,
    "backends_cached": _backends_cached,
}


def _refusing_web_pages(app: Callable) -> Callable:
    """``app``, refusing (403) every request a web page in a browser makes.

    The emulator has no credentials to check: any request that reaches it is
    served. Its clients (boto3, kombu's pycurl) send no ``Origin`` and no
    ``Sec-Fetch-Site``; a browser sends ``Origin`` with every POST and
    cross-origin fetch, ``Sec-Fetch-Site`` with every request. Withholding CORS
    headers is not enough: a page's "simple" requests (a form's POST, an
    image's GET, ``fetch`` in ``no-cors`` mode) are made anyway, only their
    answers hidden, so a page could upload into the bucket or send to a queue.
    ``Sec-Fetch-Site: none`` is an address typed in the browser: allowed.
    """

    def refusing(environ, start_response):
        origin, site = environ.get("HTTP_ORIGIN"), environ.get("HTTP_SEC_FETCH_SITE", "none")
        if origin is None and site == "none":
            return app(environ, start_response)
        body = (f"the emulator answers no web page (Origin: {origin}, Sec-Fetch-Site: {site}); "
                f"it serves the pipeline's processes on this machine\n").encode()
        start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(body)))])
        return [body]

    return refusing


def application(leave_out: Collection[str] = ()) -> Callable:
    """moto's WSGI application for every service, patched as above but for the speed patches named in ``leave_out``."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    dispatcher = DomainDispatcherApplication
    for name, patch in SPEED.items():
        if name in leave_out:
            continue
        if name == "backends_cached":
            dispatcher = patch(dispatcher)
        else:
            patch()
    _sqs_message_move_tasks()
    _s3_event_sequencer()
    if not _QUEUE_POLICY:
        _cloudformation_s3_events()
    return _one_request_at_a_time(dispatcher)(create_backend_app)


def server(app: Callable, host: str, port: int):
    """A waitress server of ``app`` on ``host``:``port``, not yet running.

    Waitress, not moto's werkzeug server: werkzeug closes the connection after
    every response, so each request cost a TCP connection and a thread.
    Waitress keeps connections alive; a thread serves a request, not a
    connection, and long polls hold one each for up to wait_time_seconds.

    Raises:
      OSError: the address cannot be listened on.
    """
    from waitress.channel import HTTPChannel
    from waitress.server import create_server

    made = create_server(app, host=host, port=port, threads=THREADS, connection_limit=CONNECTIONS,
                         asyncore_use_poll=True, ident="carcelery-emulator")
    made.channel_class = _complete_after_continue(HTTPChannel)
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carcelery.embedded.emulator", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="folder", type=Path, help="upload this folder's images into the bucket")
    args = parser.parse_args(argv)
    if settings.target != "emulator":
        parser.error("CARCELERY_TARGET is 'aws': the emulator is for the embedded default only")

    # No CORS headers: no web page in a browser may read the emulator's answers (and
    # ``_refusing_web_pages`` refuses pages' requests themselves).
    os.environ["MOTO_DISABLE_GLOBAL_CORS"] = "true"
    from ..aws import provision
    from ..pipeline import images

    try:
        app = application()
        if settings.emulator_faults:  # a test hook: see carcelery.embedded.faults
            from .faults import Injector
            app = Injector(app, Path(settings.emulator_faults), log=lambda line: print(line, flush=True))
        running = server(_refusing_web_pages(app), settings.emulator_host, settings.emulator_port)
    except OSError as exc:
        print(f"error: cannot listen on {settings.endpoint_url} ({exc}); stop what uses it "
              f"or set CARCELERY_EMULATOR_PORT", file=sys.stderr)
        return 1
    threading.Thread(target=running.run, daemon=True).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    provision.everything()
    uploaded = images.upload_folder(args.folder, settings.bucket, settings.key_prefix) if args.folder else []
    # Speed. moto and botocore's models, loaded by now, stay: out of the garbage
    # collector's full passes, each of which stalls every request. In the bench
    # the longest pause went from 144-146 ms to 66-80, all of them from 500-520 ms to 250-350.
    gc.freeze()
    print(f"ready: emulator on {settings.endpoint_url}, bucket {settings.bucket} "
          f"({len(uploaded)} images uploaded)", flush=True)
    stop.wait()
    running.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
