//! The gateway's configuration: serde types (unknown fields rejected), defaults that run with
//! no file at all, loading, and validation with messages that name the offending field.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hooks::HookSet;
use crate::providers::{MockConfig, ProviderConfig};
use crate::runtime::{Grants, Isolation, Limits, QuarantinePolicy, RuntimeOptions};

/// The address the gateway listens on when nothing else is configured (loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory whose `*.wasm` files are all loaded as plugins.
    #[serde(default = "default_plugins_dir")]
    pub plugins_dir: PathBuf,
    /// Largest accepted request body, in bytes.
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// Most client connections open at once; more are closed on accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, in milliseconds.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_ms: u64,
    /// Directory of the compiled-component cache (must be writable only by the gateway's
    /// user); `null` disables it. Default: `$XDG_CACHE_HOME/wasmgate` or `~/.cache/wasmgate`.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: Option<PathBuf>,
    /// Bearer token for the admin API's mutating endpoints (`WASMGATE_ADMIN_TOKEN` overrides);
    /// without one those endpoints are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// Largest component `POST /api/plugins` accepts, in bytes.
    #[serde(default = "default_upload_limit")]
    pub upload_limit_bytes: usize,
    /// Process-wide wasm runtime settings.
    #[serde(default)]
    pub runtime: RuntimeOptions,
    /// Default limits for every plugin; a plugin entry may override each.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Providers by key; the key is the `provider` part of `provider/model`.
    #[serde(default = "default_providers")]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Fallbacks for requests that give none, by `provider/model` or by `provider` (the model's
    /// entry wins): targets tried in order when the request's own target fails with an error
    /// that allows fallbacks. Read at startup, like the providers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Plugin settings, in pipeline order. Plugins found in `plugins_dir` without an entry run
    /// after these, in name order, with default settings.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// Named pipelines besides the default one, by name: each an ordered list of plugins with
    /// per-pipeline overrides, with instances of its own. A request chooses one by route
    /// (`/pipelines/<name>/v1/chat/completions`), by the `x-wasmgate-pipeline` header, or by
    /// its virtual key (`x-wasmgate-vk`); otherwise it runs the default pipeline.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pipelines: BTreeMap<String, PipelineConfig>,
}

/// A named pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Its plugins, in order (priorities apply as in the default pipeline).
    pub plugins: Vec<PipelinePlugin>,
    /// Virtual keys (values of the `x-wasmgate-vk` header) whose requests run this pipeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_keys: Vec<String>,
}

/// A plugin of a named pipeline: a plugin of the `plugins` list (or of the plugins directory)
/// by name, with overrides of its settings for this pipeline only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelinePlugin {
    /// The plugin's name in `plugins` or the plugins directory.
    pub name: String,
    /// The JSON handed to `init` in this pipeline (replaces the plugin's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// Failure policy in this pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<FailurePolicy>,
    /// Priority in this pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Whether it runs in a parallel group in this pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<bool>,
    /// Its stages in this pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<Stage>>,
    /// Limit overrides in this pipeline (replacing the plugin's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsConfig>,
    /// Whether this pipeline refuses requests while the plugin is not active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
}

/// The header that names the pipeline a request runs.
pub const PIPELINE_HEADER: &str = "x-wasmgate-pipeline";
/// The header carrying a request's virtual key.
pub const VIRTUAL_KEY_HEADER: &str = "x-wasmgate-vk";

/// Joins a plugin's name and a named pipeline's into the name of the pipeline's own copy of
/// the plugin: `auth@strict`.
pub fn pipeline_plugin_name(plugin: &str, pipeline: &str) -> String {
    format!("{plugin}@{pipeline}")
}

/// Optional limit overrides; unset fields take the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Fuel per hook call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Wall-clock deadline per hook call, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Memory cap per instance, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Wasm stack limit per call, in KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_kb: Option<u64>,
    /// Most output one hook call may return, in KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_kb: Option<u64>,
}

impl LimitsConfig {
    /// These overrides applied on top of `base`.
    pub fn apply(&self, base: Limits) -> Limits {
        Limits {
            fuel: self.fuel.unwrap_or(base.fuel),
            timeout_ms: self.timeout_ms.unwrap_or(base.timeout_ms),
            memory_bytes: self.memory_mb.map_or(base.memory_bytes, |mb| mb << 20),
            stack_bytes: self
                .stack_kb
                .and_then(|kb| usize::try_from(kb << 10).ok())
                .unwrap_or(base.stack_bytes),
            output_bytes: self
                .output_kb
                .and_then(|kb| usize::try_from(kb << 10).ok())
                .unwrap_or(base.output_bytes),
        }
    }

