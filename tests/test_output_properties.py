"""Properties of output.txt's lines and of the records' order, for any keys and any text (hypothesis)."""

from hypothesis import example, given, settings
from hypothesis import strategies as st

from carcelery.pipeline import records, results
from carcelery.printable import printable, unprintable

# S3 keys are UTF-8 (no lone surrogates); short enough that records.order keeps them whole.
KEYS = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)
# Characters that end a line somewhere: Python's str.splitlines, terminals, editors.
BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


@given(st.text())
def test_printable_is_one_line_without_controls_and_unprintable_gives_the_text_back(text):
    escaped = printable(text)
    assert unprintable(escaped) == text
    assert len(escaped.splitlines()) <= 1 and not any(c in BREAKS for c in escaped)
    assert not any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f for c in escaped)


@given(image=KEYS, lines=st.lists(st.text(), min_size=1, max_size=3))
def test_no_key_or_text_splits_or_forges_a_line_and_the_first_separator_ends_the_key(image, lines):
    record = {"image": image, "car": True, "text": [{"text": t} for t in lines]}
    line = results.output_line(record)
    words = " ".join(lines).strip()
    if not words:
        assert line is None
        return
    assert len(line.splitlines()) == 1 and not any(c in BREAKS for c in line)
    key, separator, text = line.partition(results.SEPARATOR)
    assert separator and (unprintable(key), unprintable(text)) == (image, words)


@given(st.lists(KEYS, min_size=2, max_size=8, unique=True), st.randoms())
def test_the_records_order_is_total_and_the_same_whatever_order_they_come_in(keys, shuffler):
    by_order = sorted(keys, key=lambda k: records.order(k).encode())  # as DynamoDB sorts: UTF-8 bytes
    assert len({records.order(k) for k in keys}) == len(keys), "two keys, one place"
    shuffled = keys[:]
    shuffler.shuffle(shuffled)
    assert sorted(shuffled, key=lambda k: records.order(k).encode()) == by_order
    assert all(records.order(k) == records.order(k) for k in keys)


@settings(max_examples=500)
@given(KEYS, KEYS)
@example("a\x00", "a")  # natural order put "a" first, the records table "a\x00"
@example("0", "1\u00b9")  # "¹" is a digit to str.isdigit, not to int(): natural order raised
def test_the_records_order_is_natural_order(a, b):
    # Keys natural order cannot tell apart (a.jpg, A.jpg; 01, 1) are ordered by records.order alone.
    for first, second in ((a, b), (b, a)):
        if results.natural_key(first) < results.natural_key(second):
            assert records.order(first).encode() < records.order(second).encode()
