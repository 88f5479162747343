"""Bundle signatures: OpenSSH Ed25519 signatures (the SSHSIG format of ``ssh-keygen -Y sign``).

The owner signs a bundle's manifest, which holds the sha256 of every other file, with the key
that ``ssh-keygen -t ed25519`` made. A gateway given trusted public keys refuses a bundle that is
unsigned, signed by another key, or signed over a different manifest. Verification uses the
``cryptography`` package where it is installed, else OpenSSH's ``ssh-keygen -Y verify`` (on every
Debian gateway); with neither, it refuses: it never skips the check.
"""
import base64
import binascii
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from typing import List, NamedTuple, Tuple

from .errors import BundleError
from .plainfile import read_plain_file

MAGIC = b"SSHSIG"
KEY_TYPE = b"ssh-ed25519"
BUNDLE_NAMESPACE = "edge-detector-bundle"
ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
ARMOR_END = "-----END SSH SIGNATURE-----"
MAX_SIGNATURE_BYTES = 4096
MAX_KEYS_BYTES = 1 << 20          # a trusted-keys file: thousands of keys


class Signature(NamedTuple):
    """A parsed SSHSIG signature."""
    public_key: bytes        # the signer's key blob (string "ssh-ed25519", string 32 bytes)
    namespace: str
    hash_algorithm: str      # "sha512" or "sha256"
    signature: bytes         # 64 bytes of Ed25519 signature


def _read_string(blob: bytes, at: int) -> Tuple[bytes, int]:
    if at + 4 > len(blob):
        raise ValueError("truncated")
    (n,) = struct.unpack(">I", blob[at:at + 4])
    if at + 4 + n > len(blob):
        raise ValueError("truncated")
    return blob[at + 4:at + 4 + n], at + 4 + n


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def ed25519_key_bytes(blob: bytes) -> bytes:
    """The 32 raw bytes of an ssh-ed25519 public key blob; ValueError for any other key."""
    kind, at = _read_string(blob, 0)
    raw, at = _read_string(blob, at)
    if kind != KEY_TYPE or len(raw) != 32 or at != len(blob):
        raise ValueError("not an ssh-ed25519 public key")
    return raw


def parse_public_keys(text: str, source: str) -> List[bytes]:
    """The key blobs of an OpenSSH public-key file (``ssh-ed25519 AAAA... comment`` per line)."""
    keys = []
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) < 2 or words[0] != KEY_TYPE.decode():
            raise BundleError("%s line %d: not an ssh-ed25519 public key (other key types are not accepted)"
                              % (source, n))
        try:
            blob = base64.b64decode(words[1], validate=True)
            ed25519_key_bytes(blob)
        except (binascii.Error, ValueError):
            raise BundleError("%s line %d: the ssh-ed25519 key is malformed" % (source, n)) from None
        keys.append(blob)
    if not keys:
        raise BundleError("%s holds no ssh-ed25519 public key" % source)
    return keys


def load_public_keys(path: str) -> List[bytes]:
    """The trusted keys in ``path`` (an OpenSSH public-key file, one or more keys, at most MAX_KEYS_BYTES: a larger
    file is refused as a whole, never read in part). A symlink to the file is followed; a FIFO is refused."""
    try:
        text = read_plain_file(path, MAX_KEYS_BYTES, follow=True).decode("utf-8")
    except BundleError as exc:
        raise BundleError("trusted keys: %s" % exc) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError("trusted keys %s cannot be read (%s)" % (path, exc)) from None
    return parse_public_keys(text, path)


def parse_signature(armored: bytes) -> Signature:
    """An armored SSHSIG file -> Signature; ValueError naming what is wrong."""
    text = armored.decode("ascii")
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 3 or lines[0] != ARMOR_BEGIN or lines[-1] != ARMOR_END:
        raise ValueError("not an SSH signature (no BEGIN/END SSH SIGNATURE armor)")
    blob = base64.b64decode("".join(lines[1:-1]), validate=True)
    if len(blob) < 10 or blob[:6] != MAGIC or struct.unpack(">I", blob[6:10])[0] != 1:
        raise ValueError("not an SSHSIG version 1 signature")
    at = 10
    public_key, at = _read_string(blob, at)
    namespace, at = _read_string(blob, at)
    _reserved, at = _read_string(blob, at)
    hash_algorithm, at = _read_string(blob, at)
    sig_blob, at = _read_string(blob, at)
    kind, k = _read_string(sig_blob, 0)
    raw_sig, k = _read_string(sig_blob, k)
    if kind != KEY_TYPE or len(raw_sig) != 64:
        raise ValueError("not an ssh-ed25519 signature")
    ed25519_key_bytes(public_key)
    return Signature(public_key, namespace.decode("utf-8"), hash_algorithm.decode("ascii"), raw_sig)


