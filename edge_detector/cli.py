"""The ``edge-detector`` command line: one click group of thin commands.

Each command parses options, calls one library function, and turns library errors into
``click.ClickException`` (a clear message, exit code 1, no traceback).
"""
import signal
import sys

# First thing, before the imports below (half a second; seconds on a gateway): a SIGHUP (systemctl reload right after
# a start) must not end the process. Until the stream installs its handlers nothing is loaded, so there is nothing to
# reload: the bundle is read after this anyway.
if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import click  # noqa: E402

from edge_detector import __version__
from edge_detector.export.data import PROFILES as DATA_PROFILES
from edge_detector.export.train import PRESETS   # numpy and the runtime only; TensorFlow loads inside train()
from edge_detector.runtime import (
    DEFAULT_GAP_FACTOR, DEFAULT_MAX_JUMP_S, ENGINE_CHOICES, MISSING_POLICIES, MODES, OUTPUT_FORMATS, BundleError,
    InputError, StreamPolicy,
)
from edge_detector.runtime.checkpoint import checkpoint_folder
from edge_detector.runtime.schema import VARIANTS
from edge_detector.runtime.sensor_health import DEFAULT_MAX_FILL
from edge_detector.runtime.threshold import KINDS as THRESHOLD_KINDS
from edge_detector.runtime.trust import load_trust


# The library names the thing; the command line names its flag for it (the only place flags are spelt).
FLAG_WORDING = {
    "(name the label column)": "(pass --label-col)",
    "leave the test fraction out": "leave --test-fraction out",
    "parity checks: name the training CSV": "parity checks: pass --data",
    "the asset column splits one CSV file": "--asset-col splits one CSV file",
    "give the asset column, the column": "give --asset-col, the column",
    "the ray backend needs Ray": "--backend ray needs Ray",
    "an export with quantized variants makes them": "export --quantize makes them",
    "run it with the tflite engine": "run it with --engine tflite",
    "give a writable state folder": "pass a writable --state-dir",
    "a persistent session needs a fixed client id": "--persistent-session needs --client-id",
}


def with_flags(message: str) -> str:
    """A library message in the command line's words: each thing it names as the flag that sets it."""
    for phrase, flag in FLAG_WORDING.items():
        message = message.replace(phrase, flag)
    return message


@contextlib.contextmanager
def reported(*errors):
    """Turn the library's own exceptions (a user's mistake) into one clear line; anything else keeps its traceback."""
    try:
        yield
    except errors as exc:
        raise click.ClickException(with_flags(str(exc))) from None


def _parity_error():
    from edge_detector.export.convert import ParityError  # noqa: PLC0415 (the train extra)
    return ParityError


def _require_train_extra():
    # find, not import: importing TensorFlow here would print its C++ log before it can be silenced
    import importlib.util  # noqa: PLC0415
    missing = [m for m in ("sklearn", "tensorflow", "tf_keras") if importlib.util.find_spec(m) is None]
    if missing:
        raise click.ClickException("this command needs the training stack (%s missing): "
                                   "pip install 'edge-detector[train]'" % ", ".join(missing))


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


def _names(text):
    return [s.strip() for s in text.split(",")] if text else None


def _integers(text, hint):
    try:
        return [int(v) for v in _names(text)] if text else None
    except ValueError:
        raise click.BadParameter("%r: give whole numbers separated by commas" % text, param_hint=hint) from None


def _share(text, hint):
    """'0.5%' or '0.005' -> 0.005 (None stays None)."""
    if text is None:
        return None
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise click.BadParameter("%r: give a share such as 0.005 or 0.5%%" % text, param_hint=hint) from None


def _quantizations(text):
    names = _names(text) or ["none"]
    allowed = ("none",) + VARIANTS
    bad = [n for n in names if n not in allowed]
    if bad:
        raise click.BadParameter("%s: choose from %s" % (", ".join(bad), ", ".join(allowed)), param_hint="--quantize")
    return names


# Options shared by the commands that run a bundle on a stream (detect, mqtt).
trust_options = [
    click.option("--trusted-keys", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="OpenSSH public key file (one or more ssh-ed25519 keys): run only bundles signed by one of "
                 "them, never an older version than the last one accepted."),
    click.option("--state-dir", type=click.Path(file_okay=False), default=None,
                 help="Where the versions accepted are recorded (default: $STATE_DIRECTORY, else "
                 "~/.local/state/edge-detector); given, or with $STATE_DIRECTORY set (systemd), also where the learnt "
                 "state (an adaptive threshold's) is checkpointed and restored from at the next start of the same "
                 "bundle."),
    click.option("--no-checkpoint", is_flag=True, help="Neither restore nor write the checkpoint of the learnt state."),
]
health_options = [
    click.option("--max-fill", type=click.IntRange(min=0), default=DEFAULT_MAX_FILL, show_default=True,
                 help="Readings in a row one sensor may be filled (--missing hold-last, interpolate); after that it is "
                 "reported dead and readings without it are rejected until it reports again (0: no limit)."),
    click.option("--stuck-after", type=click.IntRange(min=0), default=None,
                 help="Readings of one unchanged value before a sensor that moved in training is reported stuck "
                 "[default: 3 warm-ups, at least 30, and over twice the longest run training saw; 0: never]."),
]
watch_option = click.option("--watch", is_flag=True,
                            help="Also reload the bundle when its folder or manifest.json changes (a new folder "
                            "renamed into place, a manifest rewritten), checked about once a second; SIGHUP always "
                            "reloads it. A bundle that does not verify is refused, and the old one keeps scoring.")
