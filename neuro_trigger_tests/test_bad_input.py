"""Bad input (issue 5): every mistake in a config, a -m override, a filter, a data file, a referenced run
or the log location ends in one line on stderr naming what and where, exit code 2, no traceback, and
nothing trained. Everything goes through the public CLI function `main(argv)`; a few cases also run as
a real process.
"""
from __future__ import annotations

import gzip
import json
import logging
import runpy
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from neuro_trigger import REPO_ROOT
from neuro_trigger.config import sources as config_sources
from neuro_trigger.data.neuroresults.format import COLUMNS
from neuro_trigger.data.neuroresults.reader import read_neuroresults
from neuro_trigger.data.neuroresults.writer import write_table
from neuro_trigger.data.toy.generator import generate
from neuro_trigger.main import main
from neuro_trigger.run import folder as run_folder

ROWS = {"train": 600, "val": 300, "test": 300}
ERROR_PREFIX = "error: "  # how main() prints a UserError


# ---------------------------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def _fresh_console_logging():
    """Each case starts as a fresh process would: no console handler bound to an earlier test's stderr."""

    def drop() -> None:
        logger = logging.getLogger("neuro_trigger")
        for handler in [h for h in logger.handlers if getattr(h, "_nt_console", False)]:
            logger.removeHandler(handler)

    drop()
    yield
    drop()


def run_main(capsys: pytest.CaptureFixture, log_root: Path, *args: str) -> tuple[int, str, list[str]]:
    """Call the CLI function; returns (exit code, stdout, stderr lines)."""
    capsys.readouterr()
    code = main([*args, "--log-root", str(log_root)])
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def assert_user_error(code: int, out: str, err: list[str], *parts: str) -> str:
    """Exit code 2, no traceback, nothing on stdout, and the last stderr line names every part."""
    text = "\n".join(err)
    assert code == 2, text
    assert "Traceback" not in text, text
    assert "Error:" not in text.replace(ERROR_PREFIX, ""), text  # no exception class leaks (KeyError: ...)
    assert out == "", out
    assert err, "nothing on stderr"
    line = err[-1]
    assert line.startswith(ERROR_PREFIX), line
    for part in parts:
        assert part in line, f"{part!r} not in {line!r}"
    return line


def assert_nothing_trained(log_root: Path) -> None:
    """No expert folder, checkpoint or expert log anywhere under the log location."""
    left = [p for p in log_root.rglob("*") if p.name == "ckpts" or p.name.startswith("expert_")]
    assert not left, left


def assert_no_run_folder(log_root: Path) -> None:
    assert not list(log_root.glob("*/version_*")), list(log_root.glob("*/version_*"))


def data_override(train: Path | str, val: Path | str, test: Path | str) -> str:
    return "data=" + repr({"train": [str(train)], "val": [str(val)], "test": [str(test)]})


@pytest.fixture(scope="module")
def good_data(tmp_path_factory) -> dict[str, Path]:
    """Small plain-text neuroresults files (plain text: easy to corrupt line by line)."""
    folder = tmp_path_factory.mktemp("good_data")
    paths = {}
    for i, (split, n) in enumerate(ROWS.items()):
        paths[split] = folder / f"{split}.tsv"
        write_table(generate(n, seed=500 + i), paths[split])
    return paths


def good_override(good_data: dict[str, Path], **replace: Path) -> str:
    return data_override(*(replace.get(split, good_data[split]) for split in ROWS))


