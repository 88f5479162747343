"""Signed bundles (issue 12): only the owner's bundles run, never an older one, verified without TensorFlow.

The key is made with ``ssh-keygen -t ed25519``; signing and verifying go through the CLI, the
shipped runtime in a numpy-only venv (ssh-keygen alone verifies there), and install.sh.
"""
import json
import os
import shutil
import subprocess
import tarfile

import pytest
from click.testing import CliRunner

from edge_detector.cli import cli
from edge_detector.runtime import BundleError, Detector
from edge_detector.runtime.bundle import manifest_digest
from edge_detector.runtime.trust import load_trust
from tests.conftest import SYSTEM_PYTHON

pytestmark = pytest.mark.slow
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def keygen(folder, name):
    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen (OpenSSH) is not installed")
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return keygen(folder, "owner"), keygen(folder, "stranger")


@pytest.fixture(scope="module")
def signed(trained, synthetic, keys, tmp_path_factory):
    """A bundle exported and signed through the CLI with the owner's key, version 100."""
    model_dir, _ = trained
    _, csv_path = synthetic
    out = tmp_path_factory.mktemp("signed") / "bundle"
    result = CliRunner().invoke(cli, ["export", str(model_dir), "--out", str(out), "--data", str(csv_path),
                                      "--sign-key", str(keys[0]), "--bundle-version", "100"])
    assert result.exit_code == 0, result.output
    assert (out / "manifest.sig").is_file()
    return out


def detect(bundle, csv_path, keys_pub, state):
    return CliRunner().invoke(cli, ["detect", str(bundle), str(csv_path), "--trusted-keys", str(keys_pub),
                                    "--state-dir", str(state), "--alarms-only"])


def resign(bundle, key, change):
    """Change the manifest, reseal its checksum and sign it again with ``key`` (the owner's or another's)."""
    from edge_detector.export.signing import sign
    from edge_detector.runtime.signature import BUNDLE_NAMESPACE
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    manifest["manifest_sha256"] = manifest_digest(manifest)
    data = json.dumps(manifest, indent=2).encode()
    (bundle / "manifest.json").write_bytes(data)
    (bundle / "manifest.sig").write_bytes(sign(data, str(key), BUNDLE_NAMESPACE))


def test_a_signed_bundle_runs_with_the_owners_key(signed, synthetic, keys, tmp_path):
    _, csv_path = synthetic
    result = detect(signed, csv_path, str(keys[0]) + ".pub", tmp_path / "state")
    assert result.exit_code == 0, result.output
    ledger = json.loads((tmp_path / "state" / "accepted-versions.json").read_text())
    assert ledger == {os.path.abspath(signed): 100}


def test_refusals_name_the_reason(signed, trained, synthetic, keys, tmp_path):
    _, unsigned = trained
    _, csv_path = synthetic
    owner_pub = str(keys[0]) + ".pub"
    # unsigned
    result = detect(unsigned, csv_path, owner_pub, tmp_path / "s1")
    assert result.exit_code == 1 and "is not signed (no manifest.sig)" in result.output
    # signed by another key
    other = tmp_path / "other"
    shutil.copytree(signed, other)
    resign(other, keys[1], lambda m: None)
    result = detect(other, csv_path, owner_pub, tmp_path / "s2")
    assert result.exit_code == 1 and "which is not among the trusted keys" in result.output
    # silenced: tau2 = 1e300, the manifest resealed (its checksum matches), the old signature kept
    silenced = tmp_path / "silenced"
    shutil.copytree(signed, silenced)
    manifest = json.loads((silenced / "manifest.json").read_text())
    manifest["thresholds"]["tau2"] = 1e300
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (silenced / "manifest.json").write_text(json.dumps(manifest, indent=2))
    result = detect(silenced, csv_path, owner_pub, tmp_path / "s3")
    assert result.exit_code == 1 and "the signature does not match" in result.output
    assert "Traceback" not in result.output
    # without pinned keys the same silenced bundle loads: checksums alone guard against accidents only
    Detector.load(str(silenced))


