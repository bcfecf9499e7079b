//! Full-text search: the query language every engine understands, and the fragment a hit
//! shows.
//!
//! A query is what people type into a search box, with the conventions of web search
//! engines (PostgreSQL's `websearch_to_tsquery`): words all of which a hit contains,
//! `"quoted phrases"`, `or` between alternatives, `-word` or `-"a phrase"` for what a hit must
//! not contain. [`SearchQuery`] parses it once and renders it for each engine: an FTS5 `MATCH`
//! expression for SQLite, `websearch_to_tsquery` input for PostgreSQL. Each term is passed
//! to the engine as the user wrote it (quoted), so the engine splits it into words exactly as
//! it split the indexed text.

use crate::recovery::page_limit;
use crate::{ChatError, Id};

/// Longest query, in characters.
const SEARCH_MAX_CHARS: usize = 200;
/// Most terms (words and phrases, excluded ones included) in one query.
const SEARCH_MAX_TERMS: usize = 16;
/// Results per page unless asked otherwise, and the most one page holds.
const SEARCH_DEFAULT_LIMIT: u32 = 20;
const SEARCH_MAX_LIMIT: u32 = 50;
/// Longest fragment a hit shows, in bytes.
const FRAGMENT_BYTES: usize = 200;

/// A word, or several to be found next to each other (a quoted phrase, or a term the engine
/// splits into several words, like `e-mail`), as typed: never empty, never holding `"`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term(String);

/// `terms` as quoted strings (the one form both engines read as text, never as syntax),
/// joined by `sep`.
fn quoted(terms: &[Term], sep: &str) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"", t.0))
        .collect::<Vec<_>>()
        .join(sep)
}

/// A parsed search query: alternatives (`or`) of terms that must all be present, and terms
/// that must not be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    any: Vec<Vec<Term>>,
    none: Vec<Term>,
}

impl SearchQuery {
    /// Parses a query; a clear `bad_request` when it is too long, has too many terms, or has
    /// nothing to look for (only punctuation, only excluded terms).
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        if raw.chars().count() > SEARCH_MAX_CHARS {
            return Err(ChatError::bad_request(format!(
                "a search query is at most {SEARCH_MAX_CHARS} characters"
            )));
        }
        let mut any: Vec<Vec<Term>> = vec![Vec::new()];
        let mut none = Vec::new();
        let mut terms = 0;
        let mut rest = raw.trim_start();
        while !rest.is_empty() {
            let negated = rest.starts_with('-');
            if negated {
                rest = &rest[1..];
            }
            let (chunk, quoted, after) = if let Some(inner) = rest.strip_prefix('"') {
                let end = inner.find('"').unwrap_or(inner.len());
                (&inner[..end], true, inner.get(end + 1..).unwrap_or(""))
            } else {
                let end = rest
                    .find(|c: char| c.is_whitespace() || c == '"')
                    .unwrap_or(rest.len());
                (&rest[..end], false, &rest[end..])
            };
            rest = after.trim_start();
            if !quoted && !negated && chunk.eq_ignore_ascii_case("or") {
                if any.last().is_some_and(|g| !g.is_empty()) {
                    any.push(Vec::new());
                }
                continue;
            }
            // Control characters would only reach the engine's tokenizer as separators.
            let text: String = chunk
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            if words(&text).next().is_none() {
                continue;
            }
            terms += 1;
            if terms > SEARCH_MAX_TERMS {
                return Err(ChatError::bad_request(format!(
                    "a search query has at most {SEARCH_MAX_TERMS} words or phrases"
                )));
            }
            let term = Term(text.trim().to_owned());
            if negated {
                none.push(term);
            } else if let Some(group) = any.last_mut() {
                group.push(term);
            }
        }
        any.retain(|g| !g.is_empty());
        if any.is_empty() {
            return Err(ChatError::bad_request(
                "a search needs at least one word to look for",
            ));
        }
        Ok(SearchQuery { any, none })
    }

    /// The query as an SQLite FTS5 `MATCH` expression: every term a quoted string (the
    /// tokenizer splits it, and a term of several words is a phrase), alternatives in
    /// parentheses, excluded terms after `NOT`.
    pub fn fts5(&self) -> String {
        let any = self
            .any
            .iter()
            .map(|g| format!("({})", quoted(g, " AND ")))
            .collect::<Vec<_>>()
            .join(" OR ");
        if self.none.is_empty() {
            any
        } else {
            format!("({any}) NOT ({})", quoted(&self.none, " OR "))
        }
    }

    /// The terms to find as `websearch_to_tsquery` input: quoted terms, alternatives joined by
    /// `or` (web-search precedence: `a b or c` is `(a & b) | c`, as in [`SearchQuery::fts5`]).
    pub fn websearch(&self) -> String {
        self.any
            .iter()
            .map(|g| quoted(g, " "))
            .collect::<Vec<_>>()
            .join(" or ")
    }

    /// The excluded terms as `websearch_to_tsquery` input (any of them excludes a hit), or
    /// `None`. Kept apart from [`SearchQuery::websearch`] because web-search syntax attaches
    /// `-term` to one alternative only, where this query excludes it from all.
    pub fn websearch_excluded(&self) -> Option<String> {
        (!self.none.is_empty()).then(|| quoted(&self.none, " or "))
    }

    /// The words a hit may contain, lower-cased: what its [`fragment`] is cut around, and
    /// what a client marks in it.
    pub fn words(&self) -> Vec<String> {
        self.any
            .iter()
            .flatten()
            .flat_map(|t| words(&t.0).map(|(_, w)| w.to_lowercase()))
            .collect()
    }
}

