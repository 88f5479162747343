"""A fleet: one model per machine, trained and exported in parallel, with an index that lets a run resume.

    DATA (a folder of CSVs | one CSV split by --asset-col) -> machines -> one task per machine
        (train -> export, in a fresh worker process: a local process pool, or a Ray task)
        -> FLEET/machines/<name>/{model/, bundle/}  and  FLEET/fleet.json

A task gets the machine's CSV as bytes and hands back its model and bundle folders as one tar
archive, so the same task runs on a Ray cluster whose nodes share no disk with this one. Signing
happens here, after a bundle came back: the private key never leaves the workstation. One
machine's failure is recorded in the index and the rest go on; a machine whose data and settings
are unchanged since its last good build is skipped, so an interrupted run resumes where it stopped.
"""
import csv
import fnmatch
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import time
import traceback
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence

from edge_detector import __version__
from edge_detector.runtime import MANIFEST, BundleError, InputError, load_manifest

from .files import atomic_folder, write_json
from .progress import Bar, Progress, log

FLEET_JSON = "fleet.json"
SCHEMA = "edge-detector-fleet/1"
BACKENDS = ("local", "ray")
NAME_RULE = re.compile(r"^[A-Za-z0-9_.-]{1,64}(/[A-Za-z0-9_.-]{1,64}){0,3}$")


class Machine(NamedTuple):
    """One machine's training data: its name (a folder under FLEET/machines), its CSV bytes, where they came from."""
    name: str
    data: bytes
    source: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class FleetSettings(NamedTuple):
    """What every machine is built with; ``digest`` says whether a machine built before is still current."""
    preset: str = "trend"
    overrides: Optional[dict] = None          # TrainConfig fields over the preset (window, epochs, ...)
    sensors: Optional[List[str]] = None
    label_col: Optional[str] = None
    timestamp_col: Optional[str] = None
    train_rows: Optional[int] = None          # train on each machine's first N rows (else the preset's train fraction)
    threads: int = 1                          # TensorFlow and BLAS threads per task (and Ray CPUs per task)
    convert_each: bool = False                # convert each machine like `export` (no template, tidy ONNX)

    def digest(self) -> str:
        fields = {k: v for k, v in self._asdict().items() if k != "threads"}
        fields["package_version"] = __version__
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------ the machines

def check_name(name: str) -> str:
    """``name`` when it is a safe folder name (letters, digits, '.', '_', '-'; '/' between parts); InputError otherwise.

    >>> check_name("valve1/0")
    'valve1/0'
    """
    if not NAME_RULE.match(name) or any(part in (".", "..") for part in name.split("/")):
        raise InputError("machine name %r: must be 1-64 letters, digits, '.', '_' or '-' per part (up to 4 parts "
                         "joined by '/'), and no part '.' or '..'" % name)
    return name


