import re
from pathlib import Path

import pytest

from carcelery.recognizers import weights
from carcelery.settings import settings


def test_installed_weights_are_verified():
    assert weights.require(settings.model_dir) == settings.model_dir


def test_missing_or_corrupt_files_are_named(tmp_path: Path):
    (tmp_path / weights.DETECTOR).write_bytes(b"not a model")
    assert set(weights.missing(tmp_path)) == {weights.DETECTOR, weights.LABELS}
    with pytest.raises(weights.WeightsError, match=re.escape("python -m carcelery.recognizers.weights")):
        weights.require(tmp_path)


def test_fetch_is_a_no_op_when_present(monkeypatch):
    monkeypatch.setattr(weights.subprocess, "run", lambda *a, **k: pytest.fail("fetched again"))
    assert weights.fetch(settings.model_dir) == settings.model_dir
