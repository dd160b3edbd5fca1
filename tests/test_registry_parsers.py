"""The dataset registry and the raw-file parsers, checked against the offline mirror and tiny files."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedem.data import parsers
from fedem.data.fetch import sha256_of, verify
from fedem.data.registry import DATASETS, DatasetSpec, get_spec
from fedem.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("FEDEM_DATA_MIRROR") or REPO_ROOT.parent / "shared" / "datasets")
EXPECTED_KEYS = {"ml-100k", "ml-1m", "filmtrust", "lastfm-2k", "amazon-video"}


def mirror_file(key: str) -> Path:
    """The mirror copy of `key`'s raw file, or skip the test saying why it is absent."""
    if not MIRROR.is_dir():
        pytest.skip(f"offline mirror {MIRROR} is absent (set FEDEM_DATA_MIRROR to run this test)")
    path = MIRROR / key / DATASETS[key].filename
    if not path.is_file():
        pytest.skip(f"{key}: the mirror {MIRROR} has no {key}/{DATASETS[key].filename}")
    return path


def check_frame(df: pd.DataFrame) -> None:
    assert list(df.columns) == ["user", "item", "rating", "timestamp"]
    assert isinstance(df.index, pd.RangeIndex) and df.index.start == 0
    assert pd.api.types.is_string_dtype(df["user"]) and pd.api.types.is_string_dtype(df["item"])
    assert df["rating"].dtype == np.float64 and df["timestamp"].dtype == np.float64


# ---------------------------------------------------------------------------------------- registry


def test_registry_keys_and_fields() -> None:
    assert set(DATASETS) == EXPECTED_KEYS
    for key, spec in DATASETS.items():
        assert spec.key == key
        assert spec.sha256 or spec.git_blob
        assert spec.url.startswith("https://")
        assert callable(spec.parser)
        assert spec.citation and "\n" not in spec.citation
        if spec.member is not None:
            assert Path(spec.member).name == spec.filename
    assert DATASETS["ml-1m"].sha256 is None
    assert DATASETS["ml-1m"].git_blob == "77a7c4b150f588c23bb9e1f068aa996c0b413695"
    assert DATASETS["amazon-video"].member is None and DATASETS["amazon-video"].archive_sha256 is None


def test_spec_needs_a_raw_file_checksum() -> None:
    with pytest.raises(ValueError, match="sha256 or a git_blob"):
        DatasetSpec("x", "https://example.org/x", None, None, "x.dat", None, parsers.parse_ml100k, "c")


def test_get_spec_unknown_key_lists_valid_keys() -> None:
    assert get_spec("ml-100k") is DATASETS["ml-100k"]
    with pytest.raises(DataError) as info:
        get_spec("ml-10m")
    message = str(info.value)
    assert "ml-10m" in message
    for key in EXPECTED_KEYS:
        assert key in message


@pytest.mark.parametrize("key", sorted(EXPECTED_KEYS))
def test_mirror_file_verifies(key: str) -> None:
    verify(mirror_file(key), DATASETS[key])


def test_mirror_filmtrust_archive_matches_spec() -> None:
    """The one upstream archive in the mirror: its sha256 and its member are the spec's."""
    archive = mirror_file("filmtrust").with_name("filmtrust.zip")
    spec = DATASETS["filmtrust"]
    assert sha256_of(archive) == spec.archive_sha256
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["ratings.txt", "readme.txt", "trust.txt"]
        assert z.read(spec.member) == mirror_file("filmtrust").read_bytes()


# ------------------------------------------------------------------------- parsers on the mirror


@pytest.mark.parametrize(
    "key, rows, users, items",
    [
        ("ml-100k", 100_000, 943, 1_682),
        ("filmtrust", 35_497, 1_508, 2_071),
        ("lastfm-2k", 186_479, 1_892, 12_523),
        ("amazon-video", 63_836, 8_072, 11_830),
    ],
)
def test_mirror_counts(key: str, rows: int, users: int, items: int) -> None:
    df = DATASETS[key].parser(mirror_file(key))
    check_frame(df)
    assert (len(df), df["user"].nunique(), df["item"].nunique()) == (rows, users, items)
    assert np.isfinite(df[["rating", "timestamp"]].to_numpy()).all()


