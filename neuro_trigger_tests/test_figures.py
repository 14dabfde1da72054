"""Figures as the trigger is judged: the overlaid figures of evaluate/compare, the new and the old network in one
figure titled with expert and split, and TensorBoard (hyperparameters with final metrics, epochs as steps)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.container import ErrorbarContainer
from PIL import Image

from neuro_trigger.config.resolution import resolve_config
from neuro_trigger.data.dataset import theta_to_deg, z_to_cm
from neuro_trigger.data.neuroresults.writer import write_table
from neuro_trigger.data.toy.generator import generate
from neuro_trigger.errors import UserError
from neuro_trigger.judge.figure_files import figure_file, figure_to_png
from neuro_trigger.judge.overlays import overlay_figures
from neuro_trigger.judge.plots import describe, figure_names, prediction_figures
from neuro_trigger.judge.trigger import (
    THETA_BIN_EDGES_DEG,
    Z_BIN_EDGES_CM,
    binned_resolution,
    efficiency_vs_z,
    trigger_metrics,
)
from neuro_trigger.training.callbacks import HParamsSummary, flatten_config

OVERLAY_NAMES = ["z_residual", "theta_residual", "z_resolution_vs_reco_z", "z_resolution_vs_reco_theta",
                 "z_bias_vs_reco_z", "efficiency_vs_reco_z", "roc"]


def _synthetic(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scaled (n, 2) target, two networks of different resolution, and a worse old network."""
    rng = np.random.default_rng(seed)
    target = np.clip(rng.normal(0.0, 0.3, (n, 2)), -1, 1)
    target[: n // 4, 0] = rng.normal(0.0, 0.003, n // 4)  # tracks from the interaction point
    return (target, target + rng.normal(0, 0.03, (n, 2)), target + rng.normal(0, 0.06, (n, 2)),
            target + rng.normal(0, 0.15, (n, 2)))


def _texts(fig) -> tuple[str, list[str]]:
    """(every title of the figure joined, every legend entry of every axes)."""
    titles = [ax.get_title() for ax in fig.axes] + [fig.get_suptitle()]
    legends = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    return " | ".join(titles), legends


def _errorbar_y(fig, label: str) -> np.ndarray:
    """The y values of the error bar series with legend label `label`."""
    for container in fig.axes[0].containers:
        if isinstance(container, ErrorbarContainer) and container.get_label() == label:
            return np.asarray(container.lines[0].get_ydata(), dtype=np.float64)
    raise AssertionError(f"no error bars labelled {label!r}")


# ---------------------------------------------------------------------------------------------- overlay_figures
def test_overlay_two_runs_and_old_names_titles_and_legends() -> None:
    target, a, b, old = _synthetic()
    b[:500] = np.nan  # run B lacks some rows: its curves use the rest
    title = "expert 2, test split"
    figs = overlay_figures(target, {"run A": a, "run B": b}, old, 2, cut_cm=15.0, title=title)
    assert list(figs) == OVERLAY_NAMES
    for name, fig in figs.items():
        titles, legends = _texts(fig)
        assert title in titles, name
        for who in ("run A", "run B", "old network"):  # one entry per network, the old one as reference
            assert any(entry.startswith(who) for entry in legends), (name, who)
    # the old network is drawn on the rows some run covers: all of them here
    residual_legend = _texts(figs["z_residual"])[1]
    assert any(e.startswith(f"old network ({len(target)} tracks)") for e in residual_legend)
    assert any(e.startswith(f"run B ({len(target) - 500} tracks)") for e in residual_legend)
    # one colour per run, the old network black and dashed
    lines = {line.get_label(): line for line in figs["z_residual"].axes[0].get_lines()}
    colours = {label.split(" (")[0]: line.get_color() for label, line in lines.items()}
    assert len(set(colours.values())) == 3 and colours["old network"] == "black"


def test_overlay_numbers_are_the_metrics_functions() -> None:
    """The drawn points are binned_resolution's, efficiency_vs_z's and trigger_metrics' numbers, with the
    uncertainties as error bars; NaN rows of a run are left out."""
    target, a, b, old = _synthetic(seed=1)
    b[::3] = np.nan
    figs = overlay_figures(target, {"a": a, "b": b}, old, 2, cut_cm=12.0, title="t")
    ok = np.isfinite(b).all(axis=1)
    reco_z, z_res = z_to_cm(target[ok, 0]), z_to_cm(target[ok, 0]) - z_to_cm(b[ok, 0])
    expected = binned_resolution(reco_z, z_res, Z_BIN_EDGES_CM)
    np.testing.assert_allclose(_errorbar_y(figs["z_resolution_vs_reco_z"], "b"), expected["std"])
    np.testing.assert_allclose(_errorbar_y(figs["z_bias_vs_reco_z"], "b"), expected["mean"])
    by_theta = binned_resolution(theta_to_deg(target[ok, 1]), z_res, THETA_BIN_EDGES_DEG)
    np.testing.assert_allclose(_errorbar_y(figs["z_resolution_vs_reco_theta"], "b"), by_theta["std"])
    efficiency = efficiency_vs_z(reco_z, z_to_cm(b[ok, 0]), Z_BIN_EDGES_CM, 12.0)
    np.testing.assert_allclose(_errorbar_y(figs["efficiency_vs_reco_z"], "b"), efficiency["efficiency"])
    # the error bars are the bins' uncertainties: each bar spans std +- std_err of its bin
    container = next(c for c in figs["z_resolution_vs_reco_z"].axes[0].containers if c.get_label() == "b")
    segments = [seg for seg in container.lines[2][0].get_segments() if len(seg)]  # an empty bin: no bar
    half_lengths = sorted(float(np.ptp(seg[:, 1])) / 2 for seg in segments)
    np.testing.assert_allclose(half_lengths, sorted(v for v in expected["std_err"] if math.isfinite(v)))
    at_cut = trigger_metrics(reco_z, z_to_cm(b[ok, 0]), 12.0)
    roc_legend = _texts(figs["roc"])[1]
    assert f"b: efficiency {at_cut['efficiency']:.3f}, rejection {at_cut['rejection']:.3f}" in roc_legend
    assert "12 cm" in figs["efficiency_vs_reco_z"].axes[0].get_title()


def test_overlay_z_only_without_old_and_on_empty_input() -> None:
    target, a, _, _ = _synthetic(500)
    figs = overlay_figures(target[:, :1], {"new": a[:, :1]}, None, 1, title="expert 0, val split")
    # no theta column: no theta residual, no binning by reco theta; no old network anywhere
    assert list(figs) == ["z_residual", "z_resolution_vs_reco_z", "z_bias_vs_reco_z", "efficiency_vs_reco_z", "roc"]
    assert not any("old" in entry for fig in figs.values() for entry in _texts(fig)[1])
    # the full (N, 2) target of an out_size 1 network still bins z by reco theta
    assert "z_resolution_vs_reco_theta" in overlay_figures(target, {"new": a[:, :1]}, None, 1)
    empty = np.zeros((0, 2))
    nan = np.full((3, 2), np.nan)
    for t, p in ((empty, empty), (nan[:, :], nan)):  # nothing to draw: every figure still renders
        for fig in overlay_figures(t, {"new": p}, p, 2, title="x").values():
            assert figure_to_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_overlay_bad_arguments() -> None:
    target, a, _, old = _synthetic(50)
    with pytest.raises(UserError, match="above 0 cm"):
        overlay_figures(target, {"new": a}, old, 2, cut_cm=0.0)
    with pytest.raises(ValueError, match="'short'"):
        overlay_figures(target, {"short": a[:10]}, old, 2)
    with pytest.raises(ValueError, match="out_size"):
        overlay_figures(target, {"new": a}, old, 3)


def test_figure_to_png_decodes() -> None:
    target, a, _, old = _synthetic(400)
    png = figure_to_png(overlay_figures(target, {"new": a}, old, 2)["roc"])
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG" and image.size == (640, 480)
    assert np.asarray(image.convert("L")).std() > 5  # drawn, not blank


# ---------------------------------------------------------------------------------------------- prediction_figures
@pytest.mark.parametrize("out_size", [1, 2])
def test_prediction_figures_merge_new_and_old_and_name_expert_and_split(out_size: int) -> None:
    target, pred, _, old = _synthetic(1500)
    figs = prediction_figures(target[:, :out_size], pred[:, :out_size], old, out_size, expert=3, split="val")
    assert list(figs) == figure_names(out_size)  # --resume finds missing figures by these names
    assert not any(name.endswith("-old") for name in figs)
    for name, fig in figs.items():
        titles, legends = _texts(fig)
        assert "expert 3" in titles and "val split" in titles, name
        if name.endswith("-gt"):  # the reco distribution alone
            continue
        shown = legends + [ax.get_title() for ax in fig.axes]
        assert any(t.startswith("new network") for t in shown), name
        assert any(t.startswith("old network") for t in shown), name
    # the 2D histograms: two panels, new left, old right
    panels = [ax for ax in figs["z_vs_reco"].axes if ax.get_images()]
    assert [ax.get_title().split(" (")[0] for ax in panels] == ["new network", "old network"]


def test_merged_residual_figure_holds_both_histograms() -> None:
    target, pred, _, old = _synthetic(1000)
    old[:100] = np.nan  # the old network lacks some rows
    figs = prediction_figures(target, pred, old, 2, expert=1, split="test")
    by_who = {line.get_label().split(",")[0]: line for line in figs["z_residual"].axes[0].get_lines()}
    assert set(by_who) == {"new network", "old network"}
    # each step line holds its network's residual histogram: 2 points per bin, the counts sum to its rows
    assert np.asarray(by_who["new network"].get_ydata())[1:-1:2].sum() == 1000
    assert np.asarray(by_who["old network"].get_ydata())[1:-1:2].sum() == 900
    assert "count 900" in by_who["old network"].get_label()


def test_titles_without_expert_or_split() -> None:
    assert describe(2, "val") == "expert 2, val split"
    assert describe(None, "test") == "test split"
    assert describe(-1, "") == "expert -1 (solo: all data)"
    target, pred, _, old = _synthetic(200)
    fig = prediction_figures(target, pred, old, 1)["z_residual"]
    assert fig.axes[0].get_title() == "z residual"


# ---------------------------------------------------------------------------------------------- TensorBoard
def test_flatten_config() -> None:
    flat = flatten_config({"a": {"b": 1, "c": [1, 2], "d": {"e": "x"}}, "f": None, "g": {}, "h": True, "i": 0.5})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "a.d.e": "x", "f": "None", "g": "{}", "h": True, "i": 0.5}


