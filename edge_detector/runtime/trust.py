"""Trust: which bundles a gateway runs once its owner's public keys are pinned.

Given trusted keys, a bundle must carry ``manifest.sig``, an SSH signature (``signature``) by one
of them over the exact bytes of ``manifest.json``, which holds the sha256 of every other file;
and its ``bundle_version`` must not be older than the last version accepted for the same bundle
folder (a rollback). The versions accepted are kept in a small JSON ledger in the state folder:
``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``), else ``$XDG_STATE_HOME/edge-detector``, else
``~/.local/state/edge-detector``, or the folder given with ``--state-dir``.
"""
import json
import os
from typing import Dict, List, NamedTuple, Optional

from .atomic import write_json
from .errors import BundleError
from .signature import BUNDLE_NAMESPACE, fingerprint, load_public_keys, verify

SIGNATURE = "manifest.sig"
LEDGER = "accepted-versions.json"


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
        with open(path, "r", encoding="utf-8") as fh:
            ledger = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
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
        with open(path, "rb") as fh:
            armored = fh.read(8192)
    except FileNotFoundError:
        raise BundleError("bundle %r is not signed (no %s), and trusted keys are pinned" % (bundle, SIGNATURE)) from None
    except OSError as exc:
        raise BundleError("bundle %r: %s cannot be read (%s)" % (bundle, SIGNATURE, exc)) from None
    signer = verify(manifest_bytes, armored, trust.keys, BUNDLE_NAMESPACE, "bundle %r" % bundle)
    return fingerprint(signer)


def check_version(bundle: str, manifest: dict, trust: Trust) -> int:
    """Refuse a bundle older than the last one accepted from the same folder; record this one's version."""
    version = manifest.get("bundle_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError("bundle %r has no integer 'bundle_version': a signed bundle needs one" % bundle)
    ledger_path = os.path.join(trust.state_dir, LEDGER)
    ledger = _read_ledger(ledger_path)
    key = os.path.realpath(bundle)
    last = ledger.get(key)
    if last is not None and version < last:
        raise BundleError("bundle %r has version %d, older than version %d accepted before from this folder: "
                          "a rollback is refused" % (bundle, version, last))
    if last != version:
        ledger[key] = version
        _write_ledger(ledger_path, ledger)
    return version
