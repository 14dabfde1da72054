"""What a run says on the console: the default data being generated (and how long it took), and a
default data set of an older generator version being made anew rather than trained on."""
from __future__ import annotations

import logging

import pytest

from neuro_trigger.data import selection as experts
from neuro_trigger.data.toy import default_set
from neuro_trigger.data.toy.generator import TOY_VERSION


@pytest.fixture
def toy_home(tmp_path, monkeypatch):
    """The default data set's folder moved into tmp_path (the repository's own copy stays untouched)."""
    monkeypatch.setattr(default_set, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(default_set, "DEFAULT_DIR", tmp_path / "data_cache" / "toy")
    return tmp_path


def write_default_files(home, version: str) -> None:
    folder = home / "data_cache" / "toy"
    folder.mkdir(parents=True, exist_ok=True)
    for split in default_set.SPLITS:
        (home / default_set.DEFAULT_FILES[split]).write_bytes(b"")
    (folder / "VERSION").write_text(version + "\n")


def test_default_data_of_another_version_are_not_current(toy_home):
    assert not default_set.default_dataset_current()  # nothing there yet
    write_default_files(toy_home, "0")
    assert not default_set.default_dataset_current()  # written by an older generator: made anew
    write_default_files(toy_home, TOY_VERSION)
    assert default_set.default_dataset_current()
    (toy_home / default_set.DEFAULT_FILES["val"]).unlink()
    assert not default_set.default_dataset_current()


def test_first_use_says_that_the_default_data_are_generated(monkeypatch, caplog):
    made = []
    monkeypatch.setattr(default_set, "default_dataset_current", lambda: False)
    monkeypatch.setattr(default_set, "ensure_default_dataset", lambda: made.append(True))
    config = {"data": {split: [default_set.DEFAULT_FILES[split]] for split in default_set.SPLITS}}
    with caplog.at_level(logging.INFO, logger="neuro_trigger"):
        experts.data_paths(config)
    assert made == [True]
    assert "generating the embedded default data set" in caplog.text
    assert "default data set generated in" in caplog.text


def test_other_data_never_trigger_the_generator(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(default_set, "default_dataset_current", lambda: False)
    monkeypatch.setattr(default_set, "ensure_default_dataset", lambda: pytest.fail("generated for other data"))
    config = {"data": {split: [str(tmp_path / f"{split}.gz")] for split in default_set.SPLITS}}
    with caplog.at_level(logging.INFO, logger="neuro_trigger"):
        experts.data_paths(config)
    assert "generating" not in caplog.text
