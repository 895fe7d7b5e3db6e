//! Builds every guest plugin of the workspace for `wasm32-wasip2` and writes their paths to
//! `$OUT_DIR/artifacts.rs` (as the test suites of Spin and wasmtime do), so tests always run
//! the components built from the current source.
//!
//! Guests are the crates under `example-plugins/`, `tests/test-plugins/` and
//! `tests/hostile-plugins/`. They are built by
//! one nested `cargo build --target wasm32-wasip2 --profile guest` into `<target dir>/guests`: a
//! target directory of its own, so the nested cargo neither waits for the outer one's lock nor
//! inherits its flags.
//!
//! Guests in other languages live in `python/`, `js/` and `c/` under `example-plugins/` and
//! `tests/test-plugins/`; the toolchains they need are installed into `<target dir>/guest-tools`
//! (`build/tools.rs`) and each is built when its inputs change (`build/foreign.rs`).

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

#[path = "build/foreign.rs"]
mod foreign;
#[path = "build/tools.rs"]
mod tools;

use foreign::{ForeignGuest, Lang};

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "guest";
/// Where guest crates live (relative to the workspace root), the constant listing them, and its
/// doc comment.
const GUEST_DIRS: [(&str, &str, &str); 3] = [
    ("example-plugins", "EXAMPLE_PLUGINS", "Every example plugin"),
    ("tests/test-plugins", "TEST_PLUGINS", "Every test plugin"),
    (
        "tests/hostile-plugins",
        "HOSTILE_PLUGINS",
        "Every hostile test plugin",
    ),
];

/// The guests of one directory and the constant that lists them.
struct Group {
    dir: &'static str,
    konst: &'static str,
    doc: &'static str,
    guests: Vec<Guest>,
}

/// A guest crate: its package name and directory.
struct Guest {
    package: String,
    dir: PathBuf,
}

fn main() {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| fail("tests/artifacts is not two levels below the workspace root"))
        .to_path_buf();
    let out_dir = PathBuf::from(env_var("OUT_DIR"));

    rerun_if_changed(&workspace);
    ensure_target_installed();

    let groups: Vec<Group> = GUEST_DIRS
        .iter()
        .map(|&(dir, konst, doc)| Group {
            dir,
            konst,
            doc,
            guests: guests_in(&workspace.join(dir)),
        })
        .collect();
    let guests: Vec<&Guest> = groups.iter().flat_map(|g| &g.guests).collect();
    if guests.is_empty() {
        fail("no guest crates found under example-plugins/ or tests/test-plugins/");
    }

    let target_dir = outer_target_dir(&out_dir).join("guests");
    let status = build_guests(&workspace, &target_dir, &guests);
    if !status.success() {
        eprintln!("error: the nested build of the guest plugins failed ({status})");
        std::process::exit(status.code().unwrap_or(1));
    }

    let foreign = foreign_guests(&workspace, &target_dir);
    let tools = tools::Installer::new(
        workspace.join("tests/artifacts/tools"),
        outer_target_dir(&out_dir).join("guest-tools"),
    )
    .ensure_all()
    .unwrap_or_else(|e| fail(&e));
    foreign::build_all(&workspace, &tools, &foreign).unwrap_or_else(|e| fail(&e));

    let wasm_dir = target_dir.join(TARGET).join(PROFILE);
    let mut source = artifacts_rs(&groups, &wasm_dir);
    source.push_str(&foreign_rs(&foreign));
    let cache = target_dir.join("compiled-cache");
    let _ = writeln!(
        source,
        "\n/// A directory for the gateway's compiled-component cache that tests share, so each \
         component\n/// (a Python one takes 10-30 s) compiles once per build of it, not once per \
         test.\npub const COMPILE_CACHE_DIR: &str = {:?};",
        cache.display().to_string()
    );
    let dest = out_dir.join("artifacts.rs");
    fs::write(&dest, source)
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", dest.display())));
}

