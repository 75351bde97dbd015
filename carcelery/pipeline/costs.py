"""What a run's recognition calls cost, at Rekognition's published list price.

PRICES is the one table to update when AWS changes its prices
(https://aws.amazon.com/rekognition/pricing/): US dollars per call, per API,
per region, at the first tier (an account's first million images a month;
later tiers are cheaper). DetectLabels and DetectText are both in
Rekognition's "Group 2" of image APIs. A region not in the table is priced as
DEFAULT_REGION, and the summary says so.
"""

from __future__ import annotations

from typing import Iterable

DETECT_LABELS, DETECT_TEXT = "DetectLabels", "DetectText"
DEFAULT_REGION = "us-east-1"
PRICES = {
    "us-east-1": {DETECT_LABELS: 0.001, DETECT_TEXT: 0.001},
}
# Backends that call Rekognition, or stand in for it (``latency``): their calls are priced.
PRICED = ("rekognition", "latency")


def calls(records: Iterable[dict]) -> dict[str, int]:
    """The calls per API that the run's ``records`` were answered with (failed calls are not billed).

    Every image's detection is one DetectLabels call, unless it failed there;
    a car image's text is one DetectText call, unless it failed there (a
    failure record has ``car`` false).
    """
    counts = {DETECT_LABELS: 0, DETECT_TEXT: 0}
    for record in records:
        failed_at = record.get("error", {}).get("stage")
        counts[DETECT_LABELS] += failed_at != "detect"
        counts[DETECT_TEXT] += bool(record["car"]) and failed_at is None
    return counts


def cost(counts: dict[str, int], region: str) -> float:
    """US dollars for ``counts`` calls per API in ``region``, at the first tier's list price."""
    prices = PRICES.get(region, PRICES[DEFAULT_REGION])
    return sum(prices[api] * n for api, n in counts.items())


def summary(records: list[dict], recognizer: str, region: str) -> dict:
    """The run summary's ``calls`` (per API), and for Rekognition their ``cost_usd`` and the prices' region."""
    counts = calls(records)
    if recognizer not in PRICED:
        return {"calls": counts}
    return {"calls": counts, "cost_usd": round(cost(counts, region), 6),
            "priced_as": region if region in PRICES else DEFAULT_REGION}
