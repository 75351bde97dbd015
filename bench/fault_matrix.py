"""The fault matrix: every AWS call the pipeline makes, made to fail, and what the user then sees.

    python -m bench.fault_matrix [--calls s3:GetObject,...] [--faults transient,...] [--json FILE]
    python -m bench.fault_matrix --docs

On an emulator of its own, with its own queues and tables, Instance A's and
Instance B's real workers (the ``rekognition`` recognizer, on the emulator's
Rekognition, threshold 0: both images of a run are cars) and the real
dispatcher (``dispatch --wait``), once per call and fault, the emulator
injects (``carcelery.embedded.faults``):

- ``transient``: 500 InternalError, twice;
- ``throttle``: the service's throttling error, twice;
- ``denied``: AccessDenied (AccessDeniedException), every time.

Each run is of two images, its outputs also uploaded to S3; a call made per
image fails for one of them (1.jpg); the outcome, in
words (``outcome``), is what ``dispatch --wait`` printed and exited with, the
run's output.txt against a run without faults, the workers that stopped, and
how many requests the fault met (a denial met once was not retried).

Two rows are seams, where two paths meet: S3 events (the images uploaded to a
bucket whose events Instance A's worker consumes, an event's ``s3:HeadObject``
failing six times, past botocore's retries, under a transient fault), and two overlapping terminators
(the older run's terminator held in a call until the newer run's ended).

The expected cells are reviewed data, ``bench/fault_matrix.toml``: the run
prints the matrix it measured and the cells that differ from those (exit
code 1), and never rewrites them. ``--docs`` writes the expected table into
docs/operations.md, where tests/test_fault_matrix.py checks it.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import boto3

from carcelery.embedded import faults
from carcelery.embedded.demo import ROOT, SEED_IMAGES, Stack
from carcelery.pipeline import results
from carcelery.settings import (
    DETECT_QUEUE,
    EVENTS_DEAD_LETTER_QUEUE,
    TEXT_QUEUE,
    Settings,
)
from carcelery.transport.acks import ACK_DELAY

FAULTS = ("transient", "throttle", "denied")
# A transient fault twice: botocore's own retries (5 after the first attempt) get through it;
# 6 times (PAST_RETRIES) reach the code that made the call.
PAST_RETRIES = 6
TIMES = {"transient": 2, "throttle": 2, "denied": None}
IMAGES = ("1.jpg", "2.jpg")
NEWER = "3.jpg"  # the newer of two overlapping runs adds it
EXPECTED = Path(__file__).with_suffix(".toml")
DOCS = ROOT / "docs" / "operations.md"
BEGIN, END = "<!-- fault matrix: python -m bench.fault_matrix --docs -->", "<!-- end of the fault matrix -->"
WAIT = 60  # seconds dispatch --wait waits; the run's deadline is 10 s
EVENTS, OVERLAP = "S3 events", "two terminators"  # the seams' paths


@dataclass(frozen=True)
class Call:
    """An AWS call of the pipeline: who makes it, and the strings that pick a run's requests out (``match``).

    ``seam``: the path it is made on, where two paths meet ("": a run of the dispatcher); ``times``:
    how many requests the fault meets, where not ``TIMES``'s.
    """

    name: str
    who: str
    match: tuple[str, ...]  # formatted with bucket, out, detect, text, results, records
    seam: str = ""
    times: tuple[tuple[str, int | None], ...] = ()

    @property
    def row(self) -> str:
        """The row's key in bench/fault_matrix.toml: the call, and the seam in brackets."""
        return f"{self.name} ({self.seam})" if self.seam else self.name


