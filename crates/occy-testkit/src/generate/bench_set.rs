//! The image sets of the peer benchmark (`bench/compare.sh`), as
//! deterministic as the rest of the generator:
//!
//! - [`mirror_bench_set`]: `app-00` … images sharing a stack of base layers
//!   (image *i* takes the first `i % bases + 1` of them, as images built on a
//!   common OS, runtime and framework layer do) plus one or two layers of
//!   their own. Layers hold many files, so filters have entries to rewrite.
//! - [`plan_bench_set`]: `rNN_tNNN` tiny images (a shared base and a small
//!   layer each), many tags over many repositories, for timing `--plan`.

use clap::Args;

use super::{
    amd64, content, file, image, pattern, Content, Entry, LayerCompression, LayerSpec, MediaTypes, NamedSpec, Spec,
};

const MIB: u64 = 1024 * 1024;

/// The size of the data files a benchmark layer is split into.
const FILE_SIZE: u64 = MIB;

/// Options of the benchmark sets (`occy-testkit generate --set bench-mirror|bench-plan`).
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Images of the mirror set (--set bench-mirror)
    #[arg(long, default_value_t = 20)]
    pub images: usize,

    /// Sizes of the shared base layers in MiB, comma-separated (--set bench-mirror)
    #[arg(long, value_delimiter = ',', default_values_t = [8u64, 24, 64])]
    pub base_sizes: Vec<u64>,

    /// Largest unique top layer in MiB; each image has one or two of 1/4 to all of it (--set bench-mirror)
    #[arg(long, default_value_t = 4)]
    pub top_size: u64,

    /// Repositories of the plan set (--set bench-plan)
    #[arg(long, default_value_t = 50)]
    pub repos: usize,

    /// Tags per repository of the plan set (--set bench-plan)
    #[arg(long, default_value_t = 20)]
    pub tags: usize,

    /// One OCI layout per repository, DIR/rNN, its images tagged tNNN (--set bench-plan)
    #[arg(long)]
    pub per_repo: bool,
}

/// A layer of `size` bytes of data under `dir`, plus a few small text
/// files: realistic files of many sizes, or pseudo-random files of at most
/// [`FILE_SIZE`].
fn data_layer(dir: &str, size: u64, seed: u64, created_by: String, kind: Content) -> LayerSpec {
    let mut entries = vec![Entry::Dir(dir.to_string()), Entry::Dir(format!("{dir}/etc"))];
    for k in 0..16u64 {
        entries.push(file(
            &format!("{dir}/etc/conf-{k:02}.cfg"),
            format!("# layer {seed}, file {k}\nkey={}\n", seed * 31 + k),
        ));
    }
    match kind {
        Content::Realistic => entries.extend(content::realistic_tree(&format!("{dir}/lib"), size, seed)),
        Content::Random => {
            entries.push(Entry::Dir(format!("{dir}/lib")));
            let (mut left, mut n) = (size, 0u64);
            while left > 0 {
                let this = left.min(FILE_SIZE);
                entries.push(Entry::Big(
                    format!("{dir}/lib/data-{n:04}.bin"),
                    this,
                    seed.wrapping_mul(10_007).wrapping_add(n),
                ));
                left -= this;
                n += 1;
            }
        }
    }
    LayerSpec {
        entries,
        compression: LayerCompression::Gzip,
        created_by,
    }
}