def test_mirror_ml100k_content() -> None:
    df = parsers.parse_ml100k(mirror_file("ml-100k"))
    assert df.iloc[0].tolist() == ["196", "242", 3.0, 881250949.0]
    assert df["rating"].value_counts().sort_index().tolist() == [6110, 11370, 27145, 34174, 21201]


def test_mirror_filmtrust_content() -> None:
    df = parsers.parse_filmtrust(mirror_file("filmtrust"))
    assert len(df.drop_duplicates(["user", "item"])) == 35_494
    # The first-appearance timestamps are exactly 0..n_items-1, in order of first appearance.
    firsts = df.drop_duplicates("item")["timestamp"].to_numpy()
    assert np.array_equal(firsts, np.arange(2_071))


def test_mirror_lastfm_content() -> None:
    df = parsers.parse_lastfm_tagged(mirror_file("lastfm-2k"))
    assert df.iloc[0].tolist() == ["2", "52", 1.0, 20090401.0]
    assert (df["rating"] == 1.0).all()


def test_mirror_amazon_content() -> None:
    df = parsers.parse_amazon(mirror_file("amazon-video"))
    assert df.iloc[0].tolist() == ["AGZ8SM1BGK3CK", "B000GFDAUG", 5.0, 1198195200.0]
    assert df["rating"].value_counts().sort_index().tolist() == [4108, 3835, 7918, 14259, 33716]
    assert not df.duplicated(["user", "item"]).any()


# ------------------------------------------------------------------------------ parsers, tiny files


def write(tmp_path: Path, text: str, name: str = "ratings.dat", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_filmtrust_first_appearance_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path, "1 10 3\n1 20 4\n2 20 1\n2 30 2.5\n3 10 0.5\n3 40 4\n")
    df = parsers.parse_filmtrust(path)
    check_frame(df)
    assert df["item"].tolist() == ["10", "20", "20", "30", "10", "40"]
    assert df["timestamp"].tolist() == [0.0, 1.0, 1.0, 2.0, 0.0, 3.0]
    assert df["rating"].tolist() == [3.0, 4.0, 1.0, 2.5, 0.5, 4.0]


def test_ml1m_double_colon(tmp_path: Path) -> None:
    path = write(tmp_path, "1::1193::5::978300760\n1::661::3::978302109\n6040::1097::4::956715648\n")
    df = parsers.parse_ml1m(path)
    check_frame(df)
    assert df.values.tolist() == [
        ["1", "1193", 5.0, 978300760.0],
        ["1", "661", 3.0, 978302109.0],
        ["6040", "1097", 4.0, 956715648.0],
    ]


def test_ids_stay_strings(tmp_path: Path) -> None:
    """Raw ids are kept verbatim: no int conversion that would merge '007' with '7'."""
    df = parsers.parse_ml100k(write(tmp_path, "007\t7\t1\t5\n7\t007\t2\t6\n"))
    assert df["user"].tolist() == ["007", "7"] and df["item"].tolist() == ["7", "007"]


# (parser, LF text, expected rows) for every format; each is also checked as CRLF and without final newline.
FORMATS = {
    "ml-100k": (
        parsers.parse_ml100k,
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
        [["196", "242", 3.0, 881250949.0], ["186", "302", 3.0, 891717742.0]],
    ),
    "ml-1m": (
        parsers.parse_ml1m,
        "1::1193::5::978300760\n2::661::3::978302109\n",
        [["1", "1193", 5.0, 978300760.0], ["2", "661", 3.0, 978302109.0]],
    ),
    "filmtrust": (parsers.parse_filmtrust, "1 1 2\n1 2 4\n", [["1", "1", 2.0, 0.0], ["1", "2", 4.0, 1.0]]),
    "lastfm-2k": (
        parsers.parse_lastfm_tagged,
        "userID\tartistID\ttagID\tday\tmonth\tyear\n2\t52\t13\t1\t4\t2009\n2\t63\t14\t15\t12\t2008\n",
        [["2", "52", 1.0, 20090401.0], ["2", "63", 1.0, 20081215.0]],
    ),
    "amazon-video": (
        parsers.parse_amazon,
        "AGZ8SM1BGK3CK,B000GFDAUG,5.0,1198195200\nA9,B0,2.0,1281052800\n",
        [["AGZ8SM1BGK3CK", "B000GFDAUG", 5.0, 1198195200.0], ["A9", "B0", 2.0, 1281052800.0]],
    ),
}


