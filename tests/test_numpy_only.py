"""The runtime alone, copied next to a bundle, in a fresh virtual environment holding numpy only."""
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
layout, readings, _ = runtime.read_csv("readings.csv", sensors=det.sensors)
scores = [det.score_one(r.values) for r in readings]
imported = {m.split(".")[0] for m in set(sys.modules) - before}
third_party = sorted(imported - set(sys.stdlib_module_names) - {"numpy", "runtime"})
print(json.dumps({"stage1": [s.stage1 for s in scores],
                  "stage2": [s.stage2 for s in scores],
                  "third_party": third_party, "numpy": np.__version__}))
"""


def test_runtime_runs_with_numpy_alone(numpy_only_python, trained, synthetic, tmp_path):
    import edge_detector.runtime as runtime_module
    _, bundle = trained
    data, csv_path = synthetic
    work = tmp_path / "device"
    work.mkdir()
    shutil.copy(runtime_module.__file__, work / "runtime.py")
    shutil.copytree(bundle, work / "bundle")
    shutil.copy(csv_path, work / "readings.csv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}

    # the library form
    out = subprocess.run([str(numpy_only_python), "-I", "-c", PROBE], cwd=work, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["third_party"] == []
    expected = Detector.load(str(bundle)).score(data.values)
    np.testing.assert_allclose(got["stage1"], [r.stage1 for r in expected], rtol=0, atol=1e-12)
    assert [s is None for s in got["stage2"]] == [r.stage2 is None for r in expected]
    np.testing.assert_allclose([s for s in got["stage2"] if s is not None],
                               [r.stage2 for r in expected if r.stage2 is not None], rtol=1e-5)

    # the script form: python runtime.py bundle/ < readings.csv
    with open(work / "readings.csv", "rb") as stdin:
        script = subprocess.run([str(numpy_only_python), "runtime.py", "bundle"], cwd=work, stdin=stdin,
                                capture_output=True, text=True, env=env)
    assert script.returncode == 0, script.stderr
    events = [json.loads(line) for line in script.stdout.splitlines()]
    assert len(events) == len(expected)
    assert [e["is_anomaly"] for e in events] == [r.is_anomaly for r in expected]
    assert json.loads(script.stderr.splitlines()[-1])["stats"]["scored"] == len(expected)


def test_runtime_has_no_heavy_imports_at_module_level():
    import edge_detector.runtime as runtime_module
    code = ("import sys; sys.path.insert(0, %r); import runtime; "
            "heavy = {'tensorflow', 'sklearn', 'onnxruntime', 'ai_edge_litert', 'tflite_runtime', 'click', 'pandas'}; "
            "print(sorted(heavy & set(sys.modules)))" % os.path.dirname(runtime_module.__file__))
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_runtime_keeps_python39_syntax():
    import edge_detector.runtime as runtime_module
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(ruff):
        pytest.skip("ruff is not installed (it comes with the test extra)")
    out = subprocess.run([ruff, "check", "--no-cache", "--target-version", "py39", "--select", "E9,F",
                          runtime_module.__file__], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