def _events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"histograms": 0})  # 0: every one (the default keeps 1)
    events.Reload()
    return events


def _hparams(events) -> tuple[dict, set[str]]:
    """The hyperparameters of a TensorBoard run and the metric tags its HParams experiment names."""
    from google.protobuf.json_format import MessageToDict
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    params = {k: MessageToDict(v) for k, v in start.session_start_info.hparams.items()}
    return params, {m.name.tag for m in experiment.experiment.metric_infos}


def _fit(expert_dir: Path, epochs: int, plot_every: int, resume: Path | None = None) -> dict:
    """A real fit of expert_0 of baseline_v2 on 600 generated rows with the project's Trainer and HParamsSummary."""
    import lightning as L

    from neuro_trigger.training.batches import EvalBatches, TrainBatches
    from neuro_trigger.training.expert import build_trainer, fit_expert
    from neuro_trigger.training.module import ExpertModule

    config = resolve_config({"extends": "baseline_v2"}, [f"epochs={epochs}", "batch_size=64",
                                                        f"plot_every={plot_every}"])["experts"]["expert_0"]
    g = torch.Generator().manual_seed(3)
    x = torch.rand(600, 27, generator=g) * 2 - 1
    y = torch.tanh(x[:, :2] * 2)
    L.seed_everything(config["seed"], verbose=False)
    trainer, _ = build_trainer(config, expert_dir)
    if not any(isinstance(c, HParamsSummary) for c in trainer.callbacks):  # until build_trainer adds it
        trainer.callbacks.append(HParamsSummary())
    fit_expert(trainer, ExpertModule(config), TrainBatches(x, y, np.arange(500), 64, seed=1),
               EvalBatches(x, y, y.flip(0), np.arange(500, 600)), ckpt_path=str(resume) if resume else None)
    return config


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, dict]:
    expert_dir = tmp_path_factory.mktemp("hparams") / "expert_0"
    return expert_dir, _fit(expert_dir, epochs=3, plot_every=3)


