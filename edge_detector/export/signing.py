"""Signing on the workstation: an OpenSSH Ed25519 key signs a bundle's manifest or a gateway archive.

The signature is an SSHSIG file, as ``ssh-keygen -Y sign`` writes it, so a gateway can check it
with the runtime (``runtime.signature``) or with ``ssh-keygen -Y verify`` alone. The key is the
file ``ssh-keygen -t ed25519`` wrote. An unencrypted key is read with the ``cryptography``
package; an encrypted one (or any key, where ``cryptography`` is missing) is handed to
``ssh-keygen -Y sign``, which asks for its passphrase or uses the ssh-agent.
"""
import os
import shutil
import subprocess
import tempfile

from edge_detector.runtime import BundleError
from edge_detector.runtime.signature import armor, signed_data

PACKAGE_NAMESPACE = "edge-detector-package"


def _sign_with_cryptography(key_path: str, message: bytes, namespace: str):
    """The SSHSIG bytes, or None when this key needs ssh-keygen (encrypted) or cryptography is missing."""
    try:
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415
    except ImportError:
        return None
    with open(key_path, "rb") as fh:
        data = fh.read()
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except TypeError:                      # encrypted: ssh-keygen asks for the passphrase
        return None
    except ValueError as exc:
        raise BundleError("signing key %s is not an OpenSSH private key (%s)" % (key_path, exc)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError("signing key %s is not an Ed25519 key: make one with ssh-keygen -t ed25519" % key_path)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    import base64  # noqa: PLC0415
    blob = base64.b64decode(public.split()[1])
    return armor(blob, namespace, key.sign(signed_data(message, namespace, "sha512")))


def _sign_with_ssh_keygen(key_path: str, message: bytes, namespace: str) -> bytes:
    ssh_keygen = shutil.which("ssh-keygen")
    if not ssh_keygen:
        raise BundleError("signing with %s needs the cryptography package (an unencrypted key) or OpenSSH's ssh-keygen"
                          % key_path)
    with tempfile.TemporaryDirectory(prefix="edge-detector-sign-") as tmp:
        path = os.path.join(tmp, "message")
        with open(path, "wb") as fh:
            fh.write(message)
        proc = subprocess.run([ssh_keygen, "-Y", "sign", "-f", key_path, "-n", namespace, path],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise BundleError("ssh-keygen could not sign with %s: %s" % (key_path, proc.stderr.strip()[-300:]))
        with open(path + ".sig", "rb") as fh:
            return fh.read()


def sign(message: bytes, key_path: str, namespace: str) -> bytes:
    """An SSHSIG signature of ``message`` under ``namespace`` with the Ed25519 private key at ``key_path``."""
    if not os.path.isfile(key_path):
        raise BundleError("signing key %s: no such file" % key_path)
    return _sign_with_cryptography(key_path, message, namespace) or _sign_with_ssh_keygen(key_path, message, namespace)
