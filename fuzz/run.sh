#!/usr/bin/env bash
# Run every fuzz target for a bounded time and print its executions and crashes.
#
#   fuzz/run.sh [seconds per target, default 60] [target ...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Works on stable Rust:
# RUSTC_BOOTSTRAP=1 lets stable rustc take the -Z flags cargo-fuzz passes
# (sanitizer, coverage instrumentation). Seeds come from fuzz/corpus/<target>
# (committed, never written to); what the fuzzer finds goes to
# fuzz/target/corpus/<target> (ignored); a crashing input lands in
# fuzz/artifacts/<target>/. Exits 1 if any target crashed.

set -u
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(parse parse_execute parse_binary)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi

export RUSTC_BOOTSTRAP=1
nice cargo fuzz build -O || exit 2

crashed=0
printf '%-15s %8s %14s %10s  %s\n' target seconds executions exec/s result
for target in "${targets[@]}"; do
    work="fuzz/target/corpus/$target"
    log="fuzz/target/$target.log"
    mkdir -p "$work"
    nice cargo fuzz run -O "$target" "$work" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1
    status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    if [ $status -eq 0 ]; then
        result="no crash"
    else
        crashed=1
        artifact=$(sed -n 's/.*Test unit written to \(.*\)/\1/p' "$log" | tail -1)
        result="CRASH (exit $status): ${artifact:-see $log}"
    fi
    printf '%-15s %8s %14s %10s  %s\n' "$target" "$seconds" "${runs:-?}" "${rate:-?}" "$result"
done
exit $crashed
