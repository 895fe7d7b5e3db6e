//! Plugin config: JSON text in, a typed value or a message naming the bad field out.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use crate::Result;

/// Parses a plugin's JSON config into `T`, with errors that name the offending field.
///
/// An empty (or all-whitespace) config is treated as `{}`. Errors read
/// `invalid config: <path>: <problem>`, e.g.
/// `invalid config: keys[1]: invalid type: integer 3, expected a string`, or
/// `invalid config: missing field `keys`` when the problem is at the top level. Put
/// `#[serde(deny_unknown_fields)]` on `T` to reject misspelt fields.
///
/// ```
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Config {
///     keys: Vec<String>,
/// }
///
/// let err = wasmgate_sdk::parse_config::<Config>(r#"{"keys": ["a", 3]}"#).err();
/// assert_eq!(
///     err.as_deref(),
///     Some("invalid config: keys[1]: invalid type: integer `3`, expected a string"),
/// );
/// ```
pub fn parse_config<T: DeserializeOwned>(config: &str) -> Result<T> {
    let text = if config.trim().is_empty() {
        "{}"
    } else {
        config
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| describe(&e))?;
    de.end().map_err(|e| format!("invalid config: {e}"))?;
    Ok(value)
}

/// The message for a config value that parsed but is not acceptable:
/// `invalid config: <path>: <problem>`, the same shape as [`parse_config`]'s errors.
///
/// ```
/// let ttl = 0;
/// assert_eq!(
///     wasmgate_sdk::config_error("ttl_seconds", format!("must be 1..=86400, got {ttl}")),
///     "invalid config: ttl_seconds: must be 1..=86400, got 0",
/// );
/// ```
pub fn config_error(path: &str, problem: impl core::fmt::Display) -> String {
    format!("invalid config: {path}: {problem}")
}

/// Formats a deserialisation error as `invalid config: <path>: <problem>`.
///
/// For data errors (wrong type, unknown or missing field) the JSON position is dropped: the path
/// already says where. Syntax errors keep it, since they have no path.
fn describe(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = err.inner();
    let mut problem = inner.to_string();
    if inner.is_data() {
        let position = format!(" at line {} column {}", inner.line(), inner.column());
        if let Some(stripped) = problem.strip_suffix(&position) {
            problem.truncate(stripped.len());
        }
    }
    let path = err.path();
    if path.iter().all(|s| matches!(s, Segment::Unknown)) {
        format!("invalid config: {problem}")
    } else {
        config_error(&path.to_string(), problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        keys: Vec<String>,
        #[serde(default)]
        nested: Option<Nested>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        ttl: u32,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields, default)]
    struct AllDefault {
        greeting: Option<String>,
    }

    fn err(config: &str) -> String {
        match parse_config::<Config>(config) {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_a_valid_config() {
        let c: Config = parse_config(r#"{"keys":["a"]}"#).unwrap();
        assert_eq!(c.keys, ["a"]);
    }

    #[test]
    fn empty_config_is_an_empty_object() {
        assert_eq!(
            parse_config::<AllDefault>("").unwrap(),
            AllDefault::default()
        );
        assert_eq!(
            parse_config::<AllDefault>("  \n").unwrap(),
            AllDefault::default()
        );
        assert_eq!(err(""), "invalid config: missing field `keys`");
    }

    #[test]
    fn errors_name_the_field_path() {
        assert_eq!(
            err(r#"{"keys": ["a", 3]}"#),
            "invalid config: keys[1]: invalid type: integer `3`, expected a string"
        );
        assert_eq!(
            err(r#"{"keys": [], "nested": {"ttl": "x"}}"#),
            "invalid config: nested.ttl: invalid type: string \"x\", expected u32"
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = err(r#"{"keys": [], "kyes": 1}"#);
        assert!(e.starts_with("invalid config: "), "{e}");
        assert!(e.contains("unknown field `kyes`"), "{e}");
        assert!(!e.contains("line 1"), "{e}");
    }

    #[test]
    fn syntax_errors_keep_their_position() {
        let e = err(r#"{"keys": ["#);
        assert!(e.starts_with("invalid config: "), "{e}");
        assert!(e.contains("line 1"), "{e}");
        let e = err(r#"{"keys": []} trailing"#);
        assert!(e.contains("trailing characters"), "{e}");
    }
}
