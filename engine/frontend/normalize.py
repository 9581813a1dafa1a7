"""English text normalisation: what a listener expects to hear for numbers, dates, symbols and abbreviations."""

from __future__ import annotations

import re
import unicodedata

from .abbreviations import expand_abbreviations
from .numbers import cardinal, decimal, digits, ordinal, plural, year

MONTHS = ("January February March April May June July August September October November "
          "December").split()
_MONTH_ABBR = {m[:3].lower(): m for m in MONTHS} | {"sept": "September"}
_MONTH_RE = (r"(?P<month>January|February|March|April|May|June|July|August|September|October|November"
             r"|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\.?")
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
               "€": ("euro", "euros", "cent", "cents"), "¥": ("yen", "yen", "", "")}
_SCALE_WORDS = r"(?P<scale>thousand|million|billion|trillion|[kKmMbB]n?)\b"
_SCALE_ABBR = {"k": "thousand", "m": "million", "mn": "million", "b": "billion", "bn": "billion"}
# Matched case-sensitively after a number: "4G" is a network, "4 g" four grams.
_UNITS = {
    "km": "kilometer", "m": "meter", "cm": "centimeter", "mm": "millimeter", "mi": "mile",
    "kg": "kilogram", "g": "gram", "mg": "milligram", "lb": "pound", "lbs": "pound", "oz": "ounce",
    "km/h": "kilometer per hour", "kph": "kilometer per hour", "mph": "mile per hour",
    "ml": "milliliter", "mL": "milliliter", "h": "hour", "hr": "hour", "hrs": "hour", "min": "minute",
    "mins": "minute", "sec": "second", "ms": "millisecond", "KB": "kilobyte", "kB": "kilobyte",
    "MB": "megabyte", "GB": "gigabyte", "TB": "terabyte", "Hz": "hertz", "kHz": "kilohertz",
    "MHz": "megahertz", "GHz": "gigahertz", "kW": "kilowatt", "kWh": "kilowatt hour",
    "°C": "degree Celsius", "°F": "degree Fahrenheit", "°": "degree",
}
_UNIT_RE = "|".join(sorted((re.escape(u) for u in _UNITS), key=len, reverse=True))
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
                         "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
                         "\u00ab": '"', "\u00bb": '"', "\u2212": "-", "\u00a0": " ", "\u00ad": ""})


def _number(text: str) -> str:
    """Words for a numeral with optional thousands separators and decimals."""
    clean = text.replace(",", "")
    if "." in clean:
        return decimal(clean)
    if len(clean) > 1 and clean.startswith("0"):
        return digits(clean)
    return cardinal(int(clean))


def _plural_unit(unit: str, amount: str) -> str:
    """A unit's name, plural unless the amount is exactly one."""
    if amount.strip() in ("1", "one") or unit in ("hertz", "kilohertz", "megahertz", "gigahertz"):
        return unit
    head, _, tail = unit.partition(" ")
    return f"{head}s {tail}".strip() if tail and head.endswith(("meter", "mile")) else (
        unit.replace("degree ", "degrees ") if unit.startswith("degree ") else unit + "s")


def _money(match: re.Match[str]) -> str:
    """"$3.50" -> "three dollars and fifty cents"; "$1.2 million" -> "one point two million dollars"."""
    one, many, sub_one, sub_many = _CURRENCIES[match.group("cur")]
    amount = match.group("amount").replace(",", "")
    scale = match.group("scale")
    if scale:
        scale = _SCALE_ABBR.get(scale.lower(), scale.lower())
        return f"{_number(amount)} {scale} {many}"
    whole, _, cents = amount.partition(".")
    whole_n = int(whole or "0")
    words = f"{cardinal(whole_n)} {one if whole_n == 1 else many}"
    if cents and sub_one:
        cents_n = int((cents + "0")[:2])
        if cents_n:
            cent_words = f"{cardinal(cents_n)} {sub_one if cents_n == 1 else sub_many}"
            return cent_words if whole_n == 0 else f"{words} and {cent_words}"
    return words


def _date(month: int, day: int, year_text: str | None) -> str:
    """"November twenty-sixth, twenty twenty-six"."""
    if not (1 <= month <= 12 and 1 <= day <= 31):
        raise ValueError("not a date")
    said = f"{MONTHS[month - 1]} {ordinal(day)}"
    return f"{said}, {year(int(year_text))}" if year_text else said


def _iso_date(match: re.Match[str]) -> str:
    """2026-11-26 -> a spoken date (left alone when it is no valid date)."""
    try:
        return _date(int(match.group(2)), int(match.group(3)), match.group(1))
    except ValueError:
        return match.group(0)


