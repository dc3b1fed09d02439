//! Deterministic images for tests, examples and benchmarks. The same spec
//! always gives the same bytes, so the same digests: layers are tars with
//! fixed owners, modes and times, compressed with fixed settings; configs and
//! manifests are serialised from ordered JSON. Nothing is downloaded.
//!
//! [`standard_set`] holds the images the integration tests push to a real
//! registry (a set sharing a base layer, a multi-arch OCI index, a Docker v2
//! image and manifest list, a zstd layer, an uncompressed layer, whiteouts);
//! [`shard_set`] is a mirror in layer-sharing families for the sharding tests;
//! [`quickstart`] is the tiny image committed under `examples/`;
//! [`big_image`] has one layer of a chosen size, streamed to disk, for the
//! memory and speed benchmarks. [`write_layout`] writes specs as one OCI
//! image layout, one `org.opencontainers.image.ref.name` per spec.

pub mod bench_set;
pub mod content;

use occy::filter::layer::HashWriter;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use occy::error::{Error, Result};
use occy::image::media_type::{
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_INDEX,
    OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD, OCI_MANIFEST,
};
use occy::image::{Descriptor, Digest, Platform};

/// The modification time of every generated tar entry (2024-01-01T00:00:00Z).
pub const FIXED_MTIME: u64 = 1_704_067_200;
/// The `created` time of every generated config and history entry.
pub const FIXED_CREATED: &str = "2024-01-01T00:00:00Z";

/// One entry of a generated layer.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A directory (mode 0755).
    Dir(String),
    /// A regular file with its content and mode.
    File(String, Vec<u8>, u32),
    /// A file of `size` pseudo-random, half-compressible bytes made while it
    /// is written (never held in memory); `seed` picks the bytes.
    Big(String, u64, u64),
    /// A file of `size` bytes that compress like real programs and text
    /// ([`content::RealisticContent`]): `(path, size, seed, text_share)`.
    Realistic(String, u64, u64, u64),
    /// A symbolic link `path -> target`.
    Symlink(String, String),
    /// A hard link `path` to the earlier entry `target` of the same layer.
    Hardlink(String, String),
    /// A whiteout deleting `path` from the layers below (`.wh.<name>`).
    Whiteout(String),
    /// An opaque-directory marker hiding everything below `dir` from the
    /// layers below (`dir/.wh..wh..opq`).
    Opaque(String),
    /// A regular file (mode 0755) with an extended attribute, stored as a
    /// PAX `SCHILY.xattr.<key>` record: `(path, content, key, value)`.
    XattrFile(String, Vec<u8>, String, Vec<u8>),
}

/// How a generated layer blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
}

/// Which family of media types a generated image uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTypes {
    Oci,
    /// Docker v2 schema 2 (manifest, manifest list, config, layers).
    Docker,
}

/// One generated layer.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    pub entries: Vec<Entry>,
    pub compression: LayerCompression,
    /// The history `created_by` line of this layer.
    pub created_by: String,
}

/// One generated single-platform image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub platform: Platform,
    pub layers: Vec<LayerSpec>,
    pub media_types: MediaTypes,
    pub env: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub labels: Vec<(String, String)>,
    /// History entries without a layer (ENV, LABEL ...), placed first.
    pub empty_history: Vec<String>,
}

/// A generated image or index. (Specs are few and built once, so the
/// variants' size difference does not matter.)
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Spec {
    Image(ImageSpec),
    /// An index (OCI) or manifest list (Docker) of per-platform images.
    Index(MediaTypes, Vec<ImageSpec>),
}

/// A spec and the name it is stored under.
#[derive(Debug, Clone)]
pub struct NamedSpec {
    /// The `org.opencontainers.image.ref.name` of the layout entry; the tests
    /// use it as the repository name too.
    pub name: String,
    pub spec: Spec,
}

/// What [`write_layout`] wrote for one spec.
#[derive(Debug, Clone)]
pub struct Generated {
    pub name: String,
    /// The descriptor of the top manifest or index.
    pub descriptor: Descriptor,
    /// Per platform image: its manifest digest and its layers' diff_ids.
    pub images: Vec<GeneratedImage>,
}

/// One platform image written by [`write_layout`].
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    pub platform: Platform,
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
}

