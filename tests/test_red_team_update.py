"""Red team of the signed update path (issue 21, cases 1-8 and 19, and new ones of the same kinds).

Each test plays an attacker (or an unlucky plant) against the gateway: files swapped between check
and use, symlinks, FIFOs, oversized inputs, truncated or garbage signatures, a planted module in the
working directory, a rollback through a switched symlink. Each test failed on the code before
issue 21 (the case it reproduces is named in its docstring), except the last two, which hold the
threat table's other rows (fast-forward, mix-and-match, a removed key) and its test names;
deploy/README.md's threat table points here. Keys come from ``ssh-keygen``; install.sh runs in a temporary prefix as in tests/test_deploy.py.
"""
import base64
import hashlib
import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from edge_detector.cli import cli
from edge_detector.runtime import BundleError, Detector
from edge_detector.runtime import bundle as bundle_module
from edge_detector.runtime.reload import Reloader
from edge_detector.runtime.signature import ARMOR_BEGIN, ARMOR_END, BUNDLE_NAMESPACE, verify
from edge_detector.runtime.trust import LEDGER, load_trust
from tests.conftest import REPO, SYSTEM_PYTHON
from tests.test_hot_swap import csv_rows, make_bundle, put_in_place
from tests.test_signing import keygen

pytestmark = pytest.mark.slow
DEPLOY = REPO / "deploy"
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
REPO_ENV = dict(CLEAN_ENV, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")     # this checkout's code in a subprocess
RUNTIME = [sys.executable, "-m", "edge_detector.runtime"]                  # python3 -m runtime, from this checkout


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return keygen(folder, "owner"), keygen(folder, "stranger")


def pub(key):
    return str(key) + ".pub"


def signed_bundle(trained, dst, version, key, change=None):
    _, src = trained
    return make_bundle(src, dst, version, key=key, change=change)


def detect(bundle, csv_path, keys_pub, state, *more):
    return CliRunner().invoke(cli, ["detect", str(bundle), str(csv_path), "--trusted-keys", str(keys_pub),
                                    "--state-dir", str(state), "--alarms-only", *more])


def archive_of(bundle, folder, key=None, name="gateway.tar.gz"):
    from edge_detector.export.package import build_package
    out = folder / name
    build_package(str(bundle), str(out), sign_key=str(key) if key else None)
    return out


def unpack(archive, folder):
    with tarfile.open(archive) as tar:
        tar.extractall(folder)
    return folder / "gateway"


def reseal(root):
    """Rewrite SHA256SUMS for the files under ``root`` (what an attacker does after changing one)."""
    sums = "".join("%s  %s\n" % (hashlib.sha256(p.read_bytes()).hexdigest(), p.relative_to(root))
                   for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and p.name != "SHA256SUMS")
    (root / "SHA256SUMS").write_text(sums)


def install(archive, prefix, *more, python=SYSTEM_PYTHON):
    argv = ["bash", str(DEPLOY / "install.sh"), "--runtime", str(archive), "--prefix", str(prefix), "--no-user",
            "--no-systemd", "--python", str(python), *more]
    proc = subprocess.run(argv, capture_output=True, text=True, env=CLEAN_ENV, timeout=600)
    if proc.returncode != 0 and "numpy" in proc.stderr and "No matching distribution" in proc.stderr:
        pytest.skip("install.sh could not download numpy: %s" % proc.stderr[-300:])
    return proc


# ---------------------------------------------------------------- case 1: install.sh verifies one file, unpacks another

def test_install_sh_unpacks_the_archive_it_verified_not_one_swapped_in_after(trained, keys, tmp_path, open_dir):
    """Case 1: the archive is swapped for an unsigned one while install.sh builds the venv (after the signature
    check, before tar). Before: "signature verified", and the planted runtime was installed."""
    owner, _ = keys
    genuine = archive_of(signed_bundle(trained, tmp_path / "bundle", 1, owner), tmp_path, owner)
    root = unpack(genuine, tmp_path / "evil")
    main = root / "runtime" / "__main__.py"
    genuine_main = main.read_bytes()
    main.write_bytes(b"# planted by the attacker\n" + genuine_main)
    reseal(root)
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(root, arcname="gateway")
    # the attacker's move, made deterministic: the python that builds the venv swaps the archive first
    python = tmp_path / "python3"
    python.write_text('#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = venv ]; then cp "%s" "%s"; fi\nexec "%s" "$@"\n'
                      % (evil, genuine, shutil.which(SYSTEM_PYTHON)))
    python.chmod(0o755)
    prefix = open_dir / "opt"
    proc = install(genuine, prefix, "--trusted-keys", pub(owner), python=python)
    assert genuine.read_bytes() == evil.read_bytes()              # the swap did happen
    assert "signature verified" in proc.stdout
    installed = prefix / "runtime" / "__main__.py"
    assert not installed.exists() or installed.read_bytes() == genuine_main, "the swapped-in runtime was installed"
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------- case 3 (+ new): links and special files in the archive

@pytest.mark.parametrize("plant", ["bundle-is-a-link", "file-is-a-link", "fifo"])
def test_install_sh_refuses_links_and_special_files_and_never_chmods_through_one(trained, tmp_path, open_dir, plant):
    """Case 3: gateway/bundle a symlink to a 0700 folder holding a 0600 key: before, cp -R copied the link and
    chmod -R as root opened the folder to 0755 and the key to 0644. New: a runtime file that is a link to a secret,
    a FIFO in the runtime (both were installed before)."""
    _, bundle = trained
    root = unpack(archive_of(bundle, tmp_path), tmp_path / "unpacked")
    secret = open_dir / "secret"
    if plant == "bundle-is-a-link":                               # the folder holds the bundle's files (sums match)
        shutil.copytree(root / "bundle", secret)
        shutil.rmtree(root / "bundle")
        os.symlink(secret, root / "bundle")
    else:
        secret.mkdir()
    (secret / "id_ed25519").write_text("private key\n")
    (secret / "id_ed25519").chmod(0o600)
    secret.chmod(0o700)
    if plant == "file-is-a-link":
        os.symlink(secret / "id_ed25519", root / "runtime" / "keys.py")
    elif plant == "fifo":
        os.mkfifo(root / "runtime" / "pipe")
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(root, arcname="gateway")
    proc = install(evil, open_dir / "opt")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o700 and stat.S_IMODE((secret / "id_ed25519").stat().st_mode) == 0o600
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "which is not a plain file or folder" in proc.stderr
    assert not (open_dir / "opt").exists()                        # refused before anything was made


def test_install_sh_package_mode_refuses_a_link_inside_the_bundle(trained, tmp_path, open_dir):
    """New: --package --bundle DIR whose folder holds a symlink to a secret: refused (it was copied as a link and
    chmodded through before)."""
    _, src = trained
    bundle = tmp_path / "bundle"
    shutil.copytree(src, bundle)
    secret = open_dir / "secret"
    secret.mkdir(mode=0o700)
    (secret / "key").write_text("k")
    (secret / "key").chmod(0o600)
    os.symlink(secret, bundle / "extra")
    proc = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--package", "--bundle", str(bundle), "--prefix",
                           str(open_dir / "opt"), "--no-user", "--no-systemd", "--python", SYSTEM_PYTHON],
                          capture_output=True, text=True, env=CLEAN_ENV, timeout=600)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o700 and stat.S_IMODE((secret / "key").stat().st_mode) == 0o600
    assert proc.returncode == 1 and "extra, which is not a plain file or folder" in proc.stderr, proc.stderr
    assert not (open_dir / "opt").exists()                        # refused before anything was made


