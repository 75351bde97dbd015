"""New uploads to output.txt: S3 events against the beat's scan, on a bucket already holding many processed images.

    python -m bench.events [--uploads 300] [--rate 10] [--preload 20000] [--backends noop,latency] [--json FILE]
                           [--b-workers 3 --skip-beat]

In one run, on a fresh emulator of its own (a free loopback port):
1. the bucket gets ``--preload`` images, with their records and ledger entries
   as if processed (written in batches: the state a pipeline leaves, without
   the hours of recognizing them), and ``provision --events``;
2. per backend (``noop``; ``latency`` at 0.3 s a call), both workers; one
   upload waited for (it builds the outputs' index: a first run reads the
   whole bucket), then ``--uploads`` uploads at ``--rate`` a second; for each,
   the seconds from before its PutObject to its line in output.txt
   (``latency``: the uploads whose answer has a line, known from their names);
3. the same with events off (the bucket's notification removed, the events
   queue deleted) and the beat at its default interval (60 s);
4. the outputs' index alone, in this process, at ``--index-sizes`` records:
   a run of 10 new images (``index.update`` and ``index.join``), its time and
   the records it read, beside a rebuild (what a run of the whole bucket does
   after reading every record).
Prints p50, p95 and max per backend and way; ``--json`` writes the figures.

``--b-workers N`` (N > 1): Instance B is N workers, each a host of its own
(its own output folder), as an Auto Scaling group gives; the runs land on any
of them. Every run's outputs go to CARCELERY_OUTPUT_URI (``s3://bench-outputs/
carcelery/``) and a line is timed when it is in ``latest/output.txt`` there.
The emulator counts the records table's Query pages of the bucket (its fault
hook, a delay of 0 s): ``whole_reads`` is how many times a run read the whole
bucket (pages counted over the pages of one read); ``runs_per_host``, the runs
each host ended (its log's terminator lines), the first one's included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .pipeline import SEED, free_port

BUCKET = "bench-events"
OUTPUTS = "bench-outputs"
OUTPUT_URI = f"s3://{OUTPUTS}/carcelery/"
LATENCY = "0.3"


def preload(count: int) -> None:
    """``count`` images in the bucket, recorded as processed (``noop``'s record) and in the ledger."""
    from carcelery import aws
    from carcelery.pipeline import ledger, records, results
    from carcelery.pipeline.images import S3Image
    from carcelery.recognizers import CAR, Label, TextLine

    s3, body = aws.client("s3"), (SEED / "1.jpg").read_bytes()
    keys = [f"old-{n}.jpg" for n in range(count)]
    with ThreadPoolExecutor(8) as pool:
        etags = list(pool.map(lambda k: s3.put_object(Bucket=BUCKET, Key=k, Body=body)["ETag"].strip('"'), keys))
    made = [results.with_text(results.detection(k, bucket=BUCKET, key=k, etag=e, labels=[Label(CAR, 100.0)],
                                                threshold=90.0), [TextLine("NOOP", 100.0)])
            for k, e in zip(keys, etags, strict=True)]
    records.put_many(made, "preload")
    ledger.record([S3Image(BUCKET, k, e, len(body)) for k, e in zip(keys, etags, strict=True)], "preload")


def lines_of(stack) -> set[str]:
    """The names output.txt has a line of: the stack's folder's, or with several hosts the URI's ``latest/``."""
    from carcelery import aws
    from carcelery.pipeline import results

    if stack.env.get("CARCELERY_OUTPUT_URI"):
        try:
            text = aws.client("s3").get_object(Bucket=OUTPUTS, Key=f"carcelery/latest/{results.OUTPUT}")["Body"].read()
        except aws.client("s3").exceptions.NoSuchKey:
            return set()
        return {line.split(":", 1)[0] for line in text.decode().splitlines()}
    path = stack.output_dir / results.OUTPUT
    return {line.split(":", 1)[0] for line in path.open(encoding="utf-8")} if path.exists() else set()


def whole_read_rule(faults: Path) -> int:
    """Count the records table's Query pages of the bucket (a delay of 0 s); the pages of one whole read."""
    from carcelery.embedded import faults as hook
    from carcelery.pipeline import records
    from carcelery.settings import settings

    rule = {"call": "dynamodb:Query", "match": [settings.records_table, BUCKET], "fault": "delay", "seconds": 0}
    hook.write_rules(faults, [rule])
    for _ in records.read(BUCKET):
        pass
    pages = hook.hits(faults)[0]
    hook.write_rules(faults, [rule])  # counts from 0 again
    return pages


def expected(names: list[str], backend: str) -> list[str]:
    """The names whose answer has a line in output.txt (noop: all; latency: a car with a plate)."""
    if backend == "noop":
        return names
    from carcelery.recognizers import Image, latency

    return [n for n in names if latency.is_car(Image(n, bytes)) and latency.plate(Image(n, bytes))]


def uploads(stack, tag: str, count: int, rate: float, backend: str, timeout: float) -> dict:
    """Upload ``count`` images at ``rate`` a second; seconds from each PutObject to its line."""
    from carcelery import aws

    s3, body = aws.client("s3"), (SEED / "2.jpg").read_bytes()
    names = [f"{tag}-{n}.jpg" for n in range(count)]
    watched = set(expected(names, backend))
    put_at: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch():
        last = None
        while not done.is_set() and len(seen) < len(watched):
            path = stack.output_dir / "output.txt"
            mtime = path.stat().st_mtime_ns if path.exists() else None
            if mtime != last or stack.env.get("CARCELERY_OUTPUT_URI"):
                last, now = mtime, time.time()
                for name in lines_of(stack) & watched:
                    if name not in seen and name in put_at:
                        seen[name] = now - put_at[name]
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    for n, name in enumerate(names):
        time.sleep(max(0.0, started + n / rate - time.monotonic()))
        put_at[name] = time.time()
        s3.put_object(Bucket=BUCKET, Key=name, Body=body)
    watcher.join(timeout)
    done.set()
    waits = sorted(seen.values())
    figures: dict[str, float] = {"uploads": count, "watched": len(watched), "arrived": len(waits)}
    if waits:
        figures.update(p50_s=statistics.median(waits), p95_s=waits[max(0, round(0.95 * len(waits)) - 1)],
                       max_s=waits[-1])
    return figures


def wait_for_line(stack, name: str, timeout: float = 600) -> float:
    from carcelery import aws

    started = time.time()
    aws.client("s3").put_object(Bucket=BUCKET, Key=name, Body=(SEED / "4.jpg").read_bytes())
    while name not in lines_of(stack):
        if time.time() - started > timeout:
            raise TimeoutError(f"{name} not in output.txt after {timeout} s")
        time.sleep(0.2)
    return time.time() - started


def workers(stack, backend: str, hosts: int = 1) -> None:
    """Instance A's worker and Instance B's: ``hosts`` of them, each with an output folder of its own."""
    for name in [name for name in stack.procs if name.startswith("worker_")]:
        stack.stop(name)
    stack.env.update(CARCELERY_RECOGNIZER=backend, CARCELERY_LATENCY=LATENCY)
    stack.env.pop("CARCELERY_POOL", None)
    stack.start_worker("worker_a", "detect", None)
    if hosts == 1:
        stack.start_worker("worker_b", "text", None)
        return
    shared = stack.env["CARCELERY_OUTPUT_DIR"]
    try:
        for host in range(1, hosts + 1):
            stack.env["CARCELERY_OUTPUT_DIR"] = str(stack.workdir / f"b{host}" / "output")
            stack.start_worker(f"worker_b{host}", "text", None)
    finally:
        stack.env["CARCELERY_OUTPUT_DIR"] = shared


def index_cost(size: int, workdir: Path) -> dict:
    """Seconds and records read of a run of 10 new images on an index of ``size`` records, and of a rebuild.

    In this process: S3 is moto's in-process mock (no HTTP), the local copy in ``workdir``.
    """
    import boto3
    from moto import mock_aws

    from carcelery import aws
    from carcelery.pipeline import index, records, results
    from carcelery.recognizers import CAR, Label, TextLine

    def record(key):
        return results.with_text(results.detection(key, bucket=BUCKET, key=key, etag="e", labels=[Label(CAR, 99.0)],
                                                   threshold=90.0), [TextLine("ABC 123", 99.0)])

    where, client = index.Location(OUTPUTS, f"index-{size}/"), aws.client
    read, reading = [], results.read_records

    def counted(folder):
        for record in reading(folder):
            read.append(1)
            yield record

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=OUTPUTS)
        aws.client = lambda service: s3
        copy = workdir / f"index-{size}"
        copy.mkdir(parents=True)
        try:
            started = time.perf_counter()
            made = index.Manifest("bench", 1, index.rebuild(copy, where, (record(f"{n}.jpg") for n in range(size))))
            rebuild_s = time.perf_counter() - started
            index.join(copy, made, workdir / f"out-{size}")
            results.read_records = counted
            new = [f"{size // 2 + n}a.jpg" for n in range(10)]
            started = time.perf_counter()
            made = index.Manifest("bench", 2, index.update(copy, where, made.segments,
                                                           {records.order(k): record(k) for k in new}))
            updated_s = time.perf_counter() - started
            index.join(copy, made, workdir / f"out-{size}")
            run_s = time.perf_counter() - started
        finally:
            results.read_records, aws.client = reading, client
    return {"records": size, "rebuild_s": rebuild_s, "update_s": updated_s, "update_and_join_s": run_s,
            "records_read": len(read), "results_jsonl_mb": (workdir / f"out-{size}" / results.RESULTS).stat().st_size / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=300)
    parser.add_argument("--rate", type=float, default=10.0, help="uploads per second")
    parser.add_argument("--preload", type=int, default=20000, help="processed images in the bucket first")
    parser.add_argument("--backends", default="noop,latency")
    parser.add_argument("--index-sizes", default="20000,100000", help="records of the index measured alone")
    parser.add_argument("--skip-uploads", action="store_true", help="measure the index alone")
    parser.add_argument("--b-workers", type=int, default=1, help="Instance B workers, a host each (outputs to S3)")
    parser.add_argument("--skip-beat", action="store_true", help="measure S3 events alone")
    parser.add_argument("--timeout", type=float, default=120, help="seconds the last upload's line is waited for")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="carcelery-bench-events-"))
    # Before carcelery is imported: it reads its settings once.
    os.environ.update({"CARCELERY_TARGET": "emulator", "CARCELERY_QUEUE_PREFIX": "bench-",
                       "CARCELERY_EMULATOR_PORT": str(free_port()), "CARCELERY_BUCKET": BUCKET,
                       "CARCELERY_MONITORING": "off", "CARCELERY_OUTPUT_DIR": str(workdir / "output")})
    if args.b_workers > 1:
        os.environ.update({"CARCELERY_OUTPUT_URI": OUTPUT_URI, "CARCELERY_EMULATOR_FAULTS": str(workdir / "faults.json")})
    for name in ("CARCELERY_SCAN_INTERVAL", "CARCELERY_KEY_PREFIX"):
        os.environ.pop(name, None)
    from carcelery import aws
    from carcelery.embedded.demo import Stack
    from carcelery.settings import EVENTS_QUEUE, settings

    backends = [] if args.skip_uploads else args.backends.split(",")
    figures = {"uploads": args.uploads, "rate": args.rate, "preload": args.preload, "events": {}, "beat": {},
               "index": [index_cost(int(size), workdir) for size in args.index_sizes.split(",") if size]}
    for got in figures["index"]:
        print(f"index of {got['records']} records: a run of 10 read {got['records_read']} records, "
              f"update {got['update_s']:.3f} s, with the join {got['update_and_join_s']:.3f} s "
              f"(results.jsonl {got['results_jsonl_mb']:.0f} MB); a rebuild {got['rebuild_s']:.1f} s", flush=True)
    if not backends:
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        return 0
    with Stack(workdir) as stack:
        stack.start_emulator()
        started = time.monotonic()
        preload(args.preload)
        figures["preload_s"] = time.monotonic() - started
        done = stack.run("carcelery.aws.provision", "--events")
        assert done.returncode == 0, done.stderr
        faults = Path(stack.env.get("CARCELERY_EMULATOR_FAULTS", workdir / "faults.json"))
        if args.b_workers > 1:
            from carcelery.aws import provision

            provision.bucket(OUTPUTS)
        for backend in backends:
            workers(stack, backend, args.b_workers)
            pages = whole_read_rule(faults) if args.b_workers > 1 else 0
            first = wait_for_line(stack, f"first-{backend}.jpg")
            got = uploads(stack, f"ev-{backend}", args.uploads, args.rate, backend, timeout=args.timeout)
            if pages:
                from carcelery.embedded import faults as hook

                ended = {name: stack.log(name).count("terminator -1") for name in stack.procs if name.startswith("worker_b")}
                got.update(b_workers=args.b_workers, whole_reads=hook.hits(faults)[0] / pages, pages_per_read=pages,
                           runs_per_host=ended)
            figures["events"][backend] = {**got, "first_run_s": first}
            print(f"events, {backend}: {json.dumps(figures['events'][backend])}", flush=True)
        # Events off: no notification, no queue; the beat at its default interval.
        if not args.skip_beat:
            aws.client("s3").put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={})
            sqs = aws.client("sqs")
            sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=settings.queue_name(EVENTS_QUEUE))["QueueUrl"])
            stack.start("beat", ["-m", "celery", "-A", "carcelery", "beat", "--loglevel", "INFO",
                                 "--schedule", str(workdir / "beat-schedule")], "beat: Starting")
        for backend in [] if args.skip_beat else backends:
            workers(stack, backend)
            got = uploads(stack, f"beat-{backend}", args.uploads, args.rate, backend, timeout=300)
            figures["beat"][backend] = got
            print(f"beat, {backend}: {json.dumps(got)}", flush=True)
    print(f"\n{args.uploads} uploads at {args.rate:g}/s into a bucket of {args.preload} processed images "
          f"(preloaded in {figures['preload_s']:.0f} s)")
    print(f"  {'way':<7}{'backend':<10}{'lines':>7}{'p50 s':>8}{'p95 s':>8}{'max s':>8}")
    for way in ("events", "beat"):
        for backend, got in figures[way].items():
            print(f"  {way:<7}{backend:<10}{got['arrived']:>7}{got.get('p50_s', 0):>8.2f}"
                  f"{got.get('p95_s', 0):>8.2f}{got.get('max_s', 0):>8.2f}"
                  + (f"  {got['whole_reads']:.1f} whole-bucket reads" if "whole_reads" in got else ""))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
