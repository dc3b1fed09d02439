//! The one error type of occy: every failure a user can meet, each with a
//! message that names the offending thing, and the exit code it maps to
//! (docs/architecture.md: 1 for failed work, 2 for usage or input errors).

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, phrased for people.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command-line input: a flag, a URI, an option. Nothing was done.
    #[error("{0}")]
    Usage(String),

    /// A sync file (or a one-shot command's spec) that does not validate:
    /// every problem with its place, kept for `-O json` and `-O github`.
    /// Nothing was done.
    #[error("{}", .0.rendered)]
    SyncFile(Box<SpecErrors>),

    /// A file-system operation failed on a named path.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A network-level failure talking to a host (connect, TLS, reset).
    #[error("{0}")]
    Network(String),

    /// The registry answered with an error status: its Distribution error
    /// codes, parsed once from the body, and its messages.
    #[error("{method} {url}: {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Registry {
        method: String,
        url: String,
        status: u16,
        codes: Vec<ErrorCode>,
        message: String,
    },

    /// A transfer that failed mid-body where the transport cannot send it
    /// again (a streamed upload cut or refused, a layer that arrived
    /// corrupted but reads whole again): the copy of that blob starts over.
    #[error("{0}")]
    Cut(String),

    /// Credentials were missing or refused.
    #[error("{0}")]
    Unauthorized(String),

    /// The thing named does not exist (tag, repository, file entry, image).
    #[error("{0}")]
    NotFound(String),

    /// Content did not hash to the digest it claims.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// Content had another length than its descriptor says.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },

    /// Malformed data: a manifest, config, tar or JSON that is not what it should be.
    #[error("{0}")]
    Invalid(String),

    /// A request was refused by the destination or is not supported there.
    #[error("{0}")]
    Unsupported(String),

    /// A registry's pull quota (`RateLimit-Remaining`) is smaller than the
    /// manifest pulls a run needs: stopped before pulling them (exit 1).
    #[error("{0}")]
    PullQuota(String),

    /// Cancelled by the user (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    /// The process exit code for this error (see "Exit codes" in docs/architecture.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::SyncFile(_) => 2,
            Error::Interrupted => 130,
            _ => 1,
        }
    }

    /// Shorthand for a usage error.
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    /// Shorthand for invalid data.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    /// Wraps an io::Error with the action and path it concerns. If the
    /// io::Error carries one of our own errors (a digest mismatch raised
    /// inside a stream), that error is returned instead.
    pub fn io(action: &'static str, path: impl AsRef<Path>, source: io::Error) -> Self {
        match into_occy_error(source) {
            Ok(e) => e,
            Err(source) => Error::Io {
                action,
                path: path.as_ref().to_path_buf(),
                source,
            },
        }
    }

    /// Wraps an io::Error raised while streaming `what`.
    pub fn stream(what: &str, source: io::Error) -> Self {
        match into_occy_error(source) {
            Ok(e) => e,
            Err(source) => Error::Network(format!("while streaming {what}: {source}")),
        }
    }

    /// Turns this error into an io::Error that can travel through a stream,
    /// to be recovered by [`Error::io`] or [`Error::stream`] on the other side.
    pub fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }

    /// A copy of this error (same kind, same message), for telling every
    /// consumer of one shared stream why it ended.
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Usage(m) => Error::Usage(m.clone()),
            Error::SyncFile(p) => Error::SyncFile(p.clone()),
            Error::Io { action, path, source } => Error::Io {
                action,
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::Network(m) => Error::Network(m.clone()),
            Error::Registry {
                method,
                url,
                status,
                codes,
                message,
            } => Error::Registry {
                method: method.clone(),
                url: url.clone(),
                status: *status,
                codes: codes.clone(),
                message: message.clone(),
            },
            Error::Cut(m) => Error::Cut(m.clone()),
            Error::Unauthorized(m) => Error::Unauthorized(m.clone()),
            Error::NotFound(m) => Error::NotFound(m.clone()),
            Error::DigestMismatch { what, expected, actual } => Error::DigestMismatch {
                what: what.clone(),
                expected: expected.clone(),
                actual: actual.clone(),
            },
            Error::SizeMismatch { what, expected, actual } => Error::SizeMismatch {
                what: what.clone(),
                expected: *expected,
                actual: *actual,
            },
            Error::Invalid(m) => Error::Invalid(m.clone()),
            Error::Unsupported(m) => Error::Unsupported(m.clone()),
            Error::PullQuota(m) => Error::PullQuota(m.clone()),
            Error::Interrupted => Error::Interrupted,
        }
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Network(_) | Error::Cut(_) => true,
            Error::Registry { status, .. } => *status == 429 || *status >= 500,
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => true,
            _ => false,
        }
    }

    /// Whether a blob copy should be started again: its bytes arrived
    /// corrupted, or its upload was cut where the transport could not send
    /// it again. Everything else transient was already retried by the
    /// transport (with `Retry-After`), within the same `--retries` budget:
    /// retrying it here again would multiply the attempts.
    pub fn restarts_copy(&self) -> bool {
        matches!(
            self,
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } | Error::Cut(_)
        )
    }

    /// Whether credentials were missing or refused (a token without the
    /// scope, a password refused): every other request of the same target
    /// would get the same answer, so the target fails at once.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::Unauthorized(_))
    }

    /// Whether the registry's answer carries Distribution error `code`.
    pub fn has_code(&self, code: &ErrorCode) -> bool {
        matches!(self, Error::Registry { codes, .. } if codes.contains(code))
    }
}

