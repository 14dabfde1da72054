"""Hardware chosen by the config: `accelerator`, `devices` and `precision`, globally, per expert and by -m;
checked against the machine before a run folder is made (training/devices.py), and turned into the
Trainer's arguments and the device of an expert's tensors.

The CLI cases run `neuro_trigger/main.py` as a real process: exit code 2, one line on stderr, no run
folder under --log-root. Cases marked `gpu` need a CUDA GPU (conftest.py skips them without one).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from neuro_trigger import REPO_ROOT
from neuro_trigger.config.errors import ConfigError
from neuro_trigger.config.resolution import resolve_config
from neuro_trigger.errors import UserError
from neuro_trigger.training import devices
from neuro_trigger.training.devices import check_hardware, torch_device, trainer_hardware

HAS_GPU = torch.cuda.device_count() > 0
needs_no_gpu = pytest.mark.skipif(HAS_GPU, reason="checks what happens on a machine without a CUDA GPU")
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")


def resolved_with(*overrides: str, experts: list[int] | None = None) -> dict:
    return resolve_config("baseline_v2", list(overrides), experts=experts)


def small(**keys) -> dict:
    """A hand-made resolved config of one expert (what check_hardware reads: name and experts)."""
    return {"name": "handmade", "experts": {"expert_0": {"expert": 0, **keys}}}


def small_gpu_for(key: str) -> dict:
    """The resolved baseline_v2 on the CPU, but for expert `key` on the GPU."""
    return resolved_with("accelerator=cpu", f"{key}.accelerator=gpu")


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as one without a CUDA GPU, whatever it has."""
    monkeypatch.setattr(devices, "gpu_count", lambda: 0)


# ---------------------------------------------------------------------------------------------- the keys
def test_defaults_and_every_spelling():
    g = resolved_with()["global"]
    assert (g["accelerator"], g["devices"], g["precision"]) == ("auto", 1, "32-true")
    for precision in ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64"):
        assert resolved_with(f"precision={precision}", "optim=SGD")["global"]["precision"] == precision
    assert resolved_with("precision=64")["global"]["precision"] == "64"  # an int from -m is read as the string
    assert resolved_with("accelerator=cuda")["global"]["accelerator"] == "gpu"  # cuda is a synonym of gpu
    assert resolved_with("accelerator=cpu")["global"]["accelerator"] == "cpu"


