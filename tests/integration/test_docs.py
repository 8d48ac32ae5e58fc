"""The commands and examples of README.md and docs/*.md work as printed against the demo's own data.

Every shell command of the pages is read out of them (code blocks and inline `code`): each `llmrec`
command must parse (its subcommand and options exist), each `make` target must exist, version numbers
must be ones the demo registers, and the REST and MLflow examples are sent, as printed, to a model
whose catalogue is the demo's data (generated with the demo's preset and seed from params.yaml). Every
setting a page names exists, every docs page is linked from the README, and every relative link resolves.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]
DEMO_VERSIONS = {"1", "2"}  # `make demo` registers two versions


def shell_commands(text: str) -> list[list[str]]:
    """Every shell command of a markdown text, split as bash would: ```bash blocks (continued lines,
    multi-line quotes and `&&` chains included) and inline `code` spans that start with a command."""
    commands: list[list[str]] = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.DOTALL):
        buffer = ""
        for line in block.splitlines():
            buffer += line + "\n"
            if line.rstrip().endswith("\\"):
                continue
            try:
                tokens = shlex.split(buffer.replace("\\\n", " "), comments=True)
            except ValueError:  # a quote spans lines: read on
                continue
            commands += _chained(tokens)
            buffer = ""
    outside = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    for span in re.findall(r"`([^`\n]+)`", outside):
        if re.match(r"([A-Z_]+=\S+ )*(\.venv/bin/|curl |make |\. \.venv/bin/activate )", span):  # printed to be run, not mentioned
            commands += _chained(shlex.split(span))
    return [c for c in commands if c]


def _chained(tokens: list[str]) -> list[list[str]]:
    out, current = [], []
    for token in tokens:
        if token in ("&&", ";", "||"):
            out.append(current)
            current = []
        else:
            current.append(token)
    return [*out, current]


def _program(command: list[str]) -> tuple[str, list[str]]:
    """The program (without .venv/bin/ and leading VAR=value assignments) and its arguments."""
    while command and re.match(r"^[A-Z_]+=", command[0]):
        command = command[1:]
    return Path(command[0]).name, command[1:]


def page_commands(program: str, pages: list[Path] = PAGES) -> list[list[str]]:
    """The arguments of every command of `program` in the pages (README.md and docs/*.md), in page order."""
    return [args for page in pages for name, args in map(_program, shell_commands(page.read_text())) if name == program]


def _name(page: Path) -> str:
    return str(page.relative_to(REPO))


def test_extracts_the_commands_of_a_block_and_of_inline_code():
    text = (
        "```bash\n.venv/bin/llmrec serve --port 8000   # note\ncurl -s -X POST h:1/x \\\n  -d '{\"a\": [1,\n 2]}'\n```\n"
        "then `make up` and `X=1 .venv/bin/llmrec models list && dvc status`."
    )
    commands = [_program(c) for c in shell_commands(text)]
    assert commands == [
        ("llmrec", ["serve", "--port", "8000"]), ("curl", ["-s", "-X", "POST", "h:1/x", "-d", '{"a": [1,\n 2]}']),
        ("make", ["up"]), ("llmrec", ["models", "list"]), ("dvc", ["status"]),
    ]


def test_every_llmrec_command_of_the_pages_parses_and_names_demo_versions():
    from typer.testing import CliRunner

    from llmrec.cli import app
    from llmrec.config import load_params

    runner = CliRunner()
    commands = page_commands("llmrec")
    assert len(commands) >= 15  # the extraction works (19 when written)
    for args in commands:
        # --help stops before anything runs, after every option and subcommand was parsed (an unknown one exits 2)
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, f"command `llmrec {' '.join(args)}` does not parse: {result.output}"
        versions = [v for flag, v in itertools.pairwise(args) if flag == "--model-version" or (flag == "-m" and args[0] == "data")]
        versions += args[2:3] if args[:2] in (["models", "show"], ["models", "promote"]) else []
        for version in versions:
            assert version in DEMO_VERSIONS, f"`llmrec {' '.join(args)}` names a version the demo does not register"
        # the settings it sets exist and take the value (--help above does not load them)
        overrides = [v for flag, v in itertools.pairwise(args) if flag in ("--set", "-s")]
        budget = [f"budget={v}" for flag, v in itertools.pairwise(args) if flag in ("--budget", "-b")]
        load_params(REPO / "params.yaml", [*overrides, *budget])


def test_every_make_target_of_the_pages_exists():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.MULTILINE))
    commands = page_commands("make")
    assert {"demo", "test"} <= {goal for args in commands for goal in args}
    for args in commands:
        goals = [a for a in args if "=" not in a]
        assert set(goals) <= targets, f"`make {' '.join(args)}`: no such target"