fn platform(os: &str, arch: &str, variant: Option<&str>) -> Platform {
    Platform {
        os: os.into(),
        architecture: arch.into(),
        variant: variant.map(String::from),
        ..Default::default()
    }
}

fn file(path: &str, content: impl AsRef<[u8]>) -> Entry {
    Entry::File(path.into(), content.as_ref().to_vec(), 0o644)
}

/// Bytes that look like a small program's data: deterministic, partly compressible.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = XorShift::new(seed);
    let mut out = vec![0u8; len];
    rng.fill(&mut out);
    out
}

/// The base layer the standard images share, byte for byte.
fn base_layer(compression: LayerCompression) -> LayerSpec {
    LayerSpec {
        entries: vec![
            Entry::Dir("bin".into()),
            Entry::Dir("etc".into()),
            Entry::Dir("usr".into()),
            Entry::Dir("usr/bin".into()),
            Entry::Dir("usr/share".into()),
            Entry::Dir("usr/share/doc".into()),
            file(
                "etc/os-release",
                "NAME=\"occy test base\"\nID=occybase\nVERSION_ID=1.0\n",
            ),
            file("etc/hosts", "127.0.0.1 localhost\n"),
            file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            Entry::File("bin/hello".into(), b"#!/bin/sh\necho hello from occy\n".to_vec(), 0o755),
            Entry::Symlink("bin/sh".into(), "hello".into()),
            Entry::Hardlink("usr/bin/hello".into(), "bin/hello".into()),
            file("usr/share/doc/README", "The base layer of occy's test images.\n"),
            file("usr/share/doc/data.bin", pattern(1, 48 * 1024)),
        ],
        compression,
        created_by: "/bin/sh -c #(nop) ADD base.tar /".into(),
    }
}

fn app_layer(name: &str, seed: u64, compression: LayerCompression) -> LayerSpec {
    LayerSpec {
        entries: vec![
            Entry::Dir("srv".into()),
            Entry::Dir(format!("srv/{name}")),
            file(
                &format!("srv/{name}/config.json"),
                format!("{{\"name\":\"{name}\",\"port\":8080}}\n"),
            ),
            file(&format!("srv/{name}/data.bin"), pattern(seed, 64 * 1024)),
        ],
        compression,
        created_by: format!("/bin/sh -c #(nop) COPY {name} /srv/{name}"),
    }
}

fn image(plat: Platform, media_types: MediaTypes, layers: Vec<LayerSpec>, name: &str) -> ImageSpec {
    ImageSpec {
        platform: plat,
        layers,
        media_types,
        env: vec!["PATH=/usr/bin:/bin".into(), format!("APP={name}")],
        cmd: vec!["/bin/hello".into()],
        working_dir: "/srv".into(),
        labels: vec![("org.opencontainers.image.title".into(), name.into())],
        empty_history: vec![format!(
            "/bin/sh -c #(nop)  LABEL org.opencontainers.image.title={name}"
        )],
    }
}

fn amd64() -> Platform {
    platform("linux", "amd64", None)
}