/// The words of `text` (runs of letters and digits) with their byte offsets.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut start = None;
    let mut chars = text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')));
    std::iter::from_fn(move || {
        for (i, c) in chars.by_ref() {
            match (start, c.is_alphanumeric()) {
                (None, true) => start = Some(i),
                (Some(s), false) => {
                    start = None;
                    return Some((s, &text[s..i]));
                }
                _ => {}
            }
        }
        None
    })
}

/// Which page of hits to return: older than message `before`, at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchPage {
    pub before: Option<Id>,
    pub limit: u32,
}

impl SearchPage {
    pub fn new(before: Option<Id>, limit: Option<i64>) -> Result<Self, ChatError> {
        let limit = page_limit(limit, SEARCH_DEFAULT_LIMIT, SEARCH_MAX_LIMIT)?;
        Ok(SearchPage { before, limit })
    }
}

/// The part of `text` a hit shows: a few words either side of the first of `wanted` (a
/// query's [`SearchQuery::words`]), on one line, at most `FRAGMENT_BYTES` (200), with `…` where it cuts the text. A text in
/// which no wanted word is found whole (an engine that splits words differently) shows from
/// its start.
pub fn fragment(text: &str, wanted: &[String]) -> String {
    const BEFORE: usize = 6;
    let all: Vec<(usize, &str)> = words(text).collect();
    let hit = all
        .iter()
        .position(|(_, w)| wanted.iter().any(|q| w.to_lowercase() == *q))
        .unwrap_or(0);
    let mut start = match hit.checked_sub(BEFORE) {
        Some(first) => all[first].0,
        None => 0,
    };
    // Long words before the hit (a link) would push it out: then start at the hit.
    if let Some((at, w)) = all.get(hit) {
        if at + w.len() > start + FRAGMENT_BYTES {
            start = *at;
        }
    }
    let mut end = (start + FRAGMENT_BYTES).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // End after a whole word where the cut falls inside one.
    if end < text.len() {
        if let Some((s, _)) = all
            .iter()
            .rev()
            .find(|(s, w)| *s < end && s + w.len() > end)
        {
            if *s > start {
                end = *s;
            }
        }
    }
    let mut out = String::with_capacity(end - start + 8);
    if start > 0 {
        out.push('…');
    }
    let body = text[start..end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    out.push_str(&body);
    if end < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> SearchQuery {
        SearchQuery::parse(s).unwrap()
    }

    #[test]
    fn words_are_anded_and_or_separates_alternatives() {
        assert_eq!(q("deploy friday").fts5(), r#"("deploy" AND "friday")"#);
        assert_eq!(
            q("a b or c").fts5(),
            r#"("a" AND "b") OR ("c")"#,
            "web-search precedence: and binds tighter"
        );
        assert_eq!(q("a b OR c").websearch(), r#""a" "b" or "c""#);
        assert_eq!(q("or a or or b or").fts5(), r#"("a") OR ("b")"#);
    }

    #[test]
    fn phrases_and_exclusions() {
        let query = q(r#""release notes" -draft -"old plan" v2"#);
        assert_eq!(
            query.fts5(),
            r#"(("release notes" AND "v2")) NOT ("draft" OR "old plan")"#
        );
        assert_eq!(query.websearch(), r#""release notes" "v2""#);
        assert_eq!(
            query.websearch_excluded().as_deref(),
            Some(r#""draft" or "old plan""#)
        );
        assert_eq!(q("x").websearch_excluded(), None);
        // The words a hit is marked by: not the excluded ones, nor `or`; a term's own words.
        assert_eq!(query.words(), ["release", "notes", "v2"]);
        assert_eq!(q("Deploy or e-mail").words(), ["deploy", "e", "mail"]);
        // An unclosed quote runs to the end.
        assert_eq!(q(r#""half open"#).fts5(), r#"("half open")"#);
    }

    #[test]
    fn what_the_engine_would_misread_never_reaches_it() {
        // Quotes end terms and never appear inside one; operators of the engines' own syntax
        // are plain text inside the quotes.
        assert_eq!(q(r#"a"b"#).fts5(), r#"("a" AND "b")"#);
        assert_eq!(
            q("NEAR(a b) col:x *").fts5(),
            r#"("NEAR(a" AND "b)" AND "col:x")"#
        );
        assert_eq!(q("a\u{0}b").fts5(), r#"("a b")"#);
    }

    #[test]
    fn nothing_to_look_for_or_too_much_is_a_bad_request() {
        for bad in ["", "   ", "-x", "or", "!!! ???", "\"\""] {
            let e = SearchQuery::parse(bad).unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::BadRequest, "{bad:?}");
        }
        assert!(SearchQuery::parse(&"a ".repeat(16)).is_ok());
        assert!(SearchQuery::parse(&"a ".repeat(17)).is_err());
        assert!(SearchQuery::parse(&"é".repeat(200)).is_ok());
        assert!(SearchQuery::parse(&"é".repeat(201)).is_err());
    }

    #[test]
    fn a_page_is_bounded() {
        assert_eq!(SearchPage::new(None, None).unwrap().limit, 20);
        assert_eq!(SearchPage::new(None, Some(50)).unwrap().limit, 50);
        assert!(SearchPage::new(None, Some(0)).is_err());
        assert!(SearchPage::new(None, Some(51)).is_err());
    }

    #[test]
    fn a_fragment_shows_the_words_around_the_first_hit() {
        let text = "one two three four five six seven eight nine ten Deploy eleven";
        assert_eq!(
            fragment(text, &q("deploy").words()),
            "…five six seven eight nine ten Deploy eleven"
        );
        assert_eq!(
            fragment("short\n\ntext here", &q("text").words()),
            "short text here"
        );
        let long = format!("needle {}", "word ".repeat(100));
        let f = fragment(&long, &q("needle").words());
        assert!(f.starts_with("needle word"), "{f}");
        assert!(f.ends_with("word…"), "cut at a word: {f}");
        assert!(f.len() <= FRAGMENT_BYTES + 2 * '…'.len_utf8());
        // Long words before the hit: the fragment starts at it.
        let text = format!("{} needle after", "x".repeat(250));
        let f = fragment(&text, &q("needle").words());
        assert!(f.starts_with("…needle after"), "{f}");
        // No whole-word hit: from the start, cut at a character boundary.
        let f = fragment(&"ü".repeat(300), &q("zzz").words());
        assert!(f.ends_with('…') && f.len() <= FRAGMENT_BYTES + 3, "{f}");
    }
}
