//! Fuzzes occy::fuzz_targets::tar_rewrite (see src/fuzz_targets.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| occy::fuzz_targets::tar_rewrite(data));
