"""Where a config's values come from: the configs file (imported for its `configs` dict, read as text for
the line of each key) and `-m` arguments. Every config message starts with a place found here.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from neuro_trigger.config.errors import ConfigError
from neuro_trigger.errors import clip


def load_configs() -> tuple[dict, Path | None]:
    """The `configs` dict of configs/__init__.py and the file. Anything that goes wrong on importing it
    (a syntax error, a name error, ...) is one ConfigError naming the file and line."""
    try:
        import configs as configs_module
    except SyntaxError as e:
        where = f"{display_path(Path(e.filename))}:{e.lineno}" if e.filename else _configs_file_shown()
        raise ConfigError(f"{where}: syntax error in the configs file: {clip(e.msg)}") from None
    except Exception as e:  # the configs file is the user's Python: any exception is theirs
        raise ConfigError(f"{_failing_line(e)}: the configs file fails on import: "
                          f"{clip(str(e) or 'no message')} ({type(e).__name__})") from None
    path = Path(configs_module.__file__) if getattr(configs_module, "__file__", None) else None
    configs = getattr(configs_module, "configs", None)
    if not isinstance(configs, Mapping):
        raise ConfigError(f"{display_path(path)}: the configs file must define a dict `configs`, "
                          f"got {type(configs).__name__}")
    return dict(configs), path


def _configs_file() -> Path | None:
    try:
        spec = importlib.util.find_spec("configs")
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin else None


def _configs_file_shown() -> str:
    path = _configs_file()
    return display_path(path) if path else "configs/__init__.py"


def _failing_line(error: BaseException) -> str:
    """`file:line` of the configs file's line where `error` was raised (or the import that raised it)."""
    path = _configs_file()
    line = None
    tb = error.__traceback__
    while tb is not None:
        if path is not None and Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = tb.tb_lineno
        tb = tb.tb_next
    shown = display_path(path) if path else "configs/__init__.py"
    return f"{shown}:{line}" if line else shown


def load_sweeps() -> tuple[dict, Path | None]:
    """The `sweeps` dict of configs/__init__.py (empty where the file defines none) and the file."""
    load_configs()  # the file's own mistakes first, as for configs
    import configs as configs_module

    path = Path(configs_module.__file__) if getattr(configs_module, "__file__", None) else None
    sweeps = getattr(configs_module, "sweeps", {})
    if not isinstance(sweeps, Mapping):
        raise ConfigError(f"{display_path(path)}: `sweeps` in the configs file must be a dict, "
                          f"got {type(sweeps).__name__}")
    return dict(sweeps), path


def line_of(source_file: Path | None, name: str, path: Sequence[str], variable: str = "configs") -> int | None:
    """The line where `configs[name][path...]` (or `<variable>[name][path...]`, e.g. of `sweeps`) is written
    (of the deepest of those keys written there), found by reading (not running) the file."""
    if source_file is None:
        return None
    try:
        stat = source_file.stat()
    except OSError:
        return None
    lines = _key_lines(str(source_file), stat.st_mtime_ns, stat.st_size, variable)
    keys = (name, *path)
    return next((lines[keys[:n]] for n in range(len(keys), 0, -1) if keys[:n] in lines), None)


@functools.lru_cache(maxsize=4)
def _key_lines(source_file: str, mtime_ns: int, size: int, variable: str = "configs") -> dict[tuple[str, ...], int]:
    """Each key path of the file's `configs = {...}` (or `<variable> = {...}`) and the line its key is on; parsed
    once per version of the file (its mtime and size are part of the cache key): every checked value of a config
    asks for its line."""
    lines: dict[tuple[str, ...], int] = {}

    def index(node: ast.AST, prefix: tuple[str, ...]) -> None:
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if isinstance(k, ast.Constant) and isinstance(k.value, str) and (*prefix, k.value) not in lines:
                    lines[(*prefix, k.value)] = k.lineno
                    index(v, (*prefix, k.value))

    for node in ast.walk(ast.parse(Path(source_file).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == variable
                                                for t in node.targets) and isinstance(node.value, ast.Dict):
            index(node.value, ())
            break
    return lines


@dataclass
class Origins:
    """Where each key path got its value: ('config', name[, block]) or ('override', text).

    `block` is the `expert_N` key when the value was written inside that block of the config.
    """

    source_file: Path | None
    by_path: dict[tuple[str, ...], tuple[str, ...]]

    def where(self, path: tuple[str, ...]) -> str:
        """`file:line: config 'name'` or `-m key=value`: where `path` (or its nearest parent) was set; 'config'
        for a default."""
        for n in range(len(path), 0, -1):
            origin = self.by_path.get(path[:n])
            if origin is None:
                continue
            kind, label, *block = origin
            if kind == "override":
                return f"-m {clip(label)}"
            line = line_of(self.source_file, label, (*block, *path))  # the deepest key written there
            place = f"{display_path(self.source_file)}:{line}: " if line else ""
            return f"{place}config '{label}'"
        return "config"


def display_path(path: Path | None) -> str:
    """The configs file as messages show it: relative to the working folder where it lies below it."""
    if path is None:
        return "<dict>"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