@pytest.mark.parametrize("variant", ["lf", "crlf", "lf-no-final-newline", "crlf-no-final-newline"])
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_line_endings(tmp_path: Path, fmt: str, variant: str) -> None:
    parse, text, expected = FORMATS[fmt]
    if variant.startswith("crlf"):
        text = text.replace("\n", "\r\n")
    if variant.endswith("no-final-newline"):
        text = text.rstrip("\r\n")
    df = parse(write(tmp_path, text))
    check_frame(df)
    assert df.values.tolist() == expected


def test_lastfm_latin1(tmp_path: Path) -> None:
    """The HetRec files are latin-1: a non-UTF-8 byte must not break parsing."""
    text = "userID\tartistID\ttagID\tday\tmonth\tyear\r\n2\t\xe952\t13\t1\t4\t2009\r\n"
    df = parsers.parse_lastfm_tagged(write(tmp_path, text, encoding="latin-1"))
    assert df["item"].tolist() == ["\xe952"]


# --------------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    "fmt, text, lineno, shown",
    [
        ("ml-100k", "1\t2\t3\t4\n1\t2\t3\n1\t2\t3\t4\n", 2, "1\t2\t3"),  # too few fields
        ("ml-100k", "1\t2\t3\t4\n1\t2\t3\t4\n1\t2\t3\t4\t5\n", 3, "1\t2\t3\t4\t5"),  # too many
        ("ml-100k", "1\t2\t3\t4\t5\n1\t2\t3\t4\n", 1, "1\t2\t3\t4\t5"),  # too many, first line
        ("ml-100k", "1\t2\t3\t4\n1\t2\tx\t4\n", 2, "1\t2\tx\t4"),  # non-numeric rating
        ("ml-100k", "1\t2\t3\t4\n1\t2\t3\t4\n1\t2\t3\tyesterday\r\n", 3, "1\t2\t3\tyesterday"),
        ("ml-100k", "1\t2\t3\t4\n\n1\t2\t3\t4\n", 2, ""),  # blank line inside the data
        ("ml-100k", "1\t2\t3\t4\n1\t2\tnan\t4\n", 2, "1\t2\tnan\t4"),  # non-finite rating
        ("ml-1m", "1::2::3::4\n1::2::3\n", 2, "1::2::3"),
        ("ml-1m", "1::2::3::4\n1::2::3::4::5\n", 2, "1::2::3::4::5"),
        ("ml-1m", "1::2::3::4\n1:2::3::4\n", 2, "1:2::3::4"),
        ("filmtrust", "1 1 2\n1 2 four\n", 2, "1 2 four"),
        ("filmtrust", "1 1 2\n1  2 4\n", 2, "1  2 4"),  # double space = an empty field
        ("lastfm-2k", "userID\tartistID\ttagID\tday\tmonth\tyear\n2\t52\t13\t1\t4\n", 2, "2\t52\t13\t1\t4"),
        (
            "lastfm-2k",
            "userID\tartistID\ttagID\tday\tmonth\tyear\n2\t52\t13\t1.5\t4\t2009\n",
            2,
            "2\t52\t13\t1.5\t4\t2009",
        ),
        ("lastfm-2k", "user\tartist\n2\t52\t13\t1\t4\t2009\n", 1, "user\tartist"),  # wrong header
        ("amazon-video", "A,B,5.0,1\r\nA,B,,2\r\n", 2, "A,B,,2"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, fmt: str, text: str, lineno: int, shown: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataError) as info:
        FORMATS[fmt][0](path)
    message = str(info.value)
    assert str(path) in message
    assert f"line {lineno}:" in message
    assert repr(shown) in message


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("text", ["", "\n", "\r\n\r\n"])
def test_empty_file(tmp_path: Path, fmt: str, text: str) -> None:
    if fmt == "lastfm-2k":
        text = "userID\tartistID\ttagID\tday\tmonth\tyear" + text
    path = write(tmp_path, text)
    with pytest.raises(DataError, match="no data rows|line"):
        FORMATS[fmt][0](path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        parsers.parse_ml100k(tmp_path / "nope.data")


def test_bad_encoding_names_line(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_bytes(b"1\t2\t3\t4\n1\t\xff\t3\t4\n")
    with pytest.raises(DataError, match=r"line 2: not valid utf-8"):
        parsers.parse_ml100k(path)
