#!/usr/bin/env bash
# The Pi's own software stack, emulated: a Debian bookworm arm64 root (python3, python3-numpy)
# made with `debootstrap --foreign` and `dpkg -x`, and the packaged runtime run inside it
# under qemu-aarch64-static with QEMU_LD_PREFIX pointing at the root (no binfmt, no chroot).
#
#   deploy/test-arm64.sh root                    build the cached root if needed; print its path
#   deploy/test-arm64.sh score ARCHIVE [CSV [ARGS...]]
#                                                unpack a gateway archive (edge-detector package)
#                                                and score CSV (default or -: stdin) under emulation:
#                                                `python3 -m runtime bundle/ ARGS < CSV`, events on stdout
#   deploy/test-arm64.sh bench ARCHIVE CSV [ARGS...]
#                                                the device bench of the archive's runtime under emulation:
#                                                `python3 -m runtime bench bundle/ CSV ARGS` (its times are
#                                                emulated, not real, and its report says so)
#   deploy/test-arm64.sh check BUNDLE CSV        package BUNDLE, score CSV under emulation and with
#                                                `edge-detector detect` here, and compare them
#   deploy/test-arm64.sh mirror [SOURCES...]     print the Debian mirror found in the apt sources
#
# Needs root (debootstrap), debootstrap and qemu-aarch64-static (apt-get install debootstrap
# qemu-user-static). Environment:
#   EDGE_DETECTOR_ARM64_CACHE   the root (default ~/.cache/edge-detector/arm64-bookworm); built
#                               in a temporary folder beside it and renamed into place, so a
#                               half-built root is never reused. Delete it to rebuild.
#   EDGE_DETECTOR_ARM64_MIRROR  the Debian mirror; default: the first Debian archive in this
#                               machine's apt sources (/etc/apt/sources.list{,.d/*}).
# `score` writes "arm64: ..." lines (emulated time, Python and numpy versions) to stderr.
set -euo pipefail

SUITE=bookworm
ARCH=arm64
TRIPLET=aarch64-linux-gnu
CACHE=${EDGE_DETECTOR_ARM64_CACHE:-${HOME:-/root}/.cache/edge-detector/arm64-${SUITE}}
STAMP=.edge-detector-arm64-root

die() {
    echo "test-arm64: $*" >&2
    exit 1
}

