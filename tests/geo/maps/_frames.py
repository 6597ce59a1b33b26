"""The frames the map tests draw: findings with hostile text and links, and the popups read
back from a page."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

XSS = "<img src=x onerror=alert(1)>"


def hostile_findings(n: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "lat": rng.uniform(35.165, 35.185, n),
            "lon": rng.uniform(117.235, 117.285, n),
            "date": ["2023-05-02"] * n,
            "kind": ["三堆两垛"] * n,
            "status": ["待整改"] * (n - 1) + ["已整改"],
            "rectify_by": ["2023-05-10"] * n,
            "photo": ["javascript:alert(2)"] + ["attachments/p1.jpg"] * (n - 1),
            "note": [XSS] * n,
            "domain": ["人居环境"] * n,
        }
    )


def data_array(page: str) -> list:
    """The findings' popups as the browser builds them: pre-escaped strings joined by the JS."""
    strings = re.search(r"var s = (\[.*?\]);\n", page, re.S)
    rows = re.search(r"var rows = (\[.*?\]);\n", page, re.S)
    assert strings and rows, "no clustered findings on the map"
    table = json.loads(strings.group(1))
    heads = ["日期：", "状态：", "整改期限：", "备注："]
    popups = []
    for r in json.loads(rows.group(1)):
        parts = [f"<b>{table[r[3]]}</b>"]
        parts += [heads[k] + table[r[4 + k]] for k in range(4) if r[4 + k] >= 0]
        if r[8] >= 0:
            parts.append(f'<a href="{table[r[8]]}">')
        popups.append([r[0], r[1], "<br>".join(parts)])
    return popups