# ---------------------------------------------------------------- case 2: rollback through a symlink switched back

def test_a_rollback_through_a_switched_symlink_is_refused(trained, keys, synthetic, tmp_path):
    """Case 2: bundle -> releases/v2 (as the README recommends), then the link switched back to the older, signed
    releases/v1. Before: accepted (the ledger was keyed by the resolved folder and then held both)."""
    owner, _ = keys
    _, csv_path = synthetic
    releases = tmp_path / "releases"
    signed_bundle(trained, releases / "v1", 1, owner)
    signed_bundle(trained, releases / "v2", 2, owner)
    link = tmp_path / "bundle"
    os.symlink(releases / "v2", link)
    state = tmp_path / "state"
    assert detect(link, csv_path, pub(owner), state).exit_code == 0
    os.symlink(releases / "v1", tmp_path / "next")
    os.replace(tmp_path / "next", link)                            # the operator's atomic switch, backwards
    result = detect(link, csv_path, pub(owner), state)
    assert result.exit_code == 1, result.output
    assert "has version 1, older than version 2 accepted before at this location: a rollback is refused" in result.output
    assert json.loads((state / LEDGER).read_text()) == {str(link): 2}
    # a ledger written before this change (keyed by the resolved folder) still guards the folder it names
    old_state = tmp_path / "old-state"
    old_state.mkdir()
    (old_state / LEDGER).write_text(json.dumps({os.path.realpath(releases / "v2"): 2}))
    os.rename(releases / "v2", releases / "v2.aside")
    os.rename(releases / "v1", releases / "v2")                   # the older one renamed into its place
    os.symlink(releases / "v2", tmp_path / "next")
    os.replace(tmp_path / "next", link)
    assert "a rollback is refused" in detect(link, csv_path, pub(owner), old_state).output


