#!/usr/bin/env bash
# Vendor ODK Web Forms and the Vue build it imports into pipelines/server/static/vendor/,
# pinned and with their licences, from npm (as xstatic packages do for Leaflet).
#
#   scripts/refresh-webforms.sh [VERSION]     # default 0.22.0
#
# Needs npm and curl (or wget) once, on a machine with internet; the served files then need
# neither. Vue is pinned at the lowest version of web-forms' peer range (the one its lockfile
# resolves), and the licences of the packages the bundle inlines land in licenses/.
# After a refresh, update WEBFORMS_VERSION / VUE_VERSION in pipelines/server/webforms.py.
set -euo pipefail

VERSION="${1:-0.22.0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENDOR="$ROOT/pipelines/server/static/vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

fetch_url() {  # fetch_url URL FILE
    if command -v curl >/dev/null; then curl -fsSL "$1" -o "$2"; else wget -qO "$2" "$1"; fi
}

unpack() {  # unpack SPEC DIR: npm pack SPEC, unpack its package/ into DIR
    local tgz
    mkdir -p "$2"
    tgz="$(cd "$WORK" && npm pack --silent "$1" | tail -n 1)"
    tar -xzf "$WORK/$tgz" -C "$2" --strip-components=1
}

echo "@getodk/web-forms@$VERSION"
unpack "@getodk/web-forms@$VERSION" "$WORK/web-forms"
PKG="$WORK/web-forms/package.json"
VUE_RANGE="$(node -p "require('$PKG').peerDependencies.vue")"
VUE="$(echo "$VUE_RANGE" | sed -E 's/^[~^>=]*//')"
echo "vue@$VUE (peer range $VUE_RANGE)"
unpack "vue@$VUE" "$WORK/vue"

# npm's tarball has no licence file: take the repository's at the release tag; offline, or
# behind a firewall that blocks GitHub, use WEBFORMS_LICENSE=FILE or the last vendored copy
# (only while package.json still says Apache-2.0).
LICENSE_URL="https://raw.githubusercontent.com/getodk/web-forms/%40getodk/web-forms%40$VERSION/LICENSE.md"
if [ -n "${WEBFORMS_LICENSE:-}" ]; then
    cp "$WEBFORMS_LICENSE" "$WORK/LICENSE.md"
elif ! fetch_url "$LICENSE_URL" "$WORK/LICENSE.md"; then
    previous="$(ls -d "$VENDOR"/webforms-*/LICENSE.md 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$previous" ] && [ "$(node -p "require('$PKG').license")" = "Apache-2.0" ]; then
        echo "warning: $LICENSE_URL unreachable; reusing $previous (still Apache-2.0)" >&2
        cp "$previous" "$WORK/LICENSE.md"
    else
        echo "error: cannot get web-forms' LICENSE.md; set WEBFORMS_LICENSE=FILE" >&2
        exit 1
    fi
fi

WF_OUT="$VENDOR/webforms-$VERSION"
VUE_OUT="$VENDOR/vue-$VUE"
rm -rf "$WF_OUT" "$VUE_OUT"
mkdir -p "$WF_OUT/licenses" "$VUE_OUT"

# The engine: every file of dist/ (the entry, its chunk, the lazily imported map chunk).
cp "$WORK/web-forms/dist/"*.js "$WF_OUT/"
cp "$WORK/web-forms/package.json" "$WORK/web-forms/README.md" "$WORK/LICENSE.md" "$WF_OUT/"

# Packages the bundle inlines: its dependencies, plus the build-time ones vite bundles in
# (UI kit, CSS, the Roboto font): keep their licences.
BUNDLED_DEV="primevue primeflex @primeuix/themes @fontsource/roboto ramda"
for dep in $(node -p "Object.keys(require('$PKG').dependencies || {}).join(' ')") $BUNDLED_DEV; do
    range="$(node -p "const p = require('$PKG'); (p.dependencies || {})['$dep'] || p.devDependencies['$dep']")"
    dir="$WORK/deps/$dep"
    unpack "$dep@$range" "$dir"
    lic="$(ls "$dir" | grep -iE '^(licen[cs]e|copying|notice)' | head -n 1 || true)"
    if [ -n "$lic" ]; then
        cp "$dir/$lic" "$WF_OUT/licenses/$(echo "${dep#@}" | tr '/' '_').txt"
    else
        echo "warning: $dep has no licence file; see its package.json" >&2
    fi
done

cp "$WORK/vue/dist/vue.esm-browser.prod.js" "$VUE_OUT/"
cp "$WORK/vue/LICENSE" "$VUE_OUT/LICENSE"

# Sanity: nothing imported but ./chunks and "vue" (the import map's only entry).
if grep -hE '^import .*from ?"[^"]+"' "$WF_OUT/"*.js | grep -oE 'from ?"[^"]+"' \
    | grep -vE '"(vue|\./[^"]+)"$'; then
    echo "error: the bundle imports something other than vue and its own chunks" >&2
    exit 1
fi

echo "vendored:"
du -sh "$WF_OUT" "$VUE_OUT"
echo "now set WEBFORMS_VERSION = \"$VERSION\" and VUE_VERSION = \"$VUE\" in pipelines/server/webforms.py"
