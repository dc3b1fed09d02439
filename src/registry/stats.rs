//! Process-wide tallies of registry traffic, for monitoring: requests by
//! host and status class, and the pull quota each host announced last. The
//! transport records them; whoever exports metrics reads a snapshot
//! (nothing here knows how they are exported).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::rate_limit::PullQuota;

/// Requests by (host, status class).
static REQUESTS: Mutex<BTreeMap<(String, &'static str), u64>> = Mutex::new(BTreeMap::new());

/// The latest pull quota by host.
static QUOTAS: Mutex<BTreeMap<String, PullQuota>> = Mutex::new(BTreeMap::new());

/// `2xx` … `5xx` for an HTTP status, `error` for a request that got no
/// answer (connection refused, reset, timed out).
pub fn class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) | None => "error",
    }
}

/// Counts one request sent to `host` (its answer's status, None: no answer).
pub fn record_request(host: &str, status: Option<u16>) {
    if let Ok(mut m) = REQUESTS.lock() {
        *m.entry((host.to_string(), class(status))).or_default() += 1;
    }
}

/// Remembers the pull quota `host` announced.
pub fn record_quota(host: &str, quota: &PullQuota) {
    if let Ok(mut m) = QUOTAS.lock() {
        m.insert(host.to_string(), quota.clone());
    }
}

/// Every (host, class, requests) counted since the process started.
pub fn requests() -> Vec<(String, &'static str, u64)> {
    REQUESTS
        .lock()
        .map(|m| m.iter().map(|((h, c), n)| (h.clone(), *c, *n)).collect())
        .unwrap_or_default()
}

/// The pull quota each host announced last.
pub fn quotas() -> Vec<(String, PullQuota)> {
    QUOTAS
        .lock()
        .map(|m| m.iter().map(|(h, q)| (h.clone(), q.clone())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(class(Some(200)), "2xx");
        assert_eq!(class(Some(202)), "2xx");
        assert_eq!(class(Some(307)), "3xx");
        assert_eq!(class(Some(404)), "4xx");
        assert_eq!(class(Some(503)), "5xx");
        assert_eq!(class(None), "error");
        assert_eq!(class(Some(999)), "error");
    }

    #[test]
    fn requests_are_counted_by_host_and_class() {
        record_request("stats-test.example:1", Some(200));
        record_request("stats-test.example:1", Some(201));
        record_request("stats-test.example:1", Some(404));
        record_request("stats-test.example:1", None);
        let mine: Vec<_> = requests()
            .into_iter()
            .filter(|(h, ..)| h == "stats-test.example:1")
            .map(|(_, c, n)| (c, n))
            .collect();
        assert_eq!(mine, [("2xx", 2), ("4xx", 1), ("error", 1)]);
    }
}
