//! Capabilities a plugin may be granted beyond the sandbox's defaults. None is granted by
//! default: no environment, no filesystem, no network.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// What one plugin is granted, from its config entry's `grants`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Environment variables of the gateway's process the plugin may read, by name. A name not
    /// set in the gateway's environment is simply absent for the plugin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Host directories the plugin may read (never write), each visible at a guest path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_dirs: Vec<DirGrant>,
}

/// A host directory lent read-only to a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// The directory on the host; relative paths are resolved against the config file's
    /// directory.
    pub host: PathBuf,
    /// Where the plugin sees it, e.g. `/data`.
    pub guest: String,
}

impl Grants {
    /// Checks the grants' shape; `at` names the config field in messages.
    pub fn validate(&self, at: &str) -> anyhow::Result<()> {
        for (i, name) in self.env.iter().enumerate() {
            if name.is_empty() || name.contains(['=', '\0']) {
                anyhow::bail!("{at}.env[{i}] = {name:?} is not an environment variable name");
            }
        }
        for (i, dir) in self.read_dirs.iter().enumerate() {
            if !dir.guest.starts_with('/') || dir.guest.contains('\0') {
                anyhow::bail!(
                    "{at}.read_dirs[{i}].guest = {:?} must be an absolute guest path such as \
                     \"/data\"",
                    dir.guest
                );
            }
        }
        Ok(())
    }

    /// Whether anything at all is granted.
    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.read_dirs.is_empty()
    }

    /// Adds the granted capabilities to a WASI context under construction. Fails, naming the
    /// directory, when a granted directory cannot be opened.
    pub(crate) fn apply(&self, wasi: &mut WasiCtxBuilder) -> anyhow::Result<()> {
        for name in &self.env {
            if let Ok(value) = std::env::var(name) {
                wasi.env(name, value);
            }
        }
        for dir in &self.read_dirs {
            wasi.preopened_dir(&dir.host, &dir.guest, FsPerms::ReadOnly)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "the granted directory {} (for {}) cannot be opened: {e}",
                        dir.host.display(),
                        dir.guest
                    )
                })?;
        }
        Ok(())
    }
}
