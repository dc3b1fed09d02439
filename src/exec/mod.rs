//! The executor: walks the plan's work graph ([`walk`]), moving each blob
//! once from its source to every store that needs it, rewriting each layer
//! once per filter chain ([`rewrite`]), committing, checking and recording
//! each target ([`sync`]), with progress on stderr ([`progress`]); run
//! reports of shards are merged by [`report`].

pub mod blob;
pub mod progress;
pub mod report;
pub mod rewrite;
pub mod sync;
pub mod walk;

pub use walk::CopyReport;
