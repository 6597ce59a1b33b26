"""Rosters: the denominators of the plan (students, check-up residents, welfare post holders,
低保 households and their members), loaded from CSV/XLSX and validated.

Formats are documented in ``pipelines/README.md`` (section "Rosters"). The same rosters give the
forms' pick-list attachments (:func:`pick_lists`), so the phones and the indicators agree on IDs.
"""

from __future__ import annotations

import io
import random
import re
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from pipelines._text import read_text
from pipelines.errors import DataError
from pipelines.records import printable

# kind -> (required columns, integer columns); optional personal columns are PERSONAL
COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "students": (("name", "label", "school", "school_label", "school_village", "class",
                  "class_label", "village"), ()),
    "residents": (("name", "label", "village", "age", "over65", "hypertension", "diabetes"),
                  ("age", "over65", "hypertension", "diabetes")),
    "welfare_posts": (("name", "label", "village", "post_type"), ()),
    "dibao_households": (("name", "label", "village", "members"), ("members",)),
    "dibao_members": (("name", "household", "village", "relation"), ()),
}  # fmt: skip
PERSONAL = ("person_name", "id_number", "phone")
# The forms' attachments: file -> (roster kind, columns), see forms/rosters/README.md
PICK_LISTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "students.csv": ("students", ("name", "label", "school", "class", "village")),
    "residents.csv": (
        "residents",
        ("name", "label", "village", "age", "over65", "hypertension", "diabetes"),
    ),
    "welfare_posts.csv": ("welfare_posts", ("name", "label", "village", "post_type")),
    "dibao_households.csv": ("dibao_households", ("name", "label", "village", "members")),
}
POST_TYPES = ("cleaning", "patrol", "greening", "elder_care")
_WEIGHTS = [pow(2, 17 - i, 11) for i in range(17)]
_ID18 = re.compile(r"^\d{17}[\dX]$")


@dataclass(frozen=True)
class Rosters:
    """All rosters, each a DataFrame with string IDs and the integer columns as ``Int64``."""

    students: pd.DataFrame
    residents: pd.DataFrame
    welfare_posts: pd.DataFrame
    dibao_households: pd.DataFrame
    dibao_members: pd.DataFrame

    def get(self, kind: str) -> pd.DataFrame:
        return getattr(self, kind)


def id_check_digit(first17: str) -> str:
    """GB 11643-1999 check character of the first 17 digits of a citizen ID number."""
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return "10X98765432"[total % 11]


def valid_id_number(value: str) -> bool:
    """True for an 18-character ID number whose check character is right (``x`` read as ``X``)."""
    text = str(value).strip().upper()
    return bool(_ID18.match(text)) and id_check_digit(text[:17]) == text[17]


def _read(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() in (".xlsx", ".xlsm"):
            frame = pd.read_excel(path, dtype=str, engine="openpyxl")
        else:  # UTF-8, or the GBK that Excel on Chinese Windows writes
            text = read_text(path, "roster")
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"{path}: roster not found") from None
    except (zipfile.BadZipFile, KeyError, EOFError, zlib.error) as e:
        raise DataError(
            f"{path}: not a readable Excel workbook ({printable(e, 120)}); save it again from "
            "Excel or WPS as .xlsx, or as a UTF-8 CSV"
        ) from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a roster file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the roster ({e.strerror or e})") from None
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot be read as a roster ({printable(e, 200)})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.fillna("").apply(lambda s: s.str.strip())


def _rows(mask: pd.Series) -> str:
    # spreadsheet rows: header is row 1
    rows = [str(i + 2) for i in mask[mask].index]
    more = f" … ({len(rows)} rows)" if len(rows) > 20 else ""
    return ", ".join(rows[:20]) + more


def validate_roster(frame: pd.DataFrame, kind: str, village_codes: Iterable[str], source: str = "roster") -> pd.DataFrame:  # fmt: skip
    """Check one roster and return it typed. Every problem is listed with its rows.

    Problems: missing columns, empty or duplicate ``name`` (the roster ID), unknown village
    codes, integer columns that are not whole numbers, and ID numbers whose GB 11643 check
    digit is wrong.
    """
    if kind not in COLUMNS:
        raise DataError(f"{source}: unknown roster kind {kind!r}; use one of {', '.join(COLUMNS)}")
    required, integers = COLUMNS[kind]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)}; a {kind} roster has "
            f"{', '.join(required)} (see pipelines/README.md, Rosters)"
        )
    frame = frame.reset_index(drop=True).astype(str)
    problems: list[str] = []
    empty = frame["name"] == ""
    if empty.any():
        problems.append(f"rows {_rows(empty)}: empty ID in column 'name'")
    dup = frame["name"].duplicated(keep=False) & ~empty
    if dup.any():
        ids = ", ".join(sorted(set(frame.loc[dup, "name"]))[:10])
        problems.append(f"rows {_rows(dup)}: duplicate ID(s) {ids} in column 'name'")
    codes = set(village_codes)
    village_cols = ["village"] + (["school_village"] if kind == "students" else [])
    for col in village_cols:
        bad = ~frame[col].isin(codes)
        if bad.any():
            vals = ", ".join(sorted(set(frame.loc[bad, col]))[:10])
            problems.append(
                f"rows {_rows(bad)}: unknown village code(s) {vals} in column '{col}' "
                "(use the 12-digit codes of the village register)"
            )
    for col in integers:
        bad = ~frame[col].str.fullmatch(r"\d+")
        if bad.any():
            problems.append(f"rows {_rows(bad)}: column '{col}' must be a whole number")
    if "id_number" in frame.columns:
        ids = frame["id_number"].str.upper()
        given = ids != ""
        bad = given & ~ids.map(valid_id_number)
        if bad.any():
            problems.append(
                f"rows {_rows(bad)}: column 'id_number' is not a valid 18-digit ID number "
                "(wrong length or GB 11643 check digit); correct it from the ID card"
            )
        frame["id_number"] = ids
    if problems:
        raise DataError(f"{source}: " + "; ".join(problems))
    for col in integers:
        frame[col] = frame[col].astype("Int64")
    return frame


