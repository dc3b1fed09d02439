//! Fuzzes occy_testkit::fuzz_targets::tar_rewrite (see crates/occy-testkit/src/fuzz_targets.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| occy_testkit::fuzz_targets::tar_rewrite(data));