def _us_date(match: re.Match[str]) -> str:
    """11/26/2026 (month first, as in the US) -> a spoken date."""
    y = match.group(3)
    if len(y) == 2:
        y = str(2000 + int(y)) if int(y) < 50 else str(1900 + int(y))
    try:
        return _date(int(match.group(1)), int(match.group(2)), y)
    except ValueError:
        return match.group(0)


def _month_day(match: re.Match[str]) -> str:
    """"Nov. 26" / "November 26th, 2026" -> "November twenty-sixth[, twenty twenty-six]"."""
    month = _MONTH_ABBR.get(match.group("month").lower()[:4].rstrip("t"), None)
    month = month or _MONTH_ABBR.get(match.group("month").lower()[:3], match.group("month"))
    day = int(match.group("day"))
    if not 1 <= day <= 31:
        return match.group(0)
    said = f"{month} {ordinal(day)}"
    if match.group("year"):
        said += f", {year(int(match.group('year')))}"
    return said


def _time(match: re.Match[str]) -> str:
    """3:45 pm -> "three forty-five PM"; 14:30 -> "fourteen thirty"; 9:05 -> "nine oh five"."""
    hour, minute = int(match.group("h")), int(match.group("m") or 0)
    meridiem = (match.group("ampm") or "").replace(".", "").replace(" ", "").upper()
    if hour > 24 or minute > 59:
        return match.group(0)
    if minute == 0:
        spoken = cardinal(hour) + ("" if meridiem else (" hundred" if hour > 12 or hour == 0 else " o'clock"))
    elif minute < 10:
        spoken = f"{cardinal(hour)} oh {cardinal(minute)}"
    else:
        spoken = f"{cardinal(hour)} {cardinal(minute)}"
    if not meridiem:
        return spoken
    # "at 3 p.m." ending a sentence: the abbreviation's dot was the full stop too.
    ends = match.group(0).endswith(".") and re.match(r"\s*$|\s+[A-Z]", match.string[match.end():])
    return f"{spoken} {meridiem}{'.' if ends else ''}"  # "PM": espeak-ng reads "A M" as "a M"


def _url(match: re.Match[str]) -> str:
    """Spell a web address or e-mail address: dots, slashes and @ said as words."""
    text = re.sub(r"^(?:https?://)", "", match.group(0)).rstrip("/")
    text = re.sub(r"^www\.", "w w w.", text)
    names = {".": " dot ", "/": " slash ", "@": " at ", "-": " dash ", "_": " underscore ", ":": " colon ",
             "?": " question mark ", "=": " equals ", "&": " and ", "#": " hash ", "~": " tilde "}
    spoken = "".join(names.get(ch, ch) for ch in text)
    spoken = re.sub(r"\d+", lambda m: digits(m.group(0)), spoken)
    return " ".join(spoken.split())


