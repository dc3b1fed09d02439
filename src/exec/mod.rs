//! The executor: moves images from sources to sinks. [`copy`] copies one
//! resolved target (the unit `occy process` runs and `occy sync` schedules),
//! with bounded layer concurrency, retries and byte accounting; [`filtered`]
//! does the same through a filter chain.

pub mod copy;
pub mod filtered;
pub mod progress;
pub mod sync;

pub use copy::{copy_image, CopyOptions, CopyReport};
