"""Masking of ID numbers, phones and names (issue 5, section 6)."""

from __future__ import annotations

import pandas as pd
import pandas.testing as pdt

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
