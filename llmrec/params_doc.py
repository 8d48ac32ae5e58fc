"""Render docs/params.md, the reference of every setting, from the `Params` model in `llmrec.config`.

One row per setting: its dotted name, its default in the code, the values it accepts and the field's
description. Where params.yaml ships another value than the code's default, the row says so. Nested
models (`model.hybrid`, `eval.sasrec`, `serve.limits`, ...) get their own section; a mapping of models
(`synthetic.presets`) gets a section for the fields of one entry.

    python -m llmrec.params_doc > docs/params.md

`tests/unit/test_params_doc.py` fails when docs/params.md differs from what this prints.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from llmrec.config import DEFAULT_PARAMS, Params

COMMAND = "python -m llmrec.params_doc > docs/params.md"
MISSING = object()  # a setting params.yaml does not set


@dataclass(frozen=True)
class Setting:
    name: str          # dotted, e.g. model.hybrid.dim
    default: Any       # the code's default (a plain value)
    values: str        # what it accepts, e.g. "int ≥ 1" or "auto, cpu"
    description: str


@dataclass(frozen=True)
class Section:
    name: str          # dotted, e.g. model.hybrid ("" = top level)
    doc: str           # the model's docstring, first paragraph
    settings: tuple[Setting, ...]


def _submodel(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _mapped_submodel(annotation: Any) -> type[BaseModel] | None:
    """`dict[str, Model]` -> Model (a mapping of named entries, e.g. synthetic.presets)."""
    if typing.get_origin(annotation) is dict:
        args = typing.get_args(annotation)
        return _submodel(args[1]) if len(args) == 2 else None
    return None


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if annotation is typing.Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: FieldInfo) -> str:
    marks = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts = []
    for item in field.metadata:
        for attribute, sign in marks.items():
            if isinstance(item, annotated_types.BaseMetadata) and hasattr(item, attribute):
                parts.append(f"{sign} {_plain(getattr(item, attribute))}")
    return ", ".join(parts)


def _values(field: FieldInfo) -> str:
    name = _type_name(field.annotation)
    bounds = _bounds(field)
    return f"{name} {bounds}" if bounds else name


def _plain(value: Any) -> str:
    """A value as params.yaml would write it (YAML flow style)."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True, sort_keys=False)
    return text.strip().removesuffix("...").strip()


def _doc(model: type[BaseModel]) -> str:
    doc = (model.__doc__ or "").strip()
    if not doc or doc == (BaseModel.__doc__ or "").strip():
        return ""
    return " ".join(doc.split("\n\n")[0].split())


def sections(model: type[BaseModel] = Params, prefix: str = "", note: str = "") -> Iterator[Section]:
    """Every section of the settings in the order the code defines them: a section's own settings, then its
    nested sections; the top level's own settings (`budget`, `budgets`) come last."""
    rows, nested = [], []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        default = field.get_default(call_default_factory=True)
        sub, mapped = _submodel(field.annotation), _mapped_submodel(field.annotation)
        if sub is not None:
            nested.append((sub, dotted, ""))
            continue
        if mapped is not None and isinstance(default, dict):
            nested.append((mapped, f"{dotted}.<name>", f"The fields of one entry of `{dotted}` (defaults: a new entry's)."))
            default = list(default)
        rows.append(Setting(dotted, default, _values(field), " ".join((field.description or "").split())))
    own = Section(prefix.rstrip("."), _doc(model) or note, tuple(rows))
    if prefix:
        yield own
    for sub, dotted, sub_note in nested:
        yield from sections(sub, dotted + ".", sub_note)
    if not prefix:
        yield own


def shipped(params_file: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """params.yaml as flat `section.key: value` (nested mappings of the model flattened), {} when absent."""
    path = Path(params_file)
    raw = yaml.safe_load(path.read_text()) if path.is_file() else {}
    flat: dict[str, Any] = {}

    def walk(node: Any, model: type[BaseModel] | None, prefix: str) -> None:
        for key, value in (node or {}).items():
            field = model.model_fields.get(key) if model is not None else None
            sub = _submodel(field.annotation) if field is not None else None
            if sub is not None and isinstance(value, dict):
                walk(value, sub, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(raw, Params, "")
    return flat


def _cell(text: str) -> str:
    """Text for a table cell: pipes escaped, and `<`/`>` outside code spans (`<prepared>` would be an HTML tag)."""
    parts = text.replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def _default_cell(setting: Setting, in_file: dict[str, Any]) -> str:
    cell = f"`{_plain(setting.default)}`"
    value = in_file.get(setting.name, MISSING)
    if value is MISSING:
        return cell
    default = setting.default
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        value, default = list(value), list(default)  # a mapping of named entries (presets, budgets): compare names
    if value != default:
        cell += f" (params.yaml: `{_plain(value)}`)"
    return cell


def missing_from(params_file: str | Path = DEFAULT_PARAMS) -> list[str]:
    """The settings of `Params` that params.yaml does not set (entries of mappings, such as one preset's fields, aside)."""
    in_file = shipped(params_file)
    return [s.name for section in sections() for s in section.settings if "<name>" not in s.name and s.name not in in_file]


def render(params_file: str | Path = DEFAULT_PARAMS) -> str:
    """docs/params.md: every section and setting of `Params`, with the code's defaults and params.yaml's values."""
    in_file = shipped(params_file)
    lines = [
        "<!-- Generated from llmrec/config.py: do not edit. Regenerate with",
        f"     {COMMAND}  -->",
        "",
        "# Settings",
        "",
        f"Generated from the field descriptions and defaults in `llmrec/config.py` by `{COMMAND}`;",
        "a test fails when this page and the code disagree.",
        "",
        "Every setting has a default in the code. `params.yaml` sets the values the project runs with; where one",
        "differs from the code's default, the row shows both. Change a setting in `params.yaml`, for one run with",
        "`llmrec --set section.key=value`, or with a named set of settings, `llmrec --budget NAME` (the `budgets` of",
        "`params.yaml`; `--set` still wins over a budget). The Prefect form's fields and `overrides` map to the same",
        "settings ([operations.md](operations.md)).",
        "",
    ]
    for section in sections():
        title = f"`{section.name}`" if section.name else "Top level"
        lines += [f"## {title}", ""]
        if section.doc:
            lines += [section.doc, ""]
        if not section.settings:
            continue
        lines += ["| setting | default | values | description |", "|---|---|---|---|"]
        for s in section.settings:
            lines.append(f"| `{s.name}` | {_cell(_default_cell(s, in_file))} | {_cell(s.values)} | {_cell(s.description)} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
