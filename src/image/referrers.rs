//! Names of the things that refer to an image: the OCI referrers-tag schema
//! (`sha256-<hex>`, a tag holding an index of referrers on registries
//! without the referrers API) and cosign's tag convention
//! (`sha256-<hex>.sig`, `.att`, `.sbom`). Finding, copying and verifying
//! referrers build on these names.

use super::Digest;

/// What a cosign tag holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CosignKind {
    /// `.sig`: simple-signing signatures.
    Signature,
    /// `.att`: in-toto attestations.
    Attestation,
    /// `.sbom`: an attached SBOM.
    Sbom,
}

impl CosignKind {
    /// Every kind, in the order lookups try them.
    pub const ALL: [CosignKind; 3] = [CosignKind::Signature, CosignKind::Attestation, CosignKind::Sbom];

    /// The tag suffix, with its dot.
    pub fn suffix(self) -> &'static str {
        match self {
            CosignKind::Signature => ".sig",
            CosignKind::Attestation => ".att",
            CosignKind::Sbom => ".sbom",
        }
    }
}

/// The referrers-tag-schema tag of `subject`: `sha256-<hex>`.
pub fn fallback_tag(subject: &Digest) -> String {
    let (algorithm, hex) = subject.as_str().split_once(':').unwrap_or(("sha256", subject.hex()));
    format!("{algorithm}-{hex}")
}

/// The cosign tag of `subject` for `kind`, e.g. `sha256-<hex>.sig`.
pub fn cosign_tag(subject: &Digest, kind: CosignKind) -> String {
    format!("{}{}", fallback_tag(subject), kind.suffix())
}

/// The subject and kind a cosign tag names, if `tag` is one.
pub fn parse_cosign_tag(tag: &str) -> Option<(Digest, CosignKind)> {
    let kind = CosignKind::ALL.into_iter().find(|k| tag.ends_with(k.suffix()))?;
    let stem = tag.strip_suffix(kind.suffix())?;
    let (algorithm, hex) = stem.split_once('-')?;
    Digest::parse(&format!("{algorithm}:{hex}")).ok().map(|d| (d, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_cosign_and_the_referrers_tag_schema() {
        let d = Digest::of(b"x");
        assert_eq!(fallback_tag(&d), format!("sha256-{}", d.hex()));
        assert_eq!(cosign_tag(&d, CosignKind::Signature), format!("sha256-{}.sig", d.hex()));
        assert_eq!(
            parse_cosign_tag(&cosign_tag(&d, CosignKind::Sbom)),
            Some((d.clone(), CosignKind::Sbom))
        );
        assert_eq!(parse_cosign_tag("latest"), None);
        assert_eq!(parse_cosign_tag("sha256-zz.sig"), None);
    }
}
