"""The evaluation command, and the local recognizer measured with it on real photos.

The accuracy test runs the real models on the development set (real car
photos with their plates), on photos without a car fetched from package
registries (bench/negatives.py), on the seed with Rekognition's decisions, and
on the development set scaled down so that its plates are 50-100 px wide
(bench/scaled_down.py), and on street and parking-camera frames (dev/us).
"""

import json
import shutil
import subprocess
import sys

import PIL.Image
import pytest

from bench import negatives, scaled_down
from carcelery.commands import evaluate
from carcelery.recognizers.plates import folded
from carcelery.embedded.demo import ROOT, SEED_IMAGES

DEV = SEED_IMAGES.parent / "dev" / "br"
STREET = SEED_IMAGES.parent / "dev" / "us"  # street and parking cameras: plates 50-130 px wide


def test_reference_is_read_from_the_seed_table():
    cases = evaluate.reference(SEED_IMAGES / "REFERENCE.md")
    assert {case.path.name: case.car for case in cases} == {
        f"{n}.jpg": n in (1, 2, 4, 5, 6, 7) for n in range(1, 11)}
    assert {case.path.name: case.plate for case in cases if case.plate} == {
        "1.jpg": "SBR8167", "4.jpg": "YH19OTZ", "7.jpg": "LP610LB"}


def test_labeled_folder_in_openalprs_format(tmp_path):
    (tmp_path / "a.txt").write_text("a.jpg\t10\t20\t30\t10\tAB-12 34\n")
    [case] = evaluate.labeled(tmp_path)
    assert (case.path, case.car, case.plate) == (tmp_path / "a.jpg", True, "AB1234")


def test_what_it_got_wrong_is_named(tmp_path, capsys):
    cars, others = tmp_path / "cars", tmp_path / "others"
    cars.mkdir(), others.mkdir()
    shutil.copy(DEV / "AYO9034.jpg", cars)
    (cars / "AYO9034.txt").write_text("AYO9034.jpg\t0\t0\t1\t1\tZZZ9999\n")  # a plate it cannot read
    shutil.copy(SEED_IMAGES / "4.jpg", others)  # a car among the negatives
    assert evaluate.main(["--labeled", str(cars), "--negatives", str(others)]) == 0
    out = capsys.readouterr().out
    assert "car recall 1.000" in out and "false car rate 1.000" in out
    assert "wrong: AYO9034.jpg: plate ZZZ9999 not in its line 'AYO9034.jpg: " in out
    assert "plate in output.txt 0.000" in out
    assert "wrong: 4.jpg: false car (car confidence" in out


def test_plates_are_counted_by_the_width_of_their_box(tmp_path, capsys):
    widths = {"a": 59, "b": 60, "c": 89, "d": 90, "e": 129, "f": 130}
    for name, width in widths.items():
        (tmp_path / f"{name}.txt").write_text(f"{name}.jpg\t1\t2\t{width}\t10\tAB{width}\n")
    cases = evaluate.labeled(tmp_path)
    assert [case.plate_width for case in cases] == list(widths.values())
    # a, d and f read; b, c and e not.
    outcomes = [evaluate.Outcome(case, True, 99.0, 0.1, lines={"vehicles": f"{case.path.name}: "
                                 + (case.plate if case.path.stem in "adf" else "ZZ")},
                                 text_s={"vehicles": 0.1}, text_cpu_s={"vehicles": 0.1}) for case in cases]
    figures = evaluate.summary("set", outcomes, ["vehicles"])
    assert figures["plate_read_by_width"] == {"vehicles": {"<60": [1, 1], "60-90": [0, 2], "90-130": [1, 2],
                                                           ">=130": [1, 1]}}
    assert "by plate width: <60 px 1 of 1, 60-90 px 0 of 2, 90-130 px 1 of 2, >=130 px 1 of 1" in \
        evaluate.describe(figures, ["vehicles"])


def test_a_plate_is_looked_for_in_the_text_not_in_the_name():
    case = evaluate.Case(DEV / "AYO9034.jpg", True, "AYO9034")
    outcome = evaluate.Outcome(case, True, 99.0, 0.1, lines={"vehicles": "AYO9034.jpg: DF-BRASILIA"})
    assert not outcome.plate_read("vehicles")
    assert evaluate.Outcome(case, True, 99.0, 0.1, lines={"vehicles": "AYO9034.jpg: AYO-9034"}).plate_read("vehicles")


def test_confusables_are_folded_for_the_folded_figure_only():
    case = evaluate.Case(SEED_IMAGES / "4.jpg", True, "YH19OTZ")
    outcome = evaluate.Outcome(case, True, 99.0, 0.1, lines={"vehicles": "4.jpg: YHI9 OTZ"},
                               texts={"vehicles": ["YHI9 OTZ"]})
    assert not outcome.plate_read("vehicles") and outcome.plate_read("vehicles", fold=True)
    assert outcome.plate_cer("vehicles") == 1 / 7 and outcome.plate_cer("vehicles", fold=True) == 0
    # O and 0 fold together, I and 1; no other pair does.
    assert folded("OIDB8S5") == "01DB8S5"


