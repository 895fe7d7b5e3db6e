//! One log line: ordered fields, written as JSON or as `key=value` pairs. Pure: no host calls.

use wasmgate_sdk::serde_json::Value;

/// How a record is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object: `{"request_id":"req-1","status":"ok",...}`.
    #[default]
    Json,
    /// Space-separated `key=value` pairs (logfmt): `request_id=req-1 status=ok ...`; strings
    /// that are empty or hold spaces, quotes, `=` or control characters are JSON-quoted.
    Kv,
}

/// The fields of one line, in the order they are written. Absent values are left out.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Record {
    fields: Vec<(&'static str, Value)>,
}

impl Record {
    /// Adds a field (JSON string, number or bool).
    pub fn field(&mut self, key: &'static str, value: impl Into<Value>) -> &mut Self {
        self.fields.push((key, value.into()));
        self
    }

    /// Adds a field when `value` is present.
    pub fn opt(&mut self, key: &'static str, value: Option<impl Into<Value>>) -> &mut Self {
        if let Some(value) = value {
            self.field(key, value);
        }
        self
    }

    /// The value of a field, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The line in `format`.
    pub fn write(&self, format: Format) -> String {
        match format {
            Format::Json => self.to_json(),
            Format::Kv => self.to_kv(),
        }
    }

    /// `{"key":value,...}` in field order, written into one buffer.
    fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(64 * self.fields.len());
        out.push(b'{');
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_into(&mut out, key);
            out.push(b':');
            json_into(&mut out, value);
        }
        out.push(b'}');
        into_text(out)
    }

    /// `key=value key=value` in field order, written into one buffer.
    fn to_kv(&self) -> String {
        let mut out = Vec::with_capacity(48 * self.fields.len());
        for (key, value) in &self.fields {
            if !out.is_empty() {
                out.push(b' ');
            }
            out.extend_from_slice(key.as_bytes());
            out.push(b'=');
            match value {
                Value::String(s) if !needs_quotes(s) => out.extend_from_slice(s.as_bytes()),
                other => json_into(&mut out, other),
            }
        }
        into_text(out)
    }
}

/// Appends the JSON text of `value` to `out`.
fn json_into(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    // Writing a string or a JSON value into a Vec cannot fail.
    let _ = wasmgate_sdk::serde_json::to_writer(out, value);
}

/// The text written into `out`: always UTF-8, since only JSON and UTF-8 strings went in.
fn into_text(out: Vec<u8>) -> String {
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Whether a logfmt value must be quoted to read back unambiguously.
fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=' || c == '\\')
}

/// `text` cut to at most `max` characters, with `…` marking a cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => {
            let mut out = text[..end].to_owned();
            out.push('…');
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let mut r = Record::default();
        r.field("request_id", "req-1")
            .field("chain", "logging,auth")
            .field("attempt", 0)
            .field("stream", false)
            .opt("short_circuit", None::<String>)
            .opt("prompt", Some("say \"hi\" = ok"));
        r
    }

    #[test]
    fn json_keeps_field_order_and_skips_absent_fields() {
        assert_eq!(
            record().write(Format::Json),
            r#"{"request_id":"req-1","chain":"logging,auth","attempt":0,"stream":false,"prompt":"say \"hi\" = ok"}"#
        );
        let parsed: Value =
            wasmgate_sdk::serde_json::from_str(&record().write(Format::Json)).unwrap_or_default();
        assert_eq!(parsed["attempt"], 0);
    }

    #[test]
    fn kv_quotes_only_what_needs_it() {
        assert_eq!(
            record().write(Format::Kv),
            r#"request_id=req-1 chain=logging,auth attempt=0 stream=false prompt="say \"hi\" = ok""#
        );
        let mut r = Record::default();
        r.field("a", "").field("b", "x\ny").field("c", "ü");
        assert_eq!(r.write(Format::Kv), r#"a="" b="x\ny" c=ü"#);
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("hello", 5), "hello");
        assert_eq!(truncate("hello", 3), "hel…");
        assert_eq!(truncate("ääää", 2), "ää…");
        assert_eq!(truncate("", 0), "");
        assert_eq!(truncate("a", 0), "…");
    }
}