def test_hparams_with_final_metrics_are_readable_from_tensorboard(fitted) -> None:
    expert_dir, config = fitted
    events = _events(expert_dir / "tb")
    params, metric_tags = _hparams(events)
    flat = flatten_config(config)
    assert set(params) == set(flat)
    assert params["learning_rate"] == config["learning_rate"] and params["expert"] == 0
    assert params["loss"] == config["loss"] and params["model"] == config["model"]
    assert params["data.train"] == json.dumps(config["data"]["train"])
    assert metric_tags == {"hparams/best_val_loss", "hparams/best_epoch", "hparams/epochs", "hparams/val_z_diff_std",
                           "hparams/val_z_diff_std_vs_old", "hparams/val_loss_vs_old_loss"}
    table = pd.read_csv(expert_dir / "csv" / "metrics.csv")
    best = int(table["val_loss"].idxmin())
    final = {tag: events.Scalars(tag) for tag in metric_tags}
    assert all([e.step for e in scalars] == [2] for scalars in final.values())  # the last epoch's step
    assert final["hparams/epochs"][0].value == 3
    assert final["hparams/best_epoch"][0].value == table["epoch"][best]
    assert final["hparams/best_val_loss"][0].value == pytest.approx(table["val_loss"].min(), rel=1e-6)
    assert final["hparams/val_z_diff_std"][0].value == pytest.approx(table["val_z_diff_std"][best], rel=1e-6)
    # epoch-level scalars keep the epoch as their step
    for tag in ("loss", "val_loss", "val_z_diff_std"):
        assert [e.step for e in events.Scalars(tag)] == [0, 1, 2], tag


