#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 machine (idempotent):
# Debian packages, a venv with pinned Python deps, the Rust extension (release build).
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PKGS=(chromium chromium-driver libssl-dev pkg-config prosody coturn iproute2 iptables valgrind janus)
missing=()
for p in "${DEB_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "bootstrap: Rust (rustup) is required" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.deps-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip==25.3
    # Dependencies from pyproject (runtime + test), then the package itself via maturin.
    .venv/bin/python - <<'PYEOF' > .venv/requirements.txt
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(p["project"]["dependencies"] + p["project"]["optional-dependencies"]["test"]
      + p["build-system"]["requires"]))
PYEOF
    .venv/bin/pip install -q -r .venv/requirements.txt
    rm -f .venv/.deps-*; touch "$stamp"
fi

# Rebuild the extensions only when the Rust or Python package sources changed.
src_hash=$(find native/core/src native/py/src native/loadgen/src native/benchpy/src native/Cargo.toml \
    native/*/Cargo.toml pyproject.toml native/benchpy/pyproject.toml -type f -print0 | sort -z \
    | xargs -0 sha256sum | sha256sum | cut -c1-16)
if [ ! -f ".venv/.native-$src_hash" ] || [ ! -x native/target/release/raw_relay ] \
    || ! ls bench/_native*.so >/dev/null 2>&1; then
    VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" .venv/bin/maturin develop --release -q
    # `sluice bench`'s own extension (bench._native: the load generator, the raw relay, the SRTP test
    # helper): its own small maturin project, so the bridge's module and wheel stay without it.
    VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" \
        .venv/bin/maturin develop --release -q -m native/benchpy/Cargo.toml
    # The raw relay baseline `sluice bench` runs next to the bridge.
    (cd native && cargo build --release -q -p sluice-loadgen --bin raw_relay)
    rm -f .venv/.native-*; touch ".venv/.native-$src_hash"
fi
# The web client's one npm dependency (strophe.js, pinned in its package-lock.json), served from its
# node_modules; it lives in the signaling package so that a built wheel carries it (pyproject.toml).
web=signaling/webclient
web_stamp=$web/node_modules/.lock-$(sha256sum $web/package-lock.json | cut -c1-16)
if [ ! -f "$web_stamp" ]; then
    # The machine's own Node.js and npm (Debian's npm conflicts with the preinstalled nodejs).
    command -v npm >/dev/null || { echo "bootstrap: npm is required for the web client" >&2; exit 1; }
    npm ci --prefix "$web" --omit=optional --no-audit --no-fund --loglevel=error
    touch "$web_stamp"
fi
# LiveKit server for `sluice bench --target livekit` and its test: built once with `go install` (a few
# minutes) into ~/.cache/sluice; a machine without Go skips it, and the bench then says so.
if [ -x /usr/local/go/bin/go ] && ! command -v go >/dev/null; then
    export PATH="/usr/local/go/bin:$PATH"
fi
if command -v go >/dev/null; then
    .venv/bin/python -m bench.livekit build >/dev/null
else
    echo "bootstrap: no Go here: \`sluice bench --target livekit\` will not run" >&2
fi
echo "bootstrap: ready"