def _clean(text: str) -> str:
    """Unicode and whitespace cleanup: NFKC, straight quotes, dashes and ellipses as pauses."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch in "\n\t")
    text = re.sub(r"[ \t]*\n[ \t]*\n\s*", "\n\n", text)
    # A paragraph (or heading) without final punctuation still ends a sentence.
    text = re.sub(r"(?<=[^\s.!?,;:])\n\n", ".\n\n", text)
    text = re.sub(r"(?<=\d)\s*[\u2013\u2014]\s*(?=\d)", " to ", text)      # 1990–1995
    text = re.sub(r"\s*[\u2013\u2014\u2015]+\s*|\s+-{1,2}\s+", ", ", text)  # dashes between words: a pause
    text = re.sub(r"\s*(?:\.{3,}|\u2026)+\s*(?=[\"')\]]*\s*(?:$|\n))", ". ", text)  # ellipsis at the end
    text = re.sub(r"\s*(?:\.{3,}|\u2026)\s*", ", ", text)                  # ellipsis inside: a pause
    text = re.sub(r"([!?])[!?]+", r"\1", text)                             # "?!" and "!!!"
    text = re.sub(r"\s*([,;:])(?:\s*[,;:])+", r"\1", text)
    text = re.sub(r"(^|[\s(\"])[,;:.]\s*", r"\1", text)                  # stray leading punctuation
    return " ".join(text.split())


def normalize_text(text: str) -> str:
    """Rewrite text the way a listener expects it read: numbers, money, dates, times, symbols, abbreviations."""
    text = _clean(text)
    text = re.sub(r"\b(?:https?://|www\.)[^\s<>\"]+[^\s<>\".,;:!?)]|\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b", _url, text)
    text = re.sub(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", _iso_date, text)
    text = re.sub(r"\b(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})\b", _us_date, text)
    text = re.sub(rf"\b{_MONTH_RE}\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(?P<year>\d{{4}})\b)?",
                  _month_day, text)
    text = re.sub(r"\b(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<ampm>[aApP]\.?\s?[mM]\.?)(?=\W|$)", _time, text)
    text = re.sub(r"\b(?P<h>\d{1,2}):(?P<m>\d{2})(?!\d|:\d)(?P<ampm>)", _time, text)
    text = re.sub(r"(?<![\w.-])(?:\(?\d{3}\)?[ -])?\d{3}-\d{4}(?![\w-]|\.\d)",
                  lambda m: ", ".join(digits(g) for g in re.findall(r"\d+", m.group(0))), text)  # phones
    text = re.sub(r"(?<![\w.-])(\d{1,4})\s?-\s?(\d{1,4})(?![\w-]|\.\d)", r"\1 to \2", text)  # ranges
    text = re.sub(r"\b(1[1-9]\d\d|20\d\d) to (1[1-9]\d\d|20\d\d)\b",
                  lambda m: f"{year(int(m.group(1)))} to {year(int(m.group(2)))}", text)
    text = re.sub(rf"(?P<cur>[$£€¥])\s?(?P<amount>{_NUM})(?:\s?{_SCALE_WORDS})?", _money, text)
    text = re.sub(rf"(?<![\w.])(-?)({_NUM})\s?%", lambda m: f"{'minus ' if m.group(1) else ''}"
                  f"{_number(m.group(2))} percent", text)
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: ordinal(int(m.group(1))), text)
    text = re.sub(r"\b(\d{2})00s\b", lambda m: f"{cardinal(int(m.group(1)))} hundreds", text)
    text = re.sub(r"\b(1\d|20)(\d0)s\b", lambda m: plural(year(int(m.group(0)[:-1]))), text)
    text = re.sub(r"'(\d0)s\b", lambda m: plural(cardinal(int(m.group(1)))), text)
    text = re.sub(r"\b(in|since|from|by|until|till|of|year|during|before|after|around|circa|early|late|"
                  r"mid|spring|summer|autumn|fall|winter)\s+(1[1-9]\d\d|20\d\d)\b(?![.,]\d)",
                  lambda m: f"{m.group(1)} {year(int(m.group(2)))}", text, flags=re.IGNORECASE)
    text = re.sub(r"(?<![\w.,$£€¥-])(1[1-9]\d\d|20\d\d)(?=[.,;:!?)]*(?:\s|$))(?![.,]\d)(?=[.,;:!?)]|$)",
                  lambda m: year(int(m.group(1))), text)
    text = re.sub(rf"(?<![\w.])({_NUM})\s?({_UNIT_RE})(?![\w/])",
                  lambda m: f"{_number(m.group(1))} {_plural_unit(_UNITS[m.group(2)], m.group(1))}", text)
    text = expand_abbreviations(text)
    # Runs of initials before a name ("J. R. R. Tolkien"): without dots, so no sentence ends there.
    text = re.sub(r"\b((?:[A-Z]\. ?){2,})(?=[A-Z][a-z])",
                  lambda m: " ".join(m.group(1).replace(".", " ").split()) + " ", text)
    text = _symbols(text)
    text = re.sub(r"(?<=\d)x\b", " times", text)  # "2x faster"
    text = re.sub(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])", " ", text)  # "mp3", "4G", "v2.0"
    # Dotted runs of three or more numbers (versions, addresses): each part, then "dot".
    text = re.sub(r"\b\d+(?:\.\d+){2,}\b",
                  lambda m: " dot ".join(_number(part) for part in m.group(0).split(".")), text)
    text = re.sub(rf"(?<![\w.])(-)?({_NUM})(?![\w])", lambda m: f"{'minus ' if m.group(1) else ''}"
                  f"{_number(m.group(2))}", text)
    return " ".join(text.split())


def _symbols(text: str) -> str:
    """Symbols read as words: & + @ # = and fractions."""
    fractions = {"1/2": "one half", "1/3": "one third", "2/3": "two thirds", "1/4": "one quarter",
                 "3/4": "three quarters", "½": "one half", "¼": "one quarter", "¾": "three quarters"}
    text = re.sub(r"(?<![\d/])(1/2|1/3|2/3|1/4|3/4)(?![\d/])", lambda m: fractions[m.group(1)], text)
    text = re.sub(r"#\s?(?=\d)", "number ", text)
    text = re.sub(r"(?<=\d)\s?[x×]\s?(?=\d)", " by ", text)
    names = {"&": " and ", "+": " plus ", "@": " at ", "=": " equals ", "#": " hash ", "×": " times ",
             "~": " about ", "/": " slash ", "*": " ", "_": " ", "|": " ", "<": " less than ",
             ">": " greater than ", "^": " ", "\\": " ", "{": " ", "}": " ", "[": " ", "]": " "}
    text = re.sub(r"(?<=[A-Za-z])/(?=[A-Za-z])", " or ", text)  # and/or
    return "".join(names.get(ch, ch) for ch in text)
