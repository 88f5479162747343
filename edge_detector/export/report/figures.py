"""The report's figures, one function each: ReportData -> a matplotlib Figure (None where the data cannot show it).

matplotlib with the Agg backend (the report extra); no figure needs a display. Every figure that
spans time marks where the test rows start; every figure that needs labels is left out without them.
"""
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from edge_detector.export.evaluate import MODE_LABELS
from edge_detector.export.calibrate import alarm_rate_curve
from edge_detector.export.report.data import ReportData, confusion_counts, operating_scores

WIDTH = 11.0                 # inches; at DPI 100 the page shows each figure at its own size
DPI = 100
MAX_SENSOR_PANELS = 12
MODE_ORDER = ("iforest", "lof", "lstm", "hybrid")
COLOURS = {"iforest": "C0", "lof": "C1", "lstm": "C2", "hybrid": "C3"}


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported here: the report extra, never the runtime)."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    return plt


def _mark_labels(ax, r: ReportData, x: np.ndarray) -> None:
    """Shade the labelled anomalies and draw the test split's start."""
    if r.labels is not None:
        least = max(len(x) / 600.0, 1.0)               # a one-reading label still shows as a band
        for k, (s, e) in enumerate(_runs(r.labels)):
            pad = max(least - (x[e] - x[s]), 0.0) / 2
            ax.axvspan(x[s] - pad, x[e] + pad, color="orange", alpha=0.35, lw=0,
                       label="labelled anomaly" if k == 0 else None)
    if r.start > 0:
        ax.axvline(x[r.start], color="grey", ls="--", lw=1, label="test rows start")


def _legend_right(ax) -> None:
    """The axes' legend outside it, on the right (constrained layout makes room), so it hides no data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=8, framealpha=0.9)


def _runs(mask: np.ndarray) -> List[Tuple[int, int]]:
    """[(first, last)] rows of each run of True.

    >>> _runs(np.array([0, 1, 1, 0, 1], bool))
    [(1, 2), (4, 4)]
    """
    padded = np.r_[False, np.asarray(mask, bool), False]
    edges = np.flatnonzero(np.diff(padded.astype(int)))
    return [(int(s), int(e) - 1) for s, e in zip(edges[::2], edges[1::2])]


def _time_axis(r: ReportData) -> Tuple[np.ndarray, str]:
    """(x for each reading, the axis label): the reading's row."""
    return np.arange(len(r.data.values)), "reading (row of the data file)"


def sensors_over_time(r: ReportData):
    """Each sensor over time (one panel each, at most 12), the hybrid alarms as red marks, the labels shaded."""
    plt = pyplot()
    x, xlabel = _time_axis(r)
    names = r.data.sensors[:MAX_SENSOR_PANELS]
    alarms = r.modes["hybrid"].alarms
    fig, axes = plt.subplots(len(names), 1, figsize=(WIDTH, 0.6 + 1.6 * len(names)), sharex=True, squeeze=False,
                             layout="constrained")
    for k, (ax, name) in enumerate(zip(axes[:, 0], names)):
        y = r.data.values[:, k]
        ax.plot(x, y, lw=0.6, color="C0")
        _mark_labels(ax, r, x)
        ax.scatter(x[alarms], y[alarms], s=9, color="red", zorder=3, label="alarm (hybrid)")
        ax.set_ylabel(name, fontsize=9)
        ax.tick_params(labelsize=8)
    _legend_right(axes[0, 0])
    axes[-1, 0].set_xlabel(xlabel)
    more = len(r.data.sensors) - len(names)
    fig.suptitle("Sensors over time, with the alarms%s%s" % (
        " and the labelled anomalies" if r.labels is not None else "", " (%d more sensors not shown)" % more
        if more > 0 else ""), fontsize=11)
    return fig


