//! `occy-testkit generate DIR [--set NAME]`: writes one of the deterministic
//! image sets of [`occy_testkit::generate`] as an OCI layout and prints one
//! `name digest` line per image. Makes the committed example image
//! (`examples/quickstart/image`) and the benchmark inputs (`bench/*.sh`);
//! tests call the library instead.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use occy_testkit::generate::{
    bench_set, big_image, mirror_set, quickstart, shard_set, standard_set, write_layout_each, Content,
    LayerCompression, NamedSpec,
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
    /// Time occy's shard partition of --repos x --tags targets shaped like --set bench-plan's
    #[command(after_help = "Example:\n  occy-testkit partition --repos 100 --tags 1000 --shards 4")]
    Partition(PartitionArgs),
}

/// Arguments of `occy-testkit partition`.
#[derive(Debug, Args)]
struct PartitionArgs {
    #[arg(long, default_value_t = 100)]
    repos: usize,
    #[arg(long, default_value_t = 1000)]
    tags: usize,
    #[arg(long, default_value_t = 4)]
    shards: usize,
}

/// Partitions targets each writing a base shared by all, a layer and a
/// config of their own (what `occy sync --shards N` sees of bench-plan's
/// images) and prints the time the partition alone took and its shards.
fn partition_bench(a: &PartitionArgs) -> ExitCode {
    use occy::plan::shard::{partition, Item};
    let digest = |text: &str| occy::image::Digest::of(text.as_bytes()).to_string();
    let store = "registry://127.0.0.1:5000".to_string();
    let base = digest("base");
    let mut items = Vec::with_capacity(a.repos * a.tags);
    for r in 0..a.repos {
        for t in 0..a.tags {
            let key = format!(
                "registry://127.0.0.1:5000/plan/r{r:02}:t{t:03} <- registry://127.0.0.1:5001/plan/r{r:02}:t{t:03}"
            );
            items.push(Item {
                blobs: vec![
                    (store.clone(), base.clone(), 180),
                    (store.clone(), digest(&format!("{key} app")), 700),
                    (store.clone(), digest(&format!("{key} config")), 400),
                ],
                key,
            });
        }
    }
    let started = std::time::Instant::now();
    let p = partition(&items, a.shards);
    let took = started.elapsed();
    println!(
        "partition of {} targets into {} shards: {:.3} s; {} groups, {} split, {} bytes duplicated",
        items.len(),
        a.shards,
        took.as_secs_f64(),
        p.groups,
        p.split_groups,
        p.duplicated_bytes
    );
    let fair = items.len() as f64 / a.shards.max(1) as f64;
    for (i, s) in p.shards.iter().enumerate() {
        println!(
            "shard {i}: {} targets ({:+.1}% of the fair share), {} bytes, {} shared",
            s.targets,
            (s.targets as f64 / fair - 1.0) * 100.0,
            s.bytes,
            s.shared_bytes
        );
    }
    ExitCode::SUCCESS
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

/// The specs of the chosen set, or what is wrong with the arguments: made
/// as they are written where a set can be big (bench-plan).
fn specs(args: &GenerateArgs) -> Result<Box<dyn Iterator<Item = NamedSpec>>, String> {
    let specs: Vec<NamedSpec> = match args.set {
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
        ImageSet::BenchPlan => return Ok(Box::new(bench_set::plan_bench_set(args.bench.repos, args.bench.tags))),
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
    };
    Ok(Box::new(specs.into_iter()))
}

fn main() -> ExitCode {
    let args = match Cli::parse().command {
        Command::Generate(args) => args,
        Command::Partition(a) => return partition_bench(&a),
    };
    let specs = match specs(&args) {
        Ok(specs) => specs,
        Err(e) => {
            eprintln!("occy-testkit: {e}");
            return ExitCode::from(2);
        }
    };
    // One line per image as it is written: nothing is kept.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let stdout_error = |e| occy::error::Error::io("write to", std::path::Path::new("standard output"), e);
    let written = if matches!(args.set, ImageSet::BenchPlan) && args.bench.per_repo {
        drop(specs);
        // DIR/rNN holds repository NN's images, tagged tNNN.
        (0..args.bench.repos).try_for_each(|r| {
            let renamed = bench_set::plan_bench_repo(r, args.bench.tags).map(|mut s| {
                s.name = s.name.split_once('_').map(|(_, t)| t.to_string()).unwrap_or(s.name);
                s
            });
            write_layout_each(&args.dir.join(format!("r{r:02}")), renamed, |g| {
                writeln!(out, "r{r:02}_{} {}", g.name, g.descriptor.digest).map_err(stdout_error)
            })
        })
    } else {
        write_layout_each(&args.dir, specs, |g| {
            writeln!(out, "{} {}", g.name, g.descriptor.digest).map_err(stdout_error)
        })
    };
    match written.and_then(|()| out.flush().map_err(stdout_error)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("occy-testkit: {e}");
            ExitCode::FAILURE
        }
    }
}
