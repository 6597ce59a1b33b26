"""Masking of ID numbers, phones and names (issue 5, section 6; issue 9: every way a number
is typed, property-tested)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date

import pandas as pd
import pandas.testing as pdt
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipelines.analysis.rosters import id_check_digit
from pipelines.privacy import (
    find_unmasked,
    mask_id_number,
    mask_name,
    mask_phone,
    mask_series,
    scrub_text,
)


def test_id_number_keeps_first_six_and_last_four() -> None:
    assert mask_id_number("37048119900101123X") == "370481********123X"
    assert mask_id_number("370481900101123") == "370481********1123"  # old 15-digit
    assert mask_id_number("12345") == "*****"  # malformed: still personal, hide it all
    assert mask_id_number(None) is None


def test_phone_keeps_first_three_and_last_four() -> None:
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("+86 138-1234-5678") == "138****5678"
    assert mask_phone("") == ""


def test_name_keeps_the_surname() -> None:
    assert mask_name("张三") == "张*"
    assert mask_name("欧阳娜娜") == "欧阳*"
    assert mask_name("欧阳") == "欧*"


def test_mask_series_and_free_text() -> None:
    s = pd.Series(["张三丰", None, "李四"])
    pdt.assert_series_equal(mask_series(s, "name"), pd.Series(["张*", None, "李*"]))
    text = "联系13812345678，身份证37048119900101123X。"
    masked = scrub_text(text)
    assert masked == "联系138****5678，身份证370481********123X。"
    assert find_unmasked(masked) == []
    assert find_unmasked(text) == ["37048119900101123X", "13812345678"]


@pytest.mark.parametrize(
    ("typed", "masked"),
    [
        ("电话+8613812345678", "电话+86138****5678"),
        ("8613812345678", "86138****5678"),
        ("138 1234 5678", "138****5678"),
        ("138-1234-5678", "138****5678"),
        ("联系 0086 138 1234 5678。", "联系 0086 138****5678。"),
        ("老身份证370481900101123号", "老身份证370481********1123号"),
        ("ID37048119900101123X", "ID370481********123X"),
    ],
)
def test_prefixed_or_spaced_phones_and_old_id_numbers_are_masked_and_scanned(typed: str, masked: str) -> None:  # fmt: skip
    assert find_unmasked(typed) != []  # the scanner sees the number as typed
    assert scrub_text(typed) == masked
    assert find_unmasked(masked) == []


def test_the_scanner_is_wider_than_the_masker() -> None:
    # Typed in a way the masker does not read as a number: it slips through scrub_text, and
    # the scan of the outputs still catches it. (Spaced or dashed 3-4-4 and 6-8-4 groupings,
    # which the masker once missed, are masked now: see the property tests below.)
    for odd in ("138 -- 1234 -- 5678", "138_1234_5678", "37048119900101123", "138~1234~5678"):
        assert scrub_text(odd) == odd
        assert find_unmasked(odd) == [odd]
    assert find_unmasked("(138)1234-5678") == ["138)1234-5678"]


@pytest.mark.parametrize(
    ("typed", "masked"),
    [  # the formats of issue 9, each as it reached the lists in full
        ("身份证 370481 19900101 1234", "身份证 370481********1234"),
        ("身份证 370481-1990-0101-1234", "身份证 370481********1234"),
        ("电话 138.1234.5678", "电话 138****5678"),
        ("电话１３８１２３４５６７８。", "电话138****5678。"),
        ("＋８６　１３８　１２３４　５６７８", "＋８６　138****5678"),
        ("３７０４８１－１９９０－０１０１－１２３Ｘ号", "370481********123X号"),
        ("370481/1990/01/01/123x", "370481********123x"),
        ("老证 370481 900101 123", "老证 370481********1123"),
        ("(+86)138 1234 5678", "(+86)138****5678"),
        ("０１２３ 13812345678 2023年", "０１２３ 138****5678 2023年"),
        ("手机 177.2081.08.05", "手机 177****0805"),  # its last 8 digits look like a date
    ],
)
def test_everyday_formats_are_masked_and_the_text_around_kept(typed: str, masked: str) -> None:
    assert find_unmasked(typed) != []
    assert scrub_text(typed) == masked
    assert find_unmasked(masked) == []
    assert scrub_text(masked) == masked


def test_mask_phone_and_id_number_read_through_separators_and_full_width() -> None:
    assert mask_phone("１３８．１２３４．５６７８") == "138****5678"
    assert mask_phone("＋８６ 138 1234 5678") == "138****5678"
    assert mask_id_number("370481 19900101 123X") == "370481********123X"
    assert mask_id_number("３７０４８１１９９００１０１１２３４") == "370481********1234"


def test_the_scanner_passes_coordinates_uuids_digests_and_dates() -> None:
    text = (
        "35.16394660492,117.13812345678 "  # map coordinates: fractions are no numbers
        "uuid:3f2a9c1e-0b7d-4e1a-9c3b-14635667385b "  # a submission id
        "../2023-06-30/photos/" + "1" * 40 + "ab" + "9" * 22 + ".jpg "  # a photo named by sha256
        "2023-05-01 2023-05-31 村代码 370481115200 共 1,518 人"
    )
    assert find_unmasked(text) == []
    # but a phone right after one of them is still found, and a uuid is never mangled
    assert find_unmasked("uuid:3f2a9c1e-0b7d-4e1a-9c3b-14635667385b 13812345678") == ["13812345678"]  # fmt: skip
    uuid = "uuid:3f2a9c1e-0b7d-4e1a-9c3b-14635667385b"
    assert scrub_text(f"另见 {uuid}") == f"另见 {uuid}"
    assert scrub_text("13812345678.0") == "138****5678.0"  # a phone stored as a float
    assert mask_phone("0086 138-1234-5678") == "138****5678"
    # an ODK geopoint, decimals side by side, and dates in a list are no numbers of anyone
    for text in ("35.16394660492 117.13812345678 60.0 5.0", "2023-05-01 2023-05-31 2023-06-01",
                 "2023.05.01、2023/06/01", "117.138123456789012,35.163946604920001"):  # fmt: skip
        assert find_unmasked(text) == [] and scrub_text(text) == text, text


# --- property tests: ID numbers and mobiles typed every way people type them --------------------
# The formats, so test_privacy_outputs plants the same in the stores it reports on.

PROVINCES = ("11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35",
             "36", "37", "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54",
             "61", "62", "63", "64", "65", "71", "81", "82")  # fmt: skip
ID_LAYOUTS = ((18,), (6, 8, 4), (6, 4, 4, 4), (6, 4, 2, 2, 4), (3, 3, 4, 4, 4), (4, 4, 4, 4, 2), (6, 12))  # fmt: skip
OLD_ID_LAYOUTS = ((15,), (6, 6, 3), (6, 9), (3, 3, 6, 3))
PHONE_LAYOUTS = ((11,), (3, 4, 4), (3, 8), (7, 4), (4, 3, 4), (3, 4, 2, 2))
PREFIXES = ("", "+86", "＋86", "+８６", "0086", "００８６", "86", "(+86)", "（＋８６）")
DOTS = (".", "．", "。", "｡", "·")
# invisible characters and line breaks hide nothing: zero-width space, non-joiner and joiner,
# word joiner, BOM, soft hyphen, line and paragraph separators, LF, CRLF, tab, NUL
INVISIBLE = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u2028", "\u2029",
             "\n", "\r\n", "\t", "\x00")  # fmt: skip
SEPARATORS = (" ", "\u3000", "-", "－", "—", "–", " - ", "/", "／", *DOTS, *INVISIBLE)
# what comes right before a number: a list number, a sentence's full stop
LEADS = ("", "1.", "2.", "9.", "1．", "3。", "1、", "。", "．", ".", "｡", "\n", "\u2028")
# what ends a number's sentence when another number follows right after it
STOPS = ("。", "．", ".", "｡")
WIDE = str.maketrans("0123456789Xx", "０１２３４５６７８９Ｘｘ")
CHINESE = "的一是了我不在人有这中大为上个国电话号码联系身份证请核实，：；（）、！？ 　"


@dataclass(frozen=True)
class Typed:
    """A personal number as someone typed it: ``digits`` (ASCII, X kept) in ``text``."""

    kind: str  # "id" or "phone"
    digits: str
    text: str
    prefix: str = ""  # a phone's +86 / 0086 / 86 and what follows it, as typed

    @property
    def masked(self) -> str:
        if self.kind == "id":
            return self.digits[:6] + "********" + self.digits[-4:]
        return self.prefix + self.digits[:3] + "****" + self.digits[-4:]


def lay_out(digits: str, layout: tuple[int, ...], sep: str, gaps: list[bool], width: list[bool]) -> str:  # fmt: skip
    """``digits`` in groups of ``layout``; ``sep`` where ``gaps`` says (ASCII dots everywhere
    or nowhere: one alone is a decimal point; a full stop 。．｡ never is); each character
    full-width where ``width``."""
    wide = "".join(c.translate(WIDE) if w else c for c, w in zip(digits, width, strict=True))
    parts, at = [], 0
    for n in layout:
        parts.append(wide[at : at + n])
        at += n
    dotted = sep == "."
    if dotted and len(parts) < 3:
        return "".join(parts)
    out = parts[0]
    for part, gap in zip(parts[1:], gaps, strict=False):
        out += (sep if gap or dotted else "") + part
    return out


def id_number(first17: str) -> str:
    return first17 + id_check_digit(first17)


@st.composite
def typed_ids(draw: st.DrawFn) -> Typed:
    area = draw(st.sampled_from(PROVINCES)) + draw(st.from_regex(r"[0-9]{4}", fullmatch=True))
    born = draw(st.dates(date(1900, 1, 1), date(2023, 12, 31)))
    seq = draw(st.integers(0, 999))
    if draw(st.integers(0, 4)) == 0:  # the old 15-digit numbers are still around
        digits, layouts = f"{area}{born:%y%m%d}{seq:03d}", OLD_ID_LAYOUTS
    else:
        if draw(st.booleans()):  # a check digit X, upper or lower case
            seq = next(s for s in range(1000) if id_check_digit(f"{area}{born:%Y%m%d}{s:03d}") == "X")  # fmt: skip
        digits, layouts = id_number(f"{area}{born:%Y%m%d}{seq:03d}"), ID_LAYOUTS
        if digits.endswith("X") and draw(st.booleans()):
            digits = digits[:-1] + "x"
    return Typed("id", digits, _layout(draw, digits, layouts))


@st.composite
def typed_mobiles(draw: st.DrawFn) -> Typed:
    digits = "1" + draw(st.sampled_from("3456789")) + draw(st.from_regex(r"[0-9]{9}", fullmatch=True))  # fmt: skip
    prefix = draw(st.sampled_from(PREFIXES))
    if prefix:
        prefix += draw(st.sampled_from(("", " ", "-", "\u3000")))
    return Typed("phone", digits, prefix + _layout(draw, digits, PHONE_LAYOUTS), prefix)


def _layout(draw: st.DrawFn, digits: str, layouts: tuple[tuple[int, ...], ...]) -> str:
    layout = draw(st.sampled_from(layouts))
    sep = draw(st.sampled_from(SEPARATORS))
    gaps = draw(st.lists(st.booleans(), min_size=len(layout), max_size=len(layout)))
    how = draw(st.sampled_from(("ascii", "wide", "mixed")))
    width = [how == "wide"] * len(digits)
    if how == "mixed":
        width = draw(st.lists(st.booleans(), min_size=len(digits), max_size=len(digits)))
    return lay_out(digits, layout, sep, gaps, width)


typed_numbers = st.one_of(typed_ids(), typed_mobiles())
chinese = st.text(alphabet=CHINESE, max_size=6)


def _digits(text: str) -> str:
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text if c.isdecimal() or c in "XxＸｘ").translate(str.maketrans("Ｘｘ", "Xx"))  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(number=typed_numbers, before=chinese, lead=st.sampled_from(LEADS), after=chinese)
def test_every_way_of_typing_a_number_is_masked_and_found(number: Typed, before: str, lead: str, after: str) -> None:  # fmt: skip
    before += lead  # right after a list number or a sentence
    # left unread, as documented: 1. then a first group of 9 to 17 digits but 11, as long as a
    # float's fraction (1.8613812345678, 1.370481900101 123)
    first = len(number.text) - len(number.text.lstrip("0123456789０１２３４５６７８９"))
    assume(not (lead[-1:] == "." and 8 < first < 18 and first != 11))
    text = before + number.text + after
    # the masker masks it, in the usual form, and leaves the text around as typed
    masked = scrub_text(text)
    assert masked == before + number.masked + after
    assert scrub_text(masked) == masked
    # the scanner finds the number as typed, and nothing once masked
    (found,) = find_unmasked(text)
    assert _digits(found).endswith(number.digits)
    assert find_unmasked(masked) == []


@settings(max_examples=200, deadline=None)
@given(numbers=st.lists(typed_numbers, min_size=2, max_size=5), glue=st.lists(st.one_of(st.text(alphabet=CHINESE.strip(), min_size=1, max_size=4), st.sampled_from(STOPS)), min_size=5, max_size=5))  # fmt: skip
def test_several_numbers_in_one_note_are_each_masked(numbers: list[Typed], glue: list[str]) -> None:
    text = "".join(g + n.text for g, n in zip(glue, numbers, strict=False))
    masked = scrub_text(text)
    assert masked == "".join(g + n.masked for g, n in zip(glue, numbers, strict=False))
    assert len(find_unmasked(text)) == len({n.text.lstrip("+＋(（") for n in numbers})  # as found
    assert find_unmasked(masked) == []


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.characters(exclude_categories=("Nd",))))
def test_text_without_digits_comes_out_as_typed(text: str) -> None:
    assert scrub_text(text) == text and find_unmasked(text) == []


def test_hostile_text_is_masked_and_not_mangled() -> None:
    phone = "138.1234.5678"
    for around in ("\ud800", "\x00", "\ufeff", "\u202e"):  # lone surrogate, NUL, BOM, RTL override
        text = f"备注{around}{phone}{around}"
        assert scrub_text(text) == f"备注{around}138****5678{around}"
    big = ("路灯不亮，" * 100_000) + "联系 ＋８６ 138 1234 5678"  # a 1 MB note
    assert scrub_text(big).endswith("联系 ＋８６ 138****5678") and len(scrub_text(big)) < len(big)
    # a megabyte of digits in one run is read in linear time (quadratic would take hours)
    for run in ("0 " * 500_000, "1.5 " * 250_000, "2023-05-01 " * 90_000):
        assert scrub_text(run) == run
    assert find_unmasked("1.5 " * 250_000) == [] and find_unmasked("2023-05-01 " * 90_000) == []


@pytest.mark.parametrize(
    ("typed", "masked"),
    [  # a number right after a full stop or a list number; invisible characters between digits
        ("联系电话13812345678。13912345678（备用）", "联系电话138****5678。139****5678（备用）"),
        ("身份证370481199001011234。13812345678", "身份证370481********1234。138****5678"),
        ("1.13812345678 2.13912345678", "1.138****5678 2.139****5678"),
        ("1．13812345678", "1．138****5678"),
        ("电话13812345678.13912345678", "电话138****5678.139****5678"),
        ("旧证370481900101123。138 1234 5678", "旧证370481********1123。138****5678"),
        ("35.370481199001011234", "35.370481********1234"),  # 18 digits: no fraction
        ("138\u200b1234\u200b5678", "138****5678"),
        ("370481\u00ad19900101\u20601234", "370481********1234"),
        ("138\n1234\r\n5678\t", "138****5678\t"),
        ("\ufeff138\u20281234\u20295678\x00", "\ufeff138****5678\x00"),
        ("138\u200c1234\u200d5678", "138****5678"),
    ],
)
def test_numbers_after_a_full_stop_and_behind_invisible_characters(typed: str, masked: str) -> None:  # fmt: skip
    assert find_unmasked(typed) != []
    assert scrub_text(typed) == masked
    assert find_unmasked(masked) == []


def test_coordinates_pass_the_masker_and_only_short_or_paired_fractions_pass_the_scanner() -> None:  # fmt: skip
    for text in ("35.16394660492", "117.2512345678", "35.163946604920001", "117.13812345678"):
        assert scrub_text(text) == text
    assert find_unmasked("117.2512345678") == [] and find_unmasked("35.1639466049") == []
    # wider: a lone fraction of 11 digits may be a phone after a list number 12.
    assert find_unmasked("12.13812345678") == ["13812345678"]
    assert find_unmasked("35.16394660492, 117.13812345678") == []
