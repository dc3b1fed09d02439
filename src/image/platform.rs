//! Platforms (`os/arch[/variant]`) and how a wanted platform matches an index
//! entry, with the usual normalisations (`aarch64` = `arm64`, `arm64` ≈ `arm64/v8`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An image platform, as in an index entry or an image config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Option::is_none")]
    pub os_features: Option<Vec<String>>,
}

impl Platform {
    /// Parses `os/arch[/variant]` as given to `--platform`.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(Error::usage(format!(
                "invalid platform {s:?}: expected os/arch or os/arch/variant, e.g. linux/amd64 or linux/arm64/v8"
            )));
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
            os_version: None,
            os_features: None,
        })
    }

    /// The platform of this machine, as container runtimes name it.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            ..Default::default()
        }
    }

    /// Normalised (architecture, variant) pair.
    fn normalized(&self) -> (String, Option<String>) {
        let arch = match self.architecture.as_str() {
            "aarch64" => "arm64",
            "x86_64" | "x86-64" => "amd64",
            "i386" | "i686" => "386",
            "armhf" | "armel" => "arm",
            other => other,
        }
        .to_string();
        let variant = match (arch.as_str(), self.variant.as_deref()) {
            ("arm64", None) | ("arm64", Some("v8")) | ("arm64", Some("8")) => None,
            ("arm", None) => Some("v7".to_string()),
            ("arm", Some(v)) if !v.starts_with('v') => Some(format!("v{v}")),
            ("amd64", Some("v1")) => None,
            (_, v) => v.map(str::to_string),
        };
        (arch, variant)
    }

    /// Whether an image of platform `candidate` satisfies this wanted platform.
    /// A wanted platform without a variant accepts any variant of its
    /// architecture's default (`linux/arm64` matches `arm64/v8`).
    pub fn matches(&self, candidate: &Platform) -> bool {
        if !self.os.eq_ignore_ascii_case(&candidate.os) {
            return false;
        }
        let (wa, wv) = self.normalized();
        let (ca, cv) = candidate.normalized();
        if wa != ca {
            return false;
        }
        match (&self.variant, wv, cv) {
            (None, _, _) => true,
            (Some(_), w, c) => w == c,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn matching() {
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(p("linux/arm64").matches(&p("linux/aarch64")));
        assert!(!p("linux/amd64").matches(&p("linux/arm64")));
        assert!(p("linux/arm/v7").matches(&p("linux/arm")));
        assert!(!p("linux/arm/v6").matches(&p("linux/arm/v7")));
        assert!(!p("windows/amd64").matches(&p("linux/amd64")));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v8").is_err());
    }
}
