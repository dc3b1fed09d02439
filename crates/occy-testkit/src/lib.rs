//! occy's development kit, kept out of the shipped `occy` binary: the
//! deterministic test-image generator ([`generate`]) that the integration
//! tests, `examples/quickstart/image` and the benchmarks use, and the fuzz
//! entry points ([`fuzz_targets`]) that `fuzz/` and
//! `tests/it/fuzz_regressions.rs` run. The `occy-testkit` binary writes the
//! generator's image sets from the command line (`occy-testkit generate`).

pub mod fuzz_targets;
pub mod generate;