usage() {
    sed -n '6,18p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# The first Debian archive (a URI with a /debian path segment and a plain codename suite, i.e.
# not -security or -updates) among the machine's apt sources, in one-line or deb822 format.
apt_mirror() {  # [FILE...]: default, the machine's apt sources
    local files=() f
    [ $# -gt 0 ] || set -- /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
    for f in "$@"; do
        if [ -f "$f" ]; then files+=("$f"); fi
    done
    [ "${#files[@]}" -gt 0 ] || return 1
    awk '
        function ok(uri, suite) {
            return uri ~ /^https?:\/\/[^\/]+(\/.*)?\/debian\/?$/ && suite ~ /^[a-z]+$/
        }
        function flush(   i, j, nu, ns, u, s) {
            if (!found && types ~ /(^|[ \t])deb([ \t]|$)/ && enabled !~ /^[ \t]*no/) {
                nu = split(uris, u, /[ \t]+/); ns = split(suites, s, /[ \t]+/)
                for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++)
                    if (ok(u[i], s[j])) { print u[i]; found = 1; exit }
            }
            types = uris = suites = enabled = ""
        }
        FNR == 1 { flush() }
        /^[ \t]*#/ { next }
        FILENAME ~ /\.sources$/ {
            if ($0 ~ /^[ \t]*$/) { flush(); next }
            line = $0; key = tolower(line); sub(/:.*/, "", key)
            sub(/^[^:]*:[ \t]*/, "", line)
            if (key == "types") types = line
            else if (key == "uris") uris = line
            else if (key == "suites") suites = line
            else if (key == "enabled") enabled = line
            next
        }
        $1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
            if (ok($i, $(i + 1))) { print $i; found = 1; exit }
        }
        END { flush() }
    ' "${files[@]}" | sed 's:/*$::' | head -n 1 | grep .
}

build_root() {
    [ "$(id -u)" = "0" ] || die "building the arm64 root needs root (debootstrap)"
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found (apt-get install debootstrap)"
    command -v dpkg >/dev/null 2>&1 || die "dpkg not found"
    local mirror=${EDGE_DETECTOR_ARM64_MIRROR:-}
    if [ -z "$mirror" ]; then
        mirror=$(apt_mirror) || die "no Debian mirror in /etc/apt/sources.list{,.d/*}; set EDGE_DETECTOR_ARM64_MIRROR"
    fi
    local parent tmp start deb lib
    parent=$(dirname "$CACHE")
    mkdir -p "$parent"
    tmp=$(mktemp -d "$parent/.$(basename "$CACHE").XXXXXX")
    # shellcheck disable=SC2064  # expand $tmp now: it is local
    trap "rm -rf '$tmp'" EXIT
    chmod 755 "$tmp"
    start=$(date +%s)
    echo "test-arm64: debootstrap --foreign --arch=$ARCH $SUITE from $mirror into $tmp" >&2
    # The first stage downloads every package (the --include ones and their dependencies) and
    # unpacks the required ones; the second stage cannot run on this machine.
    if ! debootstrap --foreign --arch="$ARCH" --variant=minbase --include=python3,python3-numpy \
            "$SUITE" "$tmp" "$mirror" >"$tmp.log" 2>&1; then
        tail -n 20 "$tmp.log" >&2
        rm -f "$tmp.log"
        die "debootstrap failed"
    fi
    rm -f "$tmp.log"
    shopt -s nullglob
    local debs=("$tmp"/var/cache/apt/archives/*.deb)
    shopt -u nullglob
    [ "${#debs[@]}" -gt 0 ] || die "debootstrap downloaded no packages"
    for deb in "${debs[@]}"; do
        dpkg -x "$deb" "$tmp"
    done
    rm -f "${debs[@]}"
    # update-alternatives never ran: point the sonames at the reference BLAS/LAPACK copies.
    lib=$tmp/usr/lib/$TRIPLET
    for name in blas/libblas.so.3 lapack/liblapack.so.3; do
        if [ ! -e "$lib/$(basename "$name")" ] && [ -e "$lib/$name" ]; then
            ln -sfn "$name" "$lib/$(basename "$name")"
        fi
    done
    [ -x "$tmp/usr/bin/python3" ] || die "the root has no usr/bin/python3"
    [ -e "$lib/libblas.so.3" ] || die "the root has no libblas.so.3"
    check_root "$tmp" || die "python3 -c 'import numpy' fails inside the new root"
    printf 'suite=%s arch=%s mirror=%s built=%s\n' "$SUITE" "$ARCH" "$mirror" "$(date -u +%FT%TZ)" \
        >"$tmp/$STAMP"
    if ! mv -T "$tmp" "$CACHE" 2>/dev/null; then
        [ -f "$CACHE/$STAMP" ] || die "could not move the new root to $CACHE"
        rm -rf "$tmp"                      # another run finished first: keep its root
    fi
    trap - EXIT
    echo "test-arm64: built $CACHE in $(($(date +%s) - start)) s" >&2
}

emulate() {  # ROOT CMD...: run an arm64 program of ROOT under qemu with a clean environment
    local root=$1
    shift
    env -i PATH=/usr/bin:/bin LANG=C.UTF-8 PYTHONUNBUFFERED=1 QEMU_LD_PREFIX="$root" \
        qemu-aarch64-static "$root/usr/bin/python3" "$@"
}

check_root() {
    command -v qemu-aarch64-static >/dev/null 2>&1 || die "qemu-aarch64-static not found (apt-get install qemu-user-static)"
    emulate "$1" -c 'import numpy' >/dev/null 2>&1
}

ensure_root() {
    if [ -f "$CACHE/$STAMP" ]; then
        return 0
    fi
    [ -e "$CACHE" ] && die "$CACHE exists but is not a finished root; remove it"
    command -v flock >/dev/null 2>&1 || { build_root; return 0; }
    mkdir -p "$(dirname "$CACHE")"
    (
        flock 9
        if [ ! -f "$CACHE/$STAMP" ]; then
            # under the lock, any temporary root left beside the cache is from a killed build
            find "$(dirname "$CACHE")" -mindepth 1 -maxdepth 1 -name ".$(basename "$CACHE").*" \
                -exec rm -rf {} +
            build_root
        fi
    ) 9>"$CACHE.lock"
}

score() {  # ARCHIVE [CSV [RUNTIME ARGS...]]: events on stdout
    in_archive score "$@"
}

bench() {  # ARCHIVE CSV [BENCH ARGS...]: the device bench's tables on stdout
    in_archive bench "$@"
}

in_archive() {  # score|bench ARCHIVE [CSV [ARGS...]]
    local what=$1 archive=$2 csv=${3:--} work top start end status=0
    shift $(($# < 3 ? $# : 3))
    [ -f "$archive" ] || die "$archive: no such archive"
    command -v qemu-aarch64-static >/dev/null 2>&1 || die "qemu-aarch64-static not found (apt-get install qemu-user-static)"
    ensure_root
    work=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    tar -xzf "$archive" -C "$work"
    top=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n 1)
    [ -f "$top/runtime/__main__.py" ] || die "$archive holds no runtime/ package"
    if [ "$csv" = "-" ]; then
        cat >"$top/readings.csv"
    else
        cp "$csv" "$top/readings.csv"
    fi
    echo "arm64: $(cd "$top" && emulate "$CACHE" -c 'import platform, sys, numpy; print("machine", platform.machine(), "python", sys.version.split()[0], "numpy", numpy.__version__)')" >&2
    start=$(date +%s.%N)
    if [ "$what" = bench ]; then
        (cd "$top" && emulate "$CACHE" -m runtime bench bundle/ readings.csv "$@" </dev/null) || status=$?
    else
        (cd "$top" && emulate "$CACHE" -m runtime bundle/ "$@" <readings.csv) || status=$?
    fi
    end=$(date +%s.%N)
    echo "arm64: emulated $what took $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') s" >&2
    rm -rf "$work"
    trap - EXIT
    return "$status"
}

check() {  # BUNDLE CSV: both runtime modes that run stage 2 (hybrid: on suspects; lstm: always)
    local bundle=$1 csv=$2 work mode
    command -v edge-detector >/dev/null 2>&1 || die "edge-detector not on PATH (activate the venv)"
    work=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    edge-detector package "$bundle" --out "$work/gateway.tar.gz" >/dev/null
    for mode in hybrid lstm; do
        edge-detector detect "$bundle" "$csv" --mode "$mode" >"$work/x86.jsonl"
        ( score "$work/gateway.tar.gz" "$csv" --mode "$mode" >"$work/arm64.jsonl" )
        python3 - "$mode" "$work/x86.jsonl" "$work/arm64.jsonl" <<'EOF'
import json, sys
x86, arm = ([json.loads(l) for l in open(p)] for p in sys.argv[2:4])
assert len(x86) == len(arm) > 0, (len(x86), len(arm))
d1 = d2 = 0.0
for a, b in zip(x86, arm):
    assert a["line"] == b["line"] and a["is_anomaly"] == b["is_anomaly"], (a, b)
    d1 = max(d1, abs(a["stage1"] - b["stage1"]))
    if a["stage2"] is None or b["stage2"] is None:
        assert a["stage2"] == b["stage2"], (a, b)
    else:
        d2 = max(d2, abs(a["stage2"] - b["stage2"]) / max(abs(a["stage2"]), 1e-12))
        # relative 1e-5, beyond one unit of the events' 6-decimal rounding
        assert abs(a["stage2"] - b["stage2"]) <= 1e-5 * abs(a["stage2"]) + 1e-6, (a, b)
print("arm64: --mode %s: %d events, %d with stage 2, %d anomalies in both; max |stage1 diff| %.3g, "
      "max relative stage2 diff %.3g" % (sys.argv[1], len(x86), sum(e["stage2"] is not None for e in x86),
                                         sum(e["is_anomaly"] for e in x86), d1, d2), file=sys.stderr)
assert d1 <= 1e-5, d1
EOF
    done
    rm -rf "$work"
    trap - EXIT
}

case "${1:-}" in
    root) [ $# -eq 1 ] || usage; ensure_root; echo "$CACHE" ;;
    score) if [ $# -lt 2 ]; then usage; fi; shift; score "$@" ;;
    bench) if [ $# -lt 3 ]; then usage; fi; shift; bench "$@" ;;
    check) [ $# -eq 3 ] || usage; check "$2" "$3" ;;
    mirror) shift; apt_mirror "$@" || die "no Debian mirror in the apt sources" ;;
    *) usage ;;
esac
