//! X.509 certificates and public keys as signature verification needs
//! them (sigstore's Fulcio certificates, Notation's signing chains): parse a
//! certificate (DER or PEM), check that one certificate signed another,
//! read its validity, subject, subject alternative names and extensions,
//! and verify ECDSA (P-256, P-384) and Ed25519 signatures with its key.
//! Pure: no I/O, no clock (callers pass the time).

use der::{Decode, Encode};
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use sha2::Digest as _;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, SubjectAltName};
use x509_cert::Certificate;

const ID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const SECP256R1: &str = "1.2.840.10045.3.1.7";
const SECP384R1: &str = "1.3.132.0.34";
const ED25519: &str = "1.3.101.112";
const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const ECDSA_SHA512: &str = "1.2.840.10045.4.3.4";
const CODE_SIGNING: &str = "1.3.6.1.5.5.7.3.3";
const SAN: &str = "2.5.29.17";
const BASIC_CONSTRAINTS: &str = "2.5.29.19";
const EXTENDED_KEY_USAGE: &str = "2.5.29.37";
/// Fulcio's `OtherName` SAN (a username identity).
const FULCIO_OTHER_NAME: &str = "1.3.6.1.4.1.57264.1.7";

/// A hash function a signature is made over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

/// A public key that verifies signatures.
#[derive(Clone)]
pub enum Key {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.algorithm())
    }
}

impl Key {
    /// A key from its DER `SubjectPublicKeyInfo`.
    pub fn from_spki_der(der: &[u8]) -> Result<Key, String> {
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|e| format!("not a public key: {e}"))?;
        Key::from_spki(&spki)
    }

    fn from_spki(spki: &spki::SubjectPublicKeyInfoRef<'_>) -> Result<Key, String> {
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| "the public key is not a whole number of bytes".to_string())?;
        match spki.algorithm.oid.to_string().as_str() {
            ID_EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
                    .map(|o| o.to_string())
                    .unwrap_or_default();
                match curve.as_str() {
                    SECP256R1 => p256::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                        .map(Key::P256)
                        .map_err(|e| format!("a bad P-256 key: {e}")),
                    SECP384R1 => p384::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                        .map(Key::P384)
                        .map_err(|e| format!("a bad P-384 key: {e}")),
                    other => Err(format!("an ECDSA key on curve {other}: occy verifies P-256 and P-384")),
                }
            }
            ED25519 => {
                let bytes: [u8; 32] = bits
                    .try_into()
                    .map_err(|_| "an Ed25519 key that is not 32 bytes".to_string())?;
                ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map(Key::Ed25519)
                    .map_err(|e| format!("a bad Ed25519 key: {e}"))
            }
            other => Err(format!(
                "a key of algorithm {other}: occy verifies ECDSA P-256, P-384 and Ed25519 keys"
            )),
        }
    }

    pub fn algorithm(&self) -> &'static str {
        match self {
            Key::P256(_) => "ECDSA P-256",
            Key::P384(_) => "ECDSA P-384",
            Key::Ed25519(_) => "Ed25519",
        }
    }

    /// The hash this kind of key signs with by default (Ed25519: none used).
    pub fn default_hash(&self) -> Hash {
        match self {
            Key::P384(_) => Hash::Sha384,
            _ => Hash::Sha256,
        }
    }

    /// Whether `sig` (ECDSA: DER; Ed25519: 64 bytes) signs `msg` hashed
    /// with `hash`.
    pub fn verify_der(&self, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            Key::P256(k) => match p256::ecdsa::Signature::from_der(sig) {
                Ok(s) => k
                    .verify_prehash(&hash.digest(msg), &s.normalize_s().unwrap_or(s))
                    .is_ok(),
                Err(_) => false,
            },
            Key::P384(k) => match p384::ecdsa::Signature::from_der(sig) {
                Ok(s) => k
                    .verify_prehash(&hash.digest(msg), &s.normalize_s().unwrap_or(s))
                    .is_ok(),
                Err(_) => false,
            },
            Key::Ed25519(k) => {
                ed25519_dalek::Signature::from_slice(sig).is_ok_and(|s| k.verify_strict(msg, &s).is_ok())
            }
        }
    }

    /// Whether the fixed-size `r || s` signature `sig` (JWS) signs `msg`.
    pub fn verify_raw(&self, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            Key::P256(k) => p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| {
                k.verify_prehash(&hash.digest(msg), &s.normalize_s().unwrap_or(s))
                    .is_ok()
            }),
            Key::P384(k) => p384::ecdsa::Signature::from_slice(sig).is_ok_and(|s| {
                k.verify_prehash(&hash.digest(msg), &s.normalize_s().unwrap_or(s))
                    .is_ok()
            }),
            Key::Ed25519(_) => self.verify_der(hash, msg, sig),
        }
    }
}