/// Re-run when the plugin world, the SDK, a guest or the workspace manifest or lock changes.
fn rerun_if_changed(workspace: &Path) {
    for path in [
        "wit",
        "plugin-sdk/Cargo.toml",
        "plugin-sdk/src",
        "plugin-sdk/macros/Cargo.toml",
        "plugin-sdk/macros/src",
        "example-plugins",
        "tests/test-plugins",
        "tests/hostile-plugins",
        "plugin-sdk/python",
        "plugin-sdk/js",
        "plugin-sdk/c",
        "tests/artifacts/tools",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build");
}

/// Where the guests of other languages are (example and test plugins), in the order of their
/// constants.
const FOREIGN_GROUPS: [&str; 2] = ["example-plugins", "tests/test-plugins"];

/// Every Python, JavaScript and C guest, with the path its component is built to.
fn foreign_guests(workspace: &Path, target_dir: &Path) -> Vec<ForeignGuest> {
    let mut guests = Vec::new();
    for lang in Lang::ALL {
        for group in FOREIGN_GROUPS {
            guests.extend(foreign::guests_in(workspace, group, lang, target_dir));
        }
    }
    for (i, a) in guests.iter().enumerate() {
        if let Some(b) = guests[..i]
            .iter()
            .find(|b| b.lang == a.lang && b.name == a.name)
        {
            fail(&format!(
                "two {} guests are named {}: {} and {}; rename one",
                a.lang.name(),
                a.name,
                a.rel_dir,
                b.rel_dir
            ));
        }
    }
    guests
}

/// Makes sure the `wasm32-wasip2` standard library is installed, installing it with rustup if
/// not (`RUSTUP_AUTO_INSTALL=0` machines do not install it from rust-toolchain.toml).
fn ensure_target_installed() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_else(|| fail(&format!("`{rustc} --print sysroot` failed")));
    if sysroot.join("lib/rustlib").join(TARGET).is_dir() {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target: rustup target add {TARGET}");
    let installed = Command::new("rustup")
        .args(["target", "add", TARGET])
        .stdout(std::io::stderr())
        .status();
    match installed {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!(
            "`rustup target add {TARGET}` failed ({status}); run it yourself, then build again"
        )),
        Err(e) => fail(&format!(
            "the {TARGET} target is not installed and rustup could not be run ({e}); install the \
             target for this toolchain (`rustup target add {TARGET}`), then build again"
        )),
    }
}

/// The guest crates directly under `dir`, sorted by directory name.
fn guests_in(dir: &Path) -> Vec<Guest> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| Guest {
            package: package_name(&dir.join("Cargo.toml")),
            dir,
        })
        .collect()
}

impl Guest {
    /// The last component of the crate's directory.
    fn dir_name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The `name` of the `[package]` table of a manifest (a line-based read: enough for our crates).
fn package_name(manifest: &Path) -> String {
    let text = fs::read_to_string(manifest)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", manifest.display())));
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(value) = line.strip_prefix("name") {
            let value = value.trim_start();
            if let Some(value) = value.strip_prefix('=') {
                return value.trim().trim_matches('"').to_owned();
            }
        }
    }
    fail(&format!("no [package] name in {}", manifest.display()))
}

/// The outer build's target directory: the first ancestor of `OUT_DIR` holding cargo's
/// `CACHEDIR.TAG` (`OUT_DIR` is `<target>[/<triple>]/<profile>/build/<pkg>-<hash>/out`), else
/// `CARGO_TARGET_DIR`, else the parent of the profile directory.
fn outer_target_dir(out_dir: &Path) -> PathBuf {
    if let Some(dir) = out_dir
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
    {
        return dir.to_path_buf();
    }
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR").map(PathBuf::from)
        && dir.is_absolute()
    {
        return dir;
    }
    out_dir
        .ancestors()
        .find(|d| d.file_name().is_some_and(|n| n == "build"))
        .and_then(|build| build.parent()?.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| {
            fail(&format!(
                "cannot find the target dir above {}",
                out_dir.display()
            ))
        })
}

