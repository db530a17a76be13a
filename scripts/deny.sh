#!/usr/bin/env bash
# cargo-deny over the workspace (deny.toml): licences, bans and sources always;
# RustSec advisories when the advisory database can be fetched.
#
# The advisory database is a git repository on GitHub. Where GitHub is not
# reachable (offline builders, registry-only networks) the advisories check is
# skipped with a warning instead of failing the build; licences, bans (which also
# keep jsonwebtoken < 10.3 and the legacy AWS TLS client out) and sources need no
# network beyond the crate index. Set DENY_REQUIRE_ADVISORIES=1 to make a failed
# fetch fatal (e.g. on a CI runner that has the network).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_DENY_VERSION="${CARGO_DENY_VERSION:-0.20.2}"
log() { printf 'deny: %s\n' "$*" >&2; }

if ! cargo deny --version >/dev/null 2>&1; then
    # A few minutes of compiling, once per machine (~/.cargo/bin is reused).
    log "installing cargo-deny $CARGO_DENY_VERSION"
    cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION"
fi

cargo deny check --hide-inclusion-graph licenses bans sources

# `fetch db` needs GitHub; give up quickly rather than hold CI.
if timeout 120 cargo deny fetch db >/dev/null 2>&1; then
    cargo deny --offline check --hide-inclusion-graph advisories
elif [[ "${DENY_REQUIRE_ADVISORIES:-0}" == 1 ]]; then
    log "the RustSec advisory database could not be fetched (GitHub unreachable?)"
    exit 1
else
    log "WARNING: advisories NOT checked: the RustSec advisory database (github.com/rustsec/advisory-db) could not be fetched"
fi
