"""Every command in the README's code blocks is run here verbatim, in a folder laid out as the README
assumes (data.csv, readings.csv, model/, bundle/, runtime/ beside them), or named with the test that
covers it instead. A command added to the README that this file does not know fails the test."""
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from tests.test_numpy_only import ship_runtime

pytestmark = pytest.mark.slow
README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

# commands that are not run here, and where they are run instead
ELSEWHERE = {
    "python3 -m venv": "the README's two commands: .ci/run runs the second, test_first_hour the first's demo",
    "edge-detector train": "minutes of training: test_first_hour and test_pipeline train through the same CLI",
    "edge-detector export": "needs a model trained here: test_first_hour, test_signing and test_variants export",
    "edge-detector demo": "the README's first command (CI and the session notes run it in a fresh clone)",
    "edge-detector mqtt": "needs a broker: test_mqtt runs the bridge against mosquitto",
    "sudo ": "needs root and systemd: test_deploy runs install.sh in a scratch prefix",
    "ssh-keygen": "makes a key: test_signing does",
    "edge-detector evaluate skab-bundle/": "needs the SKAB bundle trained above: test_skab",
    "python3 -m runtime bench": "minutes of timing: test_numpy_only and test_arm64 run it with fewer readings",
    "edge-detector bench": "minutes of timing: test_bench runs it (and --compare) with fewer runs",
    "edge-detector fleet": "trains a model per machine: test_fleet runs fleet train (local and Ray) and fleet report",
    "edge-detector report": "scores every mode and draws: test_report runs it (through the CLI) on this session's model",
}
# commands holding these run with a key made by the test that covers them
NEEDS_KEYS = {"--sign-key": "test_signing signs with a key it makes",
              "--trusted-keys": "test_signing verifies with a key it makes"}


def readme_commands(text: str):
    """The shell commands in the README's ```bash blocks, continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            command = line.split("  #")[0].split(" # ")[0].strip()
            if command and not command.startswith("#"):
                out.append(command)
    return out


def where_else(command: str):
    return (next((why for prefix, why in ELSEWHERE.items() if command.startswith(prefix)), None)
            or next((why for option, why in NEEDS_KEYS.items() if option in command), None))


@pytest.fixture()
def folder(trained, synthetic, tmp_path):
    """The README's working folder: data.csv, readings.csv (the last 2,000 readings), pumps.csv (two machines
    interleaved, told apart by an asset column), model/, bundle/, runtime/."""
    model_dir, bundle = trained
    _, csv_path = synthetic
    shutil.copytree(model_dir, tmp_path / "model")
    shutil.copytree(bundle, tmp_path / "bundle")
    lines = csv_path.read_text().splitlines(keepends=True)
    (tmp_path / "data.csv").write_text("".join(lines))
    (tmp_path / "readings.csv").write_text(lines[0] + "".join(lines[-2000:]))
    pumps = ["asset," + lines[0]]
    for a, b in zip(lines[1:1001], lines[-1000:]):
        pumps += ["pump-1," + a, "pump-2," + b]
    (tmp_path / "pumps.csv").write_text("".join(pumps))
    ship_runtime(tmp_path)
    return tmp_path


def test_every_readme_command_runs_or_names_the_test_that_runs_it(folder):
    commands = readme_commands(README.read_text())
    assert len(commands) > 10
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    env.pop("PYTHONPATH", None)
    ran = []
    for command in commands:
        if where_else(command):
            continue
        assert command.startswith(("edge-detector ", "python3 -m runtime ", "python ")), (
            "a README command that no test runs or names: %r (run it here, or add it to ELSEWHERE)" % command)
        proc = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, "%s\n%s" % (command, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, command
        ran.append(command)
    assert any(c.startswith("edge-detector detect") for c in ran) and any(c.startswith("python3 -m runtime") for c in ran)


def test_the_readme_python_examples_run_and_print_what_they_say(folder):
    """The README's Python blocks that use the shipped runtime, run beside runtime/ and bundle/; the first one's
    output is the comment below it."""
    blocks = re.findall(r"```python\n(from runtime import .*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    for block in blocks:
        code = "\n".join(line for line in block.splitlines() if not line.startswith("#"))
        last = [line for line in code.splitlines() if "=" in line][-1].split("=")[0].strip()
        proc = subprocess.run([sys.executable, "-c", code + "\nprint(%s)" % last], cwd=folder, capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr
        shown = [line[2:] for line in block.splitlines() if line.startswith("# Score(")]
        if shown:
            # the same fields; the stage-1 value is the bundle's own (the README's comes from the demo's bundle)
            same = lambda text: re.sub(r"stage1=[0-9.e-]+", "stage1=?", text)  # noqa: E731
            assert same(proc.stdout.strip()) == same(shown[0])


def test_the_readme_training_example_trains_exports_and_evaluates(folder):
    """The README's Python block that trains from Python, run in the README's folder: it writes a model and a
    bundle, and its comparison table has every mode."""
    blocks = re.findall(r"```python\n(from edge_detector\.export.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1
    proc = subprocess.run([sys.executable, "-c", blocks[0] + "\nprint(table)"], cwd=folder, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (folder / "py-model" / "model.json").is_file() and (folder / "py-bundle" / "manifest.json").is_file()
    for mode in ("IF-only", "LOF", "LSTM-only", "hybrid"):
        assert mode in proc.stdout