def test_a_rollback_is_refused(signed, synthetic, keys, tmp_path):
    _, csv_path = synthetic
    owner_pub = str(keys[0]) + ".pub"
    slot = tmp_path / "bundle"
    shutil.copytree(signed, slot)
    assert detect(slot, csv_path, owner_pub, tmp_path / "state").exit_code == 0          # version 100 accepted
    shutil.rmtree(slot)
    shutil.copytree(signed, slot)
    resign(slot, keys[0], lambda m: m.update(bundle_version=99))                          # the owner's, but older
    result = detect(slot, csv_path, owner_pub, tmp_path / "state")
    assert result.exit_code == 1 and "older than version 100 accepted before" in result.output
    resign(slot, keys[0], lambda m: m.update(bundle_version=101))                         # newer: accepted
    assert detect(slot, csv_path, owner_pub, tmp_path / "state").exit_code == 0


def test_the_ssh_keygen_signing_path_gives_a_signature_the_runtime_accepts(signed, keys, tmp_path, monkeypatch):
    from edge_detector.export import signing
    monkeypatch.setattr(signing, "_sign_with_cryptography", lambda *a: None)      # as for an encrypted key
    copy = tmp_path / "b"
    shutil.copytree(signed, copy)
    resign(copy, keys[0], lambda m: m.update(bundle_version=200))
    trust = load_trust(str(keys[0]) + ".pub", str(tmp_path / "state"))
    assert Detector.load(str(copy), trust=trust).manifest["bundle_version"] == 200


def test_package_signs_the_archive_for_ssh_keygen(signed, keys, tmp_path):
    archive = tmp_path / "gateway.tar.gz"
    result = CliRunner().invoke(cli, ["package", str(signed), "--out", str(archive), "--sign-key", str(keys[0])])
    assert result.exit_code == 0, result.output
    allowed = tmp_path / "allowed"
    allowed.write_text("* " + " ".join(open(str(keys[0]) + ".pub").read().split()[:2]) + "\n")
    with open(archive, "rb") as fh:
        proc = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "x", "-n",
                               "edge-detector-package", "-s", str(archive) + ".sig"], stdin=fh, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(archive) as tar:
        assert "gateway/bundle/manifest.sig" in tar.getnames()


def _device(folder, signed):
    """The shipped runtime and the signed bundle in ``folder``."""
    from tests.test_numpy_only import ship_runtime
    ship_runtime(folder)
    shutil.copytree(signed, folder / "bundle")
    return folder


def test_the_shipped_runtime_verifies_with_ssh_keygen_alone(numpy_only_python, signed, synthetic, keys, tmp_path):
    _, csv_path = synthetic
    device = _device(tmp_path / "device", signed)
    owner_pub = str(keys[0]) + ".pub"
    probe = subprocess.run([str(numpy_only_python), "-c", "import cryptography"], capture_output=True)
    assert probe.returncode != 0, "the numpy-only venv must not hold cryptography"
    args = [str(numpy_only_python), "-m", "runtime", "bundle", str(csv_path), "--trusted-keys", owner_pub,
            "--state-dir", str(tmp_path / "state"), "--alarms-only"]
    ok = subprocess.run(args, cwd=device, capture_output=True, text=True, env=CLEAN_ENV)
    assert ok.returncode == 0, ok.stderr
    expected = CliRunner().invoke(cli, ["detect", str(signed), str(csv_path), "--alarms-only"]).stdout
    assert ok.stdout == expected
    # tampered: refused through ssh-keygen
    manifest = json.loads((device / "bundle" / "manifest.json").read_text())
    manifest["thresholds"]["tau2"] = 1e300
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (device / "bundle" / "manifest.json").write_text(json.dumps(manifest))
    bad = subprocess.run(args, cwd=device, capture_output=True, text=True, env=CLEAN_ENV)
    assert bad.returncode == 1 and "the signature does not match" in bad.stderr
    # with keys pinned and nothing to verify with (no cryptography, no ssh-keygen on PATH), it refuses
    blind = subprocess.run(args, cwd=device, capture_output=True, text=True, env=dict(CLEAN_ENV, PATH="/nonexistent"))
    assert blind.returncode == 1 and "nothing here can verify a signature" in blind.stderr