def scores_over_time(r: ReportData):
    """Stage 1 with tau1 and the IF-only threshold; stage 2 (log scale) with the threshold each reading met."""
    plt = pyplot()
    x, xlabel = _time_axis(r)
    d = r.detector
    hybrid, lstm = r.modes["hybrid"].scores, r.modes["lstm"].scores
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(WIDTH, 6.4), sharex=True, layout="constrained")
    warm = hybrid.warmup
    a1.plot(x[~warm], hybrid.stage1[~warm], lw=0.5, color="C0", label="stage-1 score (IsolationForest)")
    a1.axhline(d.tau1, color="C1", lw=1.2, label="tau1 = %.3g: screens for stage 2" % d.tau1)
    a1.axhline(d.tau_iforest, color="C4", lw=1.2, ls=":", label="IF-only threshold = %.3g" % d.tau_iforest)
    _mark_labels(a1, r, x)
    a1.set_ylabel("stage 1")
    _legend_right(a1)
    ran = lstm.stage2_ran
    a2.plot(x[ran], np.maximum(lstm.stage2[ran], 1e-12), lw=0.5, color="0.6", label="stage 2 on every window (LSTM-only)")
    hran = hybrid.stage2_ran
    a2.scatter(x[hran], np.maximum(hybrid.stage2[hran], 1e-12), s=6, color="C2", zorder=3,
               label="stage 2 where stage 1 screened (hybrid)")
    kind = d.threshold_spec.kind
    a2.plot(x, r.threshold, color="C3", lw=1.2, drawstyle="steps-post",
            label="stage-2 threshold (%s%s)" % (kind, ", at each reading" if kind == "adaptive" else
                                                 " = %.3g" % d.tau2))
    a2.scatter(x[hybrid.is_anomaly], hybrid.stage2[hybrid.is_anomaly], s=14, facecolor="none", edgecolor="red",
               zorder=4, label="alarm")
    _mark_labels(a2, r, x)
    a2.set_yscale("log")
    a2.set_ylabel("stage 2 (log)")
    a2.set_xlabel(xlabel)
    _legend_right(a2)
    fig.suptitle("Scores over time and their thresholds", fontsize=11)
    return fig


def score_distributions(r: ReportData):
    """Histograms of the stage-1 and stage-2 scores (every window: LSTM-only) of the test rows, normal against
    anomalous where labels exist, with the thresholds."""
    plt = pyplot()
    d = r.detector
    rows = np.arange(r.start, len(r.data.values))
    s1 = r.modes["hybrid"].scores.stage1
    s2 = r.modes["lstm"].scores.stage2
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.8), layout="constrained")
    panels = [(axes[0], s1, "stage-1 score", [(d.tau1, "tau1"), (d.tau_iforest, "IF-only")], False),
              (axes[1], s2, "stage-2 score (log)", [(np.nanmedian(r.threshold[rows]), "threshold (median)")], True)]
    for ax, score, title, lines, log in panels:
        warm = r.modes["hybrid"].scores.warmup[rows]
        ok = rows[~warm & np.isfinite(score[rows])]
        values = np.maximum(score[ok], 1e-12) if log else score[ok]
        bins = np.geomspace(values.min(), values.max() * 1.0001, 60) if log else 60
        groups = [("all test readings", values)] if r.labels is None else [
            ("normal", values[~r.labels[ok]]), ("anomalous", values[r.labels[ok]])]
        for (name, v), colour in zip(groups, ("C0", "C3")):
            if v.size:
                ax.hist(v, bins=bins, weights=np.full(v.size, 1.0 / v.size), alpha=0.55, color=colour,
                        label="%s (%d)" % (name, v.size))
        for k, (value, name) in enumerate(lines):
            ax.axvline(value, color="k", ls=("--", ":")[k % 2], lw=1, label="%s = %.3g" % (name, value))
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(title)
        ax.set_ylabel("share of the group's readings")
        ax.legend(fontsize=8, framealpha=0.9)
    fig.suptitle("Score distributions on the test rows%s" % (", normal against anomalous" if r.labels is not None
                                                               else ""), fontsize=11)
    return fig


