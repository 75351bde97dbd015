"""The embedded AWS: a moto server for S3, SQS, SNS and DynamoDB on 127.0.0.1.

Starts the server, creates the bucket, queues and tables, optionally uploads a
folder of images, prints one ``ready`` line, and serves until stopped
(SIGINT or SIGTERM). State lives in this process's memory.

    python -m carcelery.emulator [--from DIR]
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import os
import threading
import time
from pathlib import Path

from .settings import settings


def _without_hot_spots(dispatcher_class):
    """moto's server with per-request costs of moto 5.2 taken out (profiled with py-spy).

    - Each received message's retention check computed every attribute of its
      queue, counting all its messages: O(queue length) per message received.
    - SQS reads the clock for each message of a queue on most requests, through
      datetime arithmetic; time.time() gives the same seconds since the epoch.
    - Each request looked for its backend by listing moto's package directory.

    Returns:
      A subclass of ``dispatcher_class`` whose backend lookup is cached per host.
    """
    from moto.sqs import models

    models.unix_time = time.time
    models.unix_time_millis = lambda: time.time() * 1000.0

    def retained(self, queue_name, message):
        queue = self.get_queue(queue_name)
        return queue.message_retention_period + message.sent_timestamp / 1000 > time.time()

    models.SQSBackend.is_message_valid_based_on_retention_period = retained

    class Dispatcher(dispatcher_class):
        def get_backend_for_host(self, host):
            # The answer depends on the host alone; get_application holds self.lock.
            cache = self.__dict__.setdefault("_backends", {})
            if host not in cache:
                cache[host] = super().get_backend_for_host(host)
            return cache[host]

    return Dispatcher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carcelery.emulator", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="folder", type=Path, help="upload this folder's images into the bucket")
    args = parser.parse_args(argv)
    if settings.target != "emulator":
        parser.error("CARCELERY_TARGET is 'aws': the emulator is for the embedded default only")

    # No CORS headers: no web page in a browser may call the emulator.
    os.environ["MOTO_DISABLE_GLOBAL_CORS"] = "true"
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    from . import provision, storage

    class KeepAliveHandler(MotoRequestHandler):
        # HTTP/1.1: a client keeps its connection, and the server its thread,
        # instead of a new connection and a new thread per request (HTTP/1.0).
        protocol_version = "HTTP/1.1"

    # One log line per HTTP request would bury everything else.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        # The same server as moto's ThreadedMotoServer, which binds 0.0.0.0 unless told.
        server = make_server(settings.emulator_host, settings.emulator_port, _without_hot_spots(
            DomainDispatcherApplication)(create_backend_app), threaded=True, request_handler=KeepAliveHandler)
    except OSError as exc:
        print(f"error: cannot listen on {settings.endpoint_url} ({exc}); stop what uses it "
              f"or set CARCELERY_EMULATOR_PORT", file=sys.stderr)
        return 1
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    provision.everything()
    uploaded = storage.upload_folder(args.folder, settings.bucket, settings.key_prefix) if args.folder else []
    print(f"ready: emulator on {settings.endpoint_url}, bucket {settings.bucket} "
          f"({len(uploaded)} images uploaded)", flush=True)
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
