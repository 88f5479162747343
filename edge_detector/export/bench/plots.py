"""A bench report as two figures: latency per engine, and accuracy against latency (matplotlib, the bench extra)."""
import os
from typing import List

from . import BENCH_ENGINES


def _colour(engine: str) -> str:
    return "C%d" % BENCH_ENGINES.index(engine)


def _latency_panels(report: dict) -> list:
    """(title, {engine: {mean_ms, p95_ms}}) per panel: stage 1, stage 2 per window at batch 1 and 256, streams."""
    panels = [("stage 1, one reading", {e: m for e, m in report["stage1"].items()})]
    for b in ("1", "256"):
        per = {e: v[b] for e, v in report["stage2"].items() if b in v}
        panels.append(("stage 2, batch %s (ms per window)" % b,
                       {e: {"mean_ms": m["mean_ms"] / int(b), "p95_ms": m["p95_ms"] / int(b)} for e, m in per.items()}))
    for mode in ("hybrid", "lstm"):
        panels.append(("%s, per reading" % mode, {e: v[mode] for e, v in report["stream"].items()}))
    return panels


def _threads(report: dict) -> str:
    n = report["settings"]["threads"]
    return "each runtime's default threads" if not n else "1 thread" if n == 1 else "%d threads" % n


def _latency_panel(ax, title: str, per: dict) -> None:
    """Horizontal bars from zero (linear: lengths compare), the p95 as a tick, each value written past both."""
    names = list(per)[::-1]
    means = [per[e]["mean_ms"] for e in names]
    p95 = [per[e]["p95_ms"] for e in names]
    y = range(len(names))
    ax.barh(y, means, color=[_colour(e) for e in names], height=0.6)
    ax.scatter(p95, y, marker="|", s=260, color="black", zorder=3, label="p95")
    right = max(max(means), max(p95))
    for k, (m, q) in enumerate(zip(means, p95)):
        ax.text(max(m, q) + 0.03 * right, k, "%.3g (p95 %.3g)" % (m, q), va="center", fontsize=8)
    ax.set_yticks(list(y))
    ax.set_yticklabels(names)
    ax.set_xlim(0, right * 1.7)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("ms: bar = mean, tick = p95")


def _latency_figure(plt, report: dict, path: str) -> None:
    panels = _latency_panels(report)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.2 + 1.5 * len(panels)), squeeze=False)
    for ax, (title, per) in zip(axes[:, 0], panels):
        _latency_panel(ax, title, per)
    fig.suptitle("edge-detector latency per engine (%s); linear axes from zero" % _threads(report), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _f1_panel(ax, report: dict) -> None:
    """Hybrid F1 on the test part against hybrid mean ms per reading, one point per engine."""
    acc = report.get("accuracy")
    for e, per in report["stream"].items():
        f1 = None
        if acc and e in acc["hybrid"]:
            f1 = acc["hybrid"][e]["f1"]
        elif report.get("f1"):
            f1 = report["f1"].get(e, {}).get("hybrid")
        if f1 is not None:
            ax.scatter(per["hybrid"]["mean_ms"], f1, s=60, color=_colour(e), label=e)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("hybrid, mean ms per reading")
    ax.set_ylabel("hybrid F1 on the test part")
    ax.set_title("F1 vs latency", fontsize=10)


def _error_panel(ax, report: dict) -> None:
    """Max relative score error against the originals vs mean latency, per engine and stage."""
    acc = report.get("accuracy")
    if acc:
        for stage, marker in (("stage1", "o"), ("stage2", "s")):
            for e, a in acc[stage].items():
                lat = report["stage1"][e]["mean_ms"] if stage == "stage1" else report["stage2"][e]["1"]["mean_ms"] \
                    if "1" in report["stage2"].get(e, {}) else None
                if lat is None or a["max_rel_error"] is None:
                    continue
                err = max(a["max_rel_error"], 1e-17)
                ax.scatter(lat, err, marker=marker, s=60, color=_colour(e), label="%s, %s" % (e, stage))
        ax.legend(fontsize=8, loc="best")
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no originals: no score errors", ha="center", transform=ax.transAxes)
    ax.set_xscale("log")
    ax.set_xlabel("mean ms (stage 1: one reading; stage 2: batch 1)")
    ax.set_ylabel("max relative score error vs originals")
    ax.set_title("score error vs latency", fontsize=10)


def _accuracy_figure(plt, report: dict, path: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    _f1_panel(axes[0], report)
    _error_panel(axes[1], report)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(report: dict, out_dir: str) -> List[str]:
    """latency.png (per engine, linear axes) and accuracy_latency.png in ``out_dir``; returns the paths written."""
    import matplotlib  # noqa: PLC0415 (the bench extra)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, "latency.png"), os.path.join(out_dir, "accuracy_latency.png")]
    _latency_figure(plt, report, paths[0])
    _accuracy_figure(plt, report, paths[1])
    return paths
