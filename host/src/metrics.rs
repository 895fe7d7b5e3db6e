//! Prometheus metrics, served by `GET /metrics`: chat requests by status and target with their
//! latency; per plugin and hook the calls, latency, fuel, failures by kind and short-circuits;
//! per plugin its quarantines; and the registry's plugin loads.
//!
//! Request series are counted here as each request finishes. Plugin and load series are not
//! counted a second time: at scrape time a [`Collector`] reads the live counters of every
//! loaded plugin (the very counters `GET /api/plugins` shows) and the registry's load counts, so
//! the two views always agree. Like the admin API, a plugin's counters start at zero with each
//! loaded version (a reload, or a settings change); Prometheus reads that as a counter reset,
//! which `rate()` and `increase()` handle.
//!
//! Two renderings: OpenMetrics text for scrapers that accept it (Prometheus does), the classic
//! Prometheus text format (0.0.4) for everything else (`curl`, older agents).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet, text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use crate::chat::split_target;
use crate::context::{GatewayValue, RequestContext};
use crate::hooks::Hook;
use crate::registry::{LoadCounts, Registry};
use crate::runtime::{HookSnapshot, LatencyHistogram, QuarantineStatus};

/// Distinct `provider`/`model` label pairs kept; requests for further ones are labelled
/// [`OTHER`], so clients sending arbitrary model names cannot grow the series without bound.
const MAX_TARGETS: usize = 256;

/// The `provider` and `model` labels of requests beyond [`MAX_TARGETS`].
const OTHER: &str = "(other)";

/// Upper bounds, in seconds, of the request latency histogram (LLM calls take from
/// milliseconds to minutes).
const REQUEST_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The provider and model that served a chat request: the target the pipeline sent it to
/// (`gateway.target`), else the one it asked for. The chat handler attaches it to its response
/// for the request counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedTarget {
    /// The provider's name.
    pub provider: String,
    /// The model.
    pub model: String,
}

impl ServedTarget {
    /// The target of a request: `gateway.target` when the pipeline set it, else `requested`
    /// (`provider/model`); none when neither is known (the request was refused before it was
    /// parsed, or asked for a target this gateway does not serve).
    pub fn of(ctx: &RequestContext, requested: Option<&str>) -> Option<Self> {
        let target = ctx
            .get(GatewayValue::Target.key())
            .or_else(|| requested.map(str::to_string))?;
        let (provider, model) = split_target(&target)?;
        Some(Self {
            provider: provider.to_string(),
            model: model.to_string(),
        })
    }
}

/// Labels of `wasmgate_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    status: u16,
    provider: String,
    model: String,
}

/// Labels of `wasmgate_request_duration_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DurationLabels {
    status_class: String,
    provider: String,
}

/// The text format a scrape is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// The classic Prometheus text format, version 0.0.4.
    Prometheus,
}

impl Format {
    /// OpenMetrics when the `Accept` header accepts `application/openmetrics-text`, the
    /// classic format otherwise.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let accepts_openmetrics = accept.unwrap_or_default().split(',').any(|range| {
            let mut params = range.split(';').map(str::trim);
            let media = params.next().unwrap_or_default();
            let refused = params.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        });
        if accepts_openmetrics {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    /// The `Content-Type` of a scrape in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The gateway's metrics: the request series it counts, and the plugin and load series it
/// reads from the registry at scrape time.
#[derive(Debug)]
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram>,
    /// The `provider`/`model` pairs labelled so far (at most [`MAX_TARGETS`]).
    targets: Mutex<HashSet<(String, String)>>,
}

impl Metrics {
    /// Metrics reading the plugins of `plugins`.
    pub fn new(plugins: Arc<Registry>) -> Self {
        Self::with_collector(PluginCollector { registry: plugins })
    }

