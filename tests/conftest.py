"""Shared fixtures: a tiny model trained once per test session, and paths to the shared data."""
import importlib.util
import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("EDGE_DETECTOR_SHARED", REPO.parent / "shared")) / "data"
SKAB = SHARED / "skab"
NAB = SHARED / "nab"


def skab_file(name="valve1/0.csv"):
    path = SKAB / name
    if not path.is_file():
        pytest.skip("SKAB data not found at %s (set EDGE_DETECTOR_SHARED)" % path)
    return path


def load_benchmark(name):
    """A script from benchmarks/ as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location("benchmark_" + name, REPO / "benchmarks" / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(**overrides):
    from edge_detector.export.train import TrainConfig
    params = dict(seed=7, window=20, lstm_units=(8, 4), bottleneck=4, epochs=2, patience=1, batch_size=64,
                  n_estimators=50, stride=3)
    params.update(overrides)
    return TrainConfig(**params)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """A small synthetic data set written to CSV: (dataset, csv path)."""
    from edge_detector.export.data import generate, write_csv
    data = generate(n=3000, seed=3)
    path = tmp_path_factory.mktemp("data") / "data.csv"
    write_csv(data, str(path))
    return data, path


def _train_and_export(tmp_path_factory, synthetic, name, config):
    pytest.importorskip("tensorflow")
    pytest.importorskip("sklearn")
    from edge_detector.export.convert import export_bundle
    from edge_detector.export.data import load_csv
    from edge_detector.export.train import train
    _, path = synthetic
    root = tmp_path_factory.mktemp(name)
    data = load_csv(str(path))
    train(data, str(root / "model"), config, progress=None, source=str(path))
    export_bundle(str(root / "model"), data, str(root / "bundle"), progress=None)
    return root / "model", root / "bundle"


@pytest.fixture(scope="session")
def trained(tmp_path_factory, synthetic):
    """(model dir, bundle dir) of a tiny model trained and exported in this session."""
    return _train_and_export(tmp_path_factory, synthetic, "model", tiny_config())


# Stage 2's other input path: smoothed, centred on the training median, whitened, scored by
# the mean over sensors; stage 1 on raw rolling means; the adaptive threshold (what the "rig" preset uses).
RIG_OPTIONS = dict(smooth=3, centre="train", whiten=True, reduce="mean", tau2_margin=1.5, threshold="adaptive",
                   tau2_quantile=0.99, adaptive_history=100)


@pytest.fixture(scope="session")
def trained_rig(tmp_path_factory, synthetic):
    """(model dir, bundle dir) of a tiny model with the test-rig stage-2 options and the adaptive threshold."""
    from edge_detector.runtime import FeatureSpec
    config = tiny_config(features=FeatureSpec(windows=(5, 15), families=("abs", "diff")), **RIG_OPTIONS)
    return _train_and_export(tmp_path_factory, synthetic, "model-rig", config)


# The command line as a user runs it: a fresh interpreter, this package as installed (no PYTHONPATH).
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def cli_run(*args, stdin=None, timeout=600):
    """``edge-detector ARGS`` in a subprocess (``python -m edge_detector.cli``): the CompletedProcess, text."""
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "edge_detector.cli", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=timeout, env=CLEAN_ENV)


@pytest.fixture(scope="session")
def cli_trained(tmp_path_factory, synthetic):
    """The one model trained and exported through the command line in this session (where the CLI itself is
    under test): (model dir, bundle dir, train's CompletedProcess, export's CompletedProcess)."""
    _, csv_path = synthetic
    root = tmp_path_factory.mktemp("cli-model")
    model, bundle = root / "model", root / "bundle"
    train = cli_run("train", csv_path, "--out", model, "--window", 20, "--epochs", 1)
    export = cli_run("export", model, "--out", bundle)
    return model, bundle, train, export


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def numpy_only_python(tmp_path_factory):
    """The python of a fresh venv holding numpy alone (this session's numpy version), as a gateway has."""
    import subprocess
    import venv
    root = tmp_path_factory.mktemp("numpy-venv") / "v"
    venv.EnvBuilder(with_pip=True).create(str(root))
    python = root / "bin" / "python"
    spec = "numpy==%s" % np.__version__
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", spec],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail("could not install %s in a fresh venv: %s" % (spec, proc.stderr[-2000:]))
    return python


# The interpreter install.sh builds its venv from: the system's, as on a gateway, where one exists (a pyenv
# python under /root would be closed to the unprivileged user that install.sh runs its checks as).
SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"


@pytest.fixture
def open_dir():
    """A fresh folder every user can reach (pytest's own temporary folders are closed to others), for
    install.sh, whose checks run as an unprivileged user."""
    import shutil
    import tempfile
    folder = pathlib.Path(tempfile.mkdtemp(prefix="edge-detector-open-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def stop_bridge(bridge, reader, sub) -> None:
    """End a bridge subprocess the way systemd does (SIGTERM), then its stderr reader and the test's subscriber."""
    import signal  # noqa: PLC0415
    bridge.send_signal(signal.SIGTERM)
    bridge.wait(timeout=30)
    reader.join(timeout=5)
    sub.loop_stop()
    sub.disconnect()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """The port of a real mosquitto on 127.0.0.1 (anonymous, no persistence), for the MQTT bridge's tests."""
    import shutil
    import socket
    import subprocess
    import time
    exe = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.path.exists(p)), None)
    if exe is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it as root): "
                    "the MQTT round trip needs a real broker")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the mqtt extra) is not installed")
    port = free_port()
    conf = tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n" % port)
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("mosquitto exited: %s" % proc.stdout.read())
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("mosquitto did not listen on 127.0.0.1:%d" % port)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def restartable(open_dir):
    """A mosquitto with persistence on (its own folder, open to the 'mosquitto' user that a root-started broker
    becomes), that a test may restart on the same port."""
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the mqtt extra) is not installed")
    burst = load_benchmark("mqtt_burst")
    try:
        burst.mosquitto_exe()
    except SystemExit:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto): these cases need a real broker")
    folder = open_dir / "broker"
    folder.mkdir()

    def make(extra=""):
        broker = burst.Broker(str(folder), extra)
        broker.start()
        made.append(broker)
        return broker
    made = []
    yield make
    for broker in made:
        broker.stop(kill=True)
