//! The four formats of `occy mirror-config`: containerd's `hosts.toml`
//! tree, a containers `registries.conf` (podman, CRI-O, skopeo, buildah),
//! and OpenShift's `ImageDigestMirrorSet` / `ImageTagMirrorSet`. Each
//! writes the mappings it can express and leaves out, with the reason, the
//! ones it cannot.

use std::collections::BTreeMap;

use super::{LeftOut, Mapping};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// containerd `HOST/hosts.toml` files (`config_path`, `ctr --hosts-dir`)
    Containerd,
    /// a containers-registries.conf(5) file for podman, CRI-O, skopeo, buildah
    #[value(name = "registries.conf")]
    RegistriesConf,
    /// an OpenShift/Kubernetes ImageDigestMirrorSet (config.openshift.io/v1)
    Idms,
    /// an OpenShift/Kubernetes ImageTagMirrorSet (config.openshift.io/v1)
    Itms,
}

/// What one format makes of the mappings.
#[derive(Debug, Default)]
pub struct Output {
    /// Files, by path relative to the output directory, in writing order.
    pub files: Vec<(String, String)>,
    /// Mappings this format cannot express.
    pub left_out: Vec<LeftOut>,
    /// Things the user must do for the files to work (an insecure mirror
    /// the cluster has to allow).
    pub notes: Vec<String>,
}

