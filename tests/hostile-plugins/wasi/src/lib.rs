//! `hostile-wasi`: tries, in its pre-hook, the WASI capabilities a plugin is not granted by
//! default, and answers the request with a JSON report of what it got instead of calling the
//! provider:
//!
//! ```json
//! {"env": {"err": "..."}, "read": {"ok": "file text"}, "list": {"err": "..."}, "connect": {"err": "..."}}
//! ```
//!
//! Config (all optional; an absent field is not tried):
//!
//! | field     | what it tries                                         |
//! |-----------|-------------------------------------------------------|
//! | `env`     | reading that environment variable                     |
//! | `read`    | reading that file                                     |
//! | `list`    | listing that directory                                |
//! | `write`   | creating that file                                    |
//! | `connect` | opening a TCP connection to that `host:port`          |
//! | `init_read` | reading that file in `init`, reported as `init_read` (a file read in `init` leaves the guest holding the directory it came through) |

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmgate_sdk::serde_json::{Value, json};
use wasmgate_sdk::{ChatResponse, Ctx, Plugin, PreOutcome, Request, Result};

/// The plugin's config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    env: Option<String>,
    read: Option<String>,
    list: Option<String>,
    write: Option<String>,
    connect: Option<String>,
    init_read: Option<String>,
}

/// The plugin.
pub struct Wasi {
    config: Config,
    /// What `init` got reading `init_read`.
    init_read: Option<Value>,
}

fn report<T: ToString, E: std::fmt::Display>(result: std::result::Result<T, E>) -> Value {
    match result {
        Ok(value) => json!({ "ok": value.to_string() }),
        Err(err) => json!({ "err": err.to_string() }),
    }
}

#[wasmgate_sdk::plugin]
impl Plugin for Wasi {
    fn init(config: &str) -> Result<Self> {
        let config: Config = wasmgate_sdk::parse_config(config)?;
        let init_read = config
            .init_read
            .as_ref()
            .map(|path| report(std::fs::read_to_string(path)));
        Ok(Self { config, init_read })
    }

    fn pre_hook(&mut self, _ctx: &Ctx, req: &Request<'_>) -> Result<PreOutcome> {
        let c = &self.config;
        let mut got = BTreeMap::new();
        if let Some(read) = &self.init_read {
            got.insert("init_read", read.clone());
        }
        if let Some(name) = &c.env {
            got.insert("env", report(std::env::var(name)));
        }
        if let Some(path) = &c.read {
            got.insert("read", report(std::fs::read_to_string(path)));
        }
        if let Some(path) = &c.list {
            let listed = std::fs::read_dir(path).map(|entries| {
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect();
                names.sort();
                names.join(",")
            });
            got.insert("list", report(listed));
        }
        if let Some(path) = &c.write {
            got.insert(
                "write",
                report(std::fs::write(path, "pwned").map(|()| "written")),
            );
        }
        if let Some(addr) = &c.connect {
            let connected = std::net::TcpStream::connect(addr.as_str()).map(|_| "connected");
            got.insert("connect", report(connected));
        }
        let text = json!(got).to_string();
        Ok(PreOutcome::Respond(ChatResponse::with_text(
            "chatcmpl-wasi",
            req.provider(),
            req.model(),
            0,
            text,
        )))
    }
}
