"""MovieLens loader: ratings + movies files (three layouts) -> canonical tables.

ml-100k    u.data  user \\t item \\t rating \\t unix seconds;  u.item  movie id|title|release date|video
           release date|IMDb URL|one 0/1 flag per genre (latin-1); genre names from u.genre if present
ml-1m      ratings.dat  UserID::MovieID::Rating::Timestamp;  movies.dat  MovieID::Title::Genres (latin-1)
           (ml-10m has the same files)
ml-latest  ratings.csv  userId,movieId,rating,timestamp;  movies.csv  movieId,title,genres (UTF-8,
           quoted);  tags.csv  userId,movieId,tag,timestamp (optional). Also ml-latest-small, ml-20m, ml-25m.

Every rating at or above `min_rating` is a positive event and its own one-candidate impression.
Ratings are read by pyarrow with typed columns; only when that fails is the file split line by line
to name the bad line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from llmrec.data import checks
from llmrec.data.contract import ITEM_COLUMNS, Dataset, SourceInfo
from llmrec.errors import DataError

LAYOUTS: dict[str, list[str]] = {
    "ml-100k": ["u.data", "u.item"],
    "ml-1m": ["ratings.dat", "movies.dat"],
    "ml-latest": ["ratings.csv", "movies.csv"],
}
GENRES_100K = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
NO_GENRES = "(no genres listed)"
MAX_TAGS = 10
RATING_MIN, RATING_MAX = 0.5, 5.0
_RATINGS = {
    "ml-100k": ("u.data", "\t", ["user id", "item id", "rating", "timestamp"], "latin-1"),
    "ml-1m": ("ratings.dat", "::", ["UserID", "MovieID", "Rating", "Timestamp"], "latin-1"),
    "ml-latest": ("ratings.csv", ",", ["userId", "movieId", "rating", "timestamp"], "utf-8"),
}
_EXPECTED = "u.data + u.item (ml-100k), ratings.dat + movies.dat (ml-1m), ratings.csv + movies.csv (ml-latest, ml-25m)"
_UNIT_FIX = "check the unit of the timestamps (seconds vs milliseconds)"
_LAST_SECOND = 253_402_300_799  # 9999-12-31 23:59:59 UTC, the last time pandas can print
_YEAR = r"^(?P<title>.*?\S)\s*\((?P<year>\d{4})\)$"
_SEP_NAMES = {"\t": "tab", "|": "'|'", "::": "'::'", ",": "comma"}
_FORMATS = {
    "u.data": "tab-separated without a header: user id, item id, rating, unix seconds",
    "u.item": "latin-1, '|'-separated without a header: "
    "movie id|title|release date|video release date|IMDb URL|0/1 per genre",
    "u.genre": "latin-1 'name|index' lines, one per genre flag of u.item",
    "ratings.dat": "UserID::MovieID::Rating::Timestamp lines without a header",
    "movies.dat": "latin-1 MovieID::Title::Genres lines without a header (genres '|'-separated)",
    "ratings.csv": "UTF-8 CSV with the header userId,movieId,rating,timestamp",
    "movies.csv": "UTF-8 CSV with the header movieId,title,genres (titles with commas in quotes)",
    "tags.csv": "UTF-8 CSV with the header userId,movieId,tag,timestamp",
}


@dataclass
class _Table:
    """Rows of one source file, the source line (1-based) of each row, how the file should look, and the
    guard its row checks go through (policy data.bad_rows: stop at the first bad row, or quarantine it)."""

    path: Path
    frame: pd.DataFrame
    guard: checks.RowGuard

    @property
    def lines(self) -> np.ndarray:
        return self.guard.lines

    @property
    def fix(self) -> str:
        return _fix(self.path)

    def number(self, column: str) -> pd.Series:
        """A numeric column; text is parsed by the shared check, which names the line."""
        values = self.frame[column]
        if values.dtype != object:
            return values
        return self.guard.number(values, column, fix=self.fix)

    def cut(self, *series: pd.Series) -> list[pd.Series]:
        """Leave out the rows the guard rejected: from the frame, and from `series` (aligned with it)."""
        self.frame, *rest = self.guard.apply(self.frame, *series)
        return rest


def detect_layout(folder: Path) -> str | None:
    """The MovieLens layout whose required files are all in `folder`, or None."""
    found = [name for name, files in LAYOUTS.items() if all((Path(folder) / f).is_file() for f in files)]
    if len(found) > 1:
        listing = "; ".join(f"{name}: {' + '.join(LAYOUTS[name])}" for name in found)
        raise DataError.at(
            f"the folder holds files of several MovieLens layouts ({listing})", folder, fix="keep one layout per folder"
        )
    return found[0] if found else None


def read_movielens(
    folder: str | Path, *, min_rating: float = 0.0, prefix: str = "", quarantine: checks.Quarantine | None = None
) -> Dataset:
    """Read one MovieLens folder; ratings below `min_rating` are dropped, the rest are positive events.

    Bad rows stop the read at the first one, or, with a `quarantine` of policy "quarantine", are recorded
    there and left out (a rating of a movie left out is then a bad row too)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError.at("not a folder", folder, fix="pass the folder that holds the MovieLens files")
    layout = detect_layout(folder)
    if layout is None:
        for name, files in LAYOUTS.items():
            if any((folder / f).is_file() for f in files):
                checks.require_files(folder, files, name)
        raise DataError.at("no MovieLens files here", folder, fix=f"expected {_EXPECTED}")
    q = quarantine or checks.Quarantine()
    items, item_ids = _MOVIE_READERS[layout](folder, q)
    ratings_file, sep, names, encoding = _RATINGS[layout]
    ratings = _read_numeric(folder / ratings_file, sep, names, header=layout == "ml-latest", encoding=encoding, q=q)
    events = _events(ratings, item_ids, LAYOUTS[layout][1], min_rating)
    impressions, interactions = checks.implicit_impressions(events, prefix)
    source = SourceInfo(format=layout, explicit_history=False, logged_negatives=False)
    return Dataset(items, impressions, interactions, source)


