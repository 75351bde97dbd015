"""Flower, Celery's web monitor, for this pipeline, on 127.0.0.1 only.

    python -m carcelery.commands.flower [FLOWER OPTION...]

Runs ``celery -A carcelery flower`` in this process (its PID stays Flower's),
on ``CARCELERY_FLOWER_PORT``, with its Broker page over SQS
(``carcelery.commands.flower_broker``: plain ``celery -A carcelery flower`` has
every page of Flower but that one). With ``CARCELERY_FLOWER_USER`` and
``CARCELERY_FLOWER_PASSWORD`` set, Flower asks for them (HTTP basic auth); they
reach Flower through its environment, not its command line, which ``ps`` shows.

Flower's own settings (FLOWER_PORT, FLOWER_BASIC_AUTH) could be set directly, but
the pipeline's settings are CARCELERY_*, checked and listed in one table
(settings.py), and loopback only is not left to a setting.
"""

from __future__ import annotations

import os
import sys

from celery.__main__ import main as celery_main

from . import flower_broker
from ..settings import Settings, settings


def command(config: Settings, extra: list[str]) -> tuple[list[str], dict[str, str]]:
    """Flower's command line and environment for ``config``.

    Parameters:
      config: the settings (port, user, password).
      extra: more Flower options, appended.
    Returns:
      The argv (``python -m celery ...``) and the environment to run it with.
    """
    argv = [sys.executable, "-m", "celery", "-A", "carcelery", "flower",
            "--address=127.0.0.1", f"--port={config.flower_port}", *extra]
    env = dict(os.environ)
    if config.flower_user and config.flower_password:
        env["FLOWER_BASIC_AUTH"] = f"{config.flower_user}:{config.flower_password}"
    return argv, env


def main(argv: list[str] | None = None) -> None:
    args, env = command(settings, sys.argv[1:] if argv is None else argv)
    os.environ.update(env)
    flower_broker.install()
    # Celery's command line, here: Flower runs in this process, with the broker class installed.
    sys.argv = ["celery", *args[3:]]
    celery_main()


if __name__ == "__main__":
    main()