/// Runs the nested cargo for every guest, with the outer build's environment scrubbed.
fn build_guests(workspace: &Path, target_dir: &Path, guests: &[&Guest]) -> ExitStatus {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .arg("build")
        .args(["--target", TARGET, "--profile", PROFILE])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    for guest in guests {
        cmd.args(["-p", &guest.package]);
    }
    scrub_cargo_env(&mut cmd);
    cmd.stdout(std::io::stderr()).stderr(std::io::stderr());
    cmd.status()
        .unwrap_or_else(|e| fail(&format!("cannot run the nested cargo build: {e}")))
}

/// Removes the outer build's flags, wrappers, jobserver and target settings from a nested cargo
/// command: they are for the host target (or for clippy) and would change or break its build.
fn scrub_cargo_env(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if LEAKY_VARS.contains(&key) || LEAKY_PREFIXES.iter().any(|p| key.starts_with(p)) {
            cmd.env_remove(key);
        }
    }
}

const LEAKY_VARS: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
];
const LEAKY_PREFIXES: &[&str] = &["CARGO_PROFILE_", "CARGO_CFG_", "CARGO_FEATURE_"];

/// The source of `artifacts.rs`: one constant per guest and one list per guest directory.
fn artifacts_rs(groups: &[Group], wasm_dir: &Path) -> String {
    let mut src = String::from("// Generated by tests/artifacts/build.rs.\n");
    for group in groups {
        let mut list = String::new();
        for guest in &group.guests {
            let wasm = wasm_dir.join(format!("{}.wasm", guest.package.replace('-', "_")));
            if !wasm.is_file() {
                fail(&format!(
                    "the nested build did not produce {}",
                    wasm.display()
                ));
            }
            let name = guest.package.to_uppercase().replace('-', "_");
            let dir = format!("{}/{}", group.dir, guest.dir_name());
            let path = wasm.display().to_string();
            // Writing to a String cannot fail.
            let _ = writeln!(
                src,
                "\n/// The `{}` component (built from `{dir}`).\npub const {name}: &str = {path:?};",
                guest.package
            );
            let _ = writeln!(list, "    ({:?}, {name}),", guest.package);
        }
        let (dir, konst, doc) = (group.dir, group.konst, group.doc);
        let _ = writeln!(
            src,
            "\n/// {doc} (the crates under `{dir}/`), as (package name, component path), sorted by \
             directory.\npub const {konst}: &[(&str, &str)] = &[\n{list}];"
        );
    }
    src
}

/// The constants of the Python, JavaScript and C guests: one per guest (`PYTHON_PII_REDACTOR`)
/// and, per language, the list of its example plugins.
fn foreign_rs(guests: &[ForeignGuest]) -> String {
    let mut src = String::new();
    for lang in Lang::ALL {
        let mut list = String::new();
        for guest in guests.iter().filter(|g| g.lang == lang) {
            let name = format!(
                "{}_{}",
                lang.prefix(),
                guest.name.to_uppercase().replace('-', "_")
            );
            let path = guest.wasm.display().to_string();
            let _ = writeln!(
                src,
                "\n/// The {} `{}` component (built from `{}`).\npub const {name}: &str = {path:?};",
                lang.name(),
                guest.name,
                guest.rel_dir
            );
            if guest.rel_dir.starts_with("example-plugins/") {
                let _ = writeln!(list, "    ({:?}, {name}),", guest.name);
            }
        }
        let _ = writeln!(
            src,
            "\n/// Every {} example plugin (under `example-plugins/{}/`), as (directory name, \
             component path), sorted by name.\npub const {}_EXAMPLE_PLUGINS: &[(&str, &str)] = \
             &[\n{list}];",
            lang.name(),
            lang.dir(),
            lang.prefix()
        );
    }
    src
}

fn env_var(key: &str) -> String {
    env::var(key).unwrap_or_else(|_| fail(&format!("cargo did not set {key}")))
}

fn fail(message: &str) -> ! {
    panic!("wasmgate-artifacts: {message}")
}
