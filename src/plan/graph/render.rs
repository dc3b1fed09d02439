//! The work graph for people: one line per node (`describe_work`), the
//! shared-work summary of a plan, and the DOT picture (`-O dot`).

use super::*;

/// `upload blob sha256:ab12… to registry://host/repo`: one node of work,
/// for messages.
pub fn describe_work(w: &Work) -> String {
    let short = |s: &str| match Digest::parse(s) {
        Ok(d) => d.short().to_string(),
        Err(_) => s.to_string(),
    };
    match &w.key {
        NodeKey::Fetch { source, digest } => format!("fetch {} from {source}", digest.short()),
        NodeKey::Rewrite { input, .. } => format!("rewrite {}", input.short()),
        NodeKey::Blob { store, blob } | NodeKey::Config { store, blob } => {
            let verb = match &w.how {
                Some(How::Upload) => "upload".to_string(),
                Some(How::Write) => "write".to_string(),
                Some(How::Mount(m)) if m.after_shard.is_some() => format!(
                    "mount (from {} once shard {} uploads it)",
                    m.from,
                    m.after_shard.unwrap_or_default()
                ),
                Some(How::Mount(m)) if m.remembered => format!("mount (from remembered {}, may upload)", m.from),
                Some(How::Mount(m)) => format!("mount (from {})", m.from),
                _ => "find".to_string(),
            };
            let what = w
                .source_blob
                .as_ref()
                .map(|d| d.digest.short().to_string())
                .unwrap_or_else(|| short(blob));
            format!("{verb} {} {what} to {store}", w.key.kind())
        }
        NodeKey::Manifest { store, .. } | NodeKey::Index { store, .. } => format!("{} in {store}", w.key.kind()),
        NodeKey::Tag { destination, image } => format!("commit {image} to {destination}"),
        NodeKey::Referrer { store, reference } => format!("referrer {reference} in {store}"),
        NodeKey::ReferrersTag { store, subject } => format!("the referrers tag of {subject} in {store}"),
        NodeKey::Check { destination, image } => format!("check {image} at {destination}"),
        NodeKey::Prune { destination } => format!("prune {destination}"),
    }
}

/// How a blob gets in, in words: `present`, `mount from a/b`, `upload`.
pub fn how_word(how: Option<&How>) -> String {
    match how {
        None => "nothing to move".to_string(),
        Some(How::Mount(m)) if m.after_shard.is_some() => format!(
            "mount from {} once shard {} uploads it",
            m.from,
            m.after_shard.unwrap_or_default()
        ),
        Some(How::Mount(m)) if m.remembered => format!("mount from remembered {}, may upload", m.from),
        Some(How::Mount(m)) => format!("mount from {}", m.from),
        Some(h) => h.name().to_string(),
    }
}

