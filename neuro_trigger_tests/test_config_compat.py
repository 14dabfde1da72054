"""Configs that are correct, compatible with the original project and safe: a broken configs file or config
is one line (exit 2) and never stops `--list`; values that would crash later are refused at resolution;
messages quote at most 200 characters of a user's value; the original's `configs` dictionary resolves;
docs/config_keys.md is the schema's own rendering.
"""
from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from configs import configs as SHIPPED
from neuro_trigger import REPO_ROOT
from neuro_trigger.config import docs as config_docs
from neuro_trigger.config import resolution
from neuro_trigger.config import sources as config_sources
from neuro_trigger.config.docs import render_config_docs
from neuro_trigger.config.errors import ConfigError
from neuro_trigger.config.listing import describe_configs, list_configs
from neuro_trigger.config.resolution import resolve_config
from neuro_trigger.config.schema import DEFAULT_DATA, SCHEMA, defaults
from neuro_trigger.data import sampling
from neuro_trigger.data.sampling import BucketSampler, bucket_probabilities
from neuro_trigger.errors import QUOTE_LIMIT, clip
from neuro_trigger.main import main
from neuro_trigger.registry import MAX_BUCKETS

LONG = "x" * 10_000  # a user's 10,000-character value


# --------------------------------------------------------------------------------------------- helpers
def run_main(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, list[str]]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def assert_one_line_error(code: int, out: str, err: list[str], *parts: str) -> str:
    assert code == 2, err
    assert out == "", out
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("error: ") and "Traceback" not in line, line
    for part in parts:
        assert part in line, f"{part!r} not in {line!r}"
    return line