/// `images` images named `app-00` …: image *i* takes the first
/// `i % base_sizes.len() + 1` shared base layers (sizes in MiB) and one
/// (even *i*) or two (odd *i*) layers of its own, each 1/4 to all of
/// `top_size` MiB.
pub fn mirror_bench_set(images: usize, base_sizes: &[u64], top_size: u64, kind: Content) -> Vec<NamedSpec> {
    let bases: Vec<LayerSpec> = base_sizes
        .iter()
        .enumerate()
        .map(|(k, mib)| {
            data_layer(
                &format!("base{k}"),
                mib * MIB,
                1_000 + k as u64,
                format!("/bin/sh -c #(nop) ADD base{k}.tar /"),
                kind,
            )
        })
        .collect();
    (0..images)
        .map(|i| {
            let name = format!("app-{i:02}");
            let mut layers: Vec<LayerSpec> = bases[..(i % bases.len().max(1) + 1).min(bases.len())].to_vec();
            for t in 0..(1 + i % 2) {
                let quarters = 1 + ((i + t) % 4) as u64;
                layers.push(data_layer(
                    &format!("srv/{name}/part{t}"),
                    (top_size * MIB * quarters / 4).max(1024),
                    10_000 + (i * 2 + t) as u64,
                    format!("/bin/sh -c #(nop) COPY part{t} /srv/{name}/part{t}"),
                    kind,
                ));
            }
            NamedSpec {
                name: name.clone(),
                spec: Spec::Image(image(amd64(), MediaTypes::Oci, layers, &name)),
            }
        })
        .collect()
}

/// `repos` × `tags` tiny images named `rNN_tNNN` (repository NN, tag
/// tNNN), each a shared base layer and a small layer of its own: made one at
/// a time as the iterator is read, so any number of them takes the memory
/// of one (with [`super::write_layout_each`]).
pub fn plan_bench_set(repos: usize, tags: usize) -> impl Iterator<Item = NamedSpec> {
    (0..repos).flat_map(move |r| plan_bench_repo(r, tags))
}

/// The `tags` images of repository `r` of [`plan_bench_set`].
pub fn plan_bench_repo(r: usize, tags: usize) -> impl Iterator<Item = NamedSpec> {
    let base = LayerSpec {
        entries: vec![
            Entry::Dir("etc".into()),
            file("etc/os-release", "NAME=\"occy plan bench\"\nID=occyplan\n"),
        ],
        compression: LayerCompression::Gzip,
        created_by: "/bin/sh -c #(nop) ADD base.tar /".into(),
    };
    (0..tags).map(move |t| {
        let name = format!("r{r:02}_t{t:03}");
        let app = LayerSpec {
            entries: vec![
                Entry::Dir("srv".into()),
                file(&format!("srv/{name}.bin"), pattern((r * 1_000 + t) as u64 + 7, 512)),
            ],
            compression: LayerCompression::Gzip,
            created_by: format!("/bin/sh -c #(nop) COPY {name} /srv"),
        };
        NamedSpec {
            name: name.clone(),
            spec: Spec::Image(image(amd64(), MediaTypes::Oci, vec![base.clone(), app], &name)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::write_layout;

    #[test]
    fn images_share_a_prefix_of_the_base_layers() {
        let dir = tempfile::tempdir().unwrap();
        // Small sizes: 1 MiB bases, 1 MiB tops.
        let g = write_layout(dir.path(), &mirror_bench_set(4, &[1, 1, 1], 1, Content::Realistic)).unwrap();
        let layers = |i: usize| g[i].images[0].layers.clone();
        assert_eq!(layers(0).len(), 2); // base0 + one top
        assert_eq!(layers(1).len(), 4); // base0, base1 + two tops
        assert_eq!(layers(2).len(), 4); // three bases + one top
        assert_eq!(layers(0)[0].digest, layers(2)[0].digest);
        assert_eq!(layers(1)[1].digest, layers(2)[1].digest);
        assert_ne!(layers(0)[1].digest, layers(3)[1].digest);
        let again = write_layout(
            tempfile::tempdir().unwrap().path(),
            &mirror_bench_set(4, &[1, 1, 1], 1, Content::Realistic),
        )
        .unwrap();
        assert_eq!(g[3].descriptor.digest, again[3].descriptor.digest);
    }

    #[test]
    fn the_plan_set_has_one_image_per_tag() {
        let set: Vec<NamedSpec> = plan_bench_set(3, 4).collect();
        assert_eq!(set.len(), 12);
        assert_eq!(set[5].name, "r01_t001");
    }
}
