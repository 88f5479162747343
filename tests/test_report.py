"""edge-detector report: the page and its figures, what they are computed from, and the page in a real browser."""
import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("matplotlib", reason="the report extra (matplotlib) is not installed")

from edge_detector.cli import cli  # noqa: E402
from edge_detector.export.report import write_report  # noqa: E402
from edge_detector.export.report.data import alarm_events, load_report_data, threshold_trace, window_labels  # noqa: E402
from edge_detector.runtime import Detector  # noqa: E402
from edge_detector.runtime.threshold import Threshold, ThresholdSpec  # noqa: E402

pytestmark = pytest.mark.slow
LABELLED = {"sensors.png", "scores.png", "contributions.png", "distributions.png", "roc_pr.png", "confusion.png",
            "training.png", "sensor_distributions.png", "correlation.png", "seasonal.png"}
NEED_LABELS = {"roc_pr.png", "confusion.png"}


@pytest.fixture(scope="module")
def report(trained, synthetic, tmp_path_factory):
    """(out folder, paths written) of a report on the session's tiny model, with its model folder, written through
    the CLI."""
    model_dir, bundle = trained
    _, csv_path = synthetic
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(cli, ["report", str(bundle), str(csv_path), "--out", str(out), "--model",
                                      str(model_dir)])
    assert result.exit_code == 0, result.output
    assert "index.html and %d figures" % len(LABELLED) in result.output
    return out, [str(out / "index.html")] + sorted(str(p) for p in out.glob("*.png"))


def embedded_images(page: str):
    return re.findall(r'<img src="([^"]*)" alt="([^"]*)"', page)


def test_the_page_holds_every_figure_and_needs_nothing_outside_it(report):
    out, paths = report
    page = (out / "index.html").read_text()
    assert paths[0] == str(out / "index.html")
    assert {p.split("/")[-1] for p in paths[1:]} == LABELLED
    images = embedded_images(page)
    assert {alt for _, alt in images} == LABELLED
    for src, alt in images:
        # each figure is the PNG written beside the page, byte for byte, embedded: nothing is fetched
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (out / alt).read_bytes()
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page and "<link" not in page
    for heading in ("What was detected", "How well", "Training history", "Exploration", "Alarm events"):
        assert heading in page
    assert "LOF" in page and "delay from the labelled start" in page


def test_the_numbers_on_the_page_are_the_runtimes(trained, synthetic):
    model_dir, bundle = trained
    data, csv_path = synthetic
    r = load_report_data(str(bundle), str(csv_path), model_dir=str(model_dir))
    detector = Detector.load(str(bundle))
    scores = detector.score(data.values)
    np.testing.assert_array_equal(r.modes["hybrid"].alarms, scores.is_anomaly)
    assert set(r.modes) == {"hybrid", "lstm", "iforest", "lof"}
    assert r.start == int(json.loads((bundle / "manifest.json").read_text())["training_data"]["train_rows"])
    # the events cover every alarm, and nothing else
    covered = np.zeros(len(data.values), bool)
    for e in r.events:
        covered[e.start:e.end + 1] = True
        assert scores.is_anomaly[e.start] and scores.is_anomaly[e.end]
    assert np.all(covered[scores.is_anomaly]) and len(r.events) >= 1
    # where stage 2 ran, a reading alarmed exactly when its score was over the threshold the page draws
    ran = scores.stage2_ran
    np.testing.assert_array_equal(scores.is_anomaly[ran], scores.stage2[ran] > r.threshold[ran])
    assert r.period is not None and abs(r.period - 1440) < 100       # the synthetic data's daily cycle


def test_the_threshold_drawn_is_the_adaptive_one_each_reading_met():
    class Adaptive:
        threshold_spec = ThresholdSpec("adaptive", 0.9, 20, 1.5, tuple(np.linspace(1, 2, 20)))
        tau2 = 1.0
    rng = np.random.default_rng(0)
    s2 = np.abs(rng.normal(1.5, 1.0, 300))
    s2[150:160] = 9.0                                               # a sustained fault: the threshold freezes
    ran = rng.random(300) < 0.7
    trace = threshold_trace(Adaptive, s2, ran)
    live = Threshold(Adaptive.threshold_spec, Adaptive.tau2)
    decided = np.array([live.exceeded(float(v)) if r else False for v, r in zip(s2, ran)])
    np.testing.assert_array_equal(decided, ran & (s2 > trace))
    assert np.ptp(trace[ran]) > 0                                   # it moved
    fault = ran[150:160]
    assert np.ptp(trace[150:160][fault]) == 0                       # and held still while the fault alarmed


