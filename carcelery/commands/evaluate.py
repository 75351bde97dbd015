"""Measure a recognizer on labeled photos: does it find the cars, and read their plates into output.txt?

    python -m carcelery.commands.evaluate [--backend local|rekognition] [--labeled DIR]... [--negatives DIR]...
                                 [--reference REFERENCE.md]... [--text-region vehicles|image]... [--json]

Three kinds of folders:

- ``--labeled DIR``: photos of cars with their plates, in openalpr's format
  (``NAME.txt`` beside ``NAME.jpg``: ``NAME.jpg<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE``);
- ``--negatives DIR``: photos without a car;
- ``--reference FILE``: a table of what AWS Rekognition decided, as the seed's
  ``REFERENCE.md`` (``| 1.jpg | ... | yes ... |``), for the images beside it;
  a plate named in the second column (``plate "S-BR 8167"``) is that image's.

Each image goes through what the pipeline does: labels, the car decision at
the threshold in force, and, for a car, text where CARCELERY_TEXT_REGION says
(every region given with ``--text-region``, to compare them in one run), then
its output.txt line. Per folder: car recall, false car rate, and two figures
of the plates:

- plate in output.txt: the plate, letters and digits only, inside the image's
  output line (car AND plate);
- character error rate (CER): edits (a character dropped, added or misread)
  to find the plate in the line read closest to it, over the plate's length;
  1 where no line was read, or no car found.

Each figure exactly, and folded: O and 0 count as one character, I and 1 as
another (plate fonts print them alike; output.txt keeps what was read). Then
plates read (folded) per width of the labels' plate box (<60, 60-90,
90-130, >=130 px), seconds per image of each model (wall and process CPU
time), and the images
it got wrong (the plate not in the line even folded).

``python -m bench.scaled_down`` makes a harder labeled folder from one: the
same photos scaled so that their plates are 50-100 px wide, saved as JPEG at
quality 70-85.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import recognizers
from ..pipeline import results
from ..recognizers.plates import folded, letters_and_digits
from ..embedded.demo import SEED_IMAGES
from ..settings import TEXT_REGIONS, settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
DEV_IMAGES = SEED_IMAGES.parent / "dev"
# | 1.jpg | content | yes ... | ...: the image, what it shows and Rekognition's car decision.
REFERENCE_ROW = re.compile(r"^\|\s*([^|\s]+\.(?:jpe?g|png))\s*\|([^|]*)\|\s*(yes|no)\b", re.IGNORECASE | re.MULTILINE)
# What it shows may name the car's plate: ... plate "S-BR 8167".
REFERENCE_PLATE = re.compile(r'plate\s+"([^"]+)"')


# Plate width buckets (px, from the labels' plate box): a street camera's plates are 50-130 px wide.
WIDTH_BUCKETS = ((0, "<60"), (60, "60-90"), (90, "90-130"), (130, ">=130"))

def edits_to_find(plate: str, text: str) -> int:
    """The fewest edits (insert, delete, replace a character) that make ``plate`` appear inside ``text``.

    What ``text`` holds before and after the plate costs nothing: a plate read
    inside a longer line is read.
    """
    previous = [0] * (len(text) + 1)  # the plate's first 0 characters end anywhere in text, free
    for i, wanted in enumerate(plate, 1):
        current = [i] + [0] * len(text)
        for j, seen in enumerate(text, 1):
            current[j] = min(previous[j - 1] + (wanted != seen), previous[j] + 1, current[j - 1] + 1)
        previous = current
    return min(previous)


@dataclass
class Case:
    """One image and what is known of it: whether it holds a car, and its plate if labeled."""

    path: Path
    car: bool
    plate: str | None = None
    plate_width: int | None = None  # px, where the labels give the plate's box


def width_bucket(width: int) -> str:
    """The WIDTH_BUCKETS name of a plate ``width`` px wide."""
    return [name for low, name in WIDTH_BUCKETS if width >= low][-1]


def labeled(folder: Path) -> list[Case]:
    """The cases of an openalpr-format folder: every image with a ``.txt`` beside it holds a car and that plate."""
    cases = []
    for label in sorted(folder.glob("*.txt")):
        name, *box, plate = label.read_text(encoding="utf-8").strip().split("\t")
        width = int(box[2]) if len(box) == 4 and box[2].isdigit() else None
        cases.append(Case(folder / name, True, letters_and_digits(plate), width))
    return cases


def negatives(folder: Path) -> list[Case]:
    return [Case(path, False) for path in sorted(folder.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]


def reference(table: Path) -> list[Case]:
    """The cases of a REFERENCE.md: the images beside it, with Rekognition's decision, and the plate it names."""
    cases = []
    for name, content, answer in REFERENCE_ROW.findall(table.read_text(encoding="utf-8")):
        plate = REFERENCE_PLATE.search(content)
        cases.append(Case(table.parent / name, answer.lower() == "yes", letters_and_digits(plate[1]) if plate else None))
    return cases


