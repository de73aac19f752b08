#!/usr/bin/env bash
# cargo-fuzz targets. `fuzz.sh build` builds all; `fuzz.sh run SECONDS [target...]` runs each for SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
TARGETS=(stun rtp rtcp srtp_unprotect demux dtls_record vp8 vp9 h264 av1_dd selective twcc_write red tcp_deframe turn_client)
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
cd native/fuzz
case "${1:-build}" in
build)
    cargo +nightly fuzz build -O 2>&1 | tail -2 ;;
run)
    secs=${2:-60}; shift 2 || true
    [ $# -gt 0 ] && TARGETS=("$@")
    for t in "${TARGETS[@]}"; do
        mkdir -p "corpus/$t"
        echo "--- $t ($secs s)"
        cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=1500 2>&1 \
            | grep -E "^(#[0-9]+ +DONE|Done [0-9]+ runs|==[0-9]+== ERROR|SUMMARY)" || true
    done ;;
esac