def roc_pr_curves(r: ReportData):
    """ROC and precision-recall curves of every mode on the test rows, AUCs in the legend (labels needed)."""
    if r.labels is None or r.labels[r.start:].all() or not r.labels[r.start:].any():
        return None
    from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: PLC0415 (the report extra)
    plt = pyplot()
    y = r.labels[r.start:]
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(WIDTH, 4.6), layout="constrained")
    for mode in (m for m in MODE_ORDER if m in r.modes):
        result = r.modes[mode]
        score = result.ranking[r.start:]
        fpr, tpr, _ = roc_curve(y, score)
        precision, recall, _ = precision_recall_curve(y, score)
        m = result.metrics
        roc.plot(fpr, tpr, color=COLOURS[mode], lw=1.4, label="%s (AUC %.3f)" % (MODE_LABELS[mode], m["roc_auc"]))
        pr.step(recall, precision, where="post", color=COLOURS[mode], lw=1.4,
                label="%s (AP %.3f)" % (MODE_LABELS[mode], m["pr_auc"]))
    roc.plot([0, 1], [0, 1], color="0.7", ls="--", lw=1, label="chance")
    pr.axhline(y.mean(), color="0.7", ls="--", lw=1, label="chance (%.3f)" % y.mean())
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.02))
    pr.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    roc.legend(loc="best", fontsize=8)
    pr.legend(loc="best", fontsize=8)
    fig.suptitle("Every mode on the test rows (%d readings, %d anomalous)" % (y.size, y.sum()), fontsize=11)
    return fig


def confusion_matrices(r: ReportData):
    """One confusion matrix per mode on the test rows (labels needed); the colour is the share of the true class."""
    if r.labels is None:
        return None
    plt = pyplot()
    modes = [m for m in MODE_ORDER if m in r.modes]
    fig, axes = plt.subplots(1, len(modes), figsize=(WIDTH, 2.9), squeeze=False, layout="constrained")
    for ax, mode in zip(axes[0], modes):
        c = confusion_counts(r, mode)
        counts = np.array([[c.tn, c.fp], [c.fn, c.tp]])
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, "%d" % counts[i, j], ha="center", va="center", fontsize=11,
                        color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks([0, 1])
        ax.set_xticklabels(["normal", "alarm"], fontsize=8)
        ax.set_yticks([0, 1])
        ax.set_yticklabels(["normal", "anomalous"], fontsize=8)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("labelled", fontsize=8)
        ax.set_title("%s: F1 %.3f" % (MODE_LABELS[mode], r.modes[mode].metrics["f1"]), fontsize=10)
    fig.suptitle("Confusion matrices on the test rows", fontsize=11)
    return fig


def contributions_over_time(r: ReportData):
    """Each sensor's part of the stage-2 score over time (LSTM-only: every window) as a multiple of tau2, a heat
    row per sensor (each column the largest in its stretch of readings, so a one-reading spike shows); the hybrid
    alarms below, on the row of their top sensor."""
    from matplotlib.colors import LogNorm  # noqa: PLC0415
    plt = pyplot()
    x, xlabel = _time_axis(r)
    lstm = r.modes["lstm"].scores
    names = r.detector.sensors
    ratio = np.where(lstm.stage2_ran, lstm.stage2, 0.0) / r.detector.tau2                # [n]
    parts = lstm.shares * ratio[:, None]                                                 # [n, sensors]
    columns = min(len(x), 1000)
    edges = np.linspace(0, len(x), columns + 1).astype(int)
    pooled = np.maximum.reduceat(parts, edges[:-1], axis=0).T                           # [sensors, columns]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(WIDTH, 1.8 + 0.75 * len(names)), sharex=True, layout="constrained",
                                 gridspec_kw={"height_ratios": [1, 1]})
    top = max(float(pooled.max()), 1.0)
    image = a1.imshow(np.maximum(pooled, 1e-3 * top), aspect="auto", interpolation="nearest", cmap="magma_r",
                      norm=LogNorm(vmin=1e-3 * top, vmax=top), extent=(x[0] - 0.5, x[-1] + 0.5, len(names) - 0.5, -0.5))
    a1.set_yticks(range(len(names)))
    a1.set_yticklabels(names, fontsize=8)
    a1.set_title("each sensor's part of the stage-2 score, / tau2 (LSTM-only mode, every window)", fontsize=9)
    fig.colorbar(image, ax=a1, label="part / tau2 (log)", pad=0.01)
    hybrid = r.modes["hybrid"].scores
    alarm_rows = np.flatnonzero(hybrid.is_anomaly)
    top_sensor = np.argmax(hybrid.shares[alarm_rows], axis=1) if alarm_rows.size else alarm_rows
    for k in range(len(names)):
        rows = alarm_rows[top_sensor == k]
        a2.scatter(x[rows], np.full(rows.size, k), s=40, color="k", marker="|", label="alarm" if k == 0 else None)
    _mark_labels(a2, r, x)
    a2.set_yticks(range(len(names)))
    a2.set_yticklabels(names, fontsize=8)
    a2.set_ylim(len(names) - 0.4, -0.6)
    a2.set_title("top sensor of each alarm (hybrid)", fontsize=9)
    a2.set_xlabel(xlabel)
    _legend_right(a2)
    fig.suptitle("Per-sensor contributions over time (the shares the detector reports)", fontsize=11)
    return fig


