"""Try the recognizers on local image files, without the pipeline.

    python -m carcelery.commands.recognize [--backend local|rekognition|noop|latency] [--json] IMAGE...

Per image: whether it holds a car (and how sure), the labels with their boxes,
and the text lines. ``--json`` prints one JSON object per image and line, the
same record the pipeline writes to results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import recognizers
from ..pipeline import results
from ..pipeline.model import Record, Stage, Status
from ..printable import printable
from ..settings import settings


def analyze(path: Path, recognizer: recognizers.Recognizer, threshold: float) -> Record:
    """The record of one local image: labels, car decision, and text (read on every image, where the pipeline would read it)."""
    image = recognizers.Image(path.name, path.read_bytes)
    try:
        record = results.detection(path.name, labels=recognizer.labels(image), threshold=threshold)
        return results.with_text(record, recognizer.text(image, recognizers.text_regions(record["labels"], settings.text_region)))
    except (recognizers.ImageError, OSError) as exc:
        return results.failure(path.name, Stage.RECOGNIZE, str(exc))


def describe(record: Record) -> str:
    if record["status"] == Status.FAILED:
        return f"{printable(record['image'])}: FAILED: {printable(record['error']['reason'])}"
    lines = [f"{printable(record['image'])}: {'car' if record['car'] else 'no car'} "
             f"(car confidence {record['car_confidence']:.1f}, threshold {record['threshold']:.0f})"]
    for label in record["labels"]:
        boxes = " ".join("[{left:.2f} {top:.2f} {width:.2f} {height:.2f}]".format(**b) for b in label["boxes"])
        lines.append(f"  label {label['name']} {label['confidence']:.1f} {boxes}".rstrip())
    for line in record["text"]:
        lines.append(f"  text  {line['text']!r} {line['confidence']:.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carcelery.commands.recognize", description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=sorted(recognizers.BACKENDS), default=settings.recognizer)
    parser.add_argument("--json", action="store_true", help="one JSON object per image and line")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    args = parser.parse_args(argv)
    recognizer = recognizers.get(args.backend)
    threshold = recognizers.threshold(recognizer, settings.car_threshold)
    failed = 0
    for path in args.images:
        record = analyze(path, recognizer, threshold)
        failed += record["status"] == Status.FAILED
        print(json.dumps(record) if args.json else describe(record), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
