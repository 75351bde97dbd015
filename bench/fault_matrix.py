"""The fault matrix: every AWS call the pipeline makes, made to fail, and what the user then sees.

    python -m bench.fault_matrix [--calls s3:GetObject,...] [--faults transient,...] [--json FILE] [--docs]

(``--docs`` with ``--calls`` or ``--faults`` rewrites those cells only.)

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
how many requests the fault met (a denial met once was not retried). Prints
the matrix; ``--json`` writes every observation; ``--docs`` writes the table
into docs/operations.md, where tests/test_fault_matrix.py checks a sample of it
against the code.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import boto3

from carcelery.embedded import faults
from carcelery.embedded.demo import ROOT, SEED_IMAGES, Stack
from carcelery.settings import DETECT_QUEUE, TEXT_QUEUE, Settings
from carcelery.transport.acks import ACK_DELAY

FAULTS = ("transient", "throttle", "denied")
# A transient fault twice: botocore's own retries (5 attempts) get through it.
TIMES = {"transient": 2, "throttle": 2, "denied": None}
IMAGES = ("1.jpg", "2.jpg")
DOCS = ROOT / "docs" / "operations.md"
BEGIN, END = "<!-- fault matrix: python -m bench.fault_matrix --docs -->", "<!-- end of the fault matrix -->"
WAIT = 60  # seconds dispatch --wait waits; the run's deadline is 10 s


@dataclass(frozen=True)
class Call:
    """An AWS call of the pipeline: who makes it, and the strings that pick a run's requests out (``match``)."""

    name: str
    who: str
    match: tuple[str, ...]  # formatted with bucket, out, detect, text, results, records


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
    Call("dynamodb:GetItem", "watch_run, dispatch --wait: counts, results", ("{results}",)),
    Call("rekognition:DetectLabels", "worker A: is 1.jpg a car", ("{bucket}", "1.jpg")),
    Call("rekognition:DetectText", "worker B: 1.jpg's text", ("{bucket}", "1.jpg")),
)


@dataclass
class Observed:
    """One run under one fault: what the user saw."""

    call: str
    fault: str
    exit: int
    errors: list[str] = field(default_factory=list)  # dispatch's "error:" lines
    failed: list[str] = field(default_factory=list)  # dispatch's "failed:" lines
    traceback: bool = False
    same_output: bool = False
    stopped: list[str] = field(default_factory=list)  # workers that exited
    hits: int = 0


