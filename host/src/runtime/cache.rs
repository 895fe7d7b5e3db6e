//! On-disk cache of compiled components, so a restart with many plugins skips Cranelift (a
//! Python or JS plugin takes 10-30 s to compile and a few milliseconds to load from the cache).
//!
//! An entry is keyed by the component's sha256 and the engine's compatibility hash
//! ([`Engine::precompile_compatibility_hash`], which covers the target, the compiler flags, the
//! tunables, the wasm features and the wasmtime version). Its file, `<sha256>-<engine
//! prefix>.cwasm`, holds a fixed header (magic and format version, the full engine key, the
//! component sha256, the sha256 and length of the payload) followed by the output of
//! [`Component::serialize`].
//!
//! The cache is never trusted blindly: loading compiled code is `unsafe` in wasmtime (it runs as
//! is), so an entry is read whole, bounded in size, and its header and payload hash are checked
//! before [`Component::deserialize`] sees the very bytes that were checked. A missing entry is a
//! miss; a corrupt, truncated, oversized or foreign one is rejected, deleted and rebuilt. Cache
//! I/O problems are logged and never fail a load. Entries are written to a temporary file in the
//! same directory, synced and renamed into place, so readers and concurrent writers only ever
//! see whole entries.
//!
//! Concurrent loads of one component in one process (several plugins from one file, gateways
//! sharing a cache directory) compile it once: the others wait for that entry, then hit it.
//!
//! The integrity hash guards against corruption, not against an attacker: the directory must be
//! writable only by the gateway's user, which [`ComponentCache::new`] enforces on Unix.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::Hasher;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// First bytes of every entry: identifies the file and the header layout (last byte: version).
const MAGIC: [u8; 8] = *b"WGCWASM\x01";
/// Header: magic, engine key, component sha256, payload sha256, payload length (u64 LE).
const HEADER_LEN: usize = MAGIC.len() + 32 + 32 + 32 + 8;
/// Largest serialized component the cache stores or reads (a Python plugin is ~50 MiB).
const MAX_PAYLOAD_BYTES: u64 = 512 << 20;
/// Hex characters of the engine key used in file names (the full key is in the header).
const ENGINE_PREFIX_LEN: usize = 16;
/// Extension of entries.
const ENTRY_EXT: &str = "cwasm";
/// Suffix of in-progress writes; older leftovers (from a crash) are swept by `new`.
const TEMP_SUFFIX: &str = ".tmp";
/// Age after which a temporary file is considered abandoned.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// Distinguishes the temporary files of concurrent writers within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A directory of precompiled components.
#[derive(Debug)]
pub(crate) struct ComponentCache {
    /// The cache directory.
    dir: PathBuf,
    /// Hex sha256 of the engine's precompile compatibility hash (and the cache format).
    engine_key: String,
}

/// Where [`ComponentCache::get_or_compile`] got the component from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CacheOutcome {
    /// Loaded from a valid cache entry; nothing was compiled.
    Hit,
    /// No entry existed: compiled (and stored, unless storing failed; that is logged).
    Miss,
    /// An entry existed but was ignored (and deleted) for the given reason, or the cache could
    /// not be used for this call; the component was compiled.
    Rejected(String),
}

impl ComponentCache {
    /// Opens (creating it if needed) the cache directory `dir` for components compiled by
    /// `engine`. On Unix a new directory is private (mode 0700), and an existing one that other
    /// users may write to is refused: its entries are loaded as machine code.
    pub(crate) fn new(dir: PathBuf, engine: &Engine) -> anyhow::Result<Self> {
        create_private_dir(&dir)
            .with_context(|| format!("cannot create the cache directory {}", dir.display()))?;
        check_private(&dir)?;
        sweep_stale_temps(&dir);
        Ok(Self {
            dir,
            engine_key: engine_key(engine),
        })
    }

