"""The Celery application, configured from ``celeryconfig.py`` (Celery's settings, at the top of the project).

Adds one worker option, ``--stop-on-terminator``: the assignment's Instance B
stopped when it read ``-1``; with this option a worker shuts down (warm) after
the run's terminator task. Off by default, so a worker serves run after run.

Points Flower (``celery -A carcelery flower``) at the project's
``flowerconfig.py`` from any folder (``FLOWER_CONF``, unless set): password and
loopback do not depend on the working directory (carcelery/commands/flower.py).

The app is the ground the rest stands on: it imports no other carcelery module.
Modules that extend the worker add themselves (``carcelery.notification_consumer``,
listed in celeryconfig.py's ``imports``).
"""

import os
from pathlib import Path

from celery import Celery, bootsteps
from click import Option

# Installed beside the package, as celeryconfig.py (pyproject.toml's py-modules).
FLOWER_CONFIG = Path(__file__).resolve().parents[1] / "flowerconfig.py"
os.environ.setdefault("FLOWER_CONF", str(FLOWER_CONFIG))

app = Celery("carcelery")
app.config_from_object("celeryconfig")

app.user_options["worker"].add(Option(
    ("--stop-on-terminator",), is_flag=True, default=False,
    help="Shut this worker down after it has run a run's -1 terminator."))


class StopOnTerminator(bootsteps.Step):
    """Passes the option to the tasks, with the PID to signal (pool children inherit both)."""

    def __init__(self, parent, stop_on_terminator=False, **options):
        super().__init__(parent, **options)
        parent.app.conf.carcelery_stop_on_terminator = stop_on_terminator
        parent.app.conf.carcelery_worker_pid = os.getpid()


app.steps["worker"].add(StopOnTerminator)
