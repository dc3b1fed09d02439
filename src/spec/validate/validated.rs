//! The validated sync file: [`SyncSpec`] and its parts (settings, host
//! access, entries, destination templates), as the planner reads them.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use super::tags::TagFilter;
use crate::filter::FilterChain;
use crate::image::cosign::PublicKey;
use crate::image::Compression;
use crate::reference::Reference;
use crate::source::PlatformSelection;
use crate::spec::diagnostic::SpecSource;
use crate::spec::located::Node;
use crate::spec::model::CheckSetting;

/// The fields a destination template may name.
pub const TEMPLATE_FIELDS: [&str; 5] = ["registry", "repo", "name", "tag", "platform"];

/// A validated sync file.
#[derive(Debug, Clone)]
pub struct SyncSpec {
    /// The file's text and name, to point into it later (clashing targets).
    pub source: SpecSource,
    pub root: Node,
    /// sha256 of the file's bytes: a saved plan is applied only to the same file.
    pub hash: String,
    pub settings: Settings,
    /// The sync file's directory: relative paths in references start there.
    pub base_dir: PathBuf,
    /// Per registry host: how to reach it.
    pub registries: BTreeMap<String, HostAccess>,
    pub entries: Vec<Entry>,
}

/// `defaults:` as values.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub platforms: Option<PlatformSelection>,
    pub parallel: Option<u16>,
    pub image_parallel: Option<u16>,
    pub rate_limit: Option<f64>,
    pub retries: Option<u32>,
    pub check: Option<CheckSetting>,
    pub compression: Option<Compression>,
    /// `defaults.verify`.
    pub verify: Option<VerifyKeys>,
    pub referrers: Option<ReferrerPolicy>,
}

/// What must have signed a source image (`verify:`): one of the keys, or
/// a keyless signature the keyless policy accepts, or a Notation signature
/// the trust policy accepts — any one is enough.
#[derive(Debug, Clone, Default)]
pub struct VerifyKeys {
    pub keys: Vec<PublicKey>,
    pub keyless: Option<std::sync::Arc<crate::image::sigstore::KeylessPolicy>>,
    pub notation: Option<std::sync::Arc<crate::image::notation::NotationPolicy>>,
}

impl VerifyKeys {
    /// The keys' names for messages: `keys/a.pub` or `keys/a.pub or keys/b.pub`.
    pub fn names(&self) -> String {
        self.keys
            .iter()
            .map(|k| k.name.as_str())
            .collect::<Vec<_>>()
            .join(" or ")
    }

    /// What verification requires, for the plan: `a cosign signature by
    /// keys/a.pub, or a keyless signature by alice@… (issuer …, trusted root …)`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.keys.is_empty() {
            parts.push(format!("a cosign signature by {}", self.names()));
        }
        if let Some(k) = &self.keyless {
            parts.push(format!("a {}", k.describe()));
        }
        if let Some(n) = &self.notation {
            parts.push(format!("a {}", n.describe()));
        }
        parts.join(", or ")
    }
}

/// Which referrers of an image are copied with it (`referrers:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferrerPolicy {
    /// Every referrer.
    All,
    /// None.
    None,
    /// Those of these artifact types; `signature`, `attestation` and `sbom`
    /// name cosign's tags and the artifact types known to be such.
    Types(Vec<String>),
}

impl ReferrerPolicy {
    /// Whether a referrer of `artifact_type` (and, for a cosign tag or a
    /// known type, `kind`: `signature`, `attestation`, `sbom`) is copied.
    pub fn takes(&self, artifact_type: Option<&str>, kind: Option<&str>) -> bool {
        match self {
            ReferrerPolicy::All => true,
            ReferrerPolicy::None => false,
            ReferrerPolicy::Types(list) => list
                .iter()
                .any(|t| Some(t.as_str()) == artifact_type || Some(t.as_str()) == kind),
        }
    }
}

/// How to reach one registry host, secrets read from the environment.
#[derive(Clone, Default)]
pub struct HostAccess {
    pub insecure: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub authfile: Option<PathBuf>,
    pub cert_dir: Option<PathBuf>,
}

impl std::fmt::Debug for HostAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostAccess")
            .field("insecure", &self.insecure)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("authfile", &self.authfile)
            .finish()
    }
}

/// One `sync:` entry, validated.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its position under `sync:`.
    pub index: usize,
    pub from: Reference,
    pub from_span: Range<usize>,
    pub tags: Option<TagFilter>,
    pub platforms: Option<PlatformSelection>,
    pub chain: FilterChain,
    /// The chain's name, or `inline`, for the plan.
    pub chain_name: Option<String>,
    /// The keys its source images must be signed by (its own `verify`, else `defaults.verify`).
    pub verify: Option<VerifyKeys>,
    /// `referrers:` of the entry, else of `defaults` (None: neither says).
    pub referrers: Option<ReferrerPolicy>,
    pub to: Vec<DestTemplate>,
}

/// A destination as written, possibly with `{field}` templates.
#[derive(Debug, Clone)]
pub struct DestTemplate {
    pub text: String,
    pub span: Range<usize>,
}

/// The values a template is filled with.
#[derive(Debug, Clone, Default)]
pub struct TemplateFields {
    pub registry: String,
    pub repo: String,
    pub name: String,
    pub tag: String,
    pub platform: String,
}

impl DestTemplate {
    /// The fields the template names.
    pub fn fields(&self) -> Vec<String> {
        template_fields(&self.text).into_iter().map(|(f, _)| f).collect()
    }

    /// Whether the template names `field`.
    pub fn uses(&self, field: &str) -> bool {
        self.fields().iter().any(|f| f == field)
    }

    /// The destination for one image.
    pub fn render(&self, v: &TemplateFields) -> String {
        self.text
            .replace("{registry}", &v.registry)
            .replace("{repo}", &v.repo)
            .replace("{name}", &v.name)
            .replace("{tag}", &v.tag)
            .replace("{platform}", &v.platform.replace('/', "-"))
    }
}

/// `{field}` occurrences with their byte offsets in `text`.
pub(crate) fn template_fields(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut base = 0;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else { break };
        out.push((rest[open + 1..open + close].to_string(), base + open));
        base += open + close + 1;
        rest = &rest[open + close + 1..];
    }
    out
}