def training_history(r: ReportData):
    """The autoencoder's loss per epoch and the fitting time of each model (needs the model folder)."""
    if r.history is None or not r.history.get("loss"):
        return None
    plt = pyplot()
    h = r.history
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(WIDTH, 3.6), gridspec_kw={"width_ratios": [3, 2]},
                                 layout="constrained")
    epochs = np.arange(1, len(h["loss"]) + 1)
    a1.plot(epochs, h["loss"], marker="o", ms=3, label="training loss")
    if h.get("val_loss"):
        a1.plot(epochs, h["val_loss"], marker="o", ms=3, label="validation loss (calibration windows)")
        best = int(np.argmin(h["val_loss"]))
        a1.axvline(epochs[best], color="0.6", ls=":", lw=1, label="best epoch (kept)")
    a1.set(xlabel="epoch", ylabel="MSE", title="LSTM autoencoder")
    a1.legend(loc="best", fontsize=8)
    seconds = dict(h.get("fit_seconds") or {})
    total = (r.model_meta or {}).get("train_seconds")
    if not seconds and total is not None:
        seconds = {"all models": total}
    if seconds:
        names = list(seconds)
        a2.barh(names, [seconds[n] for n in names], color="C0")
        for k, n in enumerate(names):
            a2.text(seconds[n], k, " %.2f s" % seconds[n], va="center", fontsize=8)
        a2.set_xlim(0, max(seconds.values()) * 1.35 or 1)
        a2.set(title="Training time per model", xlabel="seconds to fit%s" % (
            " (whole training run: %.1f s)" % total if total is not None else ""))
    else:
        a2.axis("off")
    return fig


def _sensor_grid(n: int):
    """(figure, the first ``n`` axes of a grid 4 wide), the grid's spare axes hidden: one panel per sensor."""
    plt = pyplot()
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, grid = plt.subplots(rows, cols, figsize=(WIDTH, 0.8 + 2.4 * rows), squeeze=False, layout="constrained")
    for ax in grid.flat[n:]:
        ax.axis("off")
    return fig, list(grid.flat[:n])


def exploration_distributions(r: ReportData):
    """A histogram per sensor (at most 12), the labelled readings apart where labels exist."""
    names = r.data.sensors[:MAX_SENSOR_PANELS]
    fig, axes = _sensor_grid(len(names))
    for k, ax in enumerate(axes):
        v = r.data.values[:, k]
        bins = np.histogram_bin_edges(v, 50)
        if r.labels is None:
            ax.hist(v, bins=bins, color="C0")
        else:
            ax.hist(v[~r.labels], bins=bins, color="C0", label="normal")
            ax.hist(v[r.labels], bins=bins, color="C3", alpha=0.8, label="labelled")
        ax.set_yscale("log")
        ax.set_title(names[k], fontsize=9)
        ax.tick_params(labelsize=7)
    if r.labels is not None:
        axes[0].legend(fontsize=7)
    fig.suptitle("Distribution of each sensor (count, log)", fontsize=11)
    return fig


def correlation_heatmap(r: ReportData):
    """Pearson correlation between the sensors (needs two or more)."""
    names = r.data.sensors
    if len(names) < 2:
        return None
    plt = pyplot()
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.corrcoef(r.data.values, rowvar=False))
    side = min(1.2 + 0.65 * len(names), 8.5)
    fig, ax = plt.subplots(figsize=(side + 1.6, side), layout="constrained")
    image = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    if len(names) <= 12:
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, "%.2f" % corr[i, j], ha="center", va="center", fontsize=7,
                        color="white" if abs(corr[i, j]) > 0.6 else "black")
    fig.colorbar(image, ax=ax, shrink=0.8, label="Pearson r")
    ax.set_title("Correlation between sensors", fontsize=11)
    return fig