# ---------------------------------------------------------------------------------------------- configs in a file
# A configs file of its own, so that messages can be checked for file and line. Each bad config is on
# lines of its own; MARK comments find the lines.
BAD_CONFIGS = '''\
from configs import configs as _shipped

configs = {
    **_shipped,
    "bad_parent": {
        "extends": "baselin_v2",  # MARK extends
    },
    "cycle_a": {"extends": "cycle_b"},
    "cycle_b": {"extends": "cycle_a"},  # MARK cycle
    "bad_top_key": {
        "extends": "baseline_v2",
        "learning_rat": 0.01,  # MARK top
    },
    "bad_expert_key": {
        "extends": "baseline_v2",
        "expert_2": {
            "batch_sz": 16,  # MARK expert
        },
    },
    "bad_untrained_expert_value": {
        "extends": "baseline_v2",
        "expert_3": {
            "batch_size": 0,  # MARK untrained value
        },
    },
    "bad_untrained_expert_nested": {
        "extends": "baseline_v2",
        "expert_3": {
            "dist": {"n_buckets": 11, "inf_bounds": False, "norm": {"mean": 0.0, "sd": 0.4}},  # MARK untrained
        },
    },
    "bad_dist_key": {
        "extends": "baseline_v2",
        "dist": {
            "n_bucket": 11,  # MARK dist
            "inf_bounds": False,
            "norm": {"mean": 0.0, "std": 0.4},
        },
    },
    "bad_norm_key": {
        "extends": "baseline_v2",
        "dist": {
            "n_buckets": 11,
            "inf_bounds": False,
            "norm": {
                "mean": 0.0,
                "sd": 0.4,  # MARK norm
            },
        },
    },
    "bad_data_key": {
        "extends": "baseline_v2",
        "data": {
            "trian": ["a.gz"],  # MARK data
        },
    },
    "bad_type": {
        "extends": "baseline_v2",
        "epochs": "10",  # MARK type
    },
    "bad_expert_7": {
        "extends": "baseline_v2",
        "expert_7": {"batch_size": 16},  # MARK expert_7
    },
    "bad_filter": {
        "extends": "baseline_v2",
        "filter": "dataset_filters.IdentityFilter() & open('/etc/passwd')",  # MARK filter
    },
}
'''


@pytest.fixture
def bad_configs(tmp_path, monkeypatch) -> Callable[[str], str]:
    """Make the configs file above the one the CLI reads; returns `line(mark) -> 'file:line'`."""
    path = tmp_path / "bad_configs.py"
    path.write_text(BAD_CONFIGS)
    configs = runpy.run_path(str(path))["configs"]
    monkeypatch.setattr(config_sources, "load_configs", lambda: (configs, path))
    lines = BAD_CONFIGS.splitlines()

    def where(mark: str) -> str:
        number = next(i + 1 for i, text in enumerate(lines) if text.endswith(f"# MARK {mark}"))
        return f"{path}:{number}:"

    return where


CONFIG_FILE_CASES = [
    # id, CLI args, mark of the line the message must name (or None), parts of the message
    ("extends unknown", ["bad_parent"], "extends", ["'bad_parent'", "'baselin_v2'", "did you mean 'baseline_v2'"]),
    ("extends cycle", ["cycle_a"], "cycle", ["cycle", "cycle_a -> cycle_b -> cycle_a"]),
    ("unknown top key", ["bad_top_key"], "top", ["'learning_rat'", "did you mean 'learning_rate'"]),
    ("unknown key in expert_N", ["bad_expert_key"], "expert", ["'expert_2.batch_sz'", "did you mean 'batch_size'"]),
    ("unknown key in dist", ["bad_dist_key"], "dist", ["'dist.n_bucket'", "did you mean 'n_buckets'"]),
    ("unknown key in dist.norm", ["bad_norm_key"], "norm", ["'dist.norm.sd'", "did you mean 'std'"]),
    ("unknown key in data", ["bad_data_key"], "data", ["'data.trian'", "did you mean 'train'"]),
    ("wrong type", ["bad_type"], "type", ["'epochs'", "expected int, got str '10'"]),
    ("expert_7", ["bad_expert_7"], "expert_7", ["'expert_7'", "no such expert"]),
    ("filter that opens a file", ["bad_filter"], "filter", ["'filter'", "unknown name 'open'"]),
    # a solo or debug run trains other experts than the blocks name: those blocks are still checked whole
    ("bad value for an untrained expert", ["bad_untrained_expert_value", "-s"], "untrained value",
     ["expert_3", "'batch_size'", "must be >= 1"]),
    ("unknown nested key for an untrained expert", ["bad_untrained_expert_nested", "-s"], "untrained",
     ["'expert_3.dist.norm.sd'", "did you mean 'std'"]),
]


