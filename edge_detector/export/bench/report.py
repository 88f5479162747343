"""A bench report as text tables (``format_table``) and as Markdown (``write_markdown``)."""
import os
from typing import List, Tuple

from .timing import STAT_KEYS

Table = Tuple[str, List[str], List[List[str]]]      # (title, header, rows of cells)

STATS_HEAD = ["first ms", "warm-up", "runs", "mean", "std", "min", "p50", "p90", "p95", "p99", "max", "per s"]


def _f(v, fmt="%.3f", none="-") -> str:
    return none if v is None else fmt % v


def _mb(v) -> str:
    return "-" if v is None else "%.1f" % (v / 2 ** 20)


def _stat_row(label, m, extra=()) -> List[str]:
    return [*label, _f(m.get("first_inference_ms", m.get("first_call_ms")), "%.3f"), str(m.get("warmup_runs", "-")),
            str(m.get("runs", m.get("readings"))), *[_f(m[k], "%.3f") for k in STAT_KEYS],
            _f(m.get("throughput_per_s"), "%.0f"), *extra]


def _cold_start_table(report: dict) -> Table:
    rows = []
    for e, info in report["engines"].items():
        cs = info.get("cold_start") or {}
        rows.append([e, "%s + %s" % (info["stage1"], info["stage2"]), "%.1f" % (info["model_bytes"] / 1024),
                     _f(cs.get("import_s"), "%.3f"), _f(cs.get("load_s"), "%.3f"), _f(cs.get("init_s"), "%.3f"),
                     _f(cs.get("first_score_s") and cs["first_score_s"] * 1e3, "%.1f"),
                     _f(cs.get("cold_start_s"), "%.3f"), _mb(cs.get("rss_init_bytes")), _mb(cs.get("rss_cold_bytes")),
                     str(info["threads"])])
    return ("Init and cold start (fresh subprocess per engine; Python alone: %s MB peak RSS)"
            % _mb((report.get("python_baseline") or {}).get("rss_start_bytes")),
            ["engine", "stages", "model KiB", "import s", "load s", "init s", "1st score ms", "cold s",
             "RSS init MB", "RSS cold MB", "threads"], rows)


def _stage1_table(report: dict) -> Table:
    rows = [_stat_row([e, report["engines"][e]["stage1"]], m) for e, m in report["stage1"].items()]
    return ("Stage 1: one reading (ms)", ["engine", "impl", *STATS_HEAD], rows)


def _stage2_table(report: dict) -> Table:
    rows = []
    for e, per in report["stage2"].items():
        for b, m in per.items():
            rows.append(_stat_row([e, report["engines"][e]["stage2"], b], m, [_f(m.get("per_window_ms"), "%.4f")]))
    return ("Stage 2: a batch of windows (ms per batch; TFLite loops batch-1 invokes)",
            ["engine", "impl", "batch", *STATS_HEAD, "ms/window"], rows)


def _stream_table(report: dict) -> Table:
    rows = []
    for e, per in report["stream"].items():
        for mode in ("hybrid", "lstm"):
            m = dict(per[mode], warmup_runs="-")
            rows.append(_stat_row([e, mode], m, ["%.1f%%" % (100 * m["stage2_share"]),
                                                 _f(per["hybrid_over_lstm"], "%.3f") if mode == "hybrid" else ""]))
    return ("Whole detector per reading on the test stream (Detector.score_one, ms)",
            ["engine", "mode", *STATS_HEAD, "stage 2", "hyb/lstm"], rows)


def _accuracy_table(acc: dict) -> Table:
    rows = []
    for stage in ("stage1", "stage2"):
        for e, a in acc[stage].items():
            rows.append([stage, e, str(a["n"]), _f(a["max_abs_error"], "%.2e"), _f(a["mean_abs_error"], "%.2e"),
                         _f(a["max_rel_error"], "%.2e"), _f(a["mean_rel_error"], "%.2e"),
                         _f(a["agreement"], "%.4f"), "", "", ""])
    for mode in ("hybrid", "lstm"):
        for e, a in acc[mode].items():
            rows.append([mode, e, str(a["n"]), "", "", "", "", _f(a["agreement"], "%.4f"), _f(a["f1"], "%.4f"),
                         _f(a["f1_original"], "%.4f"), _f(a["f1_diff"], "%+.4f")])
    return ("Accuracy against the originals (scikit-learn, Keras) on the test part",
            ["what", "engine", "n", "max abs", "mean abs", "max rel", "mean rel", "agree", "F1", "F1 orig",
             "F1 diff"], rows)


