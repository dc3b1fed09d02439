//! Sync-file errors for people and machines. For people: `FILE:LINE:COLUMN:
//! message`, then the line with a caret under the offending text and a hint,
//! drawn by `miette`. For machines: each problem keeps its file, line,
//! column, offending text and hint ([`Located`]) through to the output, so
//! `-O json` prints them as objects and `-O github` as workflow annotations.
//! Either way exit 2: nothing is done with a bad file.

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

pub use crate::error::{github_data, Located, SpecErrors, COMMAND_LINE};

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

    /// The problem as an error (exit 2): position, message, snippet, hint.
    pub fn error(&self, problem: SpecProblem) -> Error {
        self.errors(vec![problem])
    }

    /// Several problems as one error (exit 2).
    pub fn errors(&self, problems: Vec<SpecProblem>) -> Error {
        let n = problems.len();
        let mut text = problems.iter().map(|p| self.render(p)).collect::<Vec<_>>().join("\n");
        if n > 1 {
            text.push_str(&format!("\n{n} problems in {}", self.name));
        }
        Error::SyncFile(Box::new(SpecErrors {
            problems: problems.iter().map(|p| self.locate(p)).collect(),
            rendered: text,
        }))
    }

    /// The problem with its place and text, for machines.
    fn locate(&self, p: &SpecProblem) -> Located {
        let start = p.span.as_ref().map(|s| self.line_column(s.start));
        let end = p.span.as_ref().map(|s| self.line_column(s.end.max(s.start)));
        let text = p.span.as_ref().and_then(|s| {
            let a = floor_char_boundary(&self.text, s.start.min(self.text.len()));
            let b = floor_char_boundary(&self.text, s.end.clamp(a, self.text.len()));
            let t: String = self.text[a..b].chars().take(200).collect();
            (!t.is_empty()).then_some(t)
        });
        Located {
            file: self.name.clone(),
            line: start.map(|(l, _)| l),
            column: start.map(|(_, c)| c),
            end_line: end.map(|(l, _)| l),
            end_column: end.map(|(_, c)| c),
            message: p.message.clone(),
            text,
            label: p.label.clone(),
            hint: p.help.clone(),
        }
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
    fn problems_stay_structured_for_json_and_github() {
        let s = SpecSource::new(Path::new("m,1.yaml"), "a: 1\nbb: 2\n".to_string());
        let e = s.errors(vec![
            SpecProblem::new("bad value 100%", 9..10, "here").help("use 3"),
            SpecProblem::new("second", 0..1, "there"),
        ]);
        assert_eq!(e.exit_code(), 2);
        let Error::SyncFile(errors) = &e else {
            panic!("not a sync-file error: {e:?}");
        };
        assert_eq!(
            errors.problems[0],
            Located {
                file: "m,1.yaml".into(),
                line: Some(2),
                column: Some(5),
                end_line: Some(2),
                end_column: Some(6),
                message: "bad value 100%".into(),
                text: Some("2".into()),
                label: "here".into(),
                hint: Some("use 3".into()),
            }
        );
        assert!(e.to_string().contains("2 problems in m,1.yaml"));
        let json = errors.json();
        assert_eq!(json["errors"][1]["line"], 1);
        assert_eq!(json["errors"][0]["hint"], "use 3");
        assert_eq!(
            errors.github(),
            "::error file=m%2C1.yaml,line=2,col=5,endLine=2,endColumn=6::bad value 100%25%0Ahelp: use 3\n\
             ::error file=m%2C1.yaml,line=1,col=1,endLine=1,endColumn=2::second\n"
        );
        // A one-shot command's problems point into no file.
        let s = SpecSource::new(Path::new(COMMAND_LINE), "occy process a b".to_string());
        let Error::SyncFile(errors) = s.error(SpecProblem::new("bad b", 15..16, "here").help("use c")) else {
            panic!("not a sync-file error");
        };
        assert_eq!(errors.github(), "::error::bad b%0Ahelp: use c\n");
    }

    #[test]
    fn typos_find_their_word() {
        assert_eq!(closest("tag", ["tags", "from", "to"]), Some("tags"));
        assert_eq!(closest("platfroms", ["platforms", "filters"]), Some("platforms"));
        assert_eq!(closest("zzzzzz", ["tags", "from"]), None);
    }
}
