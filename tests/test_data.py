"""The synthetic generator and the one CSV loader."""
import numpy as np
import pytest

from edge_detector.export.data import ANOMALY_KINDS, generate, load_csv, write_csv
from edge_detector.runtime import InputError
from tests.conftest import NAB, skab_file


def test_generate_is_deterministic_and_seeded(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write_csv(generate(seed=1, n=2000), str(a))
    write_csv(generate(seed=1, n=2000), str(b))
    assert a.read_bytes() == b.read_bytes()
    assert not np.array_equal(generate(seed=2, n=2000).values, generate(seed=1, n=2000).values)


def test_generate_matches_the_seed_layout():
    d = generate()
    assert d.values.shape == (10_000, 4)
    assert d.sensors == ["sensor_1", "sensor_2", "sensor_3", "sensor_4"]
    kinds = np.array(d.kinds)
    assert {k: int((kinds == k).sum()) for k in ANOMALY_KINDS} == {
        "spike": 40, "drop": 40, "contextual": 150, "collective": 200}
    assert 0.040 <= d.labels.mean() <= 0.045
    assert not d.labels[:100].any() and not d.labels[-100:].any()
    assert np.array_equal(d.labels, kinds != "")


def test_generated_csv_round_trips(tmp_path):
    d = generate(n=1500, seed=4)
    path = tmp_path / "d.csv"
    write_csv(d, str(path))
    back = load_csv(str(path))
    assert back.sensors == d.sensors
    np.testing.assert_allclose(back.values, d.values, atol=5e-7)
    assert np.array_equal(back.labels, d.labels) and back.kinds == d.kinds
    assert back.timestamps[0] == "2024-01-01 00:00:00"


def test_loads_skab_semicolons_crlf_spaces_and_float_labels():
    d = load_csv(str(skab_file("valve1/0.csv")))
    assert "Volume Flow RateRMS" in d.sensors and len(d.sensors) == 8
    assert "changepoint" not in d.sensors and "datetime" not in d.sensors
    assert d.values.shape == (1147, 8) and d.labels.sum() == 401


def test_loads_every_shared_csv():
    from tests.conftest import SKAB
    files = sorted(SKAB.rglob("*.csv")) + sorted(NAB.rglob("real*/*.csv"))
    if not files:
        pytest.skip("shared data not found")
    for path in files:
        d = load_csv(str(path))
        assert d.values.shape[0] > 100 and np.isfinite(d.values).all(), path


def test_crlf_lf_semicolon_and_no_timestamp(tmp_path):
    for name, text in {
        "lf.csv": "a,b,label\n1,2,0\n3,4,1\n",
        "crlf.csv": "a;b;label\r\n1;2;0\r\n3;4;1\r\n",
        "nofinal.csv": "a,b,label\r\n1,2,0\r\n3,4,1",
    }.items():
        path = tmp_path / name
        path.write_bytes(text.encode())
        d = load_csv(str(path))
        assert d.sensors == ["a", "b"] and d.timestamps is None
        np.testing.assert_array_equal(d.values, [[1, 2], [3, 4]])
        np.testing.assert_array_equal(d.labels, [False, True])


def test_named_sensors_and_label_column(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("when,temp,flow,fault,noise\n2024-01-01,1,2,0,9\n2024-01-02,3,4,1,9\n")
    d = load_csv(str(path), sensors=["flow", "temp"], label_col="fault", timestamp_col="when")
    assert d.sensors == ["flow", "temp"]
    np.testing.assert_array_equal(d.values, [[2, 1], [4, 3]])
    np.testing.assert_array_equal(d.labels, [False, True])


def test_loader_errors_name_the_problem(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_csv(str(tmp_path / "missing.csv"))
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="'c'"):
        load_csv(str(path), sensors=["a", "c"])
    with pytest.raises(InputError, match="'fault'"):
        load_csv(str(path), label_col="fault")
    path.write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(InputError, match="line 3.*'oops' is not a number"):
        load_csv(str(path))


def test_training_refuses_a_split_whose_calibration_part_is_anomalous():
    pytest.importorskip("sklearn")
    from edge_detector.export.train import TrainConfig, train
    d = generate(n=2000, seed=4)
    labels = d.labels.copy()
    labels[1300:1700] = True                        # the calibration part (rows 1360-1599) is all anomalous
    with pytest.raises(ValueError, match="calibration part .* holds 0 normal readings"):
        train(d._replace(labels=labels), "unused", TrainConfig(), progress=None)


def test_the_notebook_profile_is_the_seed_notebooks_experiment(tmp_path):
    from click.testing import CliRunner

    from edge_detector.cli import cli
    from edge_detector.export.data import generate_notebook
    path = tmp_path / "notebook.csv"
    result = CliRunner().invoke(cli, ["generate", "--profile", "notebook", "--out", str(path)])
    assert result.exit_code == 0 and "5000 readings, 3 sensors" in result.output
    d = load_csv(str(path))
    assert d.values.shape == (5000, 3) and int(d.labels.sum()) == 50
    # the same draws with no shift: the anomalies are the normal readings moved by the same +5 or -5 on all three
    moved = d.values - generate_notebook(seed=42, shift=0.0).values
    np.testing.assert_allclose(np.abs(moved[d.labels]), 5.0, atol=2e-6)
    np.testing.assert_allclose(moved[d.labels], np.repeat(moved[d.labels][:, :1], 3, axis=1), atol=4e-6)
    np.testing.assert_allclose(moved[~d.labels], 0.0, atol=2e-6)
    assert {round(float(v)) for v in moved[d.labels][:, 0]} == {-5, 5}
