#!/usr/bin/env bash
# The whole test suite: lint and type checks, Rust tests, fuzz build, pytest (unit, integration, e2e; the
# 30 slowest listed, to keep the whole under 30 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$HOME/.cargo/bin:$PATH"

step() { echo; echo "=== $* ==="; }

step "ruff"
ruff check bridge signaling colibri2 sluice bench xmppclient tests
ruff format --check bridge signaling colibri2 sluice bench xmppclient tests
step "mypy (strict)"
mypy
step "cargo fmt --check"
(cd native && cargo fmt --all --check)
step "cargo clippy -D warnings"
(cd native && cargo clippy --workspace --all-targets -q -- -D warnings)
step "cargo test"
(cd native && cargo test --workspace -q 2>&1)
step "cargo fuzz build"
scripts/fuzz.sh build
step "pytest"
pytest -q -p no:cacheprovider --durations=30 "$@"
