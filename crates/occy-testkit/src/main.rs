//! `occy-testkit generate DIR [--set NAME]`: writes one of the deterministic
//! image sets of [`occy_testkit::generate`] as an OCI layout and prints one
//! `name digest` line per image. Makes the committed example image
//! (`examples/quickstart/image`) and the benchmark inputs (`bench/*.sh`);
//! tests call the library instead.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use occy_testkit::generate::{
    bench_set, big_image, mirror_set, quickstart, shard_set, standard_set, write_layout, Content, LayerCompression,
    NamedSpec,
};

/// occy's development kit (not shipped): writes deterministic test images.
#[derive(Debug, Parser)]
#[command(name = "occy-testkit", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write deterministic test images as an OCI layout (for tests, examples, benchmarks)
    #[command(
        after_help = "Examples:\n  occy-testkit generate examples/quickstart/image --set quickstart\n  occy-testkit generate /tmp/big --set big --size 256 --content random"
    )]
    Generate(GenerateArgs),
}

/// Which images to generate.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ImageSet {
    /// The integration tests' images (shared base, multi-arch, Docker v2, zstd, whiteouts ...)
    Standard,
    /// The tiny image of examples/quickstart (tag 1.0)
    Quickstart,
    /// One image, `big`, with a layer of --size MiB
    Big,
    /// A registry mirror's images, named NAME_TAG (alpine_3.18 ...), sharing a base layer
    Mirror,
    /// 23 images in layer-sharing families, named FAMILY-REPO_TAG (debian-nginx_1.24 ...), for sharding
    Shard,
    /// The peer benchmark's mirror: app-00 ... sharing a stack of --base-sizes layers
    BenchMirror,
    /// The peer benchmark's plan set: --repos x --tags tiny images named rNN_tNNN
    BenchPlan,
}

/// Arguments of `occy-testkit generate`.
#[derive(Debug, Args)]
struct GenerateArgs {
    /// Directory of the OCI layout to write
    dir: PathBuf,

    /// The image set
    #[arg(long, value_enum, default_value = "standard")]
    set: ImageSet,

    /// Size of the big layer's file, in MiB (--set big)
    #[arg(long, default_value_t = 64)]
    size: u64,

    /// Store the big layer uncompressed instead of gzip (--set big)
    #[arg(long)]
    uncompressed: bool,

    /// What the data of big and benchmark layers looks like (--set big|bench-mirror)
    #[arg(long, value_enum, default_value = "realistic")]
    content: Content,

    #[command(flatten)]
    bench: bench_set::BenchArgs,
}

/// The specs of the chosen set, or what is wrong with the arguments.
fn specs(args: &GenerateArgs) -> Result<Vec<NamedSpec>, String> {
    Ok(match args.set {
        ImageSet::Standard => standard_set(),
        ImageSet::Mirror => mirror_set(),
        ImageSet::Shard => shard_set(),
        ImageSet::Quickstart => quickstart(),
        ImageSet::BenchMirror => bench_set::mirror_bench_set(
            args.bench.images,
            &args.bench.base_sizes,
            args.bench.top_size,
            args.content,
        ),
        ImageSet::BenchPlan => bench_set::plan_bench_set(args.bench.repos, args.bench.tags),
        ImageSet::Big => {
            let compression = if args.uncompressed {
                LayerCompression::None
            } else {
                LayerCompression::Gzip
            };
            let bytes = args.size.checked_mul(1024 * 1024).ok_or_else(|| {
                format!(
                    "--size {} MiB does not fit in 64 bits of bytes: give a smaller size",
                    args.size
                )
            })?;
            big_image(bytes, compression, args.content)
        }
    })
}

fn main() -> ExitCode {
    let Command::Generate(args) = Cli::parse().command;
    let specs = match specs(&args) {
        Ok(specs) => specs,
        Err(e) => {
            eprintln!("occy-testkit: {e}");
            return ExitCode::from(2);
        }
    };
    match write_layout(&args.dir, &specs) {
        Ok(generated) => {
            for g in generated {
                println!("{} {}", g.name, g.descriptor.digest);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("occy-testkit: {e}");
            ExitCode::FAILURE
        }
    }
}
