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

# Build every guest plugin (example and test plugins) for wasm32-wasip2.
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