/// The images the integration tests use, covering what a mirror meets:
/// `base`, `app-a` and `app-b` (sharing the base layer), `multiarch` (OCI
/// index, linux/amd64 + linux/arm64/v8), `dockerv2` (Docker media types),
/// `dockerlist` (Docker manifest list), `zstd` (a zstd layer), `plain`
/// (an uncompressed layer) and `whiteouts` (file and opaque-dir whiteouts).
pub fn standard_set() -> Vec<NamedSpec> {
    use LayerCompression::*;
    let named = |name: &str, spec: Spec| NamedSpec {
        name: name.into(),
        spec,
    };
    let arch_image = |arch: &str, variant: Option<&str>, mt: MediaTypes, seed: u64| {
        let mut app = app_layer("multi", seed, Gzip);
        app.entries.push(file("srv/multi/arch", format!("{arch}\n")));
        image(
            platform("linux", arch, variant),
            mt,
            vec![base_layer(Gzip), app],
            "multiarch",
        )
    };
    vec![
        named(
            "base",
            Spec::Image(image(amd64(), MediaTypes::Oci, vec![base_layer(Gzip)], "base")),
        ),
        named(
            "app-a",
            Spec::Image(image(
                amd64(),
                MediaTypes::Oci,
                vec![base_layer(Gzip), app_layer("app-a", 11, Gzip)],
                "app-a",
            )),
        ),
        named(
            "app-b",
            Spec::Image(image(
                amd64(),
                MediaTypes::Oci,
                vec![base_layer(Gzip), app_layer("app-b", 12, Gzip)],
                "app-b",
            )),
        ),
        named(
            "multiarch",
            Spec::Index(
                MediaTypes::Oci,
                vec![
                    arch_image("amd64", Option::None, MediaTypes::Oci, 21),
                    arch_image("arm64", Some("v8"), MediaTypes::Oci, 22),
                ],
            ),
        ),
        named(
            "dockerv2",
            Spec::Image(image(
                amd64(),
                MediaTypes::Docker,
                vec![base_layer(Gzip), app_layer("dockerv2", 31, Gzip)],
                "dockerv2",
            )),
        ),
        named(
            "dockerlist",
            Spec::Index(
                MediaTypes::Docker,
                vec![
                    arch_image("amd64", Option::None, MediaTypes::Docker, 41),
                    arch_image("arm64", Some("v8"), MediaTypes::Docker, 42),
                ],
            ),
        ),
        named(
            "zstd",
            Spec::Image(image(
                amd64(),
                MediaTypes::Oci,
                vec![base_layer(Gzip), app_layer("zstd", 51, Zstd)],
                "zstd",
            )),
        ),
        named(
            "plain",
            Spec::Image(image(
                amd64(),
                MediaTypes::Oci,
                vec![base_layer(Gzip), app_layer("plain", 61, None)],
                "plain",
            )),
        ),
        named("whiteouts", Spec::Image(whiteouts_image())),
    ]
}