def _movies_100k(folder: Path, q: checks.Quarantine) -> tuple[pd.DataFrame, pd.Series]:
    genres = _genre_names(folder / "u.genre")
    names = ["movie id", "title", "release date", "video release date", "IMDb URL", *genres]
    movies = _read_fields(folder / "u.item", "|", names, _latin1(folder / "u.item"), q=q)
    flags = movies.frame[genres].apply(lambda s: s.str.strip())
    for genre in genres:
        _fail(~flags[genre].isin(["0", "1"]), "genre flag is not 0 or 1", movies, genre)
    (flags,) = movies.cut(flags)
    onehot = (flags == "1").to_numpy()
    genre_lists = pd.Series([[g for g, on in zip(genres, row) if on] for row in onehot], dtype=object)
    release_year = movies.frame["release date"].str.extract(r"(\d{4})\s*$", expand=False)
    return _items(movies, "movie id", "title", genre_lists, release_year, None)


def _genre_names(path: Path) -> list[str]:
    if not path.is_file():
        return GENRES_100K
    table = _read_fields(path, "|", ["genre", "index"], _latin1(path))
    checks.check_not_blank(table.frame["genre"], table.path, table.lines, "genre")
    index = _whole(table, "index")
    checks.check_unique(index.astype(str), table.path, table.lines, "index")
    return list(table.frame["genre"].str.strip().iloc[np.argsort(index.to_numpy(), kind="stable")])


def _movies_1m(folder: Path, q: checks.Quarantine) -> tuple[pd.DataFrame, pd.Series]:
    movies = _read_fields(folder / "movies.dat", "::", ["MovieID", "Title", "Genres"], _latin1(folder / "movies.dat"), q=q)
    return _items(movies, "MovieID", "Title", _split_genres(movies.frame["Genres"]), None, None)


def _movies_latest(folder: Path, q: checks.Quarantine) -> tuple[pd.DataFrame, pd.Series]:
    movies = _read_quoted(folder / "movies.csv", ["movieId", "title", "genres"], q)
    tags = _tag_text(folder / "tags.csv", q) if (folder / "tags.csv").is_file() else None
    return _items(movies, "movieId", "title", _split_genres(movies.frame["genres"]), None, tags)


_MOVIE_READERS = {"ml-100k": _movies_100k, "ml-1m": _movies_1m, "ml-latest": _movies_latest}


def _split_genres(genres: pd.Series) -> pd.Series:
    return genres.map(lambda g: [x.strip() for x in str(g).split("|") if x.strip() and x.strip() != NO_GENRES])