# ---------------------------------------------------------------- case 4: a refused reload is not recorded

def test_a_refused_reload_is_not_recorded_and_the_running_bundle_restarts(trained, keys, tmp_path):
    """Case 4: a signed v2 for other sensors is refused on reload (v1 keeps scoring), but was recorded, so the
    restart with v1 failed as a rollback: a crash loop under systemd. An accepted reload is recorded."""
    owner, _ = keys
    slot = signed_bundle(trained, tmp_path / "bundle", 1, owner)
    trust = load_trust(pub(owner), str(tmp_path / "state"))
    reloader = Reloader(str(slot), trust=trust)

    class Scorer:
        detector = reloader.load()
        swapped = []

        def use(self, detector):
            self.swapped.append(detector)
    scorer = Scorer()
    ledger = tmp_path / "state" / LEDGER
    assert json.loads(ledger.read_text()) == {str(slot): 1}
    other = signed_bundle(trained, tmp_path / "v2", 2, owner,
                          change=lambda m: m.update(sensors=["pump_%d" % i for i in range(len(m["sensors"]))]))
    put_in_place(other, slot)
    reloader.request()
    notes = []
    assert reloader.between(scorer, notes.append) is False and "are not the running bundle's" in notes[0]["notice"]
    assert json.loads(ledger.read_text()) == {str(slot): 1}, "a refused bundle was recorded as accepted"
    # the operator puts v1 back and restarts: it starts
    put_in_place(signed_bundle(trained, tmp_path / "v1-again", 1, owner), slot)
    assert Detector.load(str(slot), trust=trust).manifest["bundle_version"] == 1
    # an accepted reload is recorded once swapped in
    put_in_place(signed_bundle(trained, tmp_path / "v3", 3, owner), slot)
    reloader.request()
    assert reloader.between(scorer, notes.append) is True and len(scorer.swapped) == 1
    assert json.loads(ledger.read_text()) == {str(slot): 3}


# ---------------------------------------------------------------- case 5 (+ new): FIFOs

def _run(argv, timeout=60, **kw):
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=REPO_ENV, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        pytest.fail("%s blocked for %d s" % (" ".join(map(str, argv[2:4])), timeout))


