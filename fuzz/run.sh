#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, one after another.
#   fuzz/run.sh 600
# cargo-fuzz needs nightly Rust. The script installs a nightly toolchain with
# rustup when it can; where toolchains cannot be downloaded, it uses the
# stable toolchain with RUSTC_BOOTSTRAP=1 (which unlocks the same -Z flags)
# and no sanitizer (libFuzzer's coverage guidance still works).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
toolchain=()
sanitizer=(--sanitizer address)
if rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal >/dev/null 2>&1; then
  toolchain=(+nightly)
else
  echo "no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1 and no sanitizer" >&2
  export RUSTC_BOOTSTRAP=1
  sanitizer=(--sanitizer none)
fi
for target in decode conn server_recv; do
  echo "== $target for ${seconds}s"
  mkdir -p "corpus/$target"
  cargo "${toolchain[@]}" fuzz run "${sanitizer[@]}" "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=4096 -print_final_stats=1
done