fn whiteouts_image() -> ImageSpec {
    use LayerCompression::Gzip;
    let deletions = LayerSpec {
        entries: vec![
            Entry::Dir("etc".into()),
            Entry::Whiteout("etc/hosts".into()),
            Entry::Dir("usr".into()),
            Entry::Dir("usr/share".into()),
            Entry::Dir("usr/share/doc".into()),
            Entry::Opaque("usr/share/doc".into()),
            file("usr/share/doc/NEW", "only this file remains in doc/\n"),
            Entry::Dir("srv".into()),
            file("srv/kept", "kept\n"),
            Entry::XattrFile(
                "srv/ping".into(),
                b"#!/bin/sh\necho ping\n".to_vec(),
                "security.capability".into(),
                vec![1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
        ],
        compression: Gzip,
        created_by: "/bin/sh -c rm /etc/hosts && rm -rf /usr/share/doc/*".into(),
    };
    image(amd64(), MediaTypes::Oci, vec![base_layer(Gzip), deletions], "whiteouts")
}

/// The images of a registry mirror, for `occy sync` tests and examples:
/// `NAME_TAG` names (`alpine_3.18`… for the repository `lib/alpine`), every
/// image the shared base layer plus a layer of its own. `lib/alpine` has semver tags (one a release
/// candidate) and `latest`/`edge`; `apps/web` has `v`-tags; `apps/api` plain ones.
pub fn mirror_set() -> Vec<NamedSpec> {
    let mut out = Vec::new();
    let repos: [(&str, &[&str]); 3] = [
        (
            "lib/alpine",
            &[
                "3.17", "3.18", "3.18.1", "3.19", "3.19.1", "3.20", "3.21-rc1", "latest", "edge",
            ],
        ),
        ("apps/web", &["v1.0", "v1.1", "v2.0"]),
        ("apps/api", &["1.0", "1.1"]),
    ];
    let mut seed = 100;
    for (repo, tags) in repos {
        for tag in tags {
            seed += 1;
            let short = repo.rsplit('/').next().unwrap_or(repo);
            let name = format!("{short}_{tag}");
            let app = app_layer(&name, seed, LayerCompression::Gzip);
            out.push(NamedSpec {
                name: name.clone(),
                spec: Spec::Image(image(
                    amd64(),
                    MediaTypes::Oci,
                    vec![base_layer(LayerCompression::Gzip), app],
                    &name,
                )),
            });
        }
    }
    out
}

/// The layer of `size` pattern bytes at `path` a family of images shares (or
/// one image alone), created by `created_by`.
fn data_layer(path: &str, seed: u64, size: usize, created_by: &str) -> LayerSpec {
    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let mut entries = Vec::new();
    let mut at = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(part);
        entries.push(Entry::Dir(at.clone()));
    }
    entries.push(file(path, pattern(seed, size)));
    LayerSpec {
        entries,
        compression: LayerCompression::Gzip,
        created_by: created_by.into(),
    }
}

/// The images of a mirror split into shards (`occy sync --shard`): 23 images
/// named `REPO_TAG` with `/` spelled `-` (`debian-nginx_1.24` for
/// `debian/nginx:1.24`) in layer-sharing families. `debian/*` (6 images) and
/// `alpine/*` (5) and `node/*` (4) each share a base layer of their own;
/// `python/*` (5) shares a base and a runtime layer on top of it; `tools/*`
/// (3) share nothing. Every image has a layer of its own. No layer or config
/// is shared across families, so a partition by shared layers finds 4
/// families and 3 single images. Under 1 MiB in all.
pub fn shard_set() -> Vec<NamedSpec> {
    const KIB: usize = 1024;
    // (family, base size, runtime size or 0, [(repo, tags)])
    type Family<'a> = (&'a str, usize, usize, &'a [(&'a str, &'a [&'a str])]);
    let families: [Family; 5] = [
        (
            "debian",
            64 * KIB,
            0,
            &[
                ("nginx", &["1.24", "1.25"]),
                ("postgres", &["15", "16"]),
                ("redis", &["7.0", "7.2"]),
            ],
        ),
        (
            "alpine",
            32 * KIB,
            0,
            &[
                ("caddy", &["2.7", "2.8"]),
                ("haproxy", &["2.8", "2.9"]),
                ("memcached", &["1.6"]),
            ],
        ),
        (
            "python",
            48 * KIB,
            32 * KIB,
            &[
                ("django", &["4.2", "5.0"]),
                ("flask", &["2.3", "3.0"]),
                ("celery", &["5.3"]),
            ],
        ),
        (
            "node",
            48 * KIB,
            0,
            &[("express", &["4", "5"]), ("next", &["13", "14"])],
        ),
        (
            "tools",
            0,
            0,
            &[("busybox", &["1.36"]), ("pause", &["3.9"]), ("etcd", &["3.5"])],
        ),
    ];
    let mut out = Vec::new();
    let mut seed = 500;
    for (fi, (family, base_size, runtime_size, repos)) in families.iter().enumerate() {
        let family_seed = 400 + fi as u64 * 2;
        let mut shared = Vec::new();
        if *base_size > 0 {
            shared.push(data_layer(
                &format!("usr/lib/{family}/base.bin"),
                family_seed,
                *base_size,
                &format!("/bin/sh -c #(nop) ADD {family}-base.tar /"),
            ));
        }
        if *runtime_size > 0 {
            shared.push(data_layer(
                &format!("opt/{family}/runtime.bin"),
                family_seed + 1,
                *runtime_size,
                &format!("/bin/sh -c #(nop) ADD {family}-runtime.tar /opt/{family}"),
            ));
        }
        for (repo, tags) in repos.iter() {
            for tag in tags.iter() {
                seed += 1;
                let name = format!("{family}-{repo}_{tag}");
                // Images of no family are bigger on their own.
                let own = if *base_size == 0 { 40 * KIB } else { 24 * KIB };
                let mut layers = shared.clone();
                layers.push(data_layer(
                    &format!("srv/{repo}/{tag}/app.bin"),
                    seed,
                    own,
                    &format!("/bin/sh -c #(nop) COPY {repo}-{tag} /srv/{repo}/{tag}"),
                ));
                out.push(NamedSpec {
                    name: name.clone(),
                    spec: Spec::Image(image(amd64(), MediaTypes::Oci, layers, &name)),
                });
            }
        }
    }
    out
}

