"""What a run's recognition calls cost, at Rekognition's published list price.

PRICES is the one table to update when AWS changes its prices
(https://aws.amazon.com/rekognition/pricing/): US dollars per call, per API,
per region, at the first tier (an account's first million images a month;
later tiers are cheaper). DetectLabels and DetectText are both in
Rekognition's "Group 2" of image APIs. A region not in the table is priced as
DEFAULT_REGION, and the summary says so.

What is billed: the calls made and answered for a run's own records (the
terminator counts the records its run wrote, not the earlier runs' of the
same bucket): DetectLabels for every image detected (car or not), DetectText
for every car image whose text was read; nothing for an image that failed
before or at the call (not read, refused) or never got a result (the run
ended without it). ``count`` applies it a record at a time.
"""

from __future__ import annotations

from typing import Iterable

from .model import Stage, Status

DETECT_LABELS, DETECT_TEXT = "DetectLabels", "DetectText"
DEFAULT_REGION = "us-east-1"
PRICES = {
    "us-east-1": {DETECT_LABELS: 0.001, DETECT_TEXT: 0.001},
}
# Backends that call Rekognition, or stand in for it (``latency``): their calls are priced.
PRICED = ("rekognition", "latency")


def calls(records: Iterable[dict] = ()) -> dict[str, int]:
    """The calls per API that ``records`` were answered with (``count``'s rule); none for no records."""
    counts = {DETECT_LABELS: 0, DETECT_TEXT: 0}
    for record in records:
        count(counts, record)
    return counts


def count(counts: dict[str, int], record: dict) -> None:
    """Add to ``counts`` the calls that answered ``record``: only calls made and answered are billed.

    - DetectLabels: for every image detected, car or not, and for a car image
      whose text failed (its detection answered).
    - DetectText: for a car image whose text was read.
    - Nothing for an image that failed at ``detect`` (it could not be read, or
      Rekognition refused it: a refused call is not billed), nor for one that
      never got a result (pending, or failed at ``result`` when its run ended
      without it): no call is known to have answered.
    """
    done = record["status"] == Status.DONE
    counts[DETECT_LABELS] += done or (record["status"] == Status.FAILED and record["error"]["stage"] == Stage.TEXT)
    counts[DETECT_TEXT] += done and bool(record["car"])


def cost(counts: dict[str, int], region: str) -> float:
    """US dollars for ``counts`` calls per API in ``region``, at the first tier's list price."""
    prices = PRICES.get(region, PRICES[DEFAULT_REGION])
    return sum(prices[api] * n for api, n in counts.items())


def summary(counts: dict[str, int], recognizer: str, region: str) -> dict:
    """The run summary's ``calls`` (``counts``, per API), and for Rekognition their ``cost_usd`` and the prices' region."""
    if recognizer not in PRICED:
        return {"calls": counts}
    return {"calls": counts, "cost_usd": round(cost(counts, region), 6),
            "priced_as": region if region in PRICES else DEFAULT_REGION}
