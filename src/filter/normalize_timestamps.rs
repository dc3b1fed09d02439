//! Filter `normalize-timestamps[:ts=N][,config=true]`: every entry's mtime
//! (and PAX atime/ctime) becomes N (default 0); with `config=true` the image
//! config's `created` and every history `created` become N too, so that
//! rebuilt images are reproducible.

use super::tar_stream::{TarEntry, Verdict};

/// Sets every entry's times to `ts`.
pub fn normalize_entry(entry: &mut TarEntry, ts: u64) -> Verdict {
    entry.set_times(ts);
    Verdict::Keep
}

/// `ts` as the RFC 3339 time the config's `created` fields use.
pub fn rfc3339(ts: u64) -> String {
    crate::image::x509::rfc3339(ts as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_067_200), "2024-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