/// The tiny image committed as `examples/quickstart/image` (tag `1.0`): a
/// small base layer and an application layer, a few KiB in all.
pub fn quickstart() -> Vec<NamedSpec> {
    let base = LayerSpec {
        entries: vec![
            Entry::Dir("bin".into()),
            Entry::Dir("etc".into()),
            file(
                "etc/os-release",
                "NAME=\"occy quickstart\"\nID=occyquick\nVERSION_ID=1.0\n",
            ),
            Entry::File("bin/hello".into(), b"#!/bin/sh\necho hello from occy\n".to_vec(), 0o755),
            Entry::Symlink("bin/sh".into(), "hello".into()),
        ],
        compression: LayerCompression::Gzip,
        created_by: "/bin/sh -c #(nop) ADD base.tar /".into(),
    };
    let app = LayerSpec {
        entries: vec![
            Entry::Dir("etc".into()),
            file("etc/motd", "Hello from occy's quickstart image.\n"),
            Entry::Dir("srv".into()),
            Entry::Dir("srv/www".into()),
            file(
                "srv/www/index.html",
                "<!doctype html><title>occy</title><p>It works.</p>\n",
            ),
            Entry::File("srv/run.sh".into(), b"#!/bin/sh\ncat /etc/motd\n".to_vec(), 0o755),
        ],
        compression: LayerCompression::Gzip,
        created_by: "/bin/sh -c #(nop) COPY rootfs /".into(),
    };
    let mut img = image(amd64(), MediaTypes::Oci, vec![base, app], "quickstart");
    img.cmd = vec!["/srv/run.sh".into()];
    vec![NamedSpec {
        name: "1.0".into(),
        spec: Spec::Image(img),
    }]
}

/// What the big data of a generated layer looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Content {
    /// A tree of files that compress like a root filesystem's
    /// ([`content::realistic_tree`]): deflate finds matches, as in real layers.
    Realistic,
    /// One file of pseudo-random bytes with six random bits each: gzip saves
    /// a quarter by entropy coding alone and finds no matches (the cheapest
    /// case for a high compression level, the worst for a fast one).
    Random,
}

/// An image whose second layer holds `size` bytes of data, for memory and
/// speed measurements (stored under the name `big`): one file of random
/// bytes, or a tree of realistic files.
pub fn big_image(size: u64, compression: LayerCompression, content: Content) -> Vec<NamedSpec> {
    let (entries, created_by) = match content {
        Content::Random => (
            vec![Entry::Dir("data".into()), Entry::Big("data/blob.bin".into(), size, 7)],
            format!("/bin/sh -c dd of=/data/blob.bin bs=1 count={size}"),
        ),
        Content::Realistic => (
            content::realistic_tree("usr", size, 7),
            "/bin/sh -c #(nop) ADD rootfs.tar /".to_string(),
        ),
    };
    let big = LayerSpec {
        entries,
        compression,
        created_by,
    };
    vec![NamedSpec {
        name: "big".into(),
        spec: Spec::Image(image(
            amd64(),
            MediaTypes::Oci,
            vec![base_layer(LayerCompression::Gzip), big],
            "big",
        )),
    }]
}

/// Writes `specs` as one OCI image layout in `dir` (created if missing; an
/// existing layout's `index.json` is replaced).
pub fn write_layout(dir: &Path, specs: &[NamedSpec]) -> Result<Vec<Generated>> {
    let mut out = Vec::with_capacity(specs.len());
    write_layout_each(dir, specs.iter().cloned(), |g| {
        out.push(g);
        Ok(())
    })?;
    Ok(out)
}

