"""Numbers as words and back: "twenty one" <-> 21, 3.5 -> "three point five"."""

from __future__ import annotations

import re

UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
WORD_VALUES = {w: i for i, w in enumerate(UNITS)} | {w: 10 * i for i, w in enumerate(TENS) if w}
# ASR and speakers say these too.
WORD_VALUES |= {"nought": 0, "fourty": 40}


def int_to_words(n: int) -> str:
    """A whole number -> English words without "and" ("three hundred five", "two
million")."""
    if n < 0:
        return "minus " + int_to_words(-n)
    if n < 20:
        return UNITS[n]
    if n < 100:
        tens, rest = divmod(n, 10)
        return TENS[tens] + (" " + UNITS[rest] if rest else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return UNITS[hundreds] + " hundred" + (" " + int_to_words(rest) if rest else "")
    for name, size in sorted(SCALES.items(), key=lambda scale: -scale[1]):
        if n >= size:
            big, rest = divmod(n, size)
            return int_to_words(big) + f" {name}" + (" " + int_to_words(rest) if rest else "")
    raise AssertionError("unreachable")  # (n < 1000 returned above)


def number_to_words(x: float, decimals: int = 1) -> str:
    """Say a number, rounded to ``decimals`` places: 3.5 -> "three point five"."""
    rounded = round(x, decimals)
    if float(rounded).is_integer():
        return int_to_words(int(rounded))
    sign = "minus " if rounded < 0 else ""
    whole, frac = f"{abs(rounded):.{decimals}f}".split(".")
    frac = frac.rstrip("0")
    return sign + int_to_words(int(whole)) + " point " + " ".join(UNITS[int(d)] for d in frac)


SCALES = {"thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_TOKEN = re.compile(r"[a-z]+|\d+(?:\.\d+)?")


def words_to_digits(text: str) -> str:
    """Replace spelled-out whole numbers in lowercase ``text`` by digits.

    "what is twenty one plus 3" -> "what is 21 plus 3"; "four thousand two
    hundred" -> "4200". A unit right after a unit ("one two") starts a new number.
    """
    out: list[str] = []
    total, current = 0, None  # finished thousands; the part below a thousand

    def flush() -> None:
        nonlocal total, current
        if current is not None:
            out.append(str(total + current))
        total, current = 0, None

    for word in text.split():
        v = WORD_VALUES.get(word)
        if v is not None:
            tens_open = current is not None and current % 100 >= 20 and current % 10 == 0
            hundreds_open = current is not None and current % 100 == 0 and current >= 100
            if current is None:
                current = v
            elif (tens_open and 0 < v < 10) or (hundreds_open and v < 100):
                current += v
            elif total and current == 0:
                current = v
            else:
                flush()
                current = v
        elif word == "hundred" and current is not None:
            current *= 100
        elif word in SCALES and current is not None:
            total, current = total + current * SCALES[word], 0
        else:
            flush()
            out.append(word)
    flush()
    return " ".join(out)
