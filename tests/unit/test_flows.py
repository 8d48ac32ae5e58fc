"""The flows' own logic without a Prefect server: the form -> overrides conversion, the parameter schemas
the UI renders, the cache keys, the retry condition and the monitor's choice of batch."""

from __future__ import annotations

import shutil
import typing

import pytest
from conftest import REPO

from flows.caching import digest, params_key
from flows.settings import FROM_PARAMS, RetrainSettings, to_overrides
from llmrec.config import DEFAULT_PARAMS, EvalParams, ModelParams, TrainParams, load_params
from llmrec.errors import ConfigError

PARAMS = REPO / DEFAULT_PARAMS


def test_an_untouched_form_changes_nothing():
    assert to_overrides(RetrainSettings()) == []
    assert load_params(PARAMS, to_overrides(RetrainSettings())) == load_params(PARAMS)


def test_every_form_field_reaches_its_param():
    form = RetrainSettings(
        dataset_path="data/other: batch", model_type="cross-encoder", max_steps=7, learning_rate=3e-5, batch_size=5,
        device="cpu", promotion_metric="mrr", min_gain=0.0, must_beat=["tfidf", "ease"],
    )
    p = load_params(PARAMS, to_overrides(form))
    assert p.data.path == "data/other: batch"  # YAML-quoted: the colon survives
    assert (p.model.type, p.train.max_steps, p.train.lr, p.train.batch_size, p.train.device) == ("cross-encoder", 7, 3e-5, 5, "cpu")
    assert (p.promotion.metric, p.promotion.min_gain, p.promotion.must_beat) == ("mrr", 0.0, ["tfidf", "ease"])
    default = load_params(PARAMS)
    assert p.model_copy(update={"data": default.data, "model": default.model, "train": default.train,
                                "promotion": default.promotion}) == default  # nothing else moved


def test_form_wins_over_the_budget_and_overrides_win_over_the_form():
    form = RetrainSettings(budget="cpu-10min", max_steps=50, learning_rate=1e-3)
    p = load_params(PARAMS, [*to_overrides(form), "train.lr=0.02"])
    assert p.budget == "cpu-10min" and p.model.type == "hybrid" and p.train.max_minutes == 30  # from the budget
    assert p.train.max_steps == 50  # the form beats the budget's 4000
    assert p.train.lr == 0.02  # the free-form override beats the form


@pytest.mark.parametrize("form, words", [
    (RetrainSettings(budget="gpu-8h"), "unknown budget 'gpu-8h'"),
    (RetrainSettings(min_gain=-0.5), "promotion.min_gain"),
])
def test_a_wrong_form_value_is_a_config_error(form, words):
    with pytest.raises(ConfigError, match=words):
        load_params(PARAMS, to_overrides(form))


def test_form_choices_are_llmrec_choices():
    choices = lambda annotation: set(typing.get_args(annotation)) - {FROM_PARAMS}
    fields = RetrainSettings.model_fields
    assert choices(fields["model_type"].annotation) == set(typing.get_args(ModelParams.model_fields["type"].annotation))
    assert choices(fields["device"].annotation) == set(typing.get_args(TrainParams.model_fields["device"].annotation))
    baselines = typing.get_args(EvalParams.model_fields["baselines"].annotation)[0]
    assert set(typing.get_args(typing.get_args(fields["must_beat"].annotation)[0])) == set(typing.get_args(baselines))
    metrics = choices(fields["promotion_metric"].annotation)
    for metric in metrics:  # each one is accepted by the params' own check
        assert load_params(PARAMS, [f"promotion.metric={metric}"]).promotion.metric == metric


def _no_any_of(node) -> bool:
    if isinstance(node, dict):
        return "anyOf" not in node and "oneOf" not in node and all(_no_any_of(v) for v in node.values())
    if isinstance(node, list):
        return all(_no_any_of(v) for v in node)
    return True