/// [`write_layout`] for any number of specs in bounded memory: each spec is
/// written as it comes, handed to `each` and forgotten; `index.json` is
/// streamed to a temporary file and renamed into place at the end (the same
/// bytes as [`write_layout`] writes).
pub fn write_layout_each(
    dir: &Path,
    specs: impl IntoIterator<Item = NamedSpec>,
    mut each: impl FnMut(Generated) -> Result<()>,
) -> Result<()> {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| Error::io("create", &blobs, e))?;
    let writer = BlobStore { dir: blobs };
    let index_path = dir.join("index.json");
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io("create a temp file in", dir, e))?;
    let file = tmp.reopen().map_err(|e| Error::io("open", tmp.path(), e))?;
    let mut index = BufWriter::new(file);
    let io_err = |e: io::Error| Error::io("write", &index_path, e);
    // The bytes serde_json writes for {"schemaVersion":2,"mediaType":…,"manifests":[…]}.
    let head = to_json(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX}))?;
    index.write_all(&head[..head.len() - 1]).map_err(io_err)?;
    index.write_all(br#","manifests":["#).map_err(io_err)?;
    for (n, named) in specs.into_iter().enumerate() {
        let (mut descriptor, images) = match &named.spec {
            Spec::Image(img) => {
                let g = writer.write_image(img)?;
                (g.manifest.clone(), vec![g])
            }
            Spec::Index(mt, imgs) => {
                let mut images = Vec::new();
                let mut entries = Vec::new();
                for img in imgs {
                    let g = writer.write_image(img)?;
                    let mut d = g.manifest.clone();
                    d.set_platform(Some(img.platform.clone()));
                    entries.push(d);
                    images.push(g);
                }
                let media_type = match mt {
                    MediaTypes::Oci => OCI_INDEX,
                    MediaTypes::Docker => DOCKER_MANIFEST_LIST,
                };
                let index = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": entries});
                let d = writer.write_json(&index, media_type)?;
                (d, images)
            }
        };
        let mut top = descriptor.clone();
        top.set_annotations(Some(
            [("org.opencontainers.image.ref.name".to_string(), named.name.clone())].into(),
        ));
        if n > 0 {
            index.write_all(b",").map_err(io_err)?;
        }
        serde_json::to_writer(&mut index, &top)
            .map_err(|e| Error::invalid(format!("serialising generated JSON: {e}")))?;
        descriptor.set_annotations(None);
        each(Generated {
            name: named.name,
            descriptor,
            images,
        })?;
    }
    index.write_all(b"]}").map_err(io_err)?;
    index.flush().map_err(io_err)?;
    drop(index);
    write_small(&dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    // Readable as a file written by std::fs::write is (a temp file is 0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io("set the mode of", tmp.path(), e))?;
    }
    tmp.persist(&index_path)
        .map_err(|e| Error::io("rename into place", &index_path, e.error))?;
    Ok(())
}

fn to_json(v: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::invalid(format!("serialising generated JSON: {e}")))
}

fn write_small(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io("write", path, e))
}

