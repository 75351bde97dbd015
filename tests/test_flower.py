"""Flower's credentials (one, whole; none refused), its configuration file; its broker class for SQS.

Flower itself, started both ways, with a password holding a comma: tests/test_flower_process.py."""

import asyncio
import json
import os

import pytest
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st

from carcelery.commands import flower_broker
from carcelery.commands.depth import Depth
from carcelery.app import FLOWER_CONFIG as CONFIG
from carcelery.commands.flower import NoCredentials, basic_auth
from carcelery.commands.flower_broker import SQS, Broker
from carcelery.settings import Settings


def test_the_password_is_one_credential_whatever_it_holds():
    config = Settings.from_env({"CARCELERY_FLOWER_USER": "me", "CARCELERY_FLOWER_PASSWORD": "Tr0ub4dor,3"})
    assert basic_auth(config) == ["me:Tr0ub4dor,3"]


@given(user=st.text(min_size=1).filter(lambda u: ":" not in u), password=st.text(min_size=1))
def test_any_user_and_password_give_exactly_their_credential(user, password):
    config = Settings(flower_user=user, flower_password=password)
    assert basic_auth(config) == [f"{user}:{password}"]


@pytest.mark.parametrize("env, named", [
    ({"CARCELERY_FLOWER_USER": "ann"}, "CARCELERY_FLOWER_PASSWORD"),
    ({"CARCELERY_FLOWER_USER": "ann", "CARCELERY_FLOWER_PASSWORD": ""}, "CARCELERY_FLOWER_PASSWORD"),
    ({}, "CARCELERY_FLOWER_PASSWORD"),
    ({"CARCELERY_FLOWER_PASSWORD": "s3cret"}, "CARCELERY_FLOWER_USER"),
    ({"CARCELERY_FLOWER_USER": "a:b", "CARCELERY_FLOWER_PASSWORD": "s3cret"}, "CARCELERY_FLOWER_USER"),
])
def test_no_flower_without_a_user_and_a_password(env, named):
    with pytest.raises(NoCredentials, match=named):
        basic_auth(Settings.from_env(env))


def test_the_app_points_flower_at_the_projects_flowerconfig():
    assert os.environ["FLOWER_CONF"] == str(CONFIG) and CONFIG.name == "flowerconfig.py" and CONFIG.is_file()


def test_flowers_factory_gives_the_sqs_class_for_this_apps_broker_and_flowers_own_for_others():
    from flower.utils.broker import RabbitMQ

    from carcelery import app

    with app.connection() as conn:
        url = conn.as_uri(include_password=True)  # what Flower passes: carcelery.transport:Transport://...
    found = Broker(url, http_api=None, broker_options={"queue_name_prefix": "p-"}, broker_use_ssl=None)
    assert isinstance(found, SQS) and found.prefix == "p-"
    assert isinstance(Broker("sqs://", None), SQS)
    assert isinstance(Broker("amqp://", None), RabbitMQ)
    with pytest.raises(NotImplementedError):
        Broker("nosuch://", None)


def test_sqs_rows_the_apps_queues_first_then_the_others_figures_approximate(monkeypatch):
    found = [Depth("p-celeryev-1", 0, 0, 0), Depth("p-dead-letter", 1, 0, 0), Depth("p-detect", 3, 2, 0),
             Depth("p-text", 0, 1, 4)]
    monkeypatch.setattr(flower_broker, "depths", lambda prefix: [d for d in found if d.queue.startswith(prefix)])
    rows = asyncio.run(SQS("sqs://", broker_options={"queue_name_prefix": "p-"}).queues(["text", "detect"]))
    assert [r["name"] for r in rows] == ["text", "detect", "dead-letter", "celeryev-1"]
    text = rows[0]
    assert (text["messages"], text["messages_ready"], text["messages_unacknowledged"]) == (5, 0, 1)
    assert (text["waiting"], text["in_flight"], text["delayed"], text["approximate"]) == (0, 1, 4, True)
    # Flower's page prints str(value); its API writes JSON: labelled there, a plain number here.
    assert str(text["messages"]) == "≈ 5"
    assert json.loads(json.dumps(text))["messages"] == 5


def test_sqs_answers_no_rows_when_sqs_refuses(monkeypatch, caplog):
    def refused(prefix):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetQueueAttributes")

    monkeypatch.setattr(flower_broker, "depths", refused)
    assert asyncio.run(SQS("sqs://").queues(["text"])) == []
    assert "SQS did not give the queues' lengths" in caplog.text


def test_install_puts_the_factory_where_flowers_handlers_call_it(monkeypatch):
    import flower.views

    monkeypatch.setattr(flower.views, "Broker", flower.views.Broker)  # restored after the test
    flower_broker.install()
    assert flower.views.Broker is Broker
