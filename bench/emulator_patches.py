"""What each of the emulator's speed patches saves: the emulator with all of them, and without each in turn.

    python -m bench.emulator_patches [--queued 5000] [--in-flight 50] [--items 2000] [--repeat 3] [--json FILE]

Each configuration runs in a process of its own (the patches are global): the
emulator's application (``carcelery.embedded.emulator.application``) on
waitress on a free loopback port, with every speed patch but the one left out,
and gc.freeze() after set-up as the emulator does (but for "gc_freeze" left
out). boto3 clients in the same process then time, per request, in CPU
milliseconds of the process (the server's threads and the client: on a busy
machine, what the emulator's work costs, not how long it waited for a core):

- sqs_send, sqs_receive, sqs_delete: SendMessage, ReceiveMessage (10 at most,
  no wait) and DeleteMessageBatch of the oldest received, with ``--queued``
  messages in the queue (a run's queue holds one per image not yet done) and
  ``--in-flight`` of them received and not yet deleted (each worker holds 8
  prefetched, and gathers acknowledgements for a second before deleting);
- dynamodb_query: a Query of 1,000 records (the terminator pages through a
  run's records so);
- dynamodb_transact: a chord part's count (TransactWriteItems of a mark and the
  counter), with ``--items`` items in its table (a run's results);
- small_request: GetQueueUrl, the smallest request (what every request pays);
- gc: the longest and the total pause of the garbage collector's full passes
  during all of it.

Figures are the median of ``--repeat`` processes per configuration, run in
rounds of every configuration. Prints the milliseconds per request and what
leaving each patch out costs; ``--json`` writes both.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from .pipeline import free_port

ROOT = Path(__file__).resolve().parents[1]
OPS = ("sqs_send", "sqs_receive", "sqs_delete", "dynamodb_query", "dynamodb_transact", "small_request")
ROUNDS = 300


def measure(leave_out: str | None, queued: int, in_flight: int, items: int) -> dict:
    """One configuration's figures, in this process: ms per request of each of OPS, and GC pauses."""
    os.environ.update({"MOTO_DISABLE_GLOBAL_CORS": "true", "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
    import boto3

    from carcelery.embedded import emulator

    port = free_port()
    running = emulator.server(emulator.application([leave_out] if leave_out else []), "127.0.0.1", port)
    threading.Thread(target=running.run, daemon=True).start()
    endpoint = f"http://127.0.0.1:{port}"
    sqs, dynamodb = (boto3.client(service, endpoint_url=endpoint) for service in ("sqs", "dynamodb"))
    url = sqs.create_queue(QueueName="bench", Attributes={"VisibilityTimeout": "600"})["QueueUrl"]
    for name, keys in (("records", [("bucket", "HASH"), ("order", "RANGE")]), ("results", [("id", "HASH")])):
        dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                              KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in keys],
                              AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k, _ in keys])
    if leave_out != "gc_freeze":
        gc.freeze()

    for start in range(0, queued, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": f"queued {start + n}" * 20}
                                                      for n in range(min(10, queued - start))])
    record = '{"image": "%d.jpg", "car": true, "labels": [{"name": "Car", "confidence": 97.5}], "text": []}'
    for start in range(0, 1000, 25):
        dynamodb.batch_write_item(RequestItems={"records": [{"PutRequest": {"Item": {
            "bucket": {"S": "bench"}, "order": {"S": f"{n:06d}"}, "record": {"S": record % n}, "run": {"S": "r"}}}}
            for n in range(start, start + 25)]})
    for start in range(0, items, 25):
        dynamodb.batch_write_item(RequestItems={"results": [{"PutRequest": {"Item": {
            "id": {"S": f"celery-task-meta-{n}"}, "result": {"B": b"x" * 300}}}} for n in range(start, start + 25)]})

    pauses: list[float] = []
    started: list[float] = []

    def timed(phase, info):
        if info["generation"] == 2:
            if phase == "start":
                started.append(time.process_time())
            elif started:
                pauses.append(time.process_time() - started.pop())

    gc.callbacks.append(timed)
    spent = dict.fromkeys(OPS, 0.0)
    received: collections.deque[list[dict]] = collections.deque()

    def timing(op, call):
        began = time.process_time()
        result = call()
        spent[op] += time.process_time() - began
        return result

    deletes = 0
    for n in range(ROUNDS):
        timing("sqs_send", lambda: sqs.send_message(QueueUrl=url, MessageBody=f"sent {n}" * 20))  # noqa: B023 - timing() calls it at once, in this iteration
        received.append(timing("sqs_receive", lambda: sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])))
        if sum(map(len, received)) > in_flight:
            done = received.popleft()
            timing("sqs_delete", lambda: sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)]))  # noqa: B023 - timing() calls it at once, in this iteration
            deletes += 1
        part = {"Put": {"TableName": "results", "Item": {"id": {"S": f"counter-part-{n}"}},
                        "ConditionExpression": "attribute_not_exists(id)"}}
        count = {"Update": {"TableName": "results", "Key": {"id": {"S": "counter"}},
                            "UpdateExpression": "ADD parts :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}}
        timing("dynamodb_transact", lambda: dynamodb.transact_write_items(TransactItems=[part, count]))  # noqa: B023 - timing() calls it at once, in this iteration
        timing("small_request", lambda: sqs.get_queue_url(QueueName="bench"))
        if n % 10 == 0:
            timing("dynamodb_query", lambda: dynamodb.query(
                TableName="records", KeyConditionExpression="#b = :b", ExpressionAttributeNames={"#b": "bucket"},
                ExpressionAttributeValues={":b": {"S": "bench"}}))
    gc.callbacks.remove(timed)
    requests = {**dict.fromkeys(OPS, ROUNDS), "dynamodb_query": ROUNDS // 10, "sqs_delete": deletes}
    per_op = {op: 1000 * spent[op] / requests[op] for op in OPS}
    return {**per_op, "gc_max_pause_ms": 1000 * max(pauses, default=0.0),
            "gc_total_pause_ms": 1000 * sum(pauses), "gc_full_passes": len(pauses)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator_patches", description=__doc__.split("\n")[0])
    parser.add_argument("--queued", type=int, default=5000, help="messages in the SQS queue")
    parser.add_argument("--in-flight", type=int, default=50, help="messages received and not yet deleted")
    parser.add_argument("--items", type=int, default=2000, help="items in the transactions' table")
    parser.add_argument("--repeat", type=int, default=3, help="processes per configuration (the median counts)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--leave-out", help=argparse.SUPPRESS)  # a configuration's own process
    args = parser.parse_args(argv)
    if args.leave_out is not None:
        print(json.dumps(measure(args.leave_out or None, args.queued, args.in_flight, args.items)))
        return 0

    from carcelery.embedded.emulator import SPEED

    names = ["all", *SPEED, "gc_freeze"]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(args.repeat):  # round after round, so that a busier minute of the machine is shared by all
        for name in names:
            runs[name].append(json.loads(subprocess.run(
                [sys.executable, "-m", "bench.emulator_patches", "--leave-out", "" if name == "all" else name,
                 "--queued", str(args.queued), "--in-flight", str(args.in_flight), "--items", str(args.items)],
                cwd=ROOT, check=True, capture_output=True, text=True).stdout))
    figures = {name: {key: statistics.median(run[key] for run in got) for key in got[0]} for name, got in runs.items()}
    for name, got in figures.items():
        print(f"{'all patches' if name == 'all' else 'without ' + name:<36}"
              + " ".join(f"{key}={value:.2f}" for key, value in got.items()))
    costs = {name: {key: figures[name][key] - figures["all"][key] for key in figures["all"]}
             for name in figures if name != "all"}
    print(f"\nWhat leaving each out costs (ms per request; {args.queued} messages queued, {args.in_flight} in "
          f"flight, {args.items} items), median of {args.repeat}:")
    for name, cost in costs.items():
        print(f"  {name:<28}" + " ".join(f"{key}={value:+.2f}" for key, value in cost.items()))
    if args.json:
        args.json.write_text(json.dumps({"queued": args.queued, "in_flight": args.in_flight, "items": args.items,
                                         "repeat": args.repeat, "ms": figures, "cost_without_ms": costs},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