    fn with_collector(collector: impl Collector) -> Self {
        let mut registry = prometheus_client::registry::Registry::with_prefix("wasmgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Chat completion requests by HTTP status and the provider and model that served \
             them (empty when the request was refused before its target was known)",
            requests.clone(),
        );
        let durations = Family::<DurationLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(REQUEST_BUCKETS)) as fn() -> Histogram,
        );
        registry.register_with_unit(
            "request_duration",
            "Time from receiving a chat completion request to sending its response head (for \
             a stream, its start), by status class and provider",
            Unit::Seconds,
            durations.clone(),
        );
        registry.register_collector(Box::new(collector));
        Self {
            registry,
            requests,
            durations,
            targets: Mutex::new(HashSet::new()),
        }
    }

    /// Counts a finished chat request: its status, the target that served it and how long it
    /// took.
    pub fn observe_request(&self, status: u16, served: Option<&ServedTarget>, elapsed: Duration) {
        let (provider, model) = match served {
            Some(target) => self.label_target(&target.provider, &target.model),
            None => (String::new(), String::new()),
        };
        self.durations
            .get_or_create(&DurationLabels {
                status_class: format!("{}xx", status / 100),
                provider: provider.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                status,
                provider,
                model,
            })
            .inc();
    }

    /// The labels of a target: itself while fewer than [`MAX_TARGETS`] pairs are in use,
    /// [`OTHER`] for new ones after that.
    fn label_target(&self, provider: &str, model: &str) -> (String, String) {
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        let pair = (provider.to_string(), model.to_string());
        if targets.contains(&pair) {
            return pair;
        }
        if targets.len() >= MAX_TARGETS {
            return (OTHER.to_string(), OTHER.to_string());
        }
        targets.insert(pair.clone());
        pair
    }

    /// Renders every series in `format`.
    pub fn render(&self, format: Format) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        text::encode(&mut out, &self.registry)?;
        Ok(match format {
            Format::OpenMetrics => out,
            Format::Prometheus => classic(&out),
        })
    }
}