def _tag_text(path: Path, q: checks.Quarantine) -> pd.Series:
    """movie id -> 'Tags: a, b': distinct tags (lower case), most frequent first, at most MAX_TAGS."""
    table = _read_quoted(path, ["userId", "movieId", "tag", "timestamp"], q)
    movie = _whole(table, "movieId")
    (movie,) = table.cut(movie)
    tags = pd.DataFrame({"movie": movie, "tag": table.frame["tag"].str.strip().str.lower()})
    counts = tags[tags["tag"] != ""].value_counts(["movie", "tag"]).reset_index(name="n")
    counts = counts.sort_values(["movie", "n", "tag"], ascending=[True, False, True])
    counts = counts.groupby("movie").head(MAX_TAGS)
    return "Tags: " + counts.groupby("movie")["tag"].agg(", ".join)


def _items(
    movies: _Table, id_col: str, title_col: str, genres: pd.Series, year: pd.Series | None, tags: pd.Series | None
) -> tuple[pd.DataFrame, pd.Series]:
    """Canonical items and their numeric ids, after the row checks."""
    ids = _whole(movies, id_col)
    movies.guard.unique(ids.astype(str), id_col)
    movies.guard.not_blank(movies.frame[title_col], title_col)
    ids, genres, *more = movies.cut(ids, genres, *([year] if year is not None else []))
    year = more[0] if more else None
    full = movies.frame[title_col].str.strip()
    parsed = full.str.extract(_YEAR)
    year = parsed["year"] if year is None else parsed["year"].fillna(year)
    parts = [year.fillna(""), genres.str.join(", ")]
    if tags is not None:
        parts.append(ids.map(tags).fillna(""))
    text = pd.Series("", index=full.index, dtype=object)
    for part in parts:
        text = text + np.where((text != "") & (part != ""), ". ", "") + part
    items = pd.DataFrame(
        {
            "item_id": ids.astype(str),
            "title": parsed["title"].fillna(full),
            "text": text,
            "category": genres.str[0].fillna(""),
            "subcategory": genres.str[1].fillna(""),
        }
    )
    return items[ITEM_COLUMNS], ids


def _events(ratings: _Table, item_ids: pd.Series, movies_file: str, min_rating: float) -> pd.DataFrame:
    """Checked (user_id, item_id, timestamp) events of the ratings at or above `min_rating`."""
    path, guard = ratings.path, ratings.guard
    user_col, movie_col, rating_col, time_col = ratings.frame.columns
    if not len(ratings.frame):
        raise DataError.at("no ratings in the file", path, fix=ratings.fix)
    users, movies, seconds = _whole(ratings, user_col), _whole(ratings, movie_col), _whole(ratings, time_col)
    rating = ratings.number(rating_col)
    outside = ~((rating >= RATING_MIN) & (rating <= RATING_MAX))
    _fail(outside, f"rating is outside {RATING_MIN}..{RATING_MAX:g}", ratings, rating_col, "ratings are 0.5 to 5 stars")
    _fail(seconds > _LAST_SECOND, "timestamp is in the future (after year 9999)", ratings, time_col, _UNIT_FIX)
    stamps = pd.Series(seconds.clip(upper=_LAST_SECOND).to_numpy().astype("datetime64[s]")).dt.tz_localize("UTC")
    guard.time_range(stamps, time_col)
    if not movies.isin(item_ids).all():
        guard.known(movies.astype(str), item_ids.astype(str), movie_col, movies_file)
    users, movies, rating, stamps = ratings.cut(users, movies, rating, stamps)
    if not len(users):
        raise DataError.at("no rating is left: every row was bad", path, fix=ratings.fix)
    lines = ratings.lines
    user_codes, movie_codes = pd.factorize(users)[0], pd.factorize(movies)[0]
    key = pd.Series(user_codes.astype(np.int64) * (int(movie_codes.max()) + 1) + movie_codes)
    dup = key.duplicated().to_numpy()
    if dup.any() and guard.strict:
        j = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(key.to_numpy() == key.iat[j])[0])
        raise DataError.at(
            f"user {users.iat[j]} rated movie {movies.iat[j]} twice (lines {lines[first]} and {lines[j]}); "
            f"{int(dup.sum()):,} duplicate rating(s) in all",
            path,
            line=int(lines[j]),
            column=movie_col,
            fix="keep one rating per user and movie",
        )
    guard.reject(dup, "the user rated this movie before (an earlier row)", movie_col, values=movies.astype(str))
    users, movies, rating, stamps = ratings.cut(users, movies, rating, stamps)
    keep = (rating >= min_rating).to_numpy()
    if not keep.any():
        raise DataError.at(f"no rating is at or above min_rating {min_rating:g}", path, fix="lower data.min_rating")
    return pd.DataFrame(
        {
            "user_id": _as_str(users.to_numpy()[keep]),
            "item_id": _as_str(movies.to_numpy()[keep]),
            "timestamp": stamps[keep].dt.as_unit("ns").reset_index(drop=True),
        }
    )