def outcome(seen: Observed) -> str:
    """What the user saw, in words: the matrix's cell."""
    if seen.hits == 0:
        return "not called"
    if seen.traceback:
        told = f"traceback (exit {seen.exit})"
    elif seen.exit == 0:
        told = "same output.txt" if seen.same_output else "other output.txt"
    elif seen.exit == 1:
        late = all("no result" in line for line in seen.failed)
        told = f"{len(seen.failed)} image(s) failed " + ("at the deadline" if late else "at once, one line each")
    elif seen.exit == 2:
        told = "dispatch stops, one line, exit 2"
    elif seen.exit == 3:
        told = "run never ends (--wait times out)"
    elif seen.exit == 4:
        told = "run failed, one line, exit 4"
    else:
        told = f"exit {seen.exit}"
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
                          "CARCELERY_OUTPUT_URI": f"s3://{prefix}out/runs/"})
        self.stack, self.rules, self.prefix = stack, rules, prefix
        config = Settings.from_env(stack.env)
        self.s3 = boto3.client("s3", endpoint_url=config.endpoint_url, region_name=config.region, **config.credentials)
        self.names = {"out": f"{prefix}out", "detect": config.queue_name(DETECT_QUEUE),
                      "text": config.queue_name(TEXT_QUEUE), "results": config.results_table,
                      "records": config.records_table}
        self.clean: str | None = None

    def start(self) -> "Matrix":
        """Provision the queues and tables, start both workers, and run once without a fault."""
        done = self.stack.run("carcelery.aws.provision")
        assert done.returncode == 0, done.stderr
        self.s3.create_bucket(Bucket=self.names["out"])
        self._workers()
        clean = self.run(None, None)
        assert clean.exit == 0, clean
        return self

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

    def run(self, call: Call | None, fault: str | None) -> Observed:
        """One run of two images, ``call`` failing with ``fault`` (None: no fault, the clean run)."""
        bucket = f"fm-{uuid.uuid4().hex[:12]}"
        self.s3.create_bucket(Bucket=bucket)
        for name in IMAGES:
            self.s3.put_object(Bucket=bucket, Key=name, Body=(SEED_IMAGES / name).read_bytes())
        if call and fault:
            match = [part.format(bucket=bucket, **self.names) for part in call.match]
            faults.write_rules(self.rules, [{"call": call.name, "match": match, "fault": fault,
                                             "times": TIMES[fault]}])
        try:
            done = self.stack.run("carcelery.dispatch", "--bucket", bucket, "--wait", "--timeout", str(WAIT),
                                  timeout=WAIT + 60)
            # The workers delete the run's last messages after it ended (ACK_DELAY): under the fault still.
            time.sleep(ACK_DELAY + 1)
        finally:
            hits = faults.hits(self.rules)
            faults.write_rules(self.rules, [])
        seen = Observed(call.name if call else "", fault or "", done.returncode, hits=sum(hits) if call else 1,
                        traceback="Traceback" in done.stderr)
        seen.errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        seen.failed = [line.strip() for line in done.stdout.splitlines() if line.startswith("  failed:")]
        run = re.search(r"run (\w+): dispatched", done.stdout)
        output = self.stack.output_dir / "runs" / run.group(1) / "output.txt" if run else None
        text = output.read_text() if output and output.exists() else None
        if call is None:
            self.clean = text
        seen.same_output = text is not None and text == self.clean
        seen.stopped = self._workers()
        return seen


def measure(stack: Stack, rules: Path, calls=CALLS, kinds=FAULTS) -> list[Observed]:
    """Every ``call`` under every fault of ``kinds``, on ``stack``'s emulator, in that order."""
    matrix = Matrix(stack, rules).start()
    return [matrix.run(call, fault) for call in calls for fault in kinds]


def table(cells: dict[tuple[str, str], str]) -> str:
    """The matrix (``(call, fault) -> outcome``) as a markdown table: a row per call, a column per fault."""
    kinds = [kind for kind in FAULTS if any(fault == kind for _, fault in cells)]
    lines = ["| call | made by | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
    for call in CALLS:
        if any((call.name, kind) in cells for kind in kinds):
            lines.append(f"| `{call.name}` | {call.who} | "
                         + " | ".join(cells.get((call.name, kind), "") for kind in kinds) + " |")
    return "\n".join(lines) + "\n"


def documented(text: str | None = None) -> dict[tuple[str, str], str]:
    """The matrix as docs/operations.md holds it: (call, fault) -> outcome."""
    text = DOCS.read_text() if text is None else text
    block = text.split(BEGIN, 1)[1].split(END, 1)[0].strip().splitlines()
    if not block:
        return {}
    kinds = [cell.strip() for cell in block[0].strip("|").split("|")][2:]
    cells = {}
    for row in block[2:]:
        parts = [cell.strip() for cell in row.strip().strip("|").split("|")]
        for kind, cell in zip(kinds, parts[2:], strict=True):
            cells[parts[0].strip("`"), kind] = cell
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fault_matrix", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", help="only these calls, comma-separated (default: all)")
    parser.add_argument("--faults", default=",".join(FAULTS), help="these faults, comma-separated")
    parser.add_argument("--json", type=Path, help="write every observation here")
    parser.add_argument("--docs", action="store_true", help="write the table into docs/operations.md")
    args = parser.parse_args(argv)
    calls = [call for call in CALLS if not args.calls or call.name in args.calls.split(",")]
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
    if args.docs:  # the cells measured now, the others as they were
        text = DOCS.read_text()
        head, rest = text.split(BEGIN, 1)
        DOCS.write_text(f"{head}{BEGIN}\n{table(documented(text) | cells)}{END}{rest.split(END, 1)[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
