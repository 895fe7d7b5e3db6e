//! Builds the guests written in Python, JavaScript and C into components, each with its own
//! toolchain (see `tools.rs`), into `<target dir>/guests/<language>/<name>.wasm`.
//!
//! A guest is a directory `<group>/<language>/<name>/` (`example-plugins/python/pii-redactor/`):
//! - Python: `app.py` (module `app`, defining the `WitWorld` class through the SDK in
//!   `plugin-sdk/python`), built with `componentize-py`;
//! - JavaScript: `plugin.js` (an ES module exporting the world's functions through the SDK in
//!   `plugin-sdk/js`), built with `componentize-js`;
//! - C: every `.c` file, compiled with clang-19 against wasi-libc and the bindings `wit-bindgen
//!   c` generates, plus the SDK in `plugin-sdk/c` (its helpers and its allocator, which stands in
//!   for wasi-libc's dlmalloc), then wrapped by `wasm-tools component new`.
//!
//! These builds take 10-30 s each for Python and JavaScript, so a guest is rebuilt only when its
//! inputs change: a stamp next to the component records a hash of the guest's files, its
//! language's SDK, the WIT and the toolchain pins.

use std::fmt::Write as _;
use std::fs;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use crate::tools::{Tools, WIT_BINDGEN_VERSION};

/// A language with its own toolchain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Python,
    Js,
    C,
}

impl Lang {
    /// Every language, in the order of the generated constants.
    pub const ALL: [Lang; 3] = [Lang::Python, Lang::Js, Lang::C];

    /// The directory name of the language under a guest group (`example-plugins/<dir>/`).
    pub fn dir(self) -> &'static str {
        match self {
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::C => "c",
        }
    }

    /// The prefix of its constants in `artifacts.rs`.
    pub fn prefix(self) -> &'static str {
        match self {
            Lang::Python => "PYTHON",
            Lang::Js => "JS",
            Lang::C => "C",
        }
    }

    /// The human name.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
            Lang::C => "C",
        }
    }

    /// The file that marks a directory as a guest of this language.
    fn entry(self) -> &'static str {
        match self {
            Lang::Python => "app.py",
            Lang::Js => "plugin.js",
            Lang::C => "plugin.c",
        }
    }
}

/// One guest directory and the component built from it.
#[derive(Debug)]
pub struct ForeignGuest {
    pub lang: Lang,
    /// The directory name, e.g. `pii-redactor`.
    pub name: String,
    /// Its directory relative to the workspace, e.g. `example-plugins/python/pii-redactor`.
    pub rel_dir: String,
    /// Where the component goes.
    pub wasm: PathBuf,
}

/// The guests of `lang` under `<workspace>/<group>/<lang dir>/`, sorted by name.
pub fn guests_in(workspace: &Path, group: &str, lang: Lang, out_root: &Path) -> Vec<ForeignGuest> {
    let base = workspace.join(group).join(lang.dir());
    let Ok(entries) = fs::read_dir(&base) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(lang.entry()).is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| ForeignGuest {
            lang,
            rel_dir: format!("{group}/{}/{name}", lang.dir()),
            wasm: out_root.join(lang.dir()).join(format!("{name}.wasm")),
            name,
        })
        .collect()
}

/// Builds every guest whose inputs changed, two at a time; the first failure is returned (after
/// the others finished) with the build's output.
pub fn build_all(workspace: &Path, tools: &Tools, guests: &[ForeignGuest]) -> Result<(), String> {
    let queue = Mutex::new(guests.iter());
    let errors = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(2));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                    let Some(guest) = next else { break };
                    if let Err(e) = build_if_changed(workspace, tools, guest)
                        && let Ok(mut errors) = errors.lock()
                    {
                        errors.push(e);
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap_or_default();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n\n"))
    }
}

