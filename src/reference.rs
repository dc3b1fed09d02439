//! Image references: the one parser for every URI occy accepts
//! (`registry://`, `tar://`, `oci://`, `dir://`, `docker://`, `bundle://`,
//! `quay://`, `archive://`). Unknown schemes, unknown options and malformed parts are
//! errors that quote the offending text.

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::image::Digest;

/// A registry image: `registry://host[:port]/path/to/repo[:tag][@sha256:…]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryRef {
    /// `host` or `host:port`, as written.
    pub host: String,
    /// The repository path, namespaces of any depth kept (`library/alpine`).
    pub repository: String,
    /// The tag, if one was given.
    pub tag: Option<String>,
    /// The digest, if one was given (it pins the image; a tag beside it is informational).
    pub digest: Option<Digest>,
}

impl RegistryRef {
    /// The tag or digest to ask the registry for: digest first, else tag, else `latest`.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The tag, defaulting to `latest`.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// `host/repo` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.host, self.repository)
    }

    /// Whether repository or tag contain glob characters (to be expanded).
    pub fn is_glob(&self) -> bool {
        has_glob(&self.repository) || self.tag.as_deref().is_some_and(has_glob)
    }
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// One parsed reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A Distribution-API registry.
    Registry(RegistryRef),
    /// A docker-save archive.
    Tar { path: PathBuf },
    /// An OCI image layout directory, optionally with a tag (`ref.name`).
    /// `oci_format` (`?format=oci`, destinations only) converts Docker v2
    /// manifests to OCI media types on the way in.
    Oci {
        path: PathBuf,
        tag: Option<String>,
        oci_format: bool,
    },
    /// occystrap's directory format.
    Dir {
        path: PathBuf,
        unique_names: bool,
        expand: bool,
        /// `?image=NAME[:TAG]`: which image of a shared (`unique_names`)
        /// directory to read (sources only).
        image: Option<String>,
    },
    /// An image in a Docker Engine (or podman) daemon, named as Docker
    /// names it: `[DOMAIN[:PORT]/]PATH[:TAG][@DIGEST]`.
    Docker {
        /// `[domain[:port]/]path` as written (`127.0.0.1:5000/team/app`).
        name: String,
        /// The tag, if one was given (see [`docker_image`]).
        tag: Option<String>,
        /// The digest, if one was given: it pins the image (sources only).
        digest: Option<Digest>,
        socket: Option<PathBuf>,
    },
    /// An OCI runtime bundle (`config.json` + `rootfs/`).
    Bundle { path: PathBuf },
    /// A directory of transfer archives (`archive:///DIR`, see
    /// `crate::archive`), or one archive of it (`archive:///DIR/0002`, as a
    /// source). `volume_size` (`?volume_size=700MiB`) splits a new archive
    /// into volumes of at most that many bytes; `full` (`?full=true`)
    /// writes a whole archive instead of only what earlier ones did not
    /// carry.
    Archive {
        path: PathBuf,
        volume_size: Option<u64>,
        full: bool,
    },
    /// quay.io organisation expansion: `quay://org[/glob][:tag][?since=…&token=…]`.
    Quay {
        org: String,
        repo_glob: Option<String>,
        tag: Option<String>,
        since: Option<String>,
        token: Option<String>,
    },
}

/// One URI scheme and what it can be used as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    /// The name before `://`.
    pub name: &'static str,
    /// Commands accept it as a source.
    pub source: bool,
    /// It only names images to expand (never read directly, like `quay://`).
    pub expands: bool,
    /// Commands accept it as a destination.
    pub destination: bool,
}

/// Every scheme occy knows, in the order help texts and errors list them:
/// the one definition that `--help`, error messages and the parser share.
pub const SCHEMES: &[Scheme] = &[
    Scheme {
        name: "registry",
        source: true,
        expands: false,
        destination: true,
    },
    Scheme {
        name: "tar",
        source: true,
        expands: false,
        destination: true,
    },
    Scheme {
        name: "oci",
        source: true,
        expands: false,
        destination: true,
    },
    Scheme {
        name: "dir",
        source: true,
        expands: false,
        destination: true,
    },
    Scheme {
        name: "docker",
        source: true,
        expands: false,
        destination: true,
    },
    Scheme {
        name: "bundle",
        source: false,
        expands: false,
        destination: true,
    },
    Scheme {
        name: "quay",
        source: true,
        expands: true,
        destination: false,
    },
    Scheme {
        name: "archive",
        source: true,
        expands: true,
        destination: true,
    },
];