    fn validate(&self, at: &str) -> anyhow::Result<()> {
        for (field, value) in [
            ("fuel", self.fuel),
            ("timeout_ms", self.timeout_ms),
            ("memory_mb", self.memory_mb),
            ("stack_kb", self.stack_kb),
            ("output_kb", self.output_kb),
        ] {
            if value == Some(0) {
                bail!("{at}.{field} must be greater than 0");
            }
        }
        if let Some(mb) = self.memory_mb
            && mb > 1 << 20
        {
            bail!("{at}.memory_mb = {mb} is absurdly large; use at most 1048576");
        }
        if let Some(kb) = self.output_kb
            && kb > 1 << 20
        {
            bail!("{at}.output_kb = {kb} is absurdly large; use at most 1048576");
        }
        if let Some(kb) = self.stack_kb
            && !(16..=1 << 20).contains(&kb)
        {
            bail!("{at}.stack_kb = {kb} must be between 16 and 1048576");
        }
        Ok(())
    }
}

/// What happens to a request when a plugin's hook fails (error, trap or exceeded limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// The request fails with a 5xx error naming the plugin and the cause.
    #[default]
    FailClosed,
    /// The hook is skipped (logged) and the request goes on.
    FailOpen,
}

/// A stage of a request a plugin can be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Before the provider: the transport interceptor and the pre-hook.
    PreRequest,
    /// After the provider: the post-hook and the stream-chunk hook.
    PostRequest,
    /// When the request ends in an error: `on-error`.
    Error,
}

impl Stage {
    /// The hooks of `hooks` that belong to one of `stages` (all of them when `stages` is none).
    pub fn mask(stages: Option<&[Stage]>, hooks: HookSet) -> HookSet {
        let Some(stages) = stages else {
            return hooks;
        };
        let pre = stages.contains(&Stage::PreRequest);
        let post = stages.contains(&Stage::PostRequest);
        let error = stages.contains(&Stage::Error);
        HookSet {
            transport_interceptor: hooks.transport_interceptor && pre,
            pre_hook: hooks.pre_hook && pre,
            post_hook: hooks.post_hook && post,
            stream_chunk: hooks.stream_chunk && post,
            on_error: hooks.on_error && error,
            cleanup: hooks.cleanup,
        }
    }
}

/// Settings of one plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The plugin's name; also the file stem of `<plugins_dir>/<name>.wasm`.
    pub name: String,
    /// The component file; relative paths are resolved against the config file's directory.
    /// Default: `<plugins_dir>/<name>.wasm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Whether the plugin is loaded.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Whether it is part of the default pipeline (named pipelines may use it either way).
    #[serde(default = "yes", skip_serializing_if = "Clone::clone")]
    pub default_pipeline: bool,
    /// Config version; raising it forces a reload (as in Bifrost).
    #[serde(default = "one")]
    pub version: u32,
    /// The JSON handed to the plugin's `init`.
    #[serde(default = "empty_object")]
    pub config: Value,
    /// Failure policy of its hook calls.
    #[serde(default)]
    pub policy: FailurePolicy,
    /// Lower runs first (ties broken by name). Without one, a plugin's priority is its position:
    /// 0, 1, 2... down the `plugins` list, continued in name order by the plugins found only in
    /// the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Whether the plugin's pre-hook may run concurrently with those of the other `parallel`
    /// plugins of the same priority, on the same input. A parallel plugin only reads: it may
    /// pass, answer or fail a request, never rewrite it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parallel: bool,
    /// The stages the plugin takes part in (default: all); the gateway never calls it in the
    /// others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<Stage>>,
    /// When true, requests are refused (503, naming the plugin) while the plugin is not
    /// active, e.g. because its component failed to load, instead of running without it. Use
    /// it for plugins that enforce something, such as authentication.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Limit overrides.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// When repeated failures take the plugin out of service for a while.
    #[serde(default)]
    pub quarantine: QuarantinePolicy,
    /// Capabilities lent to the plugin beyond the sandbox's defaults (none by default).
    #[serde(default, skip_serializing_if = "Grants::is_empty")]
    pub grants: Grants,
    /// `pooled`: warm instances are reused between requests, one per request in flight;
    /// `per-request`: every request gets an instance that never served another (created ahead
    /// of time); `shared`: each hook call takes a warm instance and gives it back when it
    /// returns (for plugins that keep no per-request state in memory). Unset (the default):
    /// `shared` for a plugin that declares it keeps no per-request state in its memory (the
    /// `shared-instances` flag of its `hooks` export), `pooled` for any other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
}

