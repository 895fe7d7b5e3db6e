//! Filtering a streamed completion chunk by chunk, so that a match split across chunks never
//! reaches the client. Pure: no host calls.
//!
//! A [`Window`] holds the text of one choice that has arrived but not been released. A match
//! spans at most [`Filter::hold`] characters (`H`), so a match that starts more than `H`
//! characters before the end of the text received so far is complete, and so is the character
//! right after it (what `\b` or `$` look at); and a position that far back at which nothing
//! matches now cannot start a match later. Everything up to that point is released (redacted,
//! or checked for rejection); the last `H` characters wait for the next chunk. The last chunk of
//! a choice releases everything. The released pieces, concatenated, are exactly the redaction
//! of the whole text, however it was split.
//!
//! The window also keeps the last released character (of the original text) in front of the
//! pending text, so that look-behind assertions (`\b`, `^`) see what the whole text has there.
//!
//! A pattern whose matches can be longer than `max_match_chars` (e.g. `bad\w*`) is still caught
//! from its start, but in a stream only its first `max_match_chars` characters are sure to be
//! covered by the redaction.

use crate::filter::{Action, Filter, Found};

/// The held-back text of one streamed choice.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// Context (at most one released character) followed by the pending text.
    buf: String,
    /// Byte offset in `buf` where the pending text starts.
    start: usize,
}

impl Window {
    /// Adds `text` and returns what can be released now: redacted, or `Err` with the first
    /// complete match when the action is [`Action::Reject`].
    pub fn push(&mut self, filter: &Filter, text: &str) -> Result<String, Found> {
        self.buf.push_str(text);
        let pending = &self.buf[self.start..];
        // The last `hold` characters (at least one) stay; everything before them can go.
        let cut = match pending.char_indices().rev().nth(filter.hold().max(1) - 1) {
            Some((i, _)) => self.start + i,
            None => self.start,
        };
        self.release(filter, cut)
    }

    /// Releases everything still held (the choice's last chunk arrived).
    pub fn finish(&mut self, filter: &Filter) -> Result<String, Found> {
        let out = self.release(filter, self.buf.len());
        *self = Window::default();
        out
    }

    /// Whether text is waiting to be released.
    pub fn is_holding(&self) -> bool {
        self.start < self.buf.len()
    }