time_options = [
    click.option("--gap-factor", default=DEFAULT_GAP_FACTOR, show_default=True,
                 help="A gap longer than this many median intervals resets the window state (0: never)."),
    click.option("--max-jump", default=DEFAULT_MAX_JUMP_S, show_default=True,
                 help="Seconds a reading's time may jump ahead of the last one; a bigger jump, or a step back, is "
                 "rejected until 3 readings in a row agree on the new time (0: any jump)."),
]
ENGINE_HELP = ("numpy: both stages in NumPy; tflite: stage 2 through LiteRT; onnx: stage 1 through onnxruntime; "
               "auto: each where installed (said on stderr).")
MODE_HELP = "hybrid: stage 2 only where stage 1 flags; lstm: stage 2 everywhere; iforest: stage 1 alone."
engine_option = click.option("--engine", type=click.Choice(ENGINE_CHOICES), default="numpy", show_default=True,
                             help=ENGINE_HELP)
mode_option = click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True, help=MODE_HELP)
variant_option = click.option("--variant", type=click.Choice(VARIANTS), default=None,
                              help="A quantized stage-2 model of the bundle (export --quantize), run with --engine "
                              "tflite and its own threshold [default: the float32 model].")
verbose_option = click.option("--verbose", is_flag=True,
                              help="Show Keras' epoch lines and TensorFlow's own log (quiet by default).")
sign_option = click.option("--sign-key", type=click.Path(exists=True, dir_okay=False), default=None,
                           help="OpenSSH Ed25519 private key (ssh-keygen -t ed25519) to sign with.")


def with_options(options):
    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


@click.group(context_settings={"max_content_width": 100})
@click.version_option(__version__, prog_name="edge-detector")
def cli():
    """Two-stage IoT sensor anomaly detection: train on a workstation, run on a gateway.

    Workstation: generate -> train -> export -> package, calibrate (new thresholds, no retraining),
    and fleet (one model per machine).
    Gateway: detect, mqtt (or the packaged runtime alone: python3 -m runtime). Both: evaluate,
    bench, demo.
    """


