"""Flower's settings for this pipeline (Flower reads ``flowerconfig.py``; see carcelery/commands/flower.py).

Flower executes this file and takes every name it defines that is one of its
options; the helpers' names start with ``_``. Options given on Flower's
command line win over these.
"""

from carcelery.commands import flower as _flower
from carcelery.commands import flower_broker as _flower_broker
from carcelery.settings import settings as _settings

try:
    basic_auth = _flower.basic_auth(_settings)
except _flower.NoCredentials as _exc:
    raise SystemExit(f"error: {_exc}") from None
address = _flower.ADDRESS
port = _settings.flower_port
_flower_broker.install()