    /// Releases the pending text up to byte `cut` (and past it, to the end of a match that
    /// starts before it).
    fn release(&mut self, filter: &Filter, cut: usize) -> Result<String, Found> {
        let mut out = String::new();
        let mut pos = self.start;
        while pos < cut {
            match filter.find_at(&self.buf, pos) {
                Some((m, found)) if m.start < cut && !m.is_empty() => match filter.action() {
                    Action::Reject => return Err(found),
                    Action::Redact(replacement) => {
                        out.push_str(&self.buf[pos..m.start]);
                        out.push_str(replacement);
                        pos = m.end;
                    }
                },
                _ => {
                    out.push_str(&self.buf[pos..cut]);
                    pos = cut;
                }
            }
        }
        // Keep the last released character as look-behind context.
        let keep = self.buf[..pos]
            .char_indices()
            .next_back()
            .map_or(pos, |(i, _)| i);
        self.buf.drain(..keep);
        self.start = pos - keep;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(patterns: &[&str], action: Action) -> Filter {
        let patterns: Vec<String> = patterns.iter().map(|s| (*s).to_owned()).collect();
        Filter::new(&patterns, true, action, 64).unwrap()
    }

    fn redact(patterns: &[&str]) -> Filter {
        filter(patterns, Action::Redact("[redacted]".into()))
    }

    /// The char-boundary byte offsets strictly inside `text`.
    fn boundaries(text: &str) -> Vec<usize> {
        text.char_indices().map(|(i, _)| i).skip(1).collect()
    }

    /// Every way to cut `text` into 1, 2 and 3 non-empty pieces.
    fn splits(text: &str) -> Vec<Vec<&str>> {
        let cuts = boundaries(text);
        let mut all = vec![vec![text]];
        for (n, &a) in cuts.iter().enumerate() {
            all.push(vec![&text[..a], &text[a..]]);
            for &b in &cuts[n + 1..] {
                all.push(vec![&text[..a], &text[a..b], &text[b..]]);
            }
        }
        all
    }

    /// Streams `pieces` through a window: the released pieces (the last with the flush).
    fn stream(f: &Filter, pieces: &[&str]) -> Result<Vec<String>, Found> {
        let mut w = Window::default();
        let mut out = Vec::new();
        for piece in pieces {
            out.push(w.push(f, piece)?);
        }
        out.push(w.finish(f)?);
        assert!(!w.is_holding());
        Ok(out)
    }

    /// For every 1-, 2- and 3-split of `text`: the banned `word` is never released (alone or
    /// across pieces) and the released text is exactly the redaction of the whole.
    fn check_redaction(f: &Filter, text: &str, word: &str) {
        let whole = f.redact(text, "[redacted]").into_owned();
        assert!(!whole.to_lowercase().contains(word), "{whole}");
        for pieces in splits(text) {
            let out = stream(f, &pieces).unwrap();
            let joined = out.concat();
            assert_eq!(joined, whole, "split {pieces:?} released {out:?}");
            // What the client has seen after each chunk never contains the word.
            let mut seen = String::new();
            for piece in &out {
                seen.push_str(piece);
                assert!(
                    !seen.to_lowercase().contains(word),
                    "split {pieces:?} leaked {word:?}: {out:?}"
                );
            }
        }
    }

    #[test]
    fn a_banned_word_split_across_chunks_never_slips_through() {
        let f = redact(&["damn"]);
        check_redaction(&f, "well damn it, Damn!", "damn");
    }

    #[test]
    fn word_boundaries_and_several_patterns_match_as_on_the_whole_text() {
        let f = redact(&[r"\bheck\b", "darn", r"sk-[a-z0-9]{6}"]);
        check_redaction(&f, "heck, checked heck. key sk-ab12cd!", "sk-ab12cd");
        check_redaction(&f, "heckle heck darned", "darn");
        check_redaction(&f, "token sk-abcdef0 end", "sk-abcdef");
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        let f = redact(&["dämn", "ß"]);
        check_redaction(&f, "ça dämn straße ü", "dämn");
    }

    #[test]
    fn any_split_of_generated_texts_releases_the_whole_text_redaction() {
        let f = redact(&["damn", r"\bheck\b", "n{1,3}d", "^a", "e$"]);
        // A small deterministic generator over an alphabet that makes many near-matches.
        let alphabet: Vec<char> = "damnheck ä".chars().collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        for _ in 0..200 {
            let len = next() % 24;
            let text: String = (0..len)
                .map(|_| alphabet[next() % alphabet.len()])
                .collect();
            let whole = f.redact(&text, "[redacted]").into_owned();
            for pieces in splits(&text) {
                let joined = stream(&f, &pieces).unwrap().concat();
                assert_eq!(joined, whole, "text {text:?} split {pieces:?}");
            }
        }
    }

    #[test]
    fn anchors_see_the_whole_text() {
        let f = redact(&["^hi", "bye$"]);
        for pieces in splits("hi, hi, bye bye") {
            let joined = stream(&f, &pieces).unwrap().concat();
            assert_eq!(joined, "[redacted], hi, bye [redacted]", "{pieces:?}");
        }
    }

    #[test]
    fn short_patterns_hold_back_little() {
        let f = redact(&["damn"]);
        let mut w = Window::default();
        assert_eq!(w.push(&f, "hello world").unwrap(), "hello w");
        assert!(w.is_holding());
        assert_eq!(w.push(&f, "!").unwrap(), "o");
        assert_eq!(w.finish(&f).unwrap(), "rld!");
    }

    #[test]
    fn reject_fails_before_any_part_of_the_match_is_released() {
        let f = filter(&["damn"], Action::Reject);
        let text = "well, damn it";
        for pieces in splits(text) {
            let mut w = Window::default();
            let mut seen = String::new();
            let mut failed = None;
            for piece in &pieces {
                match w.push(&f, piece) {
                    Ok(out) => seen.push_str(&out),
                    Err(found) => {
                        failed = Some(found);
                        break;
                    }
                }
            }
            let failed = failed.or_else(|| w.finish(&f).err());
            assert_eq!(failed, Some(Found { pattern: 0 }), "{pieces:?}");
            assert!(!seen.contains("da"), "{pieces:?} released {seen:?}");
        }
        assert_eq!(
            stream(&f, &["clean ", "text"]).unwrap().concat(),
            "clean text"
        );
    }

    #[test]
    fn unbounded_patterns_are_caught_from_their_start() {
        let f = redact(&[r"bad\w*"]);
        assert_eq!(f.hold(), 64);
        for pieces in splits("so baddest, ok") {
            let joined = stream(&f, &pieces).unwrap().concat();
            assert_eq!(joined, "so [redacted], ok", "{pieces:?}");
        }
    }
}
