"""MIND loader on fixtures written by the tests (train/dev format and the unlabelled test split)."""

import json

import pandas as pd
import pytest

from llmrec.data.ingest import find_batches, load_source
from llmrec.data.mind import read_mind
from llmrec.data.split import temporal_split
from llmrec.errors import DataError

ENT = json.dumps([{"Label": "Tom Brady", "Type": "P", "WikidataId": "Q313381", "Confidence": 1.0, "OccurrenceOffsets": [0], "SurfaceForms": ["Tom Brady"]}])
NEWS = [
    ["N1", "sports", "football_nfl", "Tom Brady wins again", "The quarterback won.", "https://example.invalid/1", ENT, "[]"],
    ["N2", "finance", "markets", "Stocks rally", "", "https://example.invalid/2", "[]", "[]"],
    ["N3", "travel", "beaches", "Best winter beaches", "Sun and sand.", "https://example.invalid/3", "[]", "[]"],
    ["N4", "music", "pop", "Singer starts tour", "Tour dates.", "https://example.invalid/4", "[]", "[]"],
]
BEHAVIORS = [
    ["1", "U1", "11/11/2019 9:05:58 AM", "N1 N2", "N3-1 N4-0 N2-0"],
    ["2", "U2", "11/12/2019 1:10:02 PM", "", "N1-0 N4-1"],
    ["3", "U1", "11/13/2019 11:59:59 PM", "N1 N2 N3", "N4-1 N1-0"],
]


def write_mind(folder, news=NEWS, behaviors=BEHAVIORS):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_text("".join("\t".join(r) + "\n" for r in news))
    (folder / "behaviors.tsv").write_text("".join("\t".join(r) + "\n" for r in behaviors))
    return folder


def test_reads_canonical_tables(tmp_path):
    ds = read_mind(write_mind(tmp_path / "train"), prefix="train:")
    assert list(ds.items["item_id"]) == ["N1", "N2", "N3", "N4"]
    assert ds.items.loc[1, "text"] == ""  # missing abstract kept as empty text
    assert list(ds.impressions["impression_id"]) == ["train:1", "train:2", "train:3"]
    assert ds.impressions.loc[0, "history"] == "N1 N2"
    assert ds.impressions.loc[1, "history"] == ""
    ts = ds.impressions["timestamp"]
    assert str(ts.dt.tz) == "UTC"
    assert ts.iloc[0] == pd.Timestamp("2019-11-11 09:05:58", tz="UTC")
    assert ts.iloc[1] == pd.Timestamp("2019-11-12 13:10:02", tz="UTC")
    assert ts.iloc[2] == pd.Timestamp("2019-11-13 23:59:59", tz="UTC")
    inter = ds.interactions
    assert len(inter) == 7
    first = inter[inter["impression_id"] == "train:1"]
    assert list(first["item_id"]) == ["N3", "N4", "N2"]
    assert list(first["label"]) == [1, 0, 0]
    assert (inter.groupby("impression_id")["timestamp"].nunique() == 1).all()


def test_unlabelled_test_split(tmp_path):
    behaviors = [["7", "U9", "11/15/2019 8:55:22 AM", "N1", "N3 N4"]]
    ds = read_mind(write_mind(tmp_path / "test", behaviors=behaviors))
    assert list(ds.interactions["label"]) == [-1, -1]
    assert ds.n_labeled == 0


@pytest.mark.parametrize(
    ("line", "message", "column"),
    [
        (["4", "U3", "11/13/2019 1:00:00 PM", "N1", "N2-1 N3-0", "extra"], "expected 5 tab-separated columns", None),
        (["4", "U3", "2019-11-13 13:00:00", "N1", "N2-1 N3-0"], "is not in MIND's format", "time"),
        (["4", "U3", "11/13/2019 1:00:00 PM", "N1", "N2-1 N3-x"], "labels must be 0 or 1", "impressions"),
        (["4", "U3", "11/13/2019 1:00:00 PM", "N1", "N2-1 N3"], "mixes labelled", "impressions"),
        (["4", "U3", "11/13/2019 1:00:00 PM", "N1", ""], "no candidates", "impressions"),
        (["4", "", "11/13/2019 1:00:00 PM", "N1", "N2-1"], "empty user_id", "user_id"),
    ],
)
def test_malformed_behaviors_line_names_file_line_and_problem(tmp_path, line, message, column):
    folder = write_mind(tmp_path / "bad", behaviors=BEHAVIORS + [line])
    with pytest.raises(DataError) as info:
        read_mind(folder)
    text = str(info.value)
    assert message in text
    assert "behaviors.tsv, line 4" in text
    if column:
        assert f"column {column!r}" in text


def test_missing_news_file(tmp_path):
    folder = write_mind(tmp_path / "m")
    (folder / "news.tsv").unlink()
    with pytest.raises(DataError, match="missing file news.tsv: the folder looks like mind"):
        load_source(folder)
    with pytest.raises(DataError, match="missing file news.tsv"):
        read_mind(folder)


