//! Fuzzes occy_testkit::fuzz_targets::config (see crates/occy-testkit/src/fuzz_targets.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| occy_testkit::fuzz_targets::config(data));