impl WorkGraph {
    /// Lines of shared work: each layer needed by more than one store, with
    /// what happens to it everywhere.
    pub fn shared_lines(&self) -> Vec<String> {
        // source digest → (fetch, rewrite?, blob nodes fed by it)
        let mut out = Vec::new();
        let mut fetches: Vec<NodeIndex> = self
            .graph
            .node_indices()
            .filter(|&i| matches!(self.graph[i].key, NodeKey::Fetch { .. }))
            .collect();
        fetches.sort_by_key(|&i| self.graph[i].id);
        for f in fetches {
            let w = &self.graph[f];
            let NodeKey::Fetch { digest, .. } = &w.key else {
                continue;
            };
            let mut how: BTreeMap<&'static str, usize> = BTreeMap::new();
            let mut rewrites = 0;
            let mut stores = HashSet::new();
            let mut visit = vec![f];
            while let Some(n) = visit.pop() {
                for (to, _) in self.needed_by(n) {
                    match &self.graph[to].key {
                        NodeKey::Rewrite { .. } => {
                            rewrites += 1;
                            visit.push(to);
                        }
                        NodeKey::Blob { store, .. } => {
                            stores.insert(store.to_string());
                            match &self.graph[to].how {
                                Some(h) if h.is_remembered_mount() => *how.entry("remembered").or_default() += 1,
                                Some(h) => *how.entry(h.name()).or_default() += 1,
                                None => {}
                            }
                            // Mounts that copy this upload.
                            for (m, label) in self.needed_by(to) {
                                if label == "mounted from" {
                                    if let Some(h) = &self.graph[m].how {
                                        *how.entry(h.name()).or_default() += 1;
                                    }
                                    if let Some(s) = self.graph[m].key.store() {
                                        stores.insert(s.to_string());
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            if stores.len() < 2 {
                continue;
            }
            let fetched = if self.fetched_only_if_declined(f) {
                "fetched once if a mount is declined"
            } else {
                "fetched once"
            };
            let mut parts = vec![fetched.to_string()];
            if rewrites > 0 {
                parts.push(format!("rewritten {}", times(rewrites)));
            }
            for (name, verb) in [
                ("upload", "uploaded to"),
                ("mount", "mounted in"),
                ("remembered", "mounted from remembered repositories (may upload) in"),
                ("write", "written to"),
            ] {
                if let Some(n) = how.get(name) {
                    parts.push(format!("{verb} {n} {}", if *n == 1 { "store" } else { "stores" }));
                }
            }
            out.push(format!(
                "layer {} ({}): {}",
                digest.short(),
                crate::image::human_size(w.bytes),
                parts.join("; ")
            ));
        }
        out
    }

    /// The graph in Graphviz's DOT language: targets as clusters, shared
    /// fetches and rewrites outside them, drawn once.
    pub fn dot(&self, plan_targets: &[PlannedTarget]) -> String {
        let mut s = String::from("digraph occy_plan {\n  rankdir=LR;\n  node [fontname=\"monospace\", fontsize=10];\n");
        let label = |w: &Work| -> String {
            let what = match &w.key {
                NodeKey::Fetch { source, digest } => format!("fetch {}\\nfrom {}", digest.short(), source),
                NodeKey::Rewrite { input, chain } => {
                    format!("rewrite {}\\nchain {}", input.short(), &chain[..12.min(chain.len())])
                }
                NodeKey::Blob { store, blob } | NodeKey::Config { store, blob } => format!(
                    "{} {}\\n{}\\n{}",
                    w.key.kind(),
                    short_blob(blob),
                    w.how.as_ref().map(|h| how_word(Some(h))).unwrap_or_default(),
                    store
                ),
                NodeKey::Manifest { manifest, .. } | NodeKey::Index { manifest, .. } => {
                    format!("{} {}", w.key.kind(), short_blob(manifest))
                }
                NodeKey::Tag { destination, .. } => format!("tag {destination}"),
                NodeKey::Referrer { reference, .. } => format!("referrer {}", short_blob(reference)),
                NodeKey::ReferrersTag { subject, .. } => format!("referrers tag of {}", subject.short()),
                NodeKey::Check { .. } => "check".to_string(),
                NodeKey::Prune { destination } => format!("prune {destination}"),
            };
            dot_escape(&what)
        };
        let shape = |w: &Work| match w.key {
            NodeKey::Fetch { .. } => "shape=box, style=filled, fillcolor=\"#dbeafe\"",
            NodeKey::Rewrite { .. } => "shape=box, style=filled, fillcolor=\"#fde68a\"",
            NodeKey::Blob { .. } | NodeKey::Config { .. } => match w.how {
                Some(How::Present) => "shape=ellipse, style=dashed",
                Some(How::Mount { .. }) => "shape=ellipse, style=filled, fillcolor=\"#e9d5ff\"",
                _ => "shape=ellipse, style=filled, fillcolor=\"#bbf7d0\"",
            },
            NodeKey::Tag { .. } | NodeKey::ReferrersTag { .. } => "shape=tab",
            NodeKey::Referrer { .. } => "shape=component, style=filled, fillcolor=\"#fbcfe8\"",
            NodeKey::Check { .. } => "shape=note",
            NodeKey::Prune { .. } => "shape=octagon, style=filled, fillcolor=\"#fecaca\"",
            _ => "shape=component",
        };
        // A node belongs to a target's cluster when that target is its only one.
        let mut clustered: BTreeMap<usize, Vec<NodeIndex>> = BTreeMap::new();
        let mut free = Vec::new();
        for i in self.numbered() {
            let w = &self.graph[i];
            match (w.targets.as_slice(), &w.key) {
                ([_], NodeKey::Fetch { .. } | NodeKey::Rewrite { .. }) => free.push(i),
                ([t], _) => clustered.entry(*t).or_default().push(i),
                _ => free.push(i),
            }
        }
        for (t, nodes) in &clustered {
            let name = plan_targets
                .get(*t)
                .map(|p| p.destination().into_owned())
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  subgraph cluster_{t} {{\n    label=\"{}\";\n    style=rounded;",
                dot_escape(&name)
            );
            for &i in nodes {
                let w = &self.graph[i];
                let _ = writeln!(s, "    n{} [label=\"{}\", {}];", w.id, label(w), shape(w));
            }
            s.push_str("  }\n");
        }
        for i in free {
            let w = &self.graph[i];
            let _ = writeln!(s, "  n{} [label=\"{}\", {}];", w.id, label(w), shape(w));
        }
        for e in self.edges_out() {
            let _ = writeln!(s, "  n{} -> n{} [label=\"{}\"];", e.from, e.to, dot_escape(e.label));
        }
        s.push_str("}\n");
        s
    }
}

fn times(n: usize) -> String {
    match n {
        1 => "once".to_string(),
        2 => "twice".to_string(),
        n => format!("{n} times"),
    }
}

fn short_blob(b: &str) -> String {
    match Digest::parse(b) {
        Ok(d) => d.short().to_string(),
        Err(_) => b.chars().take(40).collect(),
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace("\\\\n", "\\n")
}