def test_empty_and_non_utf8_files(tmp_path):
    folder = write_mind(tmp_path / "e")
    (folder / "behaviors.tsv").write_text("")
    with pytest.raises(DataError, match="file is empty"):
        read_mind(folder)
    folder = write_mind(tmp_path / "u")
    (folder / "news.tsv").write_bytes("N1\tsports\tx\tCaf\xe9\t\t\t[]\t[]\n".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8") as info:
        read_mind(folder)
    assert "line 1" in str(info.value)


def test_batches_are_concatenated_with_unique_impression_ids(tmp_path):
    write_mind(tmp_path / "all" / "period1")
    later = [[r[0], r[1], r[2].replace("11/1", "11/2"), r[3], r[4]] for r in BEHAVIORS]
    write_mind(tmp_path / "all" / "period2", behaviors=later)
    fmt, batches = find_batches(tmp_path / "all")
    assert fmt == "mind" and [p.name for p in batches] == ["period1", "period2"]
    result = load_source(tmp_path / "all")
    ds = result.dataset
    assert result.batches == ["period1", "period2"]
    assert ds.impressions["impression_id"].is_unique
    assert len(ds.impressions) == 6
    assert ds.items["item_id"].is_unique
    assert ds.impressions["timestamp"].is_monotonic_increasing


def test_unknown_folder_lists_what_was_expected(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "ratings.txt").write_text("1,2,3\n")
    with pytest.raises(DataError) as info:
        load_source(tmp_path / "x")
    assert "ratings.txt" in str(info.value)
    assert "news.tsv + behaviors.tsv" in str(info.value)


def test_temporal_split_never_trains_on_the_future(tmp_path):
    ds = read_mind(write_mind(tmp_path / "s"))
    split = temporal_split(ds, holdout_days=1)
    assert split.cutoff == pd.Timestamp("2019-11-13", tz="UTC")
    assert split.train.impressions["timestamp"].max() < split.cutoff
    assert split.holdout.impressions["timestamp"].min() >= split.cutoff
    assert set(split.train.interactions["impression_id"]) == {"1", "2"}
    with pytest.raises(DataError, match="fewer than"):
        temporal_split(ds, holdout_days=3)


@pytest.mark.parametrize(
    ("news", "behaviors", "file", "line", "message"),
    [
        (NEWS + [NEWS[1]], BEHAVIORS, "news.tsv", 5, "duplicate id 'N2' (first seen on line 2)"),
        (NEWS[:2] + [["N3", "travel", "beaches", "  ", "", "", "[]", "[]"]] + NEWS[3:], BEHAVIORS, "news.tsv", 3, "empty title"),
        (NEWS, BEHAVIORS + [["4", "U3", "11/13/2019 1:00:00 PM", "N1 N99", "N2-1 N3-0"]], "behaviors.tsv", 4, "not in news.tsv ('N99')"),
        (NEWS, BEHAVIORS + [["4", "U3", "11/13/2019 1:00:00 PM", "N1", "N2-1 N77-0"]], "behaviors.tsv", 4, "not in news.tsv ('N77')"),
        (NEWS, BEHAVIORS + [["4", "U3", "11/13/2039 1:00:00 PM", "N1", "N2-1 N3-0"]], "behaviors.tsv", 4, "in the future"),
        (NEWS, BEHAVIORS + [["2", "U3", "11/13/2019 1:00:00 PM", "N1", "N2-1 N3-0"]], "behaviors.tsv", 4, "duplicate id '2'"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, news, behaviors, file, line, message):
    folder = write_mind(tmp_path / "bad", news=news, behaviors=behaviors)
    with pytest.raises(DataError) as info:
        load_source(folder)
    text = str(info.value)
    assert message in text and f"{file}, line {line}" in text


def test_entities_are_kept_on_request(tmp_path):
    from llmrec.config import DataParams

    folder = write_mind(tmp_path / "m")
    assert "title_entities" not in load_source(folder).dataset.items.columns
    items = load_source(folder, DataParams(keep_entities=True)).dataset.items
    assert json.loads(items.set_index("item_id").at["N1", "title_entities"])[0]["Label"] == "Tom Brady"


def test_later_batches_may_refer_to_items_of_earlier_ones(tmp_path):
    write_mind(tmp_path / "all" / "b1")
    later = [["9", "U1", "11/14/2019 9:00:00 AM", "N1", "N5-1 N2-0"]]
    write_mind(tmp_path / "all" / "b2", news=[["N5", "news", "x", "New story", "", "", "[]", "[]"]], behaviors=later)
    ds = load_source(tmp_path / "all").dataset
    assert set(ds.items["item_id"]) == {"N1", "N2", "N3", "N4", "N5"}
    assert "b2:9" in set(ds.impressions["impression_id"])


def test_a_folder_with_two_formats_is_refused(tmp_path):
    folder = write_mind(tmp_path / "mixed")
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    (folder / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Comedy\n")
    with pytest.raises(DataError, match="several formats") as info:
        load_source(folder)
    assert "mind" in str(info.value) and "ml-latest" in str(info.value)