def _archive(signed, key, tmp_path, name="gateway.tar.gz"):
    from edge_detector.export.package import build_package
    archive = tmp_path / name
    build_package(str(signed), str(archive), sign_key=str(key))
    return archive


def test_install_sh_verifies_the_archive_before_it_unpacks(signed, keys, synthetic, tmp_path, open_dir):
    _, csv_path = synthetic
    archive = _archive(signed, keys[0], tmp_path)
    owner_pub = str(keys[0]) + ".pub"
    install = [os.path.join(os.path.dirname(__file__), "..", "deploy", "install.sh"), "--no-user", "--no-systemd",
               "--python", SYSTEM_PYTHON]

    # a packaged runtime with a line prepended and SHA256SUMS regenerated: the archive's signature fails
    evil = tmp_path / "evil"
    with tarfile.open(archive) as tar:
        tar.extractall(evil)
    main = evil / "gateway" / "runtime" / "__main__.py"
    main.write_text("import os; os.system('touch /tmp/pwned')\n" + main.read_text())
    import hashlib
    root = evil / "gateway"
    sums = "".join("%s  %s\n" % (hashlib.sha256(p.read_bytes()).hexdigest(), p.relative_to(root))
                   for p in sorted(root.rglob("*")) if p.is_file() and p.name != "SHA256SUMS")
    (root / "SHA256SUMS").write_text(sums)
    evil_archive = tmp_path / "evil.tar.gz"
    with tarfile.open(evil_archive, "w:gz") as tar:
        tar.add(root, arcname="gateway")
    shutil.copy(str(archive) + ".sig", str(evil_archive) + ".sig")
    proc = subprocess.run(["bash", *install, "--runtime", str(evil_archive), "--trusted-keys", owner_pub,
                           "--prefix", str(tmp_path / "opt-evil")], capture_output=True, text=True, env=CLEAN_ENV)
    assert proc.returncode == 1 and "not signed by a trusted key" in proc.stderr
    assert not (tmp_path / "opt-evil").exists()                     # nothing unpacked, nothing created
    # unsigned: refused
    os.unlink(str(evil_archive) + ".sig")
    proc = subprocess.run(["bash", *install, "--runtime", str(evil_archive), "--trusted-keys", owner_pub,
                           "--prefix", str(tmp_path / "opt-evil")], capture_output=True, text=True, env=CLEAN_ENV)
    assert proc.returncode == 1 and "refusing an unsigned archive" in proc.stderr

    # the owner's archive installs, its bundle is checked as an unprivileged user, and its runner pins the keys
    prefix = open_dir / "opt"
    proc = subprocess.run(["bash", *install, "--runtime", str(archive), "--trusted-keys", owner_pub,
                           "--prefix", str(prefix)], capture_output=True, text=True, env=CLEAN_ENV)
    if proc.returncode != 0 and "numpy" in proc.stderr and "No matching distribution" in proc.stderr:
        pytest.skip("install.sh could not download numpy: %s" % proc.stderr[-300:])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "signature verified" in proc.stdout and "skipped the check" not in proc.stderr
    assert "--trusted-keys %s/trusted-keys.pub" % prefix in (prefix / "edge-detector-run").read_text()


def test_install_sh_refuses_a_prefix_it_did_not_make(signed, keys, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "someone-elses.txt").write_text("keep me")
    archive = _archive(signed, keys[0], tmp_path)
    install = os.path.join(os.path.dirname(__file__), "..", "deploy", "install.sh")
    proc = subprocess.run(["bash", install, "--runtime", str(archive), "--trusted-keys", str(keys[0]) + ".pub",
                           "--prefix", str(shared), "--no-user", "--no-systemd"], capture_output=True, text=True,
                          env=CLEAN_ENV)
    assert proc.returncode == 1 and "was not made by install.sh: refused" in proc.stderr
    assert os.listdir(shared) == ["someone-elses.txt"]


def test_trusted_keys_must_be_ed25519(tmp_path):
    path = tmp_path / "keys.pub"
    path.write_text("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ x\n")
    with pytest.raises(BundleError, match="not an ssh-ed25519 public key"):
        load_trust(str(path))
