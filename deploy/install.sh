#!/usr/bin/env bash
# Install edge-detector on a gateway (Debian / Raspberry Pi OS / Jetson Linux), as root.
#
#   sudo deploy/install.sh --runtime gateway.tar.gz --trusted-keys owner.pub
#                                          # verify gateway.tar.gz.sig, then a venv with numpy alone +
#                                          # the packaged runtime/, bundle/ and run.sh
#   sudo deploy/install.sh --package --bundle bundle/ --trusted-keys owner.pub
#                                          # venv with numpy + the package (+ MQTT), systemd unit for the
#                                          # MQTT bridge, which runs only bundles signed by those keys
# Options:
#   --trusted-keys FILE  OpenSSH public key(s) of the bundle owner (ssh-keygen -t ed25519). With --runtime the
#                        archive's signature (ARCHIVE.sig, or --signature FILE) is verified with ssh-keygen -Y
#                        verify before anything is unpacked; the installed runner and the service then refuse
#                        unsigned, foreign or older bundles. Without it, nothing is verified (not recommended).
#   --signature FILE     the archive's signature (default: ARCHIVE.sig)
#   --prefix DIR         where to install (default /opt/edge-detector). It must be new, empty, or an earlier
#                        install by this script: any other folder is refused, never chowned.
#   --python PATH        the interpreter for the venv (default python3; needs >= 3.9)
#   --src DIR            the repository to install from with --package (default: this script's parent)
#   --pip-args ARGS      extra pip arguments, e.g. "--no-index --find-links /media/usb/wheels" offline
#   --no-user            do not create the edge-detector system user (files stay owned by root)
#   --no-systemd         do not install or start the systemd unit
# Archive code never runs as root: the check that the bundle loads runs as the service user (or nobody).
set -euo pipefail

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "install.sh: $*" >&2; exit 1; }

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
mode="" archive="" bundle="" prefix=/opt/edge-detector python=python3 src="$here/.." pip_args=""
keys="" signature="" with_user=1 with_systemd=1
MARKER=.edge-detector-install
while [ $# -gt 0 ]; do
    case "$1" in
        --package) mode=package ;;
        --runtime) mode=runtime; archive=${2:?--runtime needs an archive}; shift ;;
        --bundle) bundle=${2:?--bundle needs a folder}; shift ;;
        --trusted-keys) keys=${2:?--trusted-keys needs a file}; shift ;;
        --signature) signature=${2:?--signature needs a file}; shift ;;
        --prefix) prefix=${2:?--prefix needs a folder}; shift ;;
        --python) python=${2:?--python needs a path}; shift ;;
        --src) src=${2:?--src needs a folder}; shift ;;
        --pip-args) pip_args=${2:-}; shift ;;
        --no-user) with_user=0 ;;
        --no-systemd) with_systemd=0 ;;
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage 2 ;;
    esac
    shift
done
[ -n "$mode" ] || { echo "install.sh: choose --package or --runtime ARCHIVE" >&2; usage 2; }
[ -z "$keys" ] || [ -f "$keys" ] || die "$keys: no such trusted-keys file"

# The archive's owner signature, checked before a single byte of it is unpacked.
verify_archive() {  # ARCHIVE SIGNATURE KEYS
    command -v ssh-keygen >/dev/null 2>&1 || die "ssh-keygen is needed to verify $1 (apt install openssh-client)"
    [ -f "$2" ] || die "$1 has no signature $2: refusing an unsigned archive (package it with --sign-key)"
    local allowed
    allowed=$(mktemp)
    # every trusted key may sign; the principal is not part of the check
    awk '$1 == "ssh-ed25519" { print "* " $1 " " $2 }' "$3" > "$allowed"
    [ -s "$allowed" ] || { rm -f "$allowed"; die "$3 holds no ssh-ed25519 public key"; }
    if ! ssh-keygen -Y verify -f "$allowed" -I owner -n edge-detector-package -s "$2" < "$1" >/dev/null 2>&1; then
        rm -f "$allowed"
        die "$1 is not signed by a trusted key (or was changed after signing): refused"
    fi
    rm -f "$allowed"
    echo "install.sh: $1: signature verified"
}

# A prefix this script did not make is never taken over (chowned, chmodded, overwritten).
claim_prefix() {  # DIR
    if [ -e "$1" ] && [ ! -d "$1" ]; then die "--prefix $1 exists and is not a folder"; fi
    if [ -d "$1" ] && [ -n "$(ls -A "$1")" ] && [ ! -f "$1/$MARKER" ]; then
        die "--prefix $1 is not empty and was not made by install.sh: refused (choose a new folder)"
    fi
    mkdir -p "$1"
    date -u +%FT%TZ > "$1/$MARKER"
}

# Runs a command as the unprivileged user that will run the detector (never root for archive code).
as_service_user() {
    if [ "$(id -u)" != 0 ]; then
        "$@"
    elif [ "$with_user" = 1 ]; then
        setpriv --reuid=edge-detector --regid=edge-detector --init-groups --inh-caps=-all -- "$@"
    else
        setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all -- "$@"
    fi
}

"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
    || die "$python is older than Python 3.9"

