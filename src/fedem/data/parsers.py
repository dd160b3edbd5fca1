"""Parsers for the raw rating files: one per format, all returning the same frame.

Every parser returns a DataFrame with exactly the columns ``user`` (str, raw id), ``item`` (str,
raw id), ``rating`` (float64) and ``timestamp`` (float64), one row per data line in file order
(RangeIndex). Files are read with one vectorised pandas pass (all fields as strings) and then
validated column by column; only when something is wrong is the file scanned line by line, to name
the first offending line in the error.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedem.errors import DataError

COLUMNS = ("user", "item", "rating", "timestamp")

# pandas' C tokenizer ends a line at \r\n, \r or \n; line numbers must be counted the same way.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class _Format:
    """How one raw file is laid out."""

    name: str
    sep: str  # one character: the C tokenizer needs that to stay fast
    fields: tuple[str, ...]
    numeric: tuple[str, ...] = ()  # fields that must be finite numbers
    integer: tuple[str, ...] = ()  # numeric fields that must also be whole numbers
    header: tuple[str, ...] | None = None  # expected header fields, if the file has a header line
    encoding: str = "utf-8"
    multi_sep: str | None = None  # a multi-character separator, rewritten to `sep` before parsing


_ML100K = _Format("ml-100k u.data", "\t", ("user", "item", "rating", "timestamp"), numeric=("rating", "timestamp"))
_ML1M = _Format(
    "ml-1m ratings.dat",
    "\t",
    ("user", "item", "rating", "timestamp"),
    numeric=("rating", "timestamp"),
    multi_sep="::",
)
_FILMTRUST = _Format("filmtrust ratings.txt", " ", ("user", "item", "rating"), numeric=("rating",))
_LASTFM = _Format(
    "lastfm-2k user_taggedartists.dat",
    "\t",
    ("user", "item", "tag", "day", "month", "year"),
    numeric=("day", "month", "year"),
    integer=("day", "month", "year"),
    header=("userID", "artistID", "tagID", "day", "month", "year"),
    encoding="latin-1",
)
_AMAZON = _Format(
    "amazon-video ratings.dat", ",", ("user", "item", "rating", "timestamp"), numeric=("rating", "timestamp")
)


def _lines(text: str) -> list[str]:
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":  # a final line break does not start another line
        lines.pop()
    return lines


def _to_float(strings: np.ndarray) -> np.ndarray:
    """Python float() of each string (NaN where it fails): vectorised, with a loop only on failure."""
    try:
        return strings.astype(np.float64)
    except (ValueError, TypeError):
        pass
    out = np.empty(len(strings), dtype=np.float64)
    for k, s in enumerate(strings):
        try:
            out[k] = float(s)
        except (ValueError, TypeError):
            out[k] = np.nan
    return out


def _bad_line(path: Path, lineno: int, problem: str, line: str) -> DataError:
    shown = line if len(line) <= 200 else line[:200] + "..."
    return DataError(f"{path}: line {lineno}: {problem}: {shown!r}")


def _read_table(path: Path, fmt: _Format) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Read and validate `path`; return its string fields and its numeric fields as float64."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {fmt.name} file {path}: {exc}") from exc
    try:
        text = raw.decode(fmt.encoding)
    except UnicodeDecodeError as exc:
        lineno = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {lineno}: not valid {fmt.encoding} text (byte {exc.start}); "
            f"is this really the {fmt.name} file?"
        ) from exc

    first_line = 1  # the file line number of the first data row
    if fmt.header is not None:
        match = _LINE_BREAK.search(text)
        header = text[: match.start()] if match else text
        if tuple(header.split(fmt.sep)) != fmt.header:
            raise _bad_line(path, 1, f"expected the header {fmt.sep.join(fmt.header)!r}", header)
        text = text[match.end() :] if match else ""
        first_line = 2
    body = text.replace(fmt.multi_sep, fmt.sep) if fmt.multi_sep else text
    if not body.strip():
        raise DataError(f"{path}: the {fmt.name} file has no data rows (is it empty or truncated?)")

    n = len(fmt.fields)
    shown_sep = fmt.multi_sep or fmt.sep

    def scan_field_counts(cause: str) -> DataError:
        # Only reached on a structural error, so the per-line Python loop costs nothing normally.
        for i, line in enumerate(_lines(body)):
            got = len(line.split(fmt.sep))
            if got != n:
                original = _lines(text)[i]
                return _bad_line(
                    path, first_line + i, f"expected {n} fields separated by {shown_sep!r}, found {got}", original
                )
        return DataError(f"{path}: cannot parse the {fmt.name} file: {cause}")

    try:
        frame = pd.read_csv(
            io.StringIO(body),
            sep=fmt.sep,
            header=None,
            dtype=object,  # plain Python str objects: much faster to validate than pandas' str dtype
            na_filter=False,  # keep every field a string; empty fields are caught below
            quoting=csv.QUOTE_NONE,
            skip_blank_lines=False,  # so that row i is always line first_line + i
            engine="c",
        )
    except pd.errors.ParserError as exc:
        raise scan_field_counts(str(exc)) from exc
    if frame.shape[1] != n:
        raise scan_field_counts(f"found {frame.shape[1]} columns, expected {n}")
    frame.columns = list(fmt.fields)

    bad = np.zeros(len(frame), dtype=bool)
    problems: list[tuple[np.ndarray, str]] = []
    for field in fmt.fields:
        empty = frame[field].to_numpy() == ""
        problems.append((empty, f"field '{field}' is empty"))
        bad |= empty
    numbers: dict[str, np.ndarray] = {}
    for field in fmt.numeric:
        values = _to_float(frame[field].to_numpy())
        invalid = ~np.isfinite(values)
        if field in fmt.integer:
            invalid |= np.isfinite(values) & (values != np.floor(values))
        kind = "a whole number" if field in fmt.integer else "a finite number"
        problems.append((invalid, f"field '{field}' is not {kind}"))
        bad |= invalid
        numbers[field] = values
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        problem = "; ".join(msg for mask, msg in problems if mask[row])
        raise _bad_line(path, first_line + row, problem, _lines(text)[row])
    return frame, numbers


def _result(user: pd.Series, item: pd.Series, rating: np.ndarray, timestamp: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": user.to_numpy(),
            "item": item.to_numpy(),
            "rating": np.asarray(rating, dtype=np.float64),
            "timestamp": np.asarray(timestamp, dtype=np.float64),
        }
    ).astype({"user": str, "item": str})


def parse_ml100k(path: Path) -> pd.DataFrame:
    """MovieLens-100K ``u.data``: tab-separated ``user item rating unix_ts``."""
    frame, num = _read_table(path, _ML100K)
    return _result(frame["user"], frame["item"], num["rating"], num["timestamp"])


def parse_ml1m(path: Path) -> pd.DataFrame:
    """MovieLens-1M ``ratings.dat``: ``user::item::rating::unix_ts``."""
    frame, num = _read_table(path, _ML1M)
    return _result(frame["user"], frame["item"], num["rating"], num["timestamp"])


def parse_filmtrust(path: Path) -> pd.DataFrame:
    """FilmTrust ``ratings.txt``: space-separated ``user item rating``, no timestamps.

    As in the authors' code (PROTOCOL.md 2.4), an item's timestamp is the rank of its first
    appearance among the file's distinct items: the first item seen gets 0, the next new one 1, ...
    """
    frame, num = _read_table(path, _FILMTRUST)
    first_seen, _ = pd.factorize(frame["item"], sort=False)  # codes follow first appearance
    return _result(frame["user"], frame["item"], num["rating"], first_seen)


def parse_lastfm_tagged(path: Path) -> pd.DataFrame:
    """HetRec Last.fm ``user_taggedartists.dat``: one row per tag assignment.

    item = artistID, rating = 1.0 (an implicit interaction), timestamp = year*10000 + month*100 + day.
    """
    frame, num = _read_table(path, _LASTFM)
    timestamp = num["year"] * 10000 + num["month"] * 100 + num["day"]
    return _result(frame["user"], frame["item"], np.ones(len(frame)), timestamp)


def parse_amazon(path: Path) -> pd.DataFrame:
    """PFedRec's Amazon Instant Video ``ratings.dat``: ``userID,asin,rating,unix_ts`` (string ids)."""
    frame, num = _read_table(path, _AMAZON)
    return _result(frame["user"], frame["item"], num["rating"], num["timestamp"])
