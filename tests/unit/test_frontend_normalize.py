"""Text normalisation: numbers, money, dates, times, ordinals, abbreviations, symbols, cleanup."""

from __future__ import annotations

import pytest

from chorus.engine.frontend import cardinal, normalize_text, ordinal, year

NUMBERS = [
    ("I have 3 cats.", "I have three cats."),
    ("It is -5 outside.", "It is minus five outside."),
    ("Pi is 3.14 roughly.", "Pi is three point one four roughly."),
    ("1,234,567 people", "one million two hundred thirty-four thousand five hundred sixty-seven people"),
    ("Agent 007 arrived.", "Agent zero zero seven arrived."),
    ("Only 0.5 left.", "Only zero point five left."),
    ("Pages 5-10 are missing.", "Pages five to ten are missing."),
    ("Mix 1/2 cup.", "Mix one half cup."),
    ("Read pages 5-10.", "Read pages five to ten."),
    ("Call (555) 123-4567.", "Call five five five, one two three, four five six seven."),
    ("Version 1.2.3 and v2.0", "Version one dot two dot three and v two point zero"),
    ("The 4G network is 2x faster", "The four G network is two times faster"),
    ("Room 101B", "Room one hundred one B"),
]
ORDINALS = [
    ("the 1st time", "the first time"),
    ("the 22nd floor", "the twenty-second floor"),
    ("the 3rd and 4th", "the third and fourth"),
    ("the 100th visitor", "the one hundredth visitor"),
    ("the 11th hour", "the eleventh hour"),
]
MONEY = [
    ("It costs $5.", "It costs five dollars."),
    ("It costs $1.", "It costs one dollar."),
    ("Pay $3.50 now.", "Pay three dollars and fifty cents now."),
    ("Only $0.99 today", "Only ninety-nine cents today"),
    ("They raised $1.2 million.", "They raised one point two million dollars."),
    ("A £20 note", "A twenty pounds note"),
    ("It was €3.50.", "It was three euros and fifty cents."),
    ("$2,500 in total", "two thousand five hundred dollars in total"),
]
PERCENT_UNITS = [
    ("Up 45% today.", "Up forty-five percent today."),
    ("Down 3.5% now.", "Down three point five percent now."),
    ("We ran 5 km.", "We ran five kilometers."),
    ("It weighs 1 kg.", "It weighs one kilogram."),
    ("It weighs 20kg.", "It weighs twenty kilograms."),
    ("Drive at 60 mph.", "Drive at sixty miles per hour."),
    ("5 GB of 10MB", "five gigabytes of ten megabytes"),
    ("It is 25°C.", "It is twenty-five degrees Celsius."),
]
YEARS_DATES = [
    ("In 1999 we met.", "In nineteen ninety-nine we met."),
    ("Since 2005 it grew.", "Since two thousand five it grew."),
    ("By 2026 it ends.", "By twenty twenty-six it ends."),
    ("Built in 1905.", "Built in nineteen oh five."),
    ("In the 1990s music changed.", "In the nineteen nineties music changed."),
    ("Due 2026-11-26.", "Due November twenty-sixth, twenty twenty-six."),
    ("Due 11/26/2026.", "Due November twenty-sixth, twenty twenty-six."),
    ("Due Nov. 26 at noon.", "Due November twenty-sixth at noon."),
    ("Born on July 4th, 1976.", "Born on July fourth, nineteen seventy-six."),
]
TIMES = [
    ("Meet at 3:45 pm today.", "Meet at three forty-five PM today."),
    ("Meet at 3:45 pm.", "Meet at three forty-five PM."),
    ("The train leaves at 14:30.", "The train leaves at fourteen thirty."),
    ("Wake at 9:05 a.m. sharp.", "Wake at nine oh five AM sharp."),
    ("Lunch at 12:00.", "Lunch at twelve o'clock."),
    ("Call at 7 pm please.", "Call at seven PM please."),
]
ABBREVIATIONS = [
    ("Dr. Smith is here.", "Doctor Smith is here."),
    ("Mr. and Mrs. Jones came.", "Mister and Missus Jones came."),
    ("Ms. Lee called.", "Miz Lee called."),
    ("We prayed at St. Paul's.", "We prayed at Saint Paul's."),
    ("She lives on Main St. near the park.", "She lives on Main Street near the park."),
    ("She lives at 12 Main St. Then she moved.", "She lives at twelve Main Street. Then she moved."),
    ("He lives on Elm Dr. now.", "He lives on Elm Drive now."),
    ("Fruit, e.g. apples, i.e. food.", "Fruit, for example apples, that is food."),
    ("Apples, pears, etc. are fruit.", "Apples, pears, et cetera are fruit."),
    ("Cats vs. dogs", "Cats versus dogs"),
    ("Ask for No. 5.", "Ask for number five."),
    ("J. R. R. Tolkien wrote it.", "J R R Tolkien wrote it."),
]
SYMBOLS_URLS = [
    ("Salt & pepper", "Salt and pepper"),
    ("2 + 2", "two plus two"),
    ("Write to john.doe@example.com today.", "Write to john dot doe at example dot com today."),
    ("See https://www.example.com/docs now.", "See w w w dot example dot com slash docs now."),
    ("Meet @ noon", "Meet at noon"),
]
CLEANUP = [
    ("\u201cQuoted\u201d text", '"Quoted" text'),
    ("It\u2019s fine", "It's fine"),
    ("Wait \u2014 really?", "Wait, really?"),
    ("Well\u2026 maybe.", "Well, maybe."),
    ("So...", "So."),
    ("What?!", "What?"),
    ("  lots   of\n\tspace  ", "lots of space"),
    ("Title\n\nBody text.", "Title. Body text."),
    ("\uff21\uff22\uff23 fullwidth", "ABC fullwidth"),
    ("1990\u20131995", "nineteen ninety to nineteen ninety-five"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    NUMBERS + ORDINALS + MONEY + PERCENT_UNITS + YEARS_DATES + TIMES + ABBREVIATIONS + SYMBOLS_URLS + CLEANUP,
)
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


@pytest.mark.parametrize(
    ("n", "words"),
    [(0, "zero"), (7, "seven"), (13, "thirteen"), (40, "forty"), (99, "ninety-nine"), (101, "one hundred one"),
     (1000, "one thousand"), (1_000_001, "one million one"), (-12, "minus twelve"),
     (2_000_000_000, "two billion")],
)
def test_cardinal(n: int, words: str) -> None:
    assert cardinal(n) == words


@pytest.mark.parametrize(
    ("n", "words"),
    [(1, "first"), (2, "second"), (3, "third"), (5, "fifth"), (8, "eighth"), (9, "ninth"), (12, "twelfth"),
     (20, "twentieth"), (21, "twenty-first"), (1000, "one thousandth"), (103, "one hundred third")],
)
def test_ordinal(n: int, words: str) -> None:
    assert ordinal(n) == words


@pytest.mark.parametrize(
    ("n", "words"),
    [(1999, "nineteen ninety-nine"), (2005, "two thousand five"), (2000, "two thousand"),
     (1900, "nineteen hundred"), (2026, "twenty twenty-six"), (1066, "ten sixty-six"), (1805, "eighteen oh five")],
)
def test_year(n: int, words: str) -> None:
    assert year(n) == words


def test_huge_number_is_read_digit_by_digit() -> None:
    assert normalize_text("1" * 25) == " ".join(["one"] * 25)


def test_text_without_digits_or_symbols_is_unchanged() -> None:
    text = "The quick brown fox jumps over the lazy dog, and then it rests."
    assert normalize_text(text) == text