def test_parameter_schemas_are_plain_typed_fields_with_descriptions():
    """What the Prefect UI renders as a form: no Union (anyOf), a description and a literal default per field."""
    from prefect.utilities.callables import parameter_schema

    from flows.monitor import monitor
    from flows.retrain import retrain

    schema = parameter_schema(retrain.fn).model_dump_for_openapi()
    assert list(schema["properties"]) == ["params_file", "overrides", "settings"]
    form = schema["definitions"]["RetrainSettings"]["properties"]
    assert set(form) == set(RetrainSettings.model_fields)
    assert _no_any_of(schema)
    assert all(field.get("description") and "default" in field for field in form.values())
    assert form["model_type"]["enum"] == [FROM_PARAMS, "two-tower", "hybrid", "cross-encoder"]
    assert (form["max_steps"]["type"], form["max_steps"]["minimum"]) == ("integer", 0)
    assert form["learning_rate"]["exclusiveMaximum"] == 1 and form["must_beat"]["items"]["enum"]
    assert all(p.get("description") for p in schema["properties"].values())

    monitor_schema = parameter_schema(monitor.fn).model_dump_for_openapi()
    assert _no_any_of(monitor_schema)
    assert monitor_schema["properties"]["batch"]["default"] == "incoming"
    assert all(p.get("description") for p in monitor_schema["properties"].values())


def test_cache_keys_follow_only_the_params_a_stage_reads():
    base = load_params(PARAMS)
    train_key = lambda p: params_key(p, ("data", "model", "train"))
    assert train_key(load_params(PARAMS, ["tracking.experiment=other", "eval.max_impressions=5"])) == train_key(base)
    assert train_key(load_params(PARAMS, ["train.lr=0.002"])) != train_key(base)
    assert params_key(load_params(PARAMS, ["promotion.min_gain=0.1"]), ["promotion.metric"]) == params_key(base, ["promotion.metric"])


def test_digest_sees_changed_added_and_removed_files(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"1")
    before = digest([folder, tmp_path / "absent.json"])
    assert before[str(tmp_path / "absent.json")] == "missing"
    assert digest([folder, tmp_path / "absent.json"]) == before
    (folder / "a.bin").write_bytes(b"2")
    assert digest([folder]) != {str(folder): before[str(folder)]}
    (folder / "a.bin").write_bytes(b"1")
    (folder / "b.bin").write_bytes(b"")
    assert digest([folder]) != {str(folder): before[str(folder)]}


def test_only_service_errors_are_retried():
    from prefect.states import Failed

    from flows.retrain import _can_go_away
    from llmrec.errors import DataError, ModelError, PromotionAlert, TrackingError, ValidationFailed, VersioningError

    retried = lambda exc: _can_go_away(None, None, Failed(data=exc))
    assert retried(TrackingError("the MLflow store did not answer")) and retried(VersioningError("dvc push failed"))
    assert retried(ConnectionError("refused")) and retried(OSError("disk"))
    for exc in (ConfigError("x"), DataError("x"), ValidationFailed("x", summary="s"), ModelError("x"), PromotionAlert("x")):
        assert not retried(exc), exc


def test_train_timeout_follows_the_time_budget():
    from flows.retrain import train_timeout

    assert train_timeout(load_params(PARAMS, ["train.max_minutes=9"])) == 39 * 60
    assert train_timeout(load_params(PARAMS)) == 12 * 3600


def test_monitor_picks_the_newest_batch_it_has_not_judged(tmp_path, tiny_world, monkeypatch):
    from flows.monitor import newest_batch

    monkeypatch.chdir(tmp_path)
    params = load_params(PARAMS, ["data.path=data/synthetic"])
    inbox = tmp_path / "incoming"
    with pytest.raises(Exception, match="the batch folder does not exist"):
        newest_batch(inbox, params)
    inbox.mkdir()
    assert newest_batch(inbox, params) is None  # nothing arrived yet
    for name in ("2026-01-01", "2026-01-02"):
        shutil.copytree(tiny_world / "period2", inbox / name)
    assert newest_batch(inbox, params) == (inbox / "2026-01-02").resolve()
    assert newest_batch(inbox / "2026-01-01", params) == (inbox / "2026-01-01").resolve()  # one batch folder
    (tmp_path / "outputs" / "monitor").mkdir(parents=True)
    (tmp_path / "outputs" / "monitor" / "monitor.json").write_text(f'{{"batch": "{inbox / "2026-01-02"}"}}')
    assert newest_batch(inbox, params) is None  # judged by the last monitoring run
    shutil.copytree(tiny_world / "period2", tmp_path / "data" / "synthetic" / "2026-01-03")
    shutil.copytree(tiny_world / "period2", inbox / "2026-01-03")
    assert newest_batch(inbox, params) is None  # already added to data.path for retraining
    assert newest_batch(tmp_path / "data" / "synthetic" / "2026-01-03", params) is None


