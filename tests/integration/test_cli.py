"""The command line as a user meets it: help texts, clear errors, exit codes."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

from llmrec.cli import app

runner = CliRunner()


def test_help_lists_every_stage():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("generate", "ingest", "validate", "version", "train", "evaluate", "register", "drift", "promote", "retrain", "demo", "monitor"):
        assert command in result.output


def test_library_never_imports_prefect():
    code = (
        "import sys, llmrec.cli, llmrec.pipeline, llmrec.training.cross_encoder, llmrec.tracking, llmrec.validation, llmrec.drift; "
        "assert not [m for m in sys.modules if m.startswith('prefect')], 'prefect imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ingest_unknown_folder_is_a_clear_error(tmp_path):
    (tmp_path / "ratings.txt").write_text("user,item\n")
    result = runner.invoke(app, ["ingest", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "no known dataset format" in result.output
    assert "news.tsv" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_bad_override_is_a_clear_error():
    result = runner.invoke(app, ["--set", "train.lr=-1", "train"])
    assert result.exit_code == 1
    assert "train.lr" in result.output


def test_an_unknown_setting_suggests_the_one_meant():
    result = runner.invoke(app, ["--set", "train.steps=100", "train"])
    assert result.exit_code == 1 and "train.steps: Extra inputs are not permitted (did you mean train.max_steps?)" in result.output
    result = runner.invoke(app, ["--set", "trian.max_steps=100", "train"])
    assert result.exit_code == 1 and "trian: Extra inputs are not permitted (did you mean train" in result.output


def test_every_page_or_section_an_error_names_exists():
    """The MIND loader's fix named a README section ('Bring your own data') that did not exist; fixes now
    point to docs pages, which must exist too."""
    import re

    root = REPO
    readme = (root / "README.md").read_text()
    headings = set(re.findall(r"^#+ (.+?)\s*$", readme, flags=re.M))
    source = "\n".join(p.read_text() for p in (root / "llmrec").rglob("*.py"))
    sections = set(re.findall(r"README '([^']+)'", source)) | set(re.findall(r'README "([^"]+)"', source))
    pages = set(re.findall(r"\b(docs/[a-z0-9_-]+\.md)\b", source))
    assert "docs/your-data.md" in pages  # the loaders' fixes point there
    assert sections <= headings, f"README sections named but missing: {sorted(sections - headings)}"
    assert all((root / page).is_file() for page in pages), f"pages named but missing: {sorted(p for p in pages if not (root / p).is_file())}"


def test_validate_reports_dangling_items_and_exits_1(tmp_path, tiny_world, monkeypatch):
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "mind"
    shutil.copytree(tiny_world / "period1", folder)
    news = (folder / "news.tsv").read_text().splitlines(keepends=True)
    clicked = pd.read_csv(folder / "behaviors.tsv", sep="\t", header=None)[4].str.split().explode().str.rsplit("-", n=1).str[0]
    removed_line = next(line for line in news if line.split("\t")[0] in set(clicked))
    removed = removed_line.split("\t")[0]
    (folder / "news.tsv").write_text("".join(line for line in news if line is not removed_line))
    result = runner.invoke(app, ["ingest", str(folder)])  # the loader catches it first, naming the line
    assert result.exit_code == 1 and "behaviors.tsv, line" in result.output and removed in result.output

    (folder / "news.tsv").write_text("".join(news))
    assert runner.invoke(app, ["ingest", str(folder)]).exit_code == 0
    items = pd.read_parquet("outputs/prepared/items.parquet")  # tables edited behind the loader's back
    items[items["item_id"] != removed].to_parquet("outputs/prepared/items.parquet", index=False)
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 1
    assert "ValidationFailed" in result.output
    assert removed in result.output  # the offending id is shown
    assert Path("outputs/validation/validation.json").is_file()


def test_generate_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert runner.invoke(app, ["generate", "--preset", "tiny", "--out", str(out), "--period", "1"]).exit_code == 0
    assert (a / "period1" / "behaviors.tsv").read_bytes() == (b / "period1" / "behaviors.tsv").read_bytes()
    assert not (a / "period2").exists()


def test_retrain_alert_prints_the_run_and_exits_1(monkeypatch):
    """The flow ended Failed with a PromotionAlert: the CLI shows what was recorded, then fails."""
    import llmrec.cli as cli
    from llmrec.errors import PromotionAlert

    summary = {
        "evaluation": {"markdown": "| ranker | ndcg@10 |"},
        "registered": {"name": "llmrec", "version": "2"},
        "data_version": {"dvc_md5": "abc.dir", "git_revision": "0123456789abcdef"},
        "drift": {"summary": "DRIFT detected: 8/12 features drifted"},
        "decision": {"summary": "decision: KEEP (rule: champion-holds)"},
    }

    def flow(params_file, overrides):
        raise PromotionAlert("ALERT: challenger v2 is not better than champion v1", summary=summary)

    monkeypatch.setattr(cli, "_retrain_flow", lambda: flow)
    result = runner.invoke(app, ["retrain"])
    assert result.exit_code == 1
    assert "DRIFT detected" in result.output and "rule: champion-holds" in result.output
    assert "ALERT: challenger v2" in result.output and "Traceback" not in result.output


def test_no_stage_reads_tables_of_a_failed_ingest_or_of_a_changed_source(tmp_path, tiny_world, monkeypatch):
    """validate after a failed ingest refused the old tables (it validated them and said "passed" before)."""
    from llmrec import pipeline
    from llmrec.config import load_params
    from llmrec.errors import DataError

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "mind"
    shutil.copytree(tiny_world / "period1", folder)
    assert runner.invoke(app, ["ingest", str(folder)]).exit_code == 0
    behaviors = folder / "behaviors.tsv"
    good = behaviors.read_text()
    lines = good.splitlines(keepends=True)
    behaviors.write_text("".join(lines[:3]) + lines[3].rsplit("\t", 1)[0] + "\n" + "".join(lines[4:]))  # a truncated line
    failed = runner.invoke(app, ["ingest", str(folder)])
    assert failed.exit_code == 1 and "behaviors.tsv, line 4" in failed.output

    params = ["--set", f"data.path={folder}"]
    result = runner.invoke(app, [*params, "validate"])
    assert result.exit_code == 1 and "passed" not in result.output
    assert "the last ingest of" in result.output and "failed" in result.output and "behaviors.tsv, line 4" in result.output
    with pytest.raises(DataError, match="the last ingest of .* failed"):
        pipeline.run_train(load_params("none.yaml", [f"data.path={folder}"]), progress=False)

    behaviors.write_text(good)  # fixed and ingested again: validate runs
    assert runner.invoke(app, ["ingest", str(folder)]).exit_code == 0
    assert runner.invoke(app, [*params, "validate"]).exit_code == 0
    behaviors.write_text(good + lines[0].replace("\t", "9\t", 1))  # the source changed since: refused until ingested again
    result = runner.invoke(app, [*params, "validate"])
    assert result.exit_code == 1 and "the source changed since it was ingested (behaviors.tsv)" in result.output
    with pytest.raises(DataError, match="the source changed since it was ingested"):
        pipeline.run_version(load_params("none.yaml", [f"data.path={folder}"]))


def test_the_demo_trains_the_hybrid_at_its_budget_unless_told_otherwise(project, monkeypatch):
    """The demo's default model (the two-tower) ranked below the zero-shot backbone it starts from."""
    import llmrec.cli as cli

    class Stop(Exception):
        pass

    seen = []

    def first_round():  # what the retrain flow would get, then stop before training
        seen.append(cli.State.params())
        raise Stop

    monkeypatch.setattr(cli, "_retrain_once", first_round)
    cases = [([], ("hybrid", "cpu-3min")), (["--budget", "cpu-10min"], ("hybrid", "cpu-10min")),
             (["--set", "model.type=two-tower"], ("two-tower", "cpu-3min"))]
    for args, expected in cases:
        result = runner.invoke(app, [*args, "demo", "--preset", "tiny"])
        assert isinstance(result.exception, Stop), result.output
        assert (seen[-1].model.type, seen[-1].budget) == expected
    assert seen[0].train.max_steps == 600 and seen[0].train.eval_every == 100  # the budget's length, validated
