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
# The archive, its signature and the keys are first copied into a private folder (0700): what was verified is
# what is unpacked, whoever can write their paths. Nothing but plain files and folders is installed (a symlink or
# a special file in the archive or the bundle is refused), and no permission change follows a link.
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

# A private folder (0700, root's) for the copies that are verified and used: nobody else can swap them.
private=$(mktemp -d)
chmod 0700 "$private"
trap 'rm -rf "$private"' EXIT

# A private copy of a regular file given by the user; NAME is its name in the private folder.
private_copy() {  # FILE NAME WHAT
    [ -f "$1" ] || die "$3 $1 is not a regular file (a FIFO, a folder?): refused"
    cp -- "$1" "$private/$2" || die "$3 $1 cannot be copied"
    if [ ! -f "$private/$2" ] || [ -L "$private/$2" ]; then die "$3 $1 changed while it was copied: refused"; fi
}

# The archive's owner signature, checked on the private copies before a single byte of it is unpacked.
verify_archive() {  # ARCHIVE SIGNATURE KEYS (private copies) NAME (what the user gave)
    command -v ssh-keygen >/dev/null 2>&1 || die "ssh-keygen is needed to verify $4 (apt install openssh-client)"
    local allowed="$private/allowed_signers"
    # every trusted key may sign; the principal is not part of the check
    awk '$1 == "ssh-ed25519" { print "* " $1 " " $2 }' "$3" > "$allowed"
    [ -s "$allowed" ] || die "$keys holds no ssh-ed25519 public key"
    if ! ssh-keygen -Y verify -f "$allowed" -I owner -n edge-detector-package -s "$2" < "$1" >/dev/null 2>&1; then
        die "$4 is not signed by a trusted key (or was changed after signing): refused"
    fi
    echo "install.sh: $4: signature verified"
}

# Refuses a tree that holds anything but plain files and folders (a symlink, a FIFO, a device).
plain_tree() {  # DIR WHAT
    local odd
    odd=$(find -P "$1/." ! -type f ! -type d -print -quit)    # DIR itself may be a link the user chose
    [ -z "$odd" ] || die "$2 holds ${odd#"$1"/./}, which is not a plain file or folder (a symlink?): refused"
}

# Copies the folder SRC to DEST (new) without following any link in it, then opens it to reading: 0755/0644.
copy_tree() {  # SRC DEST WHAT
    [ -d "$1" ] || die "$3 ($1) is not a folder: refused"
    plain_tree "$1" "$3"
    rm -rf "$2"
    mkdir -m 0755 "$2"
    cp -R -P -- "$1/." "$2/"
    plain_tree "$2" "$3"                       # checked again after copying: nothing changed in between
    find -P "$2" -type d -exec chmod 0755 {} +
    find -P "$2" -type f -exec chmod 0644 {} +
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

if [ -n "$keys" ]; then
    private_copy "$keys" trusted-keys.pub "the trusted keys"
fi
if [ "$mode" = runtime ]; then
    [ -e "$archive" ] || die "$archive: no such archive"
    private_copy "$archive" archive.tar.gz "the archive"
    if [ -n "$keys" ]; then
        [ -e "${signature:-$archive.sig}" ] \
            || die "$archive has no signature ${signature:-$archive.sig}: refusing an unsigned archive (package it with --sign-key)"
        private_copy "${signature:-$archive.sig}" archive.tar.gz.sig "the signature"
        verify_archive "$private/archive.tar.gz" "$private/archive.tar.gz.sig" "$private/trusted-keys.pub" "$archive"
    else
        echo "install.sh: WARNING: no --trusted-keys: the archive and its bundles are not verified" >&2
    fi
    # unpacked at once, from the private copy that was verified, never from the path the user gave
    staging="$private/staging"
    mkdir "$staging"
    tar -xzf "$private/archive.tar.gz" -C "$staging" --no-same-owner --no-same-permissions \
        || die "$archive cannot be unpacked"
    plain_tree "$staging" "$archive"
    top=$(find "$staging" -mindepth 1 -maxdepth 1 -type d | head -n 1)
    if [ -z "$top" ] || [ ! -f "$top/runtime/__main__.py" ] || [ ! -d "$top/bundle" ]; then
        die "$archive is not a gateway archive"
    fi
    (cd "$top" && sha256sum -c --quiet SHA256SUMS) || die "$archive: its files do not match its SHA256SUMS"
fi

if [ "$mode" = package ]; then
    if [ -z "$bundle" ] || [ ! -f "$bundle/manifest.json" ]; then
        die "--package needs --bundle DIR (an exported bundle)"
    fi
    plain_tree "$bundle" "the bundle $bundle"          # before anything is made (and again after copying it)
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
    install -m 0644 "$private/trusted-keys.pub" "$prefix/trusted-keys.pub"
    key_args="--trusted-keys $prefix/trusted-keys.pub"
fi

if [ "$mode" = runtime ]; then
    copy_tree "$top/bundle" "$prefix/bundle" "$archive's bundle"
    copy_tree "$top/runtime" "$prefix/runtime" "$archive's runtime"
    for f in run.sh README.md SHA256SUMS; do
        rm -f "$prefix/$f"
        install -m 0644 "$top/$f" "$prefix/$f"
    done
    chmod 0755 "$prefix/run.sh"
    # run.sh takes its interpreter from $PYTHON: point it at the venv (and at the trusted keys)
    printf '#!/bin/sh\nPYTHON="%s/venv/bin/python" exec "%s/run.sh" %s "$@"\n' "$prefix" "$prefix" "$key_args" \
        > "$prefix/edge-detector-run"
    chmod 0755 "$prefix/edge-detector-run"
    check=(env PYTHONPATH="$prefix" "$prefix/venv/bin/python" -I -c
           "import sys; sys.path.insert(0, '$prefix'); import runtime; runtime.Detector.load('$prefix/bundle')")
    echo "install.sh: runtime installed; try: $prefix/edge-detector-run < readings.csv"
else
    # shellcheck disable=SC2086
    "$prefix/venv/bin/python" -m pip install -q --disable-pip-version-check $pip_args "${src}[mqtt]"
    copy_tree "$bundle" "$prefix/bundle" "the bundle $bundle"
    "$prefix/venv/bin/edge-detector" detect --help >/dev/null
    check=("$prefix/venv/bin/python" -I -c "from edge_detector import Detector; Detector.load('$prefix/bundle')")
    echo "install.sh: package installed; try: $prefix/venv/bin/edge-detector detect $prefix/bundle readings.csv"
fi

if [ "$with_user" = 1 ]; then
    chown -R -h -P root:edge-detector "$prefix"             # a link's own owner, never its target's
    find -P "$prefix" ! -type l -exec chmod g+rX,o-rwx {} +  # never through a link (the venv holds some)
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
            install -m 0644 "$private/trusted-keys.pub" /etc/edge-detector/trusted-keys.pub
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
