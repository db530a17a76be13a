#!/usr/bin/env bash
# Builds the web app into web-demo/dist (what the server serves at `/`, and
# GraphiQL, served at `GET /graphql`).
# Uses Node.js >= 22 from scripts/node.sh, runs `npm ci` when the lockfile
# changed, and rebuilds only when a source (or ../schema.graphql) is newer than
# the last build. The build regenerates src/graphql-env.d.ts from
# ../schema.graphql and type-checks every GraphQL operation against it
# (`npm run typecheck`), so an operation the schema no longer serves fails here.
#
#   web-demo/build.sh          build if needed
#   web-demo/build.sh --force  build anyway
set -euo pipefail

WEB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$WEB_DIR/.." && pwd)"
cd "$WEB_DIR"

log() { printf 'web-demo: %s\n' "$*" >&2; }

# Node.js >= 22 (scripts/node.sh: the one on PATH if new enough, else the
# pinned LTS from the npm registry in ~/.cache/reelhouse/node); npm runs on it.
node_bin="$("$REPO_ROOT/scripts/node.sh")"
export PATH="${node_bin%/*}:$PATH"

# npm ci when node_modules is missing or older than the lockfile.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
    log "installing npm packages (npm ci)"
    # A registry mirror that carries only this platform's builds of rolldown's
    # optional native packages makes `npm ci` refuse the lockfile as out of
    # sync; `npm install` then installs the same locked versions.
    if ! npm ci --no-audit --no-fund --loglevel=error 2>"$WEB_DIR/.npm-ci.log"; then
        log "npm ci refused the lockfile ($(grep -m1 -o 'Missing: [^ ]*' "$WEB_DIR/.npm-ci.log" || echo 'see .npm-ci.log')); using npm install"
        npm install --no-audit --no-fund --loglevel=error
    fi
    rm -f "$WEB_DIR/.npm-ci.log"
fi

stamp=dist/index.html
if [[ "${1:-}" != "--force" && -f "$stamp" && -f dist/graphiql.html ]] &&
    [[ -z "$(find index.html graphiql.html vite.config.ts tsconfig.json package-lock.json src ../schema.graphql -newer "$stamp" -print -quit)" ]]; then
    exit 0
fi
log "building the app into web-demo/dist"
npm run --silent build