CALLS = (
    Call("s3:ListObjectsV2", "dispatcher: lists the bucket", ("{bucket}",)),
    Call("s3:GetObject", "terminator: the report's picture of 1.jpg", ("{bucket}/1.jpg",)),
    Call("s3:PutObject", "terminator: outputs to CARCELERY_OUTPUT_URI", ("{out}",)),
    Call("sqs:SendMessageBatch", "dispatcher: the images' tasks", ("{bucket}", "carcelery.tasks.detect_car")),
    Call("sqs:SendMessage", "worker A: 1.jpg handed to Instance B",
         ("{bucket}", "carcelery.tasks.recognize_text", "'1.jpg'")),
    Call("sqs:ReceiveMessage", "worker B: receives its tasks", ("{text}",)),
    Call("sqs:DeleteMessageBatch", "worker A: acknowledges its tasks", ("{detect}",)),
    Call("dynamodb:BatchWriteItem", "dispatcher: pending records, ledger", ("{bucket}",)),
    Call("dynamodb:BatchGetItem", "dispatcher: the ledger", ("{bucket}",)),
    Call("dynamodb:PutItem", "workers: 1.jpg's record", ("{records}", "{bucket}", "1.jpg")),
    Call("dynamodb:Query", "terminator: reads the run's records", ("{bucket}",)),
    Call("dynamodb:TransactWriteItems", "workers: chord counting", ("{results}",)),
    Call("dynamodb:GetItem", "dispatch --wait, watch_run: counts, results", ("{results}",)),
    Call("rekognition:DetectLabels", "worker A: is 1.jpg a car", ("{bucket}", "1.jpg")),
    Call("rekognition:DetectText", "worker B: 1.jpg's text", ("{bucket}", "1.jpg")),
    Call("s3:HeadObject", "worker A, S3 events on: is an event's 1.jpg there (transient, throttle: 6 times)",
         ("{bucket}/1.jpg",), EVENTS, (("transient", PAST_RETRIES), ("throttle", PAST_RETRIES))),
    Call("s3:GetObject", "the older run's terminator: its report's picture of 1.jpg, held until a newer "
         "run of the bucket ended, then the fault", ("{bucket}/1.jpg",), OVERLAP,
         (("transient", 1), ("throttle", 1), ("denied", 1))),
)


def expected(path: Path = EXPECTED) -> dict[tuple[str, str], str]:
    """The reviewed cells (bench/fault_matrix.toml): (row, fault) -> outcome."""
    rows = tomllib.loads(path.read_text())
    return {(row, fault): cell for row, cells in rows.items() for fault, cell in cells.items()}


@dataclass
class Observed:
    """One run under one fault: what the user saw."""

    call: str  # the row (Call.row)
    fault: str
    exit: int | None = None  # dispatch --wait's; None: the run had no dispatcher (S3 events)
    errors: list[str] = field(default_factory=list)  # dispatch's "error:" lines; worker A's for S3 events
    failed: list[str] = field(default_factory=list)  # dispatch's "failed:" lines
    traceback: bool = False
    same_output: bool = False
    stopped: list[str] = field(default_factory=list)  # workers that exited
    hits: int = 0
    seam: str = ""
    dead_lettered: bool = False  # S3 events: the run's events in the events' dead-letter queue
    latest: dict[str, str] = field(default_factory=dict)  # two terminators: where -> "newer", "older" or "other"


def _told(seen: Observed) -> str:
    """What a run of the dispatcher showed, in words."""
    if seen.traceback:
        return f"traceback (exit {seen.exit})"
    if seen.exit == 0:
        return "same output.txt" if seen.same_output else "other output.txt"
    if seen.exit == 1:
        late = all("no result" in line for line in seen.failed)
        return f"{len(seen.failed)} image(s) failed " + ("at the deadline" if late else "at once, one line each")
    exits: dict[int | None, str] = {2: "dispatch stops, one line, exit 2", 3: "run never ends (--wait times out)",
                                    4: "run failed, one line, exit 4"}
    return exits.get(seen.exit, f"exit {seen.exit}")


def _told_by_events(seen: Observed) -> str:
    """What a run of S3 events showed, in words: output.txt, or worker A's log and the dead-letter queue."""
    if seen.same_output:
        return "same output.txt"
    if seen.traceback:
        return "events lost, traceback in worker A's log"
    if seen.dead_lettered:
        return "events to the events dead-letter queue, " + ("one line" if len(seen.errors) == 1 else
                                                             f"{len(seen.errors)} lines") + " in worker A's log"
    if seen.errors:
        return "events dropped, " + ("one line" if len(seen.errors) == 1 else f"{len(seen.errors)} lines") + \
            " in worker A's log"
    return f"no line in output.txt within {WAIT} s"


