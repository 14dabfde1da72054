"""report.html: the self-contained page (sections, escaping, the verdict's marks), the report of a real
tiny run, a broken input that must not fail a run, and the page in a real headless Chromium: it loads with
no request leaving the page and none failing, every image decodes, a screenshot is not blank, and every
table fits its section at 1280 px (a comparison's too: with the verdict table's headers), scrolling inside
its section where the window is narrower."""
from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import re
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from neuro_trigger.data.neuroresults.writer import write_table
from neuro_trigger.data.toy.generator import generate
from neuro_trigger.judge import report, run_report
from neuro_trigger.judge.report import (
    BETTER_MARK,
    Code,
    Figures,
    KeyValues,
    Table,
    Text,
    verdict_table,
    write_report,
)
from neuro_trigger.judge.run_report import write_run_report
from neuro_trigger.judge.trigger import judge

REPO = Path(__file__).resolve().parents[1]
INSTALL_BROWSER = REPO / "scripts" / "install_browser.sh"
# headless as root in a container (no sandbox, a small /dev/shm), and nothing a fresh profile would fetch
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--mute-audio")
HOSTILE = '<script>alert("x")</script> & "quoted" \'single\''


# ---------------------------------------------------------------------------------------------- helpers
class _Page(HTMLParser):
    """Every tag with its attributes, and the text outside tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    return p


def decoded_images(page: str) -> list[Image.Image]:
    """Every <img> of the page, decoded from its data: URI (fails if one is anything else)."""
    images = []
    for tag, attrs in parse(page).tags:
        if tag == "img":
            src = attrs.get("src") or ""
            prefix = "data:image/png;base64,"
            assert src.startswith(prefix), src[:80]
            data = base64.b64decode(src[len(prefix):], validate=True)
            image = Image.open(io.BytesIO(data))
            image.load()  # decodes the whole PNG, not only its header
            images.append(image)
    return images


def assert_self_contained(page: str) -> None:
    """No script, no external stylesheet or font, and no src/href/url() that would make a request."""
    tags = parse(page).tags
    assert not [t for t, _ in tags if t in ("script", "link", "iframe", "object", "embed", "base")]
    for tag, attrs in tags:
        for name in ("src", "href", "srcset", "action", "poster", "data"):
            value = attrs.get(name)
            if value is not None and name in attrs:
                assert value.startswith(("#", "data:image/png;base64,")), f"<{tag} {name}={value[:80]}>"
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"url\(|@import", page, re.I)
    assert "Content-Security-Policy" in page


def not_single_colour(image: Image.Image) -> bool:
    return any(lo != hi for lo, hi in image.convert("RGB").getextrema())


def a_figure() -> Figure:
    fig = Figure(figsize=(3, 2), dpi=50)
    fig.add_subplot().plot([0, 1, 2], [1, 0, 1])
    return fig


def a_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- the page
def test_write_report_renders_every_section_escaped_and_self_contained(tmp_path: Path) -> None:
    sections = [
        Table("table " + HOSTILE, ["a", "b <i>"], [[1.234567, math.nan], [None, HOSTILE]], better={(0, 0)},
              note="note " + HOSTILE),
        Figures("figures", {"fig " + HOSTILE: a_figure(), "png": a_png()}),
        KeyValues("kv", {"path " + HOSTILE: "/tmp/x y/<b>", "list": [1, "<a>"]}),
        Text("text", f"first {HOSTILE}\n\nsecond"),
        Code("code", json.dumps({"description": HOSTILE}, indent=2)),
    ]
    path = write_report(tmp_path / "r.html", "title " + HOSTILE, sections)
    page = path.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "<script" not in page and "&lt;script&gt;" in page  # user text is text, never markup
    assert "<b>" not in page and "<i>" not in page
    p = parse(page)
    text = "".join(p.text)
    assert HOSTILE in text  # ... and reads back exactly as written
    assert "/tmp/x y/<b>" in text and '"description": "<script>' in text
    assert text.count(BETTER_MARK) == 1 and page.count('class="better"') == 1
    assert "1.235" in text and report.MISSING in text
    assert [t for t, _ in p.tags].count("section") == 5
    images = decoded_images(page)
    assert len(images) == 2 and images[1].size == (4, 3)
    assert [a["alt"] for t, a in p.tags if t == "img"] == ["fig " + HOSTILE, "png"]


def test_png_bytes_refuses_what_is_no_png() -> None:
    with pytest.raises(ValueError, match="not a PNG"):
        report.png_bytes(b"GIF89a....")


def _judged(scale_new: float, scale_old: float, n: int = 4000, seed: int = 0, k: int = 2) -> dict:
    """judge() of a network with z residual spread `scale_new` cm against one with `scale_old` cm."""
    rng = np.random.default_rng(seed)
    reco = np.concatenate([rng.uniform(-0.9, 0.9, n // 2), rng.uniform(-0.005, 0.005, n // 2)])
    target = np.stack([reco, rng.uniform(-0.5, 0.5, n)], axis=1)
    pred = target + np.stack([rng.normal(0, scale_new / 100, n), rng.normal(0, 0.01, n)], axis=1)
    old = target + np.stack([rng.normal(0, scale_old / 100, n), rng.normal(0, 0.02, n)], axis=1)
    return judge(target[:, :k], pred[:, :k], old[:, :k], "MSELoss", np.full(n, 2), np.ones(n))


def test_verdict_table_marks_the_better_network_in_each_pair() -> None:
    better_new, better_old = _judged(2.0, 6.0), _judged(6.0, 2.0, seed=1)
    table = verdict_table({"expert_0": better_new, "expert_3": better_old}, overall=better_new)
    col = {name: i for i, name in enumerate(table.columns)}
    assert [r[0] for r in table.rows] == ["expert 0", "expert 3", "all experts"]
    assert table.rows[0][col["rows"]] == "4,000"
    # the numbers are judge's, formatted
    assert table.rows[0][col["z \u03c3 [cm] new"]] == f"{better_new['new']['z']['std']:.2f}"
    assert table.rows[1][col["z \u03c3 [cm] old"]] == f"{better_old['old']['z']['std']:.2f}"
    eff = better_new["new"]["trigger"]
    assert table.rows[0][col["efficiency [%] new"]] == f"{100 * eff['efficiency']:.1f} \u00b1 " \
                                                       f"{100 * eff['efficiency_err']:.1f}"
    assert table.rows[0][col["loss new / old"]] == f"{better_new['vs_old']['loss']:.3f}"
    # a narrow new network wins the resolution columns in row 0; the old one in row 1
    for name in ("z \u03c3 [cm]", "z 68% half-width [cm]"):
        assert (0, col[f"{name} new"]) in table.better and (0, col[f"{name} old"]) not in table.better
        assert (1, col[f"{name} old"]) in table.better and (1, col[f"{name} new"]) not in table.better
    # background rejection at 15 cm: a 2 cm network removes more far tracks than a 6 cm one
    assert (0, col["background rejection [%] new"]) in table.better
    assert "\u03b8 \u03c3 [deg] new" in table.columns
    # exactly one of each pair is marked (no ties in these data), in every row
    pairs = [c for c in table.columns if c.endswith(" new")]
    for r in range(3):
        for name in pairs:
            marked = {(r, col[name]), (r, col[name[:-4] + " old"])} & table.better
            assert len(marked) <= 1
    assert "|z pred| < 15 cm" in table.note


def test_verdict_table_bias_nearer_zero_wins_and_ties_and_gaps_mark_nothing() -> None:
    new = {"z": {"std": 3.0, "half_width_68": 2.0, "mean": -0.5}, "trigger": {"efficiency": 0.9, "rejection": None}}
    old = {"z": {"std": 3.0, "half_width_68": 2.5, "mean": 1.0}, "trigger": {"efficiency": 0.9, "rejection": 0.5}}
    table = verdict_table({"expert_0": {"rows": 10, "rows_without_old": 3, "cut_cm": 12.0, "new": new, "old": old,
                                        "vs_old": {"loss": None}}})
    col = {name: i for i, name in enumerate(table.columns)}
    assert table.better == {(0, col["z bias (mean) [cm] new"]), (0, col["z 68% half-width [cm] new"])}
    assert table.rows[0][col["background rejection [%] new"]] == report.MISSING
    assert table.rows[0][col["loss new / old"]] == report.MISSING
    assert "\u03b8 \u03c3 [deg] new" not in table.columns  # a z-only network
    assert "< 12 cm" in table.note and "3 rows without an old output" in table.note


def test_pairs_new_old_and_float_hardware_are_header_groups() -> None:
    """The verdict's pairs (new, old) and the hardware table's (float, hardware): each one heading over two columns,
    a rule on the left of each pair; a column that belongs to no pair keeps its own heading."""
    table = Table("T", ["expert", "z float", "z hardware", "e new", "e old", "z old", "flips"],
                  [["expert 0", "1.00", "1.01", "90", "80", "2.00", "3"]])
    page = report.render_report("t", [table])
    assert '<th colspan="2" class="group">z</th>' in page and '<th colspan="2" class="group">e</th>' in page
    assert re.findall(r'<th class="(first|sub)">(\w+)</th>', page) == [
        ("first", "float"), ("sub", "hardware"), ("first", "new"), ("sub", "old")]
    assert '<th rowspan="2">z old</th>' in page and '<th rowspan="2">flips</th>' in page
    assert '<td class="first">1.00</td><td>1.01</td><td class="first">90</td><td>80</td><td>2.00</td>' in page


# ---------------------------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real debug run (expert 0, one epoch); its report written by the run, then again here."""
    from neuro_trigger.runner.api import train

    root = tmp_path_factory.mktemp("report_run")
    paths = []
    for i, split in enumerate(("train", "val", "test")):
        p = root / f"{split} <data>.txt"  # a name that needs escaping
        write_table(generate(3000, seed=10 + i), p)
        paths.append(str(p))
    result = train({"extends": "baseline_v2", "data": {"train": [paths[0]], "val": [paths[1]], "test": [paths[2]]},
                    "experts": [0], "epochs": 1, "plot_every": 1000, "description": HOSTILE},
                   production=False, log_root=root / "log", show_progress=False, description=HOSTILE)
    assert (result.folder / "report.html").is_file()  # every run writes its report
    assert write_run_report(result.folder) == result.folder / "report.html"
    return result.folder