@cli.command(short_help="Write synthetic sensor data with labelled anomalies.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="CSV file to write.")
@click.option("--seed", default=42, show_default=True, help="Random seed; the same seed writes the same file.")
@click.option("--n", "n", default=None, type=click.IntRange(min=1000),
              help="Number of one-minute readings [10,000; notebook: 5,000].")
@click.option("--profile", type=click.Choice(list(DATA_PROFILES)), default="sensors", show_default=True,
              help="sensors: 4 sensors with spikes, drops, contextual and collective anomalies; notebook: the seed "
              "notebook's experiment, 3 sensors with 50 readings shifted by the same +-5 on all three.")
def generate(out, seed, n, profile):
    """Write synthetic sensor data: 4 sensors with labelled spikes, drops, contextual and collective anomalies
    (or, with --profile notebook, the seed notebook's 3 sensors and 50 shifts of +-5).

    Examples:

    \b
        edge-detector generate --out data.csv --seed 42
        edge-detector generate --profile notebook --out notebook.csv
    """
    from edge_detector.export.data import generate_csv  # noqa: PLC0415
    data = generate_csv(out, n=n, seed=seed, profile=profile)
    click.echo("wrote %s: %d readings, %d sensors, %.2f%% anomalous"
               % (out, len(data.values), len(data.sensors), 100 * data.labels.mean()))


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


@cli.command(short_help="Train the forest, the LSTM autoencoder and LOF; calibrate thresholds.")
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
@click.option("--threshold", type=click.Choice(THRESHOLD_KINDS), default=None,
              help="Stage-2 threshold: static (tau2 fixed at training) or adaptive (follows the stream's own "
              "recent normal scores on the device, frozen while an alarm lasts) [static or adaptive].")
@click.option("--tau2-margin", default=None, type=click.FloatRange(min=0.0, min_open=True),
              help="Stage-2 threshold margin over the calibration quantile: above 1 leaves room for drift after "
              "training, below 1 makes stage 2 more sensitive than its quantile [1.0 or 1.55].")
@click.option("--margin-from", type=click.Path(exists=True, dir_okay=False), default=None, metavar="NORMAL_CSV",
              help="Calibrate the stage-2 threshold margin without labels on a recording of normal operation only "
              "(the same sensors), instead of taking the preset's: it is cut into pieces as long as DATA, each "
              "trained and scored as DATA is at margin 1, and the margin is the median over pieces of the "
              "smallest that keeps a piece's alarms to 10% of its scored rows (one training per piece).")
@click.option("--target-far", default=None, metavar="SHARE",
              help="Set tau2 (or the adaptive margin) so that this share of the normal calibration readings alarms "
              "in hybrid mode, e.g. 0.5% or 0.005, instead of the quantile and margin.")
@click.option("--features", "families", default=None, metavar="FAMILIES",
              help="Comma-separated stage-1 feature families: level, mean, std, minmax (or max, min), lag, diff "
              "(rate of change), cross (products of sensors' deviations), time (time of day and week: needs a "
              "timestamp column), abs [preset's: level,mean,diff or abs].")
@click.option("--feature-windows", default=None, metavar="N,N,...",
              help="Rolling windows of the features, in readings; the last is the level [5,15,50 or 5,15].")
@click.option("--lags", default=None, metavar="N,N,...", help="Lags of the diff and lag families, in readings [1].")
@click.option("--train-fraction", default=0.8, show_default=True,
              help="Leading share of rows used for training (its last 15% calibrates); the rest is the test split.")
@verbose_option
def train(data, out, sensors, label_col, timestamp_col, preset, seed, window, epochs, screen_share, threshold,
          tau2_margin, margin_from, target_far, families, feature_windows, lags, train_fraction, verbose):
    """Train IsolationForest, LSTM autoencoder and LOF, and calibrate thresholds on normal data.

    Uses a GPU when TensorFlow sees one. Saves Keras (native format), scikit-learn (joblib),
    model.json (calibration) and metrics.json.

    Example:

    \b
        edge-detector train data.csv --out model/
        edge-detector train pump.csv --out model/ --preset rig --train-fraction 0.35
        edge-detector train data.csv --out model/ --features level,mean,std,minmax,diff --feature-windows 5,15,50
    """
    _require_train_extra()
    if margin_from and (tau2_margin is not None or target_far is not None):
        raise click.UsageError("--margin-from calibrates the margin that --tau2-margin and --target-far set: give "
                               "one of them")
    from edge_detector.export.train import preset_config, train_csv  # noqa: PLC0415
    with reported(InputError):
        config = preset_config(preset, families=_names(families), feature_windows=_integers(feature_windows,
                                                                                             "--feature-windows"),
                               lags=_integers(lags, "--lags"), seed=seed, window=window, epochs=epochs,
                               screen_share=screen_share, threshold=threshold, tau2_margin=tau2_margin,
                               target_far=_share(target_far, "--target-far"), train_fraction=train_fraction)
        if margin_from:
            from edge_detector.export.margin import calibrated_config  # noqa: PLC0415
            config = calibrated_config(config, margin_from, data, _names(sensors), label_col, timestamp_col,
                                       progress=_echo_err)
        train_csv(data, out, config, _names(sensors), label_col, timestamp_col, progress=_echo_err, verbose=verbose)
    click.echo("model written to %s" % out)


@cli.command("export", short_help="Convert a model folder to a parity-checked bundle (TFLite, ONNX, NumPy).")
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option("--data", "data", default=None, type=click.Path(dir_okay=False),
              help="Training CSV for the parity checks (default: the path recorded at training).")
@with_data_options
@sign_option
@click.option("--bundle-version", type=click.IntRange(min=0), default=None,
              help="The bundle's version; a gateway with pinned keys never runs an older one [default: the export "
              "time in epoch seconds].")
@click.option("--quantize", default="none", show_default=True,
              help="Comma-separated stage-2 variants to add beside float32: none, float16 (half the size), dynamic "
              "(int8 weights), int8 (full integer, calibrated on normal windows). Each gets its own threshold and "
              "a parity gate on decisions; one that does not convert is named and left out.")
@click.option("--learning/--no-learning", default=False, show_default=True,
              help="The gateway keeps learning normal operation as it streams: stage 1's forest follows the readings "
              "it judged normal (never while an alarm lasts). Off by default: see README, Learning on the device.")
@verbose_option
def export_cmd(model_dir, out, data, sensors, label_col, timestamp_col, sign_key, bundle_version, quantize, learning,
               verbose):
    """Convert a model folder to a bundle: TFLite, ONNX, NumPy weights and a manifest.

    Refuses to write anything if an engine misses parity with the originals.

    Example:

        edge-detector export model/ --out bundle/ --sign-key ~/.ssh/edge_owner
    """
    _require_train_extra()
    from edge_detector.export.convert import export_model  # noqa: PLC0415
    with reported(InputError, _parity_error()):
        export_model(model_dir, out, data, _names(sensors), label_col, timestamp_col, progress=_echo_err,
                     sign_key=sign_key, version=bundle_version, verbose=verbose, quantize=_quantizations(quantize),
                     learning=learning)
    click.echo("bundle written to %s" % out)


@cli.command(short_help="Re-set a bundle's thresholds from new normal data, without retraining.")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.argument("normal", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Bundle folder to write (a copy of BUNDLE with the new thresholds).")
@click.option("--target-far", default=None, metavar="SHARE",
              help="Share of normal readings that may alarm in hybrid mode: 0.5% or 0.005.")
@click.option("--alarms-per-day", default=None, type=click.FloatRange(min=0.0, min_open=True),
              help="Instead of --target-far: false alarms a day, from the readings' median interval.")
@click.option("--sensors", default=None, help="Comma-separated sensor columns (default: the bundle's sensors).")
@click.option("--timestamp-col", default=None, help="Timestamp column (default: timestamp, datetime, time...).")
@sign_option
@click.option("--bundle-version", type=click.IntRange(min=0), default=None,
              help="The new bundle's version [default: the old one + 1, or the time in epoch seconds if later].")
def calibrate(bundle, normal, out, target_far, alarms_per_day, sensors, timestamp_col, sign_key, bundle_version):
    """Re-set a bundle's thresholds so that a chosen share of normal readings alarms: no model folder, no
    retraining, no TensorFlow.

    NORMAL is a CSV of normal operation (its labels, if any, are not read). The stage-2 threshold (static:
    tau2; adaptive: its margin and starting history) and the IF-only threshold are set so that the target
    share of NORMAL's readings alarms; tau1, and every engine file, stay as they were. The new bundle has a
    higher version and, with --sign-key, a new signature, and the engines installed here are checked to
    agree on NORMAL before it is written beside --out and renamed into place.

    Examples:

    \b
        edge-detector calibrate bundle/ normal.csv --target-far 0.5% --out bundle-new/ --sign-key ~/.ssh/edge_owner
        edge-detector calibrate bundle/ normal.csv --alarms-per-day 2 --out bundle-new/
    """
    from edge_detector.export.calibrate import calibrate_csv  # noqa: PLC0415
    from edge_detector.export.convert import ParityError  # noqa: PLC0415 (no TensorFlow)
    with reported(BundleError, InputError, ParityError):
        manifest = calibrate_csv(bundle, normal, out, _names(sensors), timestamp_col,
                                 target_far=_share(target_far, "--target-far"), alarms_per_day=alarms_per_day,
                                 sign_key=sign_key, version=bundle_version, progress=_echo_err)
    c = manifest["calibration"]
    click.echo("bundle written to %s: version %d, %.4g%% of the normal readings alarm (target %.4g%%)"
               % (out, manifest["bundle_version"], 100 * c["measured_far"], 100 * c["target_far"]))


@cli.command(short_help="Score CSV or JSON Lines readings with a bundle: one event per reading.")
@click.argument("bundle", type=click.Path())
@click.argument("input", default="-", type=click.Path(allow_dash=True))
@engine_option
@variant_option
@mode_option
@click.option("--out", "out", default="-", type=click.Path(allow_dash=True), help="Events file (default: stdout).")
@click.option("--alarms-only", is_flag=True, help="Write anomalies only.")
@click.option("--missing", type=click.Choice(MISSING_POLICIES), default="reject", show_default=True,
              help="Empty sensor fields: reject the line, hold the sensor's last value, or interpolate "
                   "linearly to its next value (which delays those readings until it arrives).")
@with_options(health_options)
@with_options(time_options)
@click.option("--stream-col", default=None, metavar="COLUMN",
              help="Column (or JSON key) naming each reading's machine, when one input carries several machines "
                   "of one model: each keeps its own state, and its events carry the key as \"stream\".")
@click.option("--stats", is_flag=True, help="Print the counts to stderr at the end.")
@click.option("--format", "output_format", type=click.Choice(OUTPUT_FORMATS), default="jsonl", show_default=True,
              help="jsonl: one JSON event per line; influx: InfluxDB line protocol, one line per event "
                   "(for Telegraf's inputs.execd).")
@with_options(trust_options)
@watch_option
def detect(bundle, input, engine, variant, mode, out, alarms_only, missing, max_fill, stuck_after, gap_factor, max_jump,
           stream_col, stats, output_format, trusted_keys, state_dir, no_checkpoint, watch):
    """Score CSV or JSON Lines readings; write one JSON event per reading (JSON Lines).

    Reads the CSV layout `train` reads (timestamp and label columns are recognised and not
    scored), or JSON Lines objects keyed by sensor name. Each event holds line, timestamp,
    stage1, stage2 (null where stage 2 did not run), is_anomaly, warmup, and for stage-2
    readings (and IF-only alarms) top_sensors and contributions. Events are flushed line by line.

    Error stream: every input line is scored or rejected, and no line stops the stream. A
    rejected line (wrong field count, not a number, NaN or inf, bytes that are not UTF-8, a
    line over 64 KiB, JSON nested too deep, an unknown JSON column, a timestamp out of range,
    repeating, going back or jumping too far, a missing value under --missing reject) goes to
    stderr as {"line": N, "error": "..."} and the stream goes on; a state reset after a long
    gap or a clock change is reported as {"line": N, "notice": "..."}. --stats prints
    {"stats": {"read", "scored", "rejected", "alarms", "filled", "resets", "warmup", "reloads",
    "reloads_unchanged", "reloads_refused", "dead", "stuck", "departed"}} at the end; read =
    scored + rejected, warmup counts the readings scored in a warm-up. SIGTERM or SIGINT finishes
    the current line, flushes, prints the stats and exits 0; so does a reader that goes away
    (| head). The handlers are in place before the bundle loads: a SIGHUP then is acted on once
    the stream runs.

    Sensor health: a sensor filled --max-fill times in a row is reported dead ({"line": N,
    "notice": "...", "sensor": name, "health": "dead"}) and readings without it are rejected until
    it reports again ("alive"); one unchanged for --stuck-after readings is "stuck" (then
    "moving"); one constant in training that reads another value is "departed" (then "returned"):
    the model cannot see such a sensor move.

    A CSV header line met again (a rotated file) re-maps the columns from there on, with a
    notice; a header without the bundle's sensors is rejected by name, and so are the rows after
    it until a header names them.

    --format influx writes the same events as InfluxDB line protocol: measurement
    edge_detector; fields line, stage1, stage2 (absent where stage 2 did not run),
    is_anomaly, warmup, top_sensors and contribution_<sensor>; the reading's time in
    nanoseconds (naive timestamps are UTC).

    --stream-col asset splits an input that interleaves several machines of one model by its
    asset column: each machine's events are those a detect on its readings alone would give
    (own window, clock and missing-value state), and --stats adds "streams". A new key beyond
    1024 streams, or one over 128 characters, is rejected.

    A new model while running: SIGHUP (and with --watch a change of the bundle folder or its
    manifest.json, checked about once a second) loads the bundle again, verified as at the start
    (same engine, mode, variant, trusted keys and version ledger), and swaps it in between two
    readings: nothing is lost or scored twice, and the new model's warm-up is said on stderr. A
    bundle that does not verify is refused with a notice, and the old one keeps scoring. An
    unchanged bundle (the same manifest.json bytes) is not reloaded: a notice, no new warm-up.
    With --state-dir (or $STATE_DIRECTORY) the learnt state is checkpointed there (every 1000
    readings or 60 s, and at the end) and restored at the next start of the same bundle; a
    corrupt or foreign checkpoint is refused by name and the bundle's own start is used.

    Examples:

    \b
        edge-detector detect bundle/ readings.csv --alarms-only
        edge-detector detect bundle/ pumps.csv --stream-col asset --alarms-only
    """
    from edge_detector.runtime import detect as score_stream  # noqa: PLC0415
    policy = StreamPolicy(missing=missing, gap_factor=gap_factor, max_jump=max_jump, max_fill=max_fill,
                          stuck_after=stuck_after)
    with reported(BundleError, InputError, OSError):
        counts = score_stream(bundle, input, out, sys.stderr, engine=engine, mode=mode, alarms_only=alarms_only,
                              policy=policy, output_format=output_format, trust=load_trust(trusted_keys, state_dir),
                              variant=variant, stream_col=stream_col, watch=watch,
                              checkpoint_dir=None if no_checkpoint else checkpoint_folder(state_dir))
    if stats:
        _echo_err(json.dumps({"stats": counts}))


@cli.command(short_help="Precision, recall, F1 and AUCs of every mode on labelled data.")
@click.argument("bundle", type=click.Path())
@click.argument("data", type=click.Path(dir_okay=False))
@with_data_options
@click.option("--model", "model_dir", default=None, type=click.Path(file_okay=False),
              help="Model folder: adds LOF, the reference, to the table.")
@click.option("--test-fraction", default=None, type=click.FloatRange(0, 1, max_open=True),
              help="Count only the last fraction of rows (0: all rows). Default: on the data the bundle was "
              "trained on, its own test split (the rows after training); on other data, all rows.")
@engine_option
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Write the report as JSON.")
def evaluate(bundle, data, sensors, label_col, timestamp_col, model_dir, test_fraction, engine, json_out):
    """Precision, recall, F1, ROC-AUC, PR-AUC and stage-2 share for every mode, on labelled data.

    Scores through the edge runtime, as a gateway would.

    Example:

        edge-detector evaluate bundle/ data.csv --model model/ --test-fraction 0.2
    """
    from edge_detector.export.evaluate import comparison_table, evaluate_csv  # noqa: PLC0415
    with reported(BundleError, InputError):
        result = evaluate_csv(bundle, data, test_fraction, engine, model_dir, _names(sensors), label_col,
                              timestamp_col)
    for notice in result["notices"]:
        _echo_err(with_flags(notice))
    _echo_err(with_flags(result["split"]))
    click.echo(comparison_table(result["modes"]))
    if json_out:
        from edge_detector.export.files import write_json  # noqa: PLC0415
        write_json(json_out, result)


@cli.command(short_help="One HTML page of what a bundle detects on a data file: figures, events, training.")
@click.argument("bundle", type=click.Path())
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Folder to write index.html and the figures (PNG) into.")
@click.option("--model", "model_dir", default=None, type=click.Path(file_okay=False),
              help="Model folder: adds LOF and the training history (default: the bundle's sibling 'model/' if "
              "present).")
@click.option("--labels", "labels_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="NAB-style label windows (JSON: file -> [[start, end], ...]) instead of the data's label column.")
@with_data_options
@click.option("--test-fraction", default=None, type=click.FloatRange(0, 1, max_open=True),
              help="Count only the last fraction of rows in the metrics and curves (as in evaluate).")
@engine_option
def report(bundle, data, out, model_dir, labels_path, sensors, label_col, timestamp_col, test_fraction, engine):
    """Write one self-contained page, OUT/index.html, with each figure as a PNG beside it.

    The page shows each sensor over time with the alarms and the labelled anomalies, the
    stage-1 and stage-2 scores with their thresholds (an adaptive one at each reading), the
    per-sensor contributions, an event table, score distributions, ROC and PR curves of every
    mode with their AUCs, the confusion matrices, the training history (with --model), and an
    exploration of the data (distributions, correlations, a seasonal view where the data has a
    period). Without labels it shows what does not need them. It needs no network to open.

    Examples:

    \b
        edge-detector report bundle/ data.csv --out report/ --model model/
        edge-detector report nab-bundle/ machine_temperature_system_failure.csv --out nab-report/ \\
            --labels labels/combined_windows.json
    """
    from edge_detector.export.report import write_report  # noqa: PLC0415 (the report extra)
    if model_dir is None:
        model_dir = _sibling_model(bundle)
    with reported(BundleError, InputError):
        paths = write_report(bundle, data, out, model_dir, labels_path, test_fraction, engine, _names(sensors),
                             label_col, timestamp_col, progress=_echo_err)
    click.echo("wrote %s and %d figures" % (paths[0], len(paths) - 1))


def _sibling_model(bundle: str):
    """The model folder beside a bundle (bundle/ -> model/), where there is one."""
    sibling = os.path.join(os.path.dirname(os.path.abspath(bundle)), "model")
    return sibling if os.path.isfile(os.path.join(sibling, "model.json")) else None


@cli.command(short_help="Latency, memory and accuracy of every engine against the originals.")
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
@click.option("--test-fraction", default=0.2, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="The last fraction of rows is the test part (latency of whole streams, accuracy against the "
              "originals); the rows before it prime the windows.")
@click.option("--compare", "device_json", default=None, type=click.Path(dir_okay=False),
              help="A device bench's JSON (python3 -m runtime bench ... --json device.json on the gateway): runs "
                   "the same device bench here and prints both side by side.")
@verbose_option
def bench(bundle, data, engines, model_dir, threads, runs, warmup, max_seconds, json_out, md_out, plots_dir,
          test_fraction, device_json, verbose):
    """Latency, memory, size and accuracy of every engine against the original models, in one run.

    Stage 1 (one reading), stage 2 (one window; batches of 1, 32, 256) and the whole stream
    per reading in hybrid and LSTM-only modes; init time, cold start and peak RSS in a fresh
    subprocess per engine; score errors, decision agreement and F1 difference against Keras
    and scikit-learn; the speed goals as ratios. Timings are measured and printed, never
    asserted; each goal's ratio from this run is printed with "met" or "missed".

    --compare device.json adds a table of the gateway's own figures (cold start, per-reading
    latency, stage-2 share, peak RSS, the multi-stream curve) beside the same device bench run
    here, with the device's settings.

    Examples:

    \b
        edge-detector bench demo-run/bundle demo-run/data.csv --model demo-run/model --json bench.json
        edge-detector bench demo-run/bundle demo-run/data.csv --compare pi-bench.json
    """
    from edge_detector.export.bench import format_table, run_bench, write_markdown, write_plots  # noqa: PLC0415
    if model_dir is None:
        model_dir = _sibling_model(bundle)
    with reported(BundleError, InputError):
        report = run_bench(bundle, data, engines=_names(engines), threads=threads, runs=runs, model_dir=model_dir,
                           progress=_echo_err, warmup=warmup, max_seconds=max_seconds, test_fraction=test_fraction,
                           command=" ".join(["edge-detector"] + sys.argv[1:]), verbose=verbose)
        if device_json:
            from edge_detector.export.bench.compare import compare_with_device, load_device_report  # noqa: PLC0415
            _echo_err("device bench here, with the settings of %s" % device_json)
            report["device_comparison"] = compare_with_device(bundle, data, load_device_report(device_json))
    click.echo(format_table(report))
    if json_out:
        from edge_detector.export.files import write_json  # noqa: PLC0415
        write_json(json_out, report, allow_nan=False)
    if md_out:
        write_markdown(report, md_out)
    if plots_dir:
        for path in write_plots(report, plots_dir):
            _echo_err("wrote %s" % path)


@cli.command(short_help="Pack a bundle and the NumPy runtime into one archive for a gateway.")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Archive to write: a gzip tar, so its name ends in .tar.gz or .tgz.")
@sign_option
def package(bundle, out, sign_key):
    """Pack a bundle, the single-file runtime, run.sh and a device README into one archive.

    The archive unpacks to one folder named after it (gateway.tar.gz -> gateway/) and needs
    Python >= 3.9 and NumPy >= 1.24 on the device, nothing else. It is written to a temporary
    file and renamed into place.

    Example:

        edge-detector package bundle/ --out gateway.tar.gz
    """
    from edge_detector.export.package import ArchiveNameError, build_package, check_archive_name  # noqa: PLC0415
    try:
        check_archive_name(out)
    except ArchiveNameError as exc:
        raise click.BadParameter(str(exc), param_hint="--out") from None
    with reported(BundleError):
        names = build_package(bundle, out, sign_key=sign_key)
    click.echo("wrote %s: %d entries under %s/" % (out, len(names), names[0]))


@cli.command(short_help="Score JSON readings from an MQTT topic; publish alarms to another.")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="MQTT broker host.")
@click.option("--port", default=1883, show_default=True, help="MQTT broker port.")
@click.option("--in-topic", default="sensors/readings", show_default=True,
              help="Topic of JSON readings, one reading per message. A wildcard (plant/+/readings) watches "
                   "several machines of one model: one state per topic, the topic in each event as \"stream\".")
@click.option("--out-topic", default="sensors/alarms", show_default=True, help="Topic the events are published to.")
@click.option("--qos", type=click.IntRange(0, 2), default=1, show_default=True, help="QoS to subscribe and publish with.")
@click.option("--all-events", is_flag=True, help="Publish an event for every reading, not only alarms.")
@click.option("--format", "output_format", type=click.Choice(OUTPUT_FORMATS), default="jsonl", show_default=True,
              help="Payload of the published events.")
@engine_option
@variant_option
@mode_option
@click.option("--missing", type=click.Choice(MISSING_POLICIES), default="reject", show_default=True,
              help="Missing sensor values (absent or null keys): as for detect.")
@with_options(health_options)
@with_options(time_options)
@click.option("--client-id", default=None, help="MQTT client id (default: edge-detector-<pid>).")
@click.option("--username", default=None,
              help="MQTT user name; the password comes from $MQTT_PASSWORD or --password-file, never the command line.")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="File holding the MQTT password (its first line).")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CA certificate that signed the broker's: turns TLS on (use it for any broker not on this host).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Client certificate, for a broker that asks for one (with --tls-key).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None, help="The client certificate's key.")
@click.option("--persistent-session/--clean-session", default=False, show_default=True,
              help="Keep the broker session across restarts (needs --client-id): readings sent while the bridge "
                   "is down wait at the broker, and each is acknowledged only once scored.")
@click.option("--max-inbox-mb", type=click.FloatRange(1, 1024), default=32, show_default=True,
              help="Memory for received messages waiting to be scored; when full, the rest of a burst waits at "
                   "the broker (back-pressure). Keep it well under the unit's MemoryMax.")
@with_options(trust_options)
@watch_option
def mqtt(bundle, host, port, in_topic, out_topic, qos, all_events, output_format, engine, variant, mode, missing,
         max_fill, stuck_after, gap_factor,
         max_jump, client_id, username, password_file, tls_ca, tls_cert, tls_key, persistent_session, max_inbox_mb,
         trusted_keys, state_dir, no_checkpoint, watch):
    """Subscribe to a topic of JSON readings and publish alarm events to another topic.

    Needs the mqtt extra (paho-mqtt). Each message is one JSON reading keyed by sensor name,
    as in detect's JSON Lines input; an event's line is the message's sequence number.
    Rejected messages and notices go to stderr as JSON lines. SIGTERM or SIGINT finish the
    current message, wait for outstanding publishes, print the counts to stderr and exit 0.
    No reading is dropped or scored twice: each message is acknowledged once scored; a stop
    scores every message already received, or, with --persistent-session, leaves the unscored
    ones to the broker for the next start; a full inbox (--max-inbox-mb) makes the rest of a
    burst wait at the broker; a reading the broker sends again is counted in "duplicates". A
    broker that is down is retried, with a line on stderr per attempt; a broker certificate that
    does not verify against --tls-ca ends the bridge with exit 1 and a sentence. SIGHUP (systemctl
    reload), or with --watch a change of the bundle, swaps in a new bundle between two messages,
    as for detect (an unchanged one costs nothing); the signal handlers are in place before the
    bundle loads. Sensor health and the checkpoint of the learnt state: as for detect.

    Example:

    \b
        edge-detector mqtt bundle/ --host broker.plant --port 8883 --tls-ca ca.crt \\
            --username gw1 --password-file /etc/edge-detector/mqtt-password --trusted-keys owner.pub
    """
    from edge_detector.mqtt import (ClientIdMissing, MqttConfigError, PahoMissing, Tls, check_session,  # noqa: PLC0415
                                    paho_client, run_bridge)
    from edge_detector.runtime.reload import Reloader  # noqa: PLC0415
    try:
        check_session(persistent_session, client_id)
    except ClientIdMissing as exc:
        raise click.UsageError(with_flags(str(exc))) from None
    if tls_key and not tls_cert:
        raise click.UsageError("--tls-key needs --tls-cert")
    from edge_detector.runtime.checkpoint import open_checkpointer  # noqa: PLC0415
    from edge_detector.runtime.signals import SignalRelay, Stopped  # noqa: PLC0415
    with reported(PahoMissing):
        paho_client()
    password = os.environ.get("MQTT_PASSWORD")
    if password_file:
        with open(password_file, encoding="utf-8") as fh:
            password = fh.readline().rstrip("\r\n")
    with reported(BundleError):
        reloader = Reloader(bundle, engine=engine, mode=mode, trust=load_trust(trusted_keys, state_dir),
                            variant=variant, watch=watch, checkpointer=open_checkpointer(
                                None if no_checkpoint else checkpoint_folder(state_dir), bundle))
    relay = SignalRelay(reloader.request)
    with relay.installed():                  # before the load: a SIGHUP then must not end the service
        try:
            with reported(BundleError):
                detector = reloader.load()
        except Stopped:
            _echo_err(json.dumps({"notice": "stopped by a signal while the bundle loaded: nothing scored"}))
            return
        relay.started()
        policy = StreamPolicy(missing=missing, gap_factor=gap_factor, max_jump=max_jump, max_fill=max_fill,
                              stuck_after=stuck_after)
        with reported(MqttConfigError):
            counts = run_bridge(detector, host=host, port=port, in_topic=in_topic, out_topic=out_topic, qos=qos,
                                alarms_only=not all_events, policy=policy, output_format=output_format,
                                client_id=client_id, username=username, password=password, err=sys.stderr,
                                persistent_session=persistent_session, tls=Tls(tls_ca, tls_cert, tls_key),
                                reloader=reloader, max_inbox_bytes=int(max_inbox_mb * 2**20), stop=relay.event)
    _echo_err(json.dumps({"stats": counts}))


@cli.command(short_help="The whole pipeline on synthetic data, in about three minutes.")
@click.option("--dir", "workdir", default="demo-run", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the data, model, bundle and events.")
@click.option("--seed", default=42, show_default=True,
              help="Seed of the data and of every model; the same seed prints the same table.")
@verbose_option
def demo(workdir, seed, verbose):
    """The whole pipeline on synthetic data: generate -> train -> export -> detect -> evaluate.

    Prints the comparison table of all modes on the chronological test split (last 20%). It
    takes about three minutes on two cores (2.5 of them training and converting), showing
    each step and a progress bar for the training.

    Example:

        edge-detector demo --dir demo-run
    """
    _require_train_extra()
    from edge_detector.export.evaluate import comparison_table  # noqa: PLC0415
    from edge_detector.export.pipeline import run_demo  # noqa: PLC0415
    t0 = time.time()
    report = run_demo(workdir, seed, echo=click.echo, progress=_echo_err, verbose=verbose)
    click.echo("")
    click.echo(comparison_table(report))
    click.echo("\ndone in %.0fs; files in %s/" % (time.time() - t0, workdir))


@cli.group(short_help="One model per machine: train a fleet in parallel (processes or Ray) and report on it.")
def fleet():
    """One model per machine: train and export a bundle for each, in parallel, and report on them.

    Examples:

    \b
        edge-detector fleet train ../shared/data/skab --out fleet/ --preset rig --train-rows 400
        edge-detector fleet report fleet/
    """


@fleet.command("train", short_help="Train and export one bundle per machine; a re-run resumes.")
@click.argument("data", type=click.Path(exists=True))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Fleet folder: fleet.json and machines/<name>/{model,bundle}.")
@click.option("--asset-col", default=None, help="DATA is one CSV and this column names each row's machine "
              "[default: DATA is a folder with one CSV per machine, named by its path].")
@with_data_options
@click.option("--preset", type=click.Choice(list(PRESETS)), default="trend", show_default=True,
              help="Starting settings for every machine (as in train).")
@click.option("--seed", default=42, show_default=True, help="Seed for every model of every machine.")
@click.option("--window", default=None, type=int, help="Stage-2 window length W [the preset's].")
@click.option("--epochs", default=None, type=int, help="Most LSTM epochs [the preset's].")
@click.option("--train-rows", default=None, type=click.IntRange(min=1),
              help="Train each machine on its first N rows [default: the first 80%].")
@click.option("--exclude", multiple=True, metavar="PATTERN",
              help="Leave out the machines whose name matches this shell pattern (repeatable).")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: --workers processes here; ray: one Ray task per machine (extra [fleet]).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Local backend: machines built at once.")
@click.option("--address", default=None,
              help="Ray: 'auto' (the cluster this node belongs to) or 'ray://HEAD:10001' [default: a local Ray].")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="TensorFlow threads per machine; each Ray task declares as many CPUs.")
@click.option("--convert-each", is_flag=True,
              help="Convert every machine as export does (the TFLite converter each time, about 10 s) instead of "
              "writing its weights into one conversion per worker; every bundle passes its parity gate either way.")
@sign_option
@click.option("--bundle-version", type=click.IntRange(min=0), default=None,
              help="Version of every bundle built in this run [default: the run's start in epoch seconds].")
def fleet_train(data, out, asset_col, sensors, label_col, timestamp_col, preset, seed, window, epochs, train_rows,
                exclude, backend, workers, address, threads, convert_each, sign_key, bundle_version):
    """Train and export one model and bundle per machine, in parallel, and write the fleet index.

    fleet.json holds, per machine: its bundle and model paths, the bundle's version and size,
    the training data's sha256, the calibration metrics, the seconds for train and export, and
    the error of a build that failed. One machine's failure does not stop the others (the command
    then exits 1). A re-run builds only the machines whose data or settings changed, or that
    failed, so an interrupted run resumes.

    Examples:

    \b
        edge-detector fleet train ../shared/data/skab --out fleet/ --preset rig --train-rows 400
        edge-detector fleet train pumps.csv --asset-col pump --out fleet/ --backend ray --address auto
    """
    _require_train_extra()
    from edge_detector.export.fleet import FleetSettings, train_fleet  # noqa: PLC0415
    overrides = {k: v for k, v in dict(seed=seed, window=window, epochs=epochs).items() if v is not None}
    settings = FleetSettings(preset, overrides, _names(sensors), label_col, timestamp_col, train_rows, threads,
                             convert_each)
    with reported(InputError):
        index = train_fleet(data, out, settings, asset_col, backend, workers, address, sign_key, bundle_version,
                            progress=_echo_err, exclude=exclude)
    run = index["last_run"]
    click.echo("fleet written to %s: %d built, %d failed, %d unchanged" % (out, run["built"], run["failed"],
                                                                         run["skipped"]))
    if run["failed"]:
        raise click.ClickException("%d machines failed; their errors are in %s (edge-detector fleet report %s)"
                                   % (run["failed"], os.path.join(out, "fleet.json"), out))


@fleet.command("report", short_help="The fleet's table: calibration metrics, bundle size and version, failures.")
@click.argument("fleet_dir", type=click.Path(file_okay=False))
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Write the report as JSON.")
@click.option("--markdown", "md_out", default=None, type=click.Path(dir_okay=False), help="Write the table as Markdown.")
def fleet_report_cmd(fleet_dir, json_out, md_out):
    """Print the fleet's table from its fleet.json: per machine, the calibration metrics, the bundle's size and
    version, the seconds for train and export, and any failure.

    Example:

    \b
        edge-detector fleet report fleet/ --markdown fleet.md --json fleet-report.json
    """
    from edge_detector.export.fleet import fleet_report, format_report  # noqa: PLC0415
    from edge_detector.export.files import atomic_file, write_json  # noqa: PLC0415
    with reported(InputError):
        report = fleet_report(fleet_dir)
    click.echo(format_report(report))
    if json_out:
        write_json(json_out, report)
    if md_out:
        with atomic_file(md_out, "w", encoding="utf-8") as fh:
            fh.write(format_report(report, markdown=True))


if __name__ == "__main__":
    cli()