def _told_by_terminators(seen: Observed) -> str:
    """Which run's files the user finds as the latest, here and on S3, once both overlapping runs ended."""
    here, s3 = seen.latest.get("here"), seen.latest.get("s3")
    if here == s3:
        return f"latest output.txt (here and on S3): the {here} run's"
    return f"latest output.txt: the {here} run's here, the {s3} run's on S3"


def outcome(seen: Observed) -> str:
    """What the user saw, in words: the matrix's cell."""
    if seen.hits == 0:
        return "not called"
    told = {EVENTS: _told_by_events, OVERLAP: _told_by_terminators}.get(seen.seam, _told)(seen)
    if seen.stopped:
        told += "; " + ", ".join(seen.stopped) + " stopped"
    if seen.fault == "denied":
        told += "; not retried" if seen.hits == 1 else f"; met {seen.hits} times"
    return told


class Matrix:
    """The workers of ``stack`` (an emulator injecting the faults of ``rules``), and runs under faults.

    Parameters:
      stack: a Stack whose emulator runs with CARCELERY_EMULATOR_FAULTS=``rules``.
      rules: the faults file.
    """

    def __init__(self, stack: Stack, rules: Path):
        prefix = f"fm{uuid.uuid4().hex[:6]}-"
        stack.env.update({"CARCELERY_QUEUE_PREFIX": prefix, "CARCELERY_RESULTS_TABLE": f"{prefix}results",
                          "CARCELERY_RECORDS_TABLE": f"{prefix}records", "CARCELERY_LEDGER_TABLE": f"{prefix}ledger",
                          "CARCELERY_RECOGNIZER": "rekognition", "CARCELERY_CAR_THRESHOLD": "0",
                          "CARCELERY_RUN_DEADLINE": "10", "CARCELERY_MONITORING": "off",
                          "CARCELERY_OUTPUT_URI": f"s3://{prefix}out/runs/", "CARCELERY_BUCKET": f"{prefix}images"})
        self.stack, self.rules, self.prefix = stack, rules, prefix
        config = Settings.from_env(stack.env)
        self.s3 = boto3.client("s3", endpoint_url=config.endpoint_url, region_name=config.region, **config.credentials)
        self.sqs = boto3.client("sqs", endpoint_url=config.endpoint_url, region_name=config.region,
                                **config.credentials)
        self.names = {"out": f"{prefix}out", "detect": config.queue_name(DETECT_QUEUE),
                      "text": config.queue_name(TEXT_QUEUE), "results": config.results_table,
                      "records": config.records_table, "dead": config.queue_name(EVENTS_DEAD_LETTER_QUEUE)}
        self.clean: str | None = None

    def start(self) -> Matrix:
        """Provision the queues, tables and S3 events, start both workers, and run once without a fault."""
        # The events queue made before the workers start: Instance A's worker consumes it from its start.
        done = self.provision(self.stack.env["CARCELERY_BUCKET"])
        assert done.returncode == 0, done.stderr
        self.s3.create_bucket(Bucket=self.names["out"])
        self._workers()
        clean = self.run()
        assert clean.exit == 0, clean
        return self

    def provision(self, bucket: str) -> subprocess.CompletedProcess:
        """``provision --events`` for ``bucket``: its S3 events into the matrix's events queue."""
        return subprocess.run([sys.executable, "-m", "carcelery.aws.provision", "--events"], cwd=ROOT,
                              env={**self.stack.env, "CARCELERY_BUCKET": bucket}, capture_output=True, text=True,
                              timeout=120, check=False)

    def _workers(self) -> list[str]:
        """Start the workers that are not running; the names of those that had stopped."""
        stopped = []
        for name, queue in (("worker_a", DETECT_QUEUE), ("worker_b", TEXT_QUEUE)):
            proc = self.stack.procs.get(name)
            if proc is None or proc.poll() is not None:
                if proc is not None:
                    stopped.append(name)
                    self.stack.procs.pop(name)
                self.stack.start_worker(name, queue, 2)
        return stopped

    def _bucket(self, names=IMAGES) -> str:
        bucket = f"fm-{uuid.uuid4().hex[:12]}"
        self.s3.create_bucket(Bucket=bucket)
        self._upload(bucket, names)
        return bucket

    def _upload(self, bucket: str, names) -> None:
        for name in names:
            self.s3.put_object(Bucket=bucket, Key=name, Body=(SEED_IMAGES / name).read_bytes())

    def _fault(self, call: Call, kind: str, bucket: str, rule: dict | None = None) -> None:
        """``call``'s requests of ``bucket``'s run fail with fault ``kind`` (``rule``: more of the rule, see faults)."""
        match = [part.format(bucket=bucket, **self.names) for part in call.match]
        faults.write_rules(self.rules, [{"call": call.name, "match": match, "fault": kind,
                                         "times": dict(call.times).get(kind, TIMES[kind]), **(rule or {})}])

    def _hits(self) -> int:
        """The requests the fault met; the fault withdrawn."""
        hits = faults.hits(self.rules)
        faults.write_rules(self.rules, [])
        return sum(hits)

    def _dispatch(self, bucket: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "carcelery.dispatch", "--bucket", bucket, "--wait",
                                 "--timeout", str(WAIT)], cwd=ROOT, env=self.stack.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def _output(self, stdout: str) -> str | None:
        """The output.txt of the run whose dispatch printed ``stdout``; None if there is none."""
        run = re.search(r"run (\w+): dispatched", stdout)
        output = self.stack.output_dir / "runs" / run.group(1) / results.OUTPUT if run else None
        return output.read_text() if output and output.exists() else None

    @staticmethod
    def _run_id(stdout: str) -> str:
        """The id of the run whose dispatch printed ``stdout``."""
        run = re.search(r"run (\w+): dispatched", stdout)
        assert run, stdout
        return run.group(1)

    def run(self, call: Call | None = None, fault: str = "") -> Observed:
        """One run of two images, ``call`` failing with ``fault`` (no call: the clean run)."""
        if call is not None and call.seam == EVENTS:
            return self.run_events(call, fault)
        if call is not None and call.seam == OVERLAP:
            return self.run_overlapping(call, fault)
        bucket = self._bucket()
        if call:
            self._fault(call, fault, bucket)
        try:
            done = self.stack.run("carcelery.dispatch", "--bucket", bucket, "--wait", "--timeout", str(WAIT),
                                  timeout=WAIT + 60)
            self._settle()
        finally:
            hits = self._hits()
        seen = Observed(call.row if call else "", fault, done.returncode, hits=hits if call else 1,
                        traceback="Traceback" in done.stderr)
        seen.errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        seen.failed = [line.strip() for line in done.stdout.splitlines() if line.startswith("  failed:")]
        text = self._output(done.stdout)
        if call is None:
            self.clean = text
        seen.same_output = text is not None and text == self.clean
        seen.stopped = self._workers()
        return seen

    def _settle(self, quiet: float = 3.0, timeout: float = 20) -> None:
        """Wait, under the fault still, until it was met for the last time: no new hit for ``quiet`` seconds.

        The run's last tasks (the terminator, watch_run's last look) may meet it after the dispatcher
        ended, and the workers delete the run's last messages ACK_DELAY after it ended.
        """
        deadline, quiet = time.monotonic() + timeout, max(quiet, ACK_DELAY + 1)
        seen, since = faults.hits(self.rules), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet:
            time.sleep(0.2)
            if (now := faults.hits(self.rules)) != seen:
                seen, since = now, time.monotonic()

    def _bucket_output(self, bucket: str) -> str | None:
        """The output.txt of the last run that wrote ``bucket``'s files (a run of events names no folder)."""
        written = []
        for folder in (self.stack.output_dir / "runs").iterdir():
            try:
                first = (folder / results.RESULTS).read_text().split("\n", 1)[0]
                if first and json.loads(first).get("bucket") == bucket:
                    written.append((folder.stat().st_mtime, (folder / results.OUTPUT).read_text()))
            except (FileNotFoundError, ValueError):
                continue  # being written, or pruned
        return max(written)[1] if written else None

    def _dead_lettered(self, bucket: str) -> bool:
        """Whether the events' dead-letter queue holds ``bucket``'s events (those taken out)."""
        url = self.sqs.get_queue_url(QueueName=self.names["dead"])["QueueUrl"]
        found = False
        while got := self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages"):
            for message in got:
                found |= bucket in message["Body"]
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return found

    def run_events(self, call: Call, fault: str) -> Observed:
        """Two images uploaded to a bucket whose S3 events Instance A's worker consumes, ``call`` failing."""
        bucket = self._bucket(())
        done = self.provision(bucket)
        assert done.returncode == 0, done.stderr
        since = len(self.stack.log("worker_a").encode())
        self._fault(call, fault, bucket)
        seen = Observed(call.row, fault, seam=EVENTS)
        try:
            self._upload(bucket, IMAGES)
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                log = self.stack.log("worker_a", since)
                # Worker A's errors of the events' task: the events set aside or dropped, or the task failed.
                seen.errors = [line for line in log.splitlines() if "ERROR/" in line
                               and ("events:" in line or "apply_events" in line)]
                seen.same_output = self._bucket_output(bucket) == self.clean
                if seen.same_output or seen.errors:
                    break
                time.sleep(0.2)
            time.sleep(ACK_DELAY + 1)
        finally:
            seen.hits = self._hits()
        seen.same_output = self._bucket_output(bucket) == self.clean
        seen.traceback = "Traceback" in self.stack.log("worker_a", since)
        seen.dead_lettered = self._dead_lettered(bucket)
        seen.stopped = self._workers()
        return seen

    def run_overlapping(self, call: Call, fault: str) -> Observed:
        """Two runs of one bucket whose terminators overlap: the older one's ``call`` held until the newer
        one's terminator ended, then failing with ``fault``; which run's files the user finds as the latest."""
        bucket = self._bucket()
        self._fault(call, fault, bucket, {"fault": "delay", "seconds": WAIT, "then": fault})
        seen = Observed(call.row, fault, seam=OVERLAP)
        older = self._dispatch(bucket)
        try:
            deadline = time.monotonic() + WAIT
            while faults.hits(self.rules) != [1]:  # the older run's terminator is held
                assert older.poll() is None and time.monotonic() < deadline, older.communicate()
                time.sleep(0.1)
            self._upload(bucket, (NEWER,))
            since = len(self.stack.log("worker_b").encode())
            newer = self._dispatch(bucket)
            new_out, new_err = newer.communicate(timeout=WAIT + 60)
            assert newer.returncode == 0, new_out + new_err
            newer_run = self._run_id(new_out)
            # The newer run's terminator has written its files, here and to S3 (its log line comes after).
            while f"run={newer_run} terminator -1" not in self.stack.log("worker_b", since):
                assert time.monotonic() < deadline + WAIT, self.stack.log("worker_b", since)[-3000:]
                time.sleep(0.1)
        finally:
            seen.hits = self._hits()  # the held request goes on
        old_out, old_err = older.communicate(timeout=WAIT + 60)
        older_run = self._run_id(old_out)
        # Ended by its deadline or not (watch_run gives a terminator a deadline), the older terminator goes on.
        deadline = time.monotonic() + WAIT
        while f"run={older_run} terminator -1" not in self.stack.log("worker_b", since):
            assert time.monotonic() < deadline, self.stack.log("worker_b", since)[-3000:]
            time.sleep(0.1)
        time.sleep(ACK_DELAY + 1)
        seen.exit, seen.errors = older.returncode, [line for line in old_err.splitlines() if line.startswith("error:")]
        runs = {"newer": self._output(new_out), "older": self._output(old_out)}
        latest = {"here": (self.stack.output_dir / results.OUTPUT).read_text(),
                  "s3": self.s3.get_object(Bucket=self.names["out"], Key=f"runs/latest/{results.OUTPUT}")[
                      "Body"].read().decode()}
        seen.latest = {where: next((which for which, text in runs.items() if text == found), "other")
                       for where, found in latest.items()}
        seen.traceback = "Traceback" in old_err + new_err
        seen.stopped = self._workers()
        return seen