if [ "$mode" = runtime ]; then
    [ -f "$archive" ] || die "$archive: no such archive"
    if [ -n "$keys" ]; then
        verify_archive "$archive" "${signature:-$archive.sig}" "$keys"
    else
        echo "install.sh: WARNING: no --trusted-keys: the archive and its bundles are not verified" >&2
    fi
fi

claim_prefix "$prefix"
prefix=$(cd -- "$prefix" && pwd)
if [ "$with_user" = 1 ] && ! id edge-detector >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir "$prefix" --shell /usr/sbin/nologin edge-detector
fi
echo "install.sh: creating $prefix/venv"
"$python" -m venv "$prefix/venv"
# shellcheck disable=SC2086  # pip_args is a list of words on purpose
"$prefix/venv/bin/python" -m pip install -q --disable-pip-version-check $pip_args "numpy>=1.24"
key_args=""
if [ -n "$keys" ]; then
    install -m 0644 "$keys" "$prefix/trusted-keys.pub"
    key_args="--trusted-keys $prefix/trusted-keys.pub"
fi

if [ "$mode" = runtime ]; then
    staging=$(mktemp -d)
    trap 'rm -rf "$staging"' EXIT
    tar -xzf "$archive" -C "$staging" --no-same-owner --no-same-permissions
    top=$(find "$staging" -mindepth 1 -maxdepth 1 -type d | head -n 1)
    if [ ! -f "$top/runtime/__main__.py" ] || [ ! -d "$top/bundle" ]; then
        die "$archive is not a gateway archive"
    fi
    (cd "$top" && sha256sum -c --quiet SHA256SUMS)
    rm -rf "$prefix/bundle" "$prefix/runtime"
    cp -R "$top/bundle" "$prefix/bundle"
    cp -R "$top/runtime" "$prefix/runtime"
    cp "$top/run.sh" "$top/README.md" "$top/SHA256SUMS" "$prefix/"
    chmod -R u=rwX,go=rX "$prefix/bundle" "$prefix/runtime"
    chmod 0755 "$prefix/run.sh"
    # run.sh takes its interpreter from $PYTHON: point it at the venv (and at the trusted keys)
    printf '#!/bin/sh\nPYTHON="%s/venv/bin/python" exec "%s/run.sh" %s "$@"\n' "$prefix" "$prefix" "$key_args" \
        > "$prefix/edge-detector-run"
    chmod 0755 "$prefix/edge-detector-run"
    check=(env PYTHONPATH="$prefix" "$prefix/venv/bin/python" -I -c
           "import sys; sys.path.insert(0, '$prefix'); import runtime; runtime.Detector.load('$prefix/bundle')")
    echo "install.sh: runtime installed; try: $prefix/edge-detector-run < readings.csv"
else
    if [ -z "$bundle" ] || [ ! -f "$bundle/manifest.json" ]; then
        die "--package needs --bundle DIR (an exported bundle)"
    fi
    # shellcheck disable=SC2086
    "$prefix/venv/bin/python" -m pip install -q --disable-pip-version-check $pip_args "${src}[mqtt]"
    rm -rf "$prefix/bundle"
    cp -R "$bundle" "$prefix/bundle"
    chmod -R u=rwX,go=rX "$prefix/bundle"
    "$prefix/venv/bin/edge-detector" detect --help >/dev/null
    check=("$prefix/venv/bin/python" -I -c "from edge_detector import Detector; Detector.load('$prefix/bundle')")
    echo "install.sh: package installed; try: $prefix/venv/bin/edge-detector detect $prefix/bundle readings.csv"
fi

if [ "$with_user" = 1 ]; then
    chown -R root:edge-detector "$prefix"
    chmod -R g+rX,o-rwx "$prefix"
fi
# the bundle must load, checked as the unprivileged user that will run it (never as root)
if as_service_user test -x "$prefix/venv/bin/python"; then
    as_service_user "${check[@]}" || die "the installed bundle does not load (see above)"
else
    echo "install.sh: WARNING: skipped the check that the bundle loads: the unprivileged user cannot reach" \
         "$prefix (a parent folder is closed to it); it is not run as root" >&2
fi

if [ "$with_systemd" = 1 ]; then
    if [ "$mode" != package ]; then
        echo "install.sh: the systemd unit runs the MQTT bridge, which needs --package; skipped"
    elif [ "$prefix" != /opt/edge-detector ]; then
        echo "install.sh: the unit expects /opt/edge-detector; edit its paths for $prefix. Skipped." >&2
    else
        install -m 0644 "$here/edge-detector.service" /etc/systemd/system/edge-detector.service
        install -d -m 0750 -g edge-detector /etc/edge-detector
        if [ -n "$keys" ]; then
            install -m 0644 "$keys" /etc/edge-detector/trusted-keys.pub
        fi
        if [ ! -f /etc/default/edge-detector ]; then
            install -m 0640 -g edge-detector "$here/edge-detector.default" /etc/default/edge-detector
            if [ -n "$keys" ]; then
                sed -i 's|^EDGE_DETECTOR_ARGS="|EDGE_DETECTOR_ARGS="--trusted-keys /etc/edge-detector/trusted-keys.pub |' \
                    /etc/default/edge-detector
            fi
        fi
        systemctl daemon-reload
        systemctl enable --now edge-detector.service
        echo "install.sh: service started; logs: journalctl -u edge-detector -f"
    fi
fi
