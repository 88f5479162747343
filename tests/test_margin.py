"""The label-free margin calibration (edge_detector.export.margin) that sets the rig preset's tau2_margin."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from edge_detector.cli import cli
from edge_detector.export.data import Dataset
from edge_detector.export.margin import calibrate_margin, margin_from_csv, normal_pieces
from edge_detector.runtime import Detector, InputError


def test_a_recording_with_anomalies_or_too_short_is_refused_by_name(tmp_path):
    from tests.conftest import tiny_config
    data = Dataset(np.zeros((100, 2)), ["a", "b"], None, None, None)
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("a,b,is_anomaly\n" + "1,2,0\n" * 150 + "1,9,1\n" * 50)
    with pytest.raises(InputError, match="has 50 readings labelled anomalous: the margin is calibrated on normal"):
        margin_from_csv(str(labelled), data, tiny_config())
    short = tmp_path / "short.csv"
    short.write_text("a,b\n" + "1,2\n" * 99)
    with pytest.raises(InputError, match="short.csv has 99 readings: the margin needs at least one piece as long as "
                                         r"the training data \(100 readings\)"):
        margin_from_csv(str(short), data, tiny_config())
    with pytest.raises(InputError, match="training fraction 1 of a 50-reading piece leaves no reading"):
        margin_from_csv(str(short), data._replace(values=np.zeros((50, 2))), tiny_config(train_fraction=1.0))


def test_the_cli_takes_a_margin_or_a_recording_to_calibrate_it_not_both(tmp_path):
    normal = tmp_path / "normal.csv"
    normal.write_text("a,b\n1,2\n")
    result = CliRunner().invoke(cli, ["train", str(normal), "--out", str(tmp_path / "m"), "--tau2-margin", "1.5",
                                      "--margin-from", str(normal)])
    assert result.exit_code == 2
    assert "--margin-from calibrates the margin that --tau2-margin and --target-far set" in result.output


@pytest.mark.slow
def test_a_pieces_margin_keeps_its_alarms_to_the_share_on_its_own_trained_bundle(tmp_path, synthetic):
    """The whole chain on one real piece (the median rule over pieces is test_skab's, with known scores): trained
    at margin 1 on its first 400 rows, its margin lets at most 10% of the rest alarm, and 0.05 less lets more."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("sklearn")
    from tests.conftest import tiny_config
    data, _ = synthetic
    pieces = normal_pieces(data._replace(values=data.values[:1000]), 700, "normal.csv")
    report = calibrate_margin(pieces, tiny_config(threshold="static", tau2_margin=2.0), 400, str(tmp_path))
    assert list(report["per_piece"]) == ["normal.csv[0:700]"] and report["rows"] == 300
    m = report["per_piece"]["normal.csv[0:700]"]["tau2_margin"]
    assert report["tau2_margin"] == round(max(1.0, m), 3)
    model = json.loads((tmp_path / "cal001" / "model" / "model.json").read_text())
    assert model["config"]["tau2_margin"] == 1.0                  # calibration runs at margin 1, whatever was asked
    detector = Detector.load(str(tmp_path / "cal001" / "bundle"))
    scores = detector.score(pieces[0][1].values).rows(slice(400, None))
    units = np.where(scores.stage2_ran, scores.stage2, 0.0) / detector.tau2
    assert np.sum(units > m + 1e-3) <= 0.10 * len(units) < np.sum(units > m - 0.05)