def test_a_plot_event_sends_residual_histograms_and_no_figure_beyond_its_time_share(fitted) -> None:
    """The one plot event of a 3-epoch fit (plot_every=3): histograms of the new network's residuals, the old
    network's once; the key figures cost more than 5% of so short a training, so none is drawn."""
    expert_dir, _ = fitted
    tags = _events(expert_dir / "tb").Tags()
    assert set(tags["histograms"]) == {"val/z_residual_cm", "val/theta_residual_deg", "val/z_residual_cm_old",
                                       "val/theta_residual_deg_old"}
    assert tags["images"] == []


def _plot_event_inputs(tmp_path: Path, epoch: int):
    from types import SimpleNamespace

    from lightning.pytorch.loggers import TensorBoardLogger

    target, pred, _, old = _synthetic(300)
    module = SimpleNamespace(config={"expert": 4}, last_validation=tuple(
        torch.from_numpy(a.astype(np.float32)) for a in (pred, target, old)))
    logger = TensorBoardLogger(str(tmp_path), name="tb", version="")
    return SimpleNamespace(current_epoch=epoch, loggers=[logger]), module, logger


def test_key_figures_are_drawn_within_their_share_of_the_training_time(tmp_path: Path, monkeypatch) -> None:
    from neuro_trigger.training import callbacks

    titles: list[str] = []

    def record(fig) -> np.ndarray:
        titles.append(_texts(fig)[0])
        return np.zeros((4, 4, 3), np.uint8)

    monkeypatch.setattr(callbacks, "figure_to_array", record)
    now = [0.0]
    plots = callbacks.TensorBoardPlots(2, 2, share=0.05, clock=lambda: now[0])
    trainer, module, logger = _plot_event_inputs(tmp_path, 1)
    plots.on_train_start(trainer, module)
    now[0] = 1.0  # 1 s of training: 50 ms for figures, less than the first estimate (2 x 80 ms)
    plots.on_train_epoch_end(trainer, module)
    assert titles == []
    now[0] = 10.0  # 10 s: 500 ms
    trainer.current_epoch = 3
    plots.on_train_epoch_end(trainer, module)
    assert len(titles) == len(callbacks.TensorBoardPlots.KEY_FIGURES)
    assert all("expert 4, val split: " in t for t in titles), titles
    trainer.current_epoch = 4  # not a plot event (every 2 epochs)
    plots.on_train_epoch_end(trainer, module)
    assert len(titles) == len(callbacks.TensorBoardPlots.KEY_FIGURES)
    logger.experiment.flush()
    histograms = _events(tmp_path / "tb").Histograms("val/z_residual_cm")
    assert [h.step for h in histograms] == [1, 3]
    assert histograms[0].histogram_value.num == 300
    assert [h.step for h in _events(tmp_path / "tb").Histograms("val/z_residual_cm_old")] == [1]


