"""The tasks' one error policy: ``Guarded``, the class of every carcelery task.

What a task's work raises is sorted once, by ``aws.errors.sort`` (the transport
and the dispatcher sort with it too), here with a task's own two more: a bad
image (``recognizers.ImageError``) and a task that ran out of time
(``TimedOut``, Celery's soft time limit). Then:

- **transient**, with retries left: ``errors.Transient`` is raised and Celery
  retries the task with its own options (``autoretry_for``, exponential
  backoff of 1, 2, 4, 8, 16 s at most, full jitter: throttled workers do not
  retry in step), ``MAX_RETRIES`` times;
- anything else (permanent, a bug, a bad image, out of time, transient on the
  last try) is the work's failure, an ``errors.Failure`` (a bad image: its
  ``ImageError``), a type whose ``str()`` is its reason: logged in one line
  (a bug with its traceback, once) and returned, for the task to record
  (an image's failure record: ``image_failed``), set aside, or raise.

A task never raises for what a message holds: the chord still completes and
the failure is written down.
"""

from __future__ import annotations

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.log import get_task_logger

from .aws import errors
from .pipeline import results
from .pipeline.model import Record, Ref, Stage
from .printable import printable
from .recognizers import ImageError
from .settings import settings

logger = get_task_logger(__name__)

MAX_RETRIES = 5


class TimedOut(errors.Failure):
    """The task ran longer than its soft time limit (CARCELERY_TASK_TIME_LIMIT)."""


class Guarded(Task):
    """A task whose errors are sorted by the one policy: retried by Celery when transient, else a failure.

    Celery's own retry options are its class attributes (a task may set its
    own: ``@app.task(base=Guarded, max_retries=0)``). Its other names are not
    Celery's ``Task``'s (``tests/test_tasks.py`` checks).
    """

    autoretry_for = (errors.Transient,)
    max_retries = MAX_RETRIES
    retry_backoff = True
    retry_backoff_max = 60
    retry_jitter = True

    def given_up(self, exc: BaseException, what: str, bucket: str = "", key: str = "", *, queue: str = "",
                 table: str = "") -> Exception:
        """Why ``exc`` ends the work ``what`` for good, logged in one line: a ``errors.Failure``, or an ``ImageError``.

        Parameters:
          exc: what the work raised.
          what: the work, as the log names it (``image=1.jpg stage=detect``).
          bucket, key, queue, table: what the work called, for a permanent error's line (``errors.permanent``).

        Raises:
          aws.errors.Transient: ``exc`` is transient and the task has retries left; Celery retries it.
        """
        failure: Exception
        if isinstance(exc, ImageError):  # the image's own: retrying reads the same bytes
            failure = exc
        elif isinstance(exc, SoftTimeLimitExceeded):
            failure = TimedOut(f"ran longer than {settings.task_time_limit:g} s (CARCELERY_TASK_TIME_LIMIT); "
                               "raise it if this work may take longer")
        else:
            failure = errors.sort(exc, bucket, key, queue=queue, table=table)
        if isinstance(failure, errors.Transient):
            if self.request.retries < self.max_retries:
                logger.warning("%s transient error, retrying: %r", what, exc)
                raise errors.Transient(f"{what}: {exc!r}") from exc
            failure = errors.Exhausted.of(exc, self.max_retries)
        if isinstance(failure, errors.Bug):
            logger.error("%s failed with a programming error", what, exc_info=exc)
        logger.error("%s failed: %s", what, printable(str(failure)))
        return failure

    def image_failed(self, ref: Ref | Record, stage: Stage, exc: BaseException, queue: str = "",
                     detected: Record | None = None) -> Record:
        """The failure record of image ``ref`` (bucket, key, etag) at ``stage``, ``exc`` given up (``given_up``).

        Parameters:
          detected: the image's detection, if it was made: its car decision stays in the record.

        Raises:
          aws.errors.Transient: as ``given_up``: Celery retries the task.
        """
        failure = self.given_up(exc, f"image={printable(ref['key'])} stage={stage}", ref["bucket"], ref["key"],
                                queue=queue)
        return results.failure(ref["key"], stage, str(failure), bucket=ref["bucket"], key=ref["key"],
                               etag=ref.get("etag"), detected=detected)
