#!/usr/bin/env bash
# Installs the system packages reelhouse needs to build and test (Debian/Ubuntu).
#
#   scripts/bootstrap.sh                  build/test packages + check for cargo
#   scripts/bootstrap.sh --packages P...  make sure only the given packages are
#                                         installed (used by test-services.sh)
#
# Idempotent and quiet when nothing is missing. Installs with apt-get when run
# as root, through `sudo -n` when that works without a password; otherwise
# prints the exact command to run and exits 1.
set -euo pipefail

DEFAULT_PACKAGES=(
    pkg-config
    build-essential
    curl
    ca-certificates
    libgstreamer1.0-dev
    libgstreamer-plugins-base1.0-dev
    libgstreamer-plugins-bad1.0-dev
    gstreamer1.0-plugins-base
    gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad
    gstreamer1.0-plugins-ugly
    gstreamer1.0-libav
    gstreamer1.0-tools
    ffmpeg  # the hostile corpus (scripts/make-hostile-corpus.py) is made with it at test time
    python3 # runs make-hostile-corpus.py
    openssl  # the remote-worker TLS tests make their CA and certificate with it
    faketime # the fault matrix's clock-skew fault runs a worker under libfaketime
)

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# Prints the packages from "$@" that are not installed, one per line.
missing_packages() {
    local pkg status
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
        if [[ "$status" != "installed" ]]; then
            printf '%s\n' "$pkg"
        fi
    done
}

# Installs the missing packages among "$@" (apt-get update once, only if needed).
ensure_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        log "dpkg-query not found: this script supports Debian/Ubuntu only."
        log "please install the equivalents of: $*"
        return 1
    fi

    local missing=()
    mapfile -t missing < <(missing_packages "$@")
    if ((${#missing[@]} == 0)); then
        return 0
    fi

    local -a priv=()
    if [[ "$(id -u)" -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
            priv=(sudo -n)
        else
            log "missing system packages: ${missing[*]}"
            log "run this, then try again:"
            printf '  sudo apt-get update && sudo apt-get install -y %s\n' "${missing[*]}" >&2
            return 1
        fi
    fi

    log "installing: ${missing[*]}"
    "${priv[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    "${priv[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}" >&2

    local still=()
    mapfile -t still < <(missing_packages "${missing[@]}")
    if ((${#still[@]} > 0)); then
        log "still missing after apt-get install: ${still[*]}"
        return 1
    fi
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        log "cargo not found. Install Rust with rustup:"
        printf '  curl --proto '"'"'=https'"'"' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y\n' >&2
        # shellcheck disable=SC2016 # printed literally for the user to run
        printf '  . "$HOME/.cargo/env"\n' >&2
        return 1
    fi
}

main() {
    if [[ "${1:-}" == "--packages" ]]; then
        shift
        (($# > 0)) || return 0
        ensure_packages "$@"
        return
    fi
    if (($# > 0)); then
        log "usage: $0 [--packages PKG...]"
        return 2
    fi
    ensure_packages "${DEFAULT_PACKAGES[@]}"
    ensure_cargo
}

main "$@"