def load_roster(path: Path | str, kind: str, village_codes: Iterable[str]) -> pd.DataFrame:
    """Read and validate one roster file (CSV in UTF-8, with or without BOM, or XLSX)."""
    path = Path(path)
    return validate_roster(_read(path), kind, village_codes, str(path))


def load_rosters(directory: Path | str, village_codes: Iterable[str]) -> Rosters:
    """Load every roster ``<kind>.csv`` or ``<kind>.xlsx`` from ``directory``.

    Also checks the 低保 members against their households: each member's household exists,
    and each household's ``members`` equals its number of member rows.
    """
    directory = Path(directory)
    codes = list(village_codes)
    frames: dict[str, pd.DataFrame] = {}
    for kind in COLUMNS:
        for ext in (".csv", ".xlsx"):
            path = directory / f"{kind}{ext}"
            if path.exists():
                frames[kind] = load_roster(path, kind, codes)
                break
        else:
            raise DataError(f"{directory}: no {kind}.csv or {kind}.xlsx roster")
    check_dibao_members(frames["dibao_households"], frames["dibao_members"], str(directory))
    return Rosters(**frames)


def check_dibao_members(households: pd.DataFrame, members: pd.DataFrame, source: str = "rosters") -> None:  # fmt: skip
    """Members must belong to a listed household, and member counts must match."""
    problems: list[str] = []
    orphan = ~members["household"].isin(households["name"])
    if orphan.any():
        problems.append(f"dibao_members rows {_rows(orphan)}: household not in dibao_households")
    counts = members.groupby("household").size()
    found = households["name"].map(counts).fillna(0).astype(int)
    wrong = found != households["members"].astype(int)
    if wrong.any():
        problems.append(
            f"dibao_households rows {_rows(wrong)}: 'members' differs from the number of "
            "member rows in dibao_members"
        )
    if problems:
        raise DataError(f"{source}: " + "; ".join(problems))


def pick_lists(rosters: Rosters) -> dict[str, pd.DataFrame]:
    """The forms' attachments (file name -> table) derived from the rosters.

    Only the pick-list columns: no personal name, ID number or phone ever reaches a phone.
    """
    out = {f: rosters.get(kind)[list(cols)].copy() for f, (kind, cols) in PICK_LISTS.items()}
    st = rosters.students
    out["schools.csv"] = (
        st[["school", "school_label", "school_village"]].drop_duplicates("school")
        .set_axis(["name", "label", "village"], axis=1).reset_index(drop=True)
    )  # fmt: skip
    out["classes.csv"] = (
        st[["class", "class_label", "school"]].drop_duplicates("class")
        .set_axis(["name", "label", "school"], axis=1).reset_index(drop=True)
    )  # fmt: skip
    return out