def test_every_pytest_command_of_the_pages_selects_tests_as_printed():
    """`.venv/bin/python -m pytest -m "not e2e"` and the like: their markers exist and they select some tests, not all."""
    import subprocess
    import sys

    commands = [args[2:] for args in page_commands("python") if args[:2] == ["-m", "pytest"]]
    assert commands, "the README names no quick pytest loop"
    markers = {line.split(":")[0].strip().strip('"') for line in
               __import__("tomllib").loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]}
    for args in commands:
        expression = args[args.index("-m") + 1] if "-m" in args else ""
        words = set(re.findall(r"[a-z_0-9]+", expression)) - {"and", "or", "not"}
        assert words <= markers, f"`pytest {' '.join(args)}`: unknown markers {sorted(words - markers)}"
        out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *args], cwd=REPO,
                             capture_output=True, text=True, timeout=300).stdout
        selected = re.search(r"(\d+)(?:/(\d+))? tests? collected", out)
        assert selected, out[-2000:]
        assert 0 < int(selected[1]) < int(selected[2] or 0), f"`pytest {' '.join(args)}` selects {selected[0]}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO / target).resolve() for target in re.findall(r"\]\(([^)#\s]+)", README.read_text())}
    missing = [_name(page) for page in DOCS if page.resolve() not in linked]
    assert not missing, f"README.md does not link to {missing}"


def test_every_relative_link_of_the_pages_resolves():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            if not re.match(r"^[a-z]+:", target):  # http:, mailto: ...
                assert (page.parent / target).exists(), f"{_name(page)} links to {target}, which does not exist"


def test_every_bench_result_is_in_the_results_index():
    index = (REPO / "docs" / "results.md").read_text()
    for result in sorted((REPO / "bench" / "results").glob("*.md")):
        assert f"(../bench/results/{result.name})" in index, f"docs/results.md does not list bench/results/{result.name}"


SECTIONS = "synthetic|data|model|train|eval|drift|promotion|tracking|serve|batch"
NOT_SETTINGS = {  # dotted names the pages use that are MLflow tags of a model version, not settings
    "data.dvc_md5", "data.git_revision", "data.train_end", "data.end", "train.under_trained", "train.note",
}


def _is_setting(dotted: str) -> bool:
    """Whether `a.b.c` names a setting (or a section) of `Params`; entries of mappings (presets, columns) count."""
    from pydantic import BaseModel

    from llmrec.config import Params

    model: object = Params
    for part in dotted.split("."):
        if isinstance(model, type) and issubclass(model, BaseModel):
            if part not in model.model_fields:
                return False
            model = model.model_fields[part].annotation
        elif getattr(model, "__origin__", None) is dict:
            model = model.__args__[1]  # an entry of a mapping: any name
        else:
            return False
    return True


def test_every_setting_the_pages_name_exists():
    """`section.key` in backticks must be a setting of llmrec.config.Params (files and model tags aside)."""
    for page in PAGES:
        for span in re.findall(r"`([^`\n]+)`", page.read_text()):
            found = re.match(rf"^(?:{SECTIONS})\.[\w.<>*]+", span)
            if not found:
                continue
            dotted = found.group(0).removesuffix(".*")
            if dotted in NOT_SETTINGS or re.search(r"\.(json|md|html|csv|parquet|dvc|yaml|py)$", dotted):
                continue
            assert _is_setting(dotted), f"{_name(page)} names `{dotted}`, which is not a setting (llmrec/config.py)"


# --- the REST and MLflow examples, sent as printed to a model of the demo's data --------------------------------


@pytest.fixture(scope="module")
def demo_registry(tmp_path_factory, tiny_backbone):
    """A sqlite registry whose champion `llmrec` is a tiny two-tower with the demo's period-1 catalogue
    (the items every version the demo registers knows)."""
    from llmrec import tracking
    from llmrec.config import load_params
    from llmrec.data.mind import read_news
    from llmrec.data.synthetic import generate
    from llmrec.models.text import TextConfig
    from llmrec.models.two_tower import TwoTower

    params = load_params(REPO / "params.yaml")
    root = tmp_path_factory.mktemp("demo")
    syn = params.synthetic
    generate(root / "synthetic", syn.size(), syn.seed, (1,), collaborative=syn.collaborative)
    items = root / "items.parquet"
    read_news(root / "synthetic" / "period1" / "news.tsv").to_parquet(items, index=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        folder = TwoTower.from_backbone(tiny_backbone, TextConfig(max_history=20), 32, str(tiny_backbone), "cpu").save(root / "tt")
        registered = tracking.register_model(
            folder, items, model_name=params.tracking.model_name, experiment="docs", params={}, metrics={}, tags={}, root=root
        )
        tracking.set_alias(params.tracking.model_name, tracking.CHAMPION, registered.version, root=root)
    return root, params.tracking.model_name


def _curl(args: list[str]) -> tuple[str, dict]:
    url = next(a for a in args if re.match(r"^(https?://)?127\.0\.0\.1:\d+/", a))
    body = args[args.index("-d") + 1]
    return "/" + url.split("/", 3 if url.startswith("http") else 1)[-1], json.loads(body)


def test_rest_examples_of_the_pages_answer_on_the_demo_catalogue(demo_registry, monkeypatch):
    from fastapi.testclient import TestClient

    from llmrec.serving import create_app

    root, name = demo_registry
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # an earlier test's store must not answer
    examples = [_curl(args) for args in page_commands("curl") if any(":8000/" in a for a in args)]
    assert len(examples) >= 2
    with TestClient(create_app(name, poll_seconds=3600, root=root, device="cpu")) as client:
        client.app.state.holder.refresh()
        for path, body in examples:
            response = client.post(path, json=body)
            assert response.status_code == 200, f"example {body} -> {response.status_code} {response.text}"
            assert len(response.json()["items"]) == body["k"]


def test_mlflow_serving_example_of_the_pages_scores_on_the_demo_catalogue(demo_registry, monkeypatch):
    import mlflow

    root, name = demo_registry
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    examples = [_curl(args) for args in page_commands("curl") if any(":5001/invocations" in a for a in args)]
    served = [args for args in page_commands("mlflow") if args[:2] == ["models", "serve"]]
    assert len(examples) == 1 and len(served) == 1
    model_uri = served[0][served[0].index("-m") + 1]
    assert model_uri == f"models:/{name}@champion"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")  # as the printed command line does
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")  # (mlflow keeps the last one set in the process)
    split = examples[0][1]["dataframe_split"]
    frame = pd.DataFrame(split["data"], columns=split["columns"])
    scored = mlflow.pyfunc.load_model(model_uri).predict(frame)
    assert list(scored["item_id"]) == list(frame["item_id"]) and scored["score"].notna().all()


def test_yaml_examples_of_the_pages_are_valid_settings():
    """The params.yaml snippets of the pages load as settings."""
    from llmrec.config import Params

    blocks = [block for page in PAGES for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), flags=re.DOTALL)]
    assert blocks
    for block in blocks:
        Params.model_validate(yaml.safe_load(block))


def test_generate_and_ingest_commands_of_the_pages_run_as_printed(tmp_path, monkeypatch):
    """The cheap commands run for real, in page order, each page in an empty project folder (the rest parse, above)."""
    from typer.testing import CliRunner

    from llmrec.cli import app

    runner = CliRunner()
    ran = 0
    for page in PAGES:
        folder = tmp_path / page.stem
        folder.mkdir()
        monkeypatch.chdir(folder)
        for args in page_commands("llmrec", [page]):
            if args[0] in ("generate", "ingest"):
                result = runner.invoke(app, args)
                assert result.exit_code == 0, f"{_name(page)}: `llmrec {' '.join(args)}`: {result.output}"
                ran += 1
                if args[0] == "ingest":
                    assert (folder / "outputs" / "prepared" / "items.parquet").is_file()
    assert ran >= 2


def test_prefect_runs_of_the_pages_name_served_deployments_with_parameters_they_take():
    """`prefect deployment run NAME --params JSON` as printed: a deployment `make up` serves, parameters its flow takes."""
    from prefect.utilities.callables import parameter_schema

    from flows.batch import batch_recommend
    from flows.deploy import deployments
    from flows.monitor import monitor
    from flows.retrain import retrain
    from flows.settings import RetrainSettings
    from llmrec.config import load_params

    served = {d.name for d in deployments()}
    flows = {"retrain": retrain, "monitor": monitor, "batch-recommend": batch_recommend}
    runs = [args for args in page_commands("prefect") if args[:2] == ["deployment", "run"]]
    assert runs
    for args in runs:
        flow_name, deployment = args[2].split("/")
        assert deployment in served and flows[deployment].name == flow_name, args[2]
        given = json.loads(args[args.index("--params") + 1]) if "--params" in args else {}
        flow = flows[deployment]
        assert set(given) <= set(parameter_schema(flow.fn).properties), given
        if "settings" in given:
            RetrainSettings.model_validate(given["settings"])
        load_params(REPO / "params.yaml", given.get("overrides", []))