def test_character_error_rate_of_the_closest_line():
    case = evaluate.Case(DEV / "NYI3834.jpg", True, "NYI3834")
    outcome = evaluate.Outcome(case, True, 99.0, 0.1, texts={"vehicles": ["BA-SALVADOR", "NY1-34", "xNYI-3834x"]})
    assert outcome.plate_cer("vehicles") == 0  # found inside a longer line
    assert evaluate.Outcome(case, True, 99.0, 0.1, texts={"vehicles": ["NY1-34"]}).plate_cer("vehicles") == 3 / 7
    assert evaluate.Outcome(case, True, 99.0, 0.1, texts={"vehicles": []}).plate_cer("vehicles") == 1
    assert evaluate.Outcome(case, False, 9.0, 0.1).plate_cer("vehicles") == 1  # no car, no text
    assert evaluate.edits_to_find("FK4W3L", "FK4073L") == 2 and evaluate.edits_to_find("5FLR236", "5ER236") == 2


def test_the_scaled_down_variant_is_drawn_the_same_each_time(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    PIL.Image.new("RGB", (1000, 600), (200, 30, 30)).save(source / "a.jpg")
    (source / "a.txt").write_text("a.jpg\t400\t300\t200\t60\tAB1234\n")
    made = scaled_down.make(source, tmp_path / "first")
    width, quality = scaled_down.draws("a.jpg")
    assert 50 <= width <= 100 and 70 <= quality <= 85
    name, *box, plate = (made / "a.txt").read_text().rstrip("\n").split("\t")
    scale = width / 200
    assert (name, plate) == ("a.jpg", "AB1234") and int(box[2]) == width
    assert [int(v) for v in box] == [round(v * scale) for v in (400, 300, 200, 60)]
    with PIL.Image.open(made / "a.jpg") as pic:
        assert pic.format == "JPEG" and pic.size == (round(1000 * scale), round(600 * scale))
    again = scaled_down.make(source, tmp_path / "again")
    assert (again / "a.jpg").read_bytes() == (made / "a.jpg").read_bytes()


def test_a_scaled_down_truth_not_in_openalprs_format_is_named(tmp_path, capsys):
    PIL.Image.new("RGB", (100, 60)).save(tmp_path / "a.jpg")
    (tmp_path / "a.txt").write_text("a.jpg AB1234\n")
    assert scaled_down.main(["--from", str(tmp_path), str(tmp_path / "out")]) == 1
    assert "a.txt: not NAME<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE" in capsys.readouterr().err


def test_with_the_rekognition_backend(emulator, tmp_path, capsys):
    # The emulator's Rekognition gives canned answers, without a car.
    shutil.copy(DEV / "AYO9034.jpg", tmp_path)
    (tmp_path / "AYO9034.txt").write_text("AYO9034.jpg\t0\t0\t1\t1\tAYO9034\n")
    assert evaluate.main(["--backend", "rekognition", "--labeled", str(tmp_path), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["images"] == 1 and figures["car_recall"] == 0 and figures["plate_read"] == {"vehicles": {"exact": 0, "folded": 0}}
    assert figures["wrong"] == [{"image": "AYO9034.jpg", "why": "missed car (car confidence 0.0)"}]


def test_an_empty_folder_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--negatives", str(tmp_path)])
    assert "holds no image this command can use" in capsys.readouterr().err


# Not seconds: the models over 270 photos, and fetching the negatives (apt-get, dpkg-deb) when not cached.
@pytest.mark.integration
def test_the_local_recognizer_on_real_photos():
    folder, small = negatives.fetch(), scaled_down.make(DEV)
    # The command, in two processes at once (one per core): the sets split in about half the CPU each.
    halves = [["--labeled", str(DEV), "--labeled", str(small)],
              ["--labeled", str(STREET), "--negatives", str(folder), "--reference", str(SEED_IMAGES / "REFERENCE.md")]]
    runs = [subprocess.Popen([sys.executable, "-m", "carcelery.commands.evaluate", *half, "--json"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for half in halves]
    outs = [run.communicate(timeout=1200) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outs]
    dev, scaled, street, negative, seed = (json.loads(line) for out, _ in outs for line in out.splitlines())
    assert dev["images"] == scaled["images"] == 114 and street["images"] == 111, (dev["images"], scaled["images"])
    assert dev["car_recall"] >= 0.98 and scaled["car_recall"] >= 0.98, (dev["wrong"], scaled["wrong"])
    assert street["car_recall"] >= 0.98, street["wrong"]
    # Folded (O as 0, I as 1); OCR may differ by an image or two on another CPU.
    assert dev["plate_read"]["vehicles"]["folded"] >= 0.97, dev["wrong"]  # 0.991 measured (113 of 114)
    assert scaled["plate_read"]["vehicles"]["folded"] >= 0.94, scaled["wrong"]  # 0.947 measured (108 of 114)
    assert street["plate_read"]["vehicles"]["folded"] >= 0.88, street["wrong"]  # 0.883 measured (98 of 111)
    assert negative["images"] >= 13 and negative["false_car_rate"] == 0, negative["wrong"]
    assert seed["car_recall"] == 1 and seed["false_car_rate"] == 0, seed["wrong"]
    assert seed["plate_read"]["vehicles"]["folded"] == 1, seed["wrong"]  # its three plates
