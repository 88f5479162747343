#!/usr/bin/env bash
# Install edge-detector on a gateway (Debian / Raspberry Pi OS / Jetson Linux), as root.
#
#   sudo deploy/install.sh --package --bundle bundle/            # venv with numpy + the package (+ MQTT),
#                                                                # systemd unit for the MQTT bridge
#   sudo deploy/install.sh --runtime gateway.tar.gz              # venv with numpy alone + the packaged
#                                                                # runtime/, bundle/ and run.sh
# Options:
#   --prefix DIR     where to install (default /opt/edge-detector)
#   --python PATH    the interpreter for the venv (default python3; needs >= 3.9)
#   --src DIR        the repository to install from with --package (default: this script's parent)
#   --pip-args ARGS  extra pip arguments, e.g. "--no-index --find-links /media/usb/wheels" offline
#   --no-user        do not create the edge-detector system user (files stay owned by root)
#   --no-systemd     do not install or start the systemd unit
set -euo pipefail

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
mode="" archive="" bundle="" prefix=/opt/edge-detector python=python3 src="$here/.." pip_args=""
with_user=1 with_systemd=1
while [ $# -gt 0 ]; do
    case "$1" in
        --package) mode=package ;;
        --runtime) mode=runtime; archive=${2:?--runtime needs an archive}; shift ;;
        --bundle) bundle=${2:?--bundle needs a folder}; shift ;;
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

"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
    || { echo "install.sh: $python is older than Python 3.9" >&2; exit 1; }

mkdir -p "$prefix"
prefix=$(cd -- "$prefix" && pwd)
echo "install.sh: creating $prefix/venv"
"$python" -m venv "$prefix/venv"
# shellcheck disable=SC2086  # pip_args is a list of words on purpose
"$prefix/venv/bin/python" -m pip install -q --disable-pip-version-check $pip_args "numpy>=1.24"

if [ "$mode" = runtime ]; then
    [ -f "$archive" ] || { echo "install.sh: $archive: no such archive" >&2; exit 1; }
    staging=$(mktemp -d)
    trap 'rm -rf "$staging"' EXIT
    tar -xzf "$archive" -C "$staging"
    top=$(find "$staging" -mindepth 1 -maxdepth 1 -type d | head -n 1)
    if [ ! -f "$top/runtime/__main__.py" ] || [ ! -d "$top/bundle" ]; then
        echo "install.sh: $archive is not a gateway archive" >&2; exit 1
    fi
    (cd "$top" && sha256sum -c --quiet SHA256SUMS)
    rm -rf "$prefix/bundle" "$prefix/runtime"
    cp -R "$top/bundle" "$prefix/bundle"
    cp -R "$top/runtime" "$prefix/runtime"
    cp "$top/run.sh" "$top/README.md" "$top/SHA256SUMS" "$prefix/"
    chmod 0755 "$prefix/run.sh"
    # run.sh takes its interpreter from $PYTHON: point it at the venv
    printf '#!/bin/sh\nPYTHON="%s/venv/bin/python" exec "%s/run.sh" "$@"\n' "$prefix" "$prefix" > "$prefix/edge-detector-run"
    chmod 0755 "$prefix/edge-detector-run"
    "$prefix/venv/bin/python" -c "import sys; sys.path.insert(0, '$prefix'); import runtime; runtime.Detector.load('$prefix/bundle')"
    echo "install.sh: runtime installed; try: $prefix/edge-detector-run < readings.csv"
else
    if [ -z "$bundle" ] || [ ! -f "$bundle/manifest.json" ]; then
        echo "install.sh: --package needs --bundle DIR (an exported bundle)" >&2; exit 1
    fi
    # shellcheck disable=SC2086
    "$prefix/venv/bin/python" -m pip install -q --disable-pip-version-check $pip_args "${src}[mqtt]"
    rm -rf "$prefix/bundle"
    cp -R "$bundle" "$prefix/bundle"
    "$prefix/venv/bin/edge-detector" detect --help >/dev/null
    "$prefix/venv/bin/python" -c "from edge_detector import Detector; Detector.load('$prefix/bundle')"
    echo "install.sh: package installed; try: $prefix/venv/bin/edge-detector detect $prefix/bundle readings.csv"
fi

if [ "$with_user" = 1 ]; then
    if ! id edge-detector >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir "$prefix" --shell /usr/sbin/nologin edge-detector
    fi
    chown -R root:edge-detector "$prefix"
    chmod -R g+rX,o-rwx "$prefix"
fi

if [ "$with_systemd" = 1 ]; then
    if [ "$mode" != package ]; then
        echo "install.sh: the systemd unit runs the MQTT bridge, which needs --package; skipped"
    elif [ "$prefix" != /opt/edge-detector ]; then
        echo "install.sh: the unit expects /opt/edge-detector; edit its paths for $prefix. Skipped." >&2
    else
        install -m 0644 "$here/edge-detector.service" /etc/systemd/system/edge-detector.service
        [ -f /etc/default/edge-detector ] || install -m 0640 -g edge-detector "$here/edge-detector.default" /etc/default/edge-detector
        systemctl daemon-reload
        systemctl enable --now edge-detector.service
        echo "install.sh: service started; logs: journalctl -u edge-detector -f"
    fi
fi