def test_run_report_shows_verdict_figures_config_data_and_tensorboard(run_folder: Path) -> None:
    page = (run_folder / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "<script" not in page
    p = parse(page)
    text = "".join(p.text)
    headings = [h for h in re.findall(r"<h2>(.*?)</h2>", page)]
    assert headings[0] == "Verdict: new vs old network, test split"  # the verdict first
    assert "Verdict: new vs old network, val split" in headings
    summary = json.loads((run_folder / "summary.json").read_text())
    judged = summary["metrics"]["test"]["experts"]["expert_0"]["trigger"]
    assert f"{judged['new']['z']['std']:.2f}" in text and f"{judged['old']['z']['std']:.2f}" in text
    assert "expert 0" in text and page.count('class="better"') >= 5
    assert '<th colspan="2" class="group">z \u03c3 [cm]</th>' in page  # new and old under one heading
    assert "Figures: expert 0, test split" in text and "Figures: expert 0, val split" not in text
    images = decoded_images(page)
    assert len(images) >= 4 and all(not_single_colour(im) for im in images)
    # config, data with hashes, git id, versions, TensorBoard: user text escaped
    assert HOSTILE in text and "<script>alert" not in page
    for sources in summary["data"].values():
        for s in sources:
            assert s["sha256"] in text and s["path"] in text
    assert str(summary["git_id"] or "unavailable") in text
    assert summary["versions"]["torch"] in text
    assert f"tensorboard --logdir {run_folder}" in text


def _embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(attrs["src"].split(",", 1)[1]) for tag, attrs in parse(page).tags if tag == "img"]


