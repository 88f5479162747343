"""The ``edge-detector`` command line: one click group of thin commands.

Each command parses options, calls one library function, and turns library errors into
``click.ClickException`` (a clear message, exit code 1, no traceback).
"""
import functools
import json
import os
import sys
import time

import click

from edge_detector import __version__
from edge_detector.export.train import PRESETS   # numpy and the runtime only; TensorFlow loads inside train()
from edge_detector.runtime import (
    ENGINES, MISSING_POLICIES, MODES, OUTPUT_FORMATS, BundleError, Detector, InputError, StreamPolicy, run_stream,
)


def library_errors(fn):
    """Report library errors as one clear line instead of a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (BundleError, InputError, FileNotFoundError, ValueError, RuntimeError) as exc:
            raise click.ClickException(str(exc)) from None
    return wrapper


def _require_train_extra():
    try:
        import sklearn  # noqa: F401, PLC0415
        import tensorflow  # noqa: F401, PLC0415
    except ImportError:
        raise click.ClickException("this command needs the training stack: pip install 'edge-detector[train]'") from None


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


@click.group()
@click.version_option(__version__, prog_name="edge-detector")
def cli():
    """Two-stage IoT sensor anomaly detection: train on a workstation, run on a gateway.

    Workstation: generate -> train -> export. Gateway: detect. Both: evaluate, demo.
    """


@cli.command()
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="CSV file to write.")
@click.option("--seed", default=42, show_default=True, help="Random seed; the same seed writes the same file.")
@click.option("--n", "n", default=10_000, show_default=True, help="Number of one-minute readings.")
@library_errors
def generate(out, seed, n):
    """Write synthetic sensor data: 4 sensors with labelled spikes, drops, contextual and collective anomalies.

    Example:

        edge-detector generate --out data.csv --seed 42
    """
    from edge_detector.export.data import generate as make, write_csv  # noqa: PLC0415
    data = make(n=n, seed=seed)
    write_csv(data, out)
    click.echo("wrote %s: %d readings, %d sensors, %.2f%% anomalous"
               % (out, len(data.values), len(data.sensors), 100 * data.labels.mean()))


def _load(path, sensors, label_col, timestamp_col):
    from edge_detector.export.data import load_csv  # noqa: PLC0415
    names = [s.strip() for s in sensors.split(",")] if sensors else None
    return load_csv(path, sensors=names, label_col=label_col, timestamp_col=timestamp_col)


data_options = [
    click.option("--sensors", default=None, help="Comma-separated sensor columns (default: every column that is "
                 "not the timestamp or the label)."),
    click.option("--label-col", default=None, help="Label column (default: is_anomaly, anomaly or label if present)."),
    click.option("--timestamp-col", default=None, help="Timestamp column (default: timestamp, datetime, time...)."),
]


def with_data_options(fn):
    for option in reversed(data_options):
        fn = option(fn)
    return fn


@cli.command()
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@with_data_options
@click.option("--preset", type=click.Choice(list(PRESETS)), default="trend", show_default=True,
              help="Starting settings: 'trend' for data with a slow trend and daily cycle and short anomalies "
              "(W=50, windows centred on their own median); 'rig' for a machine at a set point whose faults are "
              "sustained shifts (W=20 on 10-reading means, centred on the training median and whitened; the "
              "SKAB benchmark's settings).")
@click.option("--seed", default=42, show_default=True, help="Seed for every model.")
@click.option("--window", default=None, type=int, help="Stage-2 window length W, in readings [preset's: 50 or 20].")
@click.option("--epochs", default=None, type=int, help="Most LSTM epochs; early stopping ends sooner [30 or 15].")
@click.option("--screen-share", default=None, type=float,
              help="Share of normal readings that stage 1 passes to stage 2 [0.08 or 0.5].")
@click.option("--train-fraction", default=0.8, show_default=True,
              help="Leading share of rows used for training (its last 15% calibrates); the rest is the test split.")
@library_errors
def train(data, out, sensors, label_col, timestamp_col, preset, seed, window, epochs, screen_share, train_fraction):
    """Train IsolationForest, LSTM autoencoder and LOF, and calibrate thresholds on normal data.

    Uses a GPU when TensorFlow sees one. Saves Keras (native format), scikit-learn (joblib),
    model.json (calibration) and metrics.json.

    Example:

        edge-detector train data.csv --out model/
        edge-detector train pump.csv --out model/ --preset rig --train-fraction 0.35
    """
    _require_train_extra()
    from edge_detector.export.train import preset_config, train as fit  # noqa: PLC0415
    dataset = _load(data, sensors, label_col, timestamp_col)
    config = preset_config(preset, seed=seed, window=window, epochs=epochs, screen_share=screen_share,
                           train_fraction=train_fraction)
    fit(dataset, out, config, progress=_echo_err, source=data)
    click.echo("model written to %s" % out)


@cli.command("export")
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option("--data", "data", default=None, type=click.Path(dir_okay=False),
              help="Training CSV for the parity checks (default: the path recorded at training).")
@with_data_options
@library_errors
def export_cmd(model_dir, out, data, sensors, label_col, timestamp_col):
    """Convert a model folder to a bundle: TFLite, ONNX, NumPy weights and a manifest.

    Refuses to write anything if an engine misses parity with the originals.

    Example:

        edge-detector export model/ --out bundle/ --data data.csv
    """
    _require_train_extra()
    from edge_detector.export.convert import export_bundle  # noqa: PLC0415
    meta_path = os.path.join(model_dir, "model.json")
    if not os.path.isfile(meta_path):
        raise click.ClickException("%s is not a model folder: model.json is missing" % model_dir)
    with open(meta_path) as fh:
        meta = json.load(fh)
    data = data or meta.get("training_data", {}).get("path")
    if not data or not os.path.isfile(data):
        raise click.ClickException("pass --data: the training CSV is needed for the parity checks")
    dataset = _load(data, sensors or ",".join(meta["sensors"]), label_col, timestamp_col)
    export_bundle(model_dir, dataset, out, progress=_echo_err)
    click.echo("bundle written to %s" % out)


@cli.command()
@click.argument("bundle", type=click.Path())
@click.argument("input", default="-", type=click.Path(allow_dash=True))
@click.option("--engine", type=click.Choice(ENGINES), default="numpy", show_default=True,
              help="numpy: both stages in NumPy; tflite: stage 2 through LiteRT; onnx: stage 1 through "
                   "onnxruntime; auto: those runtimes where installed.")
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True,
              help="hybrid: stage 2 only where stage 1 flags; lstm: stage 2 everywhere; iforest: stage 1 alone.")
@click.option("--out", "out", default="-", type=click.Path(allow_dash=True), help="Events file (default: stdout).")
@click.option("--alarms-only", is_flag=True, help="Write anomalies only.")
@click.option("--missing", type=click.Choice(MISSING_POLICIES), default="reject", show_default=True,
              help="Empty sensor fields: reject the line, hold the sensor's last value, or interpolate "
                   "linearly to its next value (which delays those readings until it arrives).")
@click.option("--gap-factor", default=10.0, show_default=True,
              help="A gap longer than this many median intervals resets the window state (0: never).")
@click.option("--stats", is_flag=True, help="Print the counts to stderr at the end.")
@click.option("--format", "output_format", type=click.Choice(OUTPUT_FORMATS), default="jsonl", show_default=True,
              help="jsonl: one JSON event per line; influx: InfluxDB line protocol, one line per event "
                   "(for Telegraf's inputs.execd).")
@library_errors
def detect(bundle, input, engine, mode, out, alarms_only, missing, gap_factor, stats, output_format):
    """Score CSV or JSON Lines readings; write one JSON event per reading (JSON Lines).

    Reads the CSV layout `train` reads (timestamp and label columns are recognised and not
    scored), or JSON Lines objects keyed by sensor name. Each event holds line, timestamp,
    stage1, stage2 (null where stage 2 did not run), is_anomaly, warmup, and for stage-2
    readings top_sensors and contributions. Events are flushed line by line.

    Error stream: every input line is scored or rejected. A rejected line (wrong field
    count, not a number, NaN or inf, empty line, unknown JSON column, a timestamp that
    repeats or goes back, a missing value under --missing reject) goes to stderr as
    {"line": N, "error": "..."} and the stream goes on; a state reset after a long gap is
    reported as {"line": N, "notice": "..."}. --stats prints {"stats": {"read", "scored",
    "rejected", "alarms", "filled", "resets"}} at the end; read = scored + rejected.
    SIGTERM or SIGINT finishes the current line, flushes, prints the stats and exits 0.

    --format influx writes the same events as InfluxDB line protocol: measurement
    edge_detector; fields line, stage1, stage2 (absent where stage 2 did not run),
    is_anomaly, warmup, top_sensors and contribution_<sensor>; the reading's time in
    nanoseconds (naive timestamps are UTC).

    Example:

        edge-detector detect bundle/ readings.csv --alarms-only
    """
    detector = Detector.load(bundle, engine=engine, mode=mode)
    src = click.open_file(input, "r", encoding="utf-8")
    dst = click.open_file(out, "w", encoding="utf-8")
    err = sys.stderr                 # CliRunner swaps it too, so tests see what a user would
    policy = StreamPolicy(missing=missing, gap_factor=gap_factor)
    with src, dst:
        counts = run_stream(detector, src, dst, err, alarms_only=alarms_only, policy=policy, stop_on_signals=True,
                            output_format=output_format)
    if stats:
        _echo_err(json.dumps({"stats": counts}))


@cli.command()
@click.argument("bundle", type=click.Path())
@click.argument("data", type=click.Path(dir_okay=False))
@with_data_options
@click.option("--model", "model_dir", default=None, type=click.Path(file_okay=False),
              help="Model folder: adds LOF, the reference, to the table.")
@click.option("--test-fraction", default=0.0, show_default=True,
              help="Count only the last fraction of rows (the chronological test split; 0 = all rows).")
@click.option("--engine", type=click.Choice(ENGINES), default="numpy", show_default=True)
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Write the report as JSON.")
@library_errors
def evaluate(bundle, data, sensors, label_col, timestamp_col, model_dir, test_fraction, engine, json_out):
    """Precision, recall, F1, ROC-AUC, PR-AUC and stage-2 share for every mode, on labelled data.

    Scores through the edge runtime, as a gateway would.

    Example:

        edge-detector evaluate bundle/ data.csv --model model/ --test-fraction 0.2
    """
    from edge_detector.export.evaluate import comparison_table, evaluate as run  # noqa: PLC0415
    manifest_sensors = Detector.load(bundle).sensors
    dataset = _load(data, sensors or ",".join(manifest_sensors), label_col, timestamp_col)
    start = int(round(len(dataset.values) * (1 - test_fraction))) if test_fraction else 0
    report = run(bundle, dataset, start=start, engine=engine, model_dir=model_dir)
    click.echo(comparison_table(report))
    if json_out:
        with open(json_out, "w") as fh:
            json.dump({"rows": len(dataset.values) - start, "start": start, "modes": report}, fh, indent=2)


@cli.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--engines", default="numpy,tflite,onnx,original", show_default=True,
              help="Comma-separated: numpy, tflite, onnx, original (Keras + scikit-learn; needs --model).")
@click.option("--model", "model_dir", default=None, type=click.Path(file_okay=False),
              help="Model folder holding the originals (default: the bundle's sibling 'model/' if present).")
@click.option("--threads", default=1, show_default=True, help="Threads for every engine (0: each runtime's default).")
@click.option("--runs", default=200, show_default=True, help="Timed runs per measurement.")
@click.option("--warmup", default=5, show_default=True, help="Untimed runs after the first inference.")
@click.option("--max-seconds", default=10.0, show_default=True,
              help="Stop one measurement's timed loop after this long (at least 3 runs).")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Write the report as JSON.")
@click.option("--markdown", "md_out", default=None, type=click.Path(dir_okay=False), help="Write the tables as Markdown.")
@click.option("--plots", "plots_dir", default=None, type=click.Path(file_okay=False),
              help="Write latency.png and accuracy_latency.png here.")
@library_errors
def bench(bundle, data, engines, model_dir, threads, runs, warmup, max_seconds, json_out, md_out, plots_dir):
    """Latency, memory, size and accuracy of every engine against the original models, in one run.

    Stage 1 (one reading), stage 2 (one window; batches of 1, 32, 256) and the whole stream
    per reading in hybrid and LSTM-only modes; init time, cold start and peak RSS in a fresh
    subprocess per engine; score errors, decision agreement and F1 difference against Keras
    and scikit-learn; the speed goals as ratios. Timings are printed, never judged.

    Example:

        edge-detector bench demo-run/bundle demo-run/data.csv --model demo-run/model --json bench.json
    """
    from edge_detector.bench import format_table, run_bench, write_markdown, write_plots  # noqa: PLC0415
    if model_dir is None:
        sibling = os.path.join(os.path.dirname(os.path.abspath(bundle)), "model")
        model_dir = sibling if os.path.isfile(os.path.join(sibling, "model.json")) else None
    report = run_bench(bundle, data, engines=[e.strip() for e in engines.split(",") if e.strip()],
                       threads=threads, runs=runs, model_dir=model_dir, progress=_echo_err, warmup=warmup,
                       max_seconds=max_seconds, command=" ".join(["edge-detector"] + sys.argv[1:]))
    click.echo(format_table(report))
    if json_out:
        with open(json_out, "w") as fh:
            json.dump(report, fh, indent=2, allow_nan=False)
    if md_out:
        write_markdown(report, md_out)
    if plots_dir:
        for path in write_plots(report, plots_dir):
            _echo_err("wrote %s" % path)


@cli.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Archive to write (.tar.gz).")
@library_errors
def package(bundle, out):
    """Pack a bundle, the single-file runtime, run.sh and a device README into one archive.

    The archive unpacks to one folder named after it (gateway.tar.gz -> gateway/) and needs
    Python >= 3.9 and NumPy >= 1.24 on the device, nothing else. It is written to a temporary
    file and renamed into place.

    Example:

        edge-detector package bundle/ --out gateway.tar.gz
    """
    from edge_detector.package import build_package  # noqa: PLC0415
    names = build_package(bundle, out)
    click.echo("wrote %s: %d entries under %s/" % (out, len(names), names[0]))


@cli.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="MQTT broker host.")
@click.option("--port", default=1883, show_default=True, help="MQTT broker port.")
@click.option("--in-topic", default="sensors/readings", show_default=True,
              help="Topic of JSON readings, one reading per message.")
@click.option("--out-topic", default="sensors/alarms", show_default=True, help="Topic the events are published to.")
@click.option("--qos", type=click.IntRange(0, 2), default=1, show_default=True, help="QoS to subscribe and publish with.")
@click.option("--all-events", is_flag=True, help="Publish an event for every reading, not only alarms.")
@click.option("--format", "output_format", type=click.Choice(OUTPUT_FORMATS), default="jsonl", show_default=True,
              help="Payload of the published events.")
@click.option("--engine", type=click.Choice(ENGINES), default="numpy", show_default=True)
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True)
@click.option("--missing", type=click.Choice(MISSING_POLICIES), default="reject", show_default=True,
              help="Missing sensor values (absent or null keys): as for detect.")
@click.option("--gap-factor", default=10.0, show_default=True,
              help="A gap longer than this many median intervals resets the window state (0: never).")
@click.option("--client-id", default=None, help="MQTT client id (default: edge-detector-<pid>).")
@click.option("--username", default=None, help="MQTT user name; the password comes from $MQTT_PASSWORD.")
@click.option("--persistent-session/--clean-session", default=False, show_default=True,
              help="Keep the broker session across restarts (needs --client-id): readings sent while the bridge "
                   "is down wait at the broker, and each is acknowledged only once scored.")
@library_errors
def mqtt(bundle, host, port, in_topic, out_topic, qos, all_events, output_format, engine, mode, missing, gap_factor,
         client_id, username, persistent_session):
    """Subscribe to a topic of JSON readings and publish alarm events to another topic.

    Needs the mqtt extra (paho-mqtt). Each message is one JSON reading keyed by sensor name,
    as in detect's JSON Lines input; an event's line is the message's sequence number.
    Rejected messages and notices go to stderr as JSON lines. SIGTERM or SIGINT finish the
    current message, wait for outstanding publishes, print the counts to stderr and exit 0.
    No received reading is dropped: a stop scores every message already received, or, with
    --persistent-session, leaves the unscored ones to the broker for the next start.

    Example:

        edge-detector mqtt bundle/ --host 127.0.0.1 --in-topic plant/readings --out-topic plant/alarms
    """
    if persistent_session and not client_id:
        raise click.UsageError("--persistent-session needs --client-id: the broker keeps the session under that id")
    from edge_detector.mqtt import run_bridge  # noqa: PLC0415
    detector = Detector.load(bundle, engine=engine, mode=mode)
    counts = run_bridge(detector, host=host, port=port, in_topic=in_topic, out_topic=out_topic, qos=qos,
                        alarms_only=not all_events, policy=StreamPolicy(missing=missing, gap_factor=gap_factor),
                        output_format=output_format, client_id=client_id, username=username,
                        password=os.environ.get("MQTT_PASSWORD"), err=sys.stderr,
                        persistent_session=persistent_session)
    _echo_err(json.dumps({"stats": counts}))


@cli.command()
@click.option("--dir", "workdir", default="demo-run", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the data, model, bundle and events.")
@click.option("--seed", default=42, show_default=True)
@library_errors
def demo(workdir, seed):
    """The whole pipeline on synthetic data: generate -> train -> export -> detect -> evaluate.

    Prints the comparison table of all modes on the chronological test split (last 20%).

    Example:

        edge-detector demo --dir demo-run
    """
    _require_train_extra()
    from edge_detector.export.convert import export_bundle  # noqa: PLC0415
    from edge_detector.export.data import generate as make, write_csv, load_csv  # noqa: PLC0415
    from edge_detector.export.evaluate import comparison_table, evaluate as run  # noqa: PLC0415
    from edge_detector.export.train import TrainConfig, train as fit  # noqa: PLC0415
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    data_csv, model_dir, bundle = (os.path.join(workdir, p) for p in ("data.csv", "model", "bundle"))
    click.echo("[1/5] generate  %s" % data_csv)
    write_csv(make(seed=seed), data_csv)
    dataset = load_csv(data_csv)
    click.echo("[2/5] train     %s" % model_dir)
    fit(dataset, model_dir, TrainConfig(seed=seed), progress=_echo_err, source=data_csv)
    click.echo("[3/5] export    %s" % bundle)
    export_bundle(model_dir, dataset, bundle, progress=_echo_err)
    events = os.path.join(workdir, "events.jsonl")
    click.echo("[4/5] detect    %s" % events)
    detector = Detector.load(bundle)
    with open(data_csv, encoding="utf-8", newline="") as src, open(events, "w", encoding="utf-8") as dst:
        counts = run_stream(detector, src, dst, sys.stderr)
    click.echo("      %d readings scored, %d alarms" % (counts["scored"], counts["alarms"]))
    click.echo("[5/5] evaluate  test split: the last 20%% of readings (seed %d)" % seed)
    start = int(round(len(dataset.values) * 0.8))
    report = run(bundle, dataset, start=start, model_dir=model_dir)
    with open(os.path.join(workdir, "report.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    click.echo("")
    click.echo(comparison_table(report))
    click.echo("\ndone in %.0fs; files in %s/" % (time.time() - t0, workdir))


if __name__ == "__main__":
    cli()