def test_prefect_yaml_parameters_fit_the_flow_signatures():
    """infra/prefect/prefect.yaml passes only parameters the flows take (the server would refuse others)."""
    import yaml
    from prefect.utilities.callables import parameter_schema

    from flows.batch import batch_recommend
    from flows.monitor import monitor
    from flows.retrain import retrain

    accepted = {"flows/retrain.py:retrain": set(parameter_schema(retrain.fn).properties),
                "flows/monitor.py:monitor": set(parameter_schema(monitor.fn).properties),
                "flows/batch.py:batch_recommend": set(parameter_schema(batch_recommend.fn).properties)}
    deployments = yaml.safe_load((REPO / "infra/prefect/prefect.yaml").read_text())["deployments"]
    monitors = [d for d in deployments if d["entrypoint"] == "flows/monitor.py:monitor"]
    assert monitors and all(s["parameters"] == {"batch": "incoming"} for d in monitors for s in d["schedules"])
    for deployment in deployments:
        given = set(deployment.get("parameters") or {}) | {k for s in deployment.get("schedules") or [] for k in s.get("parameters", {})}
        assert given <= accepted[deployment["entrypoint"]], deployment["name"]


def test_readme_override_examples_load_and_show_whole_in_prefects_display():
    """The README's override example failed every run (eval.retriever not in eval.baselines), and
    `prefect deployment run` printed it as 'eval.baselines=' (Rich markup ate '[popularity, random]').
    The examples now live in the README and docs/."""
    import re

    from rich.text import Text

    from llmrec.config import Params

    readme = "\n".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    examples = re.findall(r"`(?:--set )?([a-z_]+(?:\.[a-z_0-9]+)+=[^`]+)`", readme)
    examples += [o for block in re.findall(r'"overrides": (\[[^\]]*\])', readme) for o in __import__("json").loads(block)]
    examples = [e for e in examples if e.split(".")[0] in Params.model_fields]
    assert any(e.startswith("eval.baselines=") for e in examples)
    for example in examples:
        load_params(DEFAULT_PARAMS, [example])  # what the flow does first, with the run's overrides
        shown = repr([example])  # the parameters line of `prefect deployment run`, printed with Rich markup
        assert Text.from_markup(shown).plain == shown, f"Prefect's CLI shows {example!r} as {Text.from_markup(shown).plain}"


def test_served_deployments_have_their_inbox_and_say_at_capacity_once(tmp_path):
    """After `make up` the scheduled monitor failed (no incoming/ folder), and a busy runner logged
    "1 scheduled runs skipped (at capacity)" every 2 s."""
    import logging

    from flows.deploy import INBOX, OnceUntilChanged, prepare
    from flows.monitor import newest_batch

    prepare(tmp_path)
    params = load_params(DEFAULT_PARAMS, [f"data.path={tmp_path / 'data'}"])
    assert newest_batch(tmp_path / INBOX, params) is None  # nothing to judge yet: not an error

    now = [0.0]
    notice = OnceUntilChanged(every=600, clock=lambda: now[0])

    def passes(message: str) -> bool:
        return notice.filter(logging.LogRecord("prefect.runner", logging.INFO, __file__, 1, message, None, None))

    shown = []
    for second in range(0, 300, 2):
        now[0] = float(second)
        shown.append(passes("1 scheduled runs skipped (at capacity)"))
    assert shown.count(True) == 1
    assert passes("2 scheduled runs skipped (at capacity)")  # a change shows at once
    now[0] = 1000.0
    assert passes("2 scheduled runs skipped (at capacity)")  # and an unchanged one again after `every` seconds
