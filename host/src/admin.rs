//! Plugin management: the operations behind the admin API (change a plugin's settings, upload,
//! reload, delete). Each is validated before anything changes, applied through the registry,
//! and persisted atomically to the config file and the plugins directory, which stay the single
//! source of truth (the file watcher sees the same result on its next pass).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::config::{Config, FailurePolicy, LimitsConfig, PluginConfig, valid_plugin_name};
use crate::registry::{PluginEntry, Registry, Status};
use crate::reload::ConfigSource;

/// Environment variable holding the admin token (overrides `admin_token` in the config).
pub const TOKEN_ENV: &str = "WASMGATE_ADMIN_TOKEN";

/// Why an admin operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No admin token is configured, so mutations are off.
    #[error(
        "the admin API's mutating endpoints are disabled: set `admin_token` in the config file \
         or the {TOKEN_ENV} environment variable"
    )]
    Disabled,
    /// The token is missing or wrong.
    #[error("missing or invalid admin token: send it as `Authorization: Bearer <token>`")]
    Unauthorized,
    /// No such plugin.
    #[error("no plugin named {0:?}; GET /api/plugins lists them")]
    NotFound(String),
    /// The request itself is invalid (bad name, bad settings).
    #[error("{0}")]
    Invalid(String),
    /// The plugin was refused: it failed to compile, link or initialise. Nothing changed.
    #[error("{0}")]
    Rejected(String),
    /// The change needs a config file and the gateway runs without one.
    #[error(
        "this change must be persisted to the config file, and the gateway was started without \
         one; start it with --config FILE"
    )]
    NoConfigFile,
    /// Reading or writing the config file or the plugins directory failed.
    #[error("{0:#}")]
    Io(anyhow::Error),
}

/// The settings `PUT /api/plugins/{name}` may change; absent fields stay as they are.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginPatch {
    /// New JSON config for `init`.
    pub config: Option<Value>,
    /// Load or unload.
    pub enabled: Option<bool>,
    /// New position among the configured plugins (0 runs first).
    pub order: Option<usize>,
    /// New limit overrides (replacing the old ones).
    pub limits: Option<LimitsConfig>,
    /// New failure policy.
    pub policy: Option<FailurePolicy>,
    /// New version (raising it forces a reload).
    pub version: Option<u32>,
    /// New quarantine policy.
    pub quarantine: Option<crate::runtime::QuarantinePolicy>,
    /// Whether requests are refused while the plugin is not active.
    pub required: Option<bool>,
    /// New capability grants (replacing the old ones).
    pub grants: Option<crate::runtime::Grants>,
}

/// The admin operations, serialised with the file watcher's reloads.
#[derive(Debug)]
pub struct Admin {
    registry: Arc<Registry>,
    source: ConfigSource,
    config: Mutex<Config>,
    token: Option<[u8; 32]>,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, synced, then
/// renamed over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| anyhow::anyhow!("writing {} failed: {e}", path.display()))
}

impl Admin {
    /// Admin operations over `registry`, with `config` (read from `source`) in force. The token
    /// comes from [`TOKEN_ENV`] or the config's `admin_token`.
    pub fn new(registry: Arc<Registry>, source: ConfigSource, config: Config) -> Self {
        let token = std::env::var(TOKEN_ENV)
            .ok()
            .or_else(|| config.admin_token.clone())
            .filter(|t| !t.is_empty())
            .map(|t| digest(t.as_bytes()));
        Self {
            registry,
            source,
            config: Mutex::new(config),
            token,
        }
    }

