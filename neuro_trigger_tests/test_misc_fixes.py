"""Correct, compatible with the original, and safe to stop: git dirtiness, file modes, the installable
package, a quiet Lightning, and one metrics.csv row per epoch."""
from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import git
import numpy as np
import pandas as pd
import pytest
import torch

from neuro_trigger import REPO_ROOT
from neuro_trigger.config.resolution import resolve_config
from neuro_trigger.run.folder import append_journal, create_run_folder, write_git_snapshot
from neuro_trigger.training.batches import EvalBatches, TrainBatches
from neuro_trigger.training.quiet import LIGHTNING_LOGGERS, quiet_lightning


# ---------------------------------------------------------------------------------------------- git snapshot
def _repo_with_commit(path: Path) -> git.Repo:
    path.mkdir()
    repo = git.Repo.init(path)
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test")
        cw.set_value("user", "email", "test@example.invalid")
    (path / "code.py").write_text("a = 1\n")
    repo.index.add(["code.py"])
    repo.index.commit("initial")
    return repo


def test_untracked_files_do_not_make_a_checkout_dirty(tmp_path: Path) -> None:
    repo = _repo_with_commit(tmp_path / "repo")
    (tmp_path / "repo" / "notes.txt").write_text("scratch\n")
    (tmp_path / "repo" / "more").mkdir()
    (tmp_path / "repo" / "more" / "other.py").write_text("b = 2\n")
    out = tmp_path / "run"
    out.mkdir()
    sha = write_git_snapshot(out, tmp_path / "repo")
    assert (out / "git_id.txt").read_text() == f"{sha}\n"  # clean: only untracked files
    diff = (out / "git_diff.txt").read_text()
    assert "no changes to tracked files" in diff
    assert "# untracked files (2)" in diff and "notes.txt\n" in diff and "more/other.py\n" in diff
    repo.close()


@pytest.mark.parametrize("staged", [False, True], ids=["modified", "staged"])
def test_a_changed_tracked_file_makes_the_checkout_dirty(tmp_path: Path, staged: bool) -> None:
    repo = _repo_with_commit(tmp_path / "repo")
    (tmp_path / "repo" / "code.py").write_text("a = 2\n")
    if staged:
        repo.index.add(["code.py"])
    out = tmp_path / "run"
    out.mkdir()
    sha = write_git_snapshot(out, tmp_path / "repo")
    assert (out / "git_id.txt").read_text() == f"{sha} (dirty)\n"
    diff = (out / "git_diff.txt").read_text()
    assert "+a = 2" in diff and "# untracked files (0)" in diff
    repo.close()


