"""The run as a page people can look at: ``report.html``, one self-contained file.

Every image of the run, downscaled and embedded, with the car boxes and the
text boxes drawn over it (boxes are fractions of the image, so CSS places them
at any size), the confidences, failures with their reasons, and output.txt's
lines. Written by the terminator next to output.txt, after it.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Callable

import PIL.Image

from .recognizers import CAR
from .recognizers.local import on_white
from .results import output_lines, write_atomically

REPORT = "report.html"
THUMBNAIL = 480  # long side, pixels
# Beyond this many images the page would weigh hundreds of MB: the rest are listed without a picture.
MAX_PREVIEWS = 300

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#f6f6f6;color:#222}
h1{font-size:1.4em} pre{background:#fff;padding:.8em;border:1px solid #ddd}
.grid{display:flex;flex-wrap:wrap;gap:1em}
figure{background:#fff;border:1px solid #ddd;margin:0;padding:.6em;width:480px}
.pic{position:relative;display:inline-block;line-height:0}
.pic img{max-width:480px}
.box{position:absolute;border:2px solid}
.box span{position:absolute;top:-1.3em;left:-2px;font:11px/1.2 monospace;color:#fff;padding:0 2px;white-space:nowrap}
.car{border-color:#e53935}.car span{background:#e53935}
.label{border-color:#8e8e8e;border-style:dashed}.label span{background:#8e8e8e}
.text{border-color:#1e88e5}.text span{background:#1e88e5}
figcaption{line-height:1.4;margin-top:.4em;font-size:.9em}
.yes{color:#2e7d32;font-weight:bold}.no{color:#757575}.failed{color:#c62828;font-weight:bold}
"""


def _thumbnail(data: bytes) -> str | None:
    """The image as a JPEG data URI, long side THUMBNAIL at most; None if it cannot be read."""
    try:
        pic = PIL.Image.open(io.BytesIO(data))
        pic.draft("RGB", (THUMBNAIL, THUMBNAIL))
        pic = on_white(pic)
        pic.thumbnail((THUMBNAIL, THUMBNAIL))
        buf = io.BytesIO()
        pic.save(buf, "JPEG", quality=80)
    except (OSError, SyntaxError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _box(box: dict, kind: str, caption: str) -> str:
    style = (f"left:{box['left'] * 100:.2f}%;top:{box['top'] * 100:.2f}%;"
             f"width:{box['width'] * 100:.2f}%;height:{box['height'] * 100:.2f}%")
    return f'<div class="box {kind}" style="{style}"><span>{html.escape(caption)}</span></div>'


def _figure(record: dict, picture: str | None) -> str:
    boxes = []
    for label in record["labels"]:
        kind = "car" if label["name"] == CAR else "label"
        boxes += [_box(b, kind, f"{label['name']} {label['confidence']:.1f}") for b in label["boxes"]]
    boxes += [_box(line["box"], "text", f"{line['text']} {line['confidence']:.1f}")
              for line in record["text"] if line.get("box")]
    image = (f'<img src="{picture}" alt="{html.escape(record["image"])}">' if picture
             else "<em>(no preview)</em>")
    if "error" in record:
        verdict = f'<span class="failed">failed at {html.escape(record["error"]["stage"])}:</span> ' \
                  f'{html.escape(record["error"]["reason"])}'
    elif record["car"]:
        verdict = f'<span class="yes">car</span> {record["car_confidence"]:.1f} (threshold {record["threshold"]:.0f})'
    else:
        verdict = f'<span class="no">no car</span> {record["car_confidence"]:.1f} (threshold {record["threshold"]:.0f})'
    text = " ".join(f"{html.escape(line['text'])} ({line['confidence']:.1f})" for line in record["text"])
    return (f'<figure data-image="{html.escape(record["image"])}"><div class="pic">{image}{"".join(boxes)}</div>'
            f'<figcaption><b>{html.escape(record["image"])}</b>: {verdict}'
            f'{"<br>text: " + text if text else ""}</figcaption></figure>')


def write(folder: Path, run_id: str, records: list[dict], read: Callable[[dict], bytes]) -> Path:
    """Write ``report.html`` for ``records`` into ``folder``.

    Parameters:
      folder: the output folder (output.txt's).
      run_id: the run, for the title.
      records: the run's result records, in the order to show them.
      read: the bytes of a record's image; an image it cannot read is shown without a preview.

    Returns:
      The report's path.
    """
    figures = []
    for index, record in enumerate(records):
        data = b""
        if index < MAX_PREVIEWS:
            try:
                data = read(record)
            except Exception:  # noqa: BLE001 - a missing preview must not lose the report
                pass
        figures.append(_figure(record, _thumbnail(data) if data else None))
    lines = "\n".join(output_lines(records))
    cars = sum(1 for r in records if r["car"])
    failed = sum(1 for r in records if "error" in r)
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>carcelery run {html.escape(run_id)}</title>'
            f"<style>{STYLE}</style></head><body><h1>carcelery run {html.escape(run_id)}</h1>"
            f"<p>{len(records)} images, {cars} cars, {failed} failed.</p>"
            f'<h2>output.txt</h2><pre id="output">{html.escape(lines) or "(empty)"}</pre>'
            f'<h2>Images</h2><div class="grid">{"".join(figures)}</div></body></html>')
    path = folder / REPORT
    write_atomically(path, page)
    return path
