"""pytest plugin: Flower's own tests of its broker module and of the handlers that use it, run with
carcelery's broker factory (carcelery/commands/flower_broker.py) in Flower's place.

With ``-p upstream_flower`` (tests/ on the path), ``flower.utils.broker.Broker``,
which Flower's tests import, and ``flower.views.Broker``, which its handlers
call, are carcelery's, as ``python -m carcelery.commands.flower`` makes them.
``--outcomes FILE`` writes each test's outcome there (JSON), for
tests/test_upstream_flower.py.
"""

from flower.utils import broker

from carcelery.commands import flower_broker
from upstream_dynamodb import Outcomes


def pytest_addoption(parser):
    parser.addoption("--outcomes", help="write each test's outcome (passed, failed, skipped) to this JSON file")


def pytest_configure(config):
    broker.Broker = flower_broker.Broker
    flower_broker.install()
    if config.getoption("outcomes"):
        config.pluginmanager.register(Outcomes(config.getoption("outcomes")))
