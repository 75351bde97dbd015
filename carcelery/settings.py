"""Every setting carcelery reads, from environment variables, in one place.

Nothing configured means the embedded default: the local AWS emulator on
127.0.0.1 and the local models. ``CARCELERY_TARGET=aws`` switches to real AWS,
where boto3's standard credential chain applies (nothing is hard-coded).

The table below is the one description of the settings: ``python -m
carcelery.settings`` prints it as markdown, and docs/configuration.md holds
that output (tests/test_docs.py checks both, and that every CARCELERY_* name
read here is in it).

| variable                  | default                     | meaning                                        |
|---------------------------|-----------------------------|------------------------------------------------|
| CARCELERY_TARGET          | emulator                    | ``emulator`` (local moto server) or ``aws``    |
| CARCELERY_EMULATOR_HOST   | 127.0.0.1                   | address the emulator binds to and is reached at|
| CARCELERY_EMULATOR_PORT   | 4566                        | its port                                       |
| CARCELERY_REGION          | ``$AWS_DEFAULT_REGION``, else ``us-east-1`` | AWS region of SQS, S3, DynamoDB, Rekognition |
| CARCELERY_BUCKET          | carcelery-images            | S3 bucket holding the images                   |
| CARCELERY_KEY_PREFIX      | (empty)                     | only keys under this prefix are dispatched     |
| CARCELERY_QUEUE_PREFIX    | carcelery-                  | prefix of every SQS queue name                 |
| CARCELERY_RESULTS_TABLE   | carcelery-results           | DynamoDB table of Celery's result backend      |
| CARCELERY_RESULT_EXPIRES  | 86400                       | seconds the result backend keeps what it writes (tasks' results, chords' counters; Celery's ``result_expires``); DynamoDB's TTL deletes it after that (within days). Longer than a run |
| CARCELERY_LEDGER_TABLE    | carcelery-ledger            | DynamoDB table of the images already dispatched (key, ETag) |
| CARCELERY_RECORDS_TABLE   | carcelery-records           | DynamoDB table of every image's result record, by bucket and key; the outputs are made from it |
| CARCELERY_SCAN_INTERVAL   | 60; 3600 with S3 events     | seconds between the beat's scans for new images; once ``provision --events`` has made the events queue, the scan is the backfill (what events missed: while they were off, removals too), every hour unless set |
| CARCELERY_EVENTS_WINDOW   | 1                           | S3 events: seconds a run gathers events after its first one, before it is sent |
| CARCELERY_EVENTS_BATCH    | 100                         | S3 events: a run is sent at once when it holds this many events |
| CARCELERY_RECOGNIZER      | local                       | ``local``, ``rekognition``, ``noop`` or ``latency`` |
| CARCELERY_CAR_THRESHOLD   | the recognizer's own (local 70, rekognition 90) | car confidence (0-100) at or above which an image holds a car |
| CARCELERY_TEXT_REGION     | vehicles                    | where a car image's text is read: ``vehicles`` (its cars' and plates' boxes; the whole image if it has none) or ``image`` (all of it, signs and watermarks too) |
| CARCELERY_PLATE_FORMATS   | AAA9999,9AAA999,AAA9A99,AA999AA,AA99AAA,9999AAA | the formats of number plates, ``A`` a letter and ``9`` a digit: a plate-like read that fits none takes the text model's second choice for one character where that makes it fit one (local recognizer; ``none``: reads are kept as read). The default: most states of the United States (ABC1234) and California (1ABC234), Brazil (ABC1234, and Mercosur's ABC1D23), France, Italy and Argentina (AB123CD), the United Kingdom (AB12CDE), Spain (1234ABC) |
| CARCELERY_OUTPUT_DIR      | output                      | where Instance B writes the outputs: ``runs/<run id>/``, ``latest`` (a link to the last run's folder), and output.txt, results.jsonl, report.html (links into ``latest``) |
| CARCELERY_OUTPUT_URI      | (none)                      | ``s3://bucket/prefix``: also upload each run's outputs there (``<prefix>runs/<run id>/`` and ``<prefix>latest/``); the outputs' index, which every Instance B host continues, is kept there (``<prefix>index/``); without it, in the emulator's ``s3://carcelery-outputs/index/`` (on AWS it is required) |
| CARCELERY_KEEP_RUNS       | 20                          | runs whose folders are kept, here (``runs/<run id>/``) and at CARCELERY_OUTPUT_URI: the newest that ended, and the one ``latest`` shows; older ones are deleted when a run ends (1 or more) |
| CARCELERY_MAX_IMAGE_BYTES | 52428800 (50 MiB)           | largest image object a worker reads (detect, text, the report's pictures); a larger one fails at its first stage, unread (``images.ObjectTooLarge``) (1 or more) |
| CARCELERY_RUN_DEADLINE    | 1800                        | seconds a run may go without a part done before it ends with what it has, the images missing listed as failed; longer than a redelivered task can take (CARCELERY_VISIBILITY_TIMEOUT x CARCELERY_MAX_RECEIVES) |
| CARCELERY_MODEL_DIR       | ~/.cache/carcelery/models   | where setup puts the local detector model      |
| CARCELERY_VISIBILITY_TIMEOUT | 300                      | seconds a received task stays hidden (0-43200, SQS's limits); a worker hides the messages it holds for this long again every third of it, so a task of any length runs once, and the task of a worker that died is delivered again within this many seconds |
| CARCELERY_TASK_TIME_LIMIT | 600                         | seconds an image task (detect_car, recognize_text) may run: then its image fails, recorded with why (Celery's ``soft_time_limit``; 30 s later a task stuck beyond reach is killed, ``time_limit``); prefork pool only, Celery's threads pool has no time limits |
| CARCELERY_MAX_RECEIVES    | 5                           | receives after which SQS moves a message to the dead-letter queue (1-1000) |
| CARCELERY_RECOGNITION_QUOTA | (none)                    | calls per second per recognition API (DetectLabels, DetectText) for the whole deployment: Rekognition's quota, per account and region; split evenly between the workers (docs/aws.md, "Rekognition: pool, rate limit, cost") |
| CARCELERY_WORKERS         | 1                           | ``celery worker`` instances per queue (Instance A's, Instance B's) sharing the quota (1 or more) |
| CARCELERY_POOL            | per recognizer: ``threads`` for ``rekognition`` and ``latency``, else ``prefork`` | Celery's worker pool (``worker_pool``): ``prefork`` for models that compute, ``threads`` for a service one waits on |
| CARCELERY_CONCURRENCY     | per pool: ``threads`` 32, ``prefork`` one process per core | tasks in flight per worker (``worker_concurrency``; 1 or more) |
| CARCELERY_LATENCY         | 0.3                         | ``latency`` recognizer: seconds each call waits |
| CARCELERY_LATENCY_JITTER  | 0.1                         | ``latency`` recognizer: each wait is off by up to this many seconds, either way |
| CARCELERY_THROTTLE        | 0                           | ``latency`` recognizer: fraction of calls (0-1) refused with ThrottlingException |
| CARCELERY_MODEL_THREADS   | 1                           | threads per model (0: the libraries' defaults); parallelism comes from worker processes |
| CARCELERY_MONITORING      | on                          | ``on``: task events and remote control over SNS (Flower, ``celery inspect``); ``off``: neither, for raw throughput |
| CARCELERY_TASK_SENT_EVENTS| off                         | ``on``: the dispatcher sends task-sent events too (one SNS publish per task) |
| CARCELERY_FLOWER_PORT     | 5555                        | port of Flower (``celery -A carcelery flower``, settings in flowerconfig.py) on 127.0.0.1 |
| CARCELERY_FLOWER_USER     | (unset)                     | the user Flower asks for (HTTP basic auth); required, without ``:`` |
| CARCELERY_FLOWER_PASSWORD | (unset)                     | that user's password, any characters; required: without it Flower does not start |
| CARCELERY_NOOP_EXIT_ON    | (unset)                     | tests only: the ``noop`` recognizer's process exits at once (``os._exit``) when it meets this image name, a worker-killing poison |
| CARCELERY_EMULATOR_FAULTS | (unset)                     | tests only: a file of AWS faults (errors, delays) the emulator injects into its answers (``carcelery.embedded.faults``) |
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

TARGETS = ("emulator", "aws")
RECOGNIZERS = ("local", "rekognition", "noop", "latency")
POOLS = ("prefork", "threads", "solo")
# Recognizers that wait on a service rather than compute: many calls in flight
# per process, in THREADS threads (measured: docs/performance.md, "Which pool").
WAITING_RECOGNIZERS = ("rekognition", "latency")
THREADS = 32
TEXT_REGIONS = ("vehicles", "image")
PLATE_FORMATS = ("AAA9999", "9AAA999", "AAA9A99", "AA999AA", "AA99AAA", "9999AAA")
SWITCH = {"on": True, "1": True, "true": True, "off": False, "0": False, "false": False}

# Celery queue names (SQS names get CARCELERY_QUEUE_PREFIX in front).
DETECT_QUEUE = "detect"  # Instance A: car detection
TEXT_QUEUE = "text"      # Instance B: text recognition and the -1 terminator
DEAD_LETTER_QUEUE = "dead-letter"  # where SQS moves a message received too often
# S3's event notifications (python -m carcelery.aws.provision --events), read by Instance A's worker.
EVENTS_QUEUE = "events"
EVENTS_DEAD_LETTER_QUEUE = "events-dead-letter"  # events that are not S3 events, with why
# The beat's interval once events come: it is the backfill then.
BACKFILL_INTERVAL = 3600.0

# The emulator accepts any credentials; these are not secrets, and using fixed
# ones keeps real credentials from the environment away from it.
EMULATOR_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class ConfigError(ValueError):
    """A setting has a value carcelery cannot use; the message names it and the fix."""


class OutOfRange(ConfigError):
    """A number setting is outside what carcelery (or the AWS service it is passed to) accepts."""


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}; set it to one of them")
    return value


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in SWITCH:
        raise ConfigError(f"{name}={raw!r} is neither on nor off; set it to one of them")
    return SWITCH[raw]


def _number(env: Mapping[str, str], name: str, default, kind=int):
    raw = env.get(name)
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; set it to one, or unset it for {default!r}") from None


def _ranged(env: Mapping[str, str], name: str, default, low, high=None, kind=int):
    """The number setting ``name`` (``default`` if unset), which must be within ``low``..``high`` (None: no upper bound).

    Raises:
      OutOfRange: it is not; the message names the variable, its value and the range.
    """
    value = _number(env, name, default, kind)
    if value is not None and not (low <= value and (high is None or value <= high)):
        allowed = f"{low}-{high}" if high is not None else f"{low} or more"
        unset = "" if default is None else f" for {default}"
        raise OutOfRange(f"{name}={value} is outside {allowed}; set it within, or unset it{unset}")
    return value


def _plate_formats(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = env.get(name, "").strip()
    if not value:
        return default
    if value.lower() == "none":
        return ()
    found = tuple(part.strip().upper() for part in value.split(","))
    for one in found:
        if not re.fullmatch(r"[A9]+", one):
            raise ConfigError(f"{name}: {one!r} is not a plate format; write each with A for a letter and 9 for a digit "
                              "(9AAA999), separated by commas, or none")
    return found


def _s3_uri(env: Mapping[str, str], name: str) -> str:
    value = env.get(name) or ""
    if value and (not value.startswith("s3://") or not value[5:].split("/", 1)[0]):
        raise ConfigError(f"{name}={value!r} is not an s3://bucket/prefix URI; set it to one, or unset it")
    return value


@dataclass(frozen=True)
class Settings:
    target: str = "emulator"
    emulator_host: str = "127.0.0.1"
    emulator_port: int = 4566
    region: str = "us-east-1"
    bucket: str = "carcelery-images"
    key_prefix: str = ""
    queue_prefix: str = "carcelery-"
    results_table: str = "carcelery-results"
    ledger_table: str = "carcelery-ledger"
    records_table: str = "carcelery-records"
    result_expires: int = 86400
    scan_interval: float = 60.0
    scan_interval_set: bool = False
    events_window: float = 1.0
    events_batch: int = 100
    recognizer: str = "local"
    car_threshold: float | None = None
    text_region: str = "vehicles"
    plate_formats: tuple[str, ...] = PLATE_FORMATS
    output_dir: Path = Path("output")
    output_uri: str = ""
    keep_runs: int = 20
    max_image_bytes: int = 50 * 1024 * 1024
    run_deadline: float = 1800.0
    model_dir: Path = Path("~/.cache/carcelery/models").expanduser()  # noqa: RUF009 - a Path is immutable: one for all is right
    model_threads: int = 1
    visibility_timeout: int = 300
    task_time_limit: float = 600.0
    max_receives: int = 5
    recognition_quota: float | None = None
    workers: int = 1
    pool: str = "prefork"
    concurrency: int | None = None
    latency: float = 0.3
    latency_jitter: float = 0.1
    throttle: float = 0.0
    monitoring: bool = True
    task_sent_events: bool = False
    flower_port: int = 5555
    flower_user: str = ""
    flower_password: str = ""
    noop_exit_on: str = ""
    emulator_faults: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        threshold = _ranged(env, "CARCELERY_CAR_THRESHOLD", None, 0, 100, float)
        if env.get("CARCELERY_RATE_LIMIT"):
            raise ConfigError("CARCELERY_RATE_LIMIT is gone (it limited each worker, not the deployment); "
                              "set CARCELERY_RECOGNITION_QUOTA (calls per second, all workers) and CARCELERY_WORKERS")
        throttle = _ranged(env, "CARCELERY_THROTTLE", cls.throttle, 0, 1, float)
        recognizer = _choice(env, "CARCELERY_RECOGNIZER", "local", RECOGNIZERS)
        result_expires = _ranged(env, "CARCELERY_RESULT_EXPIRES", cls.result_expires, 1)
        pool = _choice(env, "CARCELERY_POOL", "threads" if recognizer in WAITING_RECOGNIZERS else "prefork", POOLS)
        return cls(
            target=_choice(env, "CARCELERY_TARGET", "emulator", TARGETS),
            emulator_host=env.get("CARCELERY_EMULATOR_HOST") or cls.emulator_host,
            emulator_port=_number(env, "CARCELERY_EMULATOR_PORT", cls.emulator_port),
            region=env.get("CARCELERY_REGION") or env.get("AWS_DEFAULT_REGION") or cls.region,
            bucket=env.get("CARCELERY_BUCKET") or cls.bucket,
            key_prefix=env.get("CARCELERY_KEY_PREFIX", ""),
            queue_prefix=env.get("CARCELERY_QUEUE_PREFIX") or cls.queue_prefix,
            results_table=env.get("CARCELERY_RESULTS_TABLE") or cls.results_table,
            ledger_table=env.get("CARCELERY_LEDGER_TABLE") or cls.ledger_table,
            records_table=env.get("CARCELERY_RECORDS_TABLE") or cls.records_table,
            result_expires=result_expires,
            scan_interval=_number(env, "CARCELERY_SCAN_INTERVAL", cls.scan_interval, float),
            scan_interval_set=bool(env.get("CARCELERY_SCAN_INTERVAL")),
            events_window=_number(env, "CARCELERY_EVENTS_WINDOW", cls.events_window, float),
            events_batch=_number(env, "CARCELERY_EVENTS_BATCH", cls.events_batch),
            recognizer=recognizer,
            car_threshold=threshold,
            text_region=_choice(env, "CARCELERY_TEXT_REGION", cls.text_region, TEXT_REGIONS),
            plate_formats=_plate_formats(env, "CARCELERY_PLATE_FORMATS", cls.plate_formats),
            output_dir=Path(env.get("CARCELERY_OUTPUT_DIR") or cls.output_dir),
            output_uri=_s3_uri(env, "CARCELERY_OUTPUT_URI"),
            keep_runs=_ranged(env, "CARCELERY_KEEP_RUNS", cls.keep_runs, 1),
            max_image_bytes=_ranged(env, "CARCELERY_MAX_IMAGE_BYTES", cls.max_image_bytes, 1),
            run_deadline=_number(env, "CARCELERY_RUN_DEADLINE", cls.run_deadline, float),
            model_dir=Path(env["CARCELERY_MODEL_DIR"]).expanduser() if env.get("CARCELERY_MODEL_DIR") else cls.model_dir,
            model_threads=_number(env, "CARCELERY_MODEL_THREADS", cls.model_threads),
            # SQS's limits: VisibilityTimeout 0-43200 s, maxReceiveCount 1-1000.
            visibility_timeout=_ranged(env, "CARCELERY_VISIBILITY_TIMEOUT", cls.visibility_timeout, 0, 43200),
            task_time_limit=_ranged(env, "CARCELERY_TASK_TIME_LIMIT", cls.task_time_limit, 1, kind=float),
            max_receives=_ranged(env, "CARCELERY_MAX_RECEIVES", cls.max_receives, 1, 1000),
            recognition_quota=_number(env, "CARCELERY_RECOGNITION_QUOTA", None, float),
            workers=_ranged(env, "CARCELERY_WORKERS", cls.workers, 1),
            pool=pool,
            # prefork: Celery's own default, one process per core.
            concurrency=_ranged(env, "CARCELERY_CONCURRENCY", THREADS if pool == "threads" else None, 1),
            latency=_number(env, "CARCELERY_LATENCY", cls.latency, float),
            latency_jitter=_number(env, "CARCELERY_LATENCY_JITTER", cls.latency_jitter, float),
            throttle=throttle,
            monitoring=_switch(env, "CARCELERY_MONITORING", cls.monitoring),
            task_sent_events=_switch(env, "CARCELERY_TASK_SENT_EVENTS", cls.task_sent_events),
            flower_port=_number(env, "CARCELERY_FLOWER_PORT", cls.flower_port),
            flower_user=env.get("CARCELERY_FLOWER_USER", ""),
            flower_password=env.get("CARCELERY_FLOWER_PASSWORD", ""),
            noop_exit_on=env.get("CARCELERY_NOOP_EXIT_ON", ""),
            emulator_faults=env.get("CARCELERY_EMULATOR_FAULTS", ""),
        )

    @property
    def endpoint_url(self) -> str | None:
        """The emulator's URL, or None on AWS (boto3 then picks the region's endpoints)."""
        if self.target == "emulator":
            return f"http://{self.emulator_host}:{self.emulator_port}"
        return None

    @property
    def credentials(self) -> dict[str, str]:
        """Explicit boto3 credentials for the emulator; none on AWS (boto3's own chain)."""
        return dict(EMULATOR_CREDENTIALS) if self.target == "emulator" else {}

    @property
    def broker_url(self) -> str:
        if self.target == "emulator":
            c = self.credentials
            return f"sqs://{c['aws_access_key_id']}:{c['aws_secret_access_key']}@{self.emulator_host}:{self.emulator_port}"
        return "sqs://"

    @property
    def result_backend(self) -> str:
        # Celery's DynamoDB backend counts chord parts natively and is shared
        # between hosts, which the two-instance deployment needs. Its client is
        # the process's (aws.client), with the emulator's address and credentials.
        # ttl_seconds: each item it writes expires then (DynamoDB's TTL, enabled by provision).
        return (f"carcelery.backend:OncePerPartDynamoDBBackend+dynamodb://{self.region}/{self.results_table}"
                f"?ttl_seconds={self.result_expires}")

    @property
    def rate_limit(self) -> str | None:
        """Celery's rate limit of each recognition task in each worker: the quota split between the workers.

        Celery limits a task per worker instance (all its processes or threads
        together), and each task makes one call of its API (DetectLabels on
        Instance A, DetectText on Instance B): so each of CARCELERY_WORKERS
        workers gets CARCELERY_RECOGNITION_QUOTA / CARCELERY_WORKERS calls a second.
        """
        if self.recognition_quota is None:
            return None
        return f"{self.recognition_quota / self.workers:g}/s"

    def queue_attributes(self, dead_letter_arn: str | None) -> dict[str, str]:
        """SQS attributes of a queue: encrypted at rest, and with a redrive policy
        (a message received CARCELERY_MAX_RECEIVES times goes to the dead-letter
        queue instead of looping) when ``dead_letter_arn`` is given."""
        attributes = {"VisibilityTimeout": str(self.visibility_timeout), "SqsManagedSseEnabled": "true"}
        if dead_letter_arn:
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": str(self.max_receives)})
        return attributes

    def queue_name(self, queue: str) -> str:
        """The SQS name of a Celery queue (kombu adds the prefix the same way)."""
        return f"{self.queue_prefix}{queue}"


def table() -> list[tuple[str, str, str]]:
    """The rows of the module docstring's table: (variable, default, meaning)."""
    rows = []
    for line in (__doc__ or "").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith("CARCELERY_"):
            rows.append((cells[0], cells[1], " | ".join(cells[2:])))
    return rows


def markdown() -> str:
    """The settings' table in markdown, as docs/configuration.md shows it."""
    def code(text: str) -> str:
        return re.sub(r"``(.+?)``", r"`\1`", text)

    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, default, meaning in table():
        literal = " " not in default and not default.startswith("(")
        lines.append(f"| `{name}` | {f'`{default}`' if literal else code(default)} | {code(meaning)} |")
    return "\n".join(lines) + "\n"


settings = Settings.from_env()

if __name__ == "__main__":
    print(markdown(), end="")