def test_events_say_their_top_sensor_and_delay_from_the_label():
    alarms = np.zeros(30, bool)
    alarms[[12, 13, 15, 25]] = True
    shares = np.zeros((30, 2))
    shares[:, 0] = 1.0
    shares[15, :] = [0.0, 5.0]
    labels = np.zeros(30, bool)
    labels[10:16] = True
    events = alarm_events(alarms, shares, ["a", "b"], labels, merge=3)
    assert [(e.start, e.end, e.top_sensor, e.delay) for e in events] == [(12, 15, "b", 2), (25, 25, "a", None)]


def test_without_labels_the_page_shows_what_does_not_need_them(trained, synthetic, tmp_path):
    model_dir, bundle = trained
    _, csv_path = synthetic
    lines = csv_path.read_text().splitlines()
    head = lines[0].split(",")
    keep = [k for k, name in enumerate(head) if name not in ("is_anomaly", "anomaly_type")]
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(",".join(line.split(",")[k] for k in keep) for line in lines[:1201]) + "\n")
    paths = write_report(str(bundle), str(plain), str(tmp_path / "out"))          # no model folder either
    names = {p.split("/")[-1] for p in paths[1:]}
    assert {"sensors.png", "scores.png", "contributions.png", "distributions.png", "correlation.png"} <= names
    assert not names & (NEED_LABELS | {"training.png"})
    page = (tmp_path / "out" / "index.html").read_text()
    assert "No labels" in page and "delay from the labelled start" not in page
    assert "LOF and the training history need the model folder" in page


def test_nab_windows_label_the_readings_inside_them(tmp_path):
    data = tmp_path / "realKnownCause" / "machine.csv"
    data.parent.mkdir()
    stamps = ["2014-01-01 00:%02d:00" % m for m in range(10)]
    windows = tmp_path / "windows.json"
    windows.write_text(json.dumps({"realKnownCause/machine.csv": [["2014-01-01 00:03:00.000000",
                                                                  "2014-01-01 00:05:00.000000"]],
                                   "other/machine2.csv": []}))
    assert window_labels(str(windows), str(data), stamps).astype(int).tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    with pytest.raises(Exception, match="no entry for elsewhere.csv"):
        window_labels(str(windows), str(tmp_path / "elsewhere.csv"), stamps)


def test_a_mistake_is_a_sentence(trained, synthetic, tmp_path):
    _, bundle = trained
    _, csv_path = synthetic
    windows = tmp_path / "w.json"
    windows.write_text("{}")
    result = CliRunner().invoke(cli, ["report", str(bundle), str(csv_path), "--out", str(tmp_path / "r"),
                                      "--labels", str(windows)])
    assert result.exit_code == 1 and "has no entry for data.csv" in result.output
    assert isinstance(result.exception, SystemExit)


CHECK = """<script>window.addEventListener("load", () => { const imgs = [...document.images];
document.body.insertAdjacentHTML("beforeend", '<pre id="probe">' + imgs.length + " " +
imgs.filter(i => i.complete && i.naturalWidth > 0).length + "</pre>"); });</script>"""


def chromium():
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it as root): the page "
                    "is checked in a real browser")
    return exe


def test_the_page_renders_in_headless_chromium_without_console_errors(report, tmp_path):
    exe = chromium()
    out, paths = report
    # the page as written, plus a probe that counts the images the browser decoded once the page has loaded
    probe = out / "probe.html"
    probe.write_text((out / "index.html").read_text().replace("</body>", CHECK + "</body>"))
    proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=%s" % tmp_path,
                           "--enable-logging=stderr", "--v=0", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(\d+) (\d+)</pre>', proc.stdout)
    assert found, proc.stderr[-2000:]
    assert int(found.group(1)) == len(paths) - 1 == int(found.group(2))        # every figure drawn
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert console == []