impl PluginConfig {
    /// Default settings for a plugin found in the plugins directory.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            path: None,
            enabled: true,
            default_pipeline: true,
            version: 1,
            config: empty_object(),
            policy: FailurePolicy::default(),
            priority: None,
            parallel: false,
            stages: None,
            required: false,
            limits: LimitsConfig::default(),
            quarantine: QuarantinePolicy::default(),
            grants: Grants::default(),
            isolation: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_plugins_dir() -> PathBuf {
    PathBuf::from("plugins")
}
fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|base| base.join("wasmgate"))
}
fn default_max_connections() -> usize {
    1024
}
fn default_header_read_timeout() -> u64 {
    30_000
}
fn default_upload_limit() -> usize {
    64 << 20
}
fn default_body_limit() -> usize {
    4 << 20
}
fn default_providers() -> BTreeMap<String, ProviderConfig> {
    BTreeMap::from([(
        "mock".to_string(),
        ProviderConfig::Mock(MockConfig::default()),
    )])
}
fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl Default for Config {
    /// The embedded default: mock provider, `./plugins`, loopback on port 8080.
    fn default() -> Self {
        Self {
            listen: default_listen(),
            plugins_dir: default_plugins_dir(),
            body_limit_bytes: default_body_limit(),
            max_connections: default_max_connections(),
            header_read_timeout_ms: default_header_read_timeout(),
            cache_dir: default_cache_dir(),
            admin_token: None,
            upload_limit_bytes: default_upload_limit(),
            runtime: RuntimeOptions::default(),
            limits: LimitsConfig::default(),
            providers: default_providers(),
            fallbacks: BTreeMap::new(),
            plugins: Vec::new(),
            pipelines: BTreeMap::new(),
        }
    }
}