def _as_str(values: np.ndarray) -> np.ndarray:
    codes, uniques = pd.factorize(values)
    return uniques.astype(str).astype(object)[codes]


def _whole(table: _Table, column: str) -> pd.Series:
    """Ids and unix seconds: whole numbers >= 0 (rows quarantined as bad read as -1)."""
    values = table.number(column)
    bad = values < 0 if values.dtype.kind in "iu" else (values < 0) | (values % 1 != 0)
    _fail(bad, "is not a whole number >= 0", table, column)
    return values.where(table.guard.keep, -1).astype(np.int64) if values.dtype.kind == "f" else values.astype(np.int64)


def _fail(mask: pd.Series, what: str, table: _Table, column: str, fix: str | None = None) -> None:
    """The guard's reject, quoting the bad cell (its text is only built when a row is bad)."""
    mask = np.asarray(mask, dtype=bool) & table.guard.keep
    if mask.any():
        table.guard.reject(mask, what, column, fix or table.fix, values=table.frame[column].astype(str))


def _read_numeric(path: Path, sep: str, names: list[str], *, header: bool, encoding: str, q: checks.Quarantine) -> _Table:
    """A ratings file: one typed pyarrow read; when that fails, split per line to name the bad one."""
    checks.require_not_empty(path)
    if header:
        _check_header(path, names)
    types = {n: pa.float64() if n.lower() == "rating" else pa.int64() for n in names}
    data = path.read_bytes() if len(sep) > 1 else b""
    if len(sep) == 1 or b"\t" not in data:
        source = path if len(sep) == 1 else pa.BufferReader(data.replace(sep.encode(), b"\t"))
        try:
            table = pacsv.read_csv(
                source,
                read_options=pacsv.ReadOptions(column_names=names, skip_rows=int(header)),
                parse_options=pacsv.ParseOptions(delimiter=sep if len(sep) == 1 else "\t", ignore_empty_lines=False),
                convert_options=pacsv.ConvertOptions(column_types=types),
            )
            if not any(column.null_count for column in table.columns):  # a blank line is a row of nulls
                return _Table(path, table.to_pandas(), q.guard(path, np.arange(table.num_rows) + 1 + int(header)))
        except pa.ArrowException:
            pass
    return _read_fields(path, sep, names, encoding, header=header, types=types, q=q)


def _read_fields(
    path: Path, sep: str, names: list[str], encoding: str, *, header: bool = False, types: dict | None = None,
    q: checks.Quarantine | None = None,
) -> _Table:
    """Split every line of an unquoted file on `sep`; blank lines are skipped, field counts checked (a line
    ending in empty fields, e.g. a trailing tab, is read without them)."""
    checks.require_not_empty(path)
    try:
        text = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=["line"], encoding=encoding),
            parse_options=pacsv.ParseOptions(delimiter="\x1f", quote_char=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types={"line": pa.string()}),
        ).column("line")
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc):
            _decode(path, encoding)
        raise DataError.at(f"cannot read the file ({exc})", path, fix=_fix(path)) from exc
    keep = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0).to_numpy(zero_copy_only=False)
    keep[: int(header)] = False
    lines = np.flatnonzero(keep) + 1
    parts = pc.split_pattern(text.filter(pa.array(keep)), sep)
    counts = pc.list_value_length(parts).to_numpy(zero_copy_only=False).copy()
    for i in np.flatnonzero(counts > len(names)):  # trailing empty fields: ignored
        if not "".join(parts[int(i)].as_py()[len(names):]).strip():
            counts[i] = len(names)
    guard = (q or checks.Quarantine()).guard(path, lines)
    _guard_counts(guard, counts, sep, names)
    if not guard.keep.all():
        parts = parts.filter(pa.array(guard.keep))
        guard.apply()
    frame = pd.DataFrame({n: _column(pc.list_element(parts, i), (types or {}).get(n)) for i, n in enumerate(names)})
    return _Table(path, frame, guard)


