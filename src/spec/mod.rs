//! The sync file: its model, parsing of YAML and TOML with every value's
//! place in the file, diagnostics that point at that place, and the checks
//! that turn a parsed file into a validated [`SyncSpec`].

pub mod command_line;
pub mod diagnostic;
pub mod located;
pub mod model;
pub mod validate;

pub use diagnostic::{SpecProblem, SpecSource};
pub use model::json_schema;
pub use validate::{
    load, parse, DestTemplate, Entry, HostAccess, ReferrerPolicy, Settings, SyncSpec, TagFilter, TemplateFields,
    VerifyKeys,
};
