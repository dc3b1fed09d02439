//! occy's integration tests, one binary: every module talks to real
//! components (registries, skopeo, umoci, podman, containerd, the Docker Engine) started
//! once for the whole binary by `support`.

mod support;

mod airgap;
mod blob_cache;
mod check;
mod concurrent_writers;
mod crash;
mod docker_daemon;
mod docs;
mod extract;
mod faults;
mod filters;
mod fuzz_regressions;
mod hostile;
mod mirror_config;
mod oci_layouts;
mod pacing;
mod process_files;
mod process_registry;
mod production;
mod provenance;
mod pull_quota;
mod push_compression;
mod push_registry;
mod referrers;
mod registry_client;
mod resume;
mod shard;
mod signatures;
mod sync;
mod tokens;
