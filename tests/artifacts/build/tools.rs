//! Installs the guest toolchains the Python, JavaScript and C plugins are built with, into
//! project-local directories under `<target dir>/guest-tools/`, pinned by version:
//!
//! - `venv/`: a Python virtual environment with `componentize-py` and `wasm-tools`
//!   (`tests/artifacts/tools/requirements.txt`);
//! - `js/node_modules/`: `@bytecodealliance/componentize-js`, installed by npm from
//!   `tests/artifacts/tools/package.json` and its `package-lock.json`;
//! - `cargo/bin/wit-bindgen`: `wit-bindgen-cli` ([`WIT_BINDGEN_VERSION`], C generator only);
//! - Debian's `clang-19`, `lld-19`, `wasi-libc` and `libclang-rt-19-dev-wasm32`, installed with
//!   apt-get only when missing (system packages: that needs root).
//!
//! Each install is idempotent: a marker file records what was installed (the pin file's text),
//! and nothing is done while it matches. A failed install names the tool, the command and how to
//! fix it.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `wit-bindgen-cli` release the C guests' bindings are generated with (the same series as
/// the `wit-bindgen` crate of the Rust guests).
pub const WIT_BINDGEN_VERSION: &str = "0.63.0";
/// Debian packages of the C toolchain, with a file each installs (to tell whether it is there).
const APT_PACKAGES: [(&str, &str); 4] = [
    ("clang-19", "/usr/bin/clang-19"),
    ("lld-19", "/usr/bin/wasm-ld-19"),
    ("wasi-libc", "/usr/lib/wasm32-wasi/libc.a"),
    (
        "libclang-rt-19-dev-wasm32",
        "/usr/lib/llvm-19/lib/clang/19/lib/wasi/libclang_rt.builtins-wasm32.a",
    ),
];
/// Name of the marker file written after a successful install.
const MARKER: &str = ".wasmgate-installed";

/// The installed tools: paths of the programs the guest builds run.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `componentize-py` in the venv.
    pub componentize_py: PathBuf,
    /// `wasm-tools` in the venv.
    pub wasm_tools: PathBuf,
    /// `node`.
    pub node: PathBuf,
    /// componentize-js's command-line entry point (a JS file run with `node`).
    pub componentize_js: PathBuf,
    /// `wit-bindgen`.
    pub wit_bindgen: PathBuf,
    /// `clang-19`.
    pub clang: PathBuf,
    /// The wasi-libc sysroot.
    pub wasi_sysroot: PathBuf,
}

/// Where the pins live and where the tools go.
pub struct Installer {
    /// `tests/artifacts/tools`: requirements.txt, package.json, package-lock.json.
    pins: PathBuf,
    /// `<target dir>/guest-tools`.
    root: PathBuf,
}

impl Installer {
    /// An installer for the pins in `pins` and the tools root `root`.
    pub fn new(pins: PathBuf, root: PathBuf) -> Self {
        Self { pins, root }
    }

    /// Installs whatever is missing or out of date and returns the tools.
    pub fn ensure_all(&self) -> Result<Tools, String> {
        fs::create_dir_all(&self.root)
            .map_err(|e| format!("cannot create {}: {e}", self.root.display()))?;
        let venv = self.ensure_python()?;
        let js = self.ensure_js()?;
        let wit_bindgen = self.ensure_wit_bindgen()?;
        ensure_apt_packages()?;
        Ok(Tools {
            componentize_py: venv.join("bin/componentize-py"),
            wasm_tools: venv.join("bin/wasm-tools"),
            node: PathBuf::from("node"),
            componentize_js: js.join("node_modules/@bytecodealliance/componentize-js/src/cli.js"),
            wit_bindgen,
            clang: PathBuf::from("/usr/bin/clang-19"),
            wasi_sysroot: PathBuf::from("/usr"),
        })
    }

    /// The venv with componentize-py and wasm-tools.
    fn ensure_python(&self) -> Result<PathBuf, String> {
        let requirements = self.pins.join("requirements.txt");
        let pin = read(&requirements)?;
        let venv = self.root.join("venv");
        let tools = [
            venv.join("bin/componentize-py"),
            venv.join("bin/wasm-tools"),
        ];
        if marker_matches(&venv, &pin) && tools.iter().all(|t| t.is_file()) {
            return Ok(venv);
        }
        let python = env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        announce("componentize-py and wasm-tools (PyPI) into a project-local venv");
        run(
            "a Python venv for componentize-py",
            Command::new(&python)
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
            "needs Python 3.10+ with the venv module (Debian: apt-get install python3-venv); \
             set PYTHON=/path/to/python3 to use another interpreter",
        )?;
        run(
            "componentize-py and wasm-tools",
            Command::new(venv.join("bin/pip"))
                .args(["install", "--disable-pip-version-check", "--no-input", "-r"])
                .arg(&requirements),
            "needs PyPI (pip's index) to be reachable; the pins are in \
             tests/artifacts/tools/requirements.txt",
        )?;
        write_marker(&venv, &pin)?;
        Ok(venv)
    }

