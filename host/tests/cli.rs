//! The `wasmgate` binary as users run it: flags, config files, env-named API keys, graceful
//! shutdown on SIGTERM with plugin cleanup, and clear errors for bad configs.
#![expect(clippy::expect_used, reason = "tests and their helpers fail loudly")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_wasmgate");

/// A running gateway process whose log lines are collected.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    addr: String,
}

impl Running {
    fn start(args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::launch(Command::new(BIN), args, envs)
    }

    /// Starts `command` (the binary, or a launcher that runs it) with `args` and `envs`.
    fn launch(mut command: Command, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut child = command
            .args(args)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "info")
            .env_remove("WASMGATE_CONFIG")
            .env_remove("WASMGATE_PLUGINS_DIR")
            .env_remove("WASMGATE_LISTEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wasmgate");
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut running = Self {
            child,
            lines,
            log: Vec::new(),
            addr: String::new(),
        };
        let line = running.wait_for("wasmgate is serving");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("address in the serving line");
        running.addr = addr.to_string();
        running
    }

    /// Blocks until a log line containing `needle` arrives (the process's own event).
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line containing {needle:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = self.child.wait().expect("wait");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push(line);
        }
        (exit, std::mem::take(&mut self.log))
    }
}

/// A test that fails half-way must not leave its gateway running.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

#[test]
fn help_documents_every_flag_and_its_env_variable() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--config",
        "--plugins-dir",
        "--listen",
        "WASMGATE_CONFIG",
        "WASMGATE_PLUGINS_DIR",
        "WASMGATE_LISTEN",
    ] {
        assert!(help.contains(needle), "--help mentions {needle}:\n{help}");
    }
}

#[test]
fn a_bad_config_file_stops_startup_with_the_field_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        r#"{"plugins": [{"name": "a", "limits": {"fule": 1}}]}"#,
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["--config", path.to_str().expect("utf-8 path")])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plugins[0].limits") && stderr.contains("fule"),
        "{stderr}"
    );
}

