"""The embedded AWS: a moto server for S3, SQS, SNS and DynamoDB on 127.0.0.1.

Starts the server, creates the bucket, queues and tables, optionally uploads a
folder of images, prints one ``ready`` line, and serves until stopped
(SIGINT or SIGTERM). State lives in this process's memory.

    python -m carcelery.emulator [--from DIR]
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

from .settings import settings

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

    class Dispatcher(dispatcher_class):
        def get_backend_for_host(self, host):
            # The answer depends on the host alone; get_application holds self.lock.
            cache = self.__dict__.setdefault("_backends", {})
            if host not in cache:
                cache[host] = super().get_backend_for_host(host)
            return cache[host]

    return Dispatcher


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
    parser = argparse.ArgumentParser(prog="python -m carcelery.emulator", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="folder", type=Path, help="upload this folder's images into the bucket")
    args = parser.parse_args(argv)
    if settings.target != "emulator":
        parser.error("CARCELERY_TARGET is 'aws': the emulator is for the embedded default only")

    # No CORS headers: no web page in a browser may call the emulator.
    os.environ["MOTO_DISABLE_GLOBAL_CORS"] = "true"
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from waitress.channel import HTTPChannel
    from waitress.server import create_server

    from . import provision, storage

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
    uploaded = storage.upload_folder(args.folder, settings.bucket, settings.key_prefix) if args.folder else []
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
