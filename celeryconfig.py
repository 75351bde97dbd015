"""carcelery's Celery configuration: Celery's settings, in Celery's names.

The app loads it as Celery's "First steps" does (``app.config_from_object("celeryconfig")``,
carcelery/app.py): this file is the place to change how the pipeline runs on Celery
(queues, routes, acknowledgement, pool, transport options). What comes from the
environment (``CARCELERY_*``) is read in carcelery/settings.py; see docs/configuration.md.

``pip install .`` installs it beside the package (pyproject.toml, ``py-modules``), so
``celery -A carcelery`` finds it from any folder; an editable install (scripts/setup)
uses this very file.
"""

from carcelery.settings import DETECT_QUEUE, TEXT_QUEUE, settings

broker_url = settings.broker_url
broker_connection_retry_on_startup = True
# kombu's SQS transport plus broadcast over SNS, for Flower and remote control.
broker_transport = "carcelery.transport:Transport"
event_exchange = "celeryev"
broker_transport_options = {
    "region": settings.region,
    "queue_name_prefix": settings.queue_prefix,
    "is_secure": settings.target == "aws",
    "visibility_timeout": settings.visibility_timeout,
    # Queues kombu creates itself (not provisioned) are encrypted too.
    "sqs-creation-attributes": settings.queue_attributes(dead_letter_arn=None),
    # Long polling: one ReceiveMessage waits up to 1 s for work on the server
    # side, and the next one follows at once (an empty poll adds polling_interval).
    "wait_time_seconds": 1,
    "polling_interval": 0.1,
    # Monitoring: remote control and events, broadcast through SNS topics.
    "supports_fanout": settings.monitoring,
    "broadcast_exchanges": [event_exchange],
}

# Every task event is one SNS publish (batched per event-loop turn by the
# worker): with monitoring off, workers send none. Task-sent events would be one
# publish per task more, from the dispatcher: off unless asked for.
worker_send_task_events = settings.monitoring
task_send_sent_event = settings.monitoring and settings.task_sent_events

result_backend = settings.result_backend
# Celery's own name for how long results are kept; the backend's URL passes the
# same seconds to DynamoDB's TTL (ttl_seconds), which does the deleting.
result_expires = settings.result_expires
result_extended = False

# JSON only: a message can never make a worker unpickle code.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# The tasks, and the consumer step of S3's event notifications (it adds itself to the app's steps).
imports = ["carcelery.tasks", "carcelery.notification_consumer"]
# A task message a worker cannot run is rejected with its reason, to the dead-letter queue
# (carcelery/rejecting.py); the worker goes on.
worker_consumer = "carcelery.rejecting:Consumer"
# Instance B is the bare worker: ``celery -A carcelery worker`` consumes the
# default queue, text. Every task of the pipeline is routed by name below, so the
# default queue receives no task by accident; Instance A's worker is
# ``celery -A carcelery worker -Q detect``.
task_default_queue = TEXT_QUEUE
task_routes = {
    "carcelery.tasks.detect_car": {"queue": DETECT_QUEUE},
    "carcelery.tasks.scan_bucket": {"queue": DETECT_QUEUE},
    "carcelery.tasks.apply_events": {"queue": DETECT_QUEUE},
    "carcelery.tasks.recognize_text": {"queue": TEXT_QUEUE},
    "carcelery.tasks.terminate": {"queue": TEXT_QUEUE},
    "carcelery.tasks.watch_run": {"queue": TEXT_QUEUE},
}

# A task is acknowledged when it is done, so a task whose worker dies is
# delivered again. A worker holds up to 4 messages per process (Celery's
# default) and hands each to the first free process: fetching one at a time
# left Instance B waiting on SQS round trips between tasks (docs/performance.md).
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 4

# Local models compute: one process per core (prefork). Rekognition is waited
# on: many calls in flight in one process (threads). settings.py, CARCELERY_POOL.
worker_pool = settings.pool
worker_concurrency = settings.concurrency

# Rekognition's quota, split between the workers (settings.rate_limit);
# unset, tasks run as fast as they come. An image task longer than
# CARCELERY_TASK_TIME_LIMIT fails its image (carcelery.tasks._attempt records why);
# one stuck where that exception cannot reach is killed 30 s later (prefork only).
task_annotations = {name: {"rate_limit": settings.rate_limit, "soft_time_limit": settings.task_time_limit,
                           "time_limit": settings.task_time_limit + 30}
                    for name in ("carcelery.tasks.detect_car", "carcelery.tasks.recognize_text")}

beat_schedule = {
    "scan-bucket-for-new-images": {
        "task": "carcelery.tasks.scan_bucket",
        "schedule": settings.scan_interval,
    },
}
