"""The embedded AWS: a moto server for S3, SQS, SNS and DynamoDB on 127.0.0.1.

Starts the server, creates the bucket, queues and tables, optionally uploads a
folder of images, prints one ``ready`` line, and serves until stopped
(SIGINT or SIGTERM). State lives in this process's memory.

    python -m carcelery.embedded.emulator [--from DIR]
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

from ..settings import settings

# A thread serves one request at a time, and a long poll holds it for up to
# wait_time_seconds; every worker process, Flower and the dispatcher poll.
THREADS = 32
# Connections are kept alive: each boto3 client pools up to 10, pycurl a few.
CONNECTIONS = 500


def _without_hot_spots(dispatcher_class):
    """moto's server with per-request costs of moto 5.2 taken out (profiled with py-spy).

    - Each received message's retention check computed every attribute of its
      queue, counting all its messages: O(queue length) per message received.
    - SQS reads the clock for each message of a queue on most requests, through
      datetime arithmetic; time.time() gives the same seconds since the epoch.
    - Each request looked for its backend by listing moto's package directory.
    - DynamoDB's answers went through moto's model-driven serializer value by
      value, trying every member of AttributeValue's shape for each (80 % of a
      BatchGetItem of 200 results): moto's items hold that shape already.
    - TransactWriteItems deep-copied every table it writes to, to roll back on
      failure: O(table) per transaction, and each chord part counts in one,
      in the results table (``_transactions_copy_items``).
    - ReceiveMessage listed every visible message of its queue, DeleteMessage
      scanned and rebuilt the whole list, SendMessage counted the queue's
      messages: O(queue length) per request (``_queues_scan_from_the_front``).

    Returns:
      A subclass of ``dispatcher_class`` whose backend lookup is cached per host.
    """
    from moto.core import serialize
    from moto.sqs import models

    models.unix_time = time.time
    models.unix_time_millis = lambda: time.time() * 1000.0

    def retained(self, queue_name, message):
        queue = self.get_queue(queue_name)
        return queue.message_retention_period + message.sent_timestamp / 1000 > time.time()

    models.SQSBackend.is_message_valid_based_on_retention_period = retained

    serializer = serialize.BaseJSONSerializer
    structure = serializer._serialize_type_structure

    def attribute_value(self, serialized, value, shape, key):
        if shape.name != "AttributeValue" or self.operation_model.service_model.service_name != "dynamodb":
            return structure(self, serialized, value, shape, key)
        self._default_serialize(serialized, _wire(self, value), shape, key)

    serializer._serialize_type_structure = attribute_value
    _transactions_copy_items()
    _queues_scan_from_the_front()

    class Dispatcher(dispatcher_class):
        def get_backend_for_host(self, host):
            # The answer depends on the host alone; get_application holds self.lock.
            cache = self.__dict__.setdefault("_backends", {})
            if host not in cache:
                cache[host] = super().get_backend_for_host(host)
            return cache[host]

    return Dispatcher


def _queues_scan_from_the_front() -> None:
    """moto's SQS queues, their messages looked for from the front, not all of them on every request.

    moto keeps a queue's messages in a list and, on every ReceiveMessage, made
    a list of all its visible messages to take the first ten; every
    DeleteMessage scanned the whole list twice and rebuilt it. With the
    20,000 messages of a run of 20,000 images in a queue, each took
    milliseconds, in the one-request-at-a-time emulator. A queue is worked
    from its front (the oldest messages are received first, so the ones
    received and being deleted are there): here a receive stops at the
    messages it takes, and a delete at the message it deletes. And every
    SendMessage counted the queue's messages three times over (it reads the
    queue's attributes, counts included, for one of them): 4 ms per send with
    8,000 messages queued, 1.2 ms with 2,000; the counts come from the list's
    and the in-flight set's lengths instead.
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

    def delayed(self) -> int:
        # Only a queue with a default delay is scanned: nothing here sends a message with a delay of its own.
        return sum(1 for m in self._messages if m.delayed) if self.delay_seconds else 0

    models.Queue.messages = property(Visible)
    models.Queue.delete_message = delete_message
    # Counted without a scan: in flight are the messages received and not deleted (one
    # whose visibility ran out counts until it is received again: the counts are approximate).
    models.Queue.approximate_number_of_messages_delayed = property(delayed)
    models.Queue.approximate_number_of_messages_not_visible = property(lambda self: len(self._pending_messages))
    models.Queue.approximate_number_of_messages = property(
        lambda self: len(self._messages) - len(self._pending_messages) - delayed(self))


