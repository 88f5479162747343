"""The report as one self-contained HTML page: every figure embedded as a base64 PNG, tables as HTML, no
script and no link to anything outside the page, so it opens offline."""
import base64
import html
import os
from typing import Dict, List, Tuple

from edge_detector.export.evaluate import MODE_LABELS
from edge_detector.export.report.data import ReportData
from edge_detector.export.report.figures import MODE_ORDER, describe_period

SECTIONS = (
    ("detections", "What was detected"),
    ("accuracy", "How well"),
    ("training", "Training history"),
    ("exploration", "Exploration"),
)
CAPTIONS = {
    "sensors.png": "Each sensor over time. Red marks: the readings the bundle alarmed on (hybrid mode). Orange: the "
                   "labelled anomalies. Dashed line: where the test rows start.",
    "scores.png": "Top: the stage-1 score of every reading with tau1 (above it, stage 2 runs) and the IF-only "
                  "threshold. Bottom: the stage-2 score where it ran, and the threshold each reading was held to "
                  "(an adaptive threshold moves; a static one is tau2); red circles are alarms.",
    "contributions.png": "Top: the stage-2 score of every window (LSTM-only mode) as a multiple of tau2, split into "
                         "each sensor's share. Bottom: each alarm's top sensor.",
    "distributions.png": "How the scores of the test rows spread, normal against labelled anomalous readings, with "
                         "the thresholds.",
    "roc_pr.png": "ROC and precision-recall curves of every mode on the test rows; the area under each is in the "
                  "legend (AP: average precision, the PR-AUC).",
    "confusion.png": "Confusion matrices of every mode's alarms on the test rows (colour: the share of the labelled "
                     "class).",
    "training.png": "The LSTM autoencoder's loss per epoch (early stopping keeps the best validation epoch) and how "
                    "long each model took to fit.",
    "sensor_distributions.png": "The distribution of each sensor's readings over the whole file.",
    "correlation.png": "Pearson correlation between the sensors over the whole file.",
    "seasonal.png": "Each sensor folded at the data's dominant period (the highest autocorrelation peak).",
}
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1140px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
.meta { color: #555; } figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; }
figcaption { color: #444; font-size: 0.92em; margin-top: 0.3em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; } .note { color: #666; font-size: 0.9em; }
"""
MAX_EVENT_ROWS = 200


def _row(cells, header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>%s</tr>" % "".join("<%s%s>%s</%s>" % (tag, ' class="l"' if k == 0 else "", html.escape(str(c)), tag)
                                   for k, c in enumerate(cells))


def _table(head: List[str], rows: List[list]) -> str:
    return "<table>%s%s</table>" % (_row(head, header=True), "".join(_row(r) for r in rows))


def _fmt(v, pattern: str = "%.3f") -> str:
    return "n/a" if v is None else pattern % v


def metrics_table(r: ReportData) -> str:
    """Precision, recall, F1, AUCs and alarms of every mode on the test rows (labels needed)."""
    rows = []
    for mode in (m for m in MODE_ORDER if m in r.modes):
        m = r.modes[mode].metrics
        share = r.modes[mode].scores.stage2_ran[r.start:].mean() if r.modes[mode].scores is not None else 0.0
        rows.append([MODE_LABELS[mode], _fmt(m["precision"]), _fmt(m["recall"]), _fmt(m["f1"]), _fmt(m["roc_auc"]),
                     _fmt(m["pr_auc"]), m["alarms"], "%.1f" % m["false_alarms_per_1000"], "%.1f%%" % (100 * share)])
    return _table(["mode", "precision", "recall", "F1", "ROC-AUC", "PR-AUC", "alarms", "false alarms / 1000 normal",
                   "stage 2 ran"], rows)


def _when(r: ReportData, row: int) -> str:
    return r.data.timestamps[row] if r.data.timestamps else "row %d" % row


def event_table(r: ReportData) -> str:
    """One row per alarm event: start, end, duration, top sensor, delay from the labelled start."""
    if not r.events:
        return "<p>No alarms.</p>"
    interval = r.interval_s
    rows = []
    for e in r.events[:MAX_EVENT_ROWS]:
        readings = e.end - e.start + 1
        duration = _readings(readings) + (" (%s)" % _span(readings * interval) if interval else "")
        delay = "" if r.labels is None else ("no labelled anomaly" if e.delay is None else
                                             _readings(e.delay, signed=True)
                                             + (" (%s)" % _span(e.delay * interval) if interval else ""))
        rows.append([len(rows) + 1, _when(r, e.start), _when(r, e.end), duration, e.top_sensor or "-"]
                    + ([delay] if r.labels is not None else []) + ["test" if e.start >= r.start else "training"])
    head = ["#", "start", "end", "duration", "top sensor"] + (
        ["delay from the labelled start"] if r.labels is not None else []) + ["rows"]
    more = len(r.events) - MAX_EVENT_ROWS
    return _table(head, rows) + ("<p class=\"note\">%d more events not listed.</p>" % more if more > 0 else "")


def _readings(n: int, signed: bool = False) -> str:
    """A count of readings in words.

    >>> _readings(1), _readings(12), _readings(-1, signed=True), _readings(0, signed=True)
    ('1 reading', '12 readings', '-1 reading', '+0 readings')
    """
    return ("%+d" if signed else "%d") % n + (" reading" if abs(n) == 1 else " readings")


def _span(seconds: float) -> str:
    """A duration in the largest unit that keeps it above 1.

    >>> _span(90), _span(7200), _span(-30)
    ('1.5 min', '2 h', '-30 s')
    """
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return "%s%.3g %s" % (sign, seconds / size, unit)
    return "%s%.3g s" % (sign, seconds)


def summary(r: ReportData) -> str:
    """The page's opening lines: what was scored, with what, and what the page leaves out."""
    d, n = r.detector, len(r.data.values)
    hybrid = r.modes["hybrid"]
    lines = [
        "Data: %s, %d readings of %d sensor%s (%s)." % (os.path.basename(r.path), n, len(d.sensors),
                                                         "" if len(d.sensors) == 1 else "s", ", ".join(d.sensors)),
        "Bundle: window %d, stage-2 threshold %s (tau2 %.4g), stage 1 passes %.1f%% of the test readings to stage 2; "
        "%d alarms in %d events on the whole file, %d of them in the test rows."
        % (d.window, d.threshold_spec.kind, d.tau2, 100 * hybrid.scores.stage2_ran[r.start:].mean(),
           int(hybrid.alarms.sum()), len(r.events), int(hybrid.alarms[r.start:].sum())),
        "Scored by the edge runtime, %s." % r.split,
        ("Labels: %s (%d labelled readings, %d in the test rows)." % (r.label_source, int(r.labels.sum()),
                                                                       int(r.labels[r.start:].sum()))
         if r.labels is not None else "No labels: the page shows what does not need them (no curves, confusion "
         "matrices or delays)."),
    ]
    if "lof" not in r.modes:
        lines.append("LOF and the training history need the model folder, which was not given.")
    return "".join("<p class=\"meta\">%s</p>" % html.escape(x) for x in lines if x)


def render_page(r: ReportData, figures: Dict[str, Tuple[str, bytes]], title: str) -> str:
    """The whole page: the summary, then each section's tables and figures (``figures``: name -> (section, PNG))."""
    parts = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>%s</title><style>%s</style>"
             "</head><body><h1>%s</h1>" % (html.escape(title), STYLE, html.escape(title)), summary(r)]
    for section, heading in SECTIONS:
        names = [name for name, (s, _) in figures.items() if s == section]
        body = []
        if section == "detections":
            body.append("<h3>Alarm events</h3>" + event_table(r))
        if section == "accuracy" and r.labels is not None:
            body.append("<h3>Every mode on the test rows</h3>" + metrics_table(r))
        if section == "exploration":
            body.append("<p class=\"note\">%s</p>" % html.escape(
                "Dominant period: %s." % describe_period(r) if r.period else
                "No period: the data's autocorrelation has no peak above 0.3, so there is no seasonal view."))
        for name in names:
            png = base64.b64encode(figures[name][1]).decode("ascii")
            body.append("<figure><img src=\"data:image/png;base64,%s\" alt=\"%s\"><figcaption>%s "
                        "<a href=\"%s\">%s</a></figcaption></figure>"
                        % (png, html.escape(name), html.escape(CAPTIONS.get(name, "")), html.escape(name),
                           html.escape(name)))
        if body:
            parts.append("<h2>%s</h2>%s" % (html.escape(heading), "".join(body)))
    parts.append("</body></html>")
    return "\n".join(parts)
