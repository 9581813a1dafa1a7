"""A fixed reading list for the gate's intelligibility check: enough words that one misread word is noise.

Held-out clips are few (2 to 5 per voice, ~50 words), so on them one misread word moves WER by
2-4 points, more than the gate's whole allowance. The gate therefore measures intelligibility on
this list instead: the adapted voice and the base voice read the same sentences with the same
seeds in the same run, and their word error rates are compared. The sentences are plain,
varied everyday English without digits, abbreviations or names (nothing the recogniser may spell
differently from the text), covering common phoneme sequences and sentence shapes.
"""

from __future__ import annotations

READING_LIST: tuple[str, ...] = (
    "The children walked along the quiet road until they reached the old stone bridge.",
    "Please remember to close the window before you leave the house this evening.",
    "A warm cup of tea tastes better when the weather turns cold and grey.",
    "The farmer sold fresh eggs, butter and honey at the market every morning.",
    "We could hear the thunder rolling over the hills long before the rain began.",
    "Her brother fixed the broken chair with a hammer, some glue and a few nails.",
    "The museum will open a new exhibition about ships and the people who sailed them.",
    "If you follow the river north, you will find a small village with a bakery.",
    "The teacher asked every student to write a short story about their summer.",
    "Bright yellow flowers grew along the fence beside the garden path.",
    "My neighbour plays the piano softly after dinner on most weekdays.",
    "The train was late again, so we waited on the platform and talked about music.",
    "Cut the bread into thin slices and spread the jam evenly across each one.",
    "The doctor said that a long walk each day would help him sleep better.",
    "Several birds gathered on the roof as the sun went down behind the trees.",
    "This kitchen needs a bigger table, more light, and a much quieter fridge.",
    "They packed their bags, locked the door, and drove towards the mountains.",
    "The library keeps its oldest books in a cool room on the top floor.",
    "Would you like to join us for lunch at the cafe near the harbour?",
    "A gentle wind moved the leaves while the dog slept in the shade.",
    "The engineer checked the wires twice before she switched the power back on.",
    "Most people agree that good shoes make a long journey much easier.",
    "The little boat rocked on the waves as the fishermen pulled in their nets.",
    "He forgot his umbrella at the office and came home completely soaked.",
    "Our team finished the project early and celebrated with pizza and cake.",
    "The soup needs more salt, a little pepper, and a handful of fresh herbs.",
    "When the bell rang, the hall filled with laughter and the sound of footsteps.",
    "She painted the walls a pale blue colour that made the room feel larger.",
)


def reading_words() -> int:
    """How many words the reading list holds (the intelligibility check's resolution is one word in this)."""
    return sum(len(s.split()) for s in READING_LIST)