/// A parsed certificate, with its DER bytes.
#[derive(Clone)]
pub struct Cert {
    pub der: Vec<u8>,
    cert: Certificate,
    tbs: Vec<u8>,
    key: Result<Key, String>,
}

impl std::fmt::Debug for Cert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cert({})", self.subject())
    }
}

impl Cert {
    pub fn from_der(der: &[u8]) -> Result<Cert, String> {
        let cert = Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let tbs = cert
            .tbs_certificate
            .to_der()
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let key = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| e.to_string())
            .and_then(|d| Key::from_spki_der(&d));
        Ok(Cert {
            der: der.to_vec(),
            cert,
            tbs,
            key,
        })
    }

    /// Every certificate of a PEM text (`-----BEGIN CERTIFICATE-----`…).
    pub fn from_pem_chain(text: &str) -> Result<Vec<Cert>, String> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
            let from = &rest[start..];
            let end = from
                .find("-----END CERTIFICATE-----")
                .ok_or_else(|| "a PEM certificate without its END line".to_string())?
                + "-----END CERTIFICATE-----".len();
            let (_, der) = pem_rfc7468::decode_vec(&from.as_bytes()[..end])
                .map_err(|e| format!("a PEM certificate that does not decode: {e}"))?;
            out.push(Cert::from_der(&der)?);
            rest = &from[end..];
        }
        if out.is_empty() {
            return Err("no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
        }
        Ok(out)
    }

    /// The certificate's public key.
    pub fn key(&self) -> Result<&Key, String> {
        self.key.as_ref().map_err(|e| e.clone())
    }

    /// Seconds since the epoch: when the certificate starts to be valid.
    pub fn not_before(&self) -> i64 {
        self.cert
            .tbs_certificate
            .validity
            .not_before
            .to_unix_duration()
            .as_secs() as i64
    }

    /// Seconds since the epoch: when it stops being valid.
    pub fn not_after(&self) -> i64 {
        self.cert
            .tbs_certificate
            .validity
            .not_after
            .to_unix_duration()
            .as_secs() as i64
    }

    pub fn valid_at(&self, t: i64) -> bool {
        self.not_before() <= t && t <= self.not_after()
    }

    fn extension(&self, oid: &str) -> Option<&[u8]> {
        self.cert
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    /// The raw value of the extension `oid` (dotted), if present.
    pub fn extension_value(&self, oid: &str) -> Option<&[u8]> {
        self.extension(oid)
    }

    /// Whether basicConstraints says this is a CA.
    pub fn is_ca(&self) -> bool {
        self.extension(BASIC_CONSTRAINTS)
            .and_then(|v| BasicConstraints::from_der(v).ok())
            .is_some_and(|b| b.ca)
    }

    /// Whether its extended key usage includes code signing.
    pub fn code_signing(&self) -> bool {
        self.extension(EXTENDED_KEY_USAGE)
            .and_then(|v| ExtendedKeyUsage::from_der(v).ok())
            .is_some_and(|e| e.0.iter().any(|o| o.to_string() == CODE_SIGNING))
    }

    /// Its subject alternative names that name an identity: email
    /// addresses, URIs and Fulcio's username `OtherName`.
    pub fn identities(&self) -> Vec<String> {
        let Some(san) = self.extension(SAN).and_then(|v| SubjectAltName::from_der(v).ok()) else {
            return Vec::new();
        };
        san.0
            .iter()
            .filter_map(|n| match n {
                GeneralName::Rfc822Name(s) => Some(s.to_string()),
                GeneralName::UniformResourceIdentifier(s) => Some(s.to_string()),
                GeneralName::OtherName(o) if o.type_id.to_string() == FULCIO_OTHER_NAME => {
                    o.value.decode_as::<String>().ok()
                }
                _ => None,
            })
            .collect()
    }

    /// Whether `child` names this certificate's subject as its issuer and
    /// carries this certificate's signature.
    pub fn issued(&self, child: &Cert) -> bool {
        let same = match (
            child.cert.tbs_certificate.issuer.to_der(),
            self.cert.tbs_certificate.subject.to_der(),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if !same {
            return false;
        }
        let Ok(key) = self.key() else { return false };
        let Some(sig) = child.cert.signature.as_bytes() else {
            return false;
        };
        let hash = match child.cert.signature_algorithm.oid.to_string().as_str() {
            ECDSA_SHA256 => Hash::Sha256,
            ECDSA_SHA384 => Hash::Sha384,
            ECDSA_SHA512 => Hash::Sha512,
            ED25519 => Hash::Sha512,
            _ => return false,
        };
        key.verify_der(hash, &child.tbs, sig)
    }

    /// The subject's attributes, in order, by their short names (`C`,
    /// `ST`, `L`, `O`, `OU`, `CN`; others by OID).
    pub fn subject_attributes(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for rdn in self.cert.tbs_certificate.subject.0.iter() {
            for atv in rdn.0.iter() {
                let oid = atv.oid.to_string();
                let name = match oid.as_str() {
                    "2.5.4.6" => "C",
                    "2.5.4.8" => "ST",
                    "2.5.4.7" => "L",
                    "2.5.4.10" => "O",
                    "2.5.4.11" => "OU",
                    "2.5.4.3" => "CN",
                    "1.2.840.113549.1.9.1" => "E",
                    _ => oid.as_str(),
                }
                .to_string();
                let value = String::from_utf8_lossy(atv.value.value()).into_owned();
                out.push((name, value));
            }
        }
        out
    }

    /// `C=US, O=Example, CN=signer`, or `(empty)`.
    pub fn subject(&self) -> String {
        let a = self.subject_attributes();
        if a.is_empty() {
            return "(empty subject)".into();
        }
        a.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
    }

    /// The SHA-256 of its DER bytes, hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(sha2::Sha256::digest(&self.der))
    }
}

/// RFC 3339 (UTC, seconds) of seconds since the epoch.
pub fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Seconds since the epoch of an RFC 3339 time (`2024-01-02T03:04:05Z`,
/// fractions and offsets allowed).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh = rest.get(1..3)?.parse::<i64>().ok()?;
            let om = rest.get(4..6)?.parse::<i64>().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    // Days from civil.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if mo > 2 { mo - 3 } else { mo + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        for t in [0, 951_782_400, 1_700_000_000, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{}", rfc3339(t));
        }
        assert_eq!(parse_rfc3339("2021-01-12T11:53:27.000Z"), Some(1_610_452_407));
        assert_eq!(parse_rfc3339("2021-01-12T12:53:27+01:00"), Some(1_610_452_407));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn bad_certificates_are_named() {
        assert!(Cert::from_der(b"junk")
            .unwrap_err()
            .contains("not an X.509 certificate"));
        assert!(Cert::from_pem_chain("hello")
            .unwrap_err()
            .contains("no PEM certificate"));
        assert!(Key::from_spki_der(b"junk").unwrap_err().contains("not a public key"));
    }
}
