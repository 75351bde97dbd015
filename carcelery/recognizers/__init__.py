"""Recognizers: one interface (``base.Recognizer``), one module per backend.

- ``local``: offline models, the embedded default (``local.py``); ``weights`` fetches and verifies its detector's.
- ``rekognition``: AWS Rekognition (``rekognition.py``).
- ``noop``: answers at once, for measuring the pipeline (``noop.py``).
- ``latency``: waits like a remote service, for measuring the pipeline (``latency.py``).
"""

from __future__ import annotations

import functools
import importlib
import threading

from .base import CAR, LICENSE_PLATE, Box, Image, ImageError, Label, Recognizer, TextLine, car_confidence, text_regions, threshold, to_dict

BACKENDS = {
    "local": "carcelery.recognizers.local:LocalRecognizer",
    "rekognition": "carcelery.recognizers.rekognition:RekognitionRecognizer",
    "noop": "carcelery.recognizers.noop:NoopRecognizer",
    "latency": "carcelery.recognizers.latency:LatencyRecognizer",
}

__all__ = ["CAR", "LICENSE_PLATE", "Box", "Image", "ImageError", "Label", "Recognizer", "TextLine",
           "car_confidence", "text_regions", "to_dict", "get", "threshold", "BACKENDS"]


# A worker's threads (the ``threads`` pool) share one recognizer: made once, under the lock.
_lock = threading.Lock()


def get(name: str) -> Recognizer:
    """The process's recognizer of backend ``name``, made (and its models loaded) on first use.

    Raises:
      KeyError: ``name`` is not one of BACKENDS.
    """
    with _lock:
        return _made(name)


@functools.cache
def _made(name: str) -> Recognizer:
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)()
