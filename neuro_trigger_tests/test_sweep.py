"""Sweeps through the API: a sweep's definition checked whole, the proposals seeded, real small sweeps (grid,
pruning, a failing trial), best/ and its winners' config training the same networks again."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from neuro_trigger.config.errors import ConfigError
from neuro_trigger.sweep import studies
from neuro_trigger.sweep.space import check_sweep

BASE = {"base": {}, "small": {"extends": "base", "act": "tanh/2", "experts": [0, 4], "epochs": 3}}


def checked(entry: dict, overrides=(), trials=None, debug=False):
    return check_sweep("s", entry, BASE, None, overrides, trials, debug)


@pytest.mark.parametrize("entry, words", [
    ({"config": "smal", "space": {"learning_rate": [1e-3]}}, "names no config; did you mean 'small'"),
    ({"config": "small", "space": {"learnin_rate": [1e-3]}}, "unknown key 'learnin_rate'"),
    ({"config": "small", "space": {"learning_rate": [1e-3, -1.0]}}, "the value -1.0"),
    ({"config": "small", "space": {"batch_size": [256, 1.5]}}, "the value 1.5"),
    ({"config": "small", "space": {"learning_rate": []}}, "the grid is empty"),
    ({"config": "small", "space": {}}, "must be a non-empty dict"),
    ({"config": "small", "space": {"data.train": ["a.gz"]}}, "'data' cannot vary in a sweep"),
    ({"config": "small", "space": {"workers": [1, 2]}}, "'workers' cannot vary"),
    ({"config": "small", "sampler": "grid", "space": {"learning_rate": ("log", 1e-4, 1e-2)}}, "a grid needs a list"),
    ({"config": "small", "space": {"learning_rate": ("log", 0.0, 1e-2)}}, "low > 0"),
    ({"config": "small", "space": {"learning_rate": ("cubic", 1, 2)}}, "give a list of values or a range"),
    ({"config": "small", "space": {"expert_2.batch_size": [16]}}, "expert_2 is not trained"),
    ({"config": "small", "space": {"batch_size": [16], "expert_4.batch_size": [32]}}, "for every expert already"),
    ({"config": "small", "space": {"learning_rate": [1e-3]}, "sampler": "bayes"}, "'bayes' is none of"),
    ({"config": "small", "space": {"learning_rate": [1e-3]}, "trials": 0}, "whole number >= 1"),
    ({"config": "small", "space": {"learning_rate": [1e-3]}, "objective": "speed"}, "'speed' is none of"),
    ({"config": "small", "space": {"learning_rate": [1e-3]}, "sapce": {}}, "unknown key; did you mean 'space'"),
    ({"config": "small", "space": {"act": [["tanh"]]}}, "must be a number, text"),
])
def test_a_wrong_sweep_is_one_line_naming_the_key(entry, words):
    with pytest.raises(ConfigError) as error:
        checked(entry)
    message = str(error.value)
    assert words in message and "\n" not in message and message.startswith("sweep 's'")


def test_an_unknown_sweep_name_suggests_the_nearest(monkeypatch):
    import configs as module
    from neuro_trigger.sweep.space import load_sweep

    monkeypatch.setitem(module.sweeps, "lr_grid", {"config": "baseline_v2", "space": {"learning_rate": [1e-3]}})
    with pytest.raises(ConfigError, match="no sweep named 'lr_gird'.*did you mean 'lr_grid'"):
        load_sweep("lr_gird")


def test_the_grid_is_handed_out_in_its_written_order_and_capped_and_per_expert():
    sweep = checked({"config": "small", "space": {"learning_rate": [1e-3, 1e-2], "batch_size": [64, 128, 256],
                                                  "expert_4.epochs": [2, 3]}})
    assert sweep.sampler == "grid" and sweep.experts == (0, 4)
    assert sweep.grid(0) == [{"learning_rate": a, "batch_size": b} for a in (1e-3, 1e-2) for b in (64, 128, 256)]
    assert sweep.budget(0) == 6 and sweep.budget(4) == 12
    assert sweep.grid(4)[:2] == [{"learning_rate": 1e-3, "batch_size": 64, "expert_4.epochs": 2},
                                 {"learning_rate": 1e-3, "batch_size": 64, "expert_4.epochs": 3}]
    assert sweep.trial_overrides(4, sweep.grid(4)[1]) == [
        "expert_4.learning_rate=0.001", "expert_4.batch_size=64", "expert_4.epochs=3"]
    capped = checked({"config": "small", "space": {"learning_rate": [1e-3, 1e-2], "batch_size": [64, 128, 256]}},
                     trials=4)
    assert capped.budget(0) == 4 and capped.grid(0) == sweep.grid(0)[:4]
    debug = checked({"config": "small", "space": {"learning_rate": [1e-3, 1e-2], "batch_size": [64, 128]}},
                    debug=True)
    assert debug.experts == (0,) and debug.trials == 3


def _proposals(folder: Path, sweep) -> list[dict]:
    folder.mkdir()
    studies.create_studies(folder, sweep)
    asked = []
    for _ in range(sweep.trials):
        for expert in sweep.experts:
            trial = studies.ask(folder, sweep, expert)
            value = trial.params["learning_rate"] * trial.params["batch_size"]  # any number that depends on them
            studies.tell(folder, sweep, expert, trial.number, "finished", value)
            asked.append(trial.params)
    assert all(studies.ask(folder, sweep, e) is None for e in sweep.experts)  # each expert has its trials
    return asked


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_the_same_sweep_and_seed_propose_the_same_trials(tmp_path, sampler):
    entry = {"config": "small", "sampler": sampler, "trials": 4,
             "space": {"learning_rate": ("log", 1e-4, 1e-2), "batch_size": ("int", 64, 512), "act": ["tanh", "relu"]}}
    first = _proposals(tmp_path / "a", checked(entry))
    assert first == _proposals(tmp_path / "b", checked(entry))
    assert first != _proposals(tmp_path / "c", checked({**entry, "seed": 1}))
    assert len({json.dumps(p, sort_keys=True) for p in first}) == len(first)  # no proposal twice


def test_a_grid_over_parallel_askers_gives_every_point_once(tmp_path):
    sweep = checked({"config": "small", "space": {"learning_rate": [1e-3, 1e-2], "batch_size": [64, 128]}})
    studies.create_studies(tmp_path, sweep)
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        asked = list(pool.map(studies.ask, [tmp_path] * 6, [sweep] * 6, [0] * 6))
    points = [a.params for a in asked if a is not None]
    assert sorted(points, key=json.dumps) == sorted(sweep.grid(0), key=json.dumps) and asked.count(None) == 2


# ---------------------------------------------------------------------------------------------- real sweeps
@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, list[str]]:
    from neuro_trigger_tests.run_helpers import toy_splits

    return toy_splits(tmp_path_factory.mktemp("sweep_data"), {"train": 2500, "val": 900, "test": 600}, 40)


@pytest.fixture
def sweeps(monkeypatch, toy):
    """The configs module with a small config on the toy data; returns a function that adds a sweep to it."""
    import configs as module

    monkeypatch.setitem(module.configs, "sweep_small", {
        "extends": "baseline_v2", "data": toy, "experts": [0, 4], "epochs": 3, "batch_size": 256})

    def add(name: str, **entry) -> str:
        monkeypatch.setitem(module.sweeps, name, {"config": "sweep_small", **entry})
        return name

    return add


def test_a_grid_sweep_leaves_every_trial_the_best_per_expert_and_its_config(sweeps, tmp_path):
    from neuro_trigger.judge.evaluation import evaluate
    from neuro_trigger.runner.api import train
    from neuro_trigger.sweep.api import sweep

    name = sweeps("grid", space={"learning_rate": [1e-3, 1e-2], "batch_size": [128, 256]})
    result = sweep(name, production=True, log_root=tmp_path)
    assert result.ok and result.folder.parent == tmp_path / "sweeps" / name
    table = pd.read_csv(result.folder / "trials.csv")
    assert list(table.columns) == ["trial", "expert", "state", "epochs", "objective", "folder", "learning_rate",
                                   "batch_size"]
    assert len(table) == 8 and set(table["state"]) == {"finished"} and set(table["epochs"]) == {3}
    for row in table.itertuples():  # the objective is the trial's validation z resolution
        result_val = json.loads((result.folder / row.folder / row.expert / "result_val.json").read_text())
        assert row.objective == pytest.approx(result_val["unfiltered"]["z_diff_std_cm"])
        assert json.loads((result.folder / row.folder / "config.json").read_text())["experts"][row.expert][
            "learning_rate"] == row.learning_rate
    best = table.loc[table.groupby("expert")["objective"].idxmin()]
    for row in best.itertuples():
        assert result.best[int(row.expert[-1])]["trial"] == row.trial
    folder = result.best_folder
    assert folder == result.folder / "best"
    for name_ in ("weights.json", "summary.json", "report.html", "pred_data_val.csv", "winners_config.json"):
        assert (folder / name_).is_file(), name_
    winners = json.loads((folder / "weights.json").read_text())
    # any trial folder is a run folder that evaluate.py judges
    some = result.folder / best.iloc[0].folder
    evaluated = evaluate(some, split="val", out_root=tmp_path / "evaluated")
    assert evaluated.folder.is_dir()
    # the winners' config trains the same networks again
    again = train(json.loads((folder / "winners_config.json").read_text()), production=True,
                  log_root=tmp_path / "again", show_progress=False)
    assert json.loads((again.folder / "weights.json").read_text()) == winners


def test_hopeless_trials_are_pruned_and_a_diverging_one_fails_while_the_sweep_goes_on(sweeps, tmp_path):
    from neuro_trigger.sweep.api import sweep

    name = sweeps("hopeless", space={"learning_rate": [3e-3, 1e-2, 10.0, 1e30]}, pruner_startup_trials=2,
                  pruner_warmup_epochs=1)
    import configs as module

    module.configs["sweep_small"]["epochs"] = 8
    result = sweep(name, production=True, log_root=tmp_path)
    table = pd.read_csv(result.folder / "trials.csv")
    states = {(row.expert, row.learning_rate): (row.state, row.epochs) for row in table.itertuples()}
    for expert in ("expert_0", "expert_4"):
        assert states[(expert, 3e-3)] == ("finished", 8) and states[(expert, 1e-2)] == ("finished", 8)
        assert states[(expert, 10.0)][0] == "pruned" and states[(expert, 10.0)][1] < 8
        assert states[(expert, 1e30)][0] == "failed"
    record = json.loads((result.folder / table[table.learning_rate == 1e30].iloc[0].folder / "trial.json").read_text())
    assert "nan" in record["error"]
    assert result.ok and {r["params"]["learning_rate"] for r in result.best.values()} <= {3e-3, 1e-2}


def test_a_space_key_named_like_a_column_of_trials_csv_keeps_both(tmp_path):
    from neuro_trigger.sweep.records import write_trials_csv

    sweep = checked({"config": "small", "space": {"epochs": [2, 3], "learning_rate": [1e-3]}})
    record = {"trial": 0, "expert": 0, "params": {"epochs": 3, "learning_rate": 1e-3}, "state": "pruned",
              "epochs": 1, "objective": 2.5, "folder": "trials/expert_0/trial_000", "error": None}
    table = pd.read_csv(write_trials_csv(tmp_path, sweep, [record]))
    assert list(table.columns)[-2:] == ["space.epochs", "learning_rate"]
    assert table.loc[0, "epochs"] == 1 and table.loc[0, "space.epochs"] == 3
