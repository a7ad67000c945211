"""Load and validate ``healthmon.yaml`` with errors that name the exact path and YAML line.

The YAML is composed by :class:`_BoundedLoader`, which rejects, at the line where it happens, what
only an attack or an accident produces and would otherwise hang or crash every process that loads
the file (the code location, the CLI): more than :data:`MAX_ALIASES` aliases, a document whose
aliases expand to more than :data:`MAX_EXPANDED_NODES` nodes (a "billion laughs" bomb is a few
hundred bytes), an alias to the collection that contains it, and nesting deeper than
:data:`MAX_DEPTH`. Floats must be finite anywhere in the file (``.inf`` and ``.nan`` pass YAML and
break comparisons and timedeltas at run time).
"""

import difflib
import hashlib
import json
import math
import re
import types
import typing
import weakref
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from healthmon_dagster.config.models import ConfigProblem, HealthConfiguration, Loc

MAX_DEPTH = 50
"""Deepest nesting of collections (healthmon.yaml needs about 8)."""
MAX_ALIASES = 200
"""Most alias uses (``*name``) in one file."""
MAX_EXPANDED_NODES = 200_000
"""Most nodes of the document with every alias expanded (the project's file has about 2,000)."""

_QUOTED = re.compile(r"'([^']*)'")
_LINE = re.compile(r"^.*? \(line (\d+)\): ")
# Where each loaded configuration was read (file name, YAML text), by object, for as long as the
# object lives: problems found after loading (asset keys and columns checked against the warehouse)
# are reported with their line. Kept beside the model, not in it, so that it is no part of the
# configuration's content (equality, model_dump, config_hash).
_SOURCES: dict[int, tuple[str, str]] = {}


class ConfigError(Exception):
    """The configuration could not be loaded; ``errors`` holds one message per problem."""

    def __init__(self, errors: list[str], source: str = "<config>") -> None:
        self.errors = errors
        self.source = source
        count = f"{len(errors)} error{'s' if len(errors) != 1 else ''}"
        super().__init__(f"{source}: {count}\n" + "\n".join(f"  {e}" for e in errors))


