//! The sync file's model as serde reads it (the same for YAML and TOML) and
//! as `schemars` describes it in `schemas/occy-sync.schema.json`. Values are
//! kept as written here; [`super::validate`] gives them meaning.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A sync file: what to copy where, through which filters.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "occy sync file")]
pub struct SyncFile {
    /// The format version; 1.
    pub version: u32,
    /// Settings every entry inherits.
    #[serde(default)]
    pub defaults: Defaults,
    /// Per registry host (`host` or `host:port`): TLS and credentials, by reference only.
    #[serde(default)]
    pub registries: BTreeMap<String, RegistrySettings>,
    /// Named filter chains that entries refer to.
    #[serde(default)]
    pub filters: BTreeMap<String, Vec<FilterStep>>,
    /// What to copy: each entry's sources go to each of its destinations.
    pub sync: Vec<SyncEntry>,
}

/// Settings every entry inherits (command-line flags override them).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Platforms to take from multi-arch indexes: `all` or a list of `os/arch[/variant]`.
    pub platforms: Option<Platforms>,
    /// Layer transfers at once per image (`-j`).
    pub parallel: Option<u16>,
    /// Images at once (`-J`).
    pub image_parallel: Option<u16>,
    /// Requests per second per registry host (0: unlimited).
    pub rate_limit: Option<f64>,
    /// Retries of transient failures.
    pub retries: Option<u32>,
    /// The check run on every written target: off, fast or full.
    pub check: Option<CheckSetting>,
    /// Encoding of layers that filters rewrite: gzip or zstd.
    pub compression: Option<String>,
    /// Require a cosign signature on every source image (entries may set their own).
    pub verify: Option<Verify>,
    /// Which referrers (signatures, SBOMs, attestations) travel with each
    /// image: `all` (the default for registry and OCI-layout destinations),
    /// `none`, or a list of artifact types (and the words `signature`,
    /// `attestation`, `sbom`).
    pub referrers: Option<Referrers>,
}

/// Signatures a source image must carry before it is synced.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// A cosign public key (ECDSA P-256 or Ed25519, PEM), relative to the sync file.
    pub cosign_key: Option<PathBuf>,
    /// Several keys: a signature by any one of them is enough.
    pub cosign_keys: Option<Vec<PathBuf>>,
    /// A keyless (sigstore) signature: a Fulcio certificate for this
    /// identity and OIDC issuer, chaining to the trusted root, logged in Rekor.
    pub keyless: Option<Keyless>,
    /// A Notation signature trusted by this trust policy and trust store.
    pub notation: Option<Notation>,
}

/// `verify: {keyless: …}`: who must have signed, verified offline.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Keyless {
    /// The OIDC issuer the certificate names (Fulcio's issuer extension),
    /// e.g. `https://token.actions.githubusercontent.com`.
    pub issuer: String,
    /// The identity (the certificate's email or URI SAN) that must have signed.
    pub identity: Option<String>,
    /// A regular expression the identity must match (instead of `identity`).
    pub identity_regexp: Option<String>,
    /// sigstore's `trusted_root.json` (Fulcio CAs, Rekor log keys),
    /// relative to the sync file.
    pub trusted_root: PathBuf,
}

/// `verify: {notation: …}`: the Notary Project trust policy and store.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notation {
    /// The trust store directory (holding `x509/ca/NAME/*.crt`), relative
    /// to the sync file.
    pub trust_store: PathBuf,
    /// The trust policy (`trustpolicy.json`, version 1.0, level `strict`).
    pub trust_policy: PathBuf,
}

/// `all`, `none`, or a list of artifact types.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "\"all\", \"none\" or a list of artifact types such as [signature, application/spdx+json]"
)]
pub enum Referrers {
    /// `all` or `none`.
    Keyword(String),
    /// Artifact types (`application/spdx+json`), or `signature`, `attestation`, `sbom`.
    List(Vec<String>),
}