def test_residual_histograms_count_every_row_on_the_figures_ranges() -> None:
    from neuro_trigger.judge.plots import residual_histograms

    target, pred, _, _ = _synthetic(500)
    pred[0, 0] = 5.0  # far outside the plotted range: counted in the outer bin
    pred[1, 1] = np.nan  # left out of theta only
    hists = residual_histograms(target, pred, 2)
    z, theta = hists["z_residual_cm"], hists["theta_residual_deg"]
    assert z["num"] == sum(z["bucket_counts"]) == 500 and theta["num"] == sum(theta["bucket_counts"]) == 499
    assert z["bucket_limits"][-1] == 100.0 and len(z["bucket_limits"]) == 50
    assert z["bucket_counts"][0] >= 1 and z["min"] < -100
    assert list(residual_histograms(target, pred, 1)) == ["z_residual_cm"]


def test_prediction_figures_can_draw_only_some() -> None:
    target, pred, _, old = _synthetic(300)
    figs = prediction_figures(target, pred, old, 2, only=("theta_pred", "z_residual"))
    assert list(figs) == ["z_residual", "theta_pred"]  # in figure_names' order


def test_hparams_of_a_resumed_training_cover_all_its_epochs(tmp_path: Path) -> None:
    expert_dir = tmp_path / "expert_0"
    _fit(expert_dir, epochs=2, plot_every=1000)
    callback = HParamsSummary()
    callback.load_state_dict(torch.load(expert_dir / "ckpts" / "last.ckpt", weights_only=True)["callbacks"]
                             ["HParamsSummary"])
    assert callback.epochs == 2 and callback.best["best_epoch"] in (0, 1)  # last.ckpt holds the record
    _fit(expert_dir, epochs=3, plot_every=1000, resume=expert_dir / "ckpts" / "last.ckpt")
    events = _events(expert_dir / "tb")
    assert events.Scalars("hparams/epochs")[-1].value == 3
    losses = [e.value for e in events.Scalars("val_loss")]
    assert [e.step for e in events.Scalars("val_loss")] == [0, 1, 2]
    assert events.Scalars("hparams/best_val_loss")[-1].value == pytest.approx(min(losses), rel=1e-6)


