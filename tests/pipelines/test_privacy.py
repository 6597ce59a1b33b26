"""Masking of ID numbers, phones and names (issue 5, section 6)."""

from __future__ import annotations

import pandas as pd
import pandas.testing as pdt
import pytest

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
    # Grouped in a way the masker does not expect: it slips through scrub_text, and the scan
    # of the outputs still catches it.
    for odd in ("13-8123-45678", "1 3 8 1 2 3 4 5 6 7 8", "370481 19900101 123X"):
        assert scrub_text(odd) == odd
        assert find_unmasked(odd) == [odd]


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