@pytest.mark.parametrize("fifo", ["manifest.json", "manifest.sig", "weights.npz", "trusted-keys"])
def test_a_fifo_in_a_files_place_is_refused_at_once(trained, keys, synthetic, tmp_path, fifo):
    """Case 5: a named pipe in place of manifest.json or manifest.sig blocked open() before the regular-file
    check: no event, ever. New: weights.npz, and the trusted-keys file, as a FIFO (both blocked too)."""
    owner, _ = keys
    _, csv_path = synthetic
    bundle = signed_bundle(trained, tmp_path / "bundle", 1, owner)
    keys_file = tmp_path / "owner.pub"
    shutil.copy(pub(owner), keys_file)
    target = keys_file if fifo == "trusted-keys" else bundle / fifo
    target.unlink()
    os.mkfifo(target)
    proc = _run(RUNTIME + [str(bundle), str(csv_path), "--trusted-keys", str(keys_file), "--state-dir",
                           str(tmp_path / "state")], timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert "%s is not a regular file (a FIFO)" % target in proc.stderr and "Traceback" not in proc.stderr


def _gather(stream, into):
    for line in stream:
        into.append(line)


def test_a_fifo_swapped_in_on_watch_is_refused_and_sigterm_still_stops_it(trained, keys, synthetic, tmp_path):
    """Case 5 on --watch: manifest.json replaced by a FIFO while running. Before: the reload blocked in open(),
    0 events for every later reading, and SIGTERM was ignored."""
    owner, _ = keys
    _, csv_path = synthetic
    header, rows = csv_rows(csv_path)
    bundle = signed_bundle(trained, tmp_path / "bundle", 1, owner)
    proc = subprocess.Popen(RUNTIME + [str(bundle), "--watch", "--trusted-keys", pub(owner), "--state-dir",
                                       str(tmp_path / "state")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=REPO_ENV)
    events, errors = [], []
    readers = [threading.Thread(target=_gather, args=(proc.stdout, events), daemon=True),
               threading.Thread(target=_gather, args=(proc.stderr, errors), daemon=True)]
    for r in readers:
        r.start()
    try:
        proc.stdin.write("\n".join([header] + rows[:100]) + "\n")
        proc.stdin.flush()
        deadline = time.time() + 60
        while len(events) < 100 and time.time() < deadline:
            time.sleep(0.05)
        assert len(events) == 100, "".join(errors)
        (bundle / "manifest.json").unlink()
        os.mkfifo(bundle / "manifest.json")
        sent = 100
        deadline = time.time() + 20
        while not any("refused" in e for e in errors) and time.time() < deadline and sent < len(rows):
            proc.stdin.write(rows[sent] + "\n")
            proc.stdin.flush()
            sent += 1
            time.sleep(0.05)
        assert any("not a regular file (a FIFO)" in e for e in errors), "no refusal: %s" % "".join(errors)
        deadline = time.time() + 20
        while len(events) < sent and time.time() < deadline:
            time.sleep(0.05)
        assert len(events) == sent                                  # every reading still scored, by the old bundle
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- case 6: the shipped examples pin the keys

def _telegraf_commands():
    text = (DEPLOY / "telegraf-execd.conf").read_text()
    found = re.findall(r'^\s*#?\s*command = (\[.*\])\s*$', text, flags=re.M)
    assert len(found) == 2, found                                 # run.sh, and the package's detect (a comment)
    return [json.loads(c)[-1] for c in found]


def test_the_telegraf_examples_score_only_the_owners_bundles(trained, keys, synthetic, tmp_path):
    """Case 6: deploy/telegraf-execd.conf ran run.sh (and, for the package, detect) without --trusted-keys: an
    unsigned bundle that the service refuses was scored there. Both commands run here with the paths moved."""
    owner, _ = keys
    _, unsigned = trained
    _, csv_path = synthetic
    opt = tmp_path / "opt"
    shutil.move(str(unpack(archive_of(unsigned, tmp_path), tmp_path / "u")), str(opt))
    shutil.copy(pub(owner), opt / "trusted-keys.pub")
    edge_detector = shutil.which("edge-detector")
    for shell in _telegraf_commands():
        for old, new in (("tail -n +1 -F", "cat"), ("/var/lib/sensors/readings.csv", str(csv_path)),
                         ("/opt/edge-detector/venv/bin/edge-detector", edge_detector or "edge-detector"),
                         ("/var/lib/telegraf/edge-detector", str(tmp_path / "state")), ("/opt/edge-detector", str(opt))):
            shell = shell.replace(old, new)
        proc = subprocess.run(["/bin/sh", "-c", shell], capture_output=True, text=True, timeout=120,
                              env=dict(REPO_ENV, PYTHON=sys.executable))
        assert proc.returncode == 1 and "is not signed (no manifest.sig)" in proc.stderr, (shell, proc.stderr[-500:])
        assert "--trusted-keys" in shell
    # the owner's signed bundle in its place is scored
    shutil.rmtree(opt / "bundle")
    signed_bundle(trained, opt / "bundle", 1, owner)
    proc = subprocess.run(["/bin/sh", "-c", shell], capture_output=True, text=True, timeout=120,
                          env=dict(REPO_ENV, PYTHON=sys.executable))
    assert proc.returncode == 0 and proc.stdout.startswith("edge_detector"), proc.stderr[-500:]


# ---------------------------------------------------------------- case 7: run.sh imports only the archive's runtime

def test_run_sh_runs_the_archives_own_runtime_never_a_planted_one(trained, synthetic, tmp_path):
    """Case 7: python3 -m runtime put the working directory first on sys.path: a planted runtime/ there ran (and
    --trusted-keys went to it). New: a planted numpy/ in the working directory, and one on PYTHONPATH, ran in
    run.sh's own checks."""
    _, bundle = trained
    _, csv_path = synthetic
    device = unpack(archive_of(bundle, tmp_path), tmp_path / "device")
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    marker = tmp_path / "planted-code-ran"
    for folder, package in ((work, "runtime"), (work, "numpy"), (elsewhere, "numpy"), (elsewhere, "runtime")):
        (folder / package).mkdir(parents=True)
        (folder / package / "__init__.py").write_text("open(%r, 'a').write(%r)\n" % (str(marker), str(folder)))
        (folder / package / "__main__.py").write_text("open(%r, 'a').write(%r)\n" % (str(marker), str(folder)))
    expected = CliRunner().invoke(cli, ["detect", str(bundle), str(csv_path), "--alarms-only"]).stdout
    for env in (dict(CLEAN_ENV, PYTHON=sys.executable), dict(CLEAN_ENV, PYTHON=sys.executable,
                                                              PYTHONPATH=str(elsewhere))):
        proc = subprocess.run(["sh", str(device / "run.sh"), str(csv_path), "--alarms-only"], cwd=work,
                              capture_output=True, text=True, env=env, timeout=120)
        assert not marker.exists(), "planted code ran from %s" % marker.read_text()
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == expected


# ---------------------------------------------------------------- case 8 (+ new): garbage signatures, oversized keys

def _armor(blob):
    body = base64.b64encode(blob).decode()
    return ("\n".join([ARMOR_BEGIN] + [body[i:i + 70] for i in range(0, len(body), 70)] + [ARMOR_END]) + "\n").encode()


def test_a_garbage_signature_is_refused_by_name_in_detect_and_the_runtime(trained, keys, synthetic, tmp_path):
    """Case 8: a 90-byte manifest.sig whose body is "SSHSIG" gave a struct.error traceback in detect and in
    python3 -m runtime."""
    owner, _ = keys
    _, csv_path = synthetic
    bundle = signed_bundle(trained, tmp_path / "bundle", 1, owner)
    (bundle / "manifest.sig").write_bytes(_armor(b"SSHSIG"))
    result = detect(bundle, csv_path, pub(owner), tmp_path / "state")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "the signature cannot be read (not an SSHSIG version 1 signature)" in result.output
    proc = _run(RUNTIME + [str(bundle), str(csv_path), "--trusted-keys", pub(owner)])
    assert proc.returncode == 1 and "the signature cannot be read" in proc.stderr and "Traceback" not in proc.stderr


def test_every_cut_flip_or_garbage_signature_is_a_bundle_error(trained, keys):
    """New: the signature of a real manifest cut at every length, each of its bytes flipped, and random garbage:
    each one is refused as a BundleError (a struct.error, IndexError or the like would be a bug)."""
    from edge_detector.export.signing import sign
    owner, _ = keys
    _, src = trained
    message = (src / "manifest.json").read_bytes()
    good = sign(message, str(owner), BUNDLE_NAMESPACE)
    trusted = [base64.b64decode(open(pub(owner)).read().split()[1])]
    verify(message, good, trusted, BUNDLE_NAMESPACE, "bundle")      # the uncut one verifies
    blob = base64.b64decode("".join(good.decode().strip().splitlines()[1:-1]))
    rng = np.random.default_rng(21)
    cases = [_armor(blob[:k]) for k in range(len(blob))]
    cases += [_armor(blob[:k] + bytes([blob[k] ^ (1 << int(rng.integers(8)))]) + blob[k + 1:]) for k in range(len(blob))]
    cases += [_armor(rng.bytes(int(n))) for n in rng.integers(0, 400, 200)]
    cases += [rng.bytes(int(n)) for n in rng.integers(0, 400, 50)] + [b"", b"\xff" * 90, good[:90], good * 2]
    for armored in cases:
        with pytest.raises(BundleError, match="^bundle: "):
            verify(message, armored, trusted, BUNDLE_NAMESPACE, "bundle")


def test_an_oversized_trusted_keys_file_is_refused_as_a_whole(keys, tmp_path):
    """Case 8: a valid keys file over 1 MiB was cut at 1 MiB and refused at a line in the middle."""
    owner, _ = keys
    line = open(pub(owner)).read()
    big = tmp_path / "many.pub"
    big.write_text(line * ((1 << 20) // len(line) + 10))
    with pytest.raises(BundleError) as refused:
        load_trust(str(big), str(tmp_path))
    message = str(refused.value)
    assert "%s is %d bytes, more than the 1048576 it may hold: refused as a whole" % (big, big.stat().st_size) \
        in message and "line" not in message
    fits = tmp_path / "fits.pub"
    fits.write_text(line * ((1 << 20) // len(line)))
    assert len(load_trust(str(fits), str(tmp_path)).keys) == (1 << 20) // len(line)


# ---------------------------------------------------------------- new: a bundle file swapped between check and use

def test_weights_swapped_after_their_check_are_never_used(trained, tmp_path, monkeypatch):
    """New (a race of case 1's kind inside the runtime): weights.npz replaced by other arrays of the same shapes
    right after every file's sha256 was checked. Before: the swapped weights were loaded, unverified."""
    _, src = trained
    bundle = tmp_path / "bundle"
    shutil.copytree(src, bundle)
    with np.load(bundle / "weights.npz") as npz:
        genuine = {k: npz[k] for k in npz.files}
    evil = io.BytesIO()
    np.savez(evil, **dict(genuine, **{"iforest/threshold": genuine["iforest/threshold"] + 1e6}))
    real_check = bundle_module.check_files

    def check_then_swap(path, files):
        real_check(path, files)
        (bundle / "weights.npz").write_bytes(evil.getvalue())          # the attacker wins the race
    monkeypatch.setattr(bundle_module, "check_files", check_then_swap)
    try:
        loaded = bundle_module.load_bundle(str(bundle))
    except BundleError as exc:
        assert "weights.npz has sha256" in str(exc)
        return
    assert np.array_equal(loaded.arrays["iforest/threshold"], genuine["iforest/threshold"]), \
        "weights swapped in after the check were loaded"


def test_a_huge_sparse_bundle_file_is_refused_by_size_without_reading_it(trained, tmp_path):
    """New (endless data): a listed file replaced by a 300 GB sparse file was read whole into memory before its
    sha256 could refuse it. Now its size is refused from fstat, by name."""
    _, src = trained
    bundle = tmp_path / "bundle"
    shutil.copytree(src, bundle)
    with open(bundle / "lstm_ae.tflite", "r+b") as fh:
        fh.truncate(300 * 2 ** 30)
    with pytest.raises(BundleError, match=r"lstm_ae.tflite is 322122547200 bytes, more than the 268435456"):
        Detector.load(str(bundle))


# ---------------------------------------------------------------- case 19: fleet names, evaluate's notice

def test_fleet_refuses_two_machines_whose_names_differ_only_in_case(synthetic, tmp_path):
    """Case 19: fleet train mapped pump.csv and pump.CSV to one machine without a word (one replaced the other).
    New: Pump.csv and pump.csv, one folder on a case-insensitive file system."""
    from edge_detector.export.fleet import find_machines
    from edge_detector.runtime import InputError
    _, csv_path = synthetic
    for a, b in (("pump.csv", "pump.CSV"), ("Pump.csv", "pump.csv")):
        folder = tmp_path / a.replace(".", "-")
        folder.mkdir()
        shutil.copy(csv_path, folder / a)
        shutil.copy(csv_path, folder / b)
        with pytest.raises(InputError, match="have the same name ignoring case: one would replace the other"):
            find_machines(str(folder))


def test_evaluate_names_a_column_it_ignores_as_detect_does(trained, synthetic, tmp_path):
    """Case 19: evaluate dropped a column the bundle does not know without a word, while detect named it."""
    _, bundle = trained
    _, csv_path = synthetic
    lines = csv_path.read_text().splitlines()
    extra = tmp_path / "extra.csv"
    extra.write_text("\n".join([lines[0] + ",vibration"] + [line + ",0.5" for line in lines[1:]]) + "\n")
    sentence = "columns ignored (not sensors of this bundle): vibration"
    detected = CliRunner().invoke(cli, ["detect", str(bundle), str(extra), "--alarms-only"])
    assert detected.exit_code == 0 and sentence in detected.stderr
    evaluated = CliRunner().invoke(cli, ["evaluate", str(bundle), str(extra), "--test-fraction", "0.2"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "%s line 1: %s" % (extra, sentence) in evaluated.stderr


@pytest.mark.parametrize("engine, name", [("onnx", "iforest.onnx"), ("tflite", "lstm_ae.tflite")])
def test_an_engines_model_swapped_after_the_check_is_never_run(trained, tmp_path, monkeypatch, engine, name):
    """New: the ONNX and TFLite engines read their model file by its path again after every file's sha256 was
    checked, so a model swapped in between ran unverified. Now they load the bytes that were verified."""
    pytest.importorskip({"onnx": "onnxruntime", "tflite": "ai_edge_litert"}[engine])
    _, src = trained
    bundle = tmp_path / "bundle"
    shutil.copytree(src, bundle)
    real_check = bundle_module.check_files

    def check_then_swap(path, files):
        real_check(path, files)
        (bundle / name).write_bytes(b"not the model that was checked")
    monkeypatch.setattr(bundle_module, "check_files", check_then_swap)
    with pytest.raises(BundleError, match="file %s has sha256" % name):
        Detector.load(str(bundle), engine=engine)


# ---------------------------------------------------------------- the threat table's other rows

def test_fast_forward_mix_and_match_and_a_removed_key_are_refused(trained, keys, synthetic, tmp_path):
    """TUF's fast-forward (a version pushed to the maximum without the key, so every later bundle would be a
    rollback), mix-and-match (files of two signed versions combined) and a compromised key taken out of the
    trusted keys: each refused by name, and nothing of a refused bundle recorded."""
    from edge_detector.runtime.bundle import manifest_digest
    owner, stranger = keys
    _, csv_path = synthetic
    state = tmp_path / "state"
    v1 = signed_bundle(trained, tmp_path / "v1", 1, owner)
    assert detect(v1, csv_path, pub(owner), state).exit_code == 0
    # fast-forward without the key: the version is inside the signed manifest
    manifest = json.loads((v1 / "manifest.json").read_text())
    manifest["bundle_version"] = 2 ** 63 - 1
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (v1 / "manifest.json").write_text(json.dumps(manifest))
    result = detect(v1, csv_path, pub(owner), state)
    assert result.exit_code == 1 and "the signature does not match" in result.output
    assert json.loads((state / LEDGER).read_text()) == {str(v1): 1}
    # mix-and-match: v2's manifest with v3's signature; v3's weights in v2's folder
    v2 = signed_bundle(trained, tmp_path / "v2", 2, owner)
    v3 = signed_bundle(trained, tmp_path / "v3", 3, owner,
                       change=lambda m: m["thresholds"].update(tau2=m["thresholds"]["tau2"] * 2))
    mixed = tmp_path / "mixed"
    shutil.copytree(v2, mixed)
    shutil.copy(v3 / "manifest.sig", mixed / "manifest.sig")
    assert "the signature does not match" in detect(mixed, csv_path, pub(owner), state).output
    with np.load(v3 / "weights.npz") as npz:
        other = {k: npz[k] * (1.5 if k.endswith("kernel") else 1) for k in npz.files}
    np.savez(mixed / "weights.npz", **other)
    shutil.copy(v2 / "manifest.sig", mixed / "manifest.sig")
    assert "file weights.npz has sha256" in detect(mixed, csv_path, pub(owner), state).output
    # a key taken out of the trusted keys: its bundles are refused at the next start
    both = tmp_path / "both.pub"
    both.write_text(open(pub(owner)).read() + open(pub(stranger)).read())
    theirs = signed_bundle(trained, tmp_path / "theirs", 5, stranger)
    assert detect(theirs, csv_path, both, tmp_path / "s2").exit_code == 0
    result = detect(theirs, csv_path, pub(owner), tmp_path / "s2")
    assert result.exit_code == 1 and "which is not among the trusted keys" in result.output


def test_every_test_the_threat_table_names_exists():
    """deploy/README.md's threat table names a test for each protection: each one named is a test here."""
    text = (DEPLOY / "README.md").read_text()
    start = text.index("## The update path against an attacker")
    section = text[start:text.index("\n## ", start + 1)]
    cited = set(re.findall(r"(tests/\w+\.py)::(\w+)", section))
    assert len(cited) >= 15
    for path, name in sorted(cited):
        assert re.search(r"^def %s\(" % name, (REPO / path).read_text(), flags=re.M), "%s::%s" % (path, name)
    for attack in ("arbitrary software", "rollback", "indefinite freeze", "fast-forward", "mix-and-match",
                   "endless data", "slow retrieval", "extraneous dependencies", "compromised keys"):
        assert "| **%s**" % attack in section, attack
