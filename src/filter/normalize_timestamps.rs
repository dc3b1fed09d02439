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
    let secs = ts as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
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