@pytest.mark.parametrize("args, mark, parts", [c[1:] for c in CONFIG_FILE_CASES],
                         ids=[c[0] for c in CONFIG_FILE_CASES])
def test_bad_config_in_file(bad_configs, capsys, tmp_path, args, mark, parts):
    code, out, err = run_main(capsys, tmp_path / "log", *args)
    expected = [bad_configs(mark)] if mark else []
    assert_user_error(code, out, err, *expected, *parts)
    assert len(err) == 1, err
    assert not (tmp_path / "log").exists() or not any((tmp_path / "log").iterdir())


# ---------------------------------------------------------------------------------------------- configs via -m
OVERRIDE_CASES = [
    # id, CLI args, parts of the message
    ("unknown config", ["baselin_v2"], ["unknown config 'baselin_v2'", "did you mean 'baseline_v2'"]),
    ("unknown top key", ["baseline_v2", "-m", "learning_rat=1e-3"],
     ["-m learning_rat=1e-3", "'learning_rat'", "did you mean 'learning_rate'"]),
    ("unknown key in expert_N", ["baseline_v2", "-m", "expert_2.batch_sz=16"],
     ["-m expert_2.batch_sz=16", "'batch_sz' in expert_2", "did you mean 'batch_size'"]),
    ("unknown key in dist", ["reweight_normal", "-m", "dist.n_bucket=5"],
     ["-m dist.n_bucket=5", "'n_bucket'", "did you mean 'n_buckets'"]),
    ("unknown key in dist.norm", ["reweight_normal", "-m", "dist.norm.sd=0.3"],
     ["-m dist.norm.sd=0.3", "'sd' in dist.norm", "did you mean 'std'"]),
    ("unknown key in data", ["baseline_v2", "-m", "data.trian=['a.gz']"],
     ["-m data.trian=['a.gz']", "'trian'", "did you mean 'train'"]),
    ("wrong type int", ["baseline_v2", "-m", "batch_size=1.5"], ["-m batch_size=1.5", "expected int, got float"]),
    ("wrong type bool", ["reweight_normal", "-m", "dist.inf_bounds=1"],
     ["-m dist.inf_bounds=1", "'dist.inf_bounds'", "expected bool, got int"]),
    ("wrong type word", ["baseline_v2", "-m", "learning_rate=fast"],
     ["-m learning_rate=fast", "'learning_rate'", "got str 'fast'"]),
    ("learning_rate 0", ["baseline_v2", "-m", "learning_rate=0"], ["-m learning_rate=0", "must be > 0"]),
    ("learning_rate negative", ["baseline_v2", "-m", "learning_rate=-1e-3"], ["'learning_rate'", "must be > 0"]),
    ("batch_size 0", ["baseline_v2", "-m", "batch_size=0"], ["-m batch_size=0", "'batch_size'", "must be >= 1"]),
    ("expert batch_size 0", ["baseline_v2", "-m", "expert_3.batch_size=0"],
     ["-m expert_3.batch_size=0", "'batch_size'", "must be >= 1"]),
    ("epochs 0", ["baseline_v2", "-m", "epochs=0"], ["-m epochs=0", "'epochs'", "must be >= 1"]),
    ("n_buckets 0", ["reweight_normal", "-m", "dist.n_buckets=0"], ["-m dist.n_buckets=0", "must be >= 1"]),
    ("std 0", ["reweight_normal", "-m", "dist.norm.std=0"], ["-m dist.norm.std=0", "'dist.norm.std'", "> 0"]),
    ("std negative", ["reweight_normal", "-m", "dist.norm.std=-0.4"], ["'dist.norm.std'", "must be > 0"]),
    ("lower == upper", ["reweight_uniform", "-m", "dist.uniform.lower=1.0"],
     ["-m dist.uniform.lower=1.0", "lower (1.0) must be below upper (1.0)"]),
    ("lower > upper", ["reweight_uniform", "-m", "dist.uniform.lower=0.5", "dist.uniform.upper=-0.5"],
     ["lower (0.5) must be below upper (-0.5)"]),
    ("out_size 3", ["baseline_v2", "-m", "out_size=3"], ["-m out_size=3", "'out_size'", "must be 1 or 2"]),
    ("out_size 0", ["baseline_v2", "-m", "out_size=0"], ["'out_size'", "must be 1 or 2"]),
    ("unknown model", ["baseline_v2", "-m", "model=BaselineModl"],
     ["-m model=BaselineModl", "unknown name 'BaselineModl'", "did you mean 'BaselineModel'"]),
    ("unknown loss", ["baseline_v2", "-m", "loss=MSELos"], ["'loss'", "did you mean 'MSELoss'"]),
    ("unknown optimiser", ["baseline_v2", "-m", "optim=Adamm"], ["'optim'", "did you mean 'Adam'"]),
    ("unknown activation", ["baseline_v2", "-m", "act=tanh2"], ["'act'", "did you mean 'tanh/2'"]),
    ("dist without distribution", ["baseline_v2", "-m", "dist={'n_buckets': 11, 'inf_bounds': False}"],
     ["'dist'", "exactly one distribution", "got none"]),
    ("dist with two distributions",
     ["baseline_v2", "-m", "dist={'n_buckets': 11, 'inf_bounds': False, 'norm': {'mean': 0.0, 'std': 0.4}, "
                           "'uniform': {'lower': -1.0, 'upper': 1.0}}"],
     ["'dist'", "exactly one distribution", "['norm', 'uniform']"]),
    ("expert_7 override", ["baseline_v2", "-m", "expert_7.batch_size=16"],
     ["-m expert_7.batch_size=16", "'expert_7'", "no such expert"]),
    ("experts with 7", ["baseline_v2", "-m", "experts=[0, 7]"], ["-m experts=[0, 7]", "unknown expert(s) [7]"]),
    ("empty experts", ["baseline_v2", "-m", "experts=[]"], ["-m experts=[]", "at least one expert"]),
    ("-m without =", ["baseline_v2", "-m", "batch_size"], ["-m batch_size", "expected KEY=VALUE"]),
    ("-m unparsable value", ["baseline_v2", "-m", "experts=[0, 1"], ["-m experts=[0, 1", "cannot read the value"]),
    ("-m unknown key", ["baseline_v2", "-m", "bach_size=16"], ["-m bach_size=16", "did you mean 'batch_size'"]),
    ("-m sub-key of a plain key", ["baseline_v2", "-m", "epochs.max=3"], ["-m epochs.max=3", "no sub-keys"]),
    ("-m empty key", ["baseline_v2", "-m", "=3"], ["-m =3", "empty key"]),
    ("-m experts per expert", ["baseline_v2", "-m", "expert_2.experts=[1]"],
     ["-m expert_2.experts=[1]", "cannot be set per expert"]),
]