def machines_in_folder(folder: str) -> List[Machine]:
    """One Machine per CSV file under ``folder`` (searched recursively), named by its path without ``.csv``."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(".csv"):
                path = os.path.join(root, f)
                name = os.path.relpath(path, folder)[:-4].replace(os.sep, "/")
                try:
                    with open(path, "rb") as fh:
                        found.append(Machine(check_name(name), fh.read(), os.path.abspath(path)))
                except OSError as exc:
                    raise InputError("%s cannot be read (%s)" % (path, exc.strerror or exc)) from None
    return found


def machines_by_column(path: str, asset_col: str) -> List[Machine]:
    """One Machine per value of ``asset_col`` in the CSV at ``path``: its rows, in order, without that column."""
    rows: Dict[str, List[List[str]]] = {}
    line_no = 1
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header or asset_col not in header:
                raise InputError("%s has no column %r (its columns: %s)" % (path, asset_col, ", ".join(header or [])))
            k = header.index(asset_col)
            for line_no, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise InputError("%s line %d: %d fields, the header has %d" % (path, line_no, len(row),
                                                                                    len(header)))
                rows.setdefault(row[k], []).append(row[:k] + row[k + 1:])
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputError("%s near line %d cannot be split by %r: %s" % (path, line_no + 1, asset_col, exc)) from None
    out = []
    for name, group in rows.items():
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header[:k] + header[k + 1:])
        writer.writerows(group)
        out.append(Machine(check_name(name), buf.getvalue().encode("utf-8"), "%s [%s=%s]" % (path, asset_col, name)))
    return out


def select_machines(data: str, asset_col: Optional[str] = None, exclude: Sequence[str] = ()) -> List[Machine]:
    """``find_machines`` without those whose name matches one of the ``exclude`` shell patterns."""
    return [m for m in find_machines(data, asset_col) if not any(fnmatch.fnmatchcase(m.name, p) for p in exclude)]


def find_machines(data: str, asset_col: Optional[str] = None) -> List[Machine]:
    """The machines of DATA: a folder with one CSV per machine, or one CSV split by ``asset_col``."""
    if os.path.isdir(data):
        if asset_col:
            raise InputError("the asset column splits one CSV file; %s is a folder (one CSV per machine)" % data)
        machines = machines_in_folder(data)
    elif os.path.isfile(data):
        if not asset_col:
            raise InputError("%s is one file: give the asset column, the column that names each machine, or a folder "
                             "with one CSV per machine" % data)
        machines = machines_by_column(data, asset_col)
    else:
        raise InputError("fleet data %r: no such file or folder" % data)
    if not machines:
        raise InputError("fleet data %r holds no machine (no .csv file)" % data)
    check_distinct(machines)
    check_folders(m.name for m in machines)
    return machines


def check_distinct(machines: Sequence[Machine]) -> None:
    """InputError when two machines have one name ignoring case (``pump.csv`` and ``pump.CSV`` are both ``pump``;
    ``Pump`` and ``pump`` share a folder on a case-insensitive file system): one would replace the other."""
    seen: Dict[str, Machine] = {}
    for m in machines:
        first = seen.setdefault(m.name.casefold(), m)
        if first is not m:
            raise InputError("machines %r (from %s) and %r (from %s) have the same name ignoring case: one would "
                             "replace the other; rename one" % (first.name, first.source, m.name, m.source))


def check_folders(names: Iterable[str]) -> None:
    """InputError when one machine's folder would hold another's (``x`` and ``x/y``): storing one replaces the other.

    >>> check_folders(["valve1/0", "valve1/1", "other/0"])
    """
    names = set(names)
    for b in sorted(names):
        parts = b.split("/")
        for a in ("/".join(parts[:k]) for k in range(1, len(parts))):
            if a in names:
                raise InputError("machine names %r and %r: the first one's folder would hold the second's; rename one"
                                 % (a, b))


# ------------------------------------------------------------------ one machine's task (runs in a worker)

def build_machine(name: str, data: bytes, settings: FleetSettings, version: int) -> dict:
    """Train and export one machine in this process; returns {name, ok, archive (tar bytes of model/ and bundle/),
    metrics, train_s, export_s} or {name, ok: False, error, traceback}. Never raises: a failure is a result."""
    from .convert import export_bundle  # noqa: PLC0415 (TensorFlow: only in the worker)
    from .data import load_csv  # noqa: PLC0415
    from .train import preset_config, train  # noqa: PLC0415
    t0 = time.time()
    result = {"name": name, "ok": False, "host": os.uname().nodename}
    try:
        with tempfile.TemporaryDirectory(prefix="fleet-") as tmp:
            csv_path, model_dir, bundle_dir = (os.path.join(tmp, n) for n in ("data.csv", "model", "bundle"))
            with open(csv_path, "wb") as fh:
                fh.write(data)
            dataset = load_csv(csv_path, sensors=settings.sensors, label_col=settings.label_col,
                               timestamp_col=settings.timestamp_col)
            config = preset_config(settings.preset, **train_overrides(settings, len(dataset.values)))
            meta = train(dataset, model_dir, config, progress=None, source=csv_path)
            t1 = time.time()
            export_bundle(model_dir, dataset, bundle_dir, progress=None, version=version,
                          fast_conversion=not settings.convert_each)
            t2 = time.time()
            with open(os.path.join(model_dir, "metrics.json")) as fh:
                metrics = json.load(fh)
            result.update(ok=True, archive=_tar_folders(tmp, ("model", "bundle")), train_s=round(t1 - t0, 2),
                          export_s=round(t2 - t1, 2), metrics=calibration_metrics(meta, metrics))
    except Exception as exc:   # noqa: BLE001 (one machine's failure, a bug included, must not stop the fleet)
        result.update(error="%s: %s" % (type(exc).__name__, exc), traceback=traceback.format_exc())
    result["seconds"] = round(time.time() - t0, 2)
    return result


def train_overrides(settings: FleetSettings, rows: int) -> dict:
    """The TrainConfig fields a machine is trained with: the settings' overrides, and ``train_rows`` as a fraction.

    >>> train_overrides(FleetSettings(train_rows=400), 1000)
    {'train_fraction': 0.4}
    """
    overrides = dict(settings.overrides or {})
    if settings.train_rows:
        if settings.train_rows >= rows:
            raise InputError("%d training rows asked for: the machine's data has only %d rows" % (settings.train_rows, rows))
        overrides["train_fraction"] = settings.train_rows / rows
    return overrides


def calibration_metrics(meta: dict, metrics: dict) -> dict:
    """The index's figures of one model, all from its calibration split (normal rows after training)."""
    val = metrics.get("val_loss") or [None]
    return dict(metrics.get("calibration") or {}, tau1=meta["thresholds"]["tau1"], tau2=meta["thresholds"]["tau2"],
                threshold=(meta.get("threshold") or {}).get("kind", "static"), epochs=meta["epochs_run"],
                val_loss=val[-1], rows=meta["training_data"]["rows"], train_rows=meta["training_data"]["train_rows"])


