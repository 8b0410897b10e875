"""sources.yaml: the declared sources of an ingest, parsed into typed, validated objects.

Every error names the config file, the offending key path and its line, in one line.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from features.history.bounds import DEFAULT_DAYS_AHEAD, DEFAULT_NOT_BEFORE, TimeBounds, parse_time_bound
from features.sources.base import KindOptions, ParsedFile, SourceError, SourceKind

#: Most YAML aliases a config may use: a few are handy, thousands are a "billion laughs" bomb.
MAX_ALIASES = 50
#: Keys every source may have, whatever its kind; the rest belong to the kind's options.
COMMON_KEYS = ("name", "kind", "path", "defaults", "service_map", "id_prefix", "time_bounds")


class _TimeBounds(BaseModel):
    """``time_bounds:`` of a source: its plausible time range (features/history/bounds.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    not_before: Any = DEFAULT_NOT_BEFORE
    max_days_ahead: float = Field(default=DEFAULT_DAYS_AHEAD, ge=0, allow_inf_nan=False)

    @field_validator("not_before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        return parse_time_bound(value)

    def bounds(self) -> TimeBounds:
        return TimeBounds(not_before=self.not_before, max_days_ahead=self.max_days_ahead)


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: str = "generic"
    path: str | list[str]
    defaults: dict[str, Any] = Field(default_factory=dict)
    service_map: dict[str, str] = Field(default_factory=dict)
    id_prefix: str | None = None
    time_bounds: _TimeBounds = Field(default_factory=_TimeBounds)


@dataclass(frozen=True)
class SourceConfig:
    """One declared source: where its files are, which kind reads them, and how."""

    name: str
    kind: SourceKind[Any]
    table: str
    paths: tuple[Path, ...]
    options: KindOptions
    defaults: dict[str, Any]
    service_map: dict[str, str]
    id_prefix: str
    config_dir: Path
    time_bounds: TimeBounds = TimeBounds()

    def parse(self, path: Path) -> ParsedFile:
        """One of this source's files through its kind's connector."""
        return self.kind.parse(path, self.display(path), self.options)

    def display(self, path: Path) -> str:
        """A file's name as the user wrote it: relative to the config when possible."""
        try:
            return str(path.relative_to(self.config_dir))
        except ValueError:
            return str(path)


@dataclass(frozen=True)
class SourcesConfig:
    """A parsed sources.yaml."""

    path: Path
    sources: tuple[SourceConfig, ...]


def load_sources_config(path: Path, kinds: dict[str, SourceKind[Any]]) -> SourcesConfig:
    """Parse and validate ``path``; raises ``SourceError`` with file, key and line."""
    display = str(path)
    if not path.exists():
        raise SourceError(f"{display}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{display}: not valid UTF-8 (byte {exc.start}); save the config as UTF-8") from None
    except OSError as exc:
        raise SourceError(f"{display}: unreadable ({exc.strerror or exc})") from None
    try:
        aliases = sum(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text))
        if aliases > MAX_ALIASES:
            raise SourceError(
                f"{display}: {aliases} YAML aliases (*name), more than {MAX_ALIASES}: refused, as a YAML bomb "
                "would expand them; write the values out"
            )
        root_node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise SourceError(f"{display}: {where}invalid YAML ({getattr(exc, 'problem', exc)})") from None
    except RecursionError:
        raise SourceError(f"{display}: YAML nested too deeply to read") from None
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list) or not data["sources"]:
        raise SourceError(f"{display}: expected a top-level 'sources:' list with at least one source")
    unknown_top = sorted(set(data) - {"sources"})
    if unknown_top:
        raise SourceError(f"{display}: line {_line(root_node, [unknown_top[0]])}: unknown key {unknown_top[0]!r}")

    base_dir = path.resolve().parent
    out: list[SourceConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(data["sources"]):

        def fail(msg: str, keys: list[Any], i: int = i) -> SourceError:
            where = _line(root_node, ["sources", i, *keys])
            return SourceError(f"{display}: line {where}: sources[{i}]{_keypath(keys)}: {msg}")

        if not isinstance(entry, dict):
            raise fail("expected a mapping of keys", [])
        try:
            common = _Common.model_validate(entry)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise fail(_pydantic_msg(err), list(err["loc"])) from None
        if common.name in seen:
            raise fail(f"duplicate source name {common.name!r}", ["name"])
        seen.add(common.name)
        kind = kinds.get(common.kind)
        if kind is None:
            raise fail(f"unknown kind {common.kind!r}; known kinds: {', '.join(sorted(kinds))}", ["kind"])
        specific = {k: v for k, v in entry.items() if k not in COMMON_KEYS}
        try:
            options = kind.options.model_validate(specific)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = list(err["loc"])
            if err["type"] == "extra_forbidden":
                raise fail(f"unknown key {loc[-1]!r} for kind {kind.name}", loc) from None
            raise fail(_pydantic_msg(err), loc) from None
        table = kind.table or options.table
        patterns = [common.path] if isinstance(common.path, str) else list(common.path)
        paths = _expand(base_dir, patterns)
        if not paths:
            raise fail(f"no file matches {patterns}", ["path"])
        for pattern, file in paths:
            problem = _escapes(base_dir, pattern, file)
            if problem:
                raise fail(problem, ["path"])
        out.append(
            SourceConfig(
                name=common.name,
                kind=kind,
                table=table,
                paths=tuple(file for _, file in paths),
                options=options,
                defaults=dict(common.defaults),
                service_map=dict(common.service_map),
                id_prefix=common.id_prefix if common.id_prefix is not None else common.name,
                config_dir=base_dir,
                time_bounds=common.time_bounds.bounds(),
            )
        )
    return SourcesConfig(path=path, sources=tuple(out))


def _expand(base_dir: Path, patterns: list[str]) -> list[tuple[str, Path]]:
    """(pattern, file) for the files named by the patterns, relative to the config; a plain name is
    kept even if missing so that reading it reports 'file not found' against that file."""
    paths: list[tuple[str, Path]] = []
    for pattern in patterns:
        full = base_dir / pattern
        if glob.has_magic(pattern):
            paths.extend((pattern, Path(p)) for p in sorted(glob.glob(str(full))))
        else:
            paths.append((pattern, full))
    return paths


def _escapes(base_dir: Path, pattern: str, file: Path) -> str | None:
    """Why ``file`` may not be read, or None: a relative path must stay inside the config's directory.

    ``..`` or a symlink leading out of it would let a config (or a planted link) read any file on the
    machine into the store; an absolute path says where it goes and is taken as written.
    """
    try:
        resolved = file.resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop
        return f"{pattern!r}: cannot be resolved ({exc})"
    if Path(pattern).is_absolute() or resolved.is_relative_to(base_dir):
        return None
    how = "a symlink" if file.is_symlink() or any(p.is_symlink() for p in file.parents) else "'..'"
    return (
        f"{pattern!r} leads outside the config directory {base_dir} (through {how}, to {resolved}); "
        "put the exports under it or give an absolute path"
    )


def _pydantic_msg(err: Any) -> str:
    if err["type"] == "missing":
        return "required key is missing"
    return str(err["msg"])


def _keypath(keys: list[Any]) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys)


def _line(node: Any, keys: list[Any]) -> int:
    """The 1-based line of the YAML node at ``keys``, or of its nearest existing parent."""
    line = node.start_mark.line + 1 if node is not None else 1
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == key), None)
            if match is None:
                key_node = next((k for k, _ in node.value if k.value == key), None)
                return key_node.start_mark.line + 1 if key_node is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line
