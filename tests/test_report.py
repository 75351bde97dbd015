"""report.html: every image with its boxes, confidences and output.txt's lines; seen in headless Chromium."""

import io
import shutil
import subprocess

import PIL.Image
import pytest

from carcelery.pipeline import report, results
from carcelery.recognizers import Box, Label, TextLine
from carcelery.recognizers.base import same_object


def seed_records():
    car = results.detection("4.jpg", bucket="b", key="4.jpg", etag="e", threshold=70,
                            labels=[Label("Car", 78.9, (Box(0.08, 0.12, 0.77, 0.72),)),
                                    Label("Person", 50.0, (Box(0.1, 0.1, 0.1, 0.1),))])
    car = results.with_text(car, [TextLine("YHI9 OTZ", 89.3, Box(0.59, 0.54, 0.14, 0.09))])
    other = results.detection("<b>8.jpg", bucket="b", key="<b>8.jpg", etag="e", threshold=70, labels=[])
    broken = results.failure("9.jpg", "detect", "9.jpg is empty (0 bytes); upload the image again", bucket="b")
    return [car, other, broken]


def write(folder, records, read):
    counts = results.write(folder, records)
    return report.write(folder, "run1", results.read_records(folder), counts, read=read)


@pytest.fixture
def page(tmp_path, seed_dir):
    images = {"4.jpg": (seed_dir / "4.jpg").read_bytes(), "<b>8.jpg": (seed_dir / "8.jpg").read_bytes()}
    return write(tmp_path, seed_records(), read=lambda r: images[r["image"]])


def test_page_holds_every_image_its_boxes_and_the_output(page):
    text = page.read_text()
    assert page.name == "report.html"
    assert text.count("<figure") == 3 and text.count("data:image/jpeg;base64,") == 2
    assert '<div class="box car" style="left:8.00%;top:12.00%;width:77.00%;height:72.00%">' in text
    assert "YHI9 OTZ 89.3" in text and '<div class="box text"' in text and '<div class="box label"' in text
    assert '<pre id="output">4.jpg: YHI9 OTZ</pre>' in text
    assert "&lt;b&gt;8.jpg" in text and "<b>8.jpg" not in text, "names are escaped"
    assert "failed at detect:</span> 9.jpg is empty" in text and "(no preview)" in text


@pytest.mark.integration
@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_chromium_renders_the_report(page, tmp_path):
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    done = subprocess.run(["chromium", *flags, "--window-size=1200,900", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.exists(), done.stderr[-2000:]
    pic = PIL.Image.open(shot).convert("RGB")
    assert pic.size == (1200, 900)
    # Not a blank page: the photo and the red car box are there.
    colours = pic.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 1000
    assert any(r > 200 and g < 80 and b < 80 for _, (r, g, b) in colours), "no red car box drawn"
    dom = subprocess.run(["chromium", *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert dom.count("<figure") == 3 and "YHI9 OTZ" in dom


def test_the_report_decodes_no_more_than_the_recognizers_and_stays_bounded(tmp_path, seed_dir, monkeypatch):
    import carcelery.recognizers.local  # noqa: F401 - it used to turn Pillow's guard off for the process

    assert PIL.Image.MAX_IMAGE_PIXELS == 89_478_485, "Pillow's own guard, as Pillow sets it"
    bomb = io.BytesIO()
    PIL.Image.new("L", (20000, 20000)).save(bomb, "PNG")
    monkeypatch.setattr(report, "MAX_PREVIEWS", 3)
    monkeypatch.setattr(report, "MAX_FIGURES", 5)
    records = [results.detection(f"{n}.jpg", bucket="b", key=f"{n}.jpg", labels=[], threshold=70) for n in range(1, 9)]
    reads = []

    def read(record):
        reads.append(record["image"])
        return bomb.getvalue() if record["image"] == "1.jpg" else (seed_dir / "4.jpg").read_bytes()

    text = write(tmp_path, records, read).read_text()
    assert reads == ["1.jpg", "2.jpg", "3.jpg"], "pictures for the first MAX_PREVIEWS only"
    assert text.count("<figure") == 5 and text.count("data:image/jpeg") == 2 and "... and 3 more images" in text
    assert '<figure data-image="1.jpg"><div class="pic"><em>(no preview)</em>' in text, "the bomb is not decoded"


def looks_record(key="cars.jpg"):
    """A record as the local detector gives it: each object seen by both looks, a truck as Car and Truck,
    a person in front of a car."""
    near, near_too = Box(0.10, 0.20, 0.40, 0.30), Box(0.11, 0.21, 0.40, 0.29)
    far = Box(0.60, 0.60, 0.30, 0.30)
    person, person_too = Box(0.70, 0.05, 0.10, 0.30), Box(0.705, 0.055, 0.10, 0.29)
    return results.detection(key, bucket="b", key=key, etag="e", threshold=70, labels=[
        Label("Car", 91.0, (near, near_too, far)), Label("Truck", 85.0, (near_too,)),
        Label("Person", 73.0, (person, person_too, Box(0.61, 0.61, 0.3, 0.3)))])


def test_each_object_is_drawn_once_with_its_labels_named_once(tmp_path):
    text = write(tmp_path, [looks_record()], read=lambda r: b"").read_text()
    captions = [part.split("</span>")[0] for part in text.split('<div class="box ')[1:]]
    assert sorted(captions) == sorted(['car" style="left:10.00%;top:20.00%;width:41.00%;height:30.00%">'
                                       "<span>Car 91.0 · Truck 85.0",
                                       'car" style="left:60.00%;top:60.00%;width:30.00%;height:30.00%"><span>Car 91.0',
                                       'label" style="left:70.00%;top:5.00%;width:10.50%;height:30.00%">'
                                       "<span>Person 73.0",
                                       'label" style="left:61.00%;top:61.00%;width:30.00%;height:30.00%">'
                                       "<span>Person 73.0"])


def test_boxes_are_one_object_when_they_overlap_half_their_union():
    a = Box(0.0, 0.0, 0.4, 0.4)
    assert same_object(a, Box(0.02, 0.02, 0.4, 0.4))
    assert not same_object(a, Box(0.3, 0.3, 0.4, 0.4))  # two cars side by side, overlapping a little
    assert not same_object(a, Box(0.1, 0.1, 0.1, 0.1))  # a person in front of a car
    assert not same_object(a, Box(0.5, 0.5, 0.1, 0.1))


@pytest.mark.integration
@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_long_lines_stay_inside_their_boxes_in_chromium(tmp_path):
    key = "a/" + "very-long-folder-name-" * 20 + "car.jpg"
    page = write(tmp_path, [results.with_text(looks_record(key), [TextLine("YHI9 OTZ " * 40, 90.0)])],
                 read=lambda r: b"")
    # Measured by the browser itself, after layout: any box whose content is wider than it, or a page wider
    # than the window.
    page.write_text(page.read_text().replace("</body>", """<script>
        var wide = [...document.querySelectorAll('pre, figure, figcaption, h1')].filter(e => e.scrollWidth > e.clientWidth);
        document.body.dataset.overflow = wide.map(e => e.tagName).join(',') +
            (document.documentElement.scrollWidth > window.innerWidth ? ',page' : '');
        </script></body>"""))
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,800", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'data-overflow=""' in dom, dom[dom.find("<body"):][:300]
