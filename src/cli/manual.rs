//! `occy man`: the manual pages, rendered from the clap definitions so they
//! never drift from `--help` (occy.1, and occy-COMMAND.1 with `--dir`).

use std::path::Path;

use clap::CommandFactory;

use super::Cli;
use crate::error::{Error, Result};

/// The roff of `cmd`'s page.
fn page(cmd: clap::Command) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .map_err(|e| Error::invalid(format!("cannot render the man page: {e}")))?;
    Ok(out)
}

/// Prints occy.1, or writes every page into `dir`.
pub fn run(dir: Option<&Path>) -> Result<i32> {
    let cmd = Cli::command();
    let Some(dir) = dir else {
        use std::io::Write;
        std::io::stdout()
            .write_all(&page(cmd)?)
            .map_err(|e| Error::io("write the man page to", "stdout", e))?;
        return Ok(0);
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create the directory", dir, e))?;
    clap_mangen::generate_to(cmd, dir).map_err(|e| Error::io("write man pages into", dir, e))?;
    eprintln!(
        "wrote occy.1 and a page per command (occy-sync.1, …) into {}",
        dir.display()
    );
    Ok(0)
}
