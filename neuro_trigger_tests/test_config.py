"""Config resolution: inheritance order, per-expert and dotted overrides, every validation error."""
import json

import pytest

from configs import configs as CONFIGS
from neuro_trigger.config.errors import ConfigError
from neuro_trigger.config.listing import describe_configs
from neuro_trigger.config.resolution import parse_override, resolve_config


def test_every_named_config_resolves_to_json():
    for name in CONFIGS:
        resolved = resolve_config(name)
        json.dumps(resolved)
        assert resolved["chain"][0] == "base" and resolved["chain"][-1] == name
        assert set(resolved["experts"]) == {f"expert_{e}" for e in resolved["global"]["experts"]}


def test_required_configs_exist_with_their_defining_values():
    r = resolve_config("baseline_v2")
    assert r["chain"] == ["base", "baseline_v1", "baseline_v2"]
    assert r["global"]["act"] == "tanh/2"
    base = resolve_config("base")["global"]
    assert (base["learning_rate"], base["batch_size"], base["weight_decay"]) == (1e-3, 2048, 1e-6)
    assert (base["in_size"], base["out_size"], base["model"], base["loss"], base["optim"]) == (
        27, 2, "BaselineModel", "MSELoss", "Adam")
    assert base["experts"] == [0, 1, 2, 3, 4] and base["dist"] is None
    assert resolve_config("baseline_v1_only_z")["global"]["out_size"] == 1
    assert resolve_config("baseline_v4")["global"]["model"] == "BaselineModelBN"
    assert resolve_config("baseline_v3")["global"]["act"] == "softsign"
    per_expert = resolve_config("baseline_v2_tanh_per_expert")["experts"]
    got = {k: (v["batch_size"], v["epochs"]) for k, v in per_expert.items()}
    assert got == {"expert_0": (2048, 1000), "expert_1": (2048, 1000), "expert_2": (16, 4000),
                   "expert_3": (128, 2000), "expert_4": (16, 4000)}


def test_child_replaces_dist_whole_but_merges_other_dicts():
    uniform = resolve_config("reweight_uniform")["global"]["dist"]
    assert "norm" not in uniform and uniform["uniform"] == {"lower": -1.0, "upper": 1.0}
    assert resolve_config("reweight_normal")["global"]["dist"]["norm"] == {"mean": 0.0, "std": 0.4}
    configs = {
        "base": CONFIGS["base"],
        "parent": {"extends": "base", "expert_3": {"batch_size": 64, "epochs": 7}},
        "child": {"extends": "parent", "expert_3": {"batch_size": 128},
                  "data": {"train": ["other.gz"]}},
    }
    r = resolve_config("child", configs=configs)
    assert (r["experts"]["expert_3"]["batch_size"], r["experts"]["expert_3"]["epochs"]) == (128, 7)
    assert r["global"]["data"]["train"] == ["other.gz"]
    assert r["global"]["data"]["val"] == CONFIGS["base"]["data"]["val"]


def test_dotted_overrides_apply_after_expert_blocks():
    r = resolve_config("baseline_v2_tanh_per_expert",
                       ["expert_2.batch_size=32", "act=softsign", "epochs=3"])
    assert r["experts"]["expert_2"]["batch_size"] == 32
    assert r["experts"]["expert_4"]["batch_size"] == 16
    assert all(e["act"] == "softsign" and e["epochs"] == 3 for e in r["experts"].values())
    r = resolve_config("reweight_normal", ["dist.norm.std=0.3"])
    assert r["experts"]["expert_0"]["dist"]["norm"] == {"mean": 0.0, "std": 0.3}


def test_override_values_are_literals_or_bare_words():
    assert parse_override("epochs=16") == (["epochs"], 16)
    assert parse_override("expert_2.batch_size=16") == (["expert_2", "batch_size"], 16)
    assert parse_override("act=tanh/2") == (["act"], "tanh/2")
    assert parse_override("experts=[0, 3]") == (["experts"], [0, 3])
    assert parse_override("compare_to=None") == (["compare_to"], None)
    assert parse_override("filter=Max2EventsFilter()")[1] == "Max2EventsFilter()"


def test_solo_and_unused_expert_overrides():
    r = resolve_config("baseline_v2_tanh_per_expert", ["expert_2.batch_size=32"], experts=[-1])
    assert list(r["experts"]) == ["expert_-1"]
    assert r["experts"]["expert_-1"]["expert"] == -1
    assert r["experts"]["expert_-1"]["batch_size"] == 2048


def test_handcrafted_dict_resolves():
    r = resolve_config({"extends": "base", "epochs": 2, "experts": [1]})
    assert r["experts"]["expert_1"]["epochs"] == 2