class _TooComplex(yaml.MarkedYAMLError):
    """A limit of :class:`_BoundedLoader` was exceeded at ``problem_mark``."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with limits on aliases, their expansion and nesting depth, checked
    while the node graph is composed (before anything is constructed or expanded), so a bomb or
    a 5,000-deep file is rejected in milliseconds instead of exhausting time, memory or the stack.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it stands for, aliases expanded

    def _too_complex(self, problem: str, event: yaml.Event) -> _TooComplex:
        mark: Any = event.start_mark  # yaml.error.Mark (the pure-Python parser's)
        return _TooComplex(problem=problem, problem_mark=mark)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise self._too_complex(
                    f"more than {MAX_ALIASES} aliases (a YAML alias bomb?); write the values out",
                    event,
                )
            target = self.anchors.get(event.anchor) if event.anchor is not None else None
            if target is not None and id(target) not in self._sizes:
                raise self._too_complex(
                    f"alias *{event.anchor} refers to the collection that contains it", event
                )
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise self._too_complex(f"nested more than {MAX_DEPTH} levels deep", event)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:
            return None
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._sizes[id(child)] for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        else:
            size = 1
        if size > MAX_EXPANDED_NODES:
            raise self._too_complex(
                f"with its aliases expanded this holds more than {MAX_EXPANDED_NODES:,} values "
                "(a YAML alias bomb?); write the values out",
                event,
            )
        self._sizes[id(node)] = size
        return node


def _compose(text: str) -> tuple[yaml.Node | None, Any]:
    """The node graph of ``text`` and the data constructed from it, within the loader's limits.

    Two passes: constructing merges ``<<`` keys into the graph's mappings, and the graph must stay
    as written for line numbers and duplicate keys.
    """
    loaders = _BoundedLoader(text), _BoundedLoader(text)
    try:
        root = loaders[0].get_single_node()
        data = loaders[1].get_single_data() if root is not None else None
        return root, data
    finally:
        for loader in loaders:
            loader.dispose()


def load_config(path: Path | None) -> HealthConfiguration:
    """Load ``path``; ``None`` means the built-in defaults. A named but missing file is an error."""
    if path is None:
        return HealthConfiguration()
    path = Path(path)
    if not path.exists():
        raise ConfigError([f"{path}: file not found"], str(path))
    if not path.is_file():
        raise ConfigError([f"{path}: not a file"], str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"], str(path)) from None
    return load_config_text(text, str(path))


def load_config_text(text: str, source_name: str = "<string>") -> HealthConfiguration:
    """Parse and validate YAML text; ``source_name`` is used in syntax-error messages."""
    try:
        root, data = _compose(text)
    except _TooComplex as exc:
        raise ConfigError([_limit_error(exc, source_name)], source_name) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_syntax_error(exc, source_name)], source_name) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source_name}: {exc}"], source_name) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        line = root.start_mark.line + 1 if root is not None else 1
        msg = (
            f"(top level) (line {line}): expected a mapping of sections, got {type(data).__name__}"
        )
        raise ConfigError([msg], source_name)
    non_finite = _non_finite_numbers(data, (), root)
    errors = _duplicate_keys(root, ()) + non_finite
    try:
        config = HealthConfiguration.model_validate(data)
    except ValidationError as exc:
        # A nested model (a channel's configuration) may report the same number again.
        reported = {e.split(": ", 1)[0] for e in non_finite}
        errors += [e for e in _format_errors(exc, root) if e.split(": ", 1)[0] not in reported]
    if errors:
        # In file order, so the list reads top to bottom like the file.
        errors.sort(key=lambda e: int(m.group(1)) if (m := _LINE.search(e)) else 0)
        raise ConfigError(errors, source_name)
    _SOURCES[id(config)] = (source_name, text)
    weakref.finalize(config, _SOURCES.pop, id(config), None)
    return config


def located_errors(config: HealthConfiguration, problems: list[tuple[Loc, str]]) -> list[str]:
    """Problems found after loading (``loc`` from the top of the file) as loader messages: the path
    and, when ``config`` was read from YAML, its line; in file order."""
    root: yaml.Node | None = None
    source = _SOURCES.get(id(config))
    if source is not None:
        try:
            root, _ = _compose(source[1])
        except yaml.YAMLError:  # it parsed when it was loaded; without lines if not now
            root = None
    errors = [_render(loc, root, msg) for loc, msg in problems]
    errors.sort(key=lambda e: int(m.group(1)) if (m := _LINE.search(e)) else 0)
    return errors


def located_error(config: HealthConfiguration, problems: list[tuple[Loc, str]]) -> ConfigError:
    """:func:`located_errors` as the :class:`ConfigError` of the file ``config`` was read from."""
    source = _SOURCES.get(id(config), ("<config>", ""))[0]
    return ConfigError(located_errors(config, problems), source)


def config_hash(config: HealthConfiguration) -> str:
    """SHA-256 of the canonical JSON form: equal for configurations that mean the same."""
    canonical = json.dumps(
        config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# --------------------------------------------------------------------------------------------------


def _syntax_error(exc: yaml.MarkedYAMLError, source: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    if exc.context and exc.problem:
        problem = f"{exc.problem} ({exc.context})"
    if mark is None:
        return f"{source}: YAML syntax error: {problem}"
    return f"{source}:{mark.line + 1}:{mark.column + 1}: YAML syntax error: {problem}"


def _limit_error(exc: _TooComplex, source: str) -> str:
    mark = exc.problem_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    return f"{where}: YAML too complex: {exc.problem}"


def _non_finite_numbers(data: Any, path: Loc, root: yaml.Node | None) -> list[str]:
    """Every ``.inf``/``.nan`` in the file (also inside free-form sections such as
    ``custom_parameters``): no setting means "infinitely", and NaN compares false with everything."""
    if isinstance(data, float) and not math.isfinite(data):
        return [_render(path, root, f"{data!r} is not a finite number")]
    found: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            found += _non_finite_numbers(value, (*path, str(key)), root)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            found += _non_finite_numbers(item, (*path, i), root)
    return found


def _duplicate_keys(node: yaml.Node | None, path: Loc) -> list[str]:
    """PyYAML keeps the last of duplicate keys silently; report them instead."""
    errors: list[str] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                where = _format_path((*path, key))
                errors.append(f"{where} (line {line}): duplicate key (first at line {seen[key]})")
            seen.setdefault(key, line)
            errors += _duplicate_keys(value_node, (*path, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            errors += _duplicate_keys(item, (*path, i))
    return errors


def _format_errors(exc: ValidationError, root: yaml.Node | None) -> list[str]:
    messages: list[str] = []
    for err in exc.errors():
        if isinstance(err.get("input"), float) and not math.isfinite(err["input"]):
            continue  # reported by _non_finite_numbers, once, wherever it is
        raw_loc: Loc = tuple(err["loc"])
        problem = err.get("ctx", {}).get("error")
        if err["type"] == "value_error" and isinstance(problem, ConfigProblem):
            for rel_loc, msg in problem.problems:
                loc, _ = _clean_loc(raw_loc)
                messages.append(_render((*loc, *rel_loc), root, msg))
            continue
        loc, parent_model = _clean_loc(raw_loc)
        messages.append(_render(loc, root, _message(err, loc, parent_model)))
    return messages


def _render(loc: Loc, root: yaml.Node | None, msg: str) -> str:
    line = _line_of(root, loc)
    where = f" (line {line})" if line is not None else ""
    return f"{_format_path(loc)}{where}: {msg}"


def _format_path(loc: Loc) -> str:
    out = ""
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(item)):
            out += f".{item}" if out else str(item)
        else:
            out += f"[{str(item)!r}]"
    return out or "(top level)"


def _quoted_list(expected: str) -> str:
    values = _QUOTED.findall(expected)
    return ", ".join(f"'{v}'" for v in values) if values else expected


def _message(err: Any, loc: Loc, parent_model: type[BaseModel] | None) -> str:
    kind = err["type"]
    ctx = err.get("ctx", {})
    value = err.get("input")
    if kind in ("enum", "literal_error"):
        return f"{value!r} is not one of {_quoted_list(str(ctx.get('expected', '')))}"
    if kind == "union_tag_invalid":
        tags = _quoted_list(str(ctx.get("expected_tags", "")))
        return f"kind {ctx.get('tag')!r} is not one of {tags}"
    if kind == "union_tag_not_found":
        return "missing key 'kind' (which check to run)"
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else ""
        allowed = list(parent_model.model_fields) if parent_model is not None else []
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        if close:
            return f"unknown key; did you mean '{close[0]}'?"
        return f"unknown key; allowed: {', '.join(allowed)}" if allowed else "unknown key"
    msg = str(err["msg"])
    if kind == "value_error" and msg.startswith("Value error, "):
        return msg.removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    if isinstance(value, dict | list):
        return msg
    return f"{value!r}: {msg}"


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``None`` from a type annotation."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _clean_loc(loc: Loc) -> tuple[Loc, type[BaseModel] | None]:
    """Drop pydantic's union steps (discriminator tags, member names) from ``loc``.

    Returns the cleaned location and the model that holds its last step (for key suggestions).
    """
    tp: Any = HealthConfiguration
    out: list[str | int] = []
    parent: type[BaseModel] | None = None
    items = list(loc)
    i = 0
    while i < len(items):
        item = items[i]
        tp = _unwrap(tp)
        if _is_union(tp):
            members = typing.get_args(tp)
            if all(_is_model(m) for m in members):  # discriminated union: the step is the tag
                tp = next((m for m in members if _tag_of(m) == item), None)
                i += 1
                continue
            break  # a scalar union (float | str): the remaining steps name its members
        if _is_model(tp):
            parent = tp
            out.append(item)
            field = tp.model_fields.get(str(item))
            tp = field.annotation if field is not None else None
        elif typing.get_origin(tp) is list:
            parent = None
            out.append(item)
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            parent = None
            out.append(item)
            tp = typing.get_args(tp)[1]
        else:
            parent = None
            out.extend(items[i:])
            break
        i += 1
    return tuple(out), parent


def _tag_of(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("kind")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return args[0] if args else None


def _line_of(root: yaml.Node | None, loc: Loc) -> int | None:
    """1-based line of the deepest node of ``loc`` present in the YAML tree."""
    if root is None:
        return None
    node: yaml.Node = root
    line = node.start_mark.line + 1
    for item in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(item)), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(item, int):
            if item >= len(node.value):
                break
            node = node.value[item]
            line = node.start_mark.line + 1
        else:
            break
    return line
