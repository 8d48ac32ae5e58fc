"""Generic tables loader (your own items + interactions files) on fixtures written by the tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmrec.config import TablesParams
from llmrec.data.tables import is_tables_folder, read_tables
from llmrec.errors import DataError

ITEMS = [
    ["item_id", "title", "text", "category"],
    ["i1", "Red shoes", "Leather", "shoes"],
    ["i2", "Blue hat", "", "hats"],
    ["i3", "Green scarf", "Wool", "scarves"],
]
HEAD = ["user_id", "item_id", "timestamp"]
EVENTS = [HEAD, ["u1", "i1", "1700000000"], ["u2", "i2", "1700000100"], ["u1", "i2", "1700000200"]]
# the brief's example: products.csv (sku,name,desc,dept) + clicks.csv (uid,sku,ts,clicked,session)
PRODUCTS = [
    ["sku", "name", "desc", "dept"],
    ["S1", "Kettle", "Steel kettle", "kitchen"],
    ["S2", "Toaster", "", "kitchen"],
    ["S3", "Lamp", "Desk lamp", "home"],
]
CLICKS = [
    ["uid", "sku", "ts", "clicked", "session"],
    ["u7", "S1", "2024-05-01T12:00:00+02:00", "1", "p1"],
    ["u7", "S2", "2024-05-01T12:00:00+02:00", "0", "p1"],
    ["u8", "S3", "2024-05-01 09:30:00", "false", "p2"],
    ["u8", "S1", "2024-05-01 09:30:00", "true", "p2"],
]
CUSTOM = TablesParams(
    items="products.csv",
    interactions="clicks.csv",
    item_columns={"item_id": "sku", "title": "name", "text": "desc", "category": "dept", "subcategory": None},
    interaction_columns={
        "user_id": "uid", "item_id": "sku", "timestamp": "ts", "label": "clicked", "impression_id": "session"
    },
)


def TS(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def columns(**extra: str) -> dict[str, str]:
    """The default interaction mapping plus extra canonical keys."""
    return {"user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp", **extra}


def write(path, rows, sep=","):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(sep.join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def folder_with(tmp_path, items=ITEMS, events=EVENTS, names=("items.csv", "interactions.csv")):
    write(tmp_path / names[0], items)
    write(tmp_path / names[1], events)
    return tmp_path


def clicks_folder(tmp_path, clicks):
    return folder_with(tmp_path, PRODUCTS, clicks, ("products.csv", "clicks.csv"))


def error(tmp_path, cfg=None, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        read_tables(tmp_path, cfg or TablesParams(), **kwargs)
    return str(info.value)


# --- reading -------------------------------------------------------------------------------------------------------


def test_positive_only_csv(tmp_path):
    ds = read_tables(folder_with(tmp_path), TablesParams(), prefix="b1:")
    t0, t1, t2 = (TS("2023-11-14 22:13:20"), TS("2023-11-14 22:15:00"), TS("2023-11-14 22:16:40"))
    assert ds.items.to_dict("records") == [
        {"item_id": "i1", "title": "Red shoes", "text": "", "category": "", "subcategory": ""},
        {"item_id": "i2", "title": "Blue hat", "text": "", "category": "", "subcategory": ""},
        {"item_id": "i3", "title": "Green scarf", "text": "", "category": "", "subcategory": ""},
    ]  # text/category are in the file but not mapped by default
    assert ds.impressions.to_dict("records") == [
        {"impression_id": "b1:u1#0", "user_id": "u1", "timestamp": t0, "history": ""},
        {"impression_id": "b1:u2#0", "user_id": "u2", "timestamp": t1, "history": ""},
        {"impression_id": "b1:u1#1", "user_id": "u1", "timestamp": t2, "history": ""},
    ]
    assert ds.interactions.to_dict("records") == [
        {"impression_id": "b1:u1#0", "user_id": "u1", "item_id": "i1", "timestamp": t0, "label": 1},
        {"impression_id": "b1:u1#1", "user_id": "u1", "item_id": "i2", "timestamp": t2, "label": 1},
        {"impression_id": "b1:u2#0", "user_id": "u2", "item_id": "i2", "timestamp": t1, "label": 1},
    ]
    assert ds.interactions["label"].dtype == np.int8
    assert str(ds.interactions["timestamp"].dt.tz) == "UTC"
    assert ds.source.to_dict() == {"format": "tables", "explicit_history": False, "logged_negatives": False}
    assert is_tables_folder(tmp_path, TablesParams())
    assert not is_tables_folder(tmp_path, CUSTOM)


def test_logged_impressions_with_custom_columns(tmp_path):
    folder = clicks_folder(tmp_path, CLICKS)
    ds = read_tables(folder, CUSTOM, prefix="w1:")
    assert ds.items.to_dict("records") == [
        {"item_id": "S1", "title": "Kettle", "text": "Steel kettle", "category": "kitchen", "subcategory": ""},
        {"item_id": "S2", "title": "Toaster", "text": "", "category": "kitchen", "subcategory": ""},
        {"item_id": "S3", "title": "Lamp", "text": "Desk lamp", "category": "home", "subcategory": ""},
    ]
    assert ds.impressions.to_dict("records") == [  # sorted by time; the +02:00 page view is at 10:00 UTC
        {"impression_id": "w1:p2", "user_id": "u8", "timestamp": TS("2024-05-01 09:30"), "history": ""},
        {"impression_id": "w1:p1", "user_id": "u7", "timestamp": TS("2024-05-01 10:00"), "history": ""},
    ]
    assert ds.interactions.to_dict("records") == [
        {"impression_id": "w1:p1", "user_id": "u7", "item_id": "S1", "timestamp": TS("2024-05-01 10:00"), "label": 1},
        {"impression_id": "w1:p1", "user_id": "u7", "item_id": "S2", "timestamp": TS("2024-05-01 10:00"), "label": 0},
        {"impression_id": "w1:p2", "user_id": "u8", "item_id": "S3", "timestamp": TS("2024-05-01 09:30"), "label": 0},
        {"impression_id": "w1:p2", "user_id": "u8", "item_id": "S1", "timestamp": TS("2024-05-01 09:30"), "label": 1},
    ]
    assert ds.interactions["label"].dtype == np.int8
    assert ds.source.to_dict() == {"format": "tables", "explicit_history": False, "logged_negatives": True}


def test_tsv_with_ratings_in_milliseconds(tmp_path):
    write(tmp_path / "items.tsv", [["id", "name"], ["m1", "Heat, 1995"], ["m2", 'Say "hi"']], sep="\t")
    rows = [["user", "movie", "ms", "stars"], ["a", "m1", "1700000000000", "4.5"], ["a", "m2", "1700000001500", "2"],
            ["b", "m2", "1700000002000", "3"]]
    write(tmp_path / "ratings.tsv", rows, sep="\t")
    cfg = TablesParams(items="items.tsv", interactions="ratings.tsv", item_columns={"item_id": "id", "title": "name"},
                       interaction_columns={"user_id": "user", "item_id": "movie", "timestamp": "ms",
                                            "rating": "stars"},
                       timestamp_unit="ms")
    ds = read_tables(tmp_path, cfg, min_rating=3)
    assert list(ds.items["title"]) == ["Heat, 1995", 'Say "hi"']
    assert ds.interactions[["user_id", "item_id"]].values.tolist() == [["a", "m1"], ["b", "m2"]]
    assert ds.interactions["timestamp"].tolist() == [TS("2023-11-14 22:13:20"), TS("2023-11-14 22:13:22")]
    assert not ds.source.logged_negatives
    with pytest.raises(DataError, match="no interaction is rated 5"):
        read_tables(tmp_path, cfg, min_rating=5)


def test_parquet_with_numbers_and_datetimes(tmp_path):
    items = pd.DataFrame({"item_id": [10, 20], "title": ["A", "B"], "category": ["x", None]})
    items.to_parquet(tmp_path / "items.parquet")
    stamps = pd.to_datetime(["2024-01-01 12:00", "2024-01-01 12:00", "2024-01-02 08:00"]).tz_localize("Europe/Berlin")
    pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 20, 20], "timestamp": stamps, "label": [True, False, True],
                  "impression_id": ["a", "a", "b"]}).to_parquet(tmp_path / "interactions.parquet")
    cfg = TablesParams(items="items.parquet", interactions="interactions.parquet",
                       item_columns={"item_id": "item_id", "title": "title", "category": "category"},
                       interaction_columns={"user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp",
                                            "label": "label", "impression_id": "impression_id"})
    ds = read_tables(tmp_path, cfg)
    assert ds.items["item_id"].tolist() == ["10", "20"] and ds.items["category"].tolist() == ["x", ""]
    assert ds.interactions["user_id"].tolist() == ["1", "1", "2"]
    assert ds.interactions["label"].tolist() == [1, 0, 1]
    assert ds.impressions["timestamp"].tolist() == [TS("2024-01-01 11:00"), TS("2024-01-02 07:00")]
    assert str(ds.impressions["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert ds.source.logged_negatives


def test_timestamp_forms(tmp_path):
    rows = [
        HEAD,
        ["u1", "i1", "2024-05-01 12:00:00"],  # naive: UTC
        ["u1", "i2", "2024-05-01T12:00:00+02:00"],
        ["u2", "i1", "2024-05-01T12:00:00Z"],
        ["u2", "i2", "2024-05-01T12:00:00.5-0130"],
        ["u3", "i1", "2024-05-02"],
    ]
    ds = read_tables(folder_with(tmp_path, events=rows), TablesParams())
    got = dict(zip(ds.interactions["user_id"] + ds.interactions["item_id"], ds.interactions["timestamp"]))
    assert got == {"u1i1": TS("2024-05-01 12:00"), "u1i2": TS("2024-05-01 10:00"), "u2i1": TS("2024-05-01 12:00"),
                   "u2i2": TS("2024-05-01 13:30:00.5"), "u3i1": TS("2024-05-02")}
    # auto: epoch seconds, or milliseconds where the number is above 1e11
    rows = [HEAD, ["u1", "i1", "1700000000"], ["u1", "i2", "1700000000500"]]
    ds = read_tables(folder_with(tmp_path, events=rows), TablesParams())
    assert ds.interactions["timestamp"].tolist() == [TS("2023-11-14 22:13:20"), TS("2023-11-14 22:13:20.5")]


def test_all_positive_labels_are_a_positive_only_log(tmp_path):
    rows = [[*HEAD, "label"], ["u1", "i1", "1700000000", "1.0"], ["u1", "i2", "1700000001", "TRUE"]]
    cfg = TablesParams(interaction_columns=columns(label="label"))
    ds = read_tables(folder_with(tmp_path, events=rows), cfg)
    assert ds.interactions["label"].tolist() == [1, 1]
    assert not ds.source.logged_negatives
    # with an impression_id too: no logged non-click, so still one impression per event
    all_clicked = [CLICKS[0], *[[*row[:3], "1", row[4]] for row in CLICKS[1:]]]
    ds = read_tables(clicks_folder(tmp_path, all_clicked), CUSTOM)
    assert ds.impressions["impression_id"].tolist() == ["u8#0", "u8#1", "u7#0", "u7#1"]
    assert not ds.source.logged_negatives


def test_csv_cells_are_kept_verbatim(tmp_path):
    # BOM, CRLF, quoted commas; ids made of digits keep their leading zeros ('007' is not 7)
    (tmp_path / "items.csv").write_bytes(b'\xef\xbb\xbfitem_id,title\r\n007,"Bond, James"\r\n010,NA\r\n')
    write(tmp_path / "interactions.csv", [HEAD, ["0042", "007", "1700000000"], ["0042", "010", "1700000001"]])
    ds = read_tables(tmp_path, TablesParams())
    assert ds.items[["item_id", "title"]].values.tolist() == [["007", "Bond, James"], ["010", "NA"]]
    assert ds.interactions["user_id"].tolist() == ["0042", "0042"]


# --- bad input: each error names the file, the line and the column ------------------------------------------------


def test_missing_file(tmp_path):
    write(tmp_path / "items.csv", ITEMS)
    msg = error(tmp_path)
    assert "missing file interactions.csv" in msg and str(tmp_path) in msg


def test_empty_file(tmp_path):
    folder_with(tmp_path)
    (tmp_path / "interactions.csv").write_text("\n  \n")
    assert "file is empty" in (msg := error(tmp_path)) and "interactions.csv" in msg


def test_header_without_rows(tmp_path):
    msg = error(folder_with(tmp_path, events=EVENTS[:1]))
    assert "header but no rows" in msg and "interactions.csv" in msg


def test_unsupported_extension(tmp_path):
    folder_with(tmp_path, names=("items.xlsx", "interactions.csv"))
    msg = error(tmp_path, TablesParams(items="items.xlsx"))
    assert "items.xlsx" in msg and "'.xlsx'" in msg and ".csv, .tsv, .parquet" in msg


def test_mapped_column_missing(tmp_path):
    folder = clicks_folder(tmp_path, [["uid", "sku", "when", "clicked", "session"], *CLICKS[1:]])
    msg = error(folder, CUSTOM)
    assert "clicks.csv" in msg and "'ts'" in msg and "'uid', 'sku', 'when', 'clicked', 'session'" in msg
    assert "data.tables.interaction_columns.timestamp" in msg


def test_unknown_mapping_key(tmp_path):
    cfg = TablesParams(item_columns={"item_id": "item_id", "title": "title", "description": "text"})
    msg = error(folder_with(tmp_path), cfg)
    assert "unknown key(s) description" in msg and "data.tables.item_columns" in msg
    assert "item_id, title, text, category, subcategory" in msg


def test_required_mapping_set_to_null(tmp_path):
    cfg = TablesParams(item_columns={"item_id": "item_id", "title": None})
    assert "data.tables.item_columns.title" in error(folder_with(tmp_path), cfg)


def test_blank_title(tmp_path):
    items = [ITEMS[0], ITEMS[1], [], ["i2", "  ", "", ""], ITEMS[3]]  # the blank line 3 is skipped but counted
    msg = error(folder_with(tmp_path, items=items))
    assert "empty title" in msg and "items.csv, line 4, column 'title'" in msg


def test_whitespace_lines_keep_line_numbers(tmp_path):
    items = [ITEMS[0], ITEMS[1], ["   "], ITEMS[2], [], ["i4", "", "", ""]]  # pyarrow refuses "   ": C engine reads
    msg = error(folder_with(tmp_path, items=items))
    assert "empty title" in msg and "items.csv, line 6, column 'title'" in msg


def test_blank_title_in_parquet_names_the_row(tmp_path):
    pd.DataFrame({"item_id": ["a", "b"], "title": ["A", None]}).to_parquet(tmp_path / "items.parquet")
    write(tmp_path / "interactions.csv", EVENTS)
    msg = error(tmp_path, TablesParams(items="items.parquet"))
    assert "empty title" in msg and "items.parquet, line 2, column 'title'" in msg


def test_duplicate_item_id(tmp_path):
    msg = error(folder_with(tmp_path, items=[*ITEMS, ["i2", "Other hat", "", ""]]))
    assert "duplicate id 'i2' (first seen on line 3)" in msg and "items.csv, line 5, column 'item_id'" in msg


def test_dangling_item_reference(tmp_path):
    msg = error(folder_with(tmp_path, events=[*EVENTS, ["u3", "i9", "1700000300"]]))
    assert "'i9'" in msg and "not in items.csv" in msg and "interactions.csv, line 5, column 'item_id'" in msg


def test_bad_label(tmp_path):
    folder = clicks_folder(tmp_path, [*CLICKS, ["u8", "S2", "2024-05-01 09:30:00", "maybe", "p2"]])
    msg = error(folder, CUSTOM)
    assert "label must be 0 or 1" in msg and "'maybe'" in msg and "clicks.csv, line 6, column 'clicked'" in msg


def test_non_numeric_timestamp(tmp_path):
    msg = error(folder_with(tmp_path, events=[*EVENTS, ["u3", "i1", "17000x0000"]]))
    assert "not an epoch number ('17000x0000')" in msg and "interactions.csv, line 5, column 'timestamp'" in msg
    events = [EVENTS[0], ["u1", "i1", "2024-05-01"], ["u1", "i2", "2024-13-01"]]
    msg = error(folder_with(tmp_path, events=events))
    assert "not an ISO-8601 date" in msg and "interactions.csv, line 3, column 'timestamp'" in msg


def test_future_timestamp(tmp_path):
    msg = error(folder_with(tmp_path, events=[*EVENTS, ["u3", "i1", "4102444800"]]))
    assert "in the future" in msg and "interactions.csv, line 5, column 'timestamp'" in msg
    folder = folder_with(tmp_path, events=[*EVENTS[:2], ["u3", "i1", "1700000000"]])
    msg = error(folder, TablesParams(timestamp_unit="ms"))
    assert "before 1990" in msg and "line 2" in msg  # seconds read as milliseconds


def test_invalid_utf8(tmp_path):
    folder_with(tmp_path)
    (tmp_path / "items.csv").write_bytes(b"item_id,title\ni1,Red\ni2,Caf\xe9 cr\xe8me\n")
    msg = error(tmp_path)
    assert "not valid UTF-8" in msg and "items.csv, line 3" in msg


def test_ragged_row(tmp_path):
    msg = error(folder_with(tmp_path, events=[*EVENTS[:2], ["u2", "i2", "1700000100", "extra"]]))
    assert "interactions.csv, line 3" in msg and "Expected 3 fields" in msg


def test_inconsistent_user_within_impression(tmp_path):
    clicks = [*CLICKS[:3], ["u9", "S3", "2024-05-01T12:00:00+02:00", "0", "p1"]]
    msg = error(clicks_folder(tmp_path, clicks), CUSTOM)
    assert "impression 'p1' has user_id 'u9' here but 'u7' on line 2" in msg
    assert "clicks.csv, line 4, column 'uid'" in msg


def test_inconsistent_time_within_impression(tmp_path):
    clicks = [*CLICKS[:3], ["u7", "S3", "2024-05-01T12:05:00+02:00", "0", "p1"]]
    msg = error(clicks_folder(tmp_path, clicks), CUSTOM)
    assert "has timestamp '2024-05-01 10:05:00+00:00' here but '2024-05-01 10:00:00+00:00' on line 2" in msg
    assert "clicks.csv, line 4, column 'ts'" in msg


def test_duplicate_candidate_in_impression(tmp_path):
    clicks = [*CLICKS, ["u8", "S1", "2024-05-01 09:30:00", "0", "p2"]]
    msg = error(clicks_folder(tmp_path, clicks), CUSTOM)
    assert "item listed twice in one impression ('S1')" in msg and "clicks.csv, line 6, column 'sku'" in msg


def test_duplicate_event(tmp_path):
    msg = error(folder_with(tmp_path, events=[*EVENTS, ["u2", "i2", "1700000100"]]))
    assert "duplicate event" in msg and "interactions.csv, line 5, column 'item_id'" in msg


def test_label_without_impression_id(tmp_path):
    cfg = TablesParams(interaction_columns={"user_id": "uid", "item_id": "sku", "timestamp": "ts", "label": "clicked"},
                       items="products.csv", interactions="clicks.csv", item_columns=CUSTOM.item_columns)
    msg = error(clicks_folder(tmp_path, CLICKS), cfg)
    assert "without an impression_id column" in msg and "clicks.csv, line 3, column 'clicked'" in msg
    assert "data.tables.interaction_columns.impression_id" in msg


def test_blank_user(tmp_path):
    msg = error(folder_with(tmp_path, events=[*EVENTS, [" ", "i1", "1700000300"]]))
    assert "empty user_id" in msg and "interactions.csv, line 5, column 'user_id'" in msg


def test_non_numeric_rating(tmp_path):
    rows = [[*HEAD, "r"], ["u1", "i1", "1700000000", "5"], ["u1", "i2", "1700000001", "five"]]
    cfg = TablesParams(interaction_columns=columns(rating="r"))
    msg = error(folder_with(tmp_path, events=rows), cfg)
    assert "is not a number ('five')" in msg and "interactions.csv, line 3, column 'r'" in msg