/// Writes blobs into `blobs/sha256`, each under its digest.
struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    fn write_json(&self, v: &Value, media_type: &str) -> Result<Descriptor> {
        let bytes = to_json(v)?;
        let digest = Digest::of(&bytes);
        write_small(&self.dir.join(digest.hex()), &bytes)?;
        Ok(Descriptor::new(media_type, digest, bytes.len() as u64))
    }

    fn write_image(&self, img: &ImageSpec) -> Result<GeneratedImage> {
        let docker = img.media_types == MediaTypes::Docker;
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for layer in &img.layers {
            let (desc, diff_id) = self.write_layer(layer, img.media_types)?;
            layers.push(desc);
            diff_ids.push(diff_id);
        }
        let mut history: Vec<Value> = img
            .empty_history
            .iter()
            .map(|c| json!({"created": FIXED_CREATED, "created_by": c, "empty_layer": true}))
            .collect();
        history.extend(
            img.layers
                .iter()
                .map(|l| json!({"created": FIXED_CREATED, "created_by": l.created_by})),
        );
        let labels: serde_json::Map<String, Value> = img
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let mut config = json!({
            "created": FIXED_CREATED,
            "architecture": img.platform.architecture,
        });
        if let Some(v) = &img.platform.variant {
            config["variant"] = json!(v);
        }
        config["os"] = json!(img.platform.os);
        config["config"] = json!({
            "Env": img.env,
            "Cmd": img.cmd,
            "WorkingDir": img.working_dir,
            "Labels": labels,
        });
        config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
        config["history"] = Value::Array(history);
        let config_desc = self.write_json(&config, if docker { DOCKER_CONFIG } else { OCI_CONFIG })?;
        let manifest_type = if docker { DOCKER_MANIFEST } else { OCI_MANIFEST };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config_desc,
            "layers": layers,
        });
        let manifest_desc = self.write_json(&manifest, manifest_type)?;
        Ok(GeneratedImage {
            platform: img.platform.clone(),
            manifest: manifest_desc,
            config: config_desc,
            layers,
            diff_ids,
        })
    }

    /// Streams one layer: tar → diff_id hash → compressor → digest hash → file.
    fn write_layer(&self, layer: &LayerSpec, mt: MediaTypes) -> Result<(Descriptor, Digest)> {
        let tmp =
            tempfile::NamedTempFile::new_in(&self.dir).map_err(|e| Error::io("create a temp file in", &self.dir, e))?;
        let file = tmp.reopen().map_err(|e| Error::io("open", tmp.path(), e))?;
        let stored = HashWriter::new(BufWriter::with_capacity(256 * 1024, file));
        let compressor = match layer.compression {
            LayerCompression::None => Compressor::None(stored),
            LayerCompression::Gzip => Compressor::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(stored, flate2::Compression::new(6)),
            ),
            LayerCompression::Zstd => Compressor::Zstd(
                zstd::stream::write::Encoder::new(stored, 3).map_err(|e| Error::io("start zstd for", &self.dir, e))?,
            ),
        };
        let mut builder = tar::Builder::new(HashWriter::new(compressor));
        builder.mode(tar::HeaderMode::Deterministic);
        for entry in &layer.entries {
            append_entry(&mut builder, entry).map_err(|e| Error::io("write a layer in", &self.dir, e))?;
        }
        let uncompressed = builder
            .into_inner()
            .map_err(|e| Error::io("finish a layer in", &self.dir, e))?;
        let (compressor, diff_id, _) = uncompressed.finish();
        let stored = compressor
            .finish()
            .map_err(|e| Error::io("compress a layer in", &self.dir, e))?;
        let (mut buffered, digest, size) = stored.finish();
        buffered
            .flush()
            .map_err(|e| Error::io("flush a layer in", &self.dir, e))?;
        let dest = self.dir.join(digest.hex());
        tmp.persist(&dest)
            .map_err(|e| Error::io("rename a layer to", &dest, e.error))?;
        let media_type = match (mt, layer.compression) {
            (MediaTypes::Oci, LayerCompression::None) => OCI_LAYER_TAR,
            (MediaTypes::Oci, LayerCompression::Gzip) => OCI_LAYER_GZIP,
            (MediaTypes::Oci, LayerCompression::Zstd) => OCI_LAYER_ZSTD,
            (MediaTypes::Docker, LayerCompression::None) => DOCKER_LAYER_TAR,
            (MediaTypes::Docker, LayerCompression::Gzip) => DOCKER_LAYER_GZIP,
            (MediaTypes::Docker, LayerCompression::Zstd) => {
                return Err(Error::usage("Docker v2 media types have no zstd layer type"))
            }
        };
        Ok((Descriptor::new(media_type, digest, size), diff_id))
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(FIXED_MTIME);
    h
}

fn append_entry<W: Write>(b: &mut tar::Builder<W>, entry: &Entry) -> io::Result<()> {
    match entry {
        Entry::Dir(path) => b.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), path, io::empty()),
        Entry::File(path, content, mode) => b.append_data(
            &mut header(tar::EntryType::Regular, *mode, content.len() as u64),
            path,
            content.as_slice(),
        ),
        Entry::Big(path, size, seed) => {
            let reader = io::Read::take(XorShift::new(*seed), *size);
            b.append_data(&mut header(tar::EntryType::Regular, 0o644, *size), path, reader)
        }
        Entry::Realistic(path, size, seed, text_share) => {
            let reader = io::Read::take(content::RealisticContent::new(*seed, *text_share), *size);
            b.append_data(&mut header(tar::EntryType::Regular, 0o644, *size), path, reader)
        }
        Entry::Symlink(path, target) => b.append_link(&mut header(tar::EntryType::Symlink, 0o777, 0), path, target),
        Entry::Hardlink(path, target) => b.append_link(&mut header(tar::EntryType::Link, 0o644, 0), path, target),
        Entry::Whiteout(path) => {
            let (dir, name) = match path.rsplit_once('/') {
                Some((d, n)) => (format!("{d}/"), n),
                None => (String::new(), path.as_str()),
            };
            b.append_data(
                &mut header(tar::EntryType::Regular, 0o644, 0),
                format!("{dir}.wh.{name}"),
                io::empty(),
            )
        }
        Entry::Opaque(dir) => b.append_data(
            &mut header(tar::EntryType::Regular, 0o644, 0),
            format!("{}/.wh..wh..opq", dir.trim_end_matches('/')),
            io::empty(),
        ),
        Entry::XattrFile(path, content, key, value) => {
            let record = format!("SCHILY.xattr.{key}");
            b.append_pax_extensions([(record.as_str(), value.as_slice())])?;
            b.append_data(
                &mut header(tar::EntryType::Regular, 0o755, content.len() as u64),
                path,
                content.as_slice(),
            )
        }
    }
}

