//! occy keeps container images where they belong: it reads images from
//! registries, archives, layouts and daemons, transforms them with filter
//! chains, and writes them to registries, archives, layouts and daemons,
//! doing only what is out of date.
//!
//! The data path (docs/architecture.md): a reference ([`reference`]) opens a
//! [`source`], which resolves to manifests and configs ([`image`]); blobs
//! stream through the executor ([`exec`]) into a [`sink`].

pub mod archive;
pub mod blob_locations;
pub mod cache;
pub mod check;
pub mod cli;
pub mod error;
pub mod exec;
pub mod filter;
pub mod image;
pub mod interrupt;
pub mod metrics;
pub mod mirror_config;
pub mod plan;
pub mod reference;
pub mod registry;
pub mod sink;
pub mod source;
pub mod spec;

pub use error::{Error, Result};

#[cfg(test)]
mod layering;