/// Renders `mappings` as `format`. `name` (the sync file's stem) names the
/// files and the Kubernetes objects; `origin` is quoted in their comments.
pub fn render(format: Format, mappings: &[Mapping], name: &str, origin: &str) -> Output {
    match format {
        Format::Containerd => containerd(mappings, origin),
        Format::RegistriesConf => registries_conf(mappings, name, origin),
        Format::Idms => mirror_set(mappings, name, origin, true),
        Format::Itms => mirror_set(mappings, name, origin, false),
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A YAML double-quoted scalar (a JSON string is one).
fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn left(m: &Mapping, why: impl Into<String>) -> LeftOut {
    LeftOut {
        what: format!("{} for {}", m.describe, m.source()),
        why: why.into(),
    }
}

/// Groups items by a key, keys in order of first appearance.
fn grouped<'a, K: Ord + Clone>(
    items: impl IntoIterator<Item = &'a Mapping>,
    key: impl Fn(&Mapping) -> K,
) -> Vec<(K, Vec<&'a Mapping>)> {
    let mut order: Vec<K> = Vec::new();
    let mut groups: BTreeMap<K, Vec<&Mapping>> = BTreeMap::new();
    for m in items {
        let k = key(m);
        if !groups.contains_key(&k) {
            order.push(k.clone());
        }
        groups.entry(k).or_default().push(m);
    }
    order
        .into_iter()
        .map(|k| {
            let v = groups.remove(&k).unwrap_or_default();
            (k, v)
        })
        .collect()
}

/// containerd: `HOST/hosts.toml` per upstream host. A host entry serves
/// every repository of the upstream host under the same path, optionally
/// behind a prefix (`override_path`), so only a mapping that puts a prefix
/// before the upstream repository fits; one that renames tags may serve
/// pulls by digest only (`capabilities = ["pull"]`, no `resolve`).
fn containerd(mappings: &[Mapping], origin: &str) -> Output {
    let mut out = Output::default();
    let mut fitting = Vec::new();
    for m in mappings {
        let prefix = if m.source_path.is_empty() {
            Some(m.mirror_path.clone())
        } else if m.mirror_path == m.source_path {
            Some(String::new())
        } else {
            m.mirror_path
                .strip_suffix(&format!("/{}", m.source_path))
                .map(str::to_string)
        };
        match prefix {
            Some(p) => fitting.push((m, p)),
            None => out.left_out.push(left(
                m,
                format!(
                    "containerd's hosts.toml can only put a path before the upstream repository, \
                     and {} → {} renames it",
                    m.source(),
                    m.mirror()
                ),
            )),
        }
    }
    for (host, group) in grouped(fitting.iter().map(|(m, _)| *m), |m| m.source_host.clone()) {
        // Host entries in order; one URL said twice keeps the narrower capabilities.
        let mut hosts: Vec<(String, bool, bool)> = Vec::new(); // (url, resolve, skip_verify)
        for m in group {
            let prefix = fitting
                .iter()
                .find(|(f, _)| std::ptr::eq(*f, m))
                .map(|(_, p)| p.clone())
                .unwrap_or_default();
            let path = if prefix.is_empty() {
                String::new()
            } else {
                format!("/v2/{prefix}")
            };
            let mut urls = vec![(format!("https://{}{path}", m.mirror_host), m.insecure)];
            if m.insecure {
                urls.push((format!("http://{}{path}", m.mirror_host), false));
            }
            for (url, skip_verify) in urls {
                match hosts.iter_mut().find(|(u, ..)| *u == url) {
                    Some(h) => h.1 &= m.tags,
                    None => hosts.push((url, m.tags, skip_verify)),
                }
            }
        }
        // Docker Hub's name is docker.io, its API host registry-1.docker.io.
        let server = match host.as_str() {
            "docker.io" => "https://registry-1.docker.io".to_string(),
            h => format!("https://{h}"),
        };
        let mut text = format!(
            "# Written by occy mirror-config from {origin}: pulls of {host} try these mirrors first.\n\
             server = {}\n",
            toml_str(&server)
        );
        for (url, resolve, skip_verify) in hosts {
            text.push_str(&format!("\n[host.{}]\n", toml_str(&url)));
            text.push_str(if resolve {
                "  capabilities = [\"pull\", \"resolve\"]\n"
            } else {
                "  # tags are renamed on this mirror: pulls by digest only\n  capabilities = [\"pull\"]\n"
            });
            if url.contains("/v2/") {
                text.push_str("  override_path = true\n");
            }
            if skip_verify {
                text.push_str("  skip_verify = true\n");
            }
        }
        out.files.push((format!("{host}/hosts.toml"), text));
    }
    out
}

/// registries.conf: a `[[registry]]` per upstream prefix with its
/// `[[registry.mirror]]`s; a prefix with a tag-renaming mapping is mirrored
/// for pulls by digest only.
fn registries_conf(mappings: &[Mapping], name: &str, origin: &str) -> Output {
    let mut out = Output::default();
    if mappings.is_empty() {
        return out;
    }
    let mut text = format!(
        "# Written by occy mirror-config from {origin}.\n\
         # A drop-in for /etc/containers/registries.conf.d/, or a whole file for CONTAINERS_REGISTRIES_CONF.\n"
    );
    for (source, group) in grouped(mappings, Mapping::source) {
        text.push_str(&format!(
            "\n[[registry]]\nprefix = {}\nlocation = {}\n",
            toml_str(&source),
            toml_str(&source)
        ));
        if group.iter().any(|m| !m.tags) {
            text.push_str("# tags are renamed on a mirror: pulls by digest only\nmirror-by-digest-only = true\n");
        }
        let mut seen = Vec::new();
        for m in group {
            let mirror = m.mirror();
            if seen.contains(&mirror) {
                continue;
            }
            text.push_str(&format!("\n[[registry.mirror]]\nlocation = {}\n", toml_str(&mirror)));
            if m.insecure {
                text.push_str("insecure = true\n");
            }
            seen.push(mirror);
        }
    }
    out.files.push((format!("occy-{name}.conf"), text));
    out
}

/// An ImageDigestMirrorSet (`digest`) or ImageTagMirrorSet: one
/// `source`/`mirrors` pair per upstream prefix.
fn mirror_set(mappings: &[Mapping], name: &str, origin: &str, digest: bool) -> Output {
    let mut out = Output::default();
    let mut fitting = Vec::new();
    for m in mappings {
        match (&m.digest_gap, digest, m.tags) {
            (Some(gap), true, _) => out.left_out.push(left(m, gap.clone())),
            (_, false, false) => out.left_out.push(left(
                m,
                "it renames tags, so a pull by the upstream tag would miss on the mirror",
            )),
            _ => fitting.push(m),
        }
    }
    if fitting.is_empty() {
        return out;
    }
    let (kind, list, suffix) = if digest {
        ("ImageDigestMirrorSet", "imageDigestMirrors", "idms")
    } else {
        ("ImageTagMirrorSet", "imageTagMirrors", "itms")
    };
    let mut text = format!(
        "# Written by occy mirror-config from {origin}; apply with kubectl apply -f or oc apply -f.\n\
         apiVersion: config.openshift.io/v1\n\
         kind: {kind}\n\
         metadata:\n  name: {}\n\
         spec:\n  {list}:\n",
        yaml_str(&format!("occy-{name}"))
    );
    let mut insecure = Vec::new();
    for (source, group) in grouped(fitting, Mapping::source) {
        text.push_str(&format!("  - source: {}\n    mirrors:\n", yaml_str(&source)));
        let mut seen = Vec::new();
        for m in group {
            let mirror = m.mirror();
            if !seen.contains(&mirror) {
                text.push_str(&format!("    - {}\n", yaml_str(&mirror)));
                seen.push(mirror);
            }
            if m.insecure && !insecure.contains(&m.mirror_host) {
                insecure.push(m.mirror_host.clone());
            }
        }
    }
    for host in insecure {
        out.notes.push(format!(
            "the mirror {host} is marked insecure: a {kind} cannot say so; list it under \
             spec.registrySources.insecureRegistries of the cluster's image.config.openshift.io/cluster"
        ));
    }
    out.files.push((format!("occy-{name}-{suffix}.yaml"), text));
    out
}