/// Whether a plugin name is usable as a file stem, a config key and a URL path segment.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths in it are resolved against
    /// its directory.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let mut config = Self::parse(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses and validates config text; errors carry the JSON path of the bad field. The text
    /// must be one JSON object and nothing else, as the admin API expects when it rewrites the
    /// file (serde alone would also take a positional array, or trailing text after the object).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        if !text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{')
        {
            bail!("the config must be a JSON object, e.g. {{\"plugins\": []}}");
        }
        let de = &mut serde_json::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                anyhow::anyhow!("{}", e.inner())
            } else {
                anyhow::anyhow!("at `{path}`: {}", e.inner())
            }
        })?;
        de.end()
            .map_err(|e| anyhow::anyhow!("after the config object: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Resolves relative paths (plugins dir, cache dir, plugin paths, granted directories)
    /// against `base`, the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        if self.plugins_dir.is_relative() {
            self.plugins_dir = base.join(&self.plugins_dir);
        }
        if let Some(dir) = &self.cache_dir
            && dir.is_relative()
        {
            self.cache_dir = Some(base.join(dir));
        }
        for plugin in &mut self.plugins {
            if let Some(path) = &plugin.path
                && path.is_relative()
            {
                plugin.path = Some(base.join(path));
            }
            for dir in &mut plugin.grants.read_dirs {
                if dir.host.is_relative() {
                    dir.host = base.join(&dir.host);
                }
            }
        }
    }

    /// Checks what serde cannot: names, duplicates, limits, providers.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.providers.is_empty() {
            bail!(
                "`providers` is empty; configure at least one, e.g. {{\"mock\": {{\"type\": \"mock\"}}}}"
            );
        }
        for name in self.providers.keys() {
            if name.is_empty() || name.contains('/') {
                bail!("providers: key {name:?} must be non-empty and contain no '/'");
            }
        }
        for (from, targets) in &self.fallbacks {
            let provider = from.split('/').next().unwrap_or_default();
            if !self.providers.contains_key(provider) {
                bail!("fallbacks: {from:?} names no configured provider");
            }
            for (i, target) in targets.iter().enumerate() {
                let known = crate::chat::split_target(target)
                    .is_some_and(|(p, _)| self.providers.contains_key(p));
                if !known {
                    bail!(
                        "fallbacks.{from}[{i}] = {target:?} must be a provider/model of a \
                         configured provider"
                    );
                }
            }
        }
        if self.body_limit_bytes == 0 {
            bail!("body_limit_bytes must be greater than 0");
        }
        if self.max_connections == 0 || self.header_read_timeout_ms == 0 {
            bail!("max_connections and header_read_timeout_ms must be greater than 0");
        }
        self.limits.validate("limits")?;
        let mut seen = BTreeSet::new();
        for (i, plugin) in self.plugins.iter().enumerate() {
            let at = format!("plugins[{i}]");
            if !valid_plugin_name(&plugin.name) {
                bail!(
                    "{at}.name {:?} must be 1-64 characters of letters, digits, '-', '_' or '.'",
                    plugin.name
                );
            }
            if !seen.insert(&plugin.name) {
                bail!("{at}.name {:?} is configured twice", plugin.name);
            }
            if !plugin.config.is_object() {
                bail!("{at}.config must be a JSON object");
            }
            plugin.limits.validate(&format!("{at}.limits"))?;
            plugin.grants.validate(&format!("{at}.grants"))?;
            let limits = plugin.limits.apply(self.plugin_defaults());
            if limits.stack_bytes > self.runtime.max_wasm_stack_bytes {
                bail!(
                    "{at}.limits.stack_kb ({} KiB) exceeds runtime.max_wasm_stack_bytes ({} KiB)",
                    limits.stack_bytes >> 10,
                    self.runtime.max_wasm_stack_bytes >> 10
                );
            }
            let memory = limits.memory_bytes;
            if memory > self.runtime.max_memory_bytes {
                bail!(
                    "{at}.limits.memory_mb ({} MiB) exceeds runtime.max_memory_bytes ({} MiB)",
                    memory >> 20,
                    self.runtime.max_memory_bytes >> 20
                );
            }
        }
        self.validate_pipelines()
    }

    /// Pipeline names, plugin references, overrides and virtual keys.
    fn validate_pipelines(&self) -> anyhow::Result<()> {
        let mut keys = BTreeMap::new();
        for (name, pipeline) in &self.pipelines {
            let at = format!("pipelines.{name}");
            if !valid_plugin_name(name) || name == "default" {
                bail!(
                    "{at}: a pipeline name must be 1-64 letters, digits, '-', '_' or '.', and not \
                     \"default\" (the pipeline of `plugins`)"
                );
            }
            let mut seen = BTreeSet::new();
            for (i, plugin) in pipeline.plugins.iter().enumerate() {
                let at = format!("{at}.plugins[{i}]");
                if !valid_plugin_name(&plugin.name) {
                    bail!("{at}.name {:?} is not a plugin name", plugin.name);
                }
                if !seen.insert(&plugin.name) {
                    bail!(
                        "{at}.name {:?} is listed twice in this pipeline",
                        plugin.name
                    );
                }
                if plugin.config.as_ref().is_some_and(|c| !c.is_object()) {
                    bail!("{at}.config must be a JSON object");
                }
                if let Some(limits) = &plugin.limits {
                    limits.validate(&format!("{at}.limits"))?;
                }
            }
            for (i, key) in pipeline.virtual_keys.iter().enumerate() {
                if key.is_empty() {
                    bail!("{at}.virtual_keys[{i}] is empty");
                }
                if let Some(other) = keys.insert(key.as_str(), name.as_str()) {
                    bail!(
                        "{at}.virtual_keys[{i}]: the key is already routed to pipeline `{other}`"
                    );
                }
            }
        }
        Ok(())
    }

    /// The settings of a named pipeline's own copy of a plugin: the plugin's entry in
    /// `plugins` (or the defaults of a plugin found in the directory), with the pipeline's
    /// overrides, named `<plugin>@<pipeline>`, at the plugin's file.
    pub fn pipeline_plugin(&self, pipeline: &str, item: &PipelinePlugin) -> PluginConfig {
        let mut settings = self
            .plugins
            .iter()
            .find(|p| p.name == item.name)
            .cloned()
            .unwrap_or_else(|| PluginConfig::named(&item.name));
        if settings.path.is_none() {
            settings.path = Some(self.plugins_dir.join(format!("{}.wasm", item.name)));
        }
        settings.name = pipeline_plugin_name(&item.name, pipeline);
        settings.default_pipeline = false;
        if let Some(config) = &item.config {
            settings.config = config.clone();
        }
        if let Some(policy) = item.policy {
            settings.policy = policy;
        }
        if item.priority.is_some() {
            settings.priority = item.priority;
        }
        if let Some(parallel) = item.parallel {
            settings.parallel = parallel;
        }
        if item.stages.is_some() {
            settings.stages.clone_from(&item.stages);
        }
        if let Some(limits) = item.limits {
            settings.limits = limits;
        }
        if let Some(required) = item.required {
            settings.required = required;
        }
        settings
    }

    /// The limits a plugin without overrides runs under.
    pub fn plugin_defaults(&self) -> Limits {
        self.limits.apply(Limits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_is_the_embedded_default() {
        let config = Config::parse("{}").expect("valid");
        assert_eq!(config, Config::default());
        assert!(config.providers.contains_key("mock"));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"plugins": [{"name": "a", "polcy": "fail-open"}]}"#,
                "plugins[0]",
            ),
            (
                r#"{"plugins": [{"name": "a", "policy": "sometimes"}]}"#,
                "plugins[0].policy",
            ),
            (
                r#"{"plugins": [{"name": "a", "limits": {"fuel": 0}}]}"#,
                "plugins[0].limits.fuel",
            ),
            (
                r#"{"plugins": [{"name": "a"}, {"name": "a"}]}"#,
                "plugins[1].name",
            ),
            (r#"{"plugins": [{"name": "../x"}]}"#, "plugins[0].name"),
            (r#"{"providers": {"x": {"type": "nope"}}}"#, "providers.x"),
            (
                r#"{"fallbacks": {"mock": ["nowhere/m"]}}"#,
                "fallbacks.mock[0]",
            ),
            (
                r#"{"fallbacks": {"ghost/m": ["mock/echo"]}}"#,
                "\"ghost/m\" names no",
            ),
            (r#"{"listen": "nowhere"}"#, "listen"),
            (r#"{} {"listen": "nowhere"}"#, "trailing characters"),
            (r#"["127.0.0.1:1"]"#, "must be a JSON object"),
            (
                r#"{"plugins": [{"name": "a", "limits": {"memory_mb": 4096}}]}"#,
                "memory_mb",
            ),
            (
                r#"{"plugins": [{"name": "a", "grants": {"env": ["A=B"]}}]}"#,
                "plugins[0].grants.env[0]",
            ),
            (
                r#"{"plugins": [{"name": "a", "grants": {"read_dirs": [{"host": "d", "guest": "data"}]}}]}"#,
                "plugins[0].grants.read_dirs[0].guest",
            ),
            (
                r#"{"plugins": [{"name": "a", "grants": {"network": true}}]}"#,
                "plugins[0].grants",
            ),
            (
                r#"{"plugins": [{"name": "a", "limits": {"output_kb": 0}}]}"#,
                "plugins[0].limits.output_kb",
            ),
        ];
        for (text, needle) in cases {
            let err = format!("{:#}", Config::parse(text).expect_err(text));
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn limits_overrides_apply_on_defaults() {
        let config = Config::parse(
            r#"{"limits": {"timeout_ms": 50}, "plugins": [{"name": "a", "limits": {"memory_mb": 8}}]}"#,
        )
        .expect("valid");
        let limits = config.plugins[0].limits.apply(config.plugin_defaults());
        assert_eq!(limits.timeout_ms, 50);
        assert_eq!(limits.memory_bytes, 8 << 20);
        assert_eq!(limits.fuel, Limits::default().fuel);
    }

    #[test]
    fn granted_directories_resolve_against_the_config_file() {
        let mut config = Config::parse(
            r#"{"plugins": [{"name": "a", "required": true,
                "grants": {"env": ["HOME"], "read_dirs": [{"host": "data", "guest": "/data"}]}}]}"#,
        )
        .expect("valid");
        config.resolve_paths(Path::new("/etc/wasmgate"));
        let plugin = &config.plugins[0];
        assert!(plugin.required);
        assert_eq!(plugin.grants.env, ["HOME"]);
        assert_eq!(
            plugin.grants.read_dirs[0].host,
            Path::new("/etc/wasmgate/data")
        );
    }
}