    /// Returns the compiled component for `bytes` (whose hex sha256 is `sha256`): from the cache
    /// when a valid entry exists, otherwise compiled with `compile` and stored. Blocking; call it
    /// inside `spawn_blocking`. Never fails because of the cache: a cache I/O or validation
    /// problem is logged (`tracing::warn`) and the component is compiled instead. Errors are
    /// those of `compile`.
    pub(crate) fn get_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        bytes: &[u8],
        compile: impl FnOnce(&[u8]) -> anyhow::Result<Component>,
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        if let Some(reason) = self.unusable_for(engine, sha256) {
            tracing::warn!(sha256, "component cache bypassed: {reason}");
            return Ok((compile(bytes)?, CacheOutcome::Rejected(reason)));
        }
        debug_assert_eq!(
            hex::encode(Sha256::digest(bytes)),
            sha256,
            "`sha256` is not the hash of `bytes`"
        );
        let path = self.entry_path(sha256);
        // One compilation per entry at a time in this process; waiters then find the entry.
        let lock = entry_lock(&path);
        let _compiling = lock.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = match self.read_entry(&path, sha256) {
            Ok(Some(entry)) => match deserialize_verified(engine, &entry) {
                Ok(component) => {
                    tracing::debug!(sha256, path = %path.display(), "component cache hit");
                    return Ok((component, CacheOutcome::Hit));
                }
                Err(e) => CacheOutcome::Rejected(format!("wasmtime refused the entry: {e:#}")),
            },
            Ok(None) => CacheOutcome::Miss,
            Err(reason) => CacheOutcome::Rejected(reason),
        };
        if let CacheOutcome::Rejected(reason) = &outcome {
            tracing::warn!(
                sha256,
                path = %path.display(),
                "ignoring the cached compiled component ({reason}); recompiling"
            );
            remove_entry(&path);
        }

        let component = compile(bytes)?;
        if let Err(e) = self.store(&path, sha256, &component) {
            tracing::warn!(
                sha256,
                path = %path.display(),
                "could not store the compiled component in the cache: {e:#}"
            );
        }
        Ok((component, outcome))
    }

    /// Why this call cannot use the cache, if it cannot: a key that is not a hex sha256 (it
    /// becomes a file name), or an engine other than the one the cache was opened for.
    fn unusable_for(&self, engine: &Engine, sha256: &str) -> Option<String> {
        if sha256.len() != 64
            || !sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Some(format!("{sha256:?} is not a lowercase hex sha256"));
        }
        if engine_key(engine) != self.engine_key {
            return Some("the engine's configuration differs from the cache's".into());
        }
        None
    }

    /// The file of the entry for component `sha256` under this engine.
    fn entry_path(&self, sha256: &str) -> PathBuf {
        let prefix = self
            .engine_key
            .get(..ENGINE_PREFIX_LEN)
            .unwrap_or(&self.engine_key);
        self.dir.join(format!("{sha256}-{prefix}.{ENTRY_EXT}"))
    }

    /// Reads and checks the entry at `path`: `Ok(None)` if there is none, `Err(reason)` if it
    /// exists but cannot be read or is not a valid entry for `sha256` under this engine.
    fn read_entry(&self, path: &Path, sha256: &str) -> Result<Option<VerifiedEntry>, String> {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot stat it: {e}")),
        };
        // Not only a sanity check: opening a FIFO would block.
        if !meta.file_type().is_file() {
            return Err("it is not a regular file".into());
        }
        let max_len = HEADER_LEN as u64 + MAX_PAYLOAD_BYTES;
        if meta.len() > max_len {
            return Err(format!(
                "it is {} bytes, more than the {max_len} allowed",
                meta.len()
            ));
        }
        let mut data = Vec::new();
        File::open(path)
            // The file may have been replaced since the stat: bound the read itself too.
            .and_then(|file| file.take(max_len + 1).read_to_end(&mut data))
            .map_err(|e| format!("cannot read it: {e}"))?;
        VerifiedEntry::check(data, &self.engine_key, sha256).map(Some)
    }

    /// Serializes `component` and writes it as the entry at `path`, atomically.
    fn store(&self, path: &Path, sha256: &str, component: &Component) -> anyhow::Result<()> {
        let payload = component
            .serialize()
            .map_err(|e| anyhow::anyhow!("serializing the component failed: {e:#}"))?;
        let payload_len = u64::try_from(payload.len()).unwrap_or(u64::MAX);
        if payload_len > MAX_PAYLOAD_BYTES {
            anyhow::bail!(
                "the compiled component is {payload_len} bytes, more than the \
                 {MAX_PAYLOAD_BYTES} the cache stores"
            );
        }
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&decode_key(&self.engine_key)?);
        header.extend_from_slice(&decode_key(sha256)?);
        header.extend_from_slice(&Sha256::digest(&payload));
        header.extend_from_slice(&payload_len.to_le_bytes());
        write_atomically(path, &[&header, &payload])
    }
}

