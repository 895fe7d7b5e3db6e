# Everyday recipes. Each is a plain cargo command you can also run by hand.

# List the recipes.
default:
    @just --list

# The gateway with the mock provider and the example plugins on 127.0.0.1:8080.
demo:
    cargo run -p wasmgate --example demo

# The gateway binary with its own flags, e.g. `just run --config gateway.json`.
run *ARGS:
    cargo run -p wasmgate -- {{ARGS}}

# Build every guest plugin (example and test plugins; Rust, Python, JavaScript and C).
plugins:
    cargo build -p wasmgate-artifacts

# The whole test suite (what CI runs).
test:
    cargo test --workspace

# Formatting check and clippy with warnings denied.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Format everything.
fmt:
    cargo fmt --all

# Everything CI runs.
ci:
    bash .ci/run

# The hostile-plugin soak against the real binary (bounded: ~1000 requests per hostile kind).
soak *ARGS:
    cargo build -p wasmgate
    cargo run -p wasmgate --example soak -- {{ARGS}}

# The performance benchmark (about 9 minutes after the builds): installs its tools (oha 1.16.0
# into target/bench-tools, nginx from Debian), builds the gateway in release mode, runs the
# criterion micro-benchmarks, then measures direct / nginx / the gateway with 0, 5 no-op and
# 5 realistic plugins (pooled, shared, per-request) and writes BENCHMARKS.md. `just bench --quick` checks the harness.
bench *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    target="${CARGO_TARGET_DIR:-target}"
    tools="$target/bench-tools"
    if ! "$tools/bin/oha" --version 2>/dev/null | grep -q '1\.16\.0'; then
        cargo install oha --version 1.16.0 --locked --root "$tools"
    fi
    if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
        sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get update -q && $sudo apt-get install -y -q nginx-light
    fi
    command -v taskset >/dev/null || { echo "taskset (util-linux) is required" >&2; exit 1; }
    cargo build --release -p wasmgate -p wasmgate-bench
    cargo bench -p wasmgate --bench hot_path -- --warm-up-time 1 --measurement-time 3
    "$target/release/wasmgate-bench" run --gateway "$target/release/wasmgate" \
        --oha "$tools/bin/oha" --criterion "$target/criterion" --out BENCHMARKS.md {{ARGS}}

# The hot path in instructions (callgrind), which a noisy machine does not disturb: per hook
# call and per pipeline run, for comparing two commits. Installs valgrind (Debian) if missing.
# Other workloads by name, e.g. `just instructions 200 pipeline-only-cache pipeline-only-auth`.
instructions ITERATIONS="500" *WORKLOADS="hook pipeline-0 pipeline-noop5 pipeline-realistic5":
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v valgrind >/dev/null; then
        sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get update -q && $sudo apt-get install -y -q valgrind
    fi
    cargo build --release -p wasmgate --example instructions
    probe="${CARGO_TARGET_DIR:-target}/release/examples/instructions"
    for workload in {{WORKLOADS}}; do
        total=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null \
            --toggle-collect='instructions::measure' "$probe" \
            --workload "$workload" --iterations {{ITERATIONS}} 2>&1 \
            | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
        echo "$workload: $((total / {{ITERATIONS}})) instructions per iteration"
    done

# What a plugin costs in each guest language (size, compile, instantiate, memory, call latency).
guest-costs *ARGS:
    cargo run -p wasmgate --example guest_costs -- {{ARGS}}

# Fuzz the parsers that see untrusted input (cargo-fuzz on nightly), SECONDS per target, e.g.
# `just fuzz 300 config`. The growing corpus stays in fuzz/target/corpus; a crash is saved in
# fuzz/artifacts/<target>/: fix it, then copy it to fuzz/regressions/<target>/ (`just test`
# replays that directory and the seeds in fuzz/corpus on stable).
fuzz SECONDS="60" *TARGETS="chat_request config plugin_extra":
    #!/usr/bin/env bash
    set -euo pipefail
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    cd fuzz
    for target in {{TARGETS}}; do
        mkdir -p "target/corpus/$target" "regressions/$target"
        # No sanitizer: the parsers are safe Rust; the fuzzer hunts panics and broken invariants.
        cargo +nightly fuzz run --fuzz-dir . --sanitizer none "$target" \
            "target/corpus/$target" "corpus/$target" "regressions/$target" \
            -- -max_total_time={{SECONDS}} -dict=json.dict -print_final_stats=1
    done

# RustSec advisories for every dependency (the workspace and fuzz/), with cargo-audit. It fetches
# the advisory database from GitHub; offline, point it at a local clone: `just audit --db PATH
# --no-fetch`.
audit *ARGS:
    command -v cargo-audit >/dev/null || cargo install cargo-audit --locked
    cargo audit {{ARGS}}
    cargo audit --file fuzz/Cargo.lock {{ARGS}}
