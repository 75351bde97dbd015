"""The run as a page people can look at: ``report.html``, one self-contained file.

The run's images, downscaled and embedded, with the car boxes and the text
boxes drawn over it (boxes are fractions of the image, so CSS places them at
any size), the confidences, failures with their reasons, and output.txt's
lines. Written by the terminator next to output.txt, after it, from the
records of results.jsonl, a record at a time.

Its cost is bounded whatever the run's size: the first MAX_PREVIEWS images get
a picture (each read back from S3 and decoded as the recognizers decode, never
more pixels), the first MAX_FIGURES are shown, the first MAX_LINES of
output.txt; the page says how many more the files hold.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable

from ..recognizers import imaging
from ..recognizers import CAR, Box, Image, ImageError
from ..recognizers.base import same_object
from .model import Status
from ..printable import printable
from .results import OUTPUT, REPORT, atomic_file

THUMBNAIL = 480  # long side, pixels
# Beyond this many images the page would weigh hundreds of MB: the rest are listed without a picture.
MAX_PREVIEWS = 300
# Beyond these the page would grow with the run: results.jsonl and output.txt have them all.
MAX_FIGURES = 1000
MAX_LINES = 1000

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#f6f6f6;color:#222}
h1{font-size:1.4em;overflow-wrap:anywhere}
pre{background:#fff;padding:.8em;border:1px solid #ddd;white-space:pre-wrap;overflow-wrap:anywhere}
.grid{display:flex;flex-wrap:wrap;gap:1em}
figure{background:#fff;border:1px solid #ddd;margin:0;padding:.6em;width:480px}
.pic{position:relative;display:inline-block;line-height:0}
.pic img{max-width:480px}
.box{position:absolute;border:2px solid}
.box span{position:absolute;top:-1.3em;left:-2px;font:11px/1.2 monospace;color:#fff;padding:0 2px;white-space:nowrap}
.car{border-color:#e53935}.car span{background:#e53935}
.label{border-color:#8e8e8e;border-style:dashed}.label span{background:#8e8e8e}
.text{border-color:#1e88e5}.text span{background:#1e88e5}
figcaption{line-height:1.4;margin-top:.4em;font-size:.9em;overflow-wrap:anywhere}
.yes{color:#2e7d32;font-weight:bold}.no{color:#757575}.failed{color:#c62828;font-weight:bold}
"""


def _thumbnail(name: str, data: bytes) -> str | None:
    """The image as a JPEG data URI, long side THUMBNAIL at most; None if it cannot be read or is too large."""
    try:
        pic = imaging.decode(Image(name, lambda: data), side=THUMBNAIL)
    except ImageError:
        return None
    buf = io.BytesIO()
    pic.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _box(box: dict, kind: str, caption: str) -> str:
    style = (f"left:{box['left'] * 100:.2f}%;top:{box['top'] * 100:.2f}%;"
             f"width:{box['width'] * 100:.2f}%;height:{box['height'] * 100:.2f}%")
    return f'<div class="box {kind}" style="{style}"><span>{html.escape(printable(caption))}</span></div>'


# An object drawn: its box, the boxes of the record it joins, its labels' confidences by name.
_Object = tuple[Box, frozenset, dict]


def _objects(labels: list[dict]) -> list[tuple[Box, dict[str, float]]]:
    """Each object the labels' boxes show, once: its box and its labels' confidences.

    A label's boxes of one object (``same_object``: the detector's two looks at
    it) are joined into their bounding box; then labels that share a box (one
    detection named twice: a truck's Car and Truck, a plate's Car and License
    Plate) are drawn as one object, naming both. Boxes of different labels
    that only overlap (a person by a car) stay apart.
    """
    objects: list[_Object] = []
    for label in labels:
        looks: list[_Object] = []
        for box in (Box(**b) for b in label["boxes"]):
            looks = _join(looks, (box, frozenset([box]), {label["name"]: label["confidence"]}),
                          lambda a, b: same_object(a[0], b[0]))
        for look in looks:
            objects = _join(objects, look, lambda a, b: bool(a[1] & b[1]))
    return [(box, names) for box, _, names in objects]


