"""docs/params.md is what `python -m llmrec.params_doc` prints, and params.yaml sets every setting of `Params`."""

from __future__ import annotations

from conftest import REPO
from pydantic import BaseModel

from llmrec.config import Params
from llmrec.params_doc import COMMAND, missing_from, render, sections

PARAMS_MD = REPO / "docs" / "params.md"
PARAMS_YAML = REPO / "params.yaml"

# Settings the code has and params.yaml does not set yet (issue 21, item 4). Shrink it, never grow it: the test
# below fails when one of these is added to params.yaml (so it leaves this list) or another one goes missing.
NOT_YET_IN_PARAMS_YAML: list[str] = []


def test_docs_params_md_matches_the_code():
    assert PARAMS_MD.read_text() == render(PARAMS_YAML), f"docs/params.md is out of date: run `{COMMAND}`"


def test_params_yaml_sets_every_setting_of_the_params_model():
    assert missing_from(PARAMS_YAML) == NOT_YET_IN_PARAMS_YAML, (
        "params.yaml should set every setting of llmrec.config.Params (with a one-line comment); "
        "update NOT_YET_IN_PARAMS_YAML when one is added"
    )


def _leaves(model=Params, prefix=""):
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):  # a nested section
            yield from _leaves(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_the_page_has_one_row_per_setting_and_a_section_per_nested_model():
    rows = [s.name for section in sections() for s in section.settings if "<name>" not in s.name]
    assert rows == sorted(set(rows), key=rows.index) and set(rows) == set(_leaves())
    names = [section.name for section in sections()]
    assert {"model.hybrid", "model.hybrid.experimental", "model.two_tower", "model.cross_encoder", "train.lora", "eval.sasrec", "serve.limits", "data.tables", "synthetic.presets.<name>"} <= set(names)
    page = render(PARAMS_YAML)
    assert all(f"| `{name}` |" in page for name in rows)


def test_a_value_params_yaml_sets_differently_shows_beside_the_default(tmp_path):
    """A value params.yaml sets differently from the code's default shows beside it; an absent file shows the code's."""
    (tmp_path / "params.yaml").write_text("train:\n  max_steps: 7\n")
    assert "| `train.max_steps` | `120` (params.yaml: `7`) |" in render(tmp_path / "params.yaml")
    assert "| `train.max_steps` | `120` |" in render(tmp_path / "absent.yaml")


def test_a_moved_setting_is_an_error_that_names_its_new_place(tmp_path):
    """A params file or --set from before the regrouping fails with where each setting went, not a bare 'unknown key'."""
    import pytest

    from llmrec.config import MOVED, load_params
    from llmrec.errors import ConfigError

    (tmp_path / "params.yaml").write_text("model:\n  pooling: attention\n  hybrid:\n    zero_shot: false\n")
    with pytest.raises(ConfigError) as caught:
        load_params(tmp_path / "params.yaml", ["train.lora_rank=4"])
    message = str(caught.value)
    for old in ("model.pooling", "model.hybrid.zero_shot", "train.lora_rank"):
        assert f"{old} is now {MOVED[old]}" in message
    assert "model.max_history" not in message  # only what the file and the overrides set
    moved = load_params(tmp_path / "absent.yaml", [f"{MOVED[old]}={value}" for old, value in
                                                   (("model.pooling", "attention"), ("model.hybrid.zero_shot", "false"), ("train.lora_rank", "4"))])
    assert (moved.model.two_tower.pooling, moved.model.hybrid.experimental.zero_shot, moved.train.lora.rank) == ("attention", False, 4)
