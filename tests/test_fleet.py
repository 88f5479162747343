"""The fleet: one model per machine, built in parallel (local processes or Ray), indexed, resumable, reported."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from edge_detector.cli import cli
from edge_detector.export.fleet import (FLEET_JSON, FleetSettings, check_name, find_machines, fleet_report,
                                        format_report, train_fleet)
from edge_detector.runtime import Detector, InputError

# Small, quick models: the fleet's own logic is under test, not the models.
TINY = {"window": 10, "lstm_units": [8, 4], "bottleneck": 4, "epochs": 2, "patience": 1, "n_estimators": 30,
        "stride": 3}


def write_machine(path, seed, n=1000):
    from edge_detector.export.data import generate, write_csv
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(generate(n=n, seed=seed), str(path))


@pytest.fixture(scope="module")
def fleet_data(tmp_path_factory):
    """A folder of three machines: two good ones (one in a subfolder) and one with too few rows to train."""
    root = tmp_path_factory.mktemp("fleet-data")
    write_machine(root / "pump-a.csv", 1)
    write_machine(root / "line2" / "pump-b.csv", 2)
    with open(root / "pump-a.csv") as src, open(root / "short.csv", "w") as dst:
        dst.writelines(src.readlines()[:40])
    return root


@pytest.fixture(scope="module")
def built_fleet(fleet_data, tmp_path_factory):
    """The fleet of fleet_data built once for the module (two workers, version 7): (folder, index, progress lines).
    Tests that change it work on copies."""
    out = tmp_path_factory.mktemp("fleet") / "fleet"
    lines = []
    index = train_fleet(str(fleet_data), str(out), FleetSettings(overrides=TINY), workers=2, version=7,
                        progress=lines.append)
    return out, index, lines


def scores_of(bundle, csv_path):
    from edge_detector.export.data import load_csv
    values = load_csv(str(csv_path)).values
    s = Detector.load(str(bundle)).score(np.asarray(values, dtype=np.float64))
    return np.asarray(s.stage1), np.nan_to_num(np.asarray(s.stage2), nan=-1.0)


def test_machines_come_from_a_folder_or_from_one_csv_split_by_a_column(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "m1.csv").write_text("t,x\n1,2\n")
    (tmp_path / "m2.csv").write_text("t,x\n1,3\n")
    (tmp_path / "notes.txt").write_text("not a machine")
    assert sorted(m.name for m in find_machines(str(tmp_path))) == ["a/m1", "m2"]
    both = tmp_path / "both.csv"
    both.write_text("timestamp,asset,x\n1,p1,0.5\n2,p2,0.7\n3,p1,0.6\n")
    split = {m.name: m.data.decode() for m in find_machines(str(both), asset_col="asset")}
    assert split == {"p1": "timestamp,x\n1,0.5\n3,0.6\n", "p2": "timestamp,x\n2,0.7\n"}
    with pytest.raises(InputError, match="has no column 'pump'"):
        find_machines(str(both), asset_col="pump")
    with pytest.raises(InputError, match="give the asset column, the column that names each machine"):
        find_machines(str(both))
    hostile = tmp_path / "hostile.csv"
    hostile.write_text("asset,x\n../../etc,1\n")
    with pytest.raises(InputError, match=r"machine name '\.\./\.\./etc'"):
        find_machines(str(hostile), asset_col="asset")
    for bad in ("", "a b", "/abs", "x/../y", "a" * 65):
        with pytest.raises(InputError):
            check_name(bad)
    nested = tmp_path / "nested"
    (nested / "x").mkdir(parents=True)
    for name in ("x.csv", "x-1.csv", "x/y.csv"):
        (nested / name).write_text("t,v\n1,2\n")
    with pytest.raises(InputError, match="machine names 'x' and 'x/y'"):       # storing x would replace x/y
        find_machines(str(nested))
    huge = tmp_path / "huge.csv"
    huge.write_text('asset,x\np1,1\np2,"%s"\n' % ("9" * 200_000))                # over the csv module's field limit
    with pytest.raises(InputError, match="huge.csv near line 3 cannot be split by 'asset'"):
        find_machines(str(huge), asset_col="asset")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"asset,x\n\xe9,1\n")
    with pytest.raises(InputError, match="cannot be split by 'asset'"):
        find_machines(str(latin), asset_col="asset")


@pytest.mark.slow
def test_a_fleet_builds_each_machine_records_a_failure_and_resumes(built_fleet, fleet_data, tmp_path):
    import shutil
    out, index, lines = built_fleet
    machines = index["machines"]
    assert set(machines) == {"pump-a", "line2/pump-b", "short"}
    assert machines["short"]["status"] == "failed" and "InputError" in machines["short"]["error"]
    for name in ("pump-a", "line2/pump-b"):
        e = machines[name]
        assert e["status"] == "ok" and e["version"] == 7 and e["bundle_bytes"] > 0
        assert e["train_s"] > 0 and e["export_s"] > 0 and len(e["data_sha256"]) == 64
        assert 0 <= e["metrics"]["stage1_share_above_tau1"] <= 1 and e["metrics"]["tau2"] > 0
        Detector.load(str(out / e["bundle"]))                              # each bundle loads (and verified)
    assert json.loads((out / FLEET_JSON).read_text()) == index
    assert index["last_run"]["built"] == 2 and index["last_run"]["failed"] == 1
    assert any("FAILED: InputError" in line for line in lines) and any("done 2, failed 1, left 0" in line
                                                                      for line in lines)
    # the same machine's model is the same model whichever worker built it, and a re-run skips what is current
    before = scores_of(out / machines["pump-a"]["bundle"], fleet_data / "pump-a.csv")
    data, out = tmp_path / "data", tmp_path / "fleet"                     # copies: the module's fleet stays as built
    shutil.copytree(fleet_data, data)
    shutil.copytree(built_fleet[0], out)
    write_machine(data / "line2" / "pump-b.csv", 3)                        # pump-b's data changes
    again = train_fleet(str(data), str(out), FleetSettings(overrides=TINY), workers=1, version=8,
                        progress=None)
    assert (again["last_run"]["built"], again["last_run"]["failed"], again["last_run"]["skipped"]) == (1, 1, 1)
    assert again["machines"]["pump-a"]["version"] == 7 and again["machines"]["line2/pump-b"]["version"] == 8
    after = scores_of(out / again["machines"]["pump-a"]["bundle"], data / "pump-a.csv")
    np.testing.assert_array_equal(before[0], after[0])
    report = fleet_report(str(out))
    assert report["summary"]["ok"] == 2 and report["summary"]["failed"] == 1
    table = format_report(report)
    assert "short" in table and "failed" in table and "InputError" in table
    assert "| machine | status |" in format_report(report, markdown=True)


@pytest.mark.slow
def test_fleet_through_a_local_ray_gives_the_same_bundles_scores(built_fleet, fleet_data, tmp_path):
    ray = pytest.importorskip("ray")
    settings = FleetSettings(overrides=TINY)
    local_dir, local, _ = built_fleet                                      # built by local worker processes
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = train_fleet(str(fleet_data), str(tmp_path / "ray"), settings, backend="ray", version=5,
                             progress=None, exclude=("short",))
    finally:
        ray.shutdown()
    built_locally = {name for name, e in local["machines"].items() if e["status"] == "ok"}
    assert set(remote["machines"]) == built_locally == {"pump-a", "line2/pump-b"}
    for name, e in remote["machines"].items():
        assert e["status"] == "ok", e.get("error")
        assert e["data_sha256"] == local["machines"][name]["data_sha256"]
        csv_path = fleet_data / (name + ".csv")
        a = scores_of(local_dir / local["machines"][name]["bundle"], csv_path)
        b = scores_of(tmp_path / "ray" / e["bundle"], csv_path)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.slow
def test_fleet_commands(fleet_data, tmp_path):
    from tests.test_signing import keygen
    from edge_detector.runtime.trust import load_trust
    owner, stranger = keygen(tmp_path, "owner"), keygen(tmp_path, "stranger")
    out = tmp_path / "fleet"
    args = ["fleet", "train", str(fleet_data), "--out", str(out), "--window", "10", "--epochs", "1",
            "--exclude", "line2/*", "--workers", "1", "--sign-key", str(owner)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1                                             # 'short' failed
    assert "1 machines failed" in result.output and "fleet report" in result.output
    ok = CliRunner().invoke(cli, args + ["--exclude", "short"])
    assert ok.exit_code == 0, ok.output
    assert "0 built, 0 failed, 1 unchanged" in ok.output                    # pump-a is current
    # signed here, after the worker's build: the gateway's --trusted-keys accepts it, a stranger's key does not
    bundle = out / json.loads((out / FLEET_JSON).read_text())["machines"]["pump-a"]["bundle"]
    Detector.load(str(bundle), trust=load_trust(str(owner) + ".pub", str(tmp_path / "state")))
    from edge_detector.runtime import BundleError
    with pytest.raises(BundleError):
        Detector.load(str(bundle), trust=load_trust(str(stranger) + ".pub", str(tmp_path / "state2")))
    report = CliRunner().invoke(cli, ["fleet", "report", str(out), "--json", str(tmp_path / "r.json"),
                                      "--markdown", str(tmp_path / "r.md")])
    assert report.exit_code == 0 and "pump-a" in report.output
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["machines"] == 2
    assert (tmp_path / "r.md").read_text().startswith("# Fleet")
    missing = CliRunner().invoke(cli, ["fleet", "report", str(tmp_path)])
    assert missing.exit_code == 1 and "is not a fleet" in missing.output
    assert not os.path.exists(tmp_path / FLEET_JSON)


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["trained", "trained_rig"])
def test_a_template_filled_with_a_models_weights_runs_like_its_own_conversion(fixture, request):
    """Converting once per architecture and writing each model's weights in gives the converter's numbers."""
    from edge_detector.export import tflite_convert
    from edge_detector.export.tf_setup import import_tf
    from edge_detector.export.train import TrainedModels
    from edge_detector.runtime.engines import tflite_interpreter_class
    model_dir, _ = request.getfixturevalue(fixture)
    models = TrainedModels(str(model_dir))
    tf, tf_keras, _ = import_tf()
    single = tflite_convert.batch_one_model(tf_keras, models)
    single.set_weights(models.keras.get_weights())
    full = tflite_convert.tflite_bytes(tf, single)
    filled = tflite_convert.templated_tflite(tf, tf_keras, models)
    assert tflite_convert._TEMPLATES and all(t is not None for t in tflite_convert._TEMPLATES.values())
    windows = np.random.default_rng(0).normal(size=(4, models.meta["window"], len(models.meta["sensors"])))

    def outputs(blob):
        interpreter = tflite_interpreter_class()(model_content=blob)
        interpreter.allocate_tensors()
        i, o = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
        out = []
        for w in windows.astype(np.float32):
            interpreter.reset_all_variables()
            interpreter.set_tensor(i, w[None])
            interpreter.invoke()
            out.append(interpreter.get_tensor(o).copy())
        return np.concatenate(out)
    np.testing.assert_array_equal(outputs(full), outputs(filled))


def test_a_template_refuses_a_buffer_the_converter_computed():
    from edge_detector.export.tflite_template import OFFSET, TemplateError, make_template
    pytest.importorskip("tensorflow")
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    def model_with(values):
        model = schema.ModelT()
        buf = schema.BufferT()
        buf.data = np.asarray(values, dtype=np.float32).view(np.uint8).tolist()
        model.buffers = [schema.BufferT(), buf]
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())
    make_template(model_with([OFFSET + 1, OFFSET]), [(2,)])                       # a gather: fine
    with pytest.raises(TemplateError, match="coded and 1 other"):
        make_template(model_with([OFFSET + 1, 2 * OFFSET + 1]), [(2,)])           # a sum of two weights
    with pytest.raises(TemplateError, match="1 of 3 weights appear in no buffer"):
        make_template(model_with([OFFSET + 1, OFFSET]), [(3,)])