def _variants_table(v: dict) -> Table:
    rows = []
    for name, r in v["rows"].items():
        m = r["stage2_b1"]
        rows.append([name, "%.1f" % (r["bytes"] / 1024), "%.4g" % r["tau2"], r["threshold"], _f(m["mean_ms"], "%.3f"),
                     _f(m["p95_ms"], "%.3f"), "%.4f" % r["agreement"], _f(r["f1"], "%.4f"), _f(r["f1_diff"], "%+.4f")])
    for name, why in v["left_out"].items():
        rows.append([name, "-", "-", "-", "-", "-", "-", "-", "left out: " + why])
    return ("Quantized stage-2 variants (TFLite engine; agreement and F1 diff: hybrid alarms on the test part "
            "against the %s)" % {"original": "originals", "tflite": "float32 TFLite model"}[v["reference"]],
            ["variant", "KiB", "tau2", "threshold", "b1 mean ms", "b1 p95 ms", "agree", "F1", "F1 diff"], rows)


def _goals_table(report: dict) -> Table:
    rows = []
    for name, g in report["goals"].items():
        rows.append([name, _f(g["value"], "%.4g"), "%s %g" % (g["op"], g["goal"]),
                     g.get("retired") or {True: "met", False: "MISSED", None: "n/a"}[g["met"]]])
    return ("Speed goals (NumPy engine, ratios from this run)", ["goal", "ratio", "target", "result"], rows)


def _tables(report: dict) -> List[Table]:
    """(title, header, rows) of every table in the report; the accuracy table only where there is one."""
    out = [_cold_start_table(report), _stage1_table(report), _stage2_table(report), _stream_table(report)]
    if report.get("accuracy"):
        out.append(_accuracy_table(report["accuracy"]))
    if report.get("variants"):
        out.append(_variants_table(report["variants"]))
    out.append(_goals_table(report))
    if report.get("device_comparison"):
        from .compare import comparison_table  # noqa: PLC0415 (only with --compare)
        out.append(comparison_table(report["device_comparison"]))
    return out


LONG_TEXT = 16       # a last-column cell longer than this (a reason, not a figure) runs past the table's edge


def _widths(head: List[str], rows: List[List[str]]) -> List[int]:
    """Each column's width: its widest cell, but a long text in the last column does not widen it."""
    last = len(head) - 1
    return [max([len(h)] + [len(r[i]) for r in rows if i < last or len(r[i]) <= LONG_TEXT]) for i, h in enumerate(head)]


def _cell(text: str, i: int, width: int) -> str:
    """Names (the first two columns) and texts wider than their column left-aligned, figures right-aligned."""
    return text.ljust(width) if i <= 1 or len(text) > width else text.rjust(width)


def format_table(report: dict) -> str:
    """The report as fixed-width text tables: a heading line, every table, then the notes."""
    parts = ["edge-detector bench: %s on %s (%d test readings from row %d), threads=%s, %s"
             % (report["bundle"], os.path.basename(report["data"]), report["data_info"]["test_rows"],
                report["data_info"]["test_start"], report["settings"]["threads"], report["machine"]["cpu"])]
    for title, head, rows in _tables(report):
        widths = _widths(head, rows)
        line = lambda cells, widths=widths: "  ".join(_cell(c, i, w)  # noqa: E731
                                                      for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        parts += ["", title, line(head), "-" * len(line(head))] + [line(r) for r in rows]
    for note in report.get("notes") or []:
        parts.append("note: %s" % note)
    return "\n".join(parts)


def write_markdown(report: dict, path: str) -> None:
    """The report as Markdown at ``path``: the machine, the date, the command, then every table and the notes."""
    m = report["machine"]
    lines = ["# edge-detector bench", "",
             "- date: %s" % report["created"],
             "- machine: %s, %s CPUs (%s usable), %s, Python %s" % (m["cpu"], m["cpu_count"], m.get("affinity_cpus", "?"),
                                                                   m["platform"], m["python"]),
             "- versions: %s" % ", ".join("%s %s" % kv for kv in sorted(report["versions"].items())),
             "- bundle: `%s`; data: `%s`; model folder: `%s`" % (report["bundle"], report["data"], report["model_dir"]),
             "- settings: %s" % ", ".join("%s=%s" % kv for kv in report["settings"].items())]
    if report.get("command"):
        lines.append("- command: `%s`" % report["command"])
    for title, head, rows in _tables(report):
        lines += ["", "## %s" % title, "", "| " + " | ".join(head) + " |",
                  "|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|"]
        lines += ["| " + " | ".join(c if c else " " for c in r) + " |" for r in rows]
    if report.get("notes"):
        lines += ["", "## Notes", ""] + ["- %s" % n for n in report["notes"]]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