    /// Checks a presented bearer token in constant time (over sha256 digests, so neither the
    /// length nor the content of the real token leaks through timing).
    pub fn authorize(&self, presented: Option<&str>) -> Result<(), AdminError> {
        let Some(expected) = self.token else {
            return Err(AdminError::Disabled);
        };
        let presented = digest(presented.unwrap_or_default().as_bytes());
        let diff = expected
            .iter()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            Ok(())
        } else {
            Err(AdminError::Unauthorized)
        }
    }

    /// The configuration in force.
    pub async fn config(&self) -> Config {
        self.config.lock().await.clone()
    }

    /// Re-reads the config file and reconciles (the watcher's pass). An invalid file is
    /// logged and the last good config stays in force.
    pub async fn reload_from_source(&self) {
        let mut config = self.config.lock().await;
        if self.source.file.is_none() {
            // Without a file the config cannot change; only the plugins directory can.
            self.registry.reconcile(&config).await;
            return;
        }
        match self.source.load() {
            Ok(next) => {
                if next.listen != config.listen {
                    tracing::warn!(old = %config.listen, new = %next.listen, "`listen` changed in the config; restart the gateway to apply it");
                }
                *config = next;
            }
            Err(err) => {
                tracing::error!("the config file is invalid, keeping the last good one: {err:#}");
            }
        }
        self.registry.reconcile(&config).await;
    }

    fn check_name(name: &str) -> Result<(), AdminError> {
        if valid_plugin_name(name) {
            Ok(())
        } else {
            Err(AdminError::Invalid(format!(
                "invalid plugin name {name:?}: use 1-64 letters, digits, '-', '_' or '.', not \
                 starting with '.'"
            )))
        }
    }

    fn entry(&self, name: &str) -> Option<PluginEntry> {
        self.registry.entries().into_iter().find(|e| e.name == name)
    }

    /// The raw JSON of the config file (edited in place so the user's layout of every other
    /// field survives), or an error when there is no file.
    fn raw_config(&self) -> Result<(PathBuf, Map<String, Value>), AdminError> {
        let Some(path) = self.source.file.clone() else {
            return Err(AdminError::NoConfigFile);
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| AdminError::Io(anyhow::anyhow!("reading {}: {e}", path.display())))?;
        match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok((path, map)),
            _ => Err(AdminError::Io(anyhow::anyhow!(
                "the config file {} is not a JSON object; fix it first",
                path.display()
            ))),
        }
    }

    /// Validates a raw config, reconciles with it, and persists it if the plugin `name` loaded;
    /// otherwise reconciles back and reports the plugin's error.
    async fn apply_raw(
        &self,
        config: &mut Config,
        path: &Path,
        raw: Map<String, Value>,
        name: &str,
    ) -> Result<PluginEntry, AdminError> {
        let text = serde_json::to_string_pretty(&Value::Object(raw))
            .map_err(|e| AdminError::Io(e.into()))?;
        let mut candidate = Config::parse(&text).map_err(|e| {
            AdminError::Invalid(format!("the change makes the config invalid: {e:#}"))
        })?;
        candidate.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        self.source.apply_overrides(&mut candidate);
        self.registry.reconcile(&candidate).await;
        let entry = self.entry(name);
        let wanted = candidate.plugins.iter().find(|p| p.name == name);
        let failed = match (&entry, wanted) {
            (Some(e), Some(w)) if w.enabled => e.status != Status::Active || e.settings != *w,
            _ => false,
        };
        if failed {
            let why = entry
                .as_ref()
                .and_then(|e| e.error.clone())
                .unwrap_or_else(|| "the plugin did not load".into());
            self.registry.reconcile(config).await;
            return Err(AdminError::Rejected(format!(
                "plugin {name:?} rejected the change; the previous settings keep serving: {why}"
            )));
        }
        write_atomically(path, text.as_bytes()).map_err(AdminError::Io)?;
        *config = candidate;
        entry.ok_or_else(|| AdminError::NotFound(name.to_string()))
    }

    /// Changes a plugin's settings (persisted to the config file).
    pub async fn update(&self, name: &str, patch: PluginPatch) -> Result<PluginEntry, AdminError> {
        Self::check_name(name)?;
        let mut config = self.config.lock().await;
        if self.entry(name).is_none() {
            return Err(AdminError::NotFound(name.to_string()));
        }
        let (path, mut raw) = self.raw_config()?;
        let plugins = raw
            .entry("plugins")
            .or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(list) = plugins else {
            return Err(AdminError::Invalid(
                "`plugins` in the config file is not an array".into(),
            ));
        };
        let index = match list.iter().position(|p| p["name"] == name) {
            Some(i) => i,
            None => {
                list.push(serde_json::json!({ "name": name }));
                list.len() - 1
            }
        };
        let mut item = list.remove(index);
        if let Value::Object(fields) = &mut item {
            let mut set = |key: &str, value: Option<Value>| {
                if let Some(value) = value {
                    fields.insert(key.to_string(), value);
                }
            };
            set("config", patch.config);
            set("enabled", patch.enabled.map(Value::Bool));
            set("limits", patch.limits.map(|l| serde_json::json!(l)));
            set("policy", patch.policy.map(|p| serde_json::json!(p)));
            set("version", patch.version.map(|v| serde_json::json!(v)));
            set("quarantine", patch.quarantine.map(|q| serde_json::json!(q)));
            set("required", patch.required.map(Value::Bool));
            set("grants", patch.grants.map(|g| serde_json::json!(g)));
        }
        let at = patch.order.unwrap_or(index).min(list.len());
        list.insert(at, item);
        self.apply_raw(&mut config, &path, raw, name).await
    }

    /// Installs a component under `name` in the plugins directory: it is compiled and
    /// initialised with its settings first, and written (atomically) only if that works.
    pub async fn upload(&self, name: &str, bytes: Vec<u8>) -> Result<PluginEntry, AdminError> {
        Self::check_name(name)?;
        let config = self.config.lock().await;
        let settings = config
            .plugins
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .unwrap_or_else(|| PluginConfig::named(name));
        let limits = settings.limits.apply(config.plugin_defaults());
        let sha = crate::registry::sha256_hex(&bytes);
        let started = std::time::Instant::now();
        let refused = |e: anyhow::Error| {
            let message = format!("the upload was refused: {e:#}");
            tracing::error!(
                plugin = name,
                new_sha256 = sha,
                ms = started.elapsed().as_millis() as u64,
                "{message}"
            );
            AdminError::Rejected(message)
        };
        let (plugin, _) = self
            .registry
            .prepare(name, &sha, bytes.clone(), None, &settings, limits)
            .await
            .map_err(refused)?;
        plugin.retire().await;
        let file = settings
            .path
            .clone()
            .unwrap_or_else(|| config.plugins_dir.join(format!("{name}.wasm")));
        std::fs::create_dir_all(&config.plugins_dir).map_err(|e| AdminError::Io(e.into()))?;
        write_atomically(&file, &bytes).map_err(AdminError::Io)?;
        self.registry.reconcile(&config).await;
        self.entry(name)
            .ok_or_else(|| AdminError::NotFound(name.to_string()))
    }

    /// Reloads a plugin from its file even if nothing changed.
    pub async fn reload(&self, name: &str) -> Result<PluginEntry, AdminError> {
        Self::check_name(name)?;
        let config = self.config.lock().await;
        if self.entry(name).is_none() {
            return Err(AdminError::NotFound(name.to_string()));
        }
        self.registry.reconcile_forcing(&config, Some(name)).await;
        self.entry(name)
            .ok_or_else(|| AdminError::NotFound(name.to_string()))
    }

    /// Unloads a plugin: removes its file from the plugins directory and its config entry.
    pub async fn delete(&self, name: &str) -> Result<(), AdminError> {
        Self::check_name(name)?;
        let mut config = self.config.lock().await;
        let Some(entry) = self.entry(name) else {
            return Err(AdminError::NotFound(name.to_string()));
        };
        let configured = config.plugins.iter().any(|p| p.name == name);
        if configured {
            let (path, mut raw) = self.raw_config()?;
            if let Some(Value::Array(list)) = raw.get_mut("plugins") {
                list.retain(|p| p["name"] != name);
            }
            let text = serde_json::to_string_pretty(&Value::Object(raw))
                .map_err(|e| AdminError::Io(e.into()))?;
            write_atomically(&path, text.as_bytes()).map_err(AdminError::Io)?;
            config.plugins.retain(|p| p.name != name);
        }
        let in_plugins_dir = entry
            .file
            .parent()
            .is_some_and(|dir| dir == config.plugins_dir);
        if in_plugins_dir && entry.file.exists() {
            std::fs::remove_file(&entry.file).map_err(|e| AdminError::Io(e.into()))?;
        }
        self.registry.reconcile(&config).await;
        Ok(())
    }
}