def test_describe_lists_parent_and_description():
    rows = {name: (parent, desc) for name, parent, desc in describe_configs()}
    assert rows["baseline_v2"][0] == "baseline_v1" and rows["baseline_v2"][1]


BAD_OVERRIDES = [
    (["act=tanh2"], "did you mean 'tanh/2'"),
    (["model=BaselineModl"], "did you mean 'BaselineModel'"),
    (["loss=MSE"], "loss"),
    (["optim=Adamm"], "did you mean 'Adam'"),
    (["batchsize=3"], "did you mean 'batch_size'"),
    (["expert_7.batch_size=3"], "expert_7"),
    (["expert_2.batch_sise=3"], "did you mean 'batch_size'"),
    (["dist.norm.sdt=3"], "did you mean 'std'"),
    (["learning_rate=0"], "learning_rate"),
    (["batch_size=0"], "batch_size"),
    (["epochs=0"], "epochs"),
    (["out_size=3"], "must be 1 or 2"),
    (["batch_size=2.5"], "expected int"),
    (["batch_size=True"], "expected int"),
    (["experts=[]"], "at least one expert"),
    (["experts=[0, 7]"], "unknown expert"),
    (["act"], "KEY=VALUE"),
    (["experts=[1,"], "cannot read the value"),
    (["filter=open('/etc/passwd')"], "filter"),
    (["dist={'n_buckets': 11, 'inf_bounds': False}"], "exactly one distribution"),
    (["dist={'n_buckets': 11, 'inf_bounds': False, 'norm': {'mean': 0, 'std': 1}, "
      "'uniform': {'lower': 0, 'upper': 1}}"], "exactly one distribution"),
    (["dist.n_buckets=0"], "n_buckets"),
    (["dist.norm.std=0"], "std"),
    (["dist={'n_buckets': 3, 'inf_bounds': False, 'uniform': {'lower': 1, 'upper': 0}}"], "lower"),
]


@pytest.mark.parametrize("overrides,expected", BAD_OVERRIDES)
def test_bad_overrides_name_the_argument(overrides, expected):
    name = "reweight_normal" if overrides[0].startswith("dist.") else "baseline_v2"
    with pytest.raises(ConfigError) as err:
        resolve_config(name, overrides)
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert f"-m {overrides[0].split('=')[0]}" in message or "-m " in message


def test_unknown_config_suggests_closest():
    with pytest.raises(ConfigError, match="did you mean 'baseline_v2'"):
        resolve_config("baseline_v22")


def test_a_missing_parent_is_never_answered_with_the_config_itself():
    configs = {"tuned_v3": {"extends": "tuned_v2"}, "other": {}}
    with pytest.raises(ConfigError) as err:
        resolve_config("tuned_v3", configs=configs)
    message = str(err.value)
    assert "extends unknown config 'tuned_v2'" in message and "did you mean" not in message, message
    assert "--list" in message


def test_an_unknown_config_far_from_every_name_points_to_the_list(capsys):
    from neuro_trigger.main import main

    assert main(["no_such_thing_at_all"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown config 'no_such_thing_at_all'; every config: python neuro_trigger/main.py --list"]


@pytest.mark.parametrize(
    "configs,expected",
    [
        ({"a": {"extends": "nowhere"}}, "unknown config 'nowhere'"),
        ({"a": {"extends": "b"}, "b": {"extends": "a"}}, "cycle: a -> b -> a"),
        ({"a": {"extends": "a"}}, "cycle"),
    ],
)
def test_broken_extends_chains(configs, expected):
    with pytest.raises(ConfigError, match=expected):
        resolve_config("a", configs=configs)


def test_errors_in_config_files_name_file_line_and_key():
    with pytest.raises(ConfigError) as err:
        resolve_config({"extends": "base", "batchsize": 3})
    assert "batchsize" in str(err.value) and "batch_size" in str(err.value)
    configs = {"base": CONFIGS["base"], "mine": {"extends": "base", "expert_3": {"epoch": 5}}}
    with pytest.raises(ConfigError, match="expert_3.epoch.*did you mean 'epochs'"):
        resolve_config("mine", configs=configs)
    with pytest.raises(ConfigError, match="expert_9"):
        resolve_config({"extends": "base", "expert_9": {"epochs": 5}})


def test_errors_in_the_configs_file_point_at_its_line(monkeypatch):
    import configs as module

    broken = dict(CONFIGS)
    broken["baseline_v2"] = {**CONFIGS["baseline_v2"], "act": "tanh2"}
    monkeypatch.setattr(module, "configs", broken)
    with pytest.raises(ConfigError) as err:
        resolve_config("baseline_v2")
    message = str(err.value)
    source = module.__file__
    lines = open(source).read().splitlines()
    line_no = int(message.split(":")[1])
    assert message.startswith("configs/") or message.startswith(source)
    assert '"act"' in lines[line_no - 1]
