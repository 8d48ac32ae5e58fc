"""MovieLens loader on fixtures written by the tests: ml-100k, ml-1m and ml-latest layouts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmrec.data.movielens import LAYOUTS, detect_layout, read_movielens
from llmrec.errors import DataError

T0 = 978_300_760  # 2000-12-31 22:12:40 UTC

GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def _flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES)


TOY_FLAGS = _flags("Animation", "Children's", "Comedy")
U_ITEM = [
    f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|{TOY_FLAGS}",
    f"2|GoldenEye (1995)|01-Jan-1995||http://us.imdb.com/M/GoldenEye|{_flags('Action', 'Adventure', 'Thriller')}",
    f"267|unknown||||{_flags('unknown')}",
    f"3|Misérables, Les|01-Jan-1996||http://us.imdb.com/x|{_flags('Drama')}",
]
U_DATA = [
    f"196\t1\t3\t{T0}",
    f"196\t2\t5\t{T0 + 10}",
    f"22\t267\t1\t{T0 + 5}",
    f"22\t3\t4\t{T0 + 20}",
    f"22\t1\t2\t{T0 + 30}",
]
MOVIES_DAT = [
    "1::Toy Story (1995)::Animation|Children's|Comedy",
    "10::City of Lost Children, The (Cité des enfants perdus, La) (1995)::Adventure|Sci-Fi",
    '20::"Quoted" Title, with commas (1999)::Drama',
]
RATINGS_DAT = [f"1::1::5::{T0}", f"1::10::3::{T0 + 60}", f"2::20::4::{T0 + 1}", f"2::1::1::{T0 + 2}"]
MOVIES_CSV = [
    "movieId,title,genres",
    "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy",
    '2,"American President, The (1995)",Comedy|Drama|Romance',
    '3,"Twelve Monkeys (a.k.a. 12 Monkeys) (1995)",Mystery|Sci-Fi|Thriller',
    "4,Babylon 5,(no genres listed)",
]
RATINGS_CSV = [
    "userId,movieId,rating,timestamp",
    f"1,1,4.0,{T0}",
    f"1,2,3.5,{T0 + 1}",
    f"2,3,0.5,{T0 + 2}",
    f"2,4,5.0,{T0 + 3}",
    f"3,1,2.5,{T0 + 4}",
]
TAGS_CSV = [
    "userId,movieId,tag,timestamp",
    f"1,1,pixar,{T0}",
    f"2,1,Pixar,{T0}",
    f"3,1,fun,{T0}",
    f'1,2,"politics, satire",{T0}',
]


def write(folder, files: dict[str, list[str] | bytes], encoding: str = "utf-8"):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else "".join(line + "\n" for line in content).encode(encoding)
        (folder / name).write_bytes(data)
    return folder


def ml100k(tmp_path, **override):
    files = {"u.data": U_DATA, "u.item": U_ITEM, "u.genre": [f"{g}|{i}" for i, g in enumerate(GENRES)] + [""]}
    return write(tmp_path / "ml-100k", {**files, **override}, encoding="latin-1")


def ml1m(tmp_path, **override):
    files = {"ratings.dat": RATINGS_DAT, "movies.dat": MOVIES_DAT, "users.dat": ["1::F::1::10::48067"]}
    return write(tmp_path / "ml-1m", {**files, **override}, encoding="latin-1")


def mllatest(tmp_path, **override):
    files = {"ratings.csv": RATINGS_CSV, "movies.csv": MOVIES_CSV, "tags.csv": TAGS_CSV}
    return write(tmp_path / "ml-latest-small", {**files, **override})


def error_text(folder, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        read_movielens(folder, **kwargs)
    return str(info.value)


def check_canonical(ds, n_events: int, layout: str) -> None:
    assert ds.source.format == layout
    assert ds.source.explicit_history is False and ds.source.logged_negatives is False
    assert len(ds.impressions) == len(ds.interactions) == n_events
    assert ds.impressions["impression_id"].is_unique
    assert set(ds.interactions["impression_id"]) == set(ds.impressions["impression_id"])
    assert (ds.interactions["label"] == 1).all() and ds.interactions["label"].dtype == np.int8
    assert str(ds.interactions["timestamp"].dt.tz) == "UTC" and str(ds.impressions["timestamp"].dt.tz) == "UTC"
    assert (ds.impressions["history"] == "").all()
    assert set(ds.interactions["item_id"]) <= set(ds.items["item_id"])


def test_layouts_and_detection(tmp_path):
    assert LAYOUTS == {
        "ml-100k": ["u.data", "u.item"],
        "ml-1m": ["ratings.dat", "movies.dat"],
        "ml-latest": ["ratings.csv", "movies.csv"],
    }
    assert detect_layout(ml100k(tmp_path)) == "ml-100k"
    assert detect_layout(ml1m(tmp_path)) == "ml-1m"
    assert detect_layout(mllatest(tmp_path)) == "ml-latest"
    assert detect_layout(write(tmp_path / "half", {"u.data": U_DATA})) is None
    assert detect_layout(tmp_path / "nothing") is None


def test_ml100k(tmp_path):
    ds = read_movielens(ml100k(tmp_path), prefix="b1:")
    check_canonical(ds, 5, "ml-100k")
    items = ds.items.set_index("item_id")
    assert list(ds.items["item_id"]) == ["1", "2", "267", "3"]
    assert items.loc["1", "title"] == "Toy Story"
    assert items.loc["1", "text"] == "1995. Animation, Children's, Comedy"
    assert (items.loc["1", "category"], items.loc["1", "subcategory"]) == ("Animation", "Children's")
    assert items.loc["267", ["title", "text", "category", "subcategory"]].tolist() == ["unknown"] * 3 + [""]
    assert items.loc["3", "title"] == "Misérables, Les"  # latin-1, no year in the title: year from the release date
    assert items.loc["3", "text"] == "1996. Drama"
    inter = ds.interactions
    assert inter["impression_id"].str.startswith("b1:").all()
    row = inter[(inter["user_id"] == "22") & (inter["item_id"] == "267")].iloc[0]
    assert row["timestamp"] == pd.Timestamp("2000-12-31 22:12:45", tz="UTC")
    assert row["impression_id"] == "b1:22#0"


def test_ml100k_without_u_genre_uses_standard_names(tmp_path):
    folder = ml100k(tmp_path)
    (folder / "u.genre").unlink()
    items = read_movielens(folder).items.set_index("item_id")
    assert items.loc["2", "text"] == "1995. Action, Adventure, Thriller"


def test_ml1m(tmp_path):
    ds = read_movielens(ml1m(tmp_path))
    check_canonical(ds, 4, "ml-1m")
    items = ds.items.set_index("item_id")
    assert items.loc["10", "title"] == "City of Lost Children, The (Cité des enfants perdus, La)"
    assert items.loc["10", "text"] == "1995. Adventure, Sci-Fi"
    assert items.loc["20", "title"] == '"Quoted" Title, with commas'
    assert (items.loc["1", "category"], items.loc["1", "subcategory"]) == ("Animation", "Children's")
    first = ds.interactions.sort_values("timestamp").iloc[0]
    assert (first["user_id"], first["item_id"], first["timestamp"]) == ("1", "1", pd.Timestamp(T0, unit="s", tz="UTC"))


def test_ml_latest(tmp_path):
    ds = read_movielens(mllatest(tmp_path))
    check_canonical(ds, 5, "ml-latest")
    items = ds.items.set_index("item_id")
    assert items.loc["1", "text"] == "1995. Adventure, Animation, Children, Comedy, Fantasy. Tags: pixar, fun"
    assert items.loc["2", "title"] == "American President, The"
    assert items.loc["2", "text"] == "1995. Comedy, Drama, Romance. Tags: politics, satire"
    assert items.loc["3", "title"] == "Twelve Monkeys (a.k.a. 12 Monkeys)"
    assert items.loc["4", ["title", "text", "category", "subcategory"]].tolist() == ["Babylon 5", "", "", ""]
    assert ds.interactions["timestamp"].max() == pd.Timestamp(T0 + 4, unit="s", tz="UTC")


def test_tags_top_ten_most_frequent_first(tmp_path):
    tags = [f"{u},3,tag{k:02d},{T0}" for k in range(12) for u in range(k + 1)] + [f"9,3,  ,{T0}", f"9,99,orphan,{T0}"]
    items = read_movielens(mllatest(tmp_path, **{"tags.csv": TAGS_CSV[:1] + tags})).items.set_index("item_id")
    expected = ", ".join(f"tag{k:02d}" for k in range(11, 1, -1))
    assert items.loc["3", "text"] == f"1995. Mystery, Sci-Fi, Thriller. Tags: {expected}"


def test_ml1m_movies_saved_as_utf8_still_read(tmp_path):
    items = read_movielens(write(ml1m(tmp_path), {"movies.dat": MOVIES_DAT})).items.set_index("item_id")
    assert items.loc["10", "title"] == "City of Lost Children, The (Cité des enfants perdus, La)"


def test_not_a_movielens_folder(tmp_path):
    assert "not a folder" in error_text(tmp_path / "missing")
    assert "no MovieLens files here" in error_text(write(tmp_path / "other", {"news.tsv": ["N1"]}))


def test_ml_latest_without_tags_and_with_crlf_and_blank_lines(tmp_path):
    ratings = ("\r\n".join(RATINGS_CSV[:3]) + "\r\n\r\n" + "\r\n".join(RATINGS_CSV[3:]) + "\r\n\r\n").encode()
    folder = mllatest(tmp_path, **{"ratings.csv": ratings})
    (folder / "tags.csv").unlink()
    ds = read_movielens(folder)
    assert len(ds.interactions) == 5
    assert ds.items.set_index("item_id").loc["1", "text"] == "1995. Adventure, Animation, Children, Comedy, Fantasy"


def test_min_rating_drops_low_ratings(tmp_path):
    ds = read_movielens(mllatest(tmp_path), min_rating=3.5)
    assert sorted(ds.interactions["item_id"]) == ["1", "2", "4"]
    assert len(read_movielens(ml100k(tmp_path), min_rating=3).interactions) == 3
    assert "no rating is at or above min_rating 6" in error_text(mllatest(tmp_path), min_rating=6)


def test_two_layouts_in_one_folder(tmp_path):
    folder = ml100k(tmp_path)
    write(folder, {"ratings.csv": RATINGS_CSV, "movies.csv": MOVIES_CSV})
    with pytest.raises(DataError) as info:
        detect_layout(folder)
    text = str(info.value)
    assert "ml-100k: u.data + u.item" in text and "ml-latest: ratings.csv + movies.csv" in text


def test_missing_required_file(tmp_path):
    folder = ml1m(tmp_path)
    (folder / "movies.dat").unlink()
    text = error_text(folder)
    assert "missing file movies.dat for the ml-1m format" in text


def test_empty_file(tmp_path):
    text = error_text(mllatest(tmp_path, **{"movies.csv": b"\n\n"}))
    assert "file is empty" in text and "movies.csv" in text


MAKERS = {"u.data": ml100k, "u.item": ml100k, "u.genre": ml100k, "ratings.dat": ml1m, "movies.dat": ml1m}
MAKERS |= {"ratings.csv": mllatest, "movies.csv": mllatest, "tags.csv": mllatest}
R_CSV, R_DAT = RATINGS_CSV, RATINGS_DAT


@pytest.mark.parametrize(
    ("name", "lines", "where", "problem"),
    [
        # wrong separator
        ("u.data", [r.replace("\t", ",") for r in U_DATA], "line 1", "expected 4 tab-separated columns (user id,"),
        ("ratings.csv", [r.replace(",", ";") for r in R_CSV], "line 1", "expected 4 comma-separated columns (userId,"),
        ("ratings.csv", R_CSV[:1] + [r.replace(",", "\t") for r in R_CSV[1:]], "line 2", "wrong separator? expected 4"),
        ("ratings.dat", [r.replace("::", ",") for r in R_DAT], "line 1", "expected 4 '::'-separated columns (UserID, "),
        # truncated lines, extra fields, headers
        ("ratings.dat", R_DAT[:2] + ["2::20::4"], "line 3", "truncated line: expected 4 '::'-separated columns"),
        ("ratings.csv", R_CSV + ["4,1,3.0"], "line 7", "truncated line: expected 4 comma-separated columns"),
        ("ratings.csv", R_CSV + [f"4,1,3.0,{T0},x"], "line 7", "too many fields: expected 4"),
        ("u.item", U_ITEM[:1] + ["2|GoldenEye (1995)|01-Jan-1995"], "line 2", "truncated line: expected 24 '|'-sep"),
        ("movies.dat", MOVIES_DAT + ["30::Extra (2000)::Drama::oops"], "line 4", "too many fields: expected 3"),
        ("movies.csv", MOVIES_CSV + ["5,Heat (1995)"], "line 6", "truncated line: expected 3 comma-sep"),
        ("movies.csv", ["movieId,title"] + MOVIES_CSV[1:], "line 1", "expected 3 comma-separated columns"),
        ("ratings.csv", ["user,movie,rating,timestamp"] + R_CSV[1:], "line 1", "header is 'user,movie,rating,"),
        ("tags.csv", TAGS_CSV + ["1,1"], "line 6", "truncated line: expected 4 comma-separated columns"),
        # values
        ("ratings.csv", R_CSV[:3] + [f"2,3,four,{T0}"], "line 4, column 'rating'", "is not a number ('four')"),
        ("ratings.dat", R_DAT[:1] + [f"x1::10::3::{T0}"], "line 2, column 'UserID'", "is not a number ('x1')"),
        ("u.data", U_DATA + [f"22\t2\t4\t{T0}.5"], "line 6, column 'timestamp'", "is not a whole number"),
        ("u.data", U_DATA + ["22\t2\t4\tyesterday"], "line 6, column 'timestamp'", "is not a number"),
        ("ratings.csv", R_CSV[:2] + [f"1,2,,{T0}"], "line 3, column 'rating'", "is not a number"),
        ("movies.csv", MOVIES_CSV + ["x,Heat (1995),Action"], "line 6, column 'movieId'", "is not a number ('x')"),
        ("ratings.csv", R_CSV + [f"4,1,5.5,{T0}"], "line 7, column 'rating'", "rating is outside 0.5..5"),
        ("u.data", U_DATA[:2] + [f"22\t3\t0\t{T0}"], "line 3, column 'rating'", "rating is outside 0.5..5"),
        ("u.data", U_DATA[:2] + ["", f"22\t3\t9\t{T0}"], "line 4, column 'rating'", "rating is outside 0.5..5"),
        ("u.item", U_ITEM[:1] + [U_ITEM[1][:-1] + "x"], "line 2, column 'Western'", "genre flag is not 0 or 1"),
        # duplicates, references, titles, times
        ("movies.dat", MOVIES_DAT + ["10::Again::Drama"], "line 4, column 'MovieID'", "id '10' (first seen on line 2"),
        ("u.genre", ["unknown|0", "Action|0"], "line 2, column 'index'", "duplicate id '0' (first seen on line 1)"),
        ("ratings.csv", R_CSV + [f"1,2,5,{T0}"], "line 7, column 'movieId'", "rated movie 2 twice (lines 3 and 7)"),
        ("ratings.dat", R_DAT + [f"3::99::4::{T0}"], "line 5, column 'MovieID'", "not in movies.dat ('99')"),
        ("u.data", U_DATA + [f"5\t1682\t4\t{T0}"], "line 6, column 'item id'", "is not in u.item ('1682')"),
        ("movies.csv", MOVIES_CSV + ['5,"  ",Drama'], "line 6, column 'title'", "empty title"),
        ("movies.dat", MOVIES_DAT + ["30::::Drama"], "line 4, column 'Title'", "empty Title"),
        ("ratings.csv", R_CSV + ["4,1,3.0,4102444800"], "line 7, column 'timestamp'", "timestamp is in the future"),
        ("ratings.csv", R_CSV + [f"4,1,3.0,{T0 * 1000}"], "line 7, column 'timestamp'", "timestamp is in the future"),
        ("ratings.dat", R_DAT + ["3::1::3::600000000"], "line 5, column 'Timestamp'", "timestamp is before 1990"),
    ],
)
def test_bad_input_names_file_line_and_problem(tmp_path, name, lines, where, problem):
    text = error_text(MAKERS[name](tmp_path, **{name: lines}))
    assert problem in text
    assert f"{name}, {where}\n" in text
    assert "fix:" in text


def test_movies_csv_must_be_utf8(tmp_path):
    data = "\n".join(MOVIES_CSV).encode() + "\n5,Misérables, Les (1995),Drama\n".encode("latin-1")
    text = error_text(mllatest(tmp_path, **{"movies.csv": data}))
    assert "not valid utf-8" in text and "movies.csv, line 6" in text


def test_ratings_csv_must_be_utf8(tmp_path):
    data = "\n".join(RATINGS_CSV).encode() + b"\n4,1,3\xe9,0\n"
    text = error_text(mllatest(tmp_path, **{"ratings.csv": data}))
    assert "not valid utf-8" in text and "ratings.csv, line 7" in text


def test_header_only_ratings(tmp_path):
    text = error_text(mllatest(tmp_path, **{"ratings.csv": RATINGS_CSV[:1]}))
    assert "no ratings in the file" in text and "ratings.csv" in text


def test_scale_smoke(tmp_path):
    rng = np.random.default_rng(0)
    n_users, n_movies, per_user = 2000, 500, 100
    movies = np.concatenate([rng.choice(n_movies, per_user, replace=False) + 1 for _ in range(n_users)])
    ratings = pd.DataFrame(
        {
            "userId": np.repeat(np.arange(1, n_users + 1), per_user),
            "movieId": movies,
            "rating": rng.integers(1, 11, n_users * per_user) / 2,
            "timestamp": rng.integers(T0, T0 + 10**8, n_users * per_user),
        }
    )
    folder = tmp_path / "ml-25m"
    folder.mkdir()
    ratings.to_csv(folder / "ratings.csv", index=False)
    ids = np.arange(1, n_movies + 1)
    titles = [f"Movie {i}, The ({1950 + i % 70})" for i in ids]
    pd.DataFrame({"movieId": ids, "title": titles, "genres": "Drama|Comedy"}).to_csv(folder / "movies.csv", index=False)
    ds = read_movielens(folder, min_rating=3.0)
    kept = int((ratings["rating"] >= 3.0).sum())
    assert len(ds.interactions) == len(ds.impressions) == kept
    assert ds.impressions["impression_id"].is_unique
    assert len(ds.items) == n_movies and ds.items["title"].iat[0] == "Movie 1, The"


def test_same_second_ratings_keep_the_files_order_through_the_split(tmp_path):
    from llmrec.data.split import leave_last_out_split

    same = [f"7\t{m}\t4\t{T0 + 50}" for m in (3, 1, 267, 2)]  # one second, file order 3, 1, 267, 2 (not id order)
    ds = read_movielens(ml100k(tmp_path, **{"u.data": same}))
    mine = ds.interactions[ds.interactions["user_id"] == "7"]
    assert mine["item_id"].tolist() == ["3", "1", "267", "2"]
    assert mine["impression_id"].tolist() == ["7#0", "7#1", "7#2", "7#3"]
    assert leave_last_out_split(ds).holdout.interactions["item_id"].tolist() == ["2"]