def assert_nothing_under(log_root: Path) -> None:
    assert not log_root.exists() or not any(log_root.iterdir()), list(log_root.rglob("*"))


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Warnings of neuro_trigger.config.resolution, caught by a handler of its own (independent of propagation)."""
    caught: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = caught.append  # type: ignore[method-assign]
    resolution.log.addHandler(handler)
    yield caught
    resolution.log.removeHandler(handler)


@pytest.fixture
def configs_file(tmp_path, monkeypatch):
    """Make `import configs` find a configs package written by the test; returns write(text) -> path."""
    root = tmp_path / "project"
    (root / "configs").mkdir(parents=True)
    path = root / "configs" / "__init__.py"
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "configs", raising=False)

    def write(text: str) -> Path:
        path.write_text(textwrap.dedent(text))
        return path

    return write


# ---------------------------------------------------------------------------- 1. a broken configs file
def test_syntax_error_in_configs_file_is_one_line_with_file_and_line(configs_file, capsys, tmp_path):
    path = configs_file('''\
        configs = {
            "base": {"epochs": 3},
            "broken": {"extends": "base" "epochs": 4},
        }
        ''')
    log_root = tmp_path / "log"
    code, out, err = run_main(capsys, "base", "--log-root", str(log_root))
    line = assert_one_line_error(code, out, err, f"{path}:3:", "syntax error")
    assert len(line) < 300
    assert_nothing_under(log_root)
    code, out, err = run_main(capsys, "--list")  # --list says the same, and does not crash either
    assert_one_line_error(code, out, err, f"{path}:3:")


def test_exception_on_import_of_configs_file_names_its_line(configs_file, capsys, tmp_path):
    path = configs_file('''\
        SHARED = {"epochs": 3}

        configs = {
            "base": {**SHARD},
        }
        ''')
    code, out, err = run_main(capsys, "base", "--log-root", str(tmp_path / "log"))
    assert_one_line_error(code, out, err, f"{path}:4:", "name 'SHARD' is not defined", "NameError")
    assert_nothing_under(tmp_path / "log")


def test_configs_file_without_a_configs_dict(configs_file, capsys, tmp_path):
    configs_file("CONFIGS = {}\n")
    code, out, err = run_main(capsys, "--list")
    assert_one_line_error(code, out, err, "must define a dict `configs`")


def test_list_shows_every_config_and_notes_the_broken_ones(monkeypatch, capsys):
    configs = {
        "base": copy.deepcopy(SHIPPED["base"]),
        "fine": {"extends": "base", "description": "a good one"},
        "orphan": {"extends": "nowhere", "description": "parent missing"},
        "bad_value": {"extends": "fine", "batch_size": 0},
        "not_a_dict": 5,
        "after": {"extends": "fine", "description": "listed after the broken ones"},
    }
    monkeypatch.setattr(config_sources, "load_configs", lambda: (configs, None))
    code, out, err = run_main(capsys, "--list")
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.split("\n\n")[0].splitlines()}  # the sweeps follow
    assert set(lines) == set(configs)
    assert "BROKEN" not in lines["fine"] and "BROKEN" not in lines["after"] and "BROKEN" not in lines["base"]
    assert "BROKEN" in lines["orphan"] and "unknown config 'nowhere'" in lines["orphan"]
    assert "parent missing" in lines["orphan"]
    assert "BROKEN" in lines["bad_value"] and "batch_size" in lines["bad_value"] and "a good one" in lines["bad_value"]
    assert "BROKEN" in lines["not_a_dict"] and "must be a dict" in lines["not_a_dict"]
    rows = {row.name: row for row in list_configs(configs)}
    assert rows["fine"].problem == "" and rows["bad_value"].parent == "fine"
    assert [r[0] for r in describe_configs(configs)] == list(configs)  # the three-column form still works


def test_list_and_mistakes_in_config_or_launcher_do_not_import_torch():
    """--list, and a mistake in the config, -m or the launcher options, end before torch is imported: a
    one-line error comes at once, not after the seconds torch and lightning take to load."""
    code = ("import sys; from neuro_trigger.main import main; "
            "codes = [main(['--list']), main(['baseline_v2', '-m', 'act=tanh2']), main(['baseline_v22']), "
            "main(['baseline_v2', '-p', '--launcher', 'pbs']), "
            "main(['baseline_v2', '-p', '--launcher', 'slurm', '--slurm', 'queue=fast'])]; "
            "assert codes == [0, 2, 2, 2, 2], codes; bad = [m for m in ('torch', 'lightning') if m in sys.modules]; "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "baseline_v2" in done.stdout and "BROKEN" not in done.stdout
    assert [line.split(":")[0] for line in done.stderr.splitlines()] == ["error"] * 4, done.stderr


def test_registry_builds_without_import_time_torch():
    import torch

    from neuro_trigger import registry

    model = registry.build_model("BaselineModel", 27, 2, "tanh/2")
    x = torch.randn(4, 27)
    hidden = model.net[1](x)
    assert torch.equal(hidden, torch.tanh(x / 2))
    assert type(registry.build_loss("HuberLoss")).__name__ == "HuberLoss"
    assert type(registry.build_optimizer("Rprob", model.parameters(), 1e-3, 0.0)).__name__ == "Rprop"
    with pytest.raises(KeyError):
        registry.build_model("Nope", 27, 2, "relu")


# -------------------------------------------------------------------------- 2. values that crash later
CRASH_LATER = [
    ("seed negative", ["seed=-1"], ["-m seed=-1", "'seed'", ">= 0"]),
    ("seed too large", [f"seed={2**32}"], ["'seed'", f"<= {2**32 - 1}"]),
    ("learning_rate inf", ["learning_rate=1e999"], ["'learning_rate'", "finite"]),
    ("weight_decay inf", ["weight_decay=1e999"], ["'weight_decay'", "finite"]),
    ("learning_rate huge int", [f"learning_rate={10**400}"], ["'learning_rate'", "finite"]),
    ("gradient_clip_val inf", ["gradient_clip_val=1e999"], ["'gradient_clip_val'", "finite"]),
    ("std inf", ["dist.norm.std=1e999"], ["'dist.norm.std'", "finite"]),
    ("mean inf", ["dist.norm.mean=-1e999"], ["'dist.norm.mean'", "finite"]),
    ("no weight on [-1, 1]", ["dist.norm.mean=100.0", "dist.norm.std=0.01"],
     ["-m dist.norm.mean=100.0", "-m dist.norm.std=0.01", "'dist.norm'", "no weight"]),
    ("no weight, far below", ["dist.norm.mean=-40.0", "dist.norm.std=0.5"], ["'dist.norm'", "no weight"]),
    ("too many buckets", ["dist.n_buckets=10000000"], ["'dist.n_buckets'", f"<= {MAX_BUCKETS}"]),
    ("uniform inf", ["dist={'n_buckets': 11, 'uniform': {'lower': -1, 'upper': 1e999}}"],
     ["'dist.uniform.upper'", "finite"]),
]


@pytest.mark.parametrize("overrides, parts", [c[1:] for c in CRASH_LATER], ids=[c[0] for c in CRASH_LATER])
def test_values_that_would_crash_later_are_refused_before_any_folder(capsys, tmp_path, overrides, parts):
    log_root = tmp_path / "log"
    code, out, err = run_main(capsys, "reweight_normal", "-p", "-d", "x", "-m", *overrides,
                              "--log-root", str(log_root))
    assert_one_line_error(code, out, err, *parts)
    assert_nothing_under(log_root)


def test_seed_and_bucket_bounds_are_inclusive():
    assert resolve_config("baseline_v2", ["seed=0"])["global"]["seed"] == 0
    assert resolve_config("baseline_v2", [f"seed={2**32 - 1}"])["global"]["seed"] == 2**32 - 1
    r = resolve_config("reweight_normal", [f"dist.n_buckets={MAX_BUCKETS}"])
    assert r["global"]["dist"]["n_buckets"] == MAX_BUCKETS
    # all the weight outside [-1, 1] is fine with inf_bounds: the outer bucket holds it
    r = resolve_config("reweight_normal_inf_bounds", ["dist.norm.mean=100.0", "dist.norm.std=0.01"])
    assert r["global"]["dist"]["norm"]["mean"] == 100.0


def test_bucket_probabilities_refuse_no_mass_and_too_many_buckets():
    with pytest.raises(ValueError, match="no probability"):
        bucket_probabilities({"n_buckets": 11, "inf_bounds": False, "norm": {"mean": 100.0, "std": 0.01}})
    with pytest.raises(ValueError, match="no probability"):
        bucket_probabilities({"n_buckets": 11, "inf_bounds": False, "norm": {"mean": 0.0, "std": float("nan")}})
    with pytest.raises(ValueError, match="n_buckets"):
        bucket_probabilities({"n_buckets": MAX_BUCKETS + 1, "norm": {"mean": 0.0, "std": 0.4}})
    edges, p = bucket_probabilities({"n_buckets": 5, "norm": {"mean": 0, "std": 1}})  # inf_bounds omitted: False
    assert p.sum() == pytest.approx(1.0) and edges[0] == -1.0


def test_empty_bucket_warning_stays_short(caplog):
    z = np.full(500, 0.0005)  # every row in one of 1000 buckets: 999 empty ones
    dist = {"n_buckets": MAX_BUCKETS, "inf_bounds": False, "uniform": {"lower": -1.0, "upper": 1.0}}
    with caplog.at_level(logging.WARNING, logger=sampling.__name__):
        BucketSampler(z, dist, seed=0)
    message = next(r.getMessage() for r in caplog.records if r.name == sampling.__name__)
    assert f"999 of {MAX_BUCKETS} buckets" in message and "0 [-1, -0.998]" in message
    assert len(message) < 400, len(message)


# -------------------------------------------------------------------------------------- 3. long values
def test_clip():
    assert clip("short") == "short"
    assert clip("a" * QUOTE_LIMIT) == "a" * QUOTE_LIMIT
    shown = clip(LONG)
    assert len(shown) == QUOTE_LIMIT and shown.startswith("xxx") and "10000 chars" in shown
    assert len(clip(LONG, 60)) == 60


LONG_CASES = [
    ("unknown config", [LONG], "unknown config"),
    ("unknown name", ["baseline_v2", "-m", f"act={LONG}"], "'act'"),
    ("wrong type", ["baseline_v2", "-m", f"batch_size='{LONG}'"], "'batch_size'"),
    ("unknown key", ["baseline_v2", "-m", f"{LONG}=1"], "unknown key"),
    ("unreadable value", ["baseline_v2", "-m", f"experts=[{LONG}"], "cannot read the value"),
    ("filter constant", ["baseline_v2", "-m", f"filter=ExpertFilter('{LONG[:9000]}')"], "'filter'"),
    ("filter number", ["baseline_v2", "-m", f"filter=ExpertFilter({'9' * 4000})"], "'filter'"),
    ("expert list", ["baseline_v2", "-m", f"experts={list(range(5, 3000))}"], "unknown expert"),
    ("no weight", ["reweight_normal", "-m", f"dist.norm.mean={'1' * 300}.0", "dist.norm.std=0.01"], "no weight"),
]


@pytest.mark.parametrize("args, part", [c[1:] for c in LONG_CASES], ids=[c[0] for c in LONG_CASES])
def test_messages_quote_at_most_200_characters_of_a_value(capsys, tmp_path, args, part):
    code, out, err = run_main(capsys, *args, "--log-root", str(tmp_path / "log"))
    line = assert_one_line_error(code, out, err, part)
    for ch in "x91":  # no more than QUOTE_LIMIT characters of the value in a row
        assert ch * (QUOTE_LIMIT + 1) not in line, line[:300]
    assert len(line) < 4 * QUOTE_LIMIT + 300, len(line)


def test_long_key_in_a_config_file_is_clipped():
    with pytest.raises(ConfigError) as err:
        resolve_config({"extends": "base", LONG: 1, "epochs": 1})
    assert len(str(err.value)) < 3 * QUOTE_LIMIT and "x" * (QUOTE_LIMIT + 1) not in str(err.value)


# --------------------------------------------------------------------------- 4. the original's configs
DATA = {"train": ["/data/neuroresults_random1.gz"], "val": ["/data/neuroresults_random2.gz"],
        "test": ["/data/neuroresults_random3.gz"]}
PER_EXPERT = {"expert_0": {"batch_size": 2048, "epochs": 1000}, "expert_1": {"batch_size": 2048, "epochs": 1000},
              "expert_2": {"batch_size": 16, "epochs": 4000}, "expert_3": {"batch_size": 128, "epochs": 2000},
              "expert_4": {"batch_size": 16, "epochs": 4000}}
# Written the way the original project (belle2-pytorch-neuro-trigger, neuro_trigger/configs.py) writes its
# configs: a `base` without seed, filter, dist, early stopping, clipping, plot interval or data; float
# version; ints where floats are meant; dist without inf_bounds; workers 20; compare_to strings.
ORIGINAL = {
    "filter_combine_max2_dupl_events": {
        "extends": "baseline_v2",
        "compare_to": "baseline_v2/version_4",
        "description": "Baseline_v2 (tanh/2) with max 2 events and duplicative events filter combinded",
        "filter": "dataset_filters.ConCatFilter([dataset_filters.Max2EventsFilter(), "
                  "dataset_filters.DuplicateEventsFilter()])",
    },
    "filter_max2_events": {"extends": "baseline_v2", "compare_to": "baseline_v2/version_4",
                           "filter": "dataset_filters.Max2EventsFilter()"},
    "filter_dupl_events": {"extends": "baseline_v2", "compare_to": "baseline_v2/version_4",
                           "filter": "dataset_filters.DuplicateEventsFilter()"},
    "filter_old_name": {"extends": "baseline_v2", "filter": "filter_max_2_events"},
    "reweight_uniform": {
        "extends": "baseline_v2",
        "compare_to": "baseline_v2/version_4",
        "workers": 20,
        "dist": {"n_buckets": 11, "uniform": {"lower": -1, "upper": 1}},
    },
    "reweight_normal_11_04_inf_bounds": {
        "extends": "baseline_v2",
        "workers": 20,
        "dist": {"n_buckets": 11, "inf_bounds": True, "norm": {"mean": 0, "std": 0.4}},
    },
    "reweight_normal_11_04_no_inf_bounds": {
        "extends": "baseline_v2",
        "dist": {"n_buckets": 11, "inf_bounds": False, "norm": {"mean": 0, "std": 0.4}},
    },
    "reweight_normal": {
        "extends": "base",
        "compare_to": "baseline_v2/version_4",
        "dist": {"n_buckets": 11, "norm": {"mean": 0, "std": 0.4}},
        "act": "tanh/2",
        "epochs": 1000,
        "expert_3": {"batch_size": 128, "epochs": 2000},
        "expert_4": {"batch_size": 16, "epochs": 4000},
    },
    "reweight_uniform_dupl": {
        "extends": "reweight_normal",
        "dist": {"n_buckets": 11, "uniform": {"lower": -1, "upper": 1}},
        "filter": "dataset_filters.DuplicateEventsFilter()",
    },
    "baseline_v4_softsign": {"extends": "baseline_v3", "compare_to": "baseline_v4/version_0",
                             "model": "BaselineModelBN"},
    "baseline_v4_tanh_per_expert": {"extends": "baseline_v4_tanh", "compare_to": "baseline_v4_tanh/version_0",
                                    "model": "BaselineModelBN", **PER_EXPERT},
    "baseline_v4_tanh": {"extends": "baseline_v1", "model": "BaselineModelBN"},
    "baseline_v4": {"extends": "baseline_v2", "model": "BaselineModelBN"},
    "baseline_v1_comp_v2": {"extends": "baseline_v1", "compare_to": "baseline_v2/version_4", "act": "tanh"},
    "baseline_v2_sgd": {"extends": "baseline_v2", "optim": "SGD"},
    "baseline_v2_rprop": {"extends": "baseline_v2", "optim": "Rprob"},
    "baseline_v3.1": {"extends": "baseline_v3", "batch_size": 512},
    "baseline_v3": {"extends": "baseline_v2", "act": "softsign"},
    "baseline_v2_tanh_per_expert": {"extends": "baseline_v2", **PER_EXPERT},
    "baseline_v2": {"extends": "baseline_v1", "description": "Baseline arch with tanh/2", "act": "tanh/2"},
    "simple_model_v1": {"extends": "baseline_v1", "act": "relu", "model": "SimpleModel"},
    "simple_model_v1_only_z": {"extends": "simple_model_v1", "out_size": 1},
    "baseline_v1": {
        "extends": "base", "learning_rate": 1e-3, "weight_decay": 1e-6, "in_size": 27, "out_size": 2,
        "epochs": 1000, "description": "Baseline arch with tanh", "act": "tanh",
    },
    "baseline_v1_only_z": {"extends": "baseline_v1", "out_size": 1},
    "base": {
        "version": 0.2,
        "description": "Base version to inherit from",
        "learning_rate": 1e-3,
        "batch_size": 2048,
        "weight_decay": 1e-6,
        "in_size": 27,
        "out_size": 2,
        "workers": 5,
        "epochs": 10,
        "model": "BaselineModel",
        "loss": "MSELoss",
        "optim": "Adam",
        "act": "relu",
        "experts": [0, 1, 2, 3, 4],
        "compare_to": None,
        "load_pre_trained_weights": None,
        "data": DATA,  # the one thing a user adds
    },
}


def test_every_config_of_the_original_resolves_with_the_defaults():
    for name in ORIGINAL:
        r = resolve_config(name, configs=ORIGINAL)
        json.dumps(r)
        g = r["global"]
        assert r["chain"][0] == "base", name
        assert g["data"] == DATA, name
        assert set(r["experts"]) == {f"expert_{e}" for e in g["experts"]}, name
        if "seed" not in json.dumps(ORIGINAL[name]):
            assert (g["seed"], g["early_stopping_patience"], g["gradient_clip_val"], g["plot_every"]) == (
                42, 30, None, 10), name
    base = resolve_config("base", configs=ORIGINAL)["global"]
    assert base["version"] == 0.2 and base["filter"] == "dataset_filters.IdentityFilter()" and base["dist"] is None


def test_original_meanings_are_kept():
    uniform = resolve_config("reweight_uniform", configs=ORIGINAL)
    assert uniform["global"]["workers"] == 20 and uniform["global"]["compare_to"] == "baseline_v2/version_4"
    assert uniform["global"]["dist"] == {"n_buckets": 11, "inf_bounds": False, "uniform": {"lower": -1, "upper": 1}}
    assert uniform["experts"]["expert_2"]["dist"]["inf_bounds"] is False
    assert resolve_config("reweight_normal_11_04_inf_bounds", configs=ORIGINAL)["global"]["dist"]["inf_bounds"]
    per_expert = resolve_config("reweight_normal", configs=ORIGINAL)["experts"]
    assert (per_expert["expert_3"]["batch_size"], per_expert["expert_3"]["epochs"]) == (128, 2000)
    assert per_expert["expert_0"]["dist"]["inf_bounds"] is False
    dupl = resolve_config("reweight_uniform_dupl", configs=ORIGINAL)["global"]
    assert "norm" not in dupl["dist"] and dupl["act"] == "tanh/2"
    r = resolve_config("baseline_v4_tanh_per_expert", configs=ORIGINAL)["experts"]
    assert r["expert_2"]["batch_size"] == 16 and r["expert_2"]["model"] == "BaselineModelBN"
    assert r["expert_2"]["act"] == "tanh"
    assert resolve_config("baseline_v2_rprop", configs=ORIGINAL)["global"]["optim"] == "Rprob"
    assert resolve_config("filter_old_name", configs=ORIGINAL)["global"]["filter"] == (
        "dataset_filters.Max2EventsFilter()")
    # the original's base without data: the embedded toy data set
    no_data = {**ORIGINAL, "base": {k: v for k, v in ORIGINAL["base"].items() if k != "data"}}
    assert resolve_config("baseline_v2", configs=no_data)["global"]["data"] == DEFAULT_DATA


def test_original_configs_resolve_through_the_cli(monkeypatch, capsys):
    monkeypatch.setattr(config_sources, "load_configs", lambda: (ORIGINAL, None))
    code, out, err = run_main(capsys, "--list")
    assert code == 0 and "BROKEN" not in out, out
    assert len(out.split("\n\n")[0].splitlines()) == len(ORIGINAL)  # the sweeps follow


def test_bare_distribution_name_is_a_clear_error(capsys, monkeypatch):
    configs = {**ORIGINAL, "baseline_v2_norm_dist": {"extends": "baseline_v1", "act": "tanh", "dist": "norm"}}
    with pytest.raises(ConfigError, match=r"key 'dist': expected dict or None, got str 'norm'; e\.g\. \{'n_buckets'"):
        resolve_config("baseline_v2_norm_dist", configs=configs)
    rows = {row.name: row for row in list_configs(configs)}
    assert rows["baseline_v2_norm_dist"].problem and not rows["baseline_v2"].problem


def test_run_record_keys_are_ignored_with_one_warning(records):
    configs = {**ORIGINAL, "copied_from_summary": {"extends": "baseline_v2", "config": "baseline_v2",
                                                   "git_id": "abc123", "run_description": "old run"}}
    g = resolve_config("copied_from_summary", configs=configs)["global"]
    assert not {"config", "git_id", "run_description"} & set(g)
    messages = [r.getMessage() for r in records]
    assert len(messages) == 3 and all("copied_from_summary" in m and "ignored" in m for m in messages)
    assert any("'git_id'" in m for m in messages)


def test_keys_without_meaning_here_stay_errors():
    configs = {**ORIGINAL, "noisy": {"extends": "baseline_v2", "noise": 0.1}}
    with pytest.raises(ConfigError, match="unknown key 'noise'"):
        resolve_config("noisy", configs=configs)


def test_shipped_base_spells_out_the_schema_defaults():
    from neuro_trigger.data.toy.default_set import DEFAULT_FILES

    d = defaults()
    assert set(d) == set(SCHEMA)
    assert {k: v for k, v in SHIPPED["base"].items() if k != "description"} == {
        k: v for k, v in d.items() if k != "description"}
    assert DEFAULT_DATA == {split: [path] for split, path in DEFAULT_FILES.items()}
    # a config that sets nothing resolves to exactly the defaults
    r = resolve_config("empty", configs={"empty": {}})
    assert {k: v for k, v in r["global"].items()} == d


# ----------------------------------------------------------------------------------- 5. generated docs
def test_config_keys_doc_is_generated_from_the_schema():
    text = (REPO_ROOT / "docs" / "config_keys.md").read_text()
    assert text == render_config_docs(), (
        "docs/config_keys.md is stale: python -m neuro_trigger.config.docs --write-docs")
    for key in SCHEMA:
        assert f"| `{key}` |" in text
    assert "| `dist.n_buckets` | int | required |" in text and f"1 .. {MAX_BUCKETS}" in text
    assert "| `seed` | int | `42` |" in text


def test_write_docs_command(tmp_path, capsys):
    assert config_docs._main([]) == 0
    assert capsys.readouterr().out == render_config_docs()
    target = config_docs.write_config_docs(tmp_path / "keys.md")
    assert target.read_text() == render_config_docs()
