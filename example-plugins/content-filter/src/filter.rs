//! The compiled filter: the banned patterns as one regex, what to do on a match, and how many
//! characters a match can span (what a stream must hold back). Pure: no host calls.
//!
//! Memory matters more than usual here: the gateway keeps a warm instance of the plugin per
//! concurrent request, and a wasm instance never gives memory back, so whatever compiling the
//! patterns needed at its peak stays with every instance. See [`ascii_split`].

use std::borrow::Cow;
use std::ops::Range;

use regex_automata::meta::Regex;
use regex_automata::nfa::thompson::WhichCaptures;
use regex_automata::{Input, Match};
use regex_syntax::hir::{
    Capture, Class, ClassUnicode, ClassUnicodeRange, Hir, HirKind, Repetition,
};
use wasmgate_sdk::{Result, config_error};

/// Text searched once at `init` to warm the matcher up: prose in both cases, digits,
/// punctuation, quoting and code, the bytes chat messages are mostly made of.
const WARM_UP: &str = "The quick brown fox jumps over the lazy dog. Please write a short summary \
    of these notes; could you explain why the results differ, and what we should do next? \
    Sphinx of black quartz, judge my vow! HOW VEXINGLY QUICK DAFT ZEBRAS JUMP. \
    Translate this paragraph, then list the main risks and open questions for the team. \
    {\"id\": 42, \"items\": [1, 2.5e-3, null], 'key': (x + y) / z;} fn main() { let v = \
    vec![0x1F, 7_000]; } 0123456789 -_=*&^%$#@~`|\\<>\n\t";

/// What to do with text that matches a banned pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Refuse the text: the request (prompt) or the response (completion) becomes an error.
    Reject,
    /// Replace every match with this text and let the rest through.
    Redact(String),
}

/// The banned patterns, compiled.
#[derive(Debug)]
pub struct Filter {
    /// Every pattern, in one multi-pattern regex, leftmost-first (as the alternation
    /// `(?:p0)|(?:p1)|...`); a match names its pattern.
    regex: Regex,
    /// What a match leads to.
    action: Action,
    /// The most characters one match can span, as far as streams are concerned: the smaller of
    /// `max_match_chars` and the longest match any pattern can produce (in bytes, which bounds
    /// the characters).
    hold: usize,
    /// Patterns whose matches can be longer than `max_match_chars` (by index).
    unbounded: Vec<usize>,
}

/// Where a match was found: the index of the first pattern that matches it. Never the matched
/// text, which must not leak into errors or logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Index into the configured `patterns`.
    pub pattern: usize,
}

impl Filter {
    /// Compiles `patterns` (with `case_insensitive` folding). Every pattern must compile, must
    /// not match the empty string (a redaction would then insert the replacement between every
    /// two characters) and must be able to match something; a redaction's `replacement` must not
    /// itself match, so that redacting twice changes nothing. Errors name the field:
    /// `invalid config: patterns[1]: ...`.
    pub fn new(
        patterns: &[String],
        case_insensitive: bool,
        action: Action,
        max_match_chars: usize,
    ) -> Result<Self> {
        if patterns.is_empty() {
            return Err(config_error("patterns", "must list at least one pattern"));
        }
        let mut hirs = Vec::with_capacity(patterns.len());
        let mut hold = 0;
        let mut unbounded = Vec::new();
        for (i, pattern) in patterns.iter().enumerate() {
            let field = format!("patterns[{i}]");
            if pattern.is_empty() {
                return Err(config_error(&field, "must not be empty"));
            }
            let hir = regex_syntax::ParserBuilder::new()
                .case_insensitive(case_insensitive)
                .build()
                .parse(pattern)
                .map_err(|e| config_error(&field, syntax_error(&e)))?;
            let props = hir.properties();
            match props.minimum_len() {
                None => return Err(config_error(&field, "can never match anything")),
                Some(0) => {
                    return Err(config_error(
                        &field,
                        "can match the empty string; every pattern must match at least one \
                         character",
                    ));
                }
                Some(_) => {}
            }
            match max_chars(&hir) {
                Some(chars) if chars <= max_match_chars => hold = hold.max(chars),
                _ => {
                    hold = max_match_chars;
                    unbounded.push(i);
                }
            }
            hirs.push(ascii_split(&hir));
        }
        // No literal prefilter: building one (extracting and minimising the literal sets of
        // case-folded patterns) was most of `init`, while matching never used it in wasm (the
        // same fuel with and without it, on a 1 MiB prompt against 2 and against 20 patterns;
        // `init` went from 2.0 M to 1.2 M and from 27 M to 2.8 M fuel). `init` runs for every
        // new pooled instance.
        let regex = Regex::builder()
            .configure(
                Regex::config()
                    .which_captures(WhichCaptures::Implicit)
                    .auto_prefilter(false),
            )
            .build_many_from_hir(&hirs)
            .map_err(|e| config_error("patterns", one_line(&e.to_string())))?;
        if let Action::Redact(replacement) = &action
            && let Some(m) = regex.find(replacement.as_str())
        {
            return Err(config_error(
                "replacement",
                format!(
                    "must not itself match a banned pattern (it matches patterns[{}])",
                    m.pattern().as_usize()
                ),
            ));
        }
        // Search once now, so the matcher's scratch space exists and its lazy DFA already
        // knows the states ordinary text reaches: instances started from the snapshot taken
        // after `init` (per-request isolation) then do not build them on every request.
        let _ = regex.find(WARM_UP);
        Ok(Filter {
            regex,
            action,
            hold,
            unbounded,
        })
    }