def measure(stack: Stack, rules: Path, calls=CALLS, kinds=FAULTS) -> list[Observed]:
    """Every ``call`` under every fault of ``kinds``, on ``stack``'s emulator, in that order."""
    matrix = Matrix(stack, rules).start()
    return [matrix.run(call, fault) for call in calls for fault in kinds]


def table(cells: dict[tuple[str, str], str]) -> str:
    """The matrix (``(row, fault) -> outcome``) as a markdown table: a row per call, a column per fault."""
    kinds = [kind for kind in FAULTS if any(fault == kind for _, fault in cells)]
    lines = ["| call | made by | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
    for call in CALLS:
        if any((call.row, kind) in cells for kind in kinds):
            name = f"`{call.name}`" + (f" ({call.seam})" if call.seam else "")
            lines.append(f"| {name} | {call.who} | " + " | ".join(cells.get((call.row, kind), "") for kind in kinds)
                         + " |")
    return "\n".join(lines) + "\n"


def documented(text: str | None = None) -> str:
    """The table docs/operations.md holds between its markers."""
    text = DOCS.read_text() if text is None else text
    return text.split(BEGIN, 1)[1].split(END, 1)[0].lstrip("\n")


def differences(seen: dict[tuple[str, str], str], want: dict[tuple[str, str], str]) -> list[str]:
    """The cells of ``seen`` that are not ``want``'s, a line each."""
    return [f"{row} / {fault}: expected {want.get((row, fault), '(no cell)')!r}, seen {cell!r}"
            for (row, fault), cell in seen.items() if want.get((row, fault)) != cell]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fault_matrix", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", help="only these rows (a call, or a seam's row: 's3:HeadObject (S3 events)'), "
                                        "comma-separated (default: all)")
    parser.add_argument("--faults", default=",".join(FAULTS), help="these faults, comma-separated")
    parser.add_argument("--json", type=Path, help="write every observation here")
    parser.add_argument("--docs", action="store_true",
                        help="write the expected table (bench/fault_matrix.toml) into docs/operations.md, measure nothing")
    args = parser.parse_args(argv)
    if args.docs:
        text = DOCS.read_text()
        head, rest = text.split(BEGIN, 1)
        DOCS.write_text(f"{head}{BEGIN}\n{table(expected())}{END}{rest.split(END, 1)[1]}")
        return 0
    calls = [call for call in CALLS if not args.calls or call.row in args.calls.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="carcelery-fault-matrix-"))
    rules = workdir / "faults.json"
    with socket.socket() as sock:  # a free loopback port for the emulator
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"CARCELERY_TARGET": "emulator", "CARCELERY_EMULATOR_PORT": str(port),
           "CARCELERY_EMULATOR_FAULTS": str(rules)}
    with Stack(workdir, env) as stack:
        stack.start_emulator()
        observed = measure(stack, rules, calls, args.faults.split(","))
    cells = {(seen.call, seen.fault): outcome(seen) for seen in observed}
    print(table(cells), end="")
    if args.json:
        args.json.write_text(json.dumps([asdict(seen) | {"outcome": outcome(seen)} for seen in observed], indent=2))
    differ = differences(cells, expected())
    for line in differ:
        print(f"differs: {line}")
    print(f"{len(cells) - len(differ)} of {len(cells)} cells as expected ({EXPECTED.relative_to(ROOT)})")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
