//! `occy mirror-config FILE --format F [-o DIR]`: the runtime mirror
//! configuration (containerd, registries.conf, ImageDigestMirrorSet,
//! ImageTagMirrorSet) a sync file's source → destination mapping implies,
//! printed or written atomically into a directory; what a format cannot
//! express is left out with a warning.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::{GlobalArgs, OutputFormat};
use crate::error::{Error, Result};
use crate::mirror_config::{self, Format};

/// Arguments of `occy mirror-config`.
#[derive(Debug, Args)]
pub struct MirrorConfigArgs {
    /// The sync file (YAML or TOML)
    pub file: PathBuf,

    /// What to write
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Format,

    /// Write the files into this directory (made if missing; each file
    /// replaced atomically) instead of printing them. For containerd, the
    /// directory of HOST/hosts.toml: containerd's config_path
    /// (/etc/containerd/certs.d) or ctr's --hosts-dir
    #[arg(short = 'o', long = "out-dir", value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

#[derive(Serialize)]
struct JsonFile<'a> {
    path: &'a str,
    content: &'a str,
}

#[derive(Serialize)]
struct JsonLeftOut<'a> {
    what: &'a str,
    why: &'a str,
}

/// Runs `occy mirror-config`.
pub async fn run(global: &GlobalArgs, args: &MirrorConfigArgs) -> Result<i32> {
    if let Some(dir) = &args.out_dir {
        if dir.exists() && !dir.is_dir() {
            return Err(Error::usage(format!(
                "-o {}: that is a file, not a directory; name a directory to write the configuration into",
                dir.display()
            )));
        }
    }
    let spec = crate::spec::load(&args.file)?;
    let (mappings, mut left_out) = mirror_config::mappings(&spec, &global.insecure_registry)?;
    let name = object_name(&args.file);
    let origin = args.file.display().to_string();
    let out = mirror_config::render(args.format, &mappings, &name, &origin);
    left_out.extend(out.left_out.iter().cloned());
    for l in &left_out {
        tracing::warn!("left out {}: {}", l.what, l.why);
    }
    for n in &out.notes {
        tracing::warn!("{n}");
    }
    if out.files.is_empty() {
        return Err(Error::Unsupported(format!(
            "{}: no mapping of the sync file can be written as {}{}",
            args.file.display(),
            format_name(args.format),
            if left_out.is_empty() {
                " (no entry copies a registry image to a registry)".to_string()
            } else {
                format!(" ({} left out, see the warnings above)", left_out.len())
            }
        )));
    }
    match &args.out_dir {
        Some(dir) => {
            for (rel, content) in &out.files {
                let path = dir.join(rel);
                write(&path, content).await?;
                if !global.quiet {
                    eprintln!("wrote {}", path.display());
                }
            }
            if global.output_format == OutputFormat::Json {
                let files: Vec<_> = out
                    .files
                    .iter()
                    .map(|(p, _)| dir.join(p).display().to_string())
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "written": files, "left_out": json_left(&left_out) })
                );
            }
        }
        None if global.output_format == OutputFormat::Json => {
            let files: Vec<JsonFile> = out
                .files
                .iter()
                .map(|(p, c)| JsonFile { path: p, content: c })
                .collect();
            println!(
                "{}",
                serde_json::json!({ "files": files, "left_out": json_left(&left_out) })
            );
        }
        None => {
            let many = out.files.len() > 1;
            for (i, (rel, content)) in out.files.iter().enumerate() {
                if many {
                    if i > 0 {
                        println!();
                    }
                    println!("# ==> {rel} <==");
                }
                print!("{content}");
            }
        }
    }
    Ok(0)
}

fn json_left(left: &[mirror_config::LeftOut]) -> Vec<JsonLeftOut<'_>> {
    left.iter()
        .map(|l| JsonLeftOut {
            what: &l.what,
            why: &l.why,
        })
        .collect()
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Containerd => "containerd hosts.toml",
        Format::RegistriesConf => "registries.conf",
        Format::Idms => "an ImageDigestMirrorSet",
        Format::Itms => "an ImageTagMirrorSet",
    }
}

/// The sync file's stem as a Kubernetes object name (lower case letters,
/// digits and `-`).
fn object_name(file: &Path) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name = name.trim_matches('-').to_string();
    name.truncate(200);
    if name.is_empty() {
        "mirrors".to_string()
    } else {
        name
    }
}

async fn write(path: &Path, content: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| Error::io("create the directory", parent, e))?;
    }
    crate::sink::atomic::write_file_atomic(path, content.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_dns_labels() {
        assert_eq!(object_name(Path::new("/x/Airgap_Inside.yaml")), "airgap-inside");
        assert_eq!(object_name(Path::new("--.yaml")), "mirrors");
    }
}