def write_pick_lists(rosters: Rosters, directory: Path | str) -> list[Path]:
    """Write the attachments as UTF-8 CSV without BOM (what ODK Collect's pulldata expects)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, frame in pick_lists(rosters).items():
        path = directory / name
        frame.to_csv(path, index=False, encoding="utf-8", lineterminator="\n")
        paths.append(path)
    return paths


# ---- synthetic demo rosters ----------------------------------------------------------------

# About 4,000 students and 9,000 check-up residents (65+ and chronic patients) for 56 villages.
DEMO_SIZES = {"students_per_village": 72, "residents_per_village": 160, "welfare_posts": 640,
              "dibao_households": 858, "dibao_people": 1518}  # fmt: skip
_CLASS_SIZE = 45  # a plausible primary class; bigger school-grades are split into classes
_SURNAMES = "赵钱孙李周吴郑王冯陈"


def _fake_id(rng: random.Random, birth: date) -> str:
    # Region 370481 (滕州市); the check digit is right so the demo exercises validation and
    # masking. Names say 示例 (example), so nobody mistakes a demo row for a person.
    first17 = f"370481{birth:%Y%m%d}{rng.randrange(900, 1000)}"
    return first17 + id_check_digit(first17)


def demo_rosters(village_codes: Iterable[str], seed: int = 0, sizes: dict[str, int] | None = None) -> Rosters:  # fmt: skip
    """Synthetic rosters of obviously fake people (``示例学生0001`` …), the same for a seed.

    Sizes default to :data:`DEMO_SIZES`: the plan's 640 welfare posts and 858 低保 households
    with 1,518 people, so the demo's denominators match the plan's targets.
    """
    size = {**DEMO_SIZES, **(sizes or {})}
    codes = list(village_codes)
    rng = random.Random(seed)  # noqa: S311 (deterministic demo data, not secrets)
    today = date(2000, 1, 1)

    def village(i: int) -> str:
        return codes[i % len(codes)]

    schools = [
        (f"s{k + 1:02d}", f"示例第{k + 1}小学", codes[(k * 7) % len(codes)])
        for k in range(max(1, len(codes) // 7))
    ]
    students = []
    n_students = size["students_per_village"] * len(codes)
    per_grade = -(-n_students // (len(schools) * 6))  # students of one grade of one school
    classes = max(1, -(-per_grade // _CLASS_SIZE))
    for i in range(n_students):
        sid, slabel, svillage = schools[i % len(schools)]
        grade = 1 + (i // len(schools)) % 6
        number = 1 + (i // (len(schools) * 6)) % classes
        students.append(
            (
                f"stu{i + 1:05d}",
                f"示例学生{i + 1:05d}（{grade}年级{number}班）",
                sid,
                slabel,
                svillage,
                f"{sid}_g{grade}c{number}",
                f"{grade}年级{number}班",
                village(i),
            )
        )
    residents = []
    for i in range(size["residents_per_village"] * len(codes)):
        age = rng.randrange(45, 95)
        hyper, diab = int(rng.random() < 0.3), int(rng.random() < 0.15)
        if age < 65 and not (hyper or diab):
            hyper = 1
        residents.append(
            (
                f"res{i + 1:05d}",
                f"示例居民{i + 1:05d}（{age}岁）",
                village(i),
                str(age),
                str(int(age >= 65)),
                str(hyper),
                str(diab),
            )
        )
    posts = []
    for i in range(size["welfare_posts"]):
        kind = POST_TYPES[i % len(POST_TYPES)]
        birth = today - timedelta(days=rng.randrange(0, 15000)) - timedelta(days=365 * 20)
        posts.append(
            (
                f"wp{i + 1:04d}",
                f"示例岗位人员{i + 1:04d}",
                village(i),
                kind,
                f"{_SURNAMES[i % 10]}示例{i + 1}",
                _fake_id(rng, birth),
                f"1990000{i:04d}",
            )
        )
    n_house, n_people = size["dibao_households"], size["dibao_people"]
    members_per = [1] * n_house
    for _ in range(n_people - n_house):  # spread the extra people deterministically
        members_per[rng.randrange(n_house)] += 1
    households, members = [], []
    for i, m in enumerate(members_per):
        hid = f"db{i + 1:04d}"
        households.append((hid, f"示例低保户{i + 1:04d}（{m}人）", village(i), str(m)))
        for j in range(m):
            birth = today - timedelta(days=rng.randrange(0, 25000))
            members.append(
                (
                    f"{hid}m{j + 1}",
                    hid,
                    village(i),
                    "户主" if j == 0 else "家庭成员",
                    f"{_SURNAMES[(i + j) % 10]}示例{i + 1}-{j + 1}",
                    _fake_id(rng, birth),
                )
            )
    frames = {
        "students": pd.DataFrame(students, columns=COLUMNS["students"][0]),
        "residents": pd.DataFrame(residents, columns=COLUMNS["residents"][0]),
        "welfare_posts": pd.DataFrame(
            posts, columns=[*COLUMNS["welfare_posts"][0], "person_name", "id_number", "phone"]
        ),
        "dibao_households": pd.DataFrame(households, columns=COLUMNS["dibao_households"][0]),
        "dibao_members": pd.DataFrame(
            members, columns=[*COLUMNS["dibao_members"][0], "person_name", "id_number"]
        ),
    }
    typed = {k: validate_roster(v, k, codes, f"demo {k}") for k, v in frames.items()}
    check_dibao_members(typed["dibao_households"], typed["dibao_members"], "demo rosters")
    return Rosters(**typed)


def write_rosters(rosters: Rosters, directory: Path | str) -> list[Path]:
    """Write every roster as ``<kind>.csv`` (UTF-8 with BOM, so Excel shows the Chinese)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in COLUMNS:
        path = directory / f"{kind}.csv"
        rosters.get(kind).to_csv(path, index=False, encoding="utf-8-sig")
        paths.append(path)
    return paths
