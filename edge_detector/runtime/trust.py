"""Trust: which bundles a gateway runs once its owner's public keys are pinned.

Given trusted keys, a bundle must carry ``manifest.sig``, an SSH signature (``signature``) by one
of them over the exact bytes of ``manifest.json``, which holds the sha256 of every other file;
and its ``bundle_version`` must not be older than the last version accepted at the same bundle
location (a rollback). The location is the path the bundle is configured under, made absolute but
with its symlinks left unresolved (``ledger_key``): ``bundle -> releases/v2`` is keyed as
``bundle``, so switching the link back to ``releases/v1`` is a rollback at ``bundle``. A version is
recorded (``record_version``) only once its bundle was fully accepted, never by a refused load.
The versions accepted are kept in a small JSON ledger in the state folder:
``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``), else ``$XDG_STATE_HOME/edge-detector``, else
``~/.local/state/edge-detector``, or the folder given with ``--state-dir``.
"""
import json
import os
from typing import Dict, List, NamedTuple, Optional

from .atomic import write_json
from .errors import BundleError
from .plainfile import read_plain_file
from .signature import BUNDLE_NAMESPACE, MAX_SIGNATURE_BYTES, fingerprint, load_public_keys, verify

SIGNATURE = "manifest.sig"
LEDGER = "accepted-versions.json"
MAX_LEDGER_BYTES = 1 << 20


class Trust(NamedTuple):
    keys: List[bytes]              # trusted ssh-ed25519 key blobs
    state_dir: str                 # where the ledger of accepted versions lives


def default_state_dir() -> str:
    """The folder for the ledger of accepted versions (see the module docstring)."""
    if os.environ.get("STATE_DIRECTORY"):
        return os.environ["STATE_DIRECTORY"].split(":")[0]
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "edge-detector")


def load_trust(keys_path: Optional[str], state_dir: Optional[str] = None) -> Optional[Trust]:
    """The Trust for ``--trusted-keys`` (None when no keys are given: bundles are not checked for a signature)."""
    if not keys_path:
        return None
    return Trust(load_public_keys(keys_path), state_dir or default_state_dir())


def _read_ledger(path: str) -> Dict[str, int]:
    try:
        ledger = json.loads(read_plain_file(path, MAX_LEDGER_BYTES).decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:                 # BundleError and UnicodeDecodeError are ValueErrors
        raise BundleError("the ledger of accepted bundle versions %s cannot be read (%s)" % (path, exc)) from None
    if not isinstance(ledger, dict) or not all(isinstance(v, int) for v in ledger.values()):
        raise BundleError("the ledger of accepted bundle versions %s is not a JSON object of versions" % path)
    return ledger


def _write_ledger(path: str, ledger: Dict[str, int]) -> None:
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_json(path, ledger, indent=1, sort_keys=True, permissions=0o600)
    except OSError as exc:
        raise BundleError("cannot record the accepted bundle version in %s (%s): without it a rollback could not be "
                          "refused; give a writable state folder" % (path, exc)) from None


def check_signed(bundle: str, manifest_bytes: bytes, trust: Trust) -> str:
    """Verify ``manifest.sig`` over the manifest's bytes; returns the signer's fingerprint. BundleError if not."""
    path = os.path.join(bundle, SIGNATURE)
    try:
        armored = read_plain_file(path, MAX_SIGNATURE_BYTES)
    except FileNotFoundError:
        raise BundleError("bundle %r is not signed (no %s), and trusted keys are pinned" % (bundle, SIGNATURE)) from None
    except BundleError as exc:
        raise BundleError("bundle %r: %s" % (bundle, exc)) from None
    except OSError as exc:
        raise BundleError("bundle %r: %s cannot be read (%s)" % (bundle, SIGNATURE, exc)) from None
    signer = verify(manifest_bytes, armored, trust.keys, BUNDLE_NAMESPACE, "bundle %r" % bundle)
    return fingerprint(signer)


def ledger_key(bundle: str) -> str:
    """Where the ledger records a bundle: its configured path, absolute and normalised, symlinks not resolved.

    >>> ledger_key("/opt/edge-detector/./releases/../bundle/")
    '/opt/edge-detector/bundle'
    """
    return os.path.abspath(bundle)


def _last_version(ledger: Dict[str, int], bundle: str) -> Optional[int]:
    # ledgers written before the key was the configured path keyed the resolved folder: still honoured
    seen = [ledger[k] for k in (ledger_key(bundle), os.path.realpath(bundle)) if k in ledger]
    return max(seen) if seen else None


def bundle_version(bundle: str, manifest: dict) -> int:
    """The manifest's integer ``bundle_version``; BundleError when a signed bundle lacks one."""
    version = manifest.get("bundle_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError("bundle %r has no integer 'bundle_version': a signed bundle needs one" % bundle)
    return version


def check_version(bundle: str, manifest: dict, trust: Trust) -> int:
    """The bundle's version; BundleError when it is older than the last one accepted at the same location (a rollback).
    Records nothing: ``record_version`` does, once the bundle is accepted."""
    version = bundle_version(bundle, manifest)
    last = _last_version(_read_ledger(os.path.join(trust.state_dir, LEDGER)), bundle)
    if last is not None and version < last:
        raise BundleError("bundle %r has version %d, older than version %d accepted before at this location: "
                          "a rollback is refused" % (bundle, version, last))
    return version


def record_version(bundle: str, manifest: dict, trust: Trust) -> None:
    """Record the version of a bundle that was accepted (checked, and swapped in or started), keyed by ``ledger_key``.
    Checks again first, so a newer version recorded by another process meanwhile is never lowered."""
    version = check_version(bundle, manifest, trust)
    ledger_path = os.path.join(trust.state_dir, LEDGER)
    ledger = _read_ledger(ledger_path)
    key = ledger_key(bundle)
    if ledger.get(key) != version:
        ledger[key] = version
        _write_ledger(ledger_path, ledger)
