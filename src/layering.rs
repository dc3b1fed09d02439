//! The cycle check: every top-level module of `src/` imports only modules
//! in layers below its own, as the layering in docs/architecture.md
//! ("Layers") writes them. It reads the `crate::…` paths of each module's
//! files, so an import that runs upwards (and with it every cycle between
//! top-level modules) fails `cargo test --lib`, naming the file and the
//! import.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The layers as docs/architecture.md writes them, top first: the first
/// fenced block after the `## Layers` heading, one layer a line, modules
/// separated by spaces.
fn layers(doc: &str) -> Vec<Vec<String>> {
    let after = doc
        .split_once("\n## Layers\n")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let mut lines = after.lines().skip_while(|l| !l.starts_with("```"));
    lines.next();
    lines
        .take_while(|l| !l.starts_with("```"))
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The top-level modules `lib.rs` declares (`pub mod NAME;`).
fn declared(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .filter_map(|l| l.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

/// The first path segment after each `crate::` in the code of `text` (lines
/// that are comments, doc comments among them, name modules without
/// importing them), with the heads of a grouped `crate::{a::x, b}` read at
/// its top level.
fn imported(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .flat_map(|l| [l, "\n"])
        .collect();
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut head = true;
            let mut word = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => head = true,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if head && (c.is_alphanumeric() || c == '_') {
                    word.push(c);
                } else if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                    head = false;
                }
            }
        } else {
            let word: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push(word);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every import that does not run downwards, as `FILE: MODULE (layer N)
/// imports crate::OTHER (layer M)`; modules missing from the layering are
/// reported too.
fn violations(src: &Path, layering: &[Vec<String>]) -> Vec<String> {
    let layer_of: BTreeMap<&str, usize> = layering
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (m.as_str(), i)))
        .collect();
    let lib = fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let modules = declared(&lib);
    let mut found = Vec::new();
    for m in &modules {
        let Some(&own) = layer_of.get(m.as_str()) else {
            found.push(format!(
                "module `{m}` is declared in src/lib.rs but placed in no layer of docs/architecture.md (## Layers)"
            ));
            continue;
        };
        let mut files = Vec::new();
        let single = src.join(format!("{m}.rs"));
        if single.is_file() {
            files.push(single);
        }
        rust_files(&src.join(m), &mut files);
        files.sort();
        for f in files {
            let text = fs::read_to_string(&f).unwrap_or_default();
            for other in imported(&text) {
                if other == *m || !modules.contains(&other) {
                    continue;
                }
                match layer_of.get(other.as_str()) {
                    Some(&theirs) if theirs > own => {}
                    theirs => found.push(format!(
                        "{}: `{m}` (layer {}) imports crate::{other} (layer {}); imports run downwards only",
                        f.strip_prefix(src.parent().unwrap_or(src)).unwrap_or(&f).display(),
                        own + 1,
                        theirs.map(|t| (t + 1).to_string()).unwrap_or_else(|| "none".into()),
                    )),
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn imports_run_down_the_layers_of_docs_architecture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let layering = layers(&doc);
    assert!(
        layering.len() > 3,
        "docs/architecture.md has no `## Layers` block: {layering:?}"
    );
    let found = violations(&root.join("src"), &layering);
    assert!(found.is_empty(), "imports against the layering:\n{}", found.join("\n"));
}

#[test]
fn an_import_upwards_or_a_cycle_is_found() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("exec")).unwrap();
    fs::write(src.join("lib.rs"), "pub mod cli;\npub mod exec;\npub mod image;\n").unwrap();
    fs::write(src.join("cli.rs"), "use crate::exec::run;\n").unwrap();
    fs::write(src.join("image.rs"), "pub fn f() {}\n").unwrap();
    fs::write(
        src.join("exec/mod.rs"),
        "use crate::{image::{f, g}, cli::x};\nfn a() { crate::image::f(); }\n",
    )
    .unwrap();
    let layering = layers("# A\n\n## Layers\n\n```text\ncli\nexec\nimage\n```\n");
    assert_eq!(layering, vec![vec!["cli"], vec!["exec"], vec!["image"]]);
    let found = violations(&src, &layering);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("exec/mod.rs: `exec` (layer 2) imports crate::cli (layer 1)"),
        "{found:?}"
    );
    // A module in no layer is reported; `$crate::` and `foo_crate::` are not imports.
    fs::write(
        src.join("lib.rs"),
        "pub mod cli;\npub mod exec;\npub mod image;\npub mod extra;\n",
    )
    .unwrap();
    fs::write(
        src.join("exec/mod.rs"),
        "use $crate::cli; use my_crate::cli;\n/// Called by `crate::cli`.\n// crate::cli::x\n",
    )
    .unwrap();
    let found = violations(&src, &layering);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("module `extra`"), "{found:?}");
}