def seasonal_view(r: ReportData):
    """Each sensor folded at the data's dominant period: the median and 10-90% band of the readings at each phase
    (at most 96 phase bins), where the data has a period."""
    if r.period is None:
        return None
    p = r.period
    names = r.data.sensors[:MAX_SENSOR_PANELS]
    bins = min(p, 96)
    phase = (np.arange(len(r.data.values)) % p) * bins // p                 # [time] -> its phase bin
    interval = r.interval_s
    unit, per_bin = ("hours", p * interval / 3600 / bins) if interval else ("readings", p / bins)
    centres = (np.arange(bins) + 0.5) * per_bin
    fig, axes = _sensor_grid(len(names))
    for k, ax in enumerate(axes):
        v = r.data.values[:, k]
        q = np.array([np.quantile(v[phase == b], [0.1, 0.5, 0.9]) for b in range(bins)])   # [bins, 3]
        ax.fill_between(centres, q[:, 0], q[:, 2], alpha=0.3, color="C0", lw=0, label="10-90%")
        ax.plot(centres, q[:, 1], color="C0", lw=1.2, label="median")
        ax.set_title(names[k], fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("%s into the period" % unit, fontsize=7)
    axes[0].legend(fontsize=7)
    fig.suptitle("Seasonal view: folded at the dominant period, %s (%d cycles)"
                 % (describe_period(r), len(r.data.values) // p), fontsize=11)
    return fig


def describe_period(r: ReportData) -> str:
    """The period in readings, and in time where the timestamps say how far apart readings are."""
    interval = r.interval_s
    text = "%d readings" % r.period
    if interval:
        seconds = r.period * interval
        text += " = %.3g %s" % ((seconds / 3600, "hours") if seconds < 2 * 86400 else (seconds / 86400, "days"))
    return text


def operating_point(r: ReportData):
    """The share of normal readings that alarm (hybrid) against the stage-2 threshold, with today's choice
    marked: what moving the operating point costs (``edge-detector calibrate`` sets it from a target)."""
    scores = operating_scores(r)
    if scores is None:
        return None
    d = r.detector
    curve = alarm_rate_curve(scores, d.threshold_spec, d.tau2)
    now = d.tau2 if curve.parameter == "tau2" else d.threshold_spec.margin
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH * 0.6, 3.6), layout="constrained")
    ax.plot(curve.levels, curve.rates * 100, color="C0", lw=1.5)
    ax.axvline(now, color="C3", lw=1.2, ls="--", label="this bundle: %s = %.3g" % (curve.parameter, now))
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.1)                     # 0 stays 0; 0.1% to 100% logarithmic
    ax.set_ylim(0, 100)
    ax.set_xlabel("stage-2 %s" % ("threshold tau2" if curve.parameter == "tau2" else "adaptive margin"))
    ax.set_ylabel("alarms, % of normal readings")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("Alarm rate against the threshold, on %d %s" % (
        len(scores.stage1), "test readings labelled normal" if r.labels is not None else
        "test readings (no labels: all taken as normal)"), fontsize=10)
    return fig


# (file name, section, builder), in the page's order
FIGURES: List[Tuple[str, str, Callable[[ReportData], Optional[object]]]] = [
    ("sensors.png", "detections", sensors_over_time),
    ("scores.png", "detections", scores_over_time),
    ("contributions.png", "detections", contributions_over_time),
    ("distributions.png", "accuracy", score_distributions),
    ("roc_pr.png", "accuracy", roc_pr_curves),
    ("confusion.png", "accuracy", confusion_matrices),
    ("operating_point.png", "accuracy", operating_point),
    ("training.png", "training", training_history),
    ("sensor_distributions.png", "exploration", exploration_distributions),
    ("correlation.png", "exploration", correlation_heatmap),
    ("seasonal.png", "exploration", seasonal_view),
]


def render_figures(r: ReportData) -> Dict[str, Tuple[str, bytes]]:
    """{file name: (section, PNG bytes)} of every figure the data can show, in the page's order."""
    import io  # noqa: PLC0415
    plt = pyplot()
    out = {}
    for name, section, build in FIGURES:
        fig = build(r)
        if fig is None:
            continue
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        plt.close(fig)
        out[name] = (section, buffer.getvalue())
    return out
