"""The ten kinds of bad input: `llmrec ingest` names file, line/column and problem; nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmrec.cli import app

MOVIES = 'movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n2,"City of Lost Children, The (1995)",Drama\n3,Heat (1995),Crime\n'
RATINGS = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,3.5,964982931\n2,3,5.0,964983000\n2,1,2.0,964984000\n"


def _replace_line(text: str, lineno: int, new: str) -> str:
    lines = text.splitlines()
    lines[lineno - 1] = new
    return "\n".join(lines) + "\n"


# (case, file to corrupt, how, expected file in message, line, words that must appear)
CASES = [
    ("truncated line", "ratings.csv", lambda t: _replace_line(t, 3, "1,2,3.5"), "ratings.csv", 3, ["found 3"]),
    ("wrong separator", "ratings.csv", lambda t: t.replace(",", ";"), "ratings.csv", 1, ["separator"]),
    ("wrong encoding", "movies.csv", lambda t: t.replace("Heat", "H\udce9at"), "movies.csv", 4, ["utf-8"]),
    ("duplicate ids", "movies.csv", lambda t: t + "2,Another (1999),Drama\n", "movies.csv", 5, ["duplicate", "'2'"]),
    ("dangling item reference", "ratings.csv", lambda t: t + "3,42,4.0,964985000\n", "ratings.csv", 6, ["not in", "42"]),
    ("empty title", "movies.csv", lambda t: _replace_line(t, 4, "3,,Crime"), "movies.csv", 4, ["empty title"]),
    ("non-numeric rating", "ratings.csv", lambda t: _replace_line(t, 2, "1,1,four,964982703"), "ratings.csv", 2, ["not a number", "rating"]),
    ("future timestamp", "ratings.csv", lambda t: _replace_line(t, 5, "2,1,2.0,4102444800"), "ratings.csv", 5, ["future"]),
    ("empty file", "ratings.csv", lambda t: "", "ratings.csv", None, ["empty"]),
    ("missing file", "movies.csv", None, "movies.csv", None, ["missing file"]),
]


@pytest.mark.parametrize(("case", "target", "corrupt", "named", "line", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_clearly_and_writes_nothing(tmp_path: Path, monkeypatch, case, target, corrupt, named, line, words) -> None:
    data = tmp_path / "data" / "ml"
    data.mkdir(parents=True)
    (data / "movies.csv").write_text(MOVIES)
    (data / "ratings.csv").write_text(RATINGS)
    if corrupt is None:
        (data / target).unlink()
    else:
        text = corrupt((data / target).read_text())
        (data / target).write_bytes(text.encode("utf-8", "surrogateescape"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["--set", "data.path=data/ml", "ingest"])
    message = result.output
    assert result.exit_code == 1, message
    assert "Traceback" not in message
    assert named in message, message
    if line is not None:
        assert f"line {line}" in message, message
    for word in words:
        assert word.lower() in message.lower(), message
    assert "fix:" in message
    assert not (tmp_path / "outputs").exists(), "nothing downstream may be written"


def test_the_clean_fixture_ingests(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data" / "ml"
    data.mkdir(parents=True)
    (data / "movies.csv").write_text(MOVIES)
    (data / "ratings.csv").write_text(RATINGS)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["--set", "data.path=data/ml", "ingest"])
    assert result.exit_code == 0, result.output
    assert "found ml-latest data" in result.output
    assert (tmp_path / "outputs" / "prepared" / "interactions.parquet").is_file()


# --- data.bad_rows: real exports' quirks (issue 22 item 11) -------------------------------------------------------

U_ITEM = "".join(f"{i}|Movie {i} (1995)|01-Jan-1995||http://x|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n" for i in range(1, 6))


def test_a_trailing_empty_field_is_read_without_it(tmp_path: Path, monkeypatch) -> None:
    """A public ml-100k copy has a trailing tab on one line of u.data: it stopped the whole ingest."""
    data = tmp_path / "data" / "ml"
    data.mkdir(parents=True)
    rows = [f"{u}\t{i}\t4\t{880000000 + 60 * (u * 10 + i)}" for u in range(1, 4) for i in range(1, 6)]
    rows[4] += "\t"
    (data / "u.data").write_text("\n".join(rows) + "\n")
    (data / "u.item").write_text(U_ITEM)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["--set", "data.path=data/ml", "--set", "data.bad_rows=error", "ingest"])
    assert result.exit_code == 0, result.output
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "outputs" / "prepared" / "interactions.parquet")) == 15
    assert not (tmp_path / "outputs" / "prepared" / "quarantine.csv").exists()


def _ratings_of_an_absent_movie(tmp_path: Path, n_bad: int) -> Path:
    """ml-latest: 1,200 ratings, the last `n_bad` of a movie movies.csv does not have (as a public ml-latest-small copy)."""
    data = tmp_path / "data" / "ml"
    data.mkdir(parents=True)
    (data / "movies.csv").write_text(MOVIES)
    rows = [f"{u},{1 + (u + k) % 3},4.0,{964982703 + 100 * (3 * u + k)}" for u in range(1, 401) for k in range(3)]
    rows[-n_bad:] = [f"{900 + k},42,3.0,{964000000 + k}" for k in range(n_bad)]
    (data / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    return data


def test_a_few_bad_rows_are_quarantined_with_line_and_reason_and_counted(tmp_path: Path, monkeypatch) -> None:
    import json

    import pandas as pd

    _ratings_of_an_absent_movie(tmp_path, 1)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    strict = runner.invoke(app, ["--set", "data.path=data/ml", "--set", "data.bad_rows=error", "ingest"])
    assert strict.exit_code == 1 and "ratings.csv, line 1201" in strict.output and "not in movies.csv" in strict.output
    result = runner.invoke(app, ["--set", "data.path=data/ml", "ingest"])  # default: quarantine up to a small share
    assert result.exit_code == 0, result.output
    assert "left out 1 bad row(s) of 1,203" in result.output and "quarantine.csv" in result.output
    prepared = tmp_path / "outputs" / "prepared"
    quarantined = pd.read_csv(prepared / "quarantine.csv")
    assert quarantined[["line", "column"]].values.tolist() == [[1201, "movieId"]]
    assert quarantined["file"].str.endswith("ratings.csv").all() and "not in movies.csv ('42')" in quarantined["reason"].iat[0]
    assert len(pd.read_parquet(prepared / "interactions.parquet")) == 1199

    validated = runner.invoke(app, ["--set", "data.path=data/ml", "validate"])
    assert validated.exit_code == 0, validated.output
    assert "1 warning(s)" in validated.output and "bad_rows" in validated.output
    checks = json.loads((tmp_path / "outputs" / "validation" / "validation.json").read_text())
    assert checks["statistics"]["source"] == {"evaluated": 2, "successful": 1}  # the share is within the limit


def test_more_bad_rows_than_the_share_allows_stop_the_ingest(tmp_path: Path, monkeypatch) -> None:
    _ratings_of_an_absent_movie(tmp_path, 3)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["--set", "data.path=data/ml", "ingest"])
    assert result.exit_code == 1
    assert "ratings.csv, line 1199" in result.output and "3 of 1,203 rows read are bad" in result.output
    assert "data.max_bad_row_share 0.10%" in result.output and "line 1201" in result.output
    assert not (tmp_path / "outputs").exists()
    result = CliRunner().invoke(app, ["--set", "data.path=data/ml", "--set", "data.max_bad_row_share=0.01", "ingest"])
    assert result.exit_code == 0, result.output


def test_a_missing_column_is_called_that_not_a_truncated_line(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data" / "ml"
    data.mkdir(parents=True)
    (data / "u.data").write_text("".join(f"{u}\t{i}\t4\n" for u in range(1, 4) for i in range(1, 6)))  # no timestamps
    (data / "u.item").write_text(U_ITEM)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["--set", "data.path=data/ml", "ingest"])
    assert result.exit_code == 1
    assert "a missing column? every line has 3 fields: expected 4 tab-separated columns" in result.output, result.output
    assert "truncated" not in result.output
