//! The image config (the JSON blob a manifest's `config` points to): a
//! lenient typed view for reading (Docker writes `null` where OCI omits), the
//! raw bytes kept beside it so an unchanged config keeps its digest.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};

use super::digest::Digest;
use super::platform::Platform;
use crate::error::{Error, Result};

/// Treats JSON `null` as the type's default (Docker configs say `"Env": null`).
fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The runtime part of a config (`config` key).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuntimeConfig {
    #[serde(rename = "User", default, deserialize_with = "null_default")]
    pub user: String,
    #[serde(rename = "ExposedPorts", default, deserialize_with = "null_default")]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    #[serde(rename = "Env", default, deserialize_with = "null_default")]
    pub env: Vec<String>,
    #[serde(rename = "Entrypoint", default, deserialize_with = "null_default")]
    pub entrypoint: Vec<String>,
    #[serde(rename = "Cmd", default, deserialize_with = "null_default")]
    pub cmd: Vec<String>,
    #[serde(rename = "Volumes", default, deserialize_with = "null_default")]
    pub volumes: BTreeMap<String, serde_json::Value>,
    #[serde(rename = "WorkingDir", default, deserialize_with = "null_default")]
    pub working_dir: String,
    #[serde(rename = "Labels", default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "StopSignal", default, deserialize_with = "null_default")]
    pub stop_signal: String,
    #[serde(rename = "ArgsEscaped", default, deserialize_with = "null_default")]
    pub args_escaped: bool,
}

/// `rootfs`: the layer diff_ids.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub fs_type: String,
    #[serde(default, deserialize_with = "null_default")]
    pub diff_ids: Vec<Digest>,
}

/// One history entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    #[serde(default, deserialize_with = "null_default")]
    pub created: String,
    #[serde(default, deserialize_with = "null_default")]
    pub created_by: String,
    #[serde(default, deserialize_with = "null_default")]
    pub author: String,
    #[serde(default, deserialize_with = "null_default")]
    pub comment: String,
    #[serde(default, deserialize_with = "null_default")]
    pub empty_layer: bool,
}

/// A typed, read-only view of an image config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, deserialize_with = "null_default")]
    pub created: String,
    #[serde(default, deserialize_with = "null_default")]
    pub author: String,
    #[serde(default, deserialize_with = "null_default")]
    pub architecture: String,
    #[serde(default, deserialize_with = "null_default")]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub config: RuntimeConfig,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, deserialize_with = "null_default")]
    pub history: Vec<History>,
}

impl ImageConfig {
    /// The platform the config declares.
    pub fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
            ..Default::default()
        }
    }
}

/// A config blob: raw bytes, their digest, and the parsed view (shared:
/// an image known by its manifest alone holds the one empty config, not a
/// few hundred bytes of empty fields of its own).
#[derive(Debug, Clone)]
pub struct ConfigBlob {
    pub bytes: Bytes,
    pub digest: Digest,
    pub parsed: Arc<ImageConfig>,
}

/// Largest config blob we accept (real ones are a few KiB).
pub const MAX_CONFIG_SIZE: u64 = 16 * 1024 * 1024;

impl ConfigBlob {
    /// Parses config bytes; `what` names the config in errors.
    pub fn parse(bytes: Bytes, what: &str) -> Result<Self> {
        let parsed: ImageConfig = serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid(format!("malformed image config {what}: {e}")))?;
        Ok(ConfigBlob {
            digest: Digest::of(&bytes),
            bytes,
            parsed: Arc::new(parsed),
        })
    }

    /// The config of an image known by its manifest alone: its digest,
    /// no bytes, and the shared empty parsed view.
    pub fn unread(digest: Digest) -> Self {
        static EMPTY: OnceLock<Arc<ImageConfig>> = OnceLock::new();
        ConfigBlob {
            bytes: Bytes::new(),
            digest,
            parsed: Arc::clone(EMPTY.get_or_init(|| Arc::new(ImageConfig::default()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_nulls_are_tolerated() {
        let c = ConfigBlob::parse(
            Bytes::from_static(br#"{"architecture":"amd64","os":"linux","config":{"Env":null,"Cmd":["sh"],"Labels":null},"rootfs":{"type":"layers","diff_ids":[]},"history":null}"#),
            "test",
        )
        .unwrap();
        assert_eq!(c.parsed.config.cmd, vec!["sh"]);
        assert!(c.parsed.config.env.is_empty());
    }
}