def test_run_report_embeds_the_figures_the_plot_job_saved_while_they_are_current(run_folder: Path,
                                                                                  tmp_path: Path) -> None:
    """The expert's plot job saves report.html's figures (so the end of a run only embeds them); the report uses
    them as they are, and draws them again once the predictions they were drawn from have changed."""
    saved = run_folder / "expert_0" / "plots" / "test" / run_report.REPORT_FIGURE_DIR
    index = json.loads((saved / "index.json").read_text())
    files = [(saved / name).read_bytes() for _, name in index["figures"]]
    assert len(files) >= 4 and index["title"].startswith("Figures: expert 0, test split")
    page = (run_folder / "report.html").read_text(encoding="utf-8")
    assert _embedded_pngs(page) == files
    assert [c for c, _ in index["figures"]] == re.findall(r"<figcaption>(.*?)</figcaption>", page)

    copy = tmp_path / "run"
    shutil.copytree(run_folder, copy, ignore=shutil.ignore_patterns("*.csv", "mean_expert", "tb", "ckpts"))
    marker = b"\x89PNG\r\n\x1a\n" + b"not drawn from these predictions"
    for _, name in index["figures"]:
        (copy / saved.relative_to(run_folder) / name).write_bytes(marker)  # stands in for figures of old predictions
    assert write_run_report(copy) == copy / "report.html"
    assert _embedded_pngs((copy / "report.html").read_text(encoding="utf-8")) == [marker] * len(files)
    prediction = copy / "expert_0" / "prediction_test.npz"
    os.utime(prediction, ns=(prediction.stat().st_atime_ns, prediction.stat().st_mtime_ns + 1))  # trained again
    assert write_run_report(copy) == copy / "report.html"
    redrawn = _embedded_pngs((copy / "report.html").read_text(encoding="utf-8"))
    assert len(redrawn) == len(files) and marker not in redrawn
    assert all(not_single_colour(Image.open(io.BytesIO(png))) for png in redrawn)