/// Rewrites OpenMetrics text as classic Prometheus text: no `# EOF` or `# UNIT` lines, and the
/// `HELP` and `TYPE` of a counter name its samples (`x_total`) rather than the family (`x`).
/// Everything else (samples, gauges, histograms) is the same in both formats.
fn classic(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|tag| Some((tag, line.strip_prefix(tag)?)));
        match meta {
            Some((tag, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(tag);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                if !tail.is_empty() {
                    out.push(' ');
                    out.push_str(tail);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// What the collector reads of one loaded plugin.
#[derive(Debug, Clone)]
struct PluginReading {
    name: String,
    /// The hooks it implements (and any other called), with their counters.
    hooks: Vec<(Hook, HookSnapshot, LatencyHistogram)>,
    quarantine: QuarantineStatus,
}

/// Reads the plugins' live counters and the registry's load counts at each scrape.
#[derive(Debug)]
struct PluginCollector {
    registry: Arc<Registry>,
}

impl PluginCollector {
    fn readings(&self) -> Vec<PluginReading> {
        self.registry
            .entries()
            .into_iter()
            .filter_map(|entry| {
                let plugin = entry.plugin?;
                let stats = plugin.live_stats();
                let hooks = Hook::ALL
                    .into_iter()
                    .map(|hook| (hook, stats.hook(hook), stats.latency(hook)))
                    .filter(|(hook, counters, _)| {
                        plugin.hooks().has(*hook)
                            || counters.calls > 0
                            || counters.short_circuits > 0
                    })
                    .collect();
                Some(PluginReading {
                    name: entry.name,
                    hooks,
                    quarantine: plugin.quarantine(),
                })
            })
            .collect()
    }
}

impl Collector for PluginCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_plugins(encoder, &self.readings(), self.registry.load_counts())
    }
}

/// Writes one counter family.
fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes the plugin and load series.
fn encode_plugins(
    mut encoder: DescriptorEncoder,
    plugins: &[PluginReading],
    loads: LoadCounts,
) -> Result<(), std::fmt::Error> {
    let per_hook = || {
        plugins.iter().flat_map(|p| {
            p.hooks.iter().map(move |(hook, counters, latency)| {
                (
                    [("plugin", p.name.as_str()), ("hook", hook.name())],
                    counters,
                    latency,
                )
            })
        })
    };
    counters(
        &mut encoder,
        "plugin_calls",
        "Hook calls of each loaded plugin version (the calls of GET /api/plugins).",
        per_hook().map(|(labels, c, _)| (labels, c.calls)),
    )?;
    {
        let mut family = encoder.encode_descriptor(
            "plugin_call_duration",
            "Wall-clock time of a hook call; bounds are powers of two of nanoseconds.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, _, latency) in per_hook() {
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    latency.sum_seconds,
                    latency.count,
                    &latency.buckets,
                    None,
                )?;
        }
    }
    counters(
        &mut encoder,
        "plugin_fuel_consumed",
        "Fuel (wasm instructions, roughly) burned by hook calls.",
        per_hook().map(|(labels, c, _)| (labels, c.fuel_used)),
    )?;
    counters(
        &mut encoder,
        "plugin_failures",
        "Failed hook calls by kind (the plugin_* error codes: plugin_error, plugin_trap, \
         plugin_out_of_fuel, ...).",
        per_hook().flat_map(|([plugin, hook], c, _)| {
            c.failures
                .iter()
                .map(move |(kind, n)| ([plugin, hook, ("kind", *kind)], *n))
        }),
    )?;
    counters(
        &mut encoder,
        "plugin_short_circuits",
        "Requests a plugin short-circuited: its pre-hook answered or failed the request, or its \
         transport interceptor answered it.",
        per_hook()
            .filter(|([_, (_, hook)], _, _)| {
                [Hook::PreHook.name(), Hook::TransportInterceptor.name()].contains(hook)
            })
            .map(|(labels, c, _)| (labels, c.short_circuits)),
    )?;
    counters(
        &mut encoder,
        "plugin_quarantines",
        "Quarantines a plugin entered after repeated failures.",
        plugins
            .iter()
            .map(|p| ([("plugin", p.name.as_str())], p.quarantine.quarantines)),
    )?;
    {
        let mut family = encoder.encode_descriptor(
            "plugin_quarantined",
            "Whether a plugin is quarantined now (1) or not (0).",
            None,
            MetricType::Gauge,
        )?;
        for p in plugins {
            let labels = [("plugin", p.name.as_str())];
            ConstGauge::new(i64::from(p.quarantine.quarantined))
                .encode(family.encode_family(&labels)?)?;
        }
    }
    counters(
        &mut encoder,
        "reloads",
        "Plugin versions the registry loaded (result=ok: first loads and reloads) and loads \
         that failed (result=failed).",
        [
            ([("result", "ok")], loads.ok),
            ([("result", "failed")], loads.failed),
        ],
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A collector over fixed readings.
    #[derive(Debug)]
    struct Fixed(Vec<PluginReading>, LoadCounts);

    impl Collector for Fixed {
        fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_plugins(encoder, &self.0, self.1)
        }
    }

    fn reading() -> PluginReading {
        let pre = HookSnapshot {
            calls: 3,
            failures: BTreeMap::from([("plugin_trap", 1)]),
            fuel_used: 300,
            short_circuits: 1,
            mean_call_us: 0.0,
            p99_call_us: 0.0,
        };
        let latency = LatencyHistogram {
            sum_seconds: 0.5,
            count: 3,
            buckets: vec![(0.25, 2), (1.0, 1), (f64::INFINITY, 0)],
        };
        PluginReading {
            name: "auth".into(),
            hooks: vec![(Hook::PreHook, pre, latency)],
            quarantine: QuarantineStatus {
                consecutive_failures: 0,
                quarantined: true,
                retry_in_ms: Some(10),
                quarantines: 2,
            },
        }
    }

    fn metrics() -> Metrics {
        Metrics::with_collector(Fixed(vec![reading()], LoadCounts { ok: 4, failed: 1 }))
    }

    #[test]
    fn openmetrics_has_every_series() {
        let m = metrics();
        let served = ServedTarget {
            provider: "mock".into(),
            model: "echo".into(),
        };
        m.observe_request(200, Some(&served), Duration::from_millis(20));
        m.observe_request(200, Some(&served), Duration::from_millis(20));
        m.observe_request(413, None, Duration::from_millis(1));
        let text = m.render(Format::OpenMetrics).expect("renders");
        for line in [
            "# TYPE wasmgate_requests counter",
            r#"wasmgate_requests_total{status="200",provider="mock",model="echo"} 2"#,
            r#"wasmgate_requests_total{status="413",provider="",model=""} 1"#,
            r#"wasmgate_request_duration_seconds_bucket{le="0.025",status_class="2xx",provider="mock"} 2"#,
            r#"wasmgate_request_duration_seconds_count{status_class="4xx",provider=""} 1"#,
            r#"wasmgate_plugin_calls_total{plugin="auth",hook="pre-hook"} 3"#,
            r#"wasmgate_plugin_call_duration_seconds_bucket{le="0.25",plugin="auth",hook="pre-hook"} 2"#,
            r#"wasmgate_plugin_call_duration_seconds_bucket{le="1.0",plugin="auth",hook="pre-hook"} 3"#,
            r#"wasmgate_plugin_call_duration_seconds_bucket{le="+Inf",plugin="auth",hook="pre-hook"} 3"#,
            r#"wasmgate_plugin_call_duration_seconds_count{plugin="auth",hook="pre-hook"} 3"#,
            r#"wasmgate_plugin_fuel_consumed_total{plugin="auth",hook="pre-hook"} 300"#,
            r#"wasmgate_plugin_failures_total{plugin="auth",hook="pre-hook",kind="plugin_trap"} 1"#,
            r#"wasmgate_plugin_short_circuits_total{plugin="auth",hook="pre-hook"} 1"#,
            r#"wasmgate_plugin_quarantines_total{plugin="auth"} 2"#,
            r#"wasmgate_plugin_quarantined{plugin="auth"} 1"#,
            r#"wasmgate_reloads_total{result="ok"} 4"#,
            r#"wasmgate_reloads_total{result="failed"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn classic_text_names_counters_by_their_samples() {
        let text = metrics().render(Format::Prometheus).expect("renders");
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "# TYPE wasmgate_plugin_calls_total counter"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("# HELP wasmgate_reloads_total Plugin")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "# TYPE wasmgate_plugin_call_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "# TYPE wasmgate_plugin_quarantined gauge"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == r#"wasmgate_reloads_total{result="ok"} 4"#),
            "{text}"
        );
    }

    #[test]
    fn classic_rewrites_only_metadata() {
        let om = "# HELP x Things.\n# TYPE x counter\nx_total 1\n# HELP g A gauge.\n\
                  # TYPE g gauge\n# UNIT g seconds\ng 2\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total 1\n\
             # HELP g A gauge.\n# TYPE g gauge\ng 2\n"
        );
    }

    #[test]
    fn negotiates_openmetrics_only_when_accepted() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,\
                          text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0, text/plain")),
            Format::Prometheus
        );
    }

    #[test]
    fn targets_beyond_the_cap_share_one_label() {
        let m = metrics();
        for i in 0..MAX_TARGETS {
            assert_eq!(m.label_target("p", &i.to_string()).1, i.to_string());
        }
        assert_eq!(
            m.label_target("p", "one-too-many"),
            (OTHER.to_string(), OTHER.to_string())
        );
        assert_eq!(
            m.label_target("p", "0").1,
            "0",
            "known pairs keep their labels"
        );
    }

    #[test]
    fn the_served_target_wins_over_the_requested_one() {
        let ctx = RequestContext::new(Vec::new());
        assert_eq!(ServedTarget::of(&ctx, None), None);
        let requested = ServedTarget::of(&ctx, Some("mock/echo")).expect("requested");
        assert_eq!(
            (requested.provider.as_str(), requested.model.as_str()),
            ("mock", "echo")
        );
        ctx.set_gateway(GatewayValue::Target, "other/big-model");
        let served = ServedTarget::of(&ctx, Some("mock/echo")).expect("served");
        assert_eq!(
            (served.provider.as_str(), served.model.as_str()),
            ("other", "big-model")
        );
    }
}
