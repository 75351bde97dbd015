"""Plate formats: a read that fits none takes the text model's second choice for one character where that fits one."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from carcelery.recognizers.reading import Recognition, recognition_model
from carcelery.recognizers.plates import ALTERNATIVE, Character, fits, letters_and_digits, plate_like, refit, shape
from carcelery.settings import PLATE_FORMATS

from carcelery.embedded.demo import SEED_IMAGES

DEV = SEED_IMAGES.parent / "dev" / "br"


def read(text: str, others: dict[int, tuple[str, float]] | None = None) -> list[Character]:
    """``text`` as characters read, with the second choices ``others`` (index: (character, score))."""
    others = others or {}
    return [Character(c, *others.get(i, ("", 0.0))) for i, c in enumerate(text)]


def test_a_leading_digit_read_as_a_letter_is_brought_back_by_the_format():
    # PP-OCR on a California plate: L at 0.88, the 4 its second choice at 0.11.
    assert refit(read("LGLS168", {0: ("4", 0.11), 1: ("6", 0.0005), 3: ("5", 0.001)}), PLATE_FORMATS) == "4GLS168"


def test_separators_are_kept_and_the_surest_second_choice_wins():
    assert refit(read("ZEA-V033", {0: ("7", 0.23), 5: ("O", 0.21)}), PLATE_FORMATS) == "7EA-V033"
    # 4GLS168 (9AAA999) and LGL5168 (AAA9999) both fit: the model's surer second choice decides.
    assert refit(read("LGLS168", {0: ("4", 0.11), 3: ("5", 0.3)}), PLATE_FORMATS) == "LGL5168"
    assert refit(read("AB 123 CD", {3: ("I", 0.4)}), ["AA999AA", "AAA99AA"]) is None  # fits already


@pytest.mark.parametrize("text, others, why", [
    ("BDJ0529", {0: ("8", 0.001)}, "the model is sure of its letter: the second choice under ALTERNATIVE"),
    ("4EFU387", {2: ("5", 0.0003)}, "fits California's format as read"),
    ("LP610LB", {}, "no second choice"),
    ("SH0R7X", {2: ("O", 0.3)}, "no format has six characters so"),
])
def test_a_read_is_kept_where_no_single_sure_enough_replacement_fits(text, others, why):
    assert refit(read(text, others), PLATE_FORMATS) is None, why


def test_no_formats_keep_every_read():
    assert refit(read("LGLS168", {0: ("4", 0.9)}), ()) is None


@pytest.mark.parametrize("text, anywhere, in_a_plate_zone", [
    ("HKO-E7C", False, True), ("SGT-E5", False, True), ("7ABC123", True, True), ("PARKING", False, False),
    ("A4", False, False), ("1234", False, False), ("AB12345678X", False, False),
])
def test_a_plate_needs_two_digits_anywhere_and_one_where_a_plate_is_expected(text, anywhere, in_a_plate_zone):
    assert (plate_like(text), plate_like(text, digits=1)) == (anywhere, in_a_plate_zone)


def test_shape_and_fits_go_by_letters_and_digits():
    assert shape("4gls-168") == "9AAA999" and fits("4GLS 168", PLATE_FORMATS) and not fits("LGLS168", PLATE_FORMATS)
    assert letters_and_digits("ab-1 2") == "AB12" and plate_like("7abc123")


alphabet = st.sampled_from("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ -·京")


@st.composite
def characters(draw):
    text = draw(st.lists(alphabet, max_size=12))
    others = []
    for c in text:
        kind = "0123456789" if c.isalpha() and c.isascii() else "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c.isdigit() else ""
        other = draw(st.sampled_from(kind)) if kind and draw(st.booleans()) else ""
        others.append(Character(c, other, draw(st.floats(0, 1)) if other else 0.0))
    return others


@hypothesis_settings(max_examples=500, deadline=None)
@given(characters(), st.lists(st.text("A9", min_size=1, max_size=10), max_size=6))
def test_a_refit_read_differs_by_one_sure_enough_character_and_fits(chars, known):
    text = "".join(c.text for c in chars)
    refitted = refit(chars, known)
    if refitted is None:
        return
    assert not fits(text, known) and fits(refitted, known)
    changed = [i for i, (a, b) in enumerate(zip(text, refitted, strict=True)) if a != b]
    assert len(changed) == 1 and chars[changed[0]].other_score >= ALTERNATIVE
    assert refitted[changed[0]] == chars[changed[0]].other


@pytest.fixture(scope="module")
def recognition():
    return Recognition(recognition_model(), 1)


def test_the_text_model_gives_each_characters_second_choice_of_the_other_kind(recognition):
    """Recognition's CTC read on the model's own alphabet: repeats and blanks dropped, second choices per character."""
    alphabet = recognition._alphabet
    frames = np.full((8, len(alphabet)), 1e-6, dtype=np.float32)

    def frame(t, **scores):
        for character, score in scores.items():
            frames[t, alphabet.index(character.removeprefix("_"))] = score

    frame(0, L=0.8, _4=0.15)
    frame(1, L=0.7, _4=0.2)  # the same L, held: its best digit over both frames
    frame(2, **{"": 0.9})  # blank
    frame(3, G=0.99, _6=0.001)
    frame(4, **{"-": 0.9})
    frame(5, _1=0.9, I=0.05)
    frame(6, **{"": 0.9})
    frame(7, _1=0.8, L=0.1)
    text, score, chars = recognition.decode(frames)
    assert text == "LG-11"
    assert score == pytest.approx(np.mean([0.8, 0.99, 0.9, 0.9, 0.8]))
    assert chars == [Character("L", "4", pytest.approx(0.2)), Character("G", "6", pytest.approx(0.001)), Character("-"),
                     Character("1", "I", pytest.approx(0.05)), Character("1", "L", pytest.approx(0.1))]


def test_a_line_reads_as_rapidocr_reads_it(recognition):
    """Recognition prepares a line as RapidOCR does: the same model reads the same text at the same confidence."""
    from rapidocr import RapidOCR

    engine = RapidOCR(params={"Global.log_level": "error", "Global.use_det": False, "Global.use_cls": False,
                              "Global.use_preprocess_img": False, "Rec.model_path": str(recognition_model())})
    pic = PIL.Image.open(DEV / "OKP7250.jpg").convert("RGB")
    for box in [(499, 921, 815, 1023), (480, 900, 840, 1040), (499, 921, 700, 1023)]:  # the plate, wider, cut
        line = np.ascontiguousarray(np.asarray(pic.crop(box))[:, :, ::-1])
        theirs = engine(line)
        text, score, _ = recognition(line)
        assert (text, score) == (theirs.txts[0], pytest.approx(float(theirs.scores[0]), abs=1e-4)), box