@pytest.mark.parametrize("args, parts", [c[1:] for c in OVERRIDE_CASES], ids=[c[0] for c in OVERRIDE_CASES])
def test_bad_config_or_override(capsys, tmp_path, args, parts):
    code, out, err = run_main(capsys, tmp_path / "log", *args)
    assert_user_error(code, out, err, *parts)
    assert len(err) == 1, err
    assert not (tmp_path / "log").exists() or not any((tmp_path / "log").iterdir())


# ---------------------------------------------------------------------------------------------- filters
FILTER_CASES = [
    # id, filter text, parts of the message
    ("syntax error", "IdentityFilter(", ["syntax error"]),
    ("unbalanced", "ConCatFilter([IdentityFilter()]", ["syntax error"]),
    ("unknown name", "Max3EventsFilter()", ["unknown name 'Max3EventsFilter'"]),
    ("unknown prefixed name", "dataset_filters.Foo()", ["unknown name 'Foo'"]),
    ("wrong argument", "RangeFilter(5)", ["RangeFilter", "must be a range"]),
    ("not called", "IdentityFilter", ["'IdentityFilter' must be called"]),
    ("__import__", "__import__('os').system('touch {owned}')", ["__import__('os').system", "not allowed"]),
    ("open", "open('/etc/passwd')", ["unknown name 'open'"]),
    ("subclasses", "().__class__.__bases__[0].__subclasses__()", ["__subclasses__", "not allowed"]),
    ("lambda", "lambda: IdentityFilter()", ["lambda", "Lambda"]),
    ("comprehension", "ConCatFilter([IdentityFilter() for _ in range(3)])", ["for _ in range(3)", "ListComp"]),
    ("exec in a string", "ExpertFilter(exec('import os'))", ["unknown name 'exec'"]),
]