/// `registry://, tar://, …` for the schemes `pick` keeps.
fn scheme_list(pick: impl Fn(&Scheme) -> bool) -> String {
    SCHEMES
        .iter()
        .filter(|s| pick(s))
        .map(|s| format!("{}://", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every scheme, for messages about an unknown one.
pub fn all_schemes() -> String {
    scheme_list(|_| true)
}

/// The schemes a command accepts as its source (`quay://` included).
pub fn source_schemes() -> String {
    scheme_list(|s| s.source)
}

/// The schemes a source can be opened from directly (after expansion).
pub fn readable_schemes() -> String {
    scheme_list(|s| s.source && !s.expands)
}

/// The schemes a command accepts as its destination.
pub fn destination_schemes() -> String {
    scheme_list(|s| s.destination)
}

/// The longest reference accepted (paths and options included).
const MAX_REFERENCE_LEN: usize = 4096;

impl Reference {
    /// Parses a reference URI.
    pub fn parse(input: &str) -> Result<Reference> {
        if input.len() > MAX_REFERENCE_LEN {
            let head: String = input.chars().take(60).collect();
            return Err(Error::usage(format!(
                "reference {head:?}… is {} bytes long; a reference is at most {MAX_REFERENCE_LEN} bytes (a registry repository name at most 255)",
                input.len()
            )));
        }
        let Some((scheme, rest)) = input.split_once("://") else {
            return Err(Error::usage(format!(
                "invalid reference {input:?}: expected SCHEME://..., where SCHEME is one of {}",
                all_schemes()
            )));
        };
        if !SCHEMES.iter().any(|s| s.name == scheme) {
            return Err(unknown_scheme(scheme, input));
        }
        let (body, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let mut opts = Options::parse(input, query)?;
        let r = match scheme {
            "registry" => Reference::Registry(parse_registry(input, body)?),
            "tar" => Reference::Tar {
                path: parse_path(input, body)?,
            },
            "oci" => {
                let (path, tag) = split_path_tag(body);
                if let Some(t) = &tag {
                    validate_tag(input, t)?;
                }
                Reference::Oci {
                    path: parse_path(input, path)?,
                    tag,
                    oci_format: parse_format(input, opts.take("format"))?,
                }
            }
            "dir" => {
                let image = opts.take("image");
                if let Some(i) = &image {
                    let (name, tag) = split_path_tag(i);
                    if name.is_empty() || tag.as_deref().is_some_and(str::is_empty) {
                        return Err(Error::usage(format!(
                            "invalid value {i:?} for option \"image\" in {input:?}: expected NAME[:TAG], as the directory's catalog.json lists it"
                        )));
                    }
                }
                Reference::Dir {
                    path: parse_path(input, body)?,
                    unique_names: opts.take_bool("unique_names")?,
                    expand: opts.take_bool("expand")?,
                    image,
                }
            }
            "docker" => {
                let (name, tag, digest) = parse_docker_name(input, body)?;
                Reference::Docker {
                    name,
                    tag,
                    digest,
                    socket: opts.take("socket").map(PathBuf::from),
                }
            }
            "bundle" => Reference::Bundle {
                path: parse_path(input, body)?,
            },
            "archive" => Reference::Archive {
                path: parse_path(input, body)?,
                volume_size: match opts.take("volume_size") {
                    Some(v) => Some(parse_volume_size(input, &v)?),
                    None => None,
                },
                full: opts.take_bool("full")?,
            },
            "quay" => {
                let (path, tag) = split_path_tag(body);
                let (org, repo_glob) = match path.split_once('/') {
                    Some((o, r)) => (o.to_string(), Some(r.to_string()).filter(|r| !r.is_empty())),
                    None => (path.to_string(), None),
                };
                let org_ok = org.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && org
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
                let glob_ok = repo_glob.as_deref().is_none_or(|g| {
                    g.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-/*?[]{},!".contains(c))
                });
                let tag_ok = tag.as_deref().is_none_or(|t| {
                    !t.is_empty()
                        && t.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_.-*?[]{},!".contains(c))
                });
                if !(org_ok && glob_ok && tag_ok) {
                    return Err(Error::usage(format!(
                        "invalid reference {input:?}: expected quay://ORG[/REPO-GLOB][:TAG], the organisation in lowercase letters, digits and _ . -"
                    )));
                }
                let since = opts.take("since");
                if let Some(s) = &since {
                    validate_date(input, s)?;
                }
                Reference::Quay {
                    org,
                    repo_glob,
                    tag,
                    since,
                    token: opts.take("token"),
                }
            }
            other => return Err(unknown_scheme(other, input)),
        };
        opts.finish(input, scheme)?;
        Ok(r)
    }

    /// The registry reference, if this is one.
    pub fn as_registry(&self) -> Option<&RegistryRef> {
        match self {
            Reference::Registry(r) => Some(r),
            _ => None,
        }
    }

    /// The registry reference, if this is one, to change.
    pub fn as_registry_mut(&mut self) -> Option<&mut RegistryRef> {
        match self {
            Reference::Registry(r) => Some(r),
            _ => None,
        }
    }

    /// The reference with `tag` spelled out where it names an image by tag
    /// and gives none (a registry repository without tag or digest, an OCI
    /// layout without tag): the tag a destination keeps from its source.
    pub fn with_default_tag(self, tag: &str) -> Reference {
        match self {
            Reference::Registry(mut r) if r.tag.is_none() && r.digest.is_none() => {
                r.tag = Some(tag.to_string());
                Reference::Registry(r)
            }
            Reference::Oci {
                path,
                tag: None,
                oci_format,
            } => Reference::Oci {
                path,
                tag: Some(tag.to_string()),
                oci_format,
            },
            other => other,
        }
    }

    /// The tag or digest a store is asked for the image this names: a
    /// registry's digest, else its tag, else `latest`; a layout's tag. None
    /// when it names its image otherwise.
    pub fn store_reference(&self) -> Option<String> {
        match self {
            Reference::Registry(r) => Some(r.reference()),
            Reference::Oci { tag, .. } => tag.clone(),
            _ => None,
        }
    }

    /// The image tagged `tag` beside the one this names: in its registry
    /// repository or OCI layout. None for references that hold no tags.
    pub fn tagged_beside(&self, tag: &str) -> Option<Reference> {
        match self {
            Reference::Registry(r) => {
                let mut r = r.clone();
                r.tag = Some(tag.to_string());
                r.digest = None;
                Some(Reference::Registry(r))
            }
            Reference::Oci { path, oci_format, .. } => Some(Reference::Oci {
                path: path.clone(),
                tag: Some(tag.to_string()),
                oci_format: *oci_format,
            }),
            _ => None,
        }
    }

    /// The reference as its tag names it: a registry image with both a tag
    /// and a digest without the digest (a run pinned to digests names its
    /// sources like the run that pinned them); any other as it is.
    pub fn by_tag(&self) -> Reference {
        match self {
            Reference::Registry(r) if r.tag.is_some() && r.digest.is_some() => {
                let mut r = r.clone();
                r.digest = None;
                Reference::Registry(r)
            }
            other => other.clone(),
        }
    }

    /// The scheme name.
    pub fn scheme(&self) -> &'static str {
        match self {
            Reference::Registry(_) => "registry",
            Reference::Tar { .. } => "tar",
            Reference::Oci { .. } => "oci",
            Reference::Dir { .. } => "dir",
            Reference::Docker { .. } => "docker",
            Reference::Bundle { .. } => "bundle",
            Reference::Archive { .. } => "archive",
            Reference::Quay { .. } => "quay",
        }
    }

    /// A short human name of the image (repository or path) for messages.
    pub fn image_name(&self) -> String {
        match self {
            Reference::Registry(r) => r.name(),
            Reference::Tar { path }
            | Reference::Bundle { path }
            | Reference::Dir { path, .. }
            | Reference::Archive { path, .. }
            | Reference::Oci { path, .. } => path.display().to_string(),
            Reference::Docker { name, .. } => name.clone(),
            Reference::Quay { org, repo_glob, .. } => format!("quay.io/{org}/{}", repo_glob.as_deref().unwrap_or("*")),
        }
    }

    /// The tag the reference names, if any.
    pub fn tag(&self) -> Option<&str> {
        match self {
            Reference::Registry(r) => r.tag.as_deref(),
            Reference::Oci { tag, .. } | Reference::Quay { tag, .. } => tag.as_deref(),
            Reference::Docker { tag, digest, .. } => match (tag, digest) {
                (Some(t), _) => Some(t),
                (None, Some(_)) => None,
                (None, None) => Some("latest"),
            },
            _ => None,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Registry(r) => write!(f, "registry://{r}"),
            Reference::Tar { path } => write!(f, "tar://{}", path.display()),
            Reference::Oci { path, tag, oci_format } => {
                write!(f, "oci://{}", path.display())?;
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                if *oci_format {
                    write!(f, "?format=oci")?;
                }
                Ok(())
            }
            Reference::Dir {
                path,
                unique_names,
                expand,
                image,
            } => {
                write!(f, "dir://{}", path.display())?;
                let mut q = Vec::new();
                if *unique_names {
                    q.push("unique_names=true".to_string());
                }
                if *expand {
                    q.push("expand=true".to_string());
                }
                if let Some(i) = image {
                    q.push(format!(
                        "image={}",
                        url::form_urlencoded::byte_serialize(i.as_bytes()).collect::<String>()
                    ));
                }
                if !q.is_empty() {
                    write!(f, "?{}", q.join("&"))?;
                }
                Ok(())
            }
            Reference::Docker {
                name,
                tag,
                digest,
                socket,
            } => {
                write!(f, "docker://{name}")?;
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                if let Some(d) = digest {
                    write!(f, "@{d}")?;
                }
                if let Some(s) = socket {
                    write!(f, "?socket={}", s.display())?;
                }
                Ok(())
            }
            Reference::Bundle { path } => write!(f, "bundle://{}", path.display()),
            Reference::Archive {
                path,
                volume_size,
                full,
            } => {
                write!(f, "archive://{}", path.display())?;
                let mut q = Vec::new();
                if let Some(v) = volume_size {
                    q.push(format!("volume_size={}", size_text(*v)));
                }
                if *full {
                    q.push("full=true".to_string());
                }
                if !q.is_empty() {
                    write!(f, "?{}", q.join("&"))?;
                }
                Ok(())
            }
            Reference::Quay {
                org,
                repo_glob,
                tag,
                since,
                ..
            } => {
                write!(f, "quay://{org}")?;
                if let Some(r) = repo_glob {
                    write!(f, "/{r}")?;
                }
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                if let Some(s) = since {
                    write!(f, "?since={s}")?;
                }
                Ok(())
            }
        }
    }
}

/// `?key=value&key=value` options, consumed as the scheme reads them; what is
/// left over at the end is an error.
struct Options(Vec<(String, String)>);

impl Options {
    fn parse(input: &str, query: Option<&str>) -> Result<Self> {
        let mut out = Vec::new();
        if let Some(q) = query {
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| Error::usage(format!("invalid option {pair:?} in {input:?}: expected key=value")))?;
                let v = percent_decode(v);
                if out.iter().any(|(ek, _): &(String, String)| ek == k) {
                    return Err(Error::usage(format!("option {k:?} given twice in {input:?}")));
                }
                out.push((k.to_string(), v));
            }
        }
        Ok(Options(out))
    }

    fn take(&mut self, key: &str) -> Option<String> {
        let pos = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(pos).1)
    }

    fn take_bool(&mut self, key: &str) -> Result<bool> {
        match self.take(key).as_deref() {
            None => Ok(false),
            Some("true") | Some("1") | Some("yes") => Ok(true),
            Some("false") | Some("0") | Some("no") => Ok(false),
            Some(other) => Err(Error::usage(format!(
                "invalid value {other:?} for option {key:?}: expected true or false"
            ))),
        }
    }

    fn finish(self, input: &str, scheme: &str) -> Result<()> {
        if let Some((k, _)) = self.0.first() {
            let known = match scheme {
                "dir" => "unique_names, expand, image",
                "oci" => "format",
                "docker" => "socket",
                "quay" => "since, token",
                "archive" => "volume_size, full",
                _ => "none",
            };
            return Err(Error::usage(format!(
                "unknown option {k:?} in {input:?}: {scheme}:// accepts {known}"
            )));
        }
        Ok(())
    }
}

fn unknown_scheme(scheme: &str, input: &str) -> Error {
    Error::usage(format!(
        "unknown scheme {scheme:?} in {input:?}: expected one of {}",
        all_schemes()
    ))
}

/// `?format=` of an `oci://` reference: `oci` converts Docker v2 manifests
/// to OCI media types (as `skopeo copy --format oci` does).
fn parse_format(input: &str, value: Option<String>) -> Result<bool> {
    match value.as_deref() {
        None => Ok(false),
        Some("oci") => Ok(true),
        Some(other) => Err(Error::usage(format!(
            "invalid value {other:?} for option \"format\" in {input:?}: expected oci (format=oci converts Docker v2 manifests to OCI media types; leave it out to keep manifests as they are)"
        ))),
    }
}

/// The smallest volume: a tar header and a block of data.
pub const MIN_VOLUME_SIZE: u64 = 4096;

/// `bytes` in the largest binary unit that divides it (`700MiB`), else in bytes.
fn size_text(bytes: u64) -> String {
    for (unit, n) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes % n == 0 {
            return format!("{}{unit}", bytes / n);
        }
    }
    bytes.to_string()
}

/// `?volume_size=` of an `archive://` reference: a number of bytes with an
/// optional unit (`700MiB`, `4GiB`, `4.7GB`, `1048576`).
fn parse_volume_size(input: &str, value: &str) -> Result<u64> {
    let bad = |why: &str| {
        Error::usage(format!(
            "invalid value {value:?} for option \"volume_size\" in {input:?}: {why}; write a size such as 700MiB, 4GiB or 4.7GB (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
        ))
    };
    let text = value.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_bytes: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1000_u64.pow(2),
        "GB" => 1000_u64.pow(3),
        "TB" => 1000_u64.pow(4),
        "KiB" => 1024,
        "MiB" => 1024_u64.pow(2),
        "GiB" => 1024_u64.pow(3),
        "TiB" => 1024_u64.pow(4),
        other => return Err(bad(&format!("unknown unit {other:?}"))),
    };
    let n: f64 = number.parse().map_err(|_| bad("expected a number"))?;
    let bytes = n * unit_bytes as f64;
    if !(bytes.is_finite() && bytes < u64::MAX as f64) {
        return Err(bad("too large"));
    }
    let bytes = bytes as u64;
    if bytes < MIN_VOLUME_SIZE {
        return Err(bad(&format!("a volume must hold at least {MIN_VOLUME_SIZE} bytes")));
    }
    Ok(bytes)
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

fn parse_path(input: &str, body: &str) -> Result<PathBuf> {
    if body.is_empty() {
        return Err(Error::usage(format!(
            "invalid reference {input:?}: missing path (write e.g. tar:///abs/path.tar or tar://relative.tar)"
        )));
    }
    Ok(PathBuf::from(body))
}

/// Splits `NAME[:TAG]` (the name may hold a registry port: `h:5000/app:1`).
pub fn split_name_tag(s: &str) -> (&str, Option<&str>) {
    let slash = s.rfind('/').map(|i| i + 1).unwrap_or(0);
    match s[slash..].rfind(':') {
        Some(i) => (&s[..slash + i], Some(&s[slash + i + 1..])),
        None => (s, None),
    }
}

/// Splits `path[:tag]` where the tag is after the last `/`.
fn split_path_tag(body: &str) -> (&str, Option<String>) {
    let slash = body.rfind('/').map(|i| i + 1).unwrap_or(0);
    match body[slash..].rfind(':') {
        Some(i) => (&body[..slash + i], Some(body[slash + i + 1..].to_string())),
        None => (body, None),
    }
}

/// The name a daemon knows an image by: `name@digest` when a digest pins
/// it (a tag beside it is informational, as for Docker), else `name:tag`,
/// the tag defaulting to `latest`.
pub fn docker_image(name: &str, tag: Option<&str>, digest: Option<&Digest>) -> String {
    match (tag, digest) {
        (_, Some(d)) => format!("{name}@{d}"),
        (Some(t), None) => format!("{name}:{t}"),
        (None, None) => format!("{name}:latest"),
    }
}

/// Parses Docker's image reference grammar (distribution/reference):
/// `[DOMAIN[:PORT]/]PATH[:TAG][@DIGEST]`. The first component is a domain
/// when it holds a `.` or a `:`, is `localhost`, or has capitals (as Docker
/// decides); the path is lowercase components separated by `/`.
fn parse_docker_name(input: &str, body: &str) -> Result<(String, Option<String>, Option<Digest>)> {
    let body = body.trim_start_matches('/');
    let (rest, digest) = match body.split_once('@') {
        Some((r, d)) => {
            let d = Digest::parse(d).map_err(|e| Error::usage(format!("invalid digest in {input:?}: {e}")))?;
            (r, Some(d))
        }
        None => (body, None),
    };
    let (name, tag) = split_path_tag(rest);
    if name.is_empty() {
        return Err(Error::usage(format!(
            "invalid reference {input:?}: missing image name after docker:// (expected docker://[HOST[:PORT]/]NAME[:TAG][@DIGEST])"
        )));
    }
    let path = match name.split_once('/') {
        Some((first, path))
            if first.contains(['.', ':']) || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            validate_docker_domain(input, first)?;
            path
        }
        _ => name,
    };
    validate_repository(input, path, false)?;
    if let Some(t) = &tag {
        validate_tag(input, t)?;
    }
    Ok((name.to_string(), tag, digest))
}

/// A registry domain as Docker accepts it: DNS labels of letters, digits and
/// inner `-` joined by `.`, an IPv4 address or a bracketed IPv6 address,
/// then an optional `:PORT`.
fn validate_docker_domain(input: &str, domain: &str) -> Result<()> {
    let (host, port) = if let Some(end) = domain.strip_prefix('[').and_then(|d| d.find(']')) {
        let after = &domain[end + 2..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(Error::usage(format!("invalid registry host {domain:?} in {input:?}"))),
        };
        (&domain[..end + 2], port)
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    if !host_ok {
        return Err(Error::usage(format!(
            "invalid registry host {host:?} in {input:?}: expected a host name, an IPv4 address or [IPv6], then an optional :PORT"
        )));
    }
    if let Some(p) = port {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) || !p.parse::<u16>().is_ok_and(|n| n > 0) {
            return Err(Error::usage(format!(
                "invalid port {p:?} in {input:?}: expected a number from 1 to 65535"
            )));
        }
    }
    Ok(())
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn parse_registry(input: &str, body: &str) -> Result<RegistryRef> {
    let (rest, digest) = match body.split_once('@') {
        Some((r, d)) => {
            let d = Digest::parse(d).map_err(|e| Error::usage(format!("invalid digest in {input:?}: {e}")))?;
            (r, Some(d))
        }
        None => (body, None),
    };
    let Some((host, path)) = rest.split_once('/') else {
        return Err(Error::usage(format!(
            "invalid reference {input:?}: expected registry://HOST[:PORT]/REPOSITORY[:TAG][@DIGEST]"
        )));
    };
    validate_host(input, host)?;
    let (repo, tag) = split_path_tag(path);
    validate_repository(input, repo, true)?;
    if let Some(t) = &tag {
        validate_tag(input, t)?;
    }
    Ok(RegistryRef {
        host: host.to_string(),
        repository: repo.to_string(),
        tag,
        digest,
    })
}

fn validate_host(input: &str, host: &str) -> Result<()> {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(']') || host.starts_with('[') => (n, Some(p)),
        _ => (host, None),
    };
    let name_ok = !name.is_empty()
        && (name.starts_with('[') && name.ends_with(']')
            || name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
    if !name_ok {
        return Err(Error::usage(format!("invalid registry host {host:?} in {input:?}")));
    }
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return Err(Error::usage(format!(
                "invalid port {p:?} in {input:?}: expected a number from 1 to 65535"
            )));
        }
    }
    Ok(())
}

fn validate_repository(input: &str, repo: &str, allow_glob: bool) -> Result<()> {
    if repo.is_empty() {
        return Err(Error::usage(format!(
            "invalid reference {input:?}: missing repository name"
        )));
    }
    for comp in repo.split('/') {
        let ok = !comp.is_empty()
            && comp.chars().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, '.' | '_' | '-')
                    || (allow_glob && matches!(c, '*' | '?' | '[' | ']' | '!'))
            })
            && !comp.starts_with(['.', '_', '-'])
            && !comp.ends_with(['.', '_', '-']);
        if !ok {
            return Err(Error::usage(format!(
                "invalid repository component {comp:?} in {input:?}: use lowercase letters, digits and . _ - (not at either end)"
            )));
        }
    }
    Ok(())
}

fn validate_tag(input: &str, tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*' | '?' | '[' | ']' | '{' | '}'))
        && !tag.starts_with(['.', '-']);
    if !ok {
        return Err(Error::usage(format!(
            "invalid tag {tag:?} in {input:?}: up to 128 letters, digits, _ . - (not starting with . or -)"
        )));
    }
    Ok(())
}

fn validate_date(input: &str, s: &str) -> Result<()> {
    let b = s.as_bytes();
    let ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !ok {
        return Err(Error::usage(format!(
            "invalid date {s:?} for since= in {input:?}: expected YYYY-MM-DD"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_table_is_what_the_parser_accepts() {
        let sample = |name: &str| match name {
            "registry" => "registry://h/r:1",
            "tar" => "tar:///x.tar",
            "oci" => "oci:///x:1",
            "dir" => "dir:///x",
            "docker" => "docker://x:1",
            "bundle" => "bundle:///x",
            "quay" => "quay://org",
            "archive" => "archive:///media/transfer",
            other => panic!("no sample for the new scheme {other}: add one here"),
        };
        for s in SCHEMES {
            let parsed = Reference::parse(sample(s.name)).unwrap();
            assert_eq!(parsed.scheme(), s.name);
        }
        assert!(source_schemes().contains("docker://") && source_schemes().contains("quay://"));
        assert!(!source_schemes().contains("bundle://"));
        assert!(!readable_schemes().contains("quay://"));
        assert!(destination_schemes().contains("bundle://") && !destination_schemes().contains("quay://"));
        let e = Reference::parse("ftp://x").unwrap_err().to_string();
        assert!(e.contains(&all_schemes()), "{e}");
    }

    #[test]
    fn archive_references_take_a_volume_size_and_full() {
        let r = Reference::parse("archive:///m/t?volume_size=700MiB&full=true").unwrap();
        assert_eq!(
            r,
            Reference::Archive {
                path: PathBuf::from("/m/t"),
                volume_size: Some(700 * 1024 * 1024),
                full: true
            }
        );
        assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
        for (size, bytes) in [
            ("4GiB", 4u64 << 30),
            ("4.7GB", 4_700_000_000),
            ("65536", 65536),
            ("64KiB", 65536),
        ] {
            let r = Reference::parse(&format!("archive:///m?volume_size={size}")).unwrap();
            assert!(
                matches!(r, Reference::Archive { volume_size: Some(b), .. } if b == bytes),
                "{size}"
            );
        }
        for bad in ["0", "12XB", "", "MiB", "1.5.2GB", "100"] {
            let e = Reference::parse(&format!("archive:///m?volume_size={bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("volume_size") && e.contains(bad), "{bad}: {e}");
        }
        let e = Reference::parse("archive:///m?size=1GiB").unwrap_err().to_string();
        assert!(e.contains("volume_size, full"), "{e}");
    }

    #[test]
    fn quay_references_print_as_text_that_parses_back() {
        // Found by fuzzing: an organisation holding ':' printed as a tag.
        assert!(Reference::parse("quay://os\0)))quay:/").is_err());
        assert!(Reference::parse("quay://org:").is_err());
        assert!(Reference::parse("quay://Org/app").is_err());
        for ok in [
            "quay://org",
            "quay://org/app*:latest",
            "quay://my-org.x/a/b:v1.*?since=2024-01-01",
        ] {
            let r = Reference::parse(ok).unwrap();
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r, "{ok}");
        }
    }

    fn reg(s: &str) -> RegistryRef {
        match Reference::parse(s).unwrap() {
            Reference::Registry(r) => r,
            other => panic!("not a registry: {other:?}"),
        }
    }

    #[test]
    fn registry_forms() {
        let r = reg("registry://127.0.0.1:5000/a/b/c:v1");
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.repository, "a/b/c");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.reference(), "v1");
        let r = reg("registry://docker.io/library/alpine");
        assert_eq!(r.reference(), "latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = reg(&format!("registry://h/x@{d}"));
        assert_eq!(r.reference(), d);
        assert!(r.tag.is_none());
        let r = reg(&format!("registry://h:1/x:t@{d}"));
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.reference(), d);
        assert_eq!(r.to_string(), format!("h:1/x:t@{d}"));
    }

    #[test]
    fn file_forms() {
        assert_eq!(
            Reference::parse("oci:///tmp/lay:v2").unwrap(),
            Reference::Oci {
                path: "/tmp/lay".into(),
                tag: Some("v2".into()),
                oci_format: false
            }
        );
        let converted = Reference::parse("oci:///tmp/lay:v2?format=oci").unwrap();
        assert_eq!(
            converted,
            Reference::Oci {
                path: "/tmp/lay".into(),
                tag: Some("v2".into()),
                oci_format: true
            }
        );
        assert_eq!(converted.to_string(), "oci:///tmp/lay:v2?format=oci");
        let e = Reference::parse("oci:///tmp/lay?format=v2s2").unwrap_err().to_string();
        assert!(e.contains("\"v2s2\"") && e.contains("expected oci"), "{e}");
        let e = Reference::parse("oci:///tmp/lay?compress=1").unwrap_err().to_string();
        assert!(e.contains("accepts format"), "{e}");
        assert_eq!(
            Reference::parse("tar:///a/b.tar").unwrap(),
            Reference::Tar {
                path: "/a/b.tar".into()
            }
        );
        assert_eq!(
            Reference::parse("dir:///d?unique_names=true").unwrap(),
            Reference::Dir {
                path: "/d".into(),
                unique_names: true,
                expand: false,
                image: None,
            }
        );
        for (text, image) in [
            ("dir:///d?image=app:1.0", "app:1.0"),
            (
                "dir:///d?unique_names=true&image=127.0.0.1:5000/team/app:1.0",
                "127.0.0.1:5000/team/app:1.0",
            ),
            ("dir:///d?image=team/app", "team/app"),
        ] {
            let r = Reference::parse(text).unwrap();
            assert!(
                matches!(&r, Reference::Dir { image: Some(i), .. } if i == image),
                "{text}: {r:?}"
            );
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r, "{text}");
        }
        for bad in ["dir:///d?image=", "dir:///d?image=app:"] {
            let e = Reference::parse(bad).unwrap_err().to_string();
            assert!(e.contains("NAME[:TAG]"), "{bad}: {e}");
        }
        assert_eq!(
            Reference::parse("docker://quay.io/org/img?socket=/run/x.sock").unwrap(),
            Reference::Docker {
                name: "quay.io/org/img".into(),
                tag: None,
                digest: None,
                socket: Some("/run/x.sock".into())
            }
        );
    }

    fn docker(s: &str) -> (String, Option<String>, Option<String>) {
        match Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}")) {
            Reference::Docker { name, tag, digest, .. } => (name, tag, digest.map(|d| d.to_string())),
            other => panic!("not docker: {other:?}"),
        }
    }

    #[test]
    fn docker_names_follow_dockers_grammar() {
        let d = format!("sha256:{}", "b".repeat(64));
        let t =
            |n: &str, tag: Option<&str>, dg: Option<&str>| (n.to_string(), tag.map(String::from), dg.map(String::from));
        for (text, want) in [
            ("docker://app", t("app", None, None)),
            ("docker://team/app:1.0", t("team/app", Some("1.0"), None)),
            (
                "docker://127.0.0.1:5000/team/app:1.0",
                t("127.0.0.1:5000/team/app", Some("1.0"), None),
            ),
            ("docker://localhost:5000/app", t("localhost:5000/app", None, None)),
            ("docker://localhost/app:v2", t("localhost/app", Some("v2"), None)),
            (
                "docker://Registry.Example.com:443/a/b/c:x_y",
                t("Registry.Example.com:443/a/b/c", Some("x_y"), None),
            ),
            ("docker://[::1]:5000/app:1", t("[::1]:5000/app", Some("1"), None)),
            (
                &format!("docker://localhost:5000/app@{d}"),
                t("localhost:5000/app", None, Some(&d)),
            ),
            (
                &format!("docker://127.0.0.1:5000/team/app:1.0@{d}"),
                t("127.0.0.1:5000/team/app", Some("1.0"), Some(&d)),
            ),
            // Without a slash the part after ':' is a tag, as for Docker.
            ("docker://localhost:5000", t("localhost", Some("5000"), None)),
        ] {
            assert_eq!(docker(text), want, "{text}");
            // Printed, it parses back to the same reference.
            let r = Reference::parse(text).unwrap();
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r, "{text}");
        }
        assert_eq!(
            docker_image("localhost:5000/app", None, None),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            docker_image("h:1/app", Some("t"), Digest::parse(&d).ok().as_ref()),
            format!("h:1/app@{d}")
        );
        assert_eq!(Reference::parse("docker://a:5000/x").unwrap().tag(), Some("latest"));
        assert_eq!(Reference::parse(&format!("docker://a:5000/x@{d}")).unwrap().tag(), None);
        for (bad, needle) in [
            ("docker://127.0.0.1:99999/app", "99999"),
            ("docker://host:/app", "port"),
            ("docker://ho_st.com/app", "ho_st.com"),
            ("docker://-h.com/app", "-h.com"),
            ("docker://[zz]:5000/app", "[zz]"),
            ("docker://h:5000/App", "\"App\""),
            ("docker://h:5000/app:-x", "-x"),
            ("docker://h:5000/app@sha256:12", "digest"),
            ("docker://", "missing image name"),
            ("docker://h:5000/", "repository"),
        ] {
            let e = Reference::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_quote_the_offending_part() {
        let e = Reference::parse("ftp://x/y").unwrap_err().to_string();
        assert!(e.contains("\"ftp\""), "{e}");
        let e = Reference::parse("dir:///d?uniq=true").unwrap_err().to_string();
        assert!(e.contains("\"uniq\""), "{e}");
        let e = Reference::parse("registry://h/Bad:v1").unwrap_err().to_string();
        assert!(e.contains("\"Bad\""), "{e}");
        let e = Reference::parse("registry://h:99999/x").unwrap_err().to_string();
        assert!(e.contains("99999"), "{e}");
        let e = Reference::parse("registry://h/x@sha256:zz").unwrap_err().to_string();
        assert!(e.contains("digest"), "{e}");
        assert!(Reference::parse("registry://hostonly").is_err());
        assert!(Reference::parse("no-scheme").is_err());
        assert!(Reference::parse("tar://").is_err());
        assert_eq!(Reference::parse("registry://e/x").unwrap().scheme(), "registry");
    }
}