    /// The first match in `text` that starts at or after byte `from` (the text before `from`
    /// is still seen by look-behind assertions such as `\b`): its span and pattern.
    pub fn find_at(&self, text: &str, from: usize) -> Option<(Range<usize>, Found)> {
        let m = self.regex.find(Input::new(text).range(from..))?;
        Some((m.range(), found(&m)))
    }

    /// What a match leads to.
    pub fn action(&self) -> &Action {
        &self.action
    }

    /// How many trailing characters of a stream may still belong to a match.
    pub fn hold(&self) -> usize {
        self.hold
    }

    /// Indices of the patterns whose matches can be longer than `max_match_chars`.
    pub fn unbounded(&self) -> &[usize] {
        &self.unbounded
    }

    /// The first match in `text`, if any.
    pub fn find(&self, text: &str) -> Option<Found> {
        self.regex.find(text).map(|m| found(&m))
    }

    /// `text` with every match replaced by `replacement`, taken literally (borrowed when
    /// nothing matched).
    pub fn redact<'t>(&self, text: &'t str, replacement: &str) -> Cow<'t, str> {
        let mut out = String::new();
        let mut kept = 0;
        // No pattern matches the empty string (checked at load), so matches never overlap.
        for m in self.regex.find_iter(text) {
            out.push_str(&text[kept..m.start()]);
            out.push_str(replacement);
            kept = m.end();
        }
        if kept == 0 && out.is_empty() {
            return Cow::Borrowed(text);
        }
        out.push_str(&text[kept..]);
        Cow::Owned(out)
    }
}

fn found(m: &Match) -> Found {
    Found {
        pattern: m.pattern().as_usize(),
    }
}

/// The most characters a match of `hir` can span, or `None` when unbounded. (`regex-syntax`
/// bounds matches in bytes, which overstates characters up to fourfold: case-insensitive `k`
/// also matches the three-byte Kelvin sign.)
fn max_chars(hir: &Hir) -> Option<usize> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(0),
        HirKind::Literal(literal) => Some(String::from_utf8_lossy(&literal.0).chars().count()),
        HirKind::Class(_) => Some(1),
        HirKind::Repetition(rep) => {
            let sub = max_chars(&rep.sub)?;
            if sub == 0 {
                return Some(0);
            }
            sub.checked_mul(usize::try_from(rep.max?).ok()?)
        }
        HirKind::Capture(cap) => max_chars(&cap.sub),
        HirKind::Concat(subs) => subs
            .iter()
            .try_fold(0usize, |sum, sub| sum.checked_add(max_chars(sub)?)),
        HirKind::Alternation(subs) => subs
            .iter()
            .try_fold(0usize, |most, sub| Some(most.max(max_chars(sub)?))),
    }
}

/// Most non-ASCII members a class may have to be split off as literals.
const SPLIT_MAX_CHARS: u32 = 8;

/// `hir` with each class that is ASCII but for a few characters rewritten as the alternation
/// of its ASCII part and those characters as literals: the same language, compiled differently.
///
/// Case-insensitive matching makes such classes of most ASCII words: Unicode simple case folding
/// adds `ſ` (U+017F) to `s` and the Kelvin sign (U+212A) to `k`, so `password` becomes
/// `pa[Ssſ][Ssſ]word`. The NFA compiler builds a class with non-ASCII members through a UTF-8
/// automaton whose scratch table takes 320 KB; in a wasm instance that memory is never given
/// back, and the gateway keeps an instance per concurrent request. Split, the same patterns
/// compile in under 80 KB.
fn ascii_split(hir: &Hir) -> Hir {
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => split_class(class).unwrap_or_else(|| hir.clone()),
        HirKind::Repetition(rep) => Hir::repetition(Repetition {
            sub: Box::new(ascii_split(&rep.sub)),
            ..rep.clone()
        }),
        HirKind::Capture(cap) => Hir::capture(Capture {
            sub: Box::new(ascii_split(&cap.sub)),
            ..cap.clone()
        }),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(ascii_split).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.iter().map(ascii_split).collect()),
        _ => hir.clone(),
    }
}