@pytest.mark.parametrize("text, parts", [c[1:] for c in FILTER_CASES], ids=[c[0] for c in FILTER_CASES])
def test_filter_that_is_not_a_filter(capsys, tmp_path, monkeypatch, text, parts):
    owned = tmp_path / "owned"
    text = text.format(owned=owned)
    ran = []
    monkeypatch.setattr("os.system", lambda *a: ran.append(a) or 0)  # belt and braces: catch it, do not run it
    code, out, err = run_main(capsys, tmp_path / "log", "baseline_v2", "-m", f"filter={text}")
    line = assert_user_error(code, out, err, f"-m filter={text}", "key 'filter'", *parts)
    assert len(err) == 1, err
    assert "column" in line  # where in the expression
    assert not owned.exists() and not ran


# ---------------------------------------------------------------------------------------------- data files
def _lines(path: Path) -> list[str]:
    return path.read_text().split("\n")


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines))
    return path


def _set_field(lines: list[str], line_no: int, column: str, value: str) -> list[str]:
    fields = lines[line_no - 1].split("\t")
    fields[COLUMNS.index(column)] = value
    lines[line_no - 1] = "\t".join(fields)
    return lines


def _missing(good: Path, tmp: Path) -> tuple[Path, list[str]]:
    path = tmp / "nope.tsv"
    return path, [str(path), "not found"]


def _directory(good: Path, tmp: Path) -> tuple[Path, list[str]]:
    path = tmp / "a_directory.tsv"
    path.mkdir()
    return path, [str(path), "directory"]


def _empty(good: Path, tmp: Path) -> tuple[Path, list[str]]:
    path = tmp / "empty.tsv"
    path.write_bytes(b"")
    return path, [f"{path}:1:", "empty file"]


def _header_only(good: Path, tmp: Path) -> tuple[Path, list[str]]:
    path = _write(tmp / "header_only.tsv", _lines(good)[:2] + [""])
    return path, [f"{path}:", "no data rows"]


def _wrong_column(good: Path, tmp: Path) -> tuple[Path, list[str]]:
    lines = _lines(good)
    lines[0] = lines[0].replace("SL3-alpha", "SL3-alfa")
    path = _write(tmp / "wrong_column.tsv", lines)
    return path, [f"{path}:1:", "'SL3-alpha'", "'SL3-alfa'"]


def _missing_column(good: Path, tmp: Path) -> tuple[Path, list[str]]:
    drop = COLUMNS.index("RecoTheta")
    lines = ["\t".join(f for i, f in enumerate(line.split("\t")) if i != drop) if line else line
             for line in _lines(good)]
    path = _write(tmp / "missing_column.tsv", lines)
    return path, [f"{path}:1:", "missing column 'RecoTheta'"]


def _too_few(good: Path, tmp: Path) -> tuple[Path, list[str]]:
    lines = _lines(good)
    lines[6] = lines[6].rsplit("\t", 1)[0]
    path = _write(tmp / "too_few.tsv", lines)
    return path, [f"{path}:7:", "expected 42", "found 41"]


def _too_many(good: Path, tmp: Path) -> tuple[Path, list[str]]:
    lines = _lines(good)
    lines[8] += "\t0.5"
    path = _write(tmp / "too_many.tsv", lines)
    return path, [f"{path}:9:", "expected 42", "found 43"]


def _not_a_number(good: Path, tmp: Path) -> tuple[Path, list[str]]:
    path = _write(tmp / "not_a_number.tsv", _set_field(_lines(good), 12, "SL2-driftT", "abc"))
    return path, [f"{path}:12:", "SL2-driftT", "'abc'"]


def _not_an_integer(good: Path, tmp: Path) -> tuple[Path, list[str]]:
    path = _write(tmp / "not_an_integer.tsv", _set_field(_lines(good), 20, "Expert", "2.5"))
    return path, [f"{path}:20:", "Expert", "integer"]


