//! Sync-file errors for people: `FILE:LINE:COLUMN: message`, then the line
//! with a caret under the offending text and a hint, drawn by `miette`.
//! They become usage errors (exit 2): nothing is done with a bad file.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};

use crate::error::Error;

/// The text of a sync file, kept to point into it.
#[derive(Debug, Clone)]
pub struct SpecSource {
    /// The file name as the user gave it.
    pub name: String,
    pub text: Arc<String>,
}

/// One problem in a sync file.
#[derive(Debug, Clone)]
pub struct SpecProblem {
    pub message: String,
    pub span: Option<Range<usize>>,
    /// What the caret says.
    pub label: String,
    pub help: Option<String>,
    /// Other places that matter (the first of two clashing entries).
    pub related: Vec<(Range<usize>, String)>,
}

impl SpecProblem {
    pub fn new(message: impl Into<String>, span: Range<usize>, label: impl Into<String>) -> Self {
        SpecProblem {
            message: message.into(),
            span: Some(span),
            label: label.into(),
            help: None,
            related: Vec::new(),
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn also(mut self, span: Range<usize>, label: impl Into<String>) -> Self {
        self.related.push((span, label.into()));
        self
    }
}

#[derive(Debug)]
struct Rendered {
    message: String,
    src: NamedSource<Arc<String>>,
    labels: Vec<LabeledSpan>,
    help: Option<String>,
}

impl std::fmt::Display for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Rendered {}

impl Diagnostic for Rendered {
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h.clone()) as Box<dyn std::fmt::Display>)
    }
}

impl SpecSource {
    pub fn new(path: &Path, text: String) -> Self {
        SpecSource {
            name: path.display().to_string(),
            text: Arc::new(text),
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        (line, column)
    }

    /// `FILE:LINE:COLUMN` of a byte offset.
    pub fn place(&self, offset: usize) -> String {
        let (l, c) = self.line_column(offset);
        format!("{}:{l}:{c}", self.name)
    }

    /// The problem as a usage error: position, message, snippet, hint.
    pub fn error(&self, problem: SpecProblem) -> Error {
        Error::Usage(self.render(&problem))
    }

    /// Several problems as one usage error.
    pub fn errors(&self, problems: Vec<SpecProblem>) -> Error {
        let n = problems.len();
        let mut text = problems.iter().map(|p| self.render(p)).collect::<Vec<_>>().join("\n");
        if n > 1 {
            text.push_str(&format!("\n{n} problems in {}", self.name));
        }
        Error::Usage(text)
    }

    fn render(&self, p: &SpecProblem) -> String {
        let head = match &p.span {
            Some(span) => format!("{}: {}", self.place(span.start), p.message),
            None => format!("{}: {}", self.name, p.message),
        };
        // A snippet of a very long line (minified or generated text) would
        // bury the message: then only the message and the hint.
        if p.span
            .as_ref()
            .is_some_and(|sp| self.line_length_at(sp.start) > MAX_SNIPPET_LINE)
        {
            return match &p.help {
                Some(h) => format!("{head}\n  help: {h}"),
                None => head,
            };
        }
        let mut labels = Vec::new();
        if let Some(span) = &p.span {
            labels.push(LabeledSpan::new_primary_with_span(
                Some(p.label.clone()),
                self.source_span(span),
            ));
        }
        for (span, label) in &p.related {
            labels.push(LabeledSpan::new_with_span(Some(label.clone()), self.source_span(span)));
        }
        let diag = Rendered {
            message: head,
            src: NamedSource::new(self.name.clone(), self.text.clone()),
            labels,
            help: p.help.clone(),
        };
        let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
        let theme = if colour {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let mut out = String::new();
        match GraphicalReportHandler::new_themed(theme)
            .with_width(100)
            .with_wrap_lines(false)
            .render_report(&mut out, &diag)
        {
            // miette marks the message with "×"; the message already leads
            // with FILE:LINE:COLUMN, which is what terminals and editors link.
            Ok(()) => {
                let text = out.trim_end();
                let text = text.trim_start();
                text.strip_prefix('×').unwrap_or(text).trim_start().to_string()
            }
            Err(_) => diag.message,
        }
    }

    /// The length in bytes of the line holding `offset`.
    fn line_length_at(&self, offset: usize) -> usize {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let end = self.text[offset..].find('\n').map_or(self.text.len(), |i| offset + i);
        end - start
    }

    fn source_span(&self, span: &Range<usize>) -> SourceSpan {
        let start = span.start.min(self.text.len());
        let end = span.end.clamp(start, self.text.len());
        SourceSpan::new(start.into(), end - start)
    }
}

/// Lines longer than this are not quoted in diagnostics.
const MAX_SNIPPET_LINE: usize = 400;

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The known word closest to `word`, if one is close enough to be a typo.
pub fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (edit_distance(word, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_one_based_lines_and_columns() {
        let s = SpecSource::new(Path::new("m.yaml"), "a: 1\nbb: 2\n".to_string());
        assert_eq!(s.line_column(0), (1, 1));
        assert_eq!(s.line_column(5), (2, 1));
        assert_eq!(s.line_column(9), (2, 5));
        let e = s.error(SpecProblem::new("bad value", 9..10, "here").help("use 3"));
        let text = e.to_string();
        assert!(text.starts_with("m.yaml:2:5: bad value"), "{text}");
        assert!(text.contains("here") && text.contains("use 3"), "{text}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn typos_find_their_word() {
        assert_eq!(closest("tag", ["tags", "from", "to"]), Some("tags"));
        assert_eq!(closest("platfroms", ["platforms", "filters"]), Some("platforms"));
        assert_eq!(closest("zzzzzz", ["tags", "from"]), None);
    }
}