def test_run_report_of_changed_data_keeps_the_rest(run_folder: Path, tmp_path: Path) -> None:
    """Data files that changed since the run: no figures of wrong rows, a note, and the verdict still there."""
    copy = tmp_path / "run"
    shutil.copytree(run_folder, copy, ignore=shutil.ignore_patterns("expert_*", "*.csv", "mean_expert"))
    for key in ("expert_0",):
        shutil.copytree(run_folder / key, copy / key, ignore=shutil.ignore_patterns("ckpts", "tb", "plots"))
    summary = json.loads((copy / "summary.json").read_text())
    summary["data"]["test"][0]["sha256"] = "0" * 64
    (copy / "summary.json").write_text(json.dumps(summary))
    assert write_run_report(copy) == copy / "report.html"
    page = (copy / "report.html").read_text(encoding="utf-8")
    assert "test data files changed since the run" in page
    assert "Figures: expert 0, test split" not in page
    assert "Verdict: new vs old network, test split" in page


def test_run_report_of_a_partly_finished_run(run_folder: Path, tmp_path: Path) -> None:
    """An expert that did not finish: the report says so and draws nothing of it."""
    copy = tmp_path / "run"
    shutil.copytree(run_folder, copy, ignore=shutil.ignore_patterns("expert_*", "*.csv", "mean_expert"))
    (copy / "expert_0").mkdir()
    (copy / "expert_0" / "status.json").write_text(json.dumps({"status": "interrupted", "epochs_done": 0}))
    summary = json.loads((copy / "summary.json").read_text())
    summary.update(status="interrupted", metrics={}, experts={"expert_0": {"status": "interrupted"}})
    (copy / "summary.json").write_text(json.dumps(summary))
    assert write_run_report(copy) == copy / "report.html"
    text = "".join(parse((copy / "report.html").read_text(encoding="utf-8")).text)
    assert "0 of 1" in text and "interrupted" in text and "No trigger metrics" in text
    assert "Figures:" not in text