def _nan_input(good: Path, tmp: Path) -> tuple[Path, list[str]]:
    path = _write(tmp / "nan_input.tsv", _set_field(_lines(good), 5, "SL0-relID", "nan"))
    return path, [f"{path}:5:", "SL0-relID", "not a finite number"]


def _inf_input(good: Path, tmp: Path) -> tuple[Path, list[str]]:
    path = _write(tmp / "inf_input.tsv", _set_field(_lines(good), 15, "SL8-alpha", "-inf"))
    return path, [f"{path}:15:", "SL8-alpha", "not a finite number"]


def _nan_target(good: Path, tmp: Path) -> tuple[Path, list[str]]:
    path = _write(tmp / "nan_target.tsv", _set_field(_lines(good), 30, "RecoTheta", "NaN"))
    return path, [f"{path}:30:", "RecoTheta", "not a finite number"]


def _inf_target(good: Path, tmp: Path) -> tuple[Path, list[str]]:
    path = _write(tmp / "inf_target.tsv", _set_field(_lines(good), 8, "RecoZ", "inf"))
    return path, [f"{path}:8:", "RecoZ", "not a finite number"]


def _truncated_gzip(good: Path, tmp: Path) -> tuple[Path, list[str]]:
    data = gzip.compress(good.read_bytes())
    path = tmp / "truncated.gz"
    path.write_bytes(data[: len(data) // 2])
    stop = zlib.decompressobj(wbits=31).decompress(data[: len(data) // 2]).count(b"\n") + 1
    return path, [f"{path}:{stop}:", "truncated or corrupt gzip"]


def _not_gzip(good: Path, tmp: Path) -> tuple[Path, list[str]]:
    read_neuroresults(good)  # the same content is in the parse cache: the name check must still apply
    path = tmp / "plain_text.gz"
    path.write_bytes(good.read_bytes())
    return path, [f"{path}:1:", "not gzip"]


DATA_CASES = {
    "missing file": _missing, "directory": _directory, "empty file": _empty, "header only": _header_only,
    "wrong column": _wrong_column, "missing column": _missing_column, "too few fields": _too_few,
    "too many fields": _too_many, "non-numeric field": _not_a_number, "non-integer field": _not_an_integer,
    "NaN input": _nan_input, "inf input": _inf_input, "NaN target": _nan_target, "inf target": _inf_target,
    "truncated gzip": _truncated_gzip, "not gzip": _not_gzip,
}
# the split a bad file is given for: mostly train, a few in val and test (each split is read and checked)
DATA_SPLIT = {"NaN target": "val", "too many fields": "test", "truncated gzip": "val"}


def _bad_data_run(case: str, good_data, capsys, tmp_path) -> tuple[int, str, list[str], list[str]]:
    split = DATA_SPLIT.get(case, "train")
    bad, parts = DATA_CASES[case](good_data[split], tmp_path)
    code, out, err = run_main(capsys, tmp_path / "log", "baseline_v2", "-m", good_override(good_data, **{split: bad}))
    return code, out, err, parts


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_file_is_named_with_its_line(case, good_data, capsys, tmp_path):
    code, out, err, parts = _bad_data_run(case, good_data, capsys, tmp_path)
    assert_user_error(code, out, err, *parts)
    assert_nothing_trained(tmp_path / "log")


LATE_DATA_CASES = [c for c in DATA_CASES if c not in ("missing file", "directory")]


@pytest.mark.parametrize("case", LATE_DATA_CASES)
def test_bad_data_file_one_line_and_no_run_folder(case, good_data, capsys, tmp_path):
    code, out, err, parts = _bad_data_run(case, good_data, capsys, tmp_path)
    assert_user_error(code, out, err, *parts)
    assert len(err) == 1, err
    assert_no_run_folder(tmp_path / "log")


def test_data_directory_is_called_a_directory(good_data, capsys, tmp_path):
    code, out, err, parts = _bad_data_run("directory", good_data, capsys, tmp_path)
    assert_user_error(code, out, err, *parts)
    assert "not found" not in err[-1]


def test_missing_data_file_one_line_and_no_run_folder(good_data, capsys, tmp_path):
    code, out, err, parts = _bad_data_run("missing file", good_data, capsys, tmp_path)
    assert_user_error(code, out, err, *parts, "'train'")
    assert len(err) == 1, err
    assert_no_run_folder(tmp_path / "log")


def test_production_run_without_terminal_still_one_line(good_data, capsys, tmp_path):
    """-p without -d and without a terminal: the note about the empty description does not precede the error."""
    code, out, err = run_main(capsys, tmp_path / "log", "baseline_v2", "-p", "-m",
                              good_override(good_data, train=tmp_path / "nope.tsv"))
    assert_user_error(code, out, err, str(tmp_path / "nope.tsv"), "not found")
    assert len(err) == 1, err


def _no_rows_run(good_data, capsys, tmp_path) -> tuple[int, str, list[str]]:
    for split in ("train", "val"):  # the premise: none of the first five rows belongs to expert 4
        assert 4 not in read_neuroresults(good_data[split], ["Expert"], cache_dir=None)["Expert"][:5]
    return run_main(capsys, tmp_path / "log", "baseline_v2", "-m", good_override(good_data),
                    "filter=RangeFilter(range(0, 5))", "experts=[4]")


def test_expert_without_rows_after_filter(good_data, capsys, tmp_path):
    code, out, err = _no_rows_run(good_data, capsys, tmp_path)
    assert_user_error(code, out, err, "expert_4", "RangeFilter(range(0, 5))", "no train rows")
    assert_nothing_trained(tmp_path / "log")


def test_expert_without_rows_one_line_and_no_run_folder(good_data, capsys, tmp_path):
    code, out, err = _no_rows_run(good_data, capsys, tmp_path)
    assert_user_error(code, out, err, "expert_4", "RangeFilter(range(0, 5))")
    assert len(err) == 1, err
    assert_no_run_folder(tmp_path / "log")


# ---------------------------------------------------------------------------------------------- earlier runs
@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> Path:
    """One small real run (expert 0, one epoch) on other data than `good_data`: R/custom/version_0."""
    from neuro_trigger.runner.api import train

    folder = tmp_path_factory.mktemp("earlier_data")
    data = {}
    for i, (split, n) in enumerate({"train": 2000, "val": 600, "test": 400}.items()):
        data[split] = [str(folder / f"{split}.tsv")]
        write_table(generate(n, seed=900 + i), data[split][0])
    config = {"extends": "baseline_v1", "data": data, "epochs": 1, "experts": [0], "batch_size": 256,
              "plot_every": 100}
    result = train(config, production=False, log_root=tmp_path_factory.mktemp("earlier_log"),
                   show_progress=False)
    assert result.ok and (result.folder / "weights.json").is_file()
    return result.folder


@pytest.fixture
def log_with_earlier_run(earlier_run, tmp_path) -> Path:
    """A fresh log root holding a copy of the earlier run as custom/version_0."""
    root = tmp_path / "log"
    shutil.copytree(earlier_run, root / "custom" / "version_0")
    return root


def _run_cases(earlier: Path, tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """id -> (-m overrides, parts of the message)."""
    not_json = tmp / "not_json.json"
    not_json.write_text("expert_0: [1, 2")
    weights = earlier / "weights.json"
    return {
        "compare_to missing run": (["compare_to=custom/version_7"],
                                   ["compare_to 'custom/version_7'", "not found", "summary.json"]),
        "compare_to other data": (["compare_to=custom/version_0"],
                                  ["compare_to 'custom/version_0'", "other train data"]),
        "weights missing": ([f"load_pre_trained_weights={tmp / 'nope.json'}"],
                            ["load_pre_trained_weights", "not found", "nope.json"]),
        "weights not JSON": ([f"load_pre_trained_weights={not_json}"],
                             ["load_pre_trained_weights", str(not_json), "not valid JSON", "line 1"]),
        "weights missing an expert": ([f"load_pre_trained_weights={weights}", "experts=[1]"],
                                      ["load_pre_trained_weights", "no weights for expert_1", "expert_0"]),
        "weights of another shape": ([f"load_pre_trained_weights={weights}", "out_size=1"],
                                     ["load_pre_trained_weights", "expert_0", "shape [2, 81]", "[1, 81]"]),
    }


RUN_CASES = ["compare_to missing run", "compare_to other data", "weights missing", "weights not JSON",
             "weights missing an expert", "weights of another shape"]


def _referenced_run(case: str, root: Path, good_data, capsys, tmp_path) -> tuple[int, str, list[str], list[str]]:
    overrides, parts = _run_cases(root / "custom" / "version_0", tmp_path)[case]
    code, out, err = run_main(capsys, root, "baseline_v2", "-m", good_override(good_data), *overrides)
    return code, out, err, parts


@pytest.mark.parametrize("case", RUN_CASES)
def test_bad_reference_to_an_earlier_run(case, log_with_earlier_run, good_data, capsys, tmp_path):
    code, out, err, parts = _referenced_run(case, log_with_earlier_run, good_data, capsys, tmp_path)
    assert_user_error(code, out, err, *parts)
    assert not list((log_with_earlier_run / "baseline_v2").rglob("ckpts"))
    assert not list((log_with_earlier_run / "baseline_v2").rglob("expert_*"))


@pytest.mark.parametrize("case", RUN_CASES)
def test_bad_reference_one_line_and_no_run_folder(case, log_with_earlier_run, good_data, capsys, tmp_path):
    code, out, err, parts = _referenced_run(case, log_with_earlier_run, good_data, capsys, tmp_path)
    assert_user_error(code, out, err, *parts)
    assert len(err) == 1, err
    assert not (log_with_earlier_run / "baseline_v2").exists()


def test_earlier_run_passes_the_same_checks(earlier_run, log_with_earlier_run):
    """Control: the run and its weights pass these checks when they do fit, so the cases above fail for
    the reason they name."""
    from neuro_trigger.config.resolution import resolve_config
    from neuro_trigger.data.selection import apply_compare_to, load_data
    from neuro_trigger.run.weights import check_weights_file

    resolved = json.loads((earlier_run / "config.json").read_text())
    stores = load_data(resolved["global"])
    apply_compare_to(stores, "custom/version_0", log_with_earlier_run)
    weights = str(log_with_earlier_run / "custom" / "version_0" / "weights.json")
    configs = resolve_config(resolved["global"] | {"extends": "base"}, experts=[0])["experts"]
    check_weights_file(weights, ["expert_0"], configs)


# ---------------------------------------------------------------------------------------------- log location
def test_unwritable_log_location(good_data, capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, out, err = run_main(capsys, blocker / "log", "baseline_v2", "-m", good_override(good_data))
    assert_user_error(code, out, err, f"log location {blocker / 'log'}", "not writable")
    assert len(err) == 1, err


def test_full_log_location(good_data, capsys, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(run_folder.shutil, "disk_usage", lambda path: usage._replace(free=3 * 1024 * 1024))
    code, out, err = run_main(capsys, tmp_path / "log", "baseline_v2", "-m", good_override(good_data))
    assert_user_error(code, out, err, f"log location {tmp_path / 'log'}", "only 3 MB free")
    assert len(err) == 1, err
    assert_no_run_folder(tmp_path / "log")


# ---------------------------------------------------------------------------------------------- end to end
def _script(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "neuro_trigger/main.py", *args], cwd=REPO_ROOT, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_exit_code_2_from_a_real_process(good_data, tmp_path):
    """Three cases as real processes, started at once: exit status 2 and one line, end to end."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cases = [
        (["baselin_v2", "--log-root", str(tmp_path / "log")], "did you mean 'baseline_v2'"),
        (["baseline_v2", "-m", "filter=__import__('os').system('touch " + str(tmp_path / "owned") + "')",
          "--log-root", str(tmp_path / "log")], "not allowed"),
        (["baseline_v2", "-m", good_override(good_data), "--log-root", str(blocker / "log")], "not writable"),
    ]
    processes = [(_script(*args), expected) for args, expected in cases]
    for process, expected in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 2, err
        assert out == "" and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "owned").exists()
