"""The workflow configuration: read it, check it against ``schemas/config.schema.json``.

One check for every entry point: the Snakefile (before the first job) and each CLI that takes
``--config``. A bad config raises :class:`ConfigError`, whose message holds one line per problem,
each naming the file, the key path and the bad value::

    config/config.yaml: training.defaults.epochs must be an integer >= 1, got -5
    config: unknown key 'centres' (did you mean 'centers'?)

Kept free of torch and of the stage packages: the Snakefile and ``thrombseg --help`` import it.
"""

from __future__ import annotations

import copy
import difflib
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

__all__ = ["ConfigError", "is_workflow_config", "load_config", "read_yaml", "schema", "validate_config"]

MAX_SHOWN = 5  # problems listed in one error; the rest are counted


class ConfigError(ValueError):
    """A config file or section that is unreadable or breaks the schema; one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        shown = self.problems[:MAX_SHOWN]
        if len(self.problems) > MAX_SHOWN:
            shown.append(f"... and {len(self.problems) - MAX_SHOWN} more problem(s)")
        super().__init__("\n".join(shown))


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return (resources.files("thrombseg") / "schemas" / "config.schema.json").read_text()


def schema() -> dict:
    """A fresh copy of the workflow config's JSON schema."""
    return json.loads(_schema_text())


