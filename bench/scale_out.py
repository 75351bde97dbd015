"""Instance B scaled out: a run's speed with 1, 2, 3 Instance B workers on one text queue.

    python -m bench.scale_out [--images 1000] [--workers 1,2,3] [--latency 0.3] [--concurrency 4] [--faults] [--json FILE]

Per count of workers, on a fresh emulator of its own (a free loopback port), with the
``latency`` recognizer (it waits, uses no CPU, and reads names only): N objects uploaded,
Instance A's worker (32 threads), W Instance B workers, each with its own output folder and
node name and CONCURRENCY threads (so that Instance B is the slow stage, as it is with the
local models), then ``dispatch --wait``, timed from the dispatcher's start to its end (the
terminator's outputs written and uploaded to CARCELERY_OUTPUT_URI). Printed and in the JSON:
images per second of the run; car images per second through Instance B (text tasks done, from
the workers' log lines, over their span); CPU seconds of the emulator and the workers.

``--faults``: then a run with 3 workers, one stopped warm (SIGTERM to its main process, as
systemd stops it at a scale-in) after a third of the car images, one killed (SIGKILL) after
two thirds, and the same run again with the one worker left: output.txt the same (in S3),
every image once in results.jsonl, none failed, and the images read twice (only those the
killed worker had read and not yet deleted).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .pipeline import free_port
from .processes import cpu_s

BUCKET, OUTPUTS = "scale-out-images", "scale-out-outputs"
TEXT_DONE = re.compile(r"^\[(\S+ \S+): INFO/MainProcess\] \S+: image=(\S+) stage=text lines=", re.M)
# The killed worker's messages come back after the visibility timeout; watch_run looks
# every tenth of the deadline, within it.
SETTINGS = {"CARCELERY_RECOGNIZER": "latency", "CARCELERY_MONITORING": "off", "CARCELERY_VISIBILITY_TIMEOUT": "30",
            "CARCELERY_RUN_DEADLINE": "200", "CARCELERY_QUEUE_PREFIX": "scale-out-", "CARCELERY_BUCKET": BUCKET,
            "CARCELERY_OUTPUT_URI": f"s3://{OUTPUTS}/"}


def text_done(log: str) -> list[tuple[float, str]]:
    """(epoch seconds, image) of every text task a worker's log says it finished."""
    return [(datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp(), image)
            for stamp, image in TEXT_DONE.findall(log)]


class Hosts:
    """An emulator, Instance A's worker and Instance B's workers, one Stack per host (its own output folder)."""

    def __init__(self, workdir: Path, workers: int, concurrency: int):
        from carcelery import aws
        from carcelery.aws import provision
        from carcelery.embedded.demo import Stack

        aws.reset()  # a fresh emulator per run, on the same port
        self.emulator = Stack(workdir / "emulator")
        self.emulator.start_emulator()
        provision.bucket(OUTPUTS)
        self.a = Stack(workdir / "a")
        self.a.start_worker("a", "detect", 32)
        self.b = {f"b{n}": Stack(workdir / f"b{n}") for n in range(1, workers + 1)}
        for name, stack in self.b.items():
            stack.start_worker(name, "text", concurrency)

    def done(self) -> dict[str, list[tuple[float, str]]]:
        return {name: text_done(stack.log(name)) for name, stack in self.b.items()}

    def cpu(self) -> dict[str, float]:
        stacks = {"emulator": self.emulator, "a": self.a, **self.b}
        return {name: cpu_s(stack.procs[name].pid) for name, stack in stacks.items() if name in stack.procs}

    def close(self) -> None:
        for stack in (*reversed(self.b.values()), self.a, self.emulator):
            stack.stop()


def upload(images: int) -> None:
    from carcelery import aws

    s3 = aws.client("s3")
    for n in range(images):
        s3.put_object(Bucket=BUCKET, Key=f"{n:05d}.jpg", Body=b"the latency recognizer reads names only")


