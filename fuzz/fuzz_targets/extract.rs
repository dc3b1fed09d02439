//! Fuzzes occy::fuzz_targets::extract (see src/fuzz_targets.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| occy::fuzz_targets::extract(data));