def read_yaml(path) -> dict:
    """A YAML mapping from ``path``; ConfigError (one line naming the file and line) otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"{p}: config file not found"])
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{p}: {where}not valid YAML ({what})"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{p}: cannot read the config ({exc})"]) from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError([f"{p}: expected a mapping of settings, got {type(d).__name__}"])
    return d


def is_workflow_config(d: dict) -> bool:
    """Whether ``d`` is (part of) a workflow config rather than a lone ``preprocess:`` section."""
    return any(k in schema()["properties"] for k in d)


def load_config(path, *, alone: str | None = None, partial: bool = True) -> dict:
    """Read and validate a config file (see :func:`validate_config`); returns the mapping as read.

    Args:
        alone: also accept a file holding only this top-level section's keys (no workflow key, see
            :func:`is_workflow_config`), checked as that section: ``--config`` of the preprocessing
            commands takes a workflow config or its ``preprocess:`` section alone.
        partial: a file holding only some sections is fine (files given to a CLI).
    """
    d = read_yaml(path)
    section = alone if alone is not None and not is_workflow_config(d) else None
    validate_config(d, source=str(path), section=section, partial=partial)
    return d


def validate_config(cfg: dict, source: str = "config", *, section: str | None = None, partial: bool = False,
                    set_defaults: bool = False) -> dict:
    """Check ``cfg`` against the schema; raise ConfigError listing every problem, one line each.

    Args:
        cfg: the whole workflow config, or with ``section`` only that top-level section.
        source: what the lines start with (the file, or ``config`` for Snakemake's merged config).
        section: validate ``cfg`` as this top-level section (e.g. ``"preprocess"``); key paths
            still read ``preprocess.<key>``.
        partial: no key is required (a file holding some sections, read by a CLI).
        set_defaults: fill the schema's defaults into ``cfg`` in place, as Snakemake's
            ``validate(set_default=True)`` did (the workflow relies on them).

    Returns:
        ``cfg``.
    """
    sch = schema()
    instance = cfg
    if section is not None:
        sub = sch["properties"][section]
        sch = {"$defs": sch["$defs"], "type": "object", "properties": {section: sub}}
        instance = {section: cfg}
    if partial:
        _drop_required(sch)
    if set_defaults and isinstance(instance, dict):
        _fill_defaults(instance, sch, sch)

    def is_integer(checker, v):  # 40.0 is no epoch count (JSON Schema would accept it)
        return isinstance(v, int) and not isinstance(v, bool)

    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", is_integer)
    Validator = validators.extend(Draft202012Validator, type_checker=checker)
    errors = sorted(Validator(sch).iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    problems: list[str] = []
    for err in errors:
        for line in _describe_error(err, sch):
            if f"{source}: {line}" not in problems:
                problems.append(f"{source}: {line}")
    if problems:
        raise ConfigError(problems)
    return cfg


# ------------------------------------------------------------------ schema walking
def _resolve(s: dict, root: dict) -> dict:
    """``s`` with a local ``$ref`` merged in (``#/$defs/name``; the schema uses no other kind)."""
    while "$ref" in s:
        target = root
        for part in s["$ref"].lstrip("#/").split("/"):
            target = target[part]
        local = {k: v for k, v in s.items() if k != "$ref"}
        s = {**target, **local}
        if "properties" in target and "properties" in local:  # e.g. an experiment: options + protocol
            s["properties"] = {**target["properties"], **local["properties"]}
    return s


def _drop_required(s) -> None:
    if isinstance(s, dict):
        s.pop("required", None)
        s.pop("minProperties", None)
        for k, v in s.items():
            if k != "if":  # a condition (e.g. `model: nnunet` picks an experiment's schema) stays as written
                _drop_required(v)
    elif isinstance(s, list):
        for v in s:
            _drop_required(v)


def _fill_defaults(instance: dict, s: dict, root: dict) -> None:
    s = _resolve(s, root)
    for key, sub in (s.get("properties") or {}).items():
        sub = _resolve(sub, root)
        if "default" in sub and key not in instance:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict):
            _fill_defaults(instance[key], sub, root)


# ------------------------------------------------------------------ messages
def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _show(v) -> str:
    text = json.dumps(v) if v is None or isinstance(v, bool) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _bounds(s: dict) -> str:
    lo = ("[", s["minimum"]) if "minimum" in s else ("(", s["exclusiveMinimum"]) if "exclusiveMinimum" in s else None
    hi = ("]", s["maximum"]) if "maximum" in s else (")", s["exclusiveMaximum"]) if "exclusiveMaximum" in s else None
    if lo and hi:
        return f" in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    if lo:
        return f" {'>=' if lo[0] == '[' else '>'} {lo[1]}"
    if hi:
        return f" {'<=' if hi[0] == ']' else '<'} {hi[1]}"
    return ""


_KIND = {"integer": "an integer", "number": "a number", "string": "text", "boolean": "true or false",
         "object": "a mapping", "array": "a list", "null": "null"}


def _expected(s: dict, root: dict) -> str:
    """What a value of schema ``s`` must be, in words."""
    s = _resolve(s, root)
    if "x-expected" in s:
        return s["x-expected"]
    if "enum" in s:
        vals = [v if isinstance(v, str) else _show(v) for v in s["enum"]]
        return vals[0] if len(vals) == 1 else "one of " + ", ".join(vals)
    if "anyOf" in s:
        return " or ".join(_expected(sub, root) for sub in s["anyOf"])
    kinds = s.get("type", [])
    words = []
    for kind in [kinds] if isinstance(kinds, str) else kinds:
        w = _KIND.get(kind, kind)
        if kind in ("integer", "number"):
            w += _bounds(s)
        elif kind == "array":
            lo, hi = s.get("minItems"), s.get("maxItems")
            n = f"{lo}" if lo is not None and lo == hi else f"at least {lo}" if lo else ""
            w += f" of {n} item{'s' if lo != 1 else ''}" if n else ""
            if "items" in s:
                w += f" (each {_expected(s['items'], root)})"
        elif kind == "string" and s.get("minLength"):
            w = "non-empty text"
        words.append(w)
    return " or ".join(words) or "valid"


def _known_keys(s: dict, root: dict) -> list[str]:
    return list(_resolve(s, root).get("properties") or {})


def _describe_error(err, root: dict) -> list[str]:
    """One line per problem of a jsonschema error (path, bad value, what was expected)."""
    path = _path(err.absolute_path)
    at = f"{path}." if path else ""
    kind = err.validator
    if kind in ("additionalProperties", "unevaluatedProperties") and isinstance(err.instance, dict):
        known = _known_keys(err.schema, root)
        lines = []
        tuned_only = _resolve(err.schema, root).get("x-tuned-only", [])
        for key in err.instance:
            if key in known:
                continue
            if key in tuned_only:  # an InferenceConfig field only the tuning's postprocess.json sets
                lines.append(f"'{at}{key}' is chosen by the tuning (postprocess.json), not set in the config: "
                             f"for candidate scoring set '{at}tune.selection: score'")
                continue
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known)}"
            lines.append(f"unknown key '{at}{key}' ({hint})")
        return lines or [f"{path or 'config'}: {err.message}"]
    if kind == "required":
        missing = [k for k in err.validator_value if k not in err.instance]
        return [f"missing key '{at}{k}'" for k in missing]
    if kind == "minProperties":
        return [f"{path} must not be empty"]
    if kind == "uniqueItems":
        return [f"{path} lists an item twice: {_show(err.instance)}"]
    if "propertyNames" in err.relative_schema_path:
        return [f"{path}: name {_show(err.instance)} must be {_expected(err.schema, root)}"]
    value = err.instance
    line = f"{path or 'the config'} must be {_expected(err.schema, root)}, got {_show(value)}"
    if isinstance(value, str) and _number_like(value):
        line += " (text, not a number" + ("; YAML reads 1e-3 as text, 1.0e-3 as a number)" if "e" in value.lower()
                                         else ")")
    return [line]


def _number_like(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
