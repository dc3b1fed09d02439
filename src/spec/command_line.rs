//! A one-entry sync spec made from a command line, so the one-shot commands
//! (`occy process`, `occy info`) go through the same expand, plan and apply
//! stages as a sync file. Problems point into the command line as typed.

use std::path::{Path, PathBuf};

use super::located::{Node, Value};
use super::validate::{template_fields, TEMPLATE_FIELDS};
use super::{DestTemplate, Entry, Settings, SpecProblem, SpecSource, SyncSpec, TemplateFields};
use crate::error::{Error, Result};
use crate::filter::FilterChain;
use crate::reference::{Reference, RegistryRef};
use crate::source::PlatformSelection;

/// Whether a source reference can name many images: a `quay://` listing or
/// a registry repository or tag with glob characters.
pub fn names_many(r: &Reference) -> bool {
    let glob = |s: &str| s.contains(['*', '?', '[', '{']);
    match r {
        Reference::Quay { .. } => true,
        Reference::Registry(RegistryRef {
            repository,
            tag,
            digest,
            ..
        }) => digest.is_none() && (glob(repository) || tag.as_deref().is_some_and(glob)),
        _ => false,
    }
}

/// What the command line says: `SOURCE [DESTINATION]`, its filters and platforms.
pub struct OneShot<'a> {
    /// The command, for messages (`occy process`).
    pub command: &'a str,
    pub source: &'a str,
    pub destination: Option<&'a str>,
    pub chain: FilterChain,
    /// The `-f` texts, shown in plans as the chain's name.
    pub filter_texts: &'a [String],
    pub platforms: PlatformSelection,
}

impl OneShot<'_> {
    /// The spec of one entry: `from: SOURCE`, `to: DESTINATION`. A
    /// destination every image of a many-image source would overwrite (a
    /// single tarball or bundle) is refused unless it has a template.
    pub fn spec(&self) -> Result<SyncSpec> {
        let prefix = format!("{} ", self.command);
        let mut text = format!("{prefix}{}", self.source);
        let from_span = prefix.len()..text.len();
        let to_span = self.destination.map(|d| {
            text.push(' ');
            let start = text.len();
            text.push_str(d);
            start..text.len()
        });
        let source = SpecSource::new(Path::new(super::diagnostic::COMMAND_LINE), text);
        let from = Reference::parse(self.source)?;
        if let Reference::Oci { oci_format: true, .. } = from {
            return Err(Error::usage(format!(
                "{}: ?format=oci converts what occy writes into an OCI layout; it applies to a destination, not a source",
                self.source
            )));
        }
        let mut to = Vec::new();
        if let (Some(d), Some(span)) = (self.destination, to_span) {
            for (field, offset) in template_fields(d) {
                if !TEMPLATE_FIELDS.contains(&field.as_str()) {
                    let start = span.start + offset;
                    return Err(source.error(
                        SpecProblem::new(
                            format!("unknown template field {{{field}}} in {d:?}"),
                            start..start + field.len() + 2,
                            "unknown field",
                        )
                        .help("fields are {registry}, {repo}, {name}, {tag}, {platform}"),
                    ));
                }
            }
            let templated = !template_fields(d).is_empty();
            // A destination that cannot become a reference whatever the
            // image fails now, not once per image.
            let sample = DestTemplate {
                text: d.to_string(),
                span: span.clone(),
            }
            .render(&TemplateFields {
                registry: "registry".into(),
                repo: "org/repo".into(),
                name: "repo".into(),
                tag: "tag".into(),
                platform: "linux-amd64".into(),
            });
            let parsed = Reference::parse(&sample)?;
            if let Some(e) = crate::sink::source_only_part(&parsed) {
                return Err(e);
            }
            if names_many(&from) && !templated {
                if let Some(what) = crate::sink::kind::of(&parsed).one_image {
                    return Err(source.error(
                        SpecProblem::new(
                            format!(
                                "{} can name many images, and every one of them would overwrite {what}",
                                self.source
                            ),
                            span,
                            "the same place for every image",
                        )
                        .help(format!(
                            "give each image its own output with a template, e.g. {}",
                            example_template(d)
                        )),
                    ));
                }
            }
            to.push(DestTemplate {
                text: d.to_string(),
                span,
            });
        }
        let chain_name = (!self.filter_texts.is_empty()).then(|| self.filter_texts.join(" "));
        Ok(SyncSpec {
            root: Node {
                span: 0..0,
                value: Value::Null,
            },
            hash: String::new(),
            settings: Settings::default(),
            base_dir: PathBuf::from("."),
            registries: Default::default(),
            entries: vec![Entry {
                index: 0,
                from,
                from_span,
                tags: None,
                platforms: Some(self.platforms.clone()),
                chain: self.chain.clone(),
                chain_name,
                verify: None,
                // A one-shot copy takes the image alone.
                referrers: Some(crate::spec::ReferrerPolicy::None),
                to,
            }],
            source,
        })
    }
}

/// `tar:///out/x.tar` → `tar:///out/{name}-{tag}.tar`.
fn example_template(dest: &str) -> String {
    let (stem, ext) = match dest.rsplit_once('.') {
        Some((s, e)) if !e.contains('/') => (s, format!(".{e}")),
        _ => (dest, String::new()),
    };
    match stem.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{{name}}-{{tag}}{ext}"),
        None => format!("{{name}}-{{tag}}{ext}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shot<'a>(src: &'a str, dst: &'a str) -> OneShot<'a> {
        OneShot {
            command: "occy process",
            source: src,
            destination: Some(dst),
            chain: FilterChain::default(),
            filter_texts: &[],
            platforms: PlatformSelection::Default,
        }
    }

    #[test]
    fn globs_and_quay_name_many_images() {
        for many in [
            "registry://h/org/*:v1",
            "registry://h/org/app:v*",
            "quay://org/*:latest",
        ] {
            assert!(names_many(&Reference::parse(many).unwrap()), "{many}");
        }
        for one in ["registry://h/org/app:v1", "tar:///x.tar", "oci:///l:t"] {
            assert!(!names_many(&Reference::parse(one).unwrap()), "{one}");
        }
    }

    #[test]
    fn one_tarball_for_many_images_is_refused_with_a_template_to_use() {
        let e = shot("registry://h/org/*:v1", "tar:///out/all.tar").spec().unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(msg.contains("command line:1:36"), "{msg}");
        assert!(msg.contains("tar:///out/{name}-{tag}.tar"), "{msg}");
        assert!(shot("registry://h/org/*:v1", "tar:///out/{name}-{tag}.tar")
            .spec()
            .is_ok());
        assert!(shot("registry://h/org/app:v1", "tar:///out/all.tar").spec().is_ok());
    }

    #[test]
    fn an_unknown_template_field_is_pointed_at() {
        let e = shot("registry://h/org/*:v1", "tar:///out/{nmae}.tar")
            .spec()
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("unknown template field {nmae}"), "{msg}");
    }
}
