"""Leases of transient queues, on the emulator, with a clock of the test's own."""

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from carcelery import aws
from carcelery.transport.leases import LEASE_TAG, Leases, answered_at


def lease(url):
    return int(aws.client("sqs").list_queue_tags(QueueUrl=url)["Tags"][LEASE_TAG])


def test_a_lease_is_written_on_claim_and_renewed_after_a_third_of_it(emulator):
    prefix = f"l{uuid.uuid4().hex[:8]}-"
    sqs = aws.client("sqs")
    now = [1000.0]
    leases = Leases(sqs, aws.client("sns"), prefix, ttl=300, clock=lambda: now[0])
    url = sqs.create_queue(QueueName=f"{prefix}celeryev-1")["QueueUrl"]
    assert leases.claim(url) and leases.owned[url] == 1000
    # On SQS's clock, whatever this host's says (1000).
    assert abs(lease(url) - (time.time() + 300)) <= 2
    now[0] += 50
    leases.renew(url)
    assert leases.owned[url] == 1000, "not yet a third of it"
    now[0] += 60
    leases.renew(url)
    assert leases.owned[url] == 1110
    sqs.delete_queue(QueueUrl=url)
    assert not leases.claim(url) and url not in leases.owned


def test_only_the_queues_claimed_are_released(emulator):
    prefix = f"l{uuid.uuid4().hex[:8]}-"
    sqs = aws.client("sqs")
    leases = Leases(sqs, aws.client("sns"), prefix, ttl=300)
    mine = sqs.create_queue(QueueName=f"{prefix}mine")["QueueUrl"]
    other = sqs.create_queue(QueueName=f"{prefix}detect")["QueueUrl"]
    leases.claim(mine)
    leases.release_all()
    assert sqs.list_queues(QueueNamePrefix=prefix)["QueueUrls"] == [other]
    assert leases.closed


@pytest.mark.parametrize("skew", [300, -300])
def test_a_sweep_by_a_host_whose_clock_is_off_keeps_live_queues_and_sweeps_dead_ones(emulator, skew):
    prefix = f"l{uuid.uuid4().hex[:8]}-"
    sqs, sns = aws.client("sqs"), aws.client("sns")
    owner = Leases(sqs, sns, prefix, ttl=300)
    live = sqs.create_queue(QueueName=f"{prefix}celeryev-live")["QueueUrl"]
    assert owner.claim(live)
    dead = sqs.create_queue(QueueName=f"{prefix}celeryev-dead")["QueueUrl"]
    # Its owner died: the lease it wrote ran out 10 s ago, by SQS's clock.
    sqs_now = answered_at(sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"]))
    sqs.tag_queue(QueueUrl=dead, Tags={LEASE_TAG: str(int(sqs_now - 10))})
    with freeze_time(datetime.now(UTC) + timedelta(seconds=skew), tick=True):
        sweeper = Leases(sqs, sns, prefix, ttl=300, clock=time.time)  # the skewed host's clock
        swept = sweeper.sweep()
    assert swept == [dead]
    assert sqs.list_queues(QueueNamePrefix=prefix)["QueueUrls"] == [live]
