"""A run's recognition calls per API, counted from its records, and their price."""

import pytest

from carcelery.pipeline import costs, results
from carcelery.recognizers import Label

CAR = [Label("Car", 99.0)]


def record(name, labels, text=None):
    made = results.detection(name, labels=labels, threshold=90)
    return made if text is None else results.with_text(made, text)


RECORDS = [
    record("car.jpg", CAR, text=[]),             # DetectLabels + DetectText
    record("tree.jpg", [Label("Tree", 95.0)]),   # DetectLabels
    results.failure("bad.jpg", "detect", "not an image"),           # nothing billed
    results.failure("car-gone.jpg", "text", "deleted since listed"),  # DetectLabels only
    results.failure("late.jpg", "result", "no result: the run ended"),  # nothing known to be made
    results.pending("sent.jpg", bucket="b", key="sent.jpg", etag="e"),  # nothing known to be made
]


def test_calls_are_counted_per_api_from_the_records():
    assert costs.calls(RECORDS) == {"DetectLabels": 3, "DetectText": 1}
    assert costs.calls([]) == {"DetectLabels": 0, "DetectText": 0}


def test_cost_is_the_list_price_per_call():
    prices = costs.PRICES["us-east-1"]
    counts = {"DetectLabels": 1000, "DetectText": 500}
    assert costs.cost(counts, "us-east-1") == pytest.approx(1000 * prices["DetectLabels"] + 500 * prices["DetectText"])


def test_summary_prices_rekognition_and_says_which_region_s_prices():
    assert costs.summary(costs.calls(RECORDS), "local", "us-east-1") == {"calls": {"DetectLabels": 3, "DetectText": 1}}
    priced = costs.summary(costs.calls(RECORDS), "rekognition", "ap-south-1")
    assert priced["cost_usd"] == pytest.approx(costs.cost(priced["calls"], "us-east-1"))
    assert priced["priced_as"] == "us-east-1"
