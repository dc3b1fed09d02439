//! `occy man`: the manual pages, rendered from the clap definitions so they
//! never drift from `--help` (occy.1, and occy-COMMAND.1 with `--dir`), and
//! the Markdown command reference `docs/commands.md` (`--markdown`).

use std::path::Path;

use super::command_line;
use crate::error::{Error, Result};

/// The roff of `cmd`'s page.
fn page(cmd: clap::Command) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .map_err(|e| Error::invalid(format!("cannot render the man page: {e}")))?;
    Ok(out)
}

/// The command reference in Markdown: each command's full `--help`.
pub fn markdown() -> String {
    let mut cmd = command_line().term_width(100);
    cmd.build();
    let mut out = String::from(
        "# Command reference\n\nGenerated from occy's `--help` by `occy man --markdown > docs/commands.md`;\na test fails when this file is stale.\n",
    );
    let mut section = |title: &str, c: &mut clap::Command| {
        let help = c.render_long_help().to_string();
        let help: Vec<&str> = help.lines().map(str::trim_end).collect();
        out.push_str(&format!(
            "\n## `{title}`\n\n```text\n{}\n```\n",
            help.join("\n").trim_end()
        ));
    };
    section("occy", &mut cmd.clone());
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let mut sub = sub.clone().term_width(100);
        section(&format!("occy {}", sub.get_name()), &mut sub);
    }
    out
}

/// Prints occy.1, or writes every page into `dir`, or prints the Markdown reference.
pub fn run(dir: Option<&Path>, as_markdown: bool) -> Result<i32> {
    if as_markdown {
        print!("{}", markdown());
        return Ok(0);
    }
    let cmd = command_line();
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
