"""Credit codes: generation, the check character, normalisation and display. Pure functions.

A code is 16 data characters and 1 check character from Crockford's base-32 alphabet
(digits and letters without I, L, O and U), shown in groups: ``K7QM-3XTD-9PWR-2HCVS``.

- **Entropy.** The 16 data characters are 80 random bits from ``secrets`` (5 bits each).
- **Check character.** The 17 characters, read as elements of GF(32), satisfy
  ``sum(w[i] * c[i]) == 0`` with weights ``w = α¹, α², …, α¹⁶`` for the data and ``1`` for
  the check character (α a primitive element, polynomial x⁵ + x² + 1). All 17 weights are
  distinct and non-zero, so the check catches every single wrong character (the sum moves
  by ``w[i] * d``, never 0) and every swap of two different characters, adjacent or not
  (it moves by ``(w[i] + w[j]) * (c[i] + c[j])``). A typo is refused before any lookup.
- **Normalisation.** What a person types is forgiven: Unicode compatibility forms
  (full-width ``ＫＱ``), case, spaces, dashes of any kind (also the Japanese ``ー``), and the
  look-alikes O → 0 and I, L → 1. The stored form is the 17 characters, upper case, no
  separators; a lookup is an exact match on it.
"""

from __future__ import annotations

import base64
import re
import secrets
import unicodedata
from collections.abc import Iterator

from django.utils.translation import gettext, ngettext

from .exceptions import VoucherCodeMalformed

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
DATA_LENGTH = 16
CODE_LENGTH = DATA_LENGTH + 1
GROUPS = (4, 4, 4, 5)  # the last group ends with the check character
ENTROPY_BITS = DATA_LENGTH * 5
EXAMPLE = "K7QM-3XTD-9PWR-2HCVS"  # a valid code, for messages and placeholders
# Longer input is refused before any work is done on it (a pasted document, an attack).
MAX_INPUT_LENGTH = 100

_VALUE = {char: value for value, char in enumerate(ALPHABET)}
# Separators people type or paste between groups: whitespace, every dash, the Japanese
# prolonged-sound mark an IME produces for "-", underscores, dots and slashes.
_SEPARATORS = re.compile(r"[\s\-‐‑‒–—―−ー﹣_.・/]+")
_LOOKALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})
# RFC 4648 base 32 (what base64.b32encode writes) to this alphabet, value for value.
_FROM_RFC4648 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", ALPHABET)


# --- GF(32) -----------------------------------------------------------------------------------


def _gf_exp_table() -> list[int]:
    """α^0 … α^30 in GF(2^5) modulo x^5 + x^2 + 1 (primitive: α has order 31)."""
    table, value = [], 1
    for _ in range(31):
        table.append(value)
        value <<= 1
        if value & 0b100000:
            value ^= 0b100101
    return table


def _gf_mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return _EXP[(_LOG[a] + _LOG[b]) % 31]


_EXP = _gf_exp_table()
_LOG = {value: power for power, value in enumerate(_EXP)}
# _WEIGHTED[i][char]: the data character ``char`` at position i times its weight α^(i+1).
_WEIGHTED = [
    {char: _gf_mul(_EXP[i + 1], value) for char, value in _VALUE.items()}
    for i in range(DATA_LENGTH)
]


def check_character(data: str) -> str:
    """The check character of 16 data characters (already normalised)."""
    syndrome = 0
    for position, char in enumerate(data):
        syndrome ^= _WEIGHTED[position][char]  # addition in GF(2^5) is XOR
    # The check character's weight is 1, so it must equal the data's sum to cancel it.
    return ALPHABET[syndrome]


def is_valid(code: str) -> bool:
    """Whether ``code`` is a normalised code whose check character matches."""
    return (
        len(code) == CODE_LENGTH
        and all(char in _VALUE for char in code)
        and check_character(code[:DATA_LENGTH]) == code[DATA_LENGTH]
    )


# --- Generation -----------------------------------------------------------------------------

_GENERATION_CHUNK = 4096


def generate_codes(count: int) -> Iterator[str]:
    """``count`` new normalised codes, each from 80 fresh bits of ``secrets``.

    Made in chunks: one ``token_bytes`` and one base-32 encoding per chunk (C speed), then
    only the check character per code in Python. Uniqueness is the database's to enforce.
    """
    left = count
    while left > 0:
        size = min(left, _GENERATION_CHUNK)
        # 10 random bytes are exactly 16 base-32 characters, so the chunk splits evenly.
        text = base64.b32encode(secrets.token_bytes(10 * size)).decode().translate(_FROM_RFC4648)
        for start in range(0, size * DATA_LENGTH, DATA_LENGTH):
            data = text[start : start + DATA_LENGTH]
            yield data + check_character(data)
        left -= size


def generate_code() -> str:
    return next(generate_codes(1))


# --- Input and display ----------------------------------------------------------------------


def normalise(raw: str) -> str:
    """The stored form of a typed code; raises ``VoucherCodeMalformed`` with a message that
    says what is wrong (nothing is looked up here)."""
    if not isinstance(raw, str) or not raw.strip():
        raise VoucherCodeMalformed(gettext("Enter the credit code."))
    if len(raw) > MAX_INPUT_LENGTH:
        raise VoucherCodeMalformed(_length_message())
    text = unicodedata.normalize("NFKC", raw)
    text = _SEPARATORS.sub("", text).upper().translate(_LOOKALIKES)
    unknown = sorted({char for char in text if char not in _VALUE})
    if unknown:
        shown = [char for char in unknown if char.isprintable()][:3]
        if shown:
            raise VoucherCodeMalformed(
                ngettext(
                    "Credit codes never contain %(chars)s. They are made of digits and the "
                    "letters A to Z without U.",
                    "Credit codes never contain %(chars)s. They are made of digits and the "
                    "letters A to Z without U.",
                    len(shown),
                )
                % {"chars": ", ".join(f"“{char}”" for char in shown)}
            )
        raise VoucherCodeMalformed(
            gettext(
                "The code contains characters that credit codes never use. They are made of "
                "digits and the letters A to Z without U."
            )
        )
    if len(text) != CODE_LENGTH:
        raise VoucherCodeMalformed(_length_message(len(text)))
    if check_character(text[:DATA_LENGTH]) != text[DATA_LENGTH]:
        raise VoucherCodeMalformed(
            gettext(
                "This is not a valid credit code: one character is probably mistyped or two "
                "are swapped. Check it against the printed code."
            )
        )
    return text


def _length_message(length: int | None = None) -> str:
    expected = gettext("A credit code has %(count)d letters and digits, like %(example)s.") % {
        "count": CODE_LENGTH,
        "example": EXAMPLE,
    }
    if length is None:
        return expected
    return (
        ngettext(
            "You entered %(count)d letter or digit.",
            "You entered %(count)d letters and digits.",
            length,
        )
        % {"count": length}
        + " "
        + expected
    )


def format_code(code: str) -> str:
    """``K7QM3XTD9PWR2HCVS`` → ``K7QM-3XTD-9PWR-2HCVS``."""
    parts, start = [], 0
    for size in GROUPS:
        parts.append(code[start : start + size])
        start += size
    return "-".join(parts)


def mask_code(code: str) -> str:
    """What staff without the code permission see: the last 4 characters only (3 data
    characters, 15 of the 80 bits), enough to tell codes apart when a customer reads one."""
    return format_code("•" * (CODE_LENGTH - 4) + code[-4:])
