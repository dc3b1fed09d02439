//! `quay://org[/glob][:tag][?since=YYYY-MM-DD]` expansion through quay.io's
//! REST API: the organisation's repositories (`/api/v1/repository?namespace=`,
//! paged by `next_page`), then each one's active tags
//! (`/api/v1/repository/ORG/REPO/tag/`, paged by `page`). `OCCY_QUAY_API`
//! and `OCCY_QUAY_REGISTRY` point elsewhere (a Red Hat Quay install, or a
//! test's fake). The API is asked through the registry transport of its
//! host (rate limit, retries honouring `Retry-After`, TLS settings, the
//! same errors), like every other request occy sends.

use globset::GlobBuilder;
use serde::Deserialize;

use super::expand::RegistryAccess;
use crate::error::{Error, Result};
use crate::registry::RegistryClient;

const DEFAULT_API: &str = "https://quay.io/api/v1";
/// Most pages followed for one listing (a loop guard; quay pages hold 100).
const MAX_PAGES: usize = 1000;

/// The API base URL.
fn api_base() -> String {
    std::env::var("OCCY_QUAY_API")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_API.to_string())
        .trim_end_matches('/')
        .to_string()
}

/// The registry host images are pulled from.
pub fn registry_host() -> String {
    std::env::var("OCCY_QUAY_REGISTRY")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "quay.io".to_string())
}

#[derive(Deserialize)]
struct RepoPage {
    #[serde(default)]
    repositories: Vec<Repo>,
    next_page: Option<String>,
}

#[derive(Deserialize)]
struct Repo {
    name: String,
}

#[derive(Deserialize)]
struct TagPage {
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    has_additional: bool,
}

#[derive(Deserialize)]
struct Tag {
    name: String,
    start_ts: Option<i64>,
    end_ts: Option<i64>,
}

/// Days since 1970 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `YYYY-MM-DD` as seconds since 1970 (UTC midnight).
pub fn parse_since(s: &str) -> Result<i64> {
    let parts: Vec<&str> = s.split('-').collect();
    let bad = || Error::usage(format!("invalid since={s:?}: expected a date YYYY-MM-DD"));
    if parts.len() != 3 {
        return Err(bad());
    }
    let y: i64 = parts[0].parse().map_err(|_| bad())?;
    let m: i64 = parts[1].parse().map_err(|_| bad())?;
    let d: i64 = parts[2].parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d) * 86400)
}

/// The `HOST[:PORT]` of an API base URL, whose registry transport asks it.
fn api_host(base: &str) -> Result<String> {
    let url = url::Url::parse(base).map_err(|e| Error::usage(format!("invalid quay API URL {base:?}: {e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| Error::usage(format!("invalid quay API URL {base:?}: it names no host")))?;
    Ok(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

async fn get_json<T: for<'de> Deserialize<'de>>(client: &RegistryClient, url: &str, token: Option<&str>) -> Result<T> {
    let needs_token = || {
        Error::Unauthorized(format!(
            "GET {url}: the quay.io API needs a token (token_env in the registries section, or ?token=)"
        ))
    };
    let (status, bytes) = match client.get_api(url, token, "the quay.io API").await {
        Ok(r) => r,
        Err(Error::Unauthorized(_)) => return Err(needs_token()),
        Err(e) => return Err(e),
    };
    match status {
        401 | 403 => return Err(needs_token()),
        404 => {
            return Err(Error::NotFound(format!(
                "GET {url}: 404: no such organisation or repository"
            )))
        }
        s if !(200..300).contains(&s) => {
            return Err(Error::Registry {
                method: "GET".into(),
                url: url.to_string(),
                status: s,
                codes: Vec::new(),
                message: String::new(),
            })
        }
        _ => {}
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::invalid(format!("GET {url}: unexpected answer: {e}")))
}

/// The repositories of `org` matching `repo_glob` and, for each, its active
/// tags matching `tag` (a glob) and pushed on or after `since`.
pub async fn expand(
    access: &dyn RegistryAccess,
    org: &str,
    repo_glob: Option<&str>,
    tag: Option<&str>,
    since: Option<&str>,
    token: Option<&str>,
) -> Result<Vec<(String, Vec<String>)>> {
    let base = api_base();
    let client = access.client(&api_host(&base)?)?;
    let since = since.map(parse_since).transpose()?;
    let compile = |p: &str, what: &str| {
        GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map(|g| g.compile_matcher())
            .map_err(|e| Error::usage(format!("invalid {what} pattern {p:?}: {}", e.kind())))
    };
    let repo_match = repo_glob.map(|g| compile(g, "repository")).transpose()?;
    let tag_match = tag.map(|t| compile(t, "tag")).transpose()?;

    let mut repos = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut url = format!("{base}/repository?namespace={org}");
        if let Some(n) = &next {
            url.push_str(&format!("&next_page={n}"));
        }
        let page: RepoPage = get_json(&client, &url, token).await?;
        repos.extend(page.repositories.into_iter().map(|r| r.name));
        match page.next_page {
            Some(n) if !n.is_empty() => next = Some(n),
            _ => break,
        }
    }
    repos.retain(|r| repo_match.as_ref().is_none_or(|m| m.is_match(r)));
    repos.sort();

    let mut out = Vec::new();
    for repo in repos {
        let mut tags = Vec::new();
        for page_no in 1..=MAX_PAGES {
            let url = format!("{base}/repository/{org}/{repo}/tag/?onlyActiveTags=true&limit=100&page={page_no}");
            let page: TagPage = get_json(&client, &url, token).await?;
            for t in page.tags {
                if t.end_ts.is_some() {
                    continue;
                }
                if tag_match.as_ref().is_some_and(|m| !m.is_match(&t.name)) {
                    continue;
                }
                if let (Some(since), Some(ts)) = (since, t.start_ts) {
                    if ts < since {
                        continue;
                    }
                }
                if !tags.contains(&t.name) {
                    tags.push(t.name);
                }
            }
            if !page.has_additional {
                break;
            }
        }
        tags.sort();
        if !tags.is_empty() {
            out.push((repo, tags));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_dates_are_utc_midnights() {
        assert_eq!(parse_since("1970-01-01").unwrap(), 0);
        assert_eq!(parse_since("2024-03-01").unwrap(), 1_709_251_200);
        assert!(parse_since("2024-13-01").is_err());
        assert!(parse_since("yesterday").is_err());
    }
}
