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
