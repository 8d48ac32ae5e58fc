"""Great Expectations validation of the canonical tables: one test per bad-input case."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from llmrec.data.contract import Dataset
from llmrec.errors import ValidationFailed
from llmrec.validation import Failure, ValidationResult, validate_dataset

T0 = pd.Timestamp("2019-11-14 08:00", tz="UTC")


def make_dataset(n_items: int = 12, n_impressions: int = 8, n_candidates: int = 5) -> Dataset:
    """A small dataset that honours the contract (ctr 0.2, every history non-empty)."""
    item_ids = [f"N{i}" for i in range(n_items)]
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"headline number {i}" for i in range(n_items)],
            "text": [""] * n_items,
            "category": ["news", "sports", "finance"] * (n_items // 3),
            "subcategory": ["misc"] * n_items,
        }
    )
    imp_ids = [f"I{j}" for j in range(n_impressions)]
    users = [f"U{j % 3}" for j in range(n_impressions)]
    stamps = [T0 + pd.Timedelta(hours=j) for j in range(n_impressions)]
    impressions = pd.DataFrame(
        {
            "impression_id": imp_ids,
            "user_id": users,
            "timestamp": stamps,
            "history": [f"N{j} N{j + 1}" for j in range(n_impressions)],
        }
    )
    rows = [
        (imp_ids[j], users[j], item_ids[(j + k) % n_items], stamps[j], int(k == 0))
        for j in range(n_impressions)
        for k in range(n_candidates)
    ]
    interactions = pd.DataFrame(rows, columns=["impression_id", "user_id", "item_id", "timestamp", "label"])
    interactions["label"] = interactions["label"].astype("int8")
    return Dataset(items, impressions, interactions)


def failure(result: ValidationResult, table: str, expectation: str, column: str | None) -> Failure:
    """The one failure for (table, expectation, column), checked to be named in the summary."""
    found = [f for f in result.failures if (f.table, f.expectation, f.column) == (table, expectation, column)]
    assert len(found) == 1, result.summary()
    line = next(x for x in result.summary().splitlines() if expectation in x and f" {column or '-'} " in x)
    assert f" {table} " in line
    assert any(repr(e)[:20] in line for e in found[0].examples)
    return found[0]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[ValidationResult, Path]:
    out = tmp_path_factory.mktemp("clean")
    return validate_dataset(make_dataset(), out), out


def test_clean_dataset_passes(clean: tuple[ValidationResult, Path]) -> None:
    result, _ = clean
    assert result.success, result.summary()
    assert result.failures == []
    assert set(result.statistics) == {"items", "impressions", "interactions"}
    assert all(s["evaluated"] == s["successful"] > 0 for s in result.statistics.values())
    result.raise_for_errors()  # no exception


def test_reports_are_written(clean: tuple[ValidationResult, Path]) -> None:
    result, out = clean
    assert result.docs_path == str(out / "data_docs" / "index.html")
    assert Path(result.docs_path).is_file()
    saved = json.loads((out / "validation.json").read_text())
    assert saved == json.loads(json.dumps(result.to_dict()))
    assert saved["success"] is True


def test_duplicate_item_id(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.items.loc[3, "item_id"] = "N2"
    f = failure(validate_dataset(ds, tmp_path), "items", "expect_column_values_to_be_unique", "item_id")
    assert f.severity == "error" and f.unexpected_count == 2 and "N2" in f.examples


def test_dangling_item_in_interactions(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.interactions.loc[7, "item_id"] = "N999"
    result = validate_dataset(ds, tmp_path)
    f = failure(result, "interactions", "expect_column_values_to_be_in_set", "item_id")
    assert f.unexpected_count == 1 and f.examples == ["N999"]
    assert not result.success


def test_dangling_impression_in_interactions(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.interactions.loc[0, "impression_id"] = "I404"
    f = failure(validate_dataset(ds, tmp_path), "interactions", "expect_column_values_to_be_in_set", "impression_id")
    assert f.examples == ["I404"]


def test_dangling_history_entry(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.impressions.loc[2, "history"] = "N1 GHOST N3"
    f = failure(validate_dataset(ds, tmp_path), "impressions", "expect_column_values_to_be_in_set", "history")
    assert f.unexpected_count == 1 and f.examples == ["GHOST"]


def test_empty_title(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.items.loc[4, "title"] = ""
    f = failure(validate_dataset(ds, tmp_path), "items", "expect_column_value_lengths_to_be_between", "title")
    assert f.severity == "error" and f.examples == [""]


def test_bad_label_value(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.interactions.loc[5, "label"] = 2
    f = failure(validate_dataset(ds, tmp_path), "interactions", "expect_column_values_to_be_in_set", "label")
    assert f.unexpected_count == 1 and 2 in f.examples


def test_null_user_id(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.interactions.loc[6, "user_id"] = None
    f = failure(validate_dataset(ds, tmp_path), "interactions", "expect_column_values_to_not_be_null", "user_id")
    assert f.unexpected_count == 1 and f.examples == [None]


def test_duplicate_impression_item_pair(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.interactions.loc[1, "item_id"] = ds.interactions.loc[0, "item_id"]  # same impression I0
    f = failure(
        validate_dataset(ds, tmp_path), "interactions", "expect_compound_columns_to_be_unique", "impression_id,item_id"
    )
    assert f.unexpected_count == 2
    assert {"impression_id": "I0", "item_id": "N0"} in f.examples


def test_missing_column(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.items = ds.items.drop(columns=["subcategory"])
    f = failure(validate_dataset(ds, tmp_path), "items", "expect_table_columns_to_match_set", None)
    assert "missing: subcategory" in f.examples


def test_warnings_do_not_fail(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.impressions["history"] = ""
    ds.interactions["label"] = ds.interactions["label"] * 0  # ctr 0.0
    result = validate_dataset(ds, tmp_path)
    assert result.success, result.summary()
    assert {(f.table, f.column) for f in result.warnings} == {("impressions", "history"), ("interactions", "label")}
    assert result.errors == []


def test_raise_for_errors(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.items.loc[3, "item_id"] = "N2"
    result = validate_dataset(ds, tmp_path)
    with pytest.raises(ValidationFailed) as info:
        result.raise_for_errors()
    assert "expect_column_values_to_be_unique" in str(info.value)
    assert info.value.report_path == result.docs_path


def test_empty_table(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.items = ds.items.iloc[:0]
    result = validate_dataset(ds, tmp_path)
    failure(result, "items", "expect_table_row_count_to_be_between", None)
    assert not result.success


def test_label_must_be_integer(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.interactions["label"] = ds.interactions["label"].astype("float64")
    f = failure(validate_dataset(ds, tmp_path), "interactions", "expect_column_values_to_be_in_type_list", "label")
    assert f.examples == ["float64"]


def test_future_timestamp_is_an_error(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.impressions.loc[2, "timestamp"] = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=30)
    f = failure(validate_dataset(ds, tmp_path), "impressions", "expect_column_values_to_be_between", "timestamp")
    assert f.severity == "error" and f.unexpected_count == 1


def test_duplicate_events_and_few_clicks_are_warnings(tmp_path: Path) -> None:
    ds = make_dataset()
    dup = ds.interactions.iloc[[0]].assign(impression_id="I1")  # same user/item/time logged under another impression
    ds.interactions = pd.concat([ds.interactions, dup], ignore_index=True)
    ds.interactions.loc[ds.interactions["impression_id"].isin(["I2", "I3", "I4", "I5", "I6"]), "label"] = 0
    result = validate_dataset(ds, tmp_path)
    assert result.success, result.summary()
    checks = {f.expectation for f in result.warnings}
    assert "expect_compound_columns_to_be_unique" in checks
    assert any(f.column == "label" and f.expectation == "expect_column_values_to_be_in_set" for f in result.warnings)


def test_positive_only_source_checks_labels_and_skips_click_rate(tmp_path: Path) -> None:
    from llmrec.data.contract import SourceInfo

    ds = make_dataset(n_candidates=1)
    ds.impressions["history"] = ""
    ds.source = SourceInfo(format="tables", explicit_history=False, logged_negatives=False)
    result = validate_dataset(ds, tmp_path)
    assert result.success and result.warnings == [], result.summary()  # ctr 1.0 and empty histories are normal here
    ds.interactions.loc[0, "label"] = 0
    f = failure(validate_dataset(ds, tmp_path / "bad"), "interactions", "expect_column_values_to_be_in_set", "label")
    assert f.severity == "error"


def test_data_docs_read_offline_and_say_what_the_cli_says(tmp_path: Path) -> None:
    """Data Docs were blank offline (their tables come from CDN scripts) and said "Failed" where the CLI said
    "passed, 2 warnings"; the CLI table printed `np.float64(0.0)`."""
    import re

    ds = make_dataset()
    ds.impressions["history"] = ""
    ds.interactions["label"] = ds.interactions["label"] * 0  # click-through rate 0.0: a warning
    result = validate_dataset(ds, tmp_path)
    assert "np.float64" not in result.summary() and "  0.0" in result.summary()
    index = (tmp_path / "data_docs" / "index.html").read_text()
    body = index[index.find("<body") :]
    static = body[: body.find("<script")]  # the top of the page, shown whether or not any script loads
    assert f"data validation passed, {len(result.warnings)} warning(s)" in static and len(result.warnings) == 3
    links = dict(re.findall(r'<li><a href="([^"]+)">([^<]+)</a>', static))
    assert set(links.values()) >= {"items", "impressions", "interactions"}
    assert all((tmp_path / "data_docs" / href).is_file() for href in links)
    page = next(tmp_path / "data_docs" / href for href, name in links.items() if name == "interactions")
    assert "llmrec: interactions passed, 1 warning(s)" in page.read_text()
