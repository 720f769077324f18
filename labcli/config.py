"""Typed recipe configs: YAML -> overrides -> pydantic model, with one-line errors.

Every recipe module defines `Config` (a subclass of `RecipeConfig`) and `run(cfg, ctx)`.
Validation errors name the key, the value and where it was set (the file, or the override).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labcli.errors import UserError


class Section(BaseModel):
    """Base for nested config sections: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class RecipeConfig(Section):
    """Fields every recipe has."""

    description: str = Field("", description="One line shown by `lab ls`")
    seed: int = Field(0, description="Seed for every random number generator")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks cuda when available")


def read_user_text(path: Path, hint: str = "save the file as UTF-8") -> str:
    """A text file as editors write it: UTF-8 with or without a byte-order mark, LF or CRLF line
    ends (returned as LF), any final line. Not UTF-8 (e.g. Latin-1): one line naming the line."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text", hint) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping, turning syntax errors into one line with the position."""
    if not path.is_file():
        raise UserError(f"config file not found: {path}", "check the path, or `lab ls` for recipes")
    try:
        data = yaml.safe_load(read_user_text(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"bad YAML in {path}{where}: {problem}", "fix the YAML syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a YAML mapping (key: value lines)", "see `lab cp` for an example")
    return data


def parse_value(text: str) -> Any:
    """`3` -> 3, `true` -> True, `[a, b]` -> list; anything else stays a string."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted `key.sub=value` overrides in place and return the mapping."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' is not key=value", "write e.g. train.lr=3e-4")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"override '{item}': '{part}' is not a section", "override a leaf key")
            node = child
        node[parts[-1]] = parse_value(text)
    return data


def validate(schema: type[RecipeConfig], data: dict[str, Any], source: str | Callable[[tuple], str]) -> RecipeConfig:
    """Validate `data` against `schema`, reporting the first problem as a UserError.

    `source` names where the data came from, or maps a key's location to where it was set."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise UserError(*describe_error(schema, exc, source)) from None


def describe_error(schema: type[BaseModel], exc: ValidationError, source) -> tuple[str, str]:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    source = source(err["loc"]) if callable(source) else source
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        parent = _section(schema, err["loc"][:-1])
        valid = ", ".join(parent.model_fields) if parent else "see `lab VERB RECIPE --help`"
        return f"unknown key '{key}' in {source}{more}", f"valid keys here: {valid}"
    if err["type"] == "missing":
        return f"missing key '{key}' in {source}{more}", f"add {key}: VALUE"
    return (
        f"key '{key}' has bad value {err.get('input')!r} in {source}: {err['msg']}{more}",
        "fix the value in the YAML or pass key=value",
    )


def _section(schema: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The nested model that `loc` points into, if it is a model."""
    model = schema
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def describe_fields(schema: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) rows for every leaf field, for `--help`."""
    rows = []
    for name, field in schema.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows += describe_fields(ann, f"{prefix}{name}.")
            continue
        type_name = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        default = "" if field.is_required() else repr(field.get_default(call_default_factory=True))
        rows.append((prefix + name, type_name, default, field.description or ""))
    return rows


def to_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