def test_broken_run_folder_gives_a_warning_and_no_exception(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "config.json").write_text("{ not json")
    with caplog.at_level(logging.WARNING, logger="neuro_trigger.judge.run_report"):
        assert write_run_report(tmp_path) is None
        assert write_run_report(tmp_path / "missing") is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("report.html not written" in r.getMessage() for r in warnings)
    assert not (tmp_path / "report.html").exists()


# ---------------------------------------------------------------------------------------------- a real browser
@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a headless Chromium, installed by scripts/install_browser.sh where missing (apt-get, as
    root); the browser tests skip, saying why, only where none can be installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    try:
        done = subprocess.run(["bash", str(INSTALL_BROWSER)], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip("no browser: scripts/install_browser.sh did not finish within 15 minutes")
    path = done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else ""
    if not path or not os.access(path, os.X_OK):
        pytest.skip(f"no browser could be installed: {done.stderr.strip() or 'install_browser.sh failed'}")
    return path


class DevTools:
    """Chromium driven over its DevTools protocol on a pipe (--remote-debugging-pipe: commands in on fd 3,
    answers and events out on fd 4, each message JSON ended by a NUL byte)."""

    def __init__(self, browser: str, profile: Path) -> None:
        to_browser, self._in = os.pipe()
        self._out, from_browser = os.pipe()

        def arrange_fds() -> None:  # in the child: the pipe ends at fds 3 and 4
            a, b = os.dup(to_browser), os.dup(from_browser)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.process = subprocess.Popen(
            [browser, *BROWSER_FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=arrange_fds)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out], [], [], left)[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._out, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._in, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._in)
        os.close(self._out)


# per table: its section's title, the right edges of the table, of the box it scrolls in and of its section's
# content (inside border and padding), how that box overflows and the height of its scrollbar (0: none, or one
# that shows only while scrolling), and the table's headers; and the page's width beside the window's
LAYOUT = """JSON.stringify({page: [document.documentElement.scrollWidth, window.innerWidth],
  tables: Array.from(document.querySelectorAll('table'), table => {
    const section = table.closest('section'), style = getComputedStyle(section), box = table.parentElement;
    return {section: section.querySelector('h2').textContent, table: table.getBoundingClientRect().right,
            box: box.getBoundingClientRect().right, overflow: getComputedStyle(box).overflowX,
            scrollbar: box.offsetHeight - box.clientHeight,
            edge: section.getBoundingClientRect().right - parseFloat(style.borderRightWidth)
                  - parseFloat(style.paddingRight),
            headers: Array.from(table.querySelectorAll('th'), th => th.textContent)};
  })})"""