@pytest.mark.parametrize(("override", "parts"), [
    ("accelerator=tpu", ["-m accelerator=tpu", "key 'accelerator'", "unknown name 'tpu'", "did you mean 'gpu'"]),
    ("accelerator=mps", ["key 'accelerator'", "unknown name 'mps'"]),
    ("devices=0", ["-m devices=0", "key 'devices'", "must be >= 1"]),
    ("devices=-3", ["key 'devices'", "must be >= 1"]),
    ("devices=2", ["key 'devices'", "must be 1", "an expert trains on one device"]),
    ("devices=auto", ["key 'devices'", "expected int"]),
    ("devices=True", ["key 'devices'", "expected int"]),
    ("precision=16", ["key 'precision'", "'16' is Lightning's old name of '16-mixed'"]),
    ("precision=bf16", ["key 'precision'", "old name of 'bf16-mixed'"]),
    ("precision=bf16_mixed", ["key 'precision'", "unknown precision 'bf16_mixed'", "did you mean 'bf16-mixed'"]),
    ("precision=8-true", ["key 'precision'", "unknown precision '8-true'"]),
    ("precision=None", ["key 'precision'", "must not be None"]),
    ("expert_3.devices=2", ["-m expert_3.devices=2", "expert_3: key 'devices'", "one device"]),
    ("expert_1.precision=half", ["-m expert_1.precision=half", "expert_1: key 'precision'", "unknown precision"]),
])
def test_bad_values_are_one_line_naming_the_key(override, parts):
    with pytest.raises(ConfigError) as caught:
        resolved_with(override)
    message = str(caught.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


def test_bad_value_in_a_config_names_the_config():
    configs = {"base": {}, "fast": {"extends": "base", "expert_2": {"precision": "fp16"}}}
    with pytest.raises(ConfigError, match=r"config 'fast'.*expert_2: key 'precision': unknown precision 'fp16'"):
        resolve_config("fast", configs=configs)


@pytest.mark.parametrize("optim", ["Adam", "AdamW"])
def test_16_true_with_adam_is_refused_anywhere(optim):
    """Adam's eps (1e-8) is 0 in float16: the first step of a 16-true run makes the weights NaN."""
    with pytest.raises(ConfigError, match=rf"-m precision=16-true and -m optim={optim}: key 'precision': "
                                          rf"'16-true' with optim '{optim}': its eps \(1e-8\) is 0 in float16"):
        resolved_with("precision=16-true", f"optim={optim}")
    with pytest.raises(ConfigError, match=r"-m expert_2.precision=16-true.*expert_2: key 'precision'"):
        resolved_with("expert_2.precision=16-true", f"optim={optim}")
    for fine in ("16-mixed", "bf16-true"):
        resolved_with(f"precision={fine}", f"optim={optim}")
    resolved_with("precision=16-true", "optim=SGD", "expert_1.optim=Rprop")


def test_per_expert_override_reaches_that_expert_only():
    experts = resolved_with("expert_3.precision=bf16-mixed", "expert_1.accelerator=cpu")["experts"]
    assert experts["expert_3"]["precision"] == "bf16-mixed"
    assert experts["expert_1"]["accelerator"] == "cpu"
    assert {k for k, c in experts.items() if c["precision"] != "32-true"} == {"expert_3"}
    assert {k for k, c in experts.items() if c["accelerator"] != "auto"} == {"expert_1"}
    configs = {"base": {"precision": "64-true", "expert_0": {"precision": "bf16-true"}}}
    per_expert = resolve_config("base", configs=configs)["experts"]
    assert per_expert["expert_0"]["precision"] == "bf16-true"
    assert {c["precision"] for k, c in per_expert.items() if k != "expert_0"} == {"64-true"}


# ---------------------------------------------------------------------------------------------- check_hardware
def test_valid_cpu_settings_pass():
    for precision in ("32-true", "32", "bf16-mixed", "bf16-true", "16-true", "64-true", "64"):
        check_hardware(resolved_with("accelerator=cpu", f"precision={precision}", "optim=SGD"))
    check_hardware(resolved_with())  # the defaults train anywhere


def test_16_mixed_on_the_cpu_is_refused():
    """Lightning would train in bf16-mixed instead (with a warning): not what the config says."""
    with pytest.raises(UserError) as caught:
        check_hardware(resolved_with("accelerator=cpu", "precision=16-mixed"))
    message = str(caught.value)
    assert "\n" not in message
    for part in ("config 'baseline_v2'", "expert_0: key 'precision'", "'16-mixed' is not supported on the CPU",
                 "would train in bf16-mixed instead"):
        assert part in message, (part, message)


def test_auto_without_a_gpu_is_the_cpu(no_gpu):
    config = resolved_with()["experts"]["expert_0"]
    assert trainer_hardware(config) == {"accelerator": "cpu", "devices": 1, "precision": "32-true"}
    assert torch_device(config) == torch.device("cpu")
    with pytest.raises(UserError, match=r"expert_0: key 'precision': '16-mixed' is not supported on the CPU "
                                        r"\(accelerator 'auto': no CUDA GPU visible\)"):
        check_hardware(resolved_with("precision=16-mixed"))


def test_gpu_asked_for_without_one(no_gpu):
    for spelling in ("gpu", "cuda"):
        with pytest.raises(UserError, match=r"config 'baseline_v2': expert_0: key 'accelerator': 'gpu' but no "
                                            r"CUDA GPU is visible"):
            check_hardware(resolved_with(f"accelerator={spelling}"))


@needs_no_gpu
def test_gpu_asked_for_on_this_machine_without_one():
    with pytest.raises(UserError, match="key 'accelerator': 'gpu' but no CUDA GPU is visible"):
        check_hardware(resolved_with("accelerator=gpu"))


def test_per_expert_setting_is_checked_for_that_expert(no_gpu):
    resolved = resolved_with("accelerator=cpu", "expert_3.precision=16-mixed")
    with pytest.raises(UserError, match=r"expert_3: key 'precision': '16-mixed' is not supported on the CPU"):
        check_hardware(resolved)
    # an expert not trained this time (a debug run trains the first one) is not held against the machine
    check_hardware(resolved_with("accelerator=cpu", "expert_3.precision=16-mixed", experts=[0]))
    # a GPU for one expert only, on a machine without one
    with pytest.raises(UserError, match=r"expert_4: key 'accelerator': 'gpu' but no CUDA GPU"):
        check_hardware(small_gpu_for("expert_4"))


@pytest.mark.parametrize(("keys", "parts"), [
    ({"accelerator": "tpu"}, ["key 'accelerator'", "unknown accelerator 'tpu'"]),
    ({"devices": 0}, ["key 'devices'", "must be a positive integer, got 0"]),
    ({"accelerator": "cpu", "devices": 2}, ["key 'devices'", "2 on the CPU", "an expert trains on one device"]),
    ({"accelerator": "cpu", "precision": "16-mixed"}, ["key 'precision'", "'16-mixed' is not supported on the CPU"]),
])
def test_hand_made_resolved_configs(keys, parts):
    """check_hardware does not rely on the schema having run (a run folder's config.json, a notebook's dict)."""
    with pytest.raises(UserError) as caught:
        check_hardware(small(**keys))
    for part in ["config 'handmade': expert_0:", *parts]:
        assert part in str(caught.value), (part, str(caught.value))


def test_more_devices_than_gpus(monkeypatch):
    monkeypatch.setattr(devices, "gpu_count", lambda: 1)
    with pytest.raises(UserError, match=r"key 'devices': 2 on a GPU: this machine has 1 GPU\(s\); an expert trains"):
        check_hardware(small(accelerator="gpu", devices=2))


# ---------------------------------------------------------------------------------------------- a real Trainer
class Tiny(L.LightningModule):
    """Records the autocast state and the dtypes it saw in its training step."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(27, 16), nn.Tanh(), nn.Linear(16, 2))
        self.seen: dict[str, object] = {}

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self.net(x)
        self.seen.update(device=x.device, out_dtype=out.dtype, weight_dtype=self.net[0].weight.dtype)
        return nn.functional.mse_loss(out.float(), y.float())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_one_step(config: dict) -> tuple[L.Trainer, Tiny, bool]:
    """Fit Tiny for one step with the expert config's hardware; returns (trainer, module, weights changed)."""
    torch.manual_seed(0)
    module = Tiny()
    before = module.net[0].weight.detach().float().clone()
    data = DataLoader(TensorDataset(torch.randn(32, 27), torch.randn(32, 2)), batch_size=16)
    trainer = L.Trainer(**trainer_hardware(config), max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, data)
    changed = not torch.equal(before, module.net[0].weight.detach().float().cpu())
    return trainer, module, changed


def test_bf16_mixed_on_the_cpu_trains_a_step():
    resolved = resolved_with("accelerator=cpu", "precision=bf16-mixed")
    check_hardware(resolved)
    config = resolved["experts"]["expert_0"]
    assert trainer_hardware(config) == {"accelerator": "cpu", "devices": 1, "precision": "bf16-mixed"}
    assert torch_device(config) == torch.device("cpu")
    trainer, module, changed = fit_one_step(config)
    assert trainer.global_step == 1 and changed
    assert trainer.precision == "bf16-mixed"
    assert module.seen == {"device": torch.device("cpu"), "out_dtype": torch.bfloat16, "weight_dtype": torch.float32}


def test_16_true_on_the_cpu_trains_a_step():
    """Lightning trains float16 weights on the CPU (slower than float32, as bf16 is): allowed."""
    resolved = resolved_with("accelerator=cpu", "precision=16-true", "optim=SGD")
    check_hardware(resolved)
    trainer, module, changed = fit_one_step(resolved["experts"]["expert_0"])
    assert trainer.global_step == 1 and changed and trainer.precision == "16-true"
    assert module.seen["weight_dtype"] == torch.float16 and module.seen["out_dtype"] == torch.float16


def test_aliases_reach_the_trainer_in_lightnings_own_spelling():
    config = resolved_with("accelerator=cpu", "precision=32")["experts"]["expert_0"]
    assert trainer_hardware(config)["precision"] == "32-true"
    config = resolved_with("accelerator=cpu", "precision=64")["experts"]["expert_0"]
    assert trainer_hardware(config)["precision"] == "64-true"


# ---------------------------------------------------------------------------------------------- the CLI
def run_cli(log_root: Path, *args: str) -> subprocess.CompletedProcess:
    """main.py as a process; epochs=1 keeps a run short should the check not stop it."""
    return subprocess.run([sys.executable, "neuro_trigger/main.py", *args, "--log-root", str(log_root)],
                          cwd=REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(("args", "parts"), [
    (["baseline_v2", "-m", "accelerator=cpu", "precision=16-mixed", "epochs=1"],
     ["expert_0: key 'precision'", "'16-mixed' is not supported on the CPU"]),
    (["baseline_v2", "-p", "-m", "experts=[3]", "accelerator=cpu", "expert_3.precision=16-mixed", "epochs=1"],
     ["expert_3: key 'precision'", "'16-mixed' is not supported on the CPU"]),
    (["baseline_v2", "-m", "precision=16-true"], ["-m precision=16-true", "'16-true' with optim 'Adam'"]),
    (["baseline_v2", "-m", "devices=2"], ["-m devices=2", "key 'devices'", "an expert trains on one device"]),
    (["baseline_v2", "-m", "precision=16"], ["-m precision=16", "key 'precision'", "old name of '16-mixed'"]),
    (["baseline_v2", "-m", "expert_0.accelerator=tpu"], ["expert_0: key 'accelerator'", "unknown name 'tpu'"]),
])
def test_cli_refuses_before_making_a_run_folder(tmp_path, args, parts):
    done = run_cli(tmp_path / "log", *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in done.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    assert done.stdout == ""
    assert not (tmp_path / "log").exists() or not any((tmp_path / "log").rglob("version_*")), \
        list((tmp_path / "log").rglob("*"))


@needs_no_gpu
def test_cli_gpu_without_one(tmp_path):
    done = run_cli(tmp_path / "log", "baseline_v2", "-m", "accelerator=gpu", "epochs=1")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: config 'baseline_v2': expert_0: key 'accelerator': 'gpu' but no CUDA GPU is visible to this "
        "process (CUDA_VISIBLE_DEVICES, driver or a CPU-only torch); use 'auto' or 'cpu'"]
    assert not (tmp_path / "log").exists() or not any((tmp_path / "log").rglob("version_*"))


# ---------------------------------------------------------------------------------------------- on a GPU
@pytest.mark.gpu
@needs_gpu
def test_gpu_is_chosen_and_bf16_mixed_trains_a_step_there():
    for accelerator in ("auto", "gpu", "cuda"):
        resolved = resolved_with(f"accelerator={accelerator}", "precision=bf16-mixed")
        check_hardware(resolved)
        config = resolved["experts"]["expert_0"]
        assert trainer_hardware(config) == {"accelerator": "gpu", "devices": 1, "precision": "bf16-mixed"}
        assert torch_device(config) == torch.device("cuda", 0)
    check_hardware(resolved_with("precision=16-mixed"))  # float16 is a GPU's own
    check_hardware(resolved_with("precision=16-true", "optim=SGD"))
    cpu = resolved_with("accelerator=cpu")["experts"]["expert_0"]
    assert trainer_hardware(cpu)["accelerator"] == "cpu" and torch_device(cpu) == torch.device("cpu")
    with pytest.raises(UserError, match="key 'devices': 2 on a GPU"):
        check_hardware(small(accelerator="gpu", devices=torch.cuda.device_count() + 1))

    trainer, module, changed = fit_one_step(config)
    assert trainer.global_step == 1 and changed
    assert trainer.precision == "bf16-mixed"
    assert module.seen["device"] == torch_device(config)
    assert module.seen["out_dtype"] == torch.bfloat16 and module.seen["weight_dtype"] == torch.float32


# ---------------------------------------------------------------------------------------------- whole runs
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict[str, list[str]]:
    from neuro_trigger_tests.run_helpers import toy_splits

    return toy_splits(tmp_path_factory.mktemp("hardware_data"), {"train": 3000, "val": 800, "test": 800}, 300)


@pytest.mark.parametrize("precision", ["bf16-true", "64-true"])
def test_reduced_and_double_precision_runs_end_with_float32_results(tiny_data, tmp_path, precision):
    """A whole debug run in another precision: it finishes, and weights.json and the predictions are the
    float32 network's (the best checkpoint was once loaded in the training dtype and predicting failed)."""
    from neuro_trigger.runner.api import train

    config = {"extends": "baseline_v2", "data": tiny_data, "experts": [0], "epochs": 2, "batch_size": 256,
              "plot_every": 1000, "accelerator": "cpu", "precision": precision, "optim": "SGD"}
    result = train(config, log_root=tmp_path, show_progress=False)
    assert result.ok, result.summary["experts"]
    assert result.summary["metrics"]["val"]["experts"]["expert_0"]["unfiltered"]["z_diff_std_cm"] > 0
    import numpy as np

    part = np.load(result.folder / "expert_0" / "prediction_val.npz")
    assert part["pred"].dtype == np.float32 and np.isfinite(part["pred"]).all()


@pytest.mark.gpu
@needs_gpu
def test_16_mixed_trains_with_gradient_scaling_on_the_gpu(tiny_data, tmp_path):
    """float16 autocast with the GradScaler that the manual optimisation step drives itself."""
    from neuro_trigger.runner.api import train

    config = {"extends": "baseline_v2", "data": tiny_data, "experts": [0], "epochs": 3, "batch_size": 256,
              "plot_every": 1000, "accelerator": "gpu", "precision": "16-mixed"}
    result = train(config, log_root=tmp_path, show_progress=False)
    assert result.ok, result.summary["experts"]
    val = result.summary["metrics"]["val"]["experts"]["expert_0"]["unfiltered"]
    assert val["loss_vs_old"] < 10
