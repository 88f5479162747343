"""``edge-detector report``: one self-contained HTML page of what a bundle detects on a data file, and why.

    data.py     what the report shows, computed once (scores of every mode, thresholds, events, curves' inputs)
    figures.py  one matplotlib figure per view
    page.py     the HTML page, figures embedded as base64 PNGs (opens offline)

Needs the report extra (matplotlib, scikit-learn).
"""
import os
from typing import List, Optional, Sequence

from edge_detector.export.files import atomic_file
from edge_detector.export.progress import Progress, log

INDEX = "index.html"


def write_report(bundle: str, data_path: str, out_dir: str, model_dir: Optional[str] = None,
                 labels_path: Optional[str] = None, test_fraction: Optional[float] = None, engine: str = "numpy",
                 sensors: Optional[Sequence[str]] = None, label_col: Optional[str] = None,
                 timestamp_col: Optional[str] = None, progress: Progress = None) -> List[str]:
    """Write ``out_dir``/index.html and each figure as a PNG beside it; returns the paths written, the page first.

    ``model_dir`` adds LOF and the training history; ``labels_path`` a NAB windows file as the labels
    (else the data's label column, where it has one). InputError or BundleError for a user's mistake.
    """
    from edge_detector.export.report.data import load_report_data  # noqa: PLC0415
    from edge_detector.export.report.figures import render_figures  # noqa: PLC0415
    from edge_detector.export.report.page import render_page  # noqa: PLC0415
    log(progress, "scoring %s with every mode" % data_path)
    report = load_report_data(bundle, data_path, model_dir, labels_path, test_fraction, engine, sensors, label_col,
                              timestamp_col)
    log(progress, "drawing the figures")
    figures = render_figures(report)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, (_, png) in figures.items():
        path = os.path.join(out_dir, name)
        with atomic_file(path, "wb") as fh:
            fh.write(png)
        written.append(path)
    page = os.path.join(out_dir, INDEX)
    with atomic_file(page, "w", encoding="utf-8") as fh:
        fh.write(render_page(report, figures, "edge-detector report: %s" % os.path.basename(data_path)))
    return [page] + written