def test_hparams_record_is_the_best_epoch_and_survives_a_checkpoint() -> None:
    """The best epoch's numbers, not the last one's; a callback restored from the state of a checkpoint (a
    resumed training) keeps the best of the epochs before it."""
    from types import SimpleNamespace

    def validate(callback: HParamsSummary, epoch: int, loss: float, z_std: float) -> None:
        metrics = {"val_loss": torch.tensor(loss), "val_z_diff_std": torch.tensor(z_std), "loss": torch.tensor(9.0)}
        trainer = SimpleNamespace(sanity_checking=False, current_epoch=epoch, callback_metrics=metrics)
        callback.on_train_epoch_end(trainer, None)

    first = HParamsSummary()
    validate(first, 0, 1.0, 30.0)
    validate(first, 1, 0.5, 20.0)
    resumed = HParamsSummary()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    validate(resumed, 2, 0.8, 10.0)
    validate(resumed, 3, float("nan"), 5.0)  # a NaN loss is never the best
    metrics = resumed.final_metrics()
    assert metrics["hparams/best_val_loss"] == 0.5 and metrics["hparams/best_epoch"] == 1
    assert metrics["hparams/val_z_diff_std"] == 20.0 and metrics["hparams/epochs"] == 4
    assert math.isnan(metrics["hparams/val_z_diff_std_vs_old"])  # not logged: NaN, still a number
    assert math.isnan(HParamsSummary().final_metrics()["hparams/best_val_loss"])


# ---------------------------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from neuro_trigger.runner.api import train

    folder = tmp_path_factory.mktemp("figures_run")
    data = {}
    for i, (split, n) in enumerate({"train": 3000, "val": 800, "test": 800}.items()):
        path = folder / f"{split}.gz"
        write_table(generate(n, seed=500 + i), path)
        data[split] = [str(path)]
    result = train({"extends": "baseline_v2", "data": data, "experts": [2, 4], "epochs": 2, "plot_every": 1000},
                   production=True, log_root=folder / "log", show_progress=False)
    assert result.ok
    return result.folder


def test_every_expert_logs_epochs_as_steps_and_its_hparams(run: Path) -> None:
    from neuro_trigger.training.expert import build_trainer

    config = json.loads((run / "config.json").read_text())["experts"]
    probe, _ = build_trainer(config["expert_2"], run / "probe")
    integrated = any(isinstance(c, HParamsSummary) for c in probe.callbacks)
    for key in ("expert_2", "expert_4"):
        events = _events(run / key / "tb")
        for tag in ("loss", "val_loss", "val_z_diff_std_vs_old"):
            assert [e.step for e in events.Scalars(tag)] == [0, 1], (key, tag)
        if integrated:  # once build_trainer adds HParamsSummary, every production expert logs its hparams
            params, _ = _hparams(events)
            assert params["expert"] == config[key]["expert"]
    means = _events(run / "mean_expert")
    assert [e.step for e in means.Scalars("val_loss")] == [0, 1]


def test_the_best_networks_figures_reach_tensorboard_from_the_plot_jobs(run: Path) -> None:
    for key in ("expert_2", "expert_4"):
        events = _events(run / key / "tb")
        assert set(events.Tags()["images"]) == {f"{split}/{name}" for split in ("val", "test")
                                                for name in figure_names(2)}, key
        best = json.loads((run / key / "status.json").read_text())["best_checkpoint"]
        image = events.Images("val/z_residual")[0]
        assert image.step == int(best.split("epoch=")[1].split(".")[0])
        png = (run / key / "plots" / "val" / figure_file("z_residual")).read_bytes()
        assert image.encoded_image_string == png and (image.width, image.height) == Image.open(io.BytesIO(png)).size


def test_run_pngs_are_the_merged_figures_titled_with_expert_and_split(run: Path, monkeypatch) -> None:
    from neuro_trigger.data.selection import load_data
    from neuro_trigger.judge import expert_results

    for key in ("expert_2", "expert_4"):
        for split in ("val", "test"):
            pngs = {p.name for p in (run / key / "plots" / split).glob("*.png")}
            assert pngs == {figure_file(n) for n in figure_names(2)}, (key, split)
    drawn: dict[str, object] = {}
    monkeypatch.setattr(expert_results, "save_figures", lambda figs, folder: drawn.update(figs))
    resolved = json.loads((run / "config.json").read_text())
    store = load_data(resolved["global"], run.parent.parent)["test"]
    expert_results.write_expert_plots(run / "expert_4", resolved["experts"]["expert_4"], store, "test")
    assert list(drawn) == figure_names(2)
    for name, fig in drawn.items():
        assert "expert 4, test split" in _texts(fig)[0], name