# ---------------------------------------------------------------------------------------------- file modes
@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    """Set the process umask for a test; the old one comes back afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "folder_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o002, 0o775, 0o664)],
                         ids=["umask022", "umask002"])
def test_run_folder_and_its_files_follow_the_umask(tmp_path: Path, umask, mask: int, folder_mode: int,
                                                   file_mode: int) -> None:
    umask(mask)
    folder = create_run_folder(tmp_path / "log", "cfg")
    assert _mode(tmp_path / "log") == folder_mode
    assert _mode(folder.parent) == folder_mode and _mode(folder) == folder_mode
    write_git_snapshot(folder, REPO_ROOT)
    append_journal(tmp_path / "log" / "log.txt", {"config": "cfg", "folder": str(folder), "description": ""})
    for path in (folder / "git_id.txt", folder / "git_diff.txt", tmp_path / "log" / "log.txt"):
        assert _mode(path) == file_mode, path.name


# ---------------------------------------------------------------------------------------------- package
@pytest.mark.slow
def test_editable_install_gives_the_command_and_the_package(tmp_path: Path) -> None:
    """`pip install -e .` (offline: no dependencies, no build isolation, no index) into a fresh venv
    that sees this venv's packages: `neuro-trigger --list` runs and the packages import from elsewhere."""
    project = tmp_path / "project"  # a copy, so that the install leaves nothing in the working tree
    project.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy2(REPO_ROOT / name, project / name)
    for name in ("neuro_trigger", "configs"):
        shutil.copytree(REPO_ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "parent_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, pip, setuptools
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")}
    pip = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--disable-pip-version-check", "-e", str(project)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listed = subprocess.run([venv / "bin" / "neuro-trigger", "--list"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert any(line.split()[:1] == ["baseline_v2"] for line in listed.stdout.splitlines()), listed.stdout
    wrong = subprocess.run([venv / "bin" / "neuro-trigger", "no_such_config_anywhere"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and wrong.stderr.startswith("error:")  # main()'s int is the exit code
    imported = subprocess.run([python, "-c", "import neuro_trigger, configs; print(neuro_trigger.REPO_ROOT); "
                               "print(configs.__file__)"], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=120)
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert imported.stdout.splitlines() == [str(project), str(project / "configs" / "__init__.py")]


# ---------------------------------------------------------------------------------------------- tiny fits
def _fit(expert_dir: Path, epochs: int) -> None:
    """A real fit of expert_0 of baseline_v2 on 600 generated rows, through the project's Trainer."""
    import lightning as L

    from neuro_trigger.training.expert import build_trainer, fit_expert
    from neuro_trigger.training.module import ExpertModule

    config = resolve_config({"extends": "baseline_v2"}, [f"epochs={epochs}", "batch_size=64"])["experts"]["expert_0"]
    g = torch.Generator().manual_seed(3)
    x = torch.rand(600, 27, generator=g) * 2 - 1
    y = torch.tanh(x[:, :2] * 2)
    L.seed_everything(config["seed"], verbose=False)
    trainer, _ = build_trainer(config, expert_dir)
    fit_expert(trainer, ExpertModule(config), TrainBatches(x, y, np.arange(500), 64, seed=1),
               EvalBatches(x, y, y.flip(0), np.arange(500, 600)))


# ---------------------------------------------------------------------------------------------- quiet Lightning
NOISE = ("GPU available", "TPU available", "HPU available", "💡 Tip", "litlogger", "litmodels", "srun",
         "log_every_n_steps", "The number of training batches", "`Trainer.fit` stopped")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def lightning_output() -> Iterator[Callable[[], str]]:
    """A function returning everything Lightning has logged or warned so far in the test; Lightning's
    logger levels and the warning filters are restored afterwards."""
    import lightning  # noqa: F401 - sets Lightning's levels first

    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    handler = _Collect()
    for lg in loggers:
        lg.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # a warning an earlier test saw is shown again
            yield lambda: "\n".join(handler.messages + [str(w.message) for w in caught])
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_lightning_banners_only_with_verbose(tmp_path: Path, capfd: pytest.CaptureFixture,
                                            lightning_output: Callable[[], str], verbose: bool) -> None:
    quiet_lightning(verbose)
    _fit(tmp_path / "expert_0", epochs=1)
    printed = capfd.readouterr()
    everything = "\n".join([lightning_output(), printed.out, printed.err])
    if verbose:  # the test can fail: these do appear without quiet_lightning
        for banner in ("GPU available", "TPU available", "💡 Tip", "`Trainer.fit` stopped",
                       "The number of training batches"):
            assert banner in everything, banner
    else:
        for noise in NOISE:
            assert noise not in everything, noise


# ---------------------------------------------------------------------------------------------- metrics.csv
EPOCH_COLUMNS = ("loss", "val_loss", "val_loss_vs_old_loss", "val_z_diff_std", "val_z_diff_std_vs_old")


def _scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every scalar `tag` in the TensorBoard event files of `log_dir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def test_metrics_csv_has_one_row_per_epoch_and_tensorboard_steps_are_epochs(tmp_path: Path) -> None:
    expert_dir = tmp_path / "expert_0"
    _fit(expert_dir, epochs=3)
    table = pd.read_csv(expert_dir / "csv" / "metrics.csv")
    assert len(table) == 3
    assert table["epoch"].tolist() == [0, 1, 2] and table["step"].tolist() == [0, 1, 2]
    for column in EPOCH_COLUMNS:
        assert table[column].notna().all(), column
    assert table["loss"].iloc[-1] < table["loss"].iloc[0]  # the training loss of each epoch, not a constant
    for tag in ("loss", "val_loss"):
        scalars = _scalars(expert_dir / "tb", tag)
        assert [step for step, _ in scalars] == [0, 1, 2], tag
        np.testing.assert_allclose([value for _, value in scalars], table[tag], rtol=1e-6)


def test_one_row_per_epoch_works_with_the_mean_expert_and_a_resume(tmp_path: Path) -> None:
    """The readers and writers of metrics.csv: mean_expert.log_mean_over_experts, and the resumed fit's logger,
    which keeps the rows of the epochs its checkpoint holds (checkpoints.KeptCSVLogger)."""
    from neuro_trigger.judge.mean_expert import log_mean_over_experts
    from neuro_trigger.training.checkpoints import KeptCSVLogger

    run = tmp_path / "run"
    _fit(run / "expert_0", epochs=2)
    (run / "expert_1" / "csv").mkdir(parents=True)
    first = pd.read_csv(run / "expert_0" / "csv" / "metrics.csv")
    shifted = first.assign(val_loss=first["val_loss"] + 1.0)
    shifted.to_csv(run / "expert_1" / "csv" / "metrics.csv", index=False)
    log_dir = log_mean_over_experts(run, ["expert_0", "expert_1"])
    means = _scalars(log_dir, "val_loss")
    assert [step for step, _ in means] == [0, 1]
    np.testing.assert_allclose([value for _, value in means], first["val_loss"] + 0.5, rtol=1e-6)

    # a resume from epoch 1 on: epoch 0's row stays, epoch 1's goes (trained again), the new ones follow
    logger = KeptCSVLogger(str(run / "expert_0"), name="csv", version="", first_epoch=1)
    for epoch in (1, 2):
        logger.log_metrics({**first.iloc[-1].drop(["step"]).to_dict(), "epoch": epoch}, step=epoch)
    logger.save()
    merged = pd.read_csv(run / "expert_0" / "csv" / "metrics.csv")
    assert merged["epoch"].tolist() == [0, 1, 2] and merged["val_loss"].notna().all()
    assert merged["val_loss"].iloc[0] == first["val_loss"].iloc[0]


def test_an_expert_killed_before_its_first_log_line_leaves_the_mean_and_a_resume_working(tmp_path: Path) -> None:
    """An expert killed between its first checkpoint and its loggers' first write leaves an empty metrics.csv
    (seen when a run's expert was SIGKILLed): the mean over experts is that of the others, a resume starts
    from no earlier epochs, and neither stops the run's assembling."""
    from neuro_trigger.judge.mean_expert import log_mean_over_experts, read_expert_metrics

    run = tmp_path / "run"
    _fit(run / "expert_0", epochs=2)
    (run / "expert_3" / "csv").mkdir(parents=True)
    (run / "expert_3" / "csv" / "metrics.csv").write_bytes(b"")
    assert read_expert_metrics(run / "expert_3") is None
    assert read_expert_metrics(run / "expert_4") is None  # no folder at all
    first = pd.read_csv(run / "expert_0" / "csv" / "metrics.csv")
    means = _scalars(log_mean_over_experts(run, ["expert_0", "expert_3", "expert_4"]), "val_loss")
    np.testing.assert_allclose([value for _, value in means], first["val_loss"], rtol=1e-6)