    /// `node_modules` with componentize-js, from the committed lock file.
    fn ensure_js(&self) -> Result<PathBuf, String> {
        let dir = self.root.join("js");
        let manifest = read(&self.pins.join("package.json"))?;
        let lock = read(&self.pins.join("package-lock.json"))?;
        let pin = format!("{manifest}\n{lock}");
        let cli = dir.join("node_modules/@bytecodealliance/componentize-js/src/cli.js");
        if marker_matches(&dir, &pin) && cli.is_file() {
            return Ok(dir);
        }
        announce("componentize-js (npm) into a project-local node_modules");
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        for file in ["package.json", "package-lock.json"] {
            fs::copy(self.pins.join(file), dir.join(file))
                .map_err(|e| format!("cannot copy {file} to {}: {e}", dir.display()))?;
        }
        // `npm install --no-save` with the lock file in place installs exactly the locked
        // versions. Not `npm ci`: npm 11 refuses this lock file, which lists only the platform
        // packages of Linux (the registry mirror's metadata), as "not in sync".
        run(
            "componentize-js",
            Command::new("npm")
                .args([
                    "install",
                    "--no-save",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                ])
                .current_dir(&dir),
            "needs Node.js 18+ with npm and the npm registry to be reachable; the pins are in \
             tests/artifacts/tools/package.json and package-lock.json",
        )?;
        write_marker(&dir, &pin)?;
        Ok(dir)
    }

    /// `wit-bindgen` (C generator only), built from crates.io.
    fn ensure_wit_bindgen(&self) -> Result<PathBuf, String> {
        let root = self.root.join("cargo");
        let bin = root.join("bin/wit-bindgen");
        if marker_matches(&root, WIT_BINDGEN_VERSION) && bin.is_file() {
            return Ok(bin);
        }
        announce(&format!(
            "wit-bindgen-cli {WIT_BINDGEN_VERSION} (crates.io) into a project-local root"
        ));
        let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let build_dir = self.root.join("cargo-target");
        let mut cmd = Command::new(cargo);
        cmd.args(["install", "wit-bindgen-cli", "--locked", "--force"])
            .args(["--version", WIT_BINDGEN_VERSION])
            .args(["--no-default-features", "--features", "c"])
            .arg("--root")
            .arg(&root)
            .arg("--target-dir")
            .arg(&build_dir);
        crate::scrub_cargo_env(&mut cmd);
        run(
            "wit-bindgen-cli",
            &mut cmd,
            "needs crates.io to be reachable",
        )?;
        // Its build directory is ~400 MB and only serves this install.
        let _ = fs::remove_dir_all(&build_dir);
        write_marker(&root, WIT_BINDGEN_VERSION)?;
        Ok(bin)
    }
}

/// Installs the Debian packages of the C toolchain that are missing (apt-get, as root).
fn ensure_apt_packages() -> Result<(), String> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root {
        return Err(format!(
            "the C guest toolchain is missing Debian packages ({list}) and this build is not \
             root, so it cannot install them: run `sudo apt-get install {list}`, then build again"
        ));
    }
    announce(&format!("{list} (Debian packages, apt-get)"));
    let fix = format!(
        "needs Debian's package repositories to be reachable; install them yourself with \
         `apt-get update && apt-get install {list}`"
    );
    run(
        "the apt package lists",
        Command::new("apt-get").args(["update", "-q"]),
        &fix,
    )?;
    run(
        &list,
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &fix,
    )?;
    match APT_PACKAGES
        .iter()
        .find(|(_, file)| !Path::new(file).exists())
    {
        Some((package, file)) => Err(format!(
            "apt-get installed {package} but {file} is not there; is this Debian 12 (bookworm)?"
        )),
        None => Ok(()),
    }
}

/// Runs an install command, its output going to the build log; an error names `what` failed,
/// the command, and `fix`.
fn run(what: &str, cmd: &mut Command, fix: &str) -> Result<(), String> {
    cmd.stdout(std::io::stderr()).stderr(std::io::stderr());
    let shown = format!("{cmd:?}");
    match cmd.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!(
            "installing {what} failed ({status}) running {shown}; it {fix}. Then build again"
        )),
        Err(e) => Err(format!(
            "installing {what} failed: cannot run {shown}: {e}; it {fix}. Then build again"
        )),
    }
}

fn announce(what: &str) {
    println!("cargo:warning=installing the guest toolchain: {what} (once)");
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn marker_matches(dir: &Path, pin: &str) -> bool {
    fs::read_to_string(dir.join(MARKER)).is_ok_and(|m| m == pin)
}

fn write_marker(dir: &Path, pin: &str) -> Result<(), String> {
    let path = dir.join(MARKER);
    fs::write(&path, pin).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
