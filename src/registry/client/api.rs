//! Other APIs a registry host serves beside the Distribution API (quay.io's
//! REST API, which `quay://` expands through), sent through the one
//! transport: the host's rate limit, retries of transient failures honouring
//! `Retry-After`, its TLS settings, and the same errors.

use reqwest::header::AUTHORIZATION;
use reqwest::Method;
use url::Url;

use super::transport::Req;
use super::{RegistryClient, MAX_LIST_PAGE};
use crate::error::{Error, Result};

impl RegistryClient {
    /// GETs `url` (on this client's host) with `token` as its bearer
    /// credentials, asking for JSON; the status and the body (at most
    /// 32 MiB). A 401 is [`Error::Unauthorized`]; 429 and 5xx are retried,
    /// then errors; any other status is returned for the caller to judge.
    pub async fn get_api(&self, url: &str, token: Option<&str>, what: &str) -> Result<(u16, bytes::Bytes)> {
        let parsed = Url::parse(url).map_err(|e| Error::usage(format!("invalid API URL {url:?}: {e}")))?;
        let resp = self
            .fetch(
                || {
                    let mut req = Req::new(Method::GET, parsed.clone(), Vec::new(), what)
                        .header(reqwest::header::ACCEPT, "application/json")?;
                    if let Some(t) = token {
                        req = req.header(AUTHORIZATION, &format!("Bearer {t}"))?;
                    }
                    req.foreign = true;
                    Ok(req)
                },
                MAX_LIST_PAGE,
                what,
            )
            .await?;
        Ok((resp.status.as_u16(), resp.body))
    }
}