def signed_data(message: bytes, namespace: str, hash_algorithm: str) -> bytes:
    """The bytes an SSHSIG signature signs: the preamble, namespace, hash algorithm and H(message)."""
    digest = hashlib.new(hash_algorithm, message).digest()
    return MAGIC + _string(namespace.encode()) + _string(b"") + _string(hash_algorithm.encode()) + _string(digest)


def armor(public_key: bytes, namespace: str, signature: bytes, hash_algorithm: str = "sha512") -> bytes:
    """An SSHSIG file (as ``ssh-keygen -Y sign`` writes it) from its parts."""
    blob = (MAGIC + struct.pack(">I", 1) + _string(public_key) + _string(namespace.encode()) + _string(b"")
            + _string(hash_algorithm.encode()) + _string(_string(KEY_TYPE) + _string(signature)))
    body = base64.b64encode(blob).decode()
    return ("\n".join([ARMOR_BEGIN] + [body[i:i + 70] for i in range(0, len(body), 70)] + [ARMOR_END]) + "\n").encode()


def _verify_with_cryptography(sig: Signature, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415 (optional, lazy)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: PLC0415
    key = Ed25519PublicKey.from_public_bytes(ed25519_key_bytes(sig.public_key))
    try:
        key.verify(sig.signature, data)
        return True
    except InvalidSignature:
        return False


def _verify_with_ssh_keygen(ssh_keygen: str, armored: bytes, message: bytes, sig: Signature) -> bool:
    with tempfile.TemporaryDirectory(prefix="edge-detector-verify-") as tmp:
        allowed = os.path.join(tmp, "allowed_signers")
        with open(allowed, "w") as fh:
            fh.write("* ssh-ed25519 %s\n" % base64.b64encode(sig.public_key).decode())
        sig_path = os.path.join(tmp, "signature")
        with open(sig_path, "wb") as fh:
            fh.write(armored)
        proc = subprocess.run([ssh_keygen, "-Y", "verify", "-f", allowed, "-I", "owner", "-n", sig.namespace,
                               "-s", sig_path], input=message, capture_output=True, timeout=60)
    return proc.returncode == 0


def verifier() -> str:
    """What will verify signatures here: "cryptography", "ssh-keygen", or "" when nothing can."""
    try:
        import cryptography.hazmat.primitives.asymmetric.ed25519  # noqa: F401, PLC0415
        return "cryptography"
    except ImportError:
        pass
    return "ssh-keygen" if shutil.which("ssh-keygen") else ""


def verify(message: bytes, armored: bytes, trusted: List[bytes], namespace: str, what: str) -> bytes:
    """Check that ``armored`` signs ``message`` under ``namespace`` with one of the ``trusted`` keys.

    Returns the signer's key blob; BundleError naming ``what`` and the reason otherwise.
    """
    if len(armored) > MAX_SIGNATURE_BYTES:
        raise BundleError("%s: the signature file is larger than %d bytes" % (what, MAX_SIGNATURE_BYTES))
    try:
        sig = parse_signature(armored)
    except (ValueError, UnicodeDecodeError, binascii.Error, struct.error) as exc:   # every way a parse can fail
        raise BundleError("%s: the signature cannot be read (%s)" % (what, exc)) from None
    if sig.namespace != namespace:
        raise BundleError("%s: the signature is for %r, not %r" % (what, sig.namespace, namespace))
    if sig.hash_algorithm not in ("sha512", "sha256"):
        raise BundleError("%s: the signature's hash %r is not sha512 or sha256" % (what, sig.hash_algorithm))
    if sig.public_key not in trusted:
        raise BundleError("%s: signed by key %s, which is not among the trusted keys"
                          % (what, fingerprint(sig.public_key)))
    how = verifier()
    if how == "cryptography":
        good = _verify_with_cryptography(sig, signed_data(message, namespace, sig.hash_algorithm))
    elif how == "ssh-keygen":
        good = _verify_with_ssh_keygen(shutil.which("ssh-keygen"), armored, message, sig)
    else:
        raise BundleError("%s: trusted keys are pinned but nothing here can verify a signature: install the "
                          "'cryptography' package or OpenSSH (ssh-keygen)" % what)
    if not good:
        raise BundleError("%s: the signature does not match: the signed file was changed after signing" % what)
    return sig.public_key


def fingerprint(public_key: bytes) -> str:
    """OpenSSH's fingerprint of a key blob: SHA256:<base64 without padding>."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(public_key).digest()).decode().rstrip("=")