@dataclass
class Outcome:
    """What the recognizer made of one case."""

    case: Case
    car: bool
    car_confidence: float
    labels_s: float
    labels_cpu_s: float = 0.0
    lines: dict[str, str] = field(default_factory=dict)  # output line (or "") per text region
    texts: dict[str, list[str]] = field(default_factory=dict)  # the lines read, per text region
    text_s: dict[str, float] = field(default_factory=dict)
    text_cpu_s: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def _compared(self, text: str, fold: bool) -> tuple[str, str]:
        plate, text = self.case.plate or "", letters_and_digits(text)
        return (folded(plate), folded(text)) if fold else (plate, text)

    def plate_read(self, region: str, fold: bool = False) -> bool:
        """Whether the plate is in the image's output line (with O as 0 and I as 1 if ``fold``)."""
        # The line's text only: the name in front of it may be the plate (openalpr's files are named so).
        plate, text = self._compared(self.lines.get(region, "").removeprefix(f"{self.case.path.name}: "), fold)
        return bool(plate) and plate in text

    def plate_cer(self, region: str, fold: bool = False) -> float:
        """Edits to find the plate in the line read closest to it, over its length; 1 with no line (at most 1)."""
        plate = self.case.plate or ""
        edits = [edits_to_find(*self._compared(text, fold)) for text in self.texts.get(region, [])]
        return min([1.0] + [e / len(plate) for e in edits]) if plate else 1.0


def run_case(case: Case, recognizer: recognizers.Recognizer, threshold: float, regions: list[str]) -> Outcome:
    image = recognizers.Image(case.path.name, case.path.read_bytes)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        labels = recognizer.labels(image)
        labels_s, labels_cpu_s = time.perf_counter() - started, time.process_time() - cpu
        record = results.detection(case.path.name, labels=labels, threshold=threshold)
        outcome = Outcome(case, bool(record["car"]), record["car_confidence"], labels_s, labels_cpu_s)
        if record["car"]:
            for region in regions:
                started, cpu = time.perf_counter(), time.process_time()
                lines = recognizer.text(image, recognizers.text_regions(record["labels"], region))
                outcome.text_s[region] = time.perf_counter() - started
                outcome.text_cpu_s[region] = time.process_time() - cpu
                outcome.texts[region] = [line.text for line in lines]
                outcome.lines[region] = results.output_line(results.with_text(record, lines)) or ""
        return outcome
    except (recognizers.ImageError, OSError) as exc:
        return Outcome(case, False, 0.0, 0.0, error=str(exc))


def summary(name: str, outcomes: list[Outcome], regions: list[str]) -> dict:
    """A folder's figures; rates are None where they do not apply (no car, or no plate, among its cases)."""
    cars = [o for o in outcomes if o.case.car]
    others = [o for o in outcomes if not o.case.car]
    plated = [o for o in cars if o.case.plate]
    found = [o for o in outcomes if o.car]

    def rate(hits, of):
        return round(hits / len(of), 4) if of else None

    def mean(values):
        values = list(values)
        return round(sum(values) / len(values), 4) if values else None

    wrong = []
    for o in outcomes:
        if o.error:
            wrong.append({"image": o.case.path.name, "why": f"failed: {o.error}"})
        elif o.car != o.case.car:
            wrong.append({"image": o.case.path.name, "why": f"{'false car' if o.car else 'missed car'} "
                                                          f"(car confidence {o.car_confidence:.1f})"})
        elif o.case.plate and not o.plate_read(regions[0], fold=True):
            wrong.append({"image": o.case.path.name,
                          "why": f"plate {o.case.plate} not in its line {o.lines.get(regions[0], '')!r}"})

    def both(figure):
        return {"exact": figure(False), "folded": figure(True)}

    def by_width(region):
        """Plates read (folded) of each width bucket: [read, of]."""
        counts = {name: [0, 0] for _, name in WIDTH_BUCKETS}
        for o in plated:
            if o.case.plate_width is not None:
                counts[width_bucket(o.case.plate_width)][0] += o.plate_read(region, True)
                counts[width_bucket(o.case.plate_width)][1] += 1
        return {name: count for name, count in counts.items() if count[1]}

    return {
        "folder": name, "images": len(outcomes), "cars": len(cars),
        "car_recall": rate(sum(o.car for o in cars), cars),
        "false_car_rate": rate(sum(o.car for o in others), others),
        "folded": "O as 0, I as 1",
        "plate_read": {region: both(lambda fold, region=region: rate(sum(o.plate_read(region, fold) for o in plated), plated))
                       for region in regions},
        "plate_read_by_width": {region: by_width(region) for region in regions},
        "plate_cer": {region: both(lambda fold, region=region: mean(o.plate_cer(region, fold) for o in plated))
                      for region in regions},
        "labels_s_per_image": mean(o.labels_s for o in outcomes if not o.error),
        "labels_cpu_s_per_image": mean(o.labels_cpu_s for o in outcomes if not o.error),
        "text_s_per_car_image": {region: mean(o.text_s[region] for o in found) for region in regions},
        "text_cpu_s_per_car_image": {region: mean(o.text_cpu_s[region] for o in found) for region in regions},
        "wrong": wrong,
    }