def load_in_browser(browser: str, page: Path, profile: Path, width: int = 1280, height: int = 1600,
                    mobile: bool = False) -> dict:
    """Open `page` in headless Chromium: the requests it made, the failed ones, console/log errors, each
    image's decoded size, where its tables end (`LAYOUT`) at a window `width` px wide, and a screenshot of the
    top `width` x `height` pixels (PNG bytes). `mobile`: as a phone shows it, with scrollbars that overlay the
    page and show only while it scrolls (as macOS shows them too), unless a page styles its own."""
    tools = DevTools(browser, profile)
    try:
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Log", "Runtime"):
            tools.send(f"{domain}.enable", session=session)
        tools.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                          "mobile": mobile}, session=session)
        tools.events.clear()
        tools.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        tools.wait_for("Page.loadEventFired", timeout=60)
        images = tools.send("Runtime.evaluate", {
            "expression": "JSON.stringify(Array.from(document.images, i => [i.complete, i.naturalWidth,"
                          " i.naturalHeight]))", "returnByValue": True}, session=session)["result"]["value"]
        layout = tools.send("Runtime.evaluate", {"expression": LAYOUT, "returnByValue": True},
                            session=session)["result"]["value"]
        shot = tools.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
        events = list(tools.events)
    finally:
        tools.close()
    return {
        "requests": [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"],
        "failed": [e["params"] for e in events if e.get("method") == "Network.loadingFailed"],
        "errors": [e["params"] for e in events if e.get("method") == "Log.entryAdded"
                   and e["params"]["entry"]["level"] == "error"],
        "images": json.loads(images),
        "layout": json.loads(layout),
        "screenshot": base64.b64decode(shot),
    }


def test_report_in_a_real_browser(chromium: str, run_folder: Path, tmp_path: Path) -> None:
    page = run_folder / "report.html"
    html_images = len(decoded_images(page.read_text(encoding="utf-8")))
    seen = load_in_browser(chromium, page, tmp_path / "profile")
    # the page is the only request that is not a data: URI; nothing failed, nothing was blocked
    assert [u for u in seen["requests"] if not u.startswith("data:")] == [page.resolve().as_uri()]
    assert seen["failed"] == [] and seen["errors"] == []
    # every image decoded in the browser: loaded, with a size
    assert len(seen["images"]) == html_images >= 4
    assert all(done and w > 100 and h > 100 for done, w, h in seen["images"]), seen["images"]
    shot = Image.open(io.BytesIO(seen["screenshot"]))
    shot.load()
    assert shot.size == (1280, 1600) and not_single_colour(shot)
    (tmp_path / "screenshot.png").write_bytes(seen["screenshot"])
    assert_tables_fit(seen["layout"])


def assert_tables_fit(layout: dict) -> None:
    """Nothing runs past the window, and no table is wider than its section."""
    assert layout["page"][0] <= layout["page"][1], layout["page"]
    assert layout["tables"]
    for t in layout["tables"]:
        assert t["table"] <= t["edge"] + 0.5, f"{t['section']}: {t['table'] - t['edge']:.0f} px past its section"


@pytest.fixture(scope="module")
def comparison_page(run_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html of the tiny run compared with a copy of itself, as two runs of a comparison."""
    from neuro_trigger.judge.comparison import compare

    root = tmp_path_factory.mktemp("report_compare")
    twin = root / "twin" / "version_7"
    shutil.copytree(run_folder, twin, ignore=shutil.ignore_patterns("tb", "ckpts", "plots", "*.csv", "mean_expert"))
    return compare([run_folder, twin], out_root=root / "log").folder / "report.html"


def test_comparison_report_in_a_real_browser(chromium: str, comparison_page: Path, tmp_path: Path) -> None:
    """At 1280 px every table of a comparison fits its section, the runs' table with the verdict table's
    headers and units; in a narrow window a table scrolls inside its section rather than off the page, with a
    scrollbar in sight even where scrollbars only show while scrolling."""
    seen = load_in_browser(chromium, comparison_page, tmp_path / "profile")
    assert seen["failed"] == [] and seen["errors"] == []
    assert_tables_fit(seen["layout"])
    side_by_side = next(t for t in seen["layout"]["tables"] if t["section"] == "Runs side by side")
    headers = side_by_side["headers"]
    for human in ("z \u03c3 [cm]", "z 68% half-width [cm]", "z bias (mean) [cm]", "efficiency [%]",
                  "background rejection [%]", "loss new / old"):
        assert human in headers, headers
    assert not [h for h in headers if "_" in h], headers  # no column names of comparison.csv

    narrow = load_in_browser(chromium, comparison_page, tmp_path / "profile", width=720, height=900, mobile=True)
    assert narrow["layout"]["page"][0] <= 720, "the page scrolls sideways"
    for t in narrow["layout"]["tables"]:
        assert t["box"] <= t["edge"] + 0.5, t
        if t["table"] > t["edge"] + 0.5:  # too wide for this window: it scrolls, with a scrollbar always shown
            assert t["overflow"] == "auto" and t["scrollbar"] > 0, t
    assert any(t["table"] > t["edge"] for t in narrow["layout"]["tables"])  # one that does scroll


def test_browser_sees_a_request_an_outside_reference_would_make(chromium: str, tmp_path: Path) -> None:
    """The check above can fail: a page with an outside image makes a request (blocked by nothing here,
    and failing offline) that the browser test reports."""
    page = tmp_path / "outside.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png"></body></html>')
    seen = load_in_browser(chromium, page, tmp_path / "profile", height=300)
    assert "http://127.0.0.1:9/x.png" in seen["requests"] and seen["failed"]
