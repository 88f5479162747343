"""The shipped runtime folder alone, next to a bundle, in a fresh virtual environment holding numpy only."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edge_detector.runtime import Detector

pytestmark = pytest.mark.slow

PROBE = r"""
import json, sys
before = set(sys.modules)            # what the interpreter itself loaded (site, .pth hooks)
sys.path.insert(0, ".")
import numpy as np
import runtime
det = runtime.Detector.load("bundle")
with open("readings.csv", newline="") as fh:
    readings = [r for r in runtime.read_lines(fh, det.sensors) if isinstance(r, runtime.Reading)]
scores = [det.score_one(r.values) for r in readings]
imported = {m.split(".")[0] for m in set(sys.modules) - before}
third_party = sorted(imported - set(sys.stdlib_module_names) - {"numpy", "runtime"})
print(json.dumps({"stage1": [s.stage1 for s in scores],
                  "stage2": [s.stage2 for s in scores],
                  "third_party": third_party, "numpy": np.__version__}))
"""


def ship_runtime(folder):
    """Write the runtime folder exactly as ``edge-detector package`` ships it into ``folder``."""
    from edge_detector.export.package import runtime_files
    for name, data in runtime_files().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def device_folder(tmp_path, bundle, csv_path):
    """(a gateway's folder: runtime/, bundle/, readings.csv; an environment without this checkout's paths)."""
    work = tmp_path / "device"
    work.mkdir()
    ship_runtime(work)
    shutil.copytree(bundle, work / "bundle")
    shutil.copy(csv_path, work / "readings.csv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "QEMU_LD_PREFIX")}
    return work, env


def test_runtime_runs_with_numpy_alone(numpy_only_python, trained, synthetic, tmp_path):
    _, bundle = trained
    data, csv_path = synthetic
    work, env = device_folder(tmp_path, bundle, csv_path)

    # the library form
    out = subprocess.run([str(numpy_only_python), "-I", "-c", PROBE], cwd=work, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["third_party"] == []
    expected = Detector.load(str(bundle)).score(data.values)
    np.testing.assert_allclose(got["stage1"], expected.stage1, rtol=0, atol=1e-12)
    assert [s is None for s in got["stage2"]] == (~expected.stage2_ran).tolist()
    np.testing.assert_allclose([s for s in got["stage2"] if s is not None],
                               expected.stage2[expected.stage2_ran], rtol=1e-5)

    # the script form: python3 -m runtime bundle/ < readings.csv
    with open(work / "readings.csv", "rb") as stdin:
        script = subprocess.run([str(numpy_only_python), "-m", "runtime", "bundle"], cwd=work, stdin=stdin,
                                capture_output=True, text=True, env=env)
    assert script.returncode == 0, script.stderr
    events = [json.loads(line) for line in script.stdout.splitlines()]
    assert len(events) == len(expected.stage1)
    assert [e["is_anomaly"] for e in events] == expected.is_anomaly.tolist()
    assert json.loads(script.stderr.splitlines()[-1])["stats"]["scored"] == len(expected.stage1)


def test_runtime_has_no_heavy_imports_at_module_level(tmp_path):
    ship_runtime(tmp_path)
    code = ("import sys; sys.path.insert(0, %r); import runtime, runtime.__main__; "
            "heavy = {'tensorflow', 'sklearn', 'onnxruntime', 'ai_edge_litert', 'tflite_runtime', 'click', 'pandas'}; "
            "print(sorted(heavy & set(sys.modules)))" % str(tmp_path))
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_runtime_keeps_python39_syntax():
    import edge_detector.runtime as runtime_package
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(ruff):
        pytest.skip("ruff is not installed (it comes with the test extra)")
    out = subprocess.run([ruff, "check", "--no-cache", "--target-version", "py39", "--select", "E9,F",
                          os.path.dirname(runtime_package.__file__)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_runtime_imports_only_numpy_the_standard_library_and_itself():
    """Every import statement in the runtime package: relative, NumPy, or the standard library."""
    import ast

    import edge_detector.runtime as runtime_package
    folder = os.path.dirname(runtime_package.__file__)
    lazy = {"ai_edge_litert", "tflite_runtime", "onnxruntime", "cryptography"}   # optional, imported inside functions
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(folder, name)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue                                                  # relative: the package itself
            roots = [a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else \
                [node.module.split(".")[0]] if isinstance(node, ast.ImportFrom) else []
            for root in roots:
                allowed = root == "numpy" or root in sys.stdlib_module_names or root in lazy
                assert allowed, "%s imports %s" % (name, root)
                if root in lazy:
                    assert node.col_offset > 0, "%s imports the optional %s at module level" % (name, root)


def test_no_runtime_module_is_over_400_lines():
    import edge_detector.runtime as runtime_package
    folder = os.path.dirname(runtime_package.__file__)
    for name in os.listdir(folder):
        if name.endswith(".py"):
            with open(os.path.join(folder, name)) as fh:
                assert sum(1 for _ in fh) <= 400, name


def test_device_bench_runs_with_numpy_alone(numpy_only_python, trained, synthetic, tmp_path):
    """python3 -m runtime bench: every figure the gateway can measure, with NumPy alone (no originals)."""
    _, bundle = trained
    _, csv_path = synthetic
    work, env = device_folder(tmp_path, bundle, csv_path)
    proc = subprocess.run([str(numpy_only_python), "-m", "runtime", "bench", "bundle", "readings.csv", "--readings",
                           "200", "--streams", "1,4,16", "--ticks", "20", "--json", "device.json"], cwd=work,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((work / "device.json").read_text())
    assert list(report["engines"]) == ["numpy"]                 # LiteRT and onnxruntime are not installed here
    assert report["emulated"] is False and "emulated" not in proc.stdout
    numpy_engine = report["engines"]["numpy"]
    assert numpy_engine["cold_start"]["cold_start_s"] > 0 and numpy_engine["cold_start"]["rss_bytes"] > 0
    for mode in ("hybrid", "lstm"):
        assert numpy_engine[mode]["readings"] == 200 and numpy_engine[mode]["p50_ms"] <= numpy_engine[mode]["p99_ms"]
    assert numpy_engine["lstm"]["stage2_share"] == 1.0 and 0 < numpy_engine["hybrid"]["stage2_share"] < 1
    assert sorted(numpy_engine["streams"]["streams"], key=int) == ["1", "4", "16"]
    assert report["peak_rss_bytes"] > 0
    assert "| numpy | hybrid | 16 |" in proc.stdout

    # a user's mistake is a sentence, not a traceback
    bad = subprocess.run([str(numpy_only_python), "-m", "runtime", "bench", "bundle", "missing.csv"], cwd=work,
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "missing.csv" in bad.stderr