#[test]
fn serves_from_a_config_file_and_drains_then_cleans_up_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir");
    std::fs::copy(wasmgate_artifacts::HELLO_WORLD, plugins.join("hello.wasm")).expect("copy");
    std::fs::copy(wasmgate_artifacts::AUTH, plugins.join("auth.wasm")).expect("copy");
    let config = json!({
        "plugins_dir": "plugins",
        "plugins": [{"name": "auth", "config": {"keys": ["sk-cli"]}}],
    });
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    let gw = Running::start(
        &[
            "--config",
            path.to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let client = client();
    let body = json!({"model": "mock/echo", "messages": [{"role": "user", "content": "cli"}]});
    let resp = client
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-cli")
        .json(&body)
        .send()
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let json: Value = resp.json().expect("json");
    assert_eq!(json["choices"][0]["message"]["content"], "echo: cli");

    let (exit, log) = gw.terminate();
    assert!(
        exit.success(),
        "clean exit on SIGTERM: {exit:?}\n{}",
        log.join("\n")
    );
    let log = log.join("\n");
    assert!(log.contains("requests drained"), "{log}");
    assert!(
        log.contains("plugin=\"hello\"") || log.contains("plugin=hello"),
        "hello-world logged through the host, tagged with its name:\n{log}"
    );
    assert!(
        log.to_lowercase().contains("cleanup"),
        "cleanup ran on shutdown:\n{log}"
    );
}

/// The first CPU this process may run on (the machine may not let it use CPU 0).
fn first_allowed_cpu() -> String {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc/self/status");
    list.trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect()
}

/// Limited to one CPU (as in a container with a one-CPU quota), the gateway runs on a
/// current-thread runtime, and serves plugins, streams and a graceful shutdown the same.
#[test]
fn on_one_cpu_it_serves_from_a_current_thread_runtime() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir");
    std::fs::copy(wasmgate_artifacts::HELLO_WORLD, plugins.join("hello.wasm")).expect("copy");
    let mut taskset = Command::new("taskset");
    taskset.args(["--cpu-list", &first_allowed_cpu(), BIN]);
    let gw = Running::launch(
        taskset,
        &[
            "--plugins-dir",
            plugins.to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let serving = gw.log.last().cloned().unwrap_or_default();
    assert!(serving.contains("current-thread (1 CPU)"), "{serving}");
    let client = client();
    for stream in [false, true] {
        let body = json!({"model": "mock/echo", "stream": stream,
                          "messages": [{"role": "user", "content": "one cpu"}]});
        let resp = client
            .post(gw.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .expect("send");
        assert_eq!(resp.status().as_u16(), 200);
        let text = resp.text().expect("body");
        let whole = if stream {
            "data: [DONE]"
        } else {
            "echo: one cpu"
        };
        assert!(text.contains(whole), "{text}");
    }
    let (exit, log) = gw.terminate();
    let log = log.join("\n");
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}\n{log}");
    assert!(log.contains("requests drained"), "{log}");
}

/// A fake upstream speaking OpenAI's wire format over a real socket, for `calls` requests (one
/// connection each); returns its address and, once done, the raw requests it received.
fn fake_upstream(calls: usize) -> (std::net::SocketAddr, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{Read, Write};
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = upstream.local_addr().expect("addr");
    let seen = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for _ in 0..calls {
            let (mut conn, _) = upstream.accept().expect("accept");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = conn.read(&mut chunk).expect("read");
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let len = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= head_end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let body = json!({"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "gpt-x",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "real wire"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}).to_string();
            write!(conn, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).expect("write");
            requests.push(String::from_utf8_lossy(&buf).to_string());
        }
        requests
    });
    (addr, seen)
}

fn chat(gw: &Running) {
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "up/gpt-x", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let json: Value = resp.json().expect("json");
    assert_eq!(json["choices"][0]["message"]["content"], "real wire");
}

#[test]
fn the_openai_provider_sends_the_key_named_in_config_and_never_logs_it() {
    let (upstream_addr, seen) = fake_upstream(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = json!({"providers": {"up": {"type": "openai", "base_url": format!("http://{upstream_addr}/v1"), "api_key_env": "WASMGATE_TEST_UP_KEY"}}});
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    let gw = Running::start(
        &[
            "--config",
            path.to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
        ],
        &[("WASMGATE_TEST_UP_KEY", "sk-secret-123")],
    );
    chat(&gw);
    let request = seen.join().expect("upstream thread").remove(0);
    assert!(
        request.starts_with("POST /v1/chat/completions"),
        "{request}"
    );
    assert!(
        request
            .to_lowercase()
            .contains("authorization: bearer sk-secret-123"),
        "{request}"
    );
    assert!(request.contains("\"model\":\"gpt-x\""), "{request}");
    let (_, log) = gw.terminate();
    assert!(
        !log.join("\n").contains("sk-secret-123"),
        "the key is never logged"
    );
}

#[test]
fn weighted_keys_share_the_calls_and_are_never_logged() {
    let (upstream_addr, seen) = fake_upstream(8);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = json!({"providers": {"up": {"type": "openai",
        "base_url": format!("http://{upstream_addr}/v1"),
        "keys": [{"env": "WASMGATE_TEST_KEY_A", "weight": 3}, {"env": "WASMGATE_TEST_KEY_B"}]}}});
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    let gw = Running::start(
        &[
            "--config",
            path.to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
        ],
        &[
            ("WASMGATE_TEST_KEY_A", "sk-aaaa-1"),
            ("WASMGATE_TEST_KEY_B", "sk-bbbb-2"),
        ],
    );
    for _ in 0..8 {
        chat(&gw);
    }
    let requests = seen.join().expect("upstream thread");
    let with = |key: &str| {
        requests
            .iter()
            .filter(|r| {
                r.to_lowercase()
                    .contains(&format!("authorization: bearer {key}"))
            })
            .count()
    };
    assert_eq!(
        (with("sk-aaaa-1"), with("sk-bbbb-2")),
        (6, 2),
        "weights 3:1"
    );
    let (_, log) = gw.terminate();
    let log = log.join("\n");
    assert!(
        !log.contains("sk-aaaa-1") && !log.contains("sk-bbbb-2"),
        "{log}"
    );
}

#[test]
fn a_missing_key_variable_stops_startup_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = json!({"providers": {"up": {"type": "openai", "base_url": "http://127.0.0.1:9/v1",
        "keys": [{"env": "WASMGATE_TEST_SURELY_UNSET"}]}}});
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    let out = Command::new(BIN)
        .args([
            "--config",
            path.to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
        ])
        .env_remove("WASMGATE_TEST_SURELY_UNSET")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("provider `up`") && stderr.contains("WASMGATE_TEST_SURELY_UNSET"),
        "{stderr}"
    );
}

#[test]
fn an_azure_style_deployment_gets_its_path_query_and_key_header() {
    let (upstream_addr, seen) = fake_upstream(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = json!({"providers": {"up": {"type": "openai",
        "base_url": format!("http://{upstream_addr}/openai/deployments/gpt-x?api-version=2024-10-21"),
        "key_header": "api-key", "api_key_env": "WASMGATE_TEST_AZURE_KEY"}}});
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    let gw = Running::start(
        &[
            "--config",
            path.to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
        ],
        &[("WASMGATE_TEST_AZURE_KEY", "azure-secret-9")],
    );
    chat(&gw);
    let request = seen.join().expect("upstream thread").remove(0);
    assert!(
        request.starts_with(
            "POST /openai/deployments/gpt-x/chat/completions?api-version=2024-10-21 HTTP/1.1"
        ),
        "{request}"
    );
    let lower = request.to_lowercase();
    assert!(lower.contains("api-key: azure-secret-9"), "{request}");
    assert!(!lower.contains("authorization:"), "{request}");
    let _ = gw.terminate();
}