def _join(objects: list[_Object], new: _Object, related) -> list[_Object]:
    """``objects`` with ``new`` and every one ``related`` to it joined into one."""
    same = [o for o in objects if related(o, new)]
    left, top = min(o[0].left for o in same + [new]), min(o[0].top for o in same + [new])
    right = max(o[0].left + o[0].width for o in same + [new])
    bottom = max(o[0].top + o[0].height for o in same + [new])
    joined = (Box(left, top, right - left, bottom - top), new[1].union(*(o[1] for o in same)),
              {name: confidence for o in same + [new] for name, confidence in o[2].items()})
    return [o for o in objects if o not in same] + [joined]


def _figure(record: dict, picture: str | None) -> str:
    boxes = []
    for box, names in _objects(record["labels"]):
        caption = " · ".join(f"{name} {confidence:.1f}" for name, confidence in
                             sorted(names.items(), key=lambda item: -item[1]))
        boxes.append(_box(asdict(box), "car" if CAR in names else "label", caption))
    boxes += [_box(line["box"], "text", f"{line['text']} {line['confidence']:.1f}")
              for line in record["text"] if line.get("box")]
    # Keys, reasons and text may hold control characters, which HTML may not: shown as output.txt shows them.
    name = html.escape(printable(record["image"]))
    image = (f'<img src="{picture}" alt="{name}">' if picture
             else "<em>(no preview)</em>")
    if record["status"] == Status.PENDING:
        verdict = '<span class="no">no result yet</span> (its run is still going)'
    elif record["status"] == Status.FAILED:
        verdict = f'<span class="failed">failed at {html.escape(record["error"]["stage"])}:</span> ' \
                  f'{html.escape(printable(record["error"]["reason"]))}'
    elif record["car"]:
        verdict = f'<span class="yes">car</span> {record["car_confidence"]:.1f} (threshold {record["threshold"]:.0f})'
    else:
        verdict = f'<span class="no">no car</span> {record["car_confidence"]:.1f} (threshold {record["threshold"]:.0f})'
    text = " ".join(f"{html.escape(printable(line['text']))} ({line['confidence']:.1f})" for line in record["text"])
    return (f'<figure data-image="{name}"><div class="pic">{image}{"".join(boxes)}</div>'
            f'<figcaption><b>{name}</b>: {verdict}'
            f'{"<br>text: " + text if text else ""}</figcaption></figure>')


def _picture(record: dict, read: Callable[[dict], bytes]) -> str | None:
    try:
        data = read(record)
    except Exception:  # noqa: BLE001 - a missing preview must not lose the report
        return None
    return _thumbnail(record["image"], data)


def _lines(path: Path) -> tuple[list[str], int]:
    """The first MAX_LINES lines of output.txt at ``path``, and how many it has."""
    shown, count = [], 0
    with path.open(encoding="utf-8") as handle:
        for count, line in enumerate(handle, 1):
            if count <= MAX_LINES:
                shown.append(line.rstrip("\n"))
    return shown, count


def write(folder: Path, run_id: str, records: Iterable[dict], counts: dict, read: Callable[[dict], bytes]) -> Path:
    """Write ``report.html`` for ``records`` into ``folder``, next to its output.txt.

    Parameters:
      folder: the run's output folder, output.txt written.
      run_id: the run, for the title.
      records: the run's result records, in the order to show them (read one at a time).
      counts: what the records hold (``results.write``'s answer).
      read: the bytes of a record's image; an image it cannot read is shown without a preview.

    Returns:
      The report's path.
    """
    lines, line_count = _lines(folder / OUTPUT)
    more_lines = f"\n... and {line_count - len(lines)} more lines in output.txt" if line_count > len(lines) else ""
    path = folder / REPORT
    with atomic_file(path) as page:
        page.write(f'<!doctype html><html><head><meta charset="utf-8"><title>carcelery run {html.escape(run_id)}</title>'
                   f"<style>{STYLE}</style></head><body><h1>carcelery run {html.escape(run_id)}</h1>"
                   f"<p>{counts['images']} images, {counts['cars']} cars, {counts['failed']} failed.</p>"
                   f'<h2>output.txt</h2><pre id="output">{html.escape(chr(10).join(lines) + more_lines) or "(empty)"}</pre>'
                   f'<h2>Images</h2><div class="grid">')
        shown = 0
        for shown, record in enumerate(itertools.islice(records, MAX_FIGURES), 1):
            page.write(_figure(record, _picture(record, read) if shown <= MAX_PREVIEWS else None))
        page.write("</div>")
        if counts["images"] > shown:
            page.write(f"<p>... and {counts['images'] - shown} more images in results.jsonl.</p>")
        page.write("</body></html>")
    return path
