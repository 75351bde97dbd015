"""Receiving in a worker: fewer, fuller ReceiveMessage requests, and a quiet stop."""

from __future__ import annotations

from kombu.transport import SQS


class Receiving:
    """Channel mixin: a worker receives when half its prefetch is free; no receive is scheduled after close."""

    # Debt: overrides kombu's private `Channel._loop1` (5.7.0): it schedules the next receive.
    def _loop1(self, queue, messages_fetched=None):
        # A receive that completes after the channel closed (a worker shutting
        # down) schedules no next one; kombu's raised in the timer and logged an error.
        if self.connection is not None:
            super()._loop1(queue, messages_fetched)

    # Debt: overrides kombu's private `Channel._get_message_estimate` (5.7.0): how many messages one receive asks for.
    def _get_message_estimate(self, max_if_unlimited=SQS.SQS_MAX_MESSAGES):
        estimate = super()._get_message_estimate(max_if_unlimited)
        prefetch = self.qos.prefetch_count
        if self.hub is None or not prefetch:  # no worker, or no limit (None or 0): nothing to wait for
            return estimate
        # In a worker, wait (polling_interval at a time) until half its prefetch
        # is free, so that one ReceiveMessage fetches several messages rather
        # than one per task done; the other half keeps its processes busy.
        if estimate < min((prefetch + 1) // 2, max_if_unlimited):
            return 0
        return estimate