def _column(values: pa.ChunkedArray, kind: pa.DataType | None) -> pd.Series:
    if kind is not None:
        try:
            return pc.cast(values, kind).to_pandas()
        except pa.ArrowException:
            pass
    return values.to_pandas().astype(object)


def _read_quoted(path: Path, names: list[str], q: checks.Quarantine) -> _Table:
    """A quoted, comma-separated UTF-8 file with a header: pyarrow first, Python's csv to name a bad line."""
    checks.require_not_empty(path)
    _check_header(path, names)
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}),
        )
        return _Table(path, table.to_pandas(), q.guard(path, np.arange(table.num_rows) + 2))
    except pa.ArrowException:  # a blank or bad line, or bad UTF-8: Python's csv names it
        pass
    rows, lines = checks.csv_rows(_decode(path, "utf-8"))
    rows, line_numbers = checks.fit_fields(rows[1:], len(names)), np.array(lines[1:], dtype=np.int64)
    guard = q.guard(path, line_numbers)
    _guard_counts(guard, np.array([len(row) for row in rows], dtype=np.int64), ",", names)
    rows = [row for row, kept in zip(rows, guard.keep) if kept]
    guard.apply()
    return _Table(path, pd.DataFrame(rows, columns=names, dtype=object), guard)


def _check_header(path: Path, names: list[str]) -> None:
    with path.open("rb") as fh:
        first = fh.readline().decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    found = [field.strip() for field in next(csv.reader([first]), [])]
    _check_counts(np.array([len(found)]), np.array([1]), path, ",", names)
    if found != names:
        raise DataError.at(f"header is {first!r}, expected {','.join(names)!r}", path, line=1, fix=_fix(path))


def _guard_counts(guard: checks.RowGuard, counts: np.ndarray, sep: str, names: list[str]) -> None:
    """Lines with another number of fields than `names`: the error of `_check_counts`, or quarantined (unless every
    line has the same wrong number: a file-level problem, a wrong separator or a missing column)."""
    if guard.strict or (len(counts) and (counts == counts[0]).all()):
        _check_counts(counts, guard.lines, guard.path, sep, names)
        return
    for found in np.unique(counts[counts != len(names)]):
        guard.reject(counts == found, _count_problem(int(found), sep, names), fix=_fix(guard.path))


def _count_problem(found: int, sep: str, names: list[str], every_line: bool = False) -> str:
    expected = f"expected {len(names)} {_SEP_NAMES[sep]}-separated columns ({', '.join(names)}), found {found}"
    if found == 1:
        return f"wrong separator? {expected}"
    if every_line and found < len(names):
        return f"a missing column? every line has {found} fields: {expected}"
    return f"{'truncated line' if found < len(names) else 'too many fields'}: {expected}"


def _check_counts(counts: np.ndarray, lines: np.ndarray, path: Path, sep: str, names: list[str]) -> None:
    bad = np.flatnonzero(counts != len(names))
    if not len(bad):
        return
    found = int(counts[bad[0]])
    every_line = len(bad) == len(counts) and bool((counts == found).all()) and len(counts) > 1
    raise DataError.at(
        _count_problem(found, sep, names, every_line) + (f"; {len(bad) - 1:,} more line(s) like it" if len(bad) > 1 else ""),
        path,
        line=int(lines[bad[0]]),
        fix=_fix(path),
    )


def _decode(path: Path, encoding: str) -> str:
    try:
        return path.read_bytes().decode(encoding)
    except UnicodeDecodeError as exc:
        raise checks.decode_error(path, exc, encoding, _fix(path)) from exc


def _latin1(path: Path) -> str:
    """'latin-1', or 'utf-8' for a latin-1 file someone saved as UTF-8 (valid UTF-8 is almost never latin-1 text)."""
    try:
        path.read_bytes().decode("utf-8")
    except (UnicodeDecodeError, OSError):
        return "latin-1"
    return "utf-8"


def _fix(path: Path) -> str:
    return f"{path.name} is {_FORMATS[path.name]}"