/// The lock of one cache entry, shared by every caller in this process that wants it now.
fn entry_lock(path: &Path) -> Arc<Mutex<()>> {
    static LOCKS: LazyLock<Mutex<HashMap<PathBuf, Weak<Mutex<()>>>>> =
        LazyLock::new(Mutex::default);
    let mut locks = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    locks.retain(|_, lock| lock.strong_count() > 0);
    if let Some(lock) = locks.get(path).and_then(Weak::upgrade) {
        return lock;
    }
    let lock = Arc::new(Mutex::new(()));
    locks.insert(path.to_path_buf(), Arc::downgrade(&lock));
    lock
}

/// An entry whose header matched this engine and component and whose payload matched its
/// hash. Only [`VerifiedEntry::check`] builds one; [`deserialize_verified`] relies on that.
#[derive(Debug)]
struct VerifiedEntry {
    /// The whole entry file.
    data: Vec<u8>,
}

impl VerifiedEntry {
    /// Checks a whole entry file against the expected engine key and component sha256 (hex).
    fn check(data: Vec<u8>, engine_key: &str, sha256: &str) -> Result<Self, String> {
        let Some((header, payload)) = data.split_at_checked(HEADER_LEN) else {
            return Err(format!(
                "truncated: {} bytes, shorter than the header",
                data.len()
            ));
        };
        let (magic, rest) = header.split_at(MAGIC.len());
        let (entry_engine, rest) = rest.split_at(32);
        let (entry_sha256, rest) = rest.split_at(32);
        let (payload_sha256, len) = rest.split_at(32);
        if magic != MAGIC {
            return Err("not a wasmgate cache entry of this format (bad magic)".into());
        }
        if hex::encode(entry_engine) != engine_key {
            return Err("compiled by an engine with another configuration".into());
        }
        if hex::encode(entry_sha256) != sha256 {
            return Err("it belongs to another component".into());
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(len);
        let declared = u64::from_le_bytes(len_bytes);
        if u64::try_from(payload.len()).ok() != Some(declared) {
            return Err(format!(
                "truncated or padded: the payload is {} bytes, the header says {declared}",
                payload.len()
            ));
        }
        if Sha256::digest(payload).as_slice() != payload_sha256 {
            return Err("corrupt: the payload does not match its sha256".into());
        }
        Ok(Self { data })
    }

    /// The serialized component.
    fn payload(&self) -> &[u8] {
        self.data.get(HEADER_LEN..).unwrap_or_default()
    }
}

/// Loads a verified entry's compiled code into `engine`.
#[expect(
    unsafe_code,
    reason = "loading precompiled code is unsafe in wasmtime; the entry is verified first"
)]
fn deserialize_verified(engine: &Engine, entry: &VerifiedEntry) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` is sound for the unmodified output of
    // `Component::serialize` (of any wasmtime version: others are rejected with an error).
    // `entry` exists only if its payload matches the sha256 recorded in its header and the
    // header names this component and this engine's compatibility hash; entries are written only
    // by `ComponentCache::store` from `Component::serialize`, atomically, into a directory that
    // only the gateway's user can write (checked by `ComponentCache::new`). The checked bytes
    // are the bytes loaded (no re-read, no mmap of a file that could change underneath).
    // Incompatible configurations that slipped through are refused by wasmtime's own check.
    unsafe { Component::deserialize(engine, entry.payload()) }
}

/// The cache key of an engine: the hex sha256 of its precompile compatibility hash, which
/// includes the wasmtime version (`Config::module_version` defaults to it), and of the cache
/// format.
fn engine_key(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    hasher.write(b"wasmgate component cache\0");
    hasher.write(&MAGIC);
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    hex::encode(hasher.0.finalize())
}

/// A [`Hasher`] feeding sha256: stable across processes and Rust versions, unlike
/// `DefaultHasher`, so keys survive restarts and toolchain upgrades.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        digest
            .iter()
            .take(8)
            .fold(0, |acc, &b| (acc << 8) | u64::from(b))
    }
}

/// Decodes a hex sha256 into its 32 bytes.
fn decode_key(key: &str) -> anyhow::Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(key, &mut out).with_context(|| format!("{key:?} is not a hex sha256"))?;
    Ok(out)
}

/// Writes `parts` to `path` atomically: into a new temporary file in the same directory, synced,
/// then renamed over `path`. Concurrent writers use distinct temporary files, and the last
/// rename wins with a whole entry.
fn write_atomically(path: &Path, parts: &[&[u8]]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(
        ".{name}.{}.{}{TEMP_SUFFIX}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| -> io::Result<()> {
        let mut file = private_file_options().open(&temp)?;
        for part in parts {
            file.write_all(part)?;
        }
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e).with_context(|| format!("writing {} failed", temp.display()));
    }
    sync_dir(dir);
    Ok(())
}

/// Deletes a rejected entry; a failure is logged (the next store replaces it anyway).
fn remove_entry(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), "could not delete a cache entry: {e}"),
    }
}

/// Deletes temporary files left by writers that crashed (older than [`STALE_TEMP_AGE`]).
fn sweep_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.ends_with(TEMP_SUFFIX)) {
            continue;
        }
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|modified| {
                now.duration_since(modified)
                    .is_ok_and(|age| age > STALE_TEMP_AGE)
            });
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Options creating a new file readable and writable only by its owner (on Unix).
fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates `dir` and its missing parents (mode 0700 on Unix).
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Refuses a cache directory that users other than its owner may write to (on Unix).
fn check_private(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = fs::metadata(dir)
            .with_context(|| format!("cannot stat the cache directory {}", dir.display()))?;
        if !meta.is_dir() {
            anyhow::bail!("the cache path {} is not a directory", dir.display());
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            anyhow::bail!(
                "the cache directory {} is writable by other users (mode {mode:o}); its entries \
                 are loaded as machine code, so it must be writable only by the gateway's user \
                 (chmod go-w)",
                dir.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Makes a rename in `dir` durable (Unix; best effort: the entry is valid either way).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), "could not sync the cache directory: {e}");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use wasmtime::Config;

    use super::*;

    /// A real component and its hex sha256.
    fn hello_world() -> (Vec<u8>, String) {
        let bytes = fs::read(wasmgate_artifacts::HELLO_WORLD).unwrap();
        let sha = hex::encode(Sha256::digest(&bytes));
        (bytes, sha)
    }

    fn engine() -> Engine {
        Engine::new(&Config::new()).unwrap()
    }

    fn fuel_engine() -> Engine {
        let mut config = Config::new();
        config.consume_fuel(true);
        Engine::new(&config).unwrap()
    }

    /// Calls `get_or_compile`, counting compilations in `compiles`.
    fn load(
        cache: &ComponentCache,
        engine: &Engine,
        (bytes, sha): &(Vec<u8>, String),
        compiles: &Cell<u32>,
    ) -> CacheOutcome {
        let (component, outcome) = cache
            .get_or_compile(engine, sha, bytes, |b| {
                compiles.set(compiles.get() + 1);
                Ok(Component::new(engine, b)?)
            })
            .unwrap();
        // The component is usable: it has the plugin world's exports.
        assert!(component.component_type().exports(engine).count() > 0);
        outcome
    }

    /// The only `.cwasm` entry in `dir`.
    fn only_entry(dir: &Path) -> PathBuf {
        let entries: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == ENTRY_EXT))
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries.into_iter().next().unwrap()
    }

    fn is_rejected(outcome: &CacheOutcome, why: &str) -> bool {
        matches!(outcome, CacheOutcome::Rejected(reason) if reason.contains(why))
    }

    #[test]
    fn miss_then_hit_without_compiling() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ComponentCache::new(dir.path().join("cache"), &engine).unwrap();
        let component = hello_world();
        let compiles = Cell::new(0);

        assert_eq!(
            load(&cache, &engine, &component, &compiles),
            CacheOutcome::Miss
        );
        assert_eq!(compiles.get(), 1);
        let entry = only_entry(&cache.dir);
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!("{}-", component.1)), "{name}");

        // Another cache on the same directory and an equivalent engine (a restart).
        let engine = self::engine();
        let cache = ComponentCache::new(dir.path().join("cache"), &engine).unwrap();
        assert_eq!(
            load(&cache, &engine, &component, &compiles),
            CacheOutcome::Hit
        );
        assert_eq!(compiles.get(), 1, "a hit must not compile");
    }

    #[test]
    fn corrupt_entries_are_rejected_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ComponentCache::new(dir.path().to_path_buf(), &engine).unwrap();
        let component = hello_world();
        let compiles = Cell::new(0);
        assert_eq!(
            load(&cache, &engine, &component, &compiles),
            CacheOutcome::Miss
        );
        let entry = only_entry(dir.path());
        let good = fs::read(&entry).unwrap();

        type Corruption = fn(&mut Vec<u8>);
        let corruptions: [(Corruption, &str); 6] = [
            (
                |d| {
                    let middle = HEADER_LEN + (d.len() - HEADER_LEN) / 2;
                    d[middle] ^= 0x40;
                },
                "sha256",
            ),
            (|d| *d.last_mut().unwrap() ^= 1, "sha256"),
            (|d| d.truncate(d.len() - 100), "truncated"),
            (|d| d.truncate(10), "truncated"),
            (|d| d.clear(), "truncated"),
            (|d| d[0] = b'X', "magic"),
        ];
        for (i, (corrupt, why)) in corruptions.into_iter().enumerate() {
            let mut bad = good.clone();
            corrupt(&mut bad);
            fs::write(&entry, &bad).unwrap();
            let outcome = load(&cache, &engine, &component, &compiles);
            assert!(is_rejected(&outcome, why), "case {i}: {outcome:?}");
            assert_eq!(compiles.get(), 2 + i as u32, "case {i}: rebuilt");
            assert_eq!(
                fs::read(&entry).unwrap().len(),
                good.len(),
                "case {i}: rewritten"
            );
            assert_eq!(
                load(&cache, &engine, &component, &compiles),
                CacheOutcome::Hit
            );
        }

        // An entry that is not a regular file is rejected and replaced.
        fs::remove_file(&entry).unwrap();
        fs::create_dir(&entry).unwrap();
        let outcome = load(&cache, &engine, &component, &compiles);
        assert!(is_rejected(&outcome, "regular file"), "{outcome:?}");
    }

    #[test]
    fn entries_of_another_engine_config_are_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, fuel) = (engine(), fuel_engine());
        let plain_cache = ComponentCache::new(dir.path().to_path_buf(), &plain).unwrap();
        let fuel_cache = ComponentCache::new(dir.path().to_path_buf(), &fuel).unwrap();
        assert_ne!(plain_cache.engine_key, fuel_cache.engine_key);
        assert_eq!(plain_cache.engine_key, engine_key(&engine()), "stable key");
        let component = hello_world();
        let compiles = Cell::new(0);

        // Different keys: both miss, then both hit their own entry.
        assert_eq!(
            load(&plain_cache, &plain, &component, &compiles),
            CacheOutcome::Miss
        );
        assert_eq!(
            load(&fuel_cache, &fuel, &component, &compiles),
            CacheOutcome::Miss
        );
        let plain_entry = plain_cache.entry_path(&component.1);
        let fuel_entry = fuel_cache.entry_path(&component.1);
        assert_ne!(plain_entry, fuel_entry);
        assert_eq!(
            load(&plain_cache, &plain, &component, &compiles),
            CacheOutcome::Hit
        );
        assert_eq!(
            load(&fuel_cache, &fuel, &component, &compiles),
            CacheOutcome::Hit
        );
        assert_eq!(compiles.get(), 2);

        // A foreign entry planted under this engine's name: its header names the other engine.
        fs::copy(&fuel_entry, &plain_entry).unwrap();
        let outcome = load(&plain_cache, &plain, &component, &compiles);
        assert!(
            is_rejected(&outcome, "another configuration"),
            "{outcome:?}"
        );

        // Even with a forged header, wasmtime's own check refuses the foreign code.
        let foreign = fs::read(&fuel_entry).unwrap();
        let payload = &foreign[HEADER_LEN..];
        let mut forged = Vec::new();
        forged.extend_from_slice(&MAGIC);
        forged.extend_from_slice(&decode_key(&plain_cache.engine_key).unwrap());
        forged.extend_from_slice(&decode_key(&component.1).unwrap());
        forged.extend_from_slice(&Sha256::digest(payload));
        forged.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        forged.extend_from_slice(payload);
        fs::write(&plain_entry, forged).unwrap();
        let outcome = load(&plain_cache, &plain, &component, &compiles);
        assert!(is_rejected(&outcome, "wasmtime refused"), "{outcome:?}");
        assert_eq!(
            load(&plain_cache, &plain, &component, &compiles),
            CacheOutcome::Hit
        );

        // An engine other than the cache's bypasses it.
        let outcome = load(&plain_cache, &fuel, &component, &compiles);
        assert!(is_rejected(&outcome, "differs"), "{outcome:?}");
    }

    #[test]
    fn an_entry_of_another_component_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ComponentCache::new(dir.path().to_path_buf(), &engine).unwrap();
        let component = hello_world();
        let compiles = Cell::new(0);
        assert_eq!(
            load(&cache, &engine, &component, &compiles),
            CacheOutcome::Miss
        );

        // The same component under another (fake) hash, reusing the first entry's file.
        let other_sha = hex::encode(Sha256::digest(b"other"));
        let other_entry = cache.entry_path(&other_sha);
        fs::copy(only_entry(dir.path()), &other_entry).unwrap();
        let (_, outcome) = cache
            .get_or_compile(&engine, &other_sha, b"other", |_| {
                Ok(Component::new(&engine, &component.0)?)
            })
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(is_rejected(&outcome, "another component"), "{outcome:?}");
    }

    #[test]
    fn an_unwritable_cache_still_compiles() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache_dir = dir.path().join("cache");
        let cache = ComponentCache::new(cache_dir.clone(), &engine).unwrap();
        // A file where the directory was: every read and write fails (even for root).
        fs::remove_dir(&cache_dir).unwrap();
        fs::write(&cache_dir, b"not a directory").unwrap();
        let component = hello_world();
        let compiles = Cell::new(0);
        let first = load(&cache, &engine, &component, &compiles);
        assert!(is_rejected(&first, "stat"), "{first:?}");
        let second = load(&cache, &engine, &component, &compiles);
        assert!(is_rejected(&second, "stat"), "{second:?}");
        assert_eq!(compiles.get(), 2);
        assert!(ComponentCache::new(cache_dir, &engine).is_err());
    }

    #[test]
    fn compile_errors_are_returned_and_nothing_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ComponentCache::new(dir.path().to_path_buf(), &engine).unwrap();
        let sha = hex::encode(Sha256::digest(b"junk"));
        let result = cache.get_or_compile(&engine, &sha, b"junk", |_| anyhow::bail!("bad wasm"));
        assert_eq!(result.err().unwrap().to_string(), "bad wasm");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn concurrent_writers_leave_one_whole_entry() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ComponentCache::new(dir.path().to_path_buf(), &engine).unwrap();
        let component = hello_world();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| load(&cache, &engine, &component, &Cell::new(0)));
            }
        });
        let compiles = Cell::new(0);
        assert_eq!(
            load(&cache, &engine, &component, &compiles),
            CacheOutcome::Hit
        );
        assert_eq!(compiles.get(), 0);
        only_entry(dir.path());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn concurrent_loads_of_one_component_compile_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let component = hello_world();
        let compiles = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                // A cache each, as separate gateways sharing the directory have.
                let cache = ComponentCache::new(dir.path().to_path_buf(), &engine).unwrap();
                let (engine, component, compiles) = (&engine, &component, &compiles);
                s.spawn(move || {
                    cache
                        .get_or_compile(engine, &component.1, &component.0, |b| {
                            compiles.fetch_add(1, Ordering::Relaxed);
                            Ok(Component::new(engine, b)?)
                        })
                        .unwrap()
                });
            }
        });
        assert_eq!(
            compiles.load(Ordering::Relaxed),
            1,
            "the others waited, then hit"
        );
    }

    #[test]
    fn bad_keys_and_shared_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ComponentCache::new(dir.path().to_path_buf(), &engine).unwrap();
        let component = hello_world();
        let (_, outcome) = cache
            .get_or_compile(&engine, "../../etc/passwd", &[], |_| {
                Ok(Component::new(&engine, &component.0)?)
            })
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(is_rejected(&outcome, "not a lowercase hex"), "{outcome:?}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let shared = dir.path().join("shared");
            fs::create_dir(&shared).unwrap();
            fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
            let err = ComponentCache::new(shared, &engine).unwrap_err();
            assert!(
                err.to_string().contains("writable by other users"),
                "{err:#}"
            );
            let created = dir.path().join("a/b");
            ComponentCache::new(created.clone(), &engine).unwrap();
            let mode = fs::metadata(created).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }

    #[test]
    fn stale_temp_files_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".x.cwasm.1.0.tmp");
        let fresh = dir.path().join(".x.cwasm.1.1.tmp");
        fs::write(&stale, b"partial").unwrap();
        fs::write(&fresh, b"partial").unwrap();
        let old = SystemTime::now() - 2 * STALE_TEMP_AGE;
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        ComponentCache::new(dir.path().to_path_buf(), &engine()).unwrap();
        assert!(!stale.exists());
        assert!(fresh.exists(), "a write in progress is left alone");
    }
}