type StoredFile = HashWriter<BufWriter<File>>;

/// The compression stage of a generated layer.
enum Compressor {
    None(StoredFile),
    Gzip(flate2::write::GzEncoder<StoredFile>),
    Zstd(zstd::stream::write::Encoder<'static, StoredFile>),
}

impl Compressor {
    fn finish(self) -> io::Result<StoredFile> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip(w) => w.finish(),
            Compressor::Zstd(w) => w.finish(),
        }
    }
}

impl Write for Compressor {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w) => w.flush(),
        }
    }
}

/// A tiny deterministic generator of half-compressible bytes: each byte has
/// six random bits, so gzip saves about a quarter, as on real binaries.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            for (b, r) in chunk.iter_mut().zip(v) {
                *b = (r & 0x3f) + 0x20;
            }
        }
    }
}

impl io::Read for XorShift {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fill(buf);
        Ok(buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_spec_gives_the_same_digests() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ga = write_layout(a.path(), &standard_set()).unwrap();
        let gb = write_layout(b.path(), &standard_set()).unwrap();
        for (x, y) in ga.iter().zip(&gb) {
            assert_eq!(x.descriptor.digest, y.descriptor.digest, "{}", x.name);
        }
        assert_eq!(
            std::fs::read(a.path().join("index.json")).unwrap(),
            std::fs::read(b.path().join("index.json")).unwrap()
        );
    }

    #[test]
    fn every_blob_is_named_by_its_digest_and_the_base_layer_is_shared() {
        let dir = tempfile::tempdir().unwrap();
        let generated = write_layout(dir.path(), &standard_set()).unwrap();
        for entry in std::fs::read_dir(dir.path().join("blobs/sha256")).unwrap() {
            let entry = entry.unwrap();
            let bytes = std::fs::read(entry.path()).unwrap();
            assert_eq!(Digest::of(&bytes).hex(), entry.file_name().to_str().unwrap());
        }
        let first_layer = |name: &str| {
            generated.iter().find(|g| g.name == name).unwrap().images[0].layers[0]
                .digest
                .clone()
        };
        assert_eq!(first_layer("app-a"), first_layer("app-b"));
        assert_eq!(first_layer("base"), first_layer("zstd"));
        let multi = generated.iter().find(|g| g.name == "multiarch").unwrap();
        assert_eq!(multi.images.len(), 2);
        assert_eq!(multi.descriptor.media_type, OCI_INDEX);
    }

    #[test]
    fn diff_ids_hash_the_uncompressed_tar() {
        let dir = tempfile::tempdir().unwrap();
        let generated = write_layout(dir.path(), &standard_set()).unwrap();
        let zstd_image = &generated.iter().find(|g| g.name == "zstd").unwrap().images[0];
        let blob = std::fs::read(dir.path().join("blobs/sha256").join(zstd_image.layers[1].digest.hex())).unwrap();
        let tar = zstd::decode_all(blob.as_slice()).unwrap();
        assert_eq!(Digest::of(&tar), zstd_image.diff_ids[1]);
        let mut names = Vec::new();
        let whiteouts = &generated.iter().find(|g| g.name == "whiteouts").unwrap().images[0];
        let blob = std::fs::read(dir.path().join("blobs/sha256").join(whiteouts.layers[1].digest.hex())).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob.as_slice()));
        for e in archive.entries().unwrap() {
            names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
        }
        assert!(names.contains(&"etc/.wh.hosts".to_string()), "{names:?}");
        assert!(names.contains(&"usr/share/doc/.wh..wh..opq".to_string()), "{names:?}");
    }

    #[test]
    fn big_layers_stream_to_the_requested_size() {
        let dir = tempfile::tempdir().unwrap();
        let generated = write_layout(
            dir.path(),
            &big_image(3 * 1024 * 1024 + 5, LayerCompression::Gzip, Content::Random),
        )
        .unwrap();
        let big = &generated[0].images[0];
        assert!(big.layers[1].size > 2 * 1024 * 1024 && big.layers[1].size < 3 * 1024 * 1024);
    }
}
