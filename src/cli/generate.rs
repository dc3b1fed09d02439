//! `occy generate DIR [--set NAME]` (hidden): writes one of the deterministic
//! image sets of [`crate::generate`] as an OCI layout. Used to make the
//! committed example image and the benchmark inputs; tests call the library.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::GlobalArgs;
use crate::error::Result;
use crate::generate::{
    bench_set, big_image, mirror_set, quickstart, shard_set, standard_set, write_layout, Content, LayerCompression,
};

/// Which images to generate.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ImageSet {
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

/// Arguments of `occy generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Directory of the OCI layout to write
    pub dir: PathBuf,

    /// The image set
    #[arg(long, value_enum, default_value = "standard")]
    pub set: ImageSet,

    /// Size of the big layer's file, in MiB (--set big)
    #[arg(long, default_value_t = 64)]
    pub size: u64,

    /// Store the big layer uncompressed instead of gzip (--set big)
    #[arg(long)]
    pub uncompressed: bool,

    /// What the data of big and benchmark layers looks like (--set big|bench-mirror)
    #[arg(long, value_enum, default_value = "realistic")]
    pub content: Content,

    #[command(flatten)]
    pub bench: crate::generate::bench_set::BenchArgs,
}

/// Writes the set and prints one `name digest` line per image.
pub async fn run(_global: &GlobalArgs, args: &GenerateArgs) -> Result<i32> {
    let specs = match args.set {
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
            big_image(args.size * 1024 * 1024, compression, args.content)
        }
    };
    let dir = args.dir.clone();
    let generated = tokio::task::spawn_blocking(move || write_layout(&dir, &specs))
        .await
        .map_err(|e| crate::error::Error::invalid(format!("generator task failed: {e}")))??;
    for g in generated {
        println!("{} {}", g.name, g.descriptor.digest);
    }
    Ok(0)
}