/// A class's ASCII ranges as one class, followed by its few non-ASCII characters as literals;
/// `None` when it has no non-ASCII member or too many to list.
fn split_class(class: &ClassUnicode) -> Option<Hir> {
    let mut ascii = Vec::new();
    let mut others = Vec::new();
    for range in class.ranges() {
        if range.end().is_ascii() {
            ascii.push(*range);
        } else if range.start().is_ascii() {
            ascii.push(ClassUnicodeRange::new(range.start(), '\x7f'));
            others.push(('\u{80}', range.end()));
        } else {
            others.push((range.start(), range.end()));
        }
    }
    let count: u32 = others
        .iter()
        .map(|&(start, end)| u32::from(end) - u32::from(start) + 1)
        .sum();
    if others.is_empty() || count > SPLIT_MAX_CHARS {
        return None;
    }
    let mut alternatives = Vec::new();
    if !ascii.is_empty() {
        alternatives.push(Hir::class(Class::Unicode(ClassUnicode::new(ascii))));
    }
    for (start, end) in others {
        for c in start..=end {
            alternatives.push(Hir::literal(c.encode_utf8(&mut [0; 4]).as_bytes()));
        }
    }
    Some(Hir::alternation(alternatives))
}

/// A parse error as `<problem> at character <n>` (1-based; the field already names the pattern).
fn syntax_error(err: &regex_syntax::Error) -> String {
    let (problem, span) = match err {
        regex_syntax::Error::Parse(e) => (e.kind().to_string(), e.span()),
        regex_syntax::Error::Translate(e) => (e.kind().to_string(), e.span()),
        _ => return one_line(&err.to_string()),
    };
    let at = span.start.column;
    format!("invalid regex: {problem} at character {at}")
}

/// A multi-line regex error (pattern, caret, message) on one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    fn redactor(p: &[&str]) -> Filter {
        Filter::new(&patterns(p), true, Action::Redact("[x]".into()), 64).unwrap()
    }

    fn err(p: &[&str], action: Action, max: usize) -> String {
        Filter::new(&patterns(p), true, action, max).unwrap_err()
    }

    #[test]
    fn redacts_every_match_case_insensitively() {
        let f = redactor(&["damn", r"\bheck\b"]);
        assert_eq!(
            f.redact("Damn, what the heck!", "[x]"),
            "[x], what the [x]!"
        );
        assert_eq!(f.redact("checked", "[x]"), "checked");
        assert!(matches!(f.redact("clean", "[x]"), Cow::Borrowed(_)));
        assert_eq!(f.find("oh HECK"), Some(Found { pattern: 1 }));
        assert_eq!(f.find("fine"), None);
        // `$` in the replacement is literal.
        assert_eq!(f.redact("damn", "$0"), "$0");
    }

    #[test]
    fn hold_is_the_longest_possible_match_capped_by_max_match_chars() {
        assert_eq!(redactor(&["damn", "darn"]).hold(), 4);
        // Characters, not bytes: case-insensitive `k` also matches the Kelvin sign (3 bytes).
        assert_eq!(redactor(&["damn", "heck"]).hold(), 4);
        assert_eq!(redactor(&[r"id-[0-9]{10}"]).hold(), 13);
        assert_eq!(redactor(&[r"sk-[A-Za-z0-9]{20,40}"]).hold(), 43);
        assert_eq!(redactor(&["(?:ab|été){2}", r"\bzz\b"]).hold(), 6);
        // Unbounded, or beyond the cap: the cap, and the pattern is named.
        let f = redactor(&["damn", "x{65}"]);
        assert_eq!((f.hold(), f.unbounded()), (64, &[1][..]));
        let f = redactor(&["damn", r"bad\w*"]);
        assert_eq!(f.hold(), 64);
        assert_eq!(f.unbounded(), [1]);
    }

    #[test]
    fn config_errors_name_the_pattern() {
        let reject = || Action::Reject;
        assert_eq!(
            err(&[], reject(), 64),
            "invalid config: patterns: must list at least one pattern"
        );
        assert_eq!(
            err(&["ok", ""], reject(), 64),
            "invalid config: patterns[1]: must not be empty"
        );
        assert_eq!(
            err(&["ok", "(unclosed"], reject(), 64),
            "invalid config: patterns[1]: invalid regex: unclosed group at character 1"
        );
        assert_eq!(
            err(&[r"a\p{Greek}"], reject(), 64),
            "invalid config: patterns[0]: invalid regex: Unicode property not found at \
             character 2"
        );
        let e = err(&["a*"], reject(), 64);
        assert!(
            e.starts_with("invalid config: patterns[0]: can match the empty string"),
            "{e}"
        );
        let e = err(&[r"\b"], reject(), 64);
        assert!(e.contains("empty string"), "{e}");
        assert_eq!(
            err(&["ok", "red"], Action::Redact("[redacted]".into()), 64),
            "invalid config: replacement: must not itself match a banned pattern (it matches \
             patterns[1])"
        );
    }
}