/// Recovers an occy [`Error`] that was sent through an io::Error.
fn into_occy_error(e: io::Error) -> std::result::Result<Error, io::Error> {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        match e.into_inner().map(|b| b.downcast::<Error>()) {
            Some(Ok(inner)) => Ok(*inner),
            Some(Err(other)) => Err(io::Error::new(io::ErrorKind::InvalidData, other)),
            None => Err(io::Error::other("unknown error")),
        }
    } else {
        Err(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Invalid(format!("invalid JSON: {e}"))
    }
}

/// A Distribution (OCI distribution-spec) error code, from the `errors`
/// array of a registry's error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    ManifestUnverified,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    Unavailable,
    Unknown,
    /// A code outside the spec, as the registry spelt it.
    Other(String),
}

impl ErrorCode {
    /// The code a registry spells `s`.
    pub fn parse(s: &str) -> Self {
        match s {
            "BLOB_UNKNOWN" => ErrorCode::BlobUnknown,
            "BLOB_UPLOAD_INVALID" => ErrorCode::BlobUploadInvalid,
            "BLOB_UPLOAD_UNKNOWN" => ErrorCode::BlobUploadUnknown,
            "DIGEST_INVALID" => ErrorCode::DigestInvalid,
            "MANIFEST_BLOB_UNKNOWN" => ErrorCode::ManifestBlobUnknown,
            "MANIFEST_INVALID" => ErrorCode::ManifestInvalid,
            "MANIFEST_UNKNOWN" => ErrorCode::ManifestUnknown,
            "MANIFEST_UNVERIFIED" => ErrorCode::ManifestUnverified,
            "NAME_INVALID" => ErrorCode::NameInvalid,
            "NAME_UNKNOWN" => ErrorCode::NameUnknown,
            "SIZE_INVALID" => ErrorCode::SizeInvalid,
            "TAG_INVALID" => ErrorCode::TagInvalid,
            "UNAUTHORIZED" => ErrorCode::Unauthorized,
            "DENIED" => ErrorCode::Denied,
            "UNSUPPORTED" => ErrorCode::Unsupported,
            "TOOMANYREQUESTS" => ErrorCode::TooManyRequests,
            "UNAVAILABLE" => ErrorCode::Unavailable,
            "UNKNOWN" => ErrorCode::Unknown,
            other => ErrorCode::Other(other.to_string()),
        }
    }
}

// The structured problems of a sync file live here, not in `spec`, so that
// the one error type depends on no module above it (`spec` builds them).

/// One problem as it reaches the output: where it is (1-based lines and
/// columns, in characters), what is there, what is wrong, what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Located {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub end_line: Option<usize>,
    pub end_column: Option<usize>,
    pub message: String,
    /// The offending text (cut to 200 characters).
    pub text: Option<String>,
    /// What the caret under it says.
    pub label: String,
    pub hint: Option<String>,
}

/// The name a one-shot command's spec goes by: its problems point into the
/// command line, not into a file.
pub const COMMAND_LINE: &str = "command line";

/// The problems of one sync file, kept structured, with their rendering
/// for people (what `Display` of the error prints).
#[derive(Debug, Clone)]
pub struct SpecErrors {
    pub problems: Vec<Located>,
    pub rendered: String,
}

impl SpecErrors {
    /// `{"errors": [{file, line, column, …}]}`, for `-O json`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({ "errors": self.problems })
    }

    /// GitHub workflow commands, one `::error file=…,line=…,col=…::message`
    /// line per problem, for `-O github`.
    pub fn github(&self) -> String {
        let mut out = String::new();
        for p in &self.problems {
            let mut message = p.message.clone();
            if let Some(h) = &p.hint {
                message.push_str(&format!("\nhelp: {h}"));
            }
            if p.file == COMMAND_LINE {
                out.push_str(&format!("::error::{}\n", github_data(&message)));
                continue;
            }
            let mut props = vec![format!("file={}", github_property(&p.file))];
            for (key, value) in [
                ("line", p.line),
                ("col", p.column),
                ("endLine", p.end_line),
                ("endColumn", p.end_column),
            ] {
                if let Some(v) = value {
                    props.push(format!("{key}={v}"));
                }
            }
            out.push_str(&format!("::error {}::{}\n", props.join(","), github_data(&message)));
        }
        out
    }
}

/// A workflow command's message: `%`, CR and LF escaped.
pub fn github_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// A workflow command's property value: also `:` and `,` escaped.
fn github_property(s: &str) -> String {
    github_data(s).replace(':', "%3A").replace(',', "%2C")
}