def _transactions_copy_items() -> None:
    """moto's TransactWriteItems, rolling back the items it wrote rather than whole tables.

    moto keeps a deep copy of each table a transaction writes to, and puts it
    back if the transaction fails: a chord part's count cost a copy of the
    results table, every result of every run. Here the tables are not copied
    (moto's ``copy.deepcopy`` leaves a Table as it is, during the call; the
    emulator serves one request at a time) and the items the transaction
    names are copied and put back instead.
    """
    import copy

    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    transact = models.DynamoDBBackend.transact_write_items

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

    models.DynamoDBBackend.transact_write_items = transact_write_items


def _one_request_at_a_time(dispatcher_class):
    """moto's server, serving one request at a time but for SQS's long polls while they wait.

    moto's backends are not safe for concurrent requests, and the server serves
    many at once: two UpdateItems of one item lost a count (a chord part short,
    so a run's terminator never came; tests/test_emulator.py), and SQS's
    DeleteMessage rebuilds its queue's list of messages, dropping one that
    another request appends meanwhile. Under the GIL the requests did not run
    in parallel anyway.

    Returns:
      A subclass of ``dispatcher_class`` whose requests hold one lock, which a
      ReceiveMessage lets go while it waits for messages.
    """
    from moto.sqs import models

    lock = threading.Lock()
    wait_for_messages = models.Queue.wait_for_messages

    def waiting_unlocked(self, timeout):
        lock.release()
        try:
            wait_for_messages(self, timeout)
        finally:
            lock.acquire()

    models.Queue.wait_for_messages = waiting_unlocked

    class Dispatcher(dispatcher_class):
        def __call__(self, environ, start_response):
            # The response's body is made within the call; waitress sends it after.
            with lock:
                return super().__call__(environ, start_response)

    return Dispatcher


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


def _complete_after_continue(channel_class):
    """Waitress's HTTP channel, with an empty request body that follows "100 Continue" left complete.

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carcelery.embedded.emulator", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="folder", type=Path, help="upload this folder's images into the bucket")
    args = parser.parse_args(argv)
    if settings.target != "emulator":
        parser.error("CARCELERY_TARGET is 'aws': the emulator is for the embedded default only")

    # No CORS headers: no web page in a browser may call the emulator.
    os.environ["MOTO_DISABLE_GLOBAL_CORS"] = "true"
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from waitress.channel import HTTPChannel
    from waitress.server import create_server

    from ..aws import provision
    from ..pipeline import images

    try:
        # Waitress, not moto's werkzeug server: werkzeug closes the connection after
        # every response, so each request cost a TCP connection and a thread.
        # Waitress keeps connections alive; a thread serves a request, not a
        # connection, and long polls hold one each for up to wait_time_seconds.
        app = _one_request_at_a_time(_without_hot_spots(DomainDispatcherApplication))(create_backend_app)
        server = create_server(app, host=settings.emulator_host, port=settings.emulator_port, threads=THREADS,
                               connection_limit=CONNECTIONS, asyncore_use_poll=True, ident="carcelery-emulator")
        server.channel_class = _complete_after_continue(HTTPChannel)
    except OSError as exc:
        print(f"error: cannot listen on {settings.endpoint_url} ({exc}); stop what uses it "
              f"or set CARCELERY_EMULATOR_PORT", file=sys.stderr)
        return 1
    threading.Thread(target=server.run, daemon=True).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    provision.everything()
    uploaded = images.upload_folder(args.folder, settings.bucket, settings.key_prefix) if args.folder else []
    # moto and botocore's models, loaded by now, stay: out of the garbage
    # collector's full passes, which took 0.15 to 0.2 s each, four times in a
    # run of 200 images (one of them stalled the chord's BatchGetItem), now 0.01 to 0.05 s.
    gc.freeze()
    print(f"ready: emulator on {settings.endpoint_url}, bucket {settings.bucket} "
          f"({len(uploaded)} images uploaded)", flush=True)
    stop.wait()
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
