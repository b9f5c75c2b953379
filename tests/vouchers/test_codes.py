"""Credit codes: generation, the check character, normalisation. Pure: no database."""

import math
import re
from collections import Counter

import pytest

from vouchers import codes
from vouchers.exceptions import VoucherCodeMalformed

ALPHABET = codes.ALPHABET
FORMAT = re.compile(
    r"^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{5}$"
)


def with_check(data: str) -> str:
    return data + codes.check_character(data)


# --- Generation -----------------------------------------------------------------------------


def test_codes_have_80_random_bits_16_data_characters_and_a_check_character():
    assert len(ALPHABET) == 32 and len(set(ALPHABET)) == 32
    assert codes.ENTROPY_BITS == codes.DATA_LENGTH * math.log2(len(ALPHABET)) == 80
    generated = list(codes.generate_codes(5000))
    assert len(generated) == 5000
    assert len(set(generated)) == 5000
    for code in generated:
        assert len(code) == 17
        assert set(code) <= set(ALPHABET)
        assert codes.is_valid(code)
        assert FORMAT.match(codes.format_code(code))


def test_the_alphabet_leaves_out_letters_that_read_like_digits_and_u():
    assert not set("ILOU") & set(ALPHABET)
    assert set("0123456789") <= set(ALPHABET)


def test_every_symbol_appears_at_every_position_about_equally_often():
    generated = list(codes.generate_codes(32 * 400))
    for position in range(codes.DATA_LENGTH):
        counts = Counter(code[position] for code in generated)
        assert set(counts) == set(ALPHABET)
        # 400 expected per symbol; a biased generator (e.g. modulo bias) would drift far.
        assert all(250 < n < 560 for n in counts.values()), (position, counts)


def test_generation_draws_from_secrets(monkeypatch):
    calls = []
    real = codes.secrets.token_bytes

    def spy(n):
        calls.append(n)
        return real(n)

    monkeypatch.setattr(codes.secrets, "token_bytes", spy)
    assert len(list(codes.generate_codes(10_000))) == 10_000
    assert sum(calls) == 10 * 10_000  # 80 bits per code, all from secrets


def test_a_single_code_can_be_generated():
    assert codes.is_valid(codes.generate_code())


# --- The check character --------------------------------------------------------------------


def test_the_check_character_catches_every_single_character_substitution():
    # The check is linear: a substitution moves the sum by weight × difference whatever the
    # other characters are, so one code with every position and every other symbol is the
    # whole proof; a few random codes on top for good measure.
    for code in [codes.EXAMPLE.replace("-", ""), *codes.generate_codes(20)]:
        assert codes.is_valid(code)
        for position in range(codes.CODE_LENGTH):
            for symbol in ALPHABET:
                if symbol == code[position]:
                    continue
                typo = code[:position] + symbol + code[position + 1 :]
                assert not codes.is_valid(typo), (code, position, symbol)
                with pytest.raises(VoucherCodeMalformed, match="mistyped or two are swapped"):
                    codes.normalise(typo)


def test_the_check_character_catches_every_adjacent_transposition():
    """Every adjacent pair of positions (the last data character and the check character
    too) and every pair of different symbols: 16 × 32 × 31 swaps."""
    base = "0" * codes.DATA_LENGTH
    checked = 0
    for position in range(codes.DATA_LENGTH):
        for a in ALPHABET:
            for b in ALPHABET:
                if a == b:
                    continue
                if position + 1 < codes.DATA_LENGTH:
                    data = base[:position] + a + b + base[position + 2 :]
                    code = with_check(data)
                else:  # data's last character and the check character: find data that fits
                    code = next(
                        c
                        for first in ALPHABET
                        if (c := with_check(first + base[1:-1] + a))[-1] == b
                    )
                assert codes.is_valid(code)
                swapped = (
                    code[:position] + code[position + 1] + code[position] + code[position + 2 :]
                )
                assert not codes.is_valid(swapped), (code, position)
                checked += 1
    assert checked == 16 * 32 * 31


def test_the_check_character_also_catches_swaps_further_apart():
    code = codes.generate_code()
    for i in range(codes.CODE_LENGTH):
        for j in range(i + 2, codes.CODE_LENGTH):
            if code[i] != code[j]:
                swapped = list(code)
                swapped[i], swapped[j] = swapped[j], swapped[i]
                assert not codes.is_valid("".join(swapped))


# --- Normalisation --------------------------------------------------------------------------

CODE = codes.EXAMPLE.replace("-", "")  # K7QM3XTD9PWR2HCVS


@pytest.mark.parametrize(
    "typed",
    [
        "K7QM-3XTD-9PWR-2HCVS",
        "k7qm-3xtd-9pwr-2hcvs",
        "K7QM3XTD9PWR2HCVS",
        "  K7QM 3XTD 9PWR 2HCVS  ",
        "K7QM\t3XTD\n9PWR 2HCVS",
        "K7QM–3XTD—9PWR‐2HCVS",  # en dash, em dash, hyphen
        "K7QMー3XTDー9PWRー2HCVS",  # what a Japanese IME types for "-"
        "Ｋ７ＱＭ－３ＸＴＤ－９ＰＷＲ－２ＨＣＶＳ",  # full width
        "K7QM_3XTD.9PWR/2HCVS",
        "k7qm 3xtd 9pwr 2hcvs",
    ],
)
def test_typed_forms_of_a_code_normalise_to_its_stored_form(typed):
    assert codes.normalise(typed) == CODE


def test_letters_that_look_like_digits_are_read_as_the_digits():
    data = "0011" + "ABCDEFGHJKMN"
    code = with_check(data)
    typed = "OoIl" + code[4:]  # O, o, I, l for 0, 0, 1, 1
    assert codes.normalise(typed) == code
    assert codes.normalise(typed.lower()) == code


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", "Enter the credit code"),
        ("   ", "Enter the credit code"),
        ("K7QM-3XTD-9PWR", "You entered 12 letters and digits"),
        ("K7QM-3XTD-9PWR-2HCVS-2", "You entered 18 letters and digits"),
        ("K7QM-3XTD-9PWR-2HCVU", "never contain “U”"),
        ("K7QM-3XTD-9PWR-2HCV!", "never contain “!”"),
        ("K7QM-3XTD-9PWR-2HCV\x00", "characters that credit codes never use"),
        ("K7QM-3XTD-9PWR-2HCV🎁", "never contain “🎁”"),
        ("K7QM-3XTD-9PWR-2HCVÄ", "never contain “Ä”"),
        ("K7QM-3XTD-9PWR-2HCVT", "mistyped or two are swapped"),
        ("7KQM-3XTD-9PWR-2HCVS", "mistyped or two are swapped"),
        ("K" * 101, "A credit code has 17 letters and digits"),
    ],
)
def test_malformed_input_is_refused_with_a_message_that_says_what_is_wrong(typed, message):
    with pytest.raises(VoucherCodeMalformed) as refused:
        codes.normalise(typed)
    assert message in str(refused.value)


def test_huge_input_is_refused_before_any_work_on_it():
    with pytest.raises(VoucherCodeMalformed, match="17 letters and digits"):
        codes.normalise("K7QM" * 1_000_000)


def test_non_text_is_refused():
    with pytest.raises(VoucherCodeMalformed):
        codes.normalise(None)


def test_display_groups_the_code_and_masks_all_but_the_last_four():
    assert codes.format_code(CODE) == "K7QM-3XTD-9PWR-2HCVS"
    assert codes.mask_code(CODE) == "••••-••••-••••-•HCVS"