/// Builds `guest` unless its stamp says its inputs are unchanged.
fn build_if_changed(workspace: &Path, tools: &Tools, guest: &ForeignGuest) -> Result<(), String> {
    let stamp_path = guest.wasm.with_extension("wasm.inputs");
    let stamp = inputs_hash(workspace, guest)?;
    if guest.wasm.is_file() && fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
        return Ok(());
    }
    let work = guest
        .wasm
        .parent()
        .unwrap_or(workspace)
        .join("build")
        .join(&guest.name);
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let _ = fs::remove_file(&stamp_path);
    let started = Instant::now();
    let dir = workspace.join(&guest.rel_dir);
    let wit = workspace.join("wit");
    match guest.lang {
        Lang::Python => run(
            guest,
            Command::new(&tools.componentize_py)
                .arg("-d")
                .arg(&wit)
                .args(["-w", "plugin", "componentize", "-p"])
                .arg(workspace.join("plugin-sdk/python"))
                .arg("-p")
                .arg(&dir)
                .arg("app")
                .arg("-o")
                .arg(&guest.wasm),
        )?,
        Lang::Js => run(
            guest,
            Command::new(&tools.node)
                .arg(&tools.componentize_js)
                // Relative: componentize-js resolves imports relative to the working directory.
                .arg(Path::new(&guest.rel_dir).join("plugin.js"))
                .arg("--wit")
                .arg(&wit)
                .args(["--world-name", "plugin", "--disable", "http", "fetch-event"])
                .arg("--out")
                .arg(&guest.wasm)
                // Module paths resolve inside the working directory: the SDK must be in it.
                .current_dir(workspace),
        )?,
        Lang::C => build_c(workspace, tools, guest, &dir, &work)?,
    }
    println!(
        "cargo:warning=built the {} guest {} in {:.1} s",
        guest.lang.name(),
        guest.rel_dir,
        started.elapsed().as_secs_f64()
    );
    fs::write(&stamp_path, stamp).map_err(|e| format!("cannot write {}: {e}", stamp_path.display()))
}

/// wit-bindgen c, clang-19 (wasm32-wasi reactor, wasi-libc, the SDK's allocator), then
/// `wasm-tools component new`.
fn build_c(
    workspace: &Path,
    tools: &Tools,
    guest: &ForeignGuest,
    dir: &Path,
    work: &Path,
) -> Result<(), String> {
    let bindings = work.join("bindings");
    run(
        guest,
        Command::new(&tools.wit_bindgen)
            // The pre- and post-hook's lent handle is released by the bindings after the hook.
            .args([
                "c",
                "--autodrop-borrows",
                "yes",
                "--world",
                "plugin",
                "--out-dir",
            ])
            .arg(&bindings)
            .arg(workspace.join("wit")),
    )?;
    let sdk = workspace.join("plugin-sdk/c");
    let mut sources: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .chain(fs::read_dir(&bindings).map_err(|e| format!("cannot read bindings: {e}"))?)
        .chain(fs::read_dir(&sdk).map_err(|e| format!("cannot read {}: {e}", sdk.display()))?)
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c" || x == "o"))
        .collect();
    sources.sort();
    let core = work.join("core.wasm");
    run(
        guest,
        Command::new(&tools.clang)
            .args([
                "--target=wasm32-wasi",
                "-mexec-model=reactor",
                "-Oz",
                "-flto",
                // memcpy and memset become `memory.copy`/`memory.fill` instead of libc's loops.
                "-mbulk-memory",
            ])
            .args(["-Wall", "-Werror", "-fuse-ld=lld", "-Wl,--strip-all"])
            .arg(format!("--sysroot={}", tools.wasi_sysroot.display()))
            .arg("-I")
            .arg(&bindings)
            .arg("-I")
            .arg(&sdk)
            .args(&sources)
            .arg("-o")
            .arg(&core),
    )?;
    run(
        guest,
        Command::new(&tools.wasm_tools)
            .args(["component", "new"])
            .arg(&core)
            .arg("-o")
            .arg(&guest.wasm),
    )
}

/// Runs one build step; a failure names the guest and the command, with its output.
fn run(guest: &ForeignGuest, cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let output = cmd
        .output()
        .map_err(|e| format!("{}: cannot run {shown}: {e}", guest.rel_dir))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "building the {} guest {} failed ({}) running {shown}:\n{}{}",
        guest.lang.name(),
        guest.rel_dir,
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// A hash of everything the component depends on: the guest's files, its language's SDK, the
/// WIT and the toolchain pins.
fn inputs_hash(workspace: &Path, guest: &ForeignGuest) -> Result<String, String> {
    let mut hasher = DefaultHasher::new();
    guest.rel_dir.hash(&mut hasher);
    WIT_BINDGEN_VERSION.hash(&mut hasher);
    for dir in [
        guest.rel_dir.as_str(),
        "wit",
        &format!("plugin-sdk/{}", guest.lang.dir()),
        "tests/artifacts/tools",
    ] {
        hash_tree(&workspace.join(dir), &mut hasher)?;
    }
    let mut stamp = String::new();
    let _ = write!(stamp, "{:016x}", hasher.finish());
    Ok(stamp)
}

/// Feeds every file under `dir` (sorted, skipping caches) to `hasher`: path and contents.
fn hash_tree(dir: &Path, hasher: &mut DefaultHasher) -> Result<(), String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name == "__pycache__" || name == "node_modules" || name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            hash_tree(&path, hasher)?;
        } else {
            name.hash(hasher);
            fs::read(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .hash(hasher);
        }
    }
    Ok(())
}
