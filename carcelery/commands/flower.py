"""Flower, Celery's web monitor, for this pipeline: password required, on 127.0.0.1 unless told.

    celery -A carcelery flower [FLOWER OPTION...]
    python -m carcelery.commands.flower [FLOWER OPTION...]      # the same, in this process

Both run the same Flower: Flower reads its settings from ``flowerconfig.py``
(its own convention), and the project's, beside ``celeryconfig.py``, sets
them from the pipeline's settings: ``address`` 127.0.0.1, ``port``
CARCELERY_FLOWER_PORT, ``basic_auth`` from CARCELERY_FLOWER_USER and
CARCELERY_FLOWER_PASSWORD, and the Broker page over SQS
(``carcelery.commands.flower_broker``). Options on the command line win
(``--address=0.0.0.0`` exposes it). The app points Flower at that file
(``FLOWER_CONF``) unless ``FLOWER_CONF`` or ``--conf`` name another, so Flower
started from any folder gets it.

The password reaches Flower as a list of one credential, in the file's
Python: Flower splits its command line's and environment's ``--basic_auth``
at commas, so a password holding one would be cut into two credentials.
Without a user or password Flower does not start (``NoCredentials``): with
none Flower asks for nothing, and anyone who reaches its port controls the workers.
"""

from __future__ import annotations

import sys

from ..settings import Settings

ADDRESS = "127.0.0.1"


class NoCredentials(ValueError):
    """Flower's user or password is missing or unusable; the message names the variable and the fix."""


def basic_auth(config: Settings) -> list[str]:
    """Flower's ``basic_auth`` option for ``config``: one ``user:password`` credential, whole.

    Raises:
      NoCredentials: no password or user, or a user holding ``:`` (basic auth's separator).
    """
    fix = "set CARCELERY_FLOWER_USER and CARCELERY_FLOWER_PASSWORD (e.g. CARCELERY_FLOWER_PASSWORD=$(openssl rand -hex 16))"
    if not config.flower_password:
        raise NoCredentials(f"CARCELERY_FLOWER_PASSWORD is not set or empty: Flower would let anyone who reaches "
                            f"its port control the workers; {fix}")
    if not config.flower_user or ":" in config.flower_user:
        raise NoCredentials(f"CARCELERY_FLOWER_USER is {'empty' if not config.flower_user else 'holding a colon'}: "
                            f"Flower's HTTP basic auth needs a user name without ':'; {fix}")
    return [f"{config.flower_user}:{config.flower_password}"]


def main(argv: list[str] | None = None) -> None:
    from celery.__main__ import main as celery_main

    # Celery's command line, in this process (its PID stays Flower's); flowerconfig.py does the rest.
    sys.argv = ["celery", "-A", "carcelery", "flower", *(sys.argv[1:] if argv is None else argv)]
    celery_main()


if __name__ == "__main__":
    main()