/// `all`, or a list of platforms.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "\"all\" or a list of platforms such as [linux/amd64, linux/arm64]"
)]
pub enum Platforms {
    /// `all`.
    Keyword(String),
    /// `os/arch[/variant]` each.
    List(Vec<String>),
}

/// The post-run check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckSetting {
    Off,
    Fast,
    Full,
}

/// How to reach one registry. Secrets come from the environment or an auth
/// file; the sync file never holds them.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Plain HTTP, or HTTPS without certificate verification.
    #[serde(default)]
    pub insecure: bool,
    /// Environment variable holding the user name.
    pub username_env: Option<String>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// Environment variable holding a token (quay.io API and registry password).
    pub token_env: Option<String>,
    /// A containers auth.json to read credentials from.
    pub authfile: Option<PathBuf>,
    /// Directory of extra CA certificates.
    pub cert_dir: Option<PathBuf>,
}

/// One filter of a chain: a bare name, or `{name: {option: value}}`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "a filter: a name such as normalize-timestamps, or a map such as {exclude: {patterns: [\"**/.git/**\"]}}"
)]
pub enum FilterStep {
    Name(String),
    WithOptions(BTreeMap<String, BTreeMap<String, OptionValue>>),
}

/// A filter option's value.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged, expecting = "a string, number, boolean or list of strings")]
pub enum OptionValue {
    Bool(bool),
    Int(i64),
    Text(String),
    List(Vec<String>),
}

/// A named chain or an inline one.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged, expecting = "the name of a chain under `filters:`, or a list of filters")]
pub enum FilterChoice {
    Named(String),
    Chain(Vec<FilterStep>),
}

/// One destination or several.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged, expecting = "a destination reference or a list of them")]
pub enum Destinations {
    One(String),
    Many(Vec<String>),
}

/// Which tags of a repository to take: a list, or rules.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "a list of tags, or a map of rules (glob, regex, semver, exclude, latest)"
)]
pub enum TagSelection {
    List(Vec<String>),
    Rules(TagRules),
}

/// Tag rules; a tag is taken when it passes every rule given.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TagRules {
    /// Tags taken as they are (besides those the rules select).
    pub names: Option<Vec<String>>,
    /// Shell-style pattern(s) such as `3.*`.
    pub glob: Option<Patterns>,
    /// A regular expression the whole tag must match.
    pub regex: Option<String>,
    /// A semver range such as `>=3.18, <4`; tags that are not versions are skipped.
    pub semver: Option<String>,
    /// Patterns of tags to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Keep only the N newest (by semver, else by name).
    pub latest: Option<usize>,
}

/// One pattern or several.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged, expecting = "a pattern or a list of patterns")]
pub enum Patterns {
    One(String),
    Many(Vec<String>),
}

impl Patterns {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Patterns::One(p) => std::slice::from_ref(p),
            Patterns::Many(v) => v,
        }
    }
}

/// One entry of `sync:`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncEntry {
    /// The source: registry://, quay://, oci://, tar://, dir://, docker://;
    /// repository and tag globs expand to many images.
    pub from: String,
    /// Which tags of the source repository (default: the tag in `from`, else every tag).
    pub tags: Option<TagSelection>,
    /// Platforms for this entry (overrides `defaults.platforms`).
    pub platforms: Option<Platforms>,
    /// A chain name from `filters:`, or an inline list of filters.
    pub filters: Option<FilterChoice>,
    /// Require a signature: cosign key, keyless or Notation (overrides `defaults.verify`).
    pub verify: Option<Verify>,
    /// Which referrers travel with the images (overrides `defaults.referrers`).
    pub referrers: Option<Referrers>,
    /// Destination(s); may use {registry}, {repo}, {name}, {tag}, {platform}.
    pub to: Destinations,
}

impl Destinations {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Destinations::One(p) => std::slice::from_ref(p),
            Destinations::Many(v) => v,
        }
    }
}

/// The JSON Schema of the sync file, as `occy schema` prints it.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(SyncFile);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