def describe(s: dict, regions: list[str]) -> str:
    def pct(value):
        return "-" if value is None else f"{value:.3f}"

    lines = [f"{s['folder']}: {s['images']} images, {s['cars']} with a car",
             f"  car recall {pct(s['car_recall'])}   false car rate {pct(s['false_car_rate'])}   "
             f"labels {pct(s['labels_s_per_image'])} s/image ({pct(s['labels_cpu_s_per_image'])} s CPU)"]
    for region in regions:
        read, cer = s["plate_read"][region], s["plate_cer"][region]
        lines.append(f"  text region {region}: plate in output.txt {pct(read['exact'])} exact, "
                     f"{pct(read['folded'])} folded ({s['folded']})   "
                     f"CER {pct(cer['exact'])} exact, {pct(cer['folded'])} folded   "
                     f"text {pct(s['text_s_per_car_image'][region])} s/car image "
                     f"({pct(s['text_cpu_s_per_car_image'][region])} s CPU)")
        if widths := s["plate_read_by_width"][region]:
            lines.append("    plate in output.txt (folded) by plate width: "
                         + ", ".join(f"{name} px {read} of {of}" for name, (read, of) in widths.items()))
    lines += [f"  wrong: {w['image']}: {w['why']}" for w in s["wrong"]]
    return "\n".join(lines)


def default_folders() -> dict[str, list[Path]]:
    """The project's own sets, where they are: ``../shared/images/dev/*`` and the seed's REFERENCE.md."""
    return {
        "labeled": sorted(p for p in DEV_IMAGES.iterdir() if p.is_dir()) if DEV_IMAGES.is_dir() else [],
        "reference": [SEED_IMAGES / "REFERENCE.md"] if (SEED_IMAGES / "REFERENCE.md").is_file() else [],
        "negatives": [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carcelery.commands.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=sorted(recognizers.BACKENDS), default=settings.recognizer)
    parser.add_argument("--labeled", action="append", type=Path, default=[], metavar="DIR",
                        help="photos of cars with NAME.txt plates beside them (openalpr's format)")
    parser.add_argument("--negatives", action="append", type=Path, default=[], metavar="DIR",
                        help="photos without a car")
    parser.add_argument("--reference", action="append", type=Path, default=[], metavar="FILE",
                        help="a REFERENCE.md of Rekognition's decisions for the images beside it")
    parser.add_argument("--text-region", action="append", choices=TEXT_REGIONS, dest="regions",
                        help=f"where text is read (default CARCELERY_TEXT_REGION, now {settings.text_region}); "
                             "give it twice to compare")
    parser.add_argument("--json", action="store_true", help="one JSON object per folder and line")
    args = parser.parse_args(argv)
    if not (args.labeled or args.negatives or args.reference):
        defaults = default_folders()
        args.labeled, args.reference = defaults["labeled"], defaults["reference"]
    regions = list(dict.fromkeys(args.regions or [settings.text_region]))
    sets = [(str(d), labeled(d)) for d in args.labeled] + [(str(d), negatives(d)) for d in args.negatives] \
        + [(str(f), reference(f)) for f in args.reference]
    for name, cases in sets:
        if not cases:
            parser.error(f"{name} holds no image this command can use; see --help for the folders' formats")
    recognizer = recognizers.get(args.backend)
    threshold = recognizers.threshold(recognizer, settings.car_threshold)
    for name, cases in sets:
        figures = summary(name, [run_case(case, recognizer, threshold, regions) for case in cases], regions)
        print(json.dumps(figures) if args.json else describe(figures, regions), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
