//! Filter `inspect:file=PATH`: passes data through and appends one JSON line
//! per image to PATH with occystrap's fields (`name`, and per layer `Id`,
//! `Size`, `Created`, `CreatedBy`, `Comment`) plus `digest` and `diff_id`.
//! Placed between two filters it shows the layers as they are at that
//! point: `diff_id` and `Size` (uncompressed bytes) are measured there;
//! `digest` is the stored blob's when the layer is not rewritten after that
//! point (otherwise null: a compressed digest exists only once compressed).

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::config::History;
use crate::image::Digest;

/// One layer as `inspect` reports it.
#[derive(Debug, Serialize)]
pub struct InspectLayer {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Size")]
    pub size: u64,
    #[serde(rename = "Created")]
    pub created: Option<String>,
    #[serde(rename = "CreatedBy")]
    pub created_by: Option<String>,
    #[serde(rename = "Comment")]
    pub comment: Option<String>,
    pub digest: Option<String>,
    pub diff_id: String,
}

/// One image as `inspect` reports it.
#[derive(Debug, Serialize)]
pub struct InspectLine {
    pub name: String,
    /// The chain position of this `inspect` (0-based).
    pub position: usize,
    pub layers: Vec<InspectLayer>,
}

/// Pairs each layer with its history entry (empty-layer entries skipped).
pub fn layer_history(history: &[History], layers: usize) -> Vec<Option<&History>> {
    let mut non_empty = history.iter().filter(|h| !h.empty_layer);
    (0..layers).map(|_| non_empty.next()).collect()
}

/// Builds a layer record.
pub fn layer_record(diff_id: &Digest, size: u64, digest: Option<&Digest>, history: Option<&History>) -> InspectLayer {
    InspectLayer {
        id: diff_id.hex().to_string(),
        size,
        created: history.map(|h| h.created.clone()).filter(|s| !s.is_empty()),
        created_by: history.map(|h| h.created_by.clone()).filter(|s| !s.is_empty()),
        comment: history.map(|h| h.comment.clone()).filter(|s| !s.is_empty()),
        digest: digest.map(|d| d.to_string()),
        diff_id: diff_id.to_string(),
    }
}

/// Appends one line to `file` in a single write (O_APPEND), so concurrent
/// copies appending to the same file never interleave their lines.
pub fn append_line(file: &Path, line: &InspectLine) -> Result<()> {
    let mut text = serde_json::to_vec(line)?;
    text.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| Error::io("open", file, e))?;
    f.write_all(&text).map_err(|e| Error::io("append to", file, e))
}