def dispatch(hosts: Hosts, *args: str, during=None) -> dict:
    """``dispatch --wait`` on Instance A; ``during(hosts)`` while it runs. Its wall time, output and exit code."""
    cpu_before = hosts.cpu()
    started = time.time()
    run = subprocess.Popen([sys.executable, "-m", "carcelery.dispatch", "--wait", "--timeout", "1800", *args],
                           cwd=hosts.a.workdir, env=hosts.a.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    if during:
        during(hosts)
    out, err = run.communicate()
    cpu = hosts.cpu()
    uri = re.search(r"uploaded to (s3://\S+/)", out)
    return {"wall_s": time.time() - started, "exit_code": run.returncode, "summary": out.strip().splitlines()[-3:],
            "error": err.strip().splitlines()[-3:] if run.returncode else [], "output_uri": uri and uri.group(1),
            "cpu_s": {name: cpu[name] - cpu_before.get(name, 0.0) for name in cpu}}


def s3_file(uri: str, name: str) -> bytes:
    from carcelery import aws

    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return aws.client("s3").get_object(Bucket=bucket, Key=f"{prefix}{name}")["Body"].read()


def throughput(images: int, workers: int, concurrency: int, workdir: Path) -> dict:
    hosts = Hosts(workdir, workers, concurrency)
    try:
        upload(images)
        run = dispatch(hosts)
        done = hosts.done()
    finally:
        hosts.close()
    stamps = sorted(stamp for finished in done.values() for stamp, _ in finished)
    span = stamps[-1] - stamps[0] if len(stamps) > 1 else float("nan")
    return {"workers": workers, "images": images, "cars": len(stamps), **run,
            "images_per_s": images / run["wall_s"], "b_car_images_per_s": (len(stamps) - 1) / span,
            "b_tasks_per_worker": {name: len(finished) for name, finished in done.items()}}


def faults(images: int, concurrency: int, workdir: Path) -> dict:
    """Three Instance B workers, one stopped warm, one killed; then the same run with the one left."""
    hosts = Hosts(workdir, 3, concurrency)
    events = {}

    def scale_in(hosts: Hosts) -> None:
        cars = images // 2  # about half the latency recognizer's images are cars
        while sum(len(d) for d in hosts.done().values()) < cars // 3:
            time.sleep(0.2)
        hosts.b["b2"].procs["b2"].send_signal(signal.SIGTERM)
        events["b2_exit_code"] = hosts.b["b2"].procs["b2"].wait(300)
        while sum(len(d) for d in hosts.done().values()) < 2 * cars // 3:
            time.sleep(0.2)
        hosts.b["b3"].kill("b3", signal.SIGKILL)

    try:
        upload(images)
        scaled = dispatch(hosts, during=scale_in)
        # What SQS delivers again comes back within the visibility timeout.
        time.sleep(int(SETTINGS["CARCELERY_VISIBILITY_TIMEOUT"]) + 5)
        done = hosts.done()
        alone = dispatch(hosts, "--force")
        output, reference = (s3_file(run["output_uri"], "output.txt") for run in (scaled, alone))
        records = [json.loads(line) for line in s3_file(scaled["output_uri"], "results.jsonl").splitlines()]
    finally:
        hosts.close()
    keys = collections.Counter(record["image"] for record in records)
    failed = sum("error" in record for record in records)
    read = collections.Counter(image for finished in done.values() for _, image in finished)
    twice = sorted(image for image, count in read.items() if count > 1)
    return {"images": images, "run": scaled, "one_worker_run": alone, "b2_exit_code": events.get("b2_exit_code"),
            "output_sha256": hashlib.sha256(output).hexdigest(), "same_as_one_worker": output == reference,
            "output_lines": output.count(b"\n"), "images_in_results": len(keys),
            "images_more_than_once_in_results": sum(1 for c in keys.values() if c > 1), "failed": failed,
            "b_tasks_per_worker": {name: len(finished) for name, finished in done.items()},
            "read_twice": len(twice),
            "read_twice_not_by_the_killed": [i for i in twice if i not in {image for _, image in done["b3"]}]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_out", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--workers", default="1,2,3", help="counts of Instance B workers, comma-separated")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per recognition call (default 0.3)")
    parser.add_argument("--concurrency", type=int, default=4, help="threads per Instance B worker (default 4)")
    parser.add_argument("--faults", action="store_true", help="then the run with one stopped warm, one killed")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    # Before carcelery is imported: it reads its settings once. Every run's emulator on this port.
    os.environ.update({**SETTINGS, "CARCELERY_TARGET": "emulator", "CARCELERY_EMULATOR_PORT": str(free_port()),
                       "CARCELERY_LATENCY": str(args.latency)})
    workdir = Path(tempfile.mkdtemp(prefix="carcelery-scale-out-"))
    load = os.getloadavg()[0]
    figures = {"latency_s": args.latency, "b_concurrency": args.concurrency, "a_concurrency": 32,
               "cores": os.cpu_count(), "load_average_at_start": load, "runs": []}
    print(f"{args.images} images, latency {args.latency} s, Instance A 32 threads, each Instance B "
          f"{args.concurrency} threads; {os.cpu_count()} cores, load average {load:.1f}")
    for workers in (int(w) for w in args.workers.split(",")):
        got = throughput(args.images, workers, args.concurrency, workdir / f"workers-{workers}")
        figures["runs"].append(got)
        print(f"  B workers {workers}: exit {got['exit_code']}, {got['wall_s']:.1f} s, {got['images_per_s']:.1f} images/s, "
              f"through B {got['b_car_images_per_s']:.1f} car images/s ({got['cars']} cars; per worker "
              f"{got['b_tasks_per_worker']}); CPU s {', '.join(f'{k} {v:.1f}' for k, v in got['cpu_s'].items())}",
              flush=True)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    code = max(r["exit_code"] for r in figures["runs"])
    if args.faults:
        got = figures["faults"] = faults(args.images, args.concurrency, workdir / "faults")
        ok = (got["run"]["exit_code"] == 0 and got["same_as_one_worker"] and got["b2_exit_code"] == 0
              and got["images_in_results"] == args.images and not got["images_more_than_once_in_results"]
              and not got["failed"] and not got["read_twice_not_by_the_killed"])
        print(f"  faults (3 workers, b2 stopped warm, b3 killed): exit {got['run']['exit_code']}, "
              f"{got['run']['wall_s']:.1f} s; output.txt ({got['output_lines']} lines) the same as one worker's: "
              f"{got['same_as_one_worker']}; {got['images_in_results']} images in results.jsonl, "
              f"{got['images_more_than_once_in_results']} more than once, {got['failed']} failed; per worker "
              f"{got['b_tasks_per_worker']}; read twice {got['read_twice']} (not by the killed worker: "
              f"{len(got['read_twice_not_by_the_killed'])})", flush=True)
        code = max(code, 0 if ok else 1)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