def _tar_folders(root: str, names: Sequence[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for n in names:
            tar.add(os.path.join(root, n), arcname=n)
    return buf.getvalue()


def _worker_environment(threads: int) -> None:
    from .tf_setup import tf_environment  # noqa: PLC0415
    os.environ.update(tf_environment(threads))


# ------------------------------------------------------------------ backends: each yields results as they finish

Task = tuple   # (name, data, settings, version)


def run_local(tasks: List[Task], workers: int, threads: int) -> Iterable[dict]:
    """Each task in a pool of ``workers`` fresh processes (spawned: TensorFlow does not survive a fork)."""
    import multiprocessing  # noqa: PLC0415
    from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: PLC0415
    from concurrent.futures.process import BrokenProcessPool  # noqa: PLC0415
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_environment,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(build_machine, *t): t[0] for t in tasks}
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except BrokenProcessPool as exc:
                yield {"name": futures[fut], "ok": False, "error": "its worker process died (%s)" % exc}


def run_ray(tasks: List[Task], address: Optional[str], threads: int) -> Iterable[dict]:
    """Each task as one Ray task declaring ``threads`` CPUs, with TensorFlow limited to as many threads.

    Uses the Ray this process is connected to, else ``ray.init(address)`` ("auto", "ray://head:10001", or
    None for a local Ray). Every node needs this package installed (the extra [fleet]).
    """
    try:
        import ray  # noqa: PLC0415
    except ImportError:
        raise InputError("the ray backend needs Ray: pip install 'edge-detector[fleet]'") from None
    from .tf_setup import tf_environment  # noqa: PLC0415
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    remote = ray.remote(build_machine).options(num_cpus=threads, max_retries=0,
                                               runtime_env={"env_vars": tf_environment(threads)})
    pending = {remote.remote(*t): t[0] for t in tasks}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        name = pending.pop(done[0])
        try:
            yield ray.get(done[0])
        except ray.exceptions.RayError as exc:
            yield {"name": name, "ok": False, "error": "Ray task failed: %s" % str(exc).splitlines()[0]}


# ------------------------------------------------------------------ the driver

class FleetProgress:
    """One bar for the fleet: machines done, failed and left, and the time left at the pace so far."""

    def __init__(self, progress: Progress, total: int):
        self.bar, self.t0, self.total = Bar(progress, "fleet", total), time.time(), total
        self.done = self.failed = 0
        self.progress = progress

    def note(self) -> str:
        finished = self.done + self.failed
        left = self.total - finished
        eta = (time.time() - self.t0) / finished * left if finished else None
        return "done %d, failed %d, left %d%s" % (self.done, self.failed, left,
                                                  ", about %s left" % _duration(eta) if eta and left else "")

    def update(self, result: dict) -> None:
        self.done += bool(result.get("ok"))
        self.failed += not result.get("ok")
        if not self.bar.live:
            log(self.progress, "%s %s%s" % (result["name"], "built in %.0fs" % result.get("seconds", 0)
                                            if result.get("ok") else "FAILED: " + result.get("error", "?"),
                                            "  (" + self.note() + ")"))
        self.bar.update(self.done + self.failed, self.note())

    def finish(self) -> None:
        self.bar.done(self.note() + ", %s" % _duration(time.time() - self.t0))


def _duration(seconds: float) -> str:
    return "%.0fs" % seconds if seconds < 90 else "%dm%02ds" % divmod(int(seconds), 60)


def read_index(fleet_dir: str) -> dict:
    """fleet.json of ``fleet_dir`` ({} when there is none yet); InputError when it is not a fleet index."""
    path = os.path.join(fleet_dir, FLEET_JSON)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as fh:
            index = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError("%s cannot be read as a fleet index (%s)" % (path, exc)) from None
    if not isinstance(index, dict) or index.get("schema") != SCHEMA:
        raise InputError("%s is not a fleet index (schema %r, expected %r)" % (path, index.get("schema")
                         if isinstance(index, dict) else None, SCHEMA))
    return index


def is_current(entry: Optional[dict], machine: Machine, settings_digest: str, fleet_dir: str) -> bool:
    """A machine built before needs no new build: it succeeded, on the same data and settings, and its bundle loads."""
    if not entry or entry.get("status") != "ok" or entry.get("data_sha256") != machine.sha256 \
            or entry.get("settings_sha256") != settings_digest:
        return False
    try:
        load_manifest(os.path.join(fleet_dir, entry["bundle"]))
    except (BundleError, KeyError):
        return False
    return True


def store_result(fleet_dir: str, result: dict, machine: Machine, sign_key: Optional[str]) -> dict:
    """Unpack a good result into FLEET/machines/<name> (atomically), sign its bundle; returns its index entry."""
    folder = os.path.join("machines", machine.name)
    with atomic_folder(os.path.join(fleet_dir, folder), prefix=".machine-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(result["archive"]), mode="r:gz") as tar:
            if hasattr(tarfile, "data_filter"):      # Python >= 3.11.4 / 3.10.12 / 3.9.17
                tar.extractall(tmp, filter="data")
            else:
                tar.extractall(tmp)  # noqa: S202 (our own worker's archive)
        _record_source(os.path.join(tmp, "model"), machine.source)
        if sign_key:
            _sign_bundle(os.path.join(tmp, "bundle"), sign_key)
    bundle = os.path.join(folder, "bundle")
    manifest = load_manifest(os.path.join(fleet_dir, bundle))
    size = sum(os.path.getsize(os.path.join(fleet_dir, bundle, f)) for f in os.listdir(os.path.join(fleet_dir, bundle)))
    return {"bundle": bundle, "model": os.path.join(folder, "model"), "version": manifest["bundle_version"],
            "signed": bool(sign_key), "bundle_bytes": size}


def _record_source(model_dir: str, source: str) -> None:
    # model.json names the CSV the model was trained on; in the task that was a temporary file
    path = os.path.join(model_dir, "model.json")
    with open(path) as fh:
        meta = json.load(fh)
    meta["training_data"]["path"] = source if os.path.isfile(source) else None
    write_json(path, meta)


def _sign_bundle(bundle_dir: str, sign_key: str) -> None:
    from .convert import write_manifest  # noqa: PLC0415
    with open(os.path.join(bundle_dir, MANIFEST)) as fh:
        write_manifest(bundle_dir, json.load(fh), sign_key)


def train_fleet(data: str, out: str, settings: Optional[FleetSettings] = None, asset_col: Optional[str] = None,
                backend: str = "local", workers: int = 2, address: Optional[str] = None,
                sign_key: Optional[str] = None, version: Optional[int] = None, progress: Progress = print,
                exclude: Sequence[str] = ()) -> dict:
    """Build one model and bundle per machine of ``data`` into ``out``; returns the fleet index (fleet.json).

    ``backend`` "local" runs ``workers`` processes here; "ray" one Ray task per machine (``address``).
    The index has, per machine: status (ok | failed | skipped: unchanged), bundle and model paths, bundle
    version and size, the training data's sha256, the settings' sha256, the calibration metrics, the
    seconds for train and export, the host, and the error of a failed build. It is written after each
    machine, so an interrupted run keeps what finished; a re-run rebuilds only what changed or failed.
    """
    settings = settings or FleetSettings()
    if backend not in BACKENDS:
        raise InputError("backend must be one of %s, got %r" % (", ".join(BACKENDS), backend))
    if workers < 1 or settings.threads < 1:
        raise InputError("workers and threads must be >= 1, got %d and %d" % (workers, settings.threads))
    machines = select_machines(data, asset_col, exclude)
    index = read_index(out) or {"schema": SCHEMA, "machines": {}}
    index.update(data=os.path.abspath(data), asset_col=asset_col, settings=settings._asdict(), backend=backend,
                 package_version=__version__)
    digest = settings.digest()
    by_name = {m.name: m for m in machines}
    todo = [m for m in machines if not is_current(index["machines"].get(m.name), m, digest, out)]
    for m in machines:
        if m not in todo:
            index["machines"][m.name]["status_note"] = "unchanged: skipped on %s" % time.strftime("%Y-%m-%d %H:%M:%S")
    log(progress, "fleet: %d machines, %d to build, %d unchanged (%s)" % (
        len(machines), len(todo), len(machines) - len(todo),
        "local backend, %d workers" % workers if backend == "local" else "Ray backend"))
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, FLEET_JSON), index)
    version = int(time.time()) if version is None else int(version)
    tasks = [(m.name, m.data, settings, version) for m in todo]
    results = run_local(tasks, workers, settings.threads) if backend == "local" else \
        run_ray(tasks, address, settings.threads)
    bar = FleetProgress(progress, len(todo))
    t0 = time.time()
    for result in results:
        machine = by_name[result["name"]]
        entry = {"data_sha256": machine.sha256, "source": machine.source, "settings_sha256": digest,
                 "seconds": result.get("seconds"), "train_s": result.get("train_s"),
                 "export_s": result.get("export_s"), "host": result.get("host"),
                 "built": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if result.get("ok"):
            try:
                entry.update(store_result(out, result, machine, sign_key), status="ok", metrics=result["metrics"])
            except (BundleError, InputError, OSError) as exc:
                result = dict(result, ok=False, error="storing or signing the bundle failed: %s" % exc)
        if not result.get("ok"):
            entry.update(status="failed", error=result.get("error"), traceback=result.get("traceback"))
        index["machines"][machine.name] = entry
        write_json(os.path.join(out, FLEET_JSON), index)
        bar.update(result)
    bar.finish()
    index["last_run"] = {"built": bar.done, "failed": bar.failed, "skipped": len(machines) - len(todo),
                         "seconds": round(time.time() - t0, 1),
                         "workers": workers if backend == "local" else None}
    write_json(os.path.join(out, FLEET_JSON), index)
    return index


# ------------------------------------------------------------------ the report

REPORT_COLUMNS = ("machine", "status", "version", "KiB", "epochs", "val loss", "s1 share", "s2 share", "tau2",
                  "train s", "export s", "error")


def fleet_rows(index: dict) -> List[List[str]]:
    """One row of REPORT_COLUMNS per machine of a fleet index, sorted by name."""
    rows = []
    for name, e in sorted(index.get("machines", {}).items()):
        m = e.get("metrics") or {}
        f = lambda v, fmt: "-" if v is None else fmt % v  # noqa: E731
        kib = None if e.get("bundle_bytes") is None else e["bundle_bytes"] / 1024
        rows.append([name, e.get("status", "?"), str(e.get("version", "-")), f(kib, "%.1f"), f(m.get("epochs"), "%d"),
                     f(m.get("val_loss"), "%.4f"), f(m.get("stage1_share_above_tau1"), "%.3f"),
                     f(m.get("stage2_share_above_tau2"), "%.4f"), f(m.get("tau2"), "%.4g"),
                     f(e.get("train_s"), "%.1f"), f(e.get("export_s"), "%.1f"), e.get("error") or ""])
    return rows


def fleet_report(fleet_dir: str) -> dict:
    """{index, columns, rows, summary} of the fleet at ``fleet_dir``; InputError when it has no index."""
    index = read_index(fleet_dir)
    if not index:
        raise InputError("%s is not a fleet: it has no %s (edge-detector fleet train makes one)" % (fleet_dir, FLEET_JSON))
    entries = list(index.get("machines", {}).values())
    ok = [e for e in entries if e.get("status") == "ok"]
    built = [e for e in ok if e.get("train_s") is not None]
    summary = {"machines": len(entries), "ok": len(ok), "failed": len(entries) - len(ok),
               "mean_train_s": _mean([e["train_s"] for e in built]),
               "mean_export_s": _mean([e["export_s"] for e in built]),
               "last_run": index.get("last_run")}
    return {"fleet": os.path.abspath(fleet_dir), "summary": summary, "columns": list(REPORT_COLUMNS),
            "rows": fleet_rows(index), "machines": index.get("machines", {})}


def _mean(values: List[float]) -> Optional[float]:
    return round(sum(values) / len(values), 2) if values else None


def format_report(report: dict, markdown: bool = False) -> str:
    """The fleet table as fixed-width text or as Markdown, with a summary line."""
    s = report["summary"]
    head = "%d machines: %d ok, %d failed; mean train %s s, export %s s per machine" % (
        s["machines"], s["ok"], s["failed"], s["mean_train_s"], s["mean_export_s"])
    cols, rows = report["columns"], report["rows"]
    if markdown:
        lines = ["# Fleet %s" % report["fleet"], "", head, "", "| " + " | ".join(cols) + " |",
                 "|" + "|".join("---" if i < 2 or i == len(cols) - 1 else "---:" for i in range(len(cols))) + "|"]
        return "\n".join(lines + ["| " + " | ".join(c.replace("|", "/") or " " for c in r) + " |" for r in rows]) + "\n"
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols[:-1])]
    line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths))) + "  " + cells[-1]
    return "\n".join([head, "", line(cols).rstrip(), "-" * (sum(widths) + 2 * len(widths) + 5)]
                     + [line(r).rstrip() for r in rows])
