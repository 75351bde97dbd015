"""Leases of transient queues, on the emulator, with a clock of the test's own."""

import uuid

from carcelery import aws
from carcelery.transport.leases import LEASE_TAG, Leases


def lease(url):
    return int(aws.client("sqs").list_queue_tags(QueueUrl=url)["Tags"][LEASE_TAG])


def test_a_lease_is_written_on_claim_and_renewed_after_a_third_of_it(emulator):
    prefix = f"l{uuid.uuid4().hex[:8]}-"
    sqs = aws.client("sqs")
    now = [1000.0]
    leases = Leases(sqs, aws.client("sns"), prefix, ttl=300, clock=lambda: now[0])
    url = sqs.create_queue(QueueName=f"{prefix}celeryev-1")["QueueUrl"]
    assert leases.claim(url) and lease(url) == 1300
    now[0] += 50
    leases.renew(url)
    assert lease(url) == 1300, "not yet a third of it"
    now[0] += 60
    leases.renew(url)
    assert lease(url) == 1410
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
