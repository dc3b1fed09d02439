//! Blob locations remembered across runs, like containers/image's blob-info
//! cache: per registry host, which repositories held which blobs when occy
//! last wrote them there or read them from there as a source. The planner
//! reads them to plan a cross-repository mount instead of an upload
//! ([`Remembered::candidates`]); `exec` records what a run saw
//! ([`BlobLocations::record`]).
//!
//! A remembered location is a hint, never a fact: a mount is the registry's
//! answer (201 mounted, 202 declined, then occy uploads), and nothing is
//! taken as present in a repository without a HEAD.
//!
//! Beside the blobs, the same file remembers which subjects had referrers
//! (signatures, SBOMs, attestations) in a destination repository when occy
//! last looked or copied them there ([`Remembered::referrers_held`]): the
//! planner then asks a destination about the referrers of a subject whose
//! source has none only when occy saw or put some there, to warn that the
//! source lost them.
//!
//! And it remembers the source repositories where a subject had no
//! referrers when occy last looked ([`Remembered::unreferred_since`]): an
//! image that is already mirrored, unchanged, and had none a short while ago
//! ([`UNREFERRED_FRESH_MILLIS`]) is not looked up again, so a warm run asks
//! each side for its tags alone. A signature added meanwhile is copied by
//! the first run after that while.
//!
//! One JSON file, `blob-locations.json` in the cache directory (beside the
//! layer cache's `layers/`), bounded to [`MAX_LOCATIONS`] entries and
//! [`MAX_PER_BLOB`] repositories per blob and host, oldest dropped. Writers
//! merge their sightings into what is there under an exclusive lock
//! (`blob-locations.json.lock`) and replace the file by renaming a complete
//! temporary file, so concurrent runs lose nothing and a reader never sees
//! half a file. A file that cannot be read or parsed is ignored with a
//! warning (and replaced by the next write).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::image::Digest;

/// The file's name in the cache directory.
pub const FILE_NAME: &str = "blob-locations.json";
/// Entries kept in all (one entry: a host, a repository and a blob); the
/// oldest go first. About 150 bytes each on disk.
pub const MAX_LOCATIONS: usize = 10_000;
/// Subjects with referrers kept in all (one entry: a host, a repository
/// and a subject); the oldest go first.
pub const MAX_REFERRED: usize = 10_000;
/// Source subjects without referrers kept in all (one entry: a host, a
/// repository and a subject); the oldest go first.
pub const MAX_UNREFERRED: usize = 10_000;
/// How long "the source had no referrers of this image" stands: within
/// it, a run does not look up the referrers of an image it finds mirrored
/// and unchanged again (ten minutes).
pub const UNREFERRED_FRESH_MILLIS: u64 = 10 * 60 * 1000;
/// Repositories kept per blob and host, the most recently seen.
pub const MAX_PER_BLOB: usize = 8;
/// Remembered repositories a mount tries, most recently seen first (as
/// containers/image tries a few of its candidates).
pub const CANDIDATES: usize = 3;
/// The version of the file's format.
const VERSION: u32 = 1;

/// One remembered location: `repository` on `host` held `digest` at `seen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub host: String,
    pub repository: String,
    pub digest: Digest,
    /// When it was last seen there, in milliseconds since 1970.
    pub seen: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LocationsFile {
    version: u32,
    locations: Vec<Location>,
    /// Images (`digest`) whose referrers `repository` held, or was given,
    /// when occy last looked. Absent in files written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    referred: Vec<Location>,
    /// Images (`digest`) of which source `repository` had no referrers when
    /// occy last looked (`seen`). Absent in files written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unreferred: Vec<Location>,
}

/// The remembered-locations file of one cache directory.
#[derive(Debug, Clone)]
pub struct BlobLocations {
    path: PathBuf,
}

/// A blob seen in a repository during a run (what [`BlobLocations::record`] takes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sighting {
    pub host: String,
    pub repository: String,
    pub digest: Digest,
}

/// Referrers of `subject` seen in (or copied to) a repository during a run
/// (what [`BlobLocations::record_referred`] takes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReferrersSeen {
    pub host: String,
    pub repository: String,
    pub subject: Digest,
}

impl BlobLocations {
    /// The file in the cache directory `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        BlobLocations {
            path: dir.join(FILE_NAME),
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the file remembers now (nothing when it is missing, or cannot be
    /// read or parsed: then with a warning).
    pub fn load(&self) -> Remembered {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Remembered::default(),
            Err(e) => {
                warn!(
                    "the remembered blob locations in {} cannot be read, ignoring them: {e}",
                    self.path.display()
                );
                return Remembered::default();
            }
        };
        match parse(&bytes) {
            Ok(file) => Remembered::from_file(file),
            Err(why) => {
                warn!(
                    "the remembered blob locations in {} are unusable, ignoring them (the next run rewrites the file): {why}",
                    self.path.display()
                );
                Remembered::default()
            }
        }
    }

    /// Merges `seen` (seen now) into the file under its lock, keeping the
    /// bound. Failing to write never fails a run: it is logged.
    pub async fn record(&self, seen: Vec<Sighting>) {
        if seen.is_empty() {
            return;
        }
        let n = seen.len();
        if let Err(e) = self.try_record(seen, Vec::new(), now_millis()).await {
            warn!("could not remember where {n} blobs were seen: {e}");
        } else {
            debug!("remembered {n} blob locations in {}", self.path.display());
        }
    }

    /// Merges the subjects whose referrers were seen or put in a
    /// repository now into the file, as [`BlobLocations::record`] does.
    pub async fn record_referred(&self, seen: Vec<ReferrersSeen>) {
        if seen.is_empty() {
            return;
        }
        let n = seen.len();
        if let Err(e) = self.try_record(Vec::new(), seen, now_millis()).await {
            warn!("could not remember the referrers of {n} subjects: {e}");
        } else {
            debug!("remembered the referrers of {n} subjects in {}", self.path.display());
        }
    }

    /// Merges the source subjects found without referrers now into the
    /// file, as [`BlobLocations::record`] does.
    pub async fn record_unreferred(&self, looked: Vec<ReferrersSeen>) {
        if looked.is_empty() {
            return;
        }
        let n = looked.len();
        if let Err(e) = self.try_record_all(Vec::new(), Vec::new(), looked, now_millis()).await {
            warn!("could not remember that {n} source images had no referrers: {e}");
        } else {
            debug!(
                "remembered {n} source images without referrers in {}",
                self.path.display()
            );
        }
    }

    async fn try_record(&self, seen: Vec<Sighting>, referred: Vec<ReferrersSeen>, at: u64) -> Result<()> {
        self.try_record_all(seen, referred, Vec::new(), at).await
    }

    async fn try_record_all(
        &self,
        seen: Vec<Sighting>,
        referred: Vec<ReferrersSeen>,
        unreferred: Vec<ReferrersSeen>,
        at: u64,
    ) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| Error::io("create", dir, e))?;
        }
        let path = self.path.clone();
        crate::sink::atomic::locked_update(&self.path, move |current| {
            let mut file = match current.as_deref().map(parse) {
                Some(Ok(f)) => f,
                Some(Err(why)) => {
                    warn!(
                        "the remembered blob locations in {} are unusable, starting them afresh: {why}",
                        path.display()
                    );
                    LocationsFile::default()
                }
                None => LocationsFile::default(),
            };
            file.locations.extend(seen.into_iter().map(|s| Location {
                host: s.host,
                repository: s.repository,
                digest: s.digest,
                seen: at,
            }));
            let at_now = |r: ReferrersSeen| Location {
                host: r.host,
                repository: r.repository,
                digest: r.subject,
                seen: at,
            };
            file.referred.extend(referred.into_iter().map(at_now));
            file.unreferred.extend(unreferred.into_iter().map(at_now));
            let file = LocationsFile {
                version: VERSION,
                locations: bounded(file.locations),
                referred: bounded_referred(file.referred),
                unreferred: bounded_unreferred(file.unreferred),
            };
            Ok(serde_json::to_vec(&file)?)
        })
        .await
    }
}

/// What a file's bytes remember, or why they are unusable.
fn parse(bytes: &[u8]) -> std::result::Result<LocationsFile, String> {
    let file: LocationsFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != VERSION {
        return Err(format!("format version {}, this occy writes {VERSION}", file.version));
    }
    Ok(file)
}

/// At most [`MAX_REFERRED`] images with referrers, the most recent kept.
/// Newest first.
fn bounded_referred(referred: Vec<Location>) -> Vec<Location> {
    latest_at_most(referred, MAX_REFERRED)
}

/// At most `max` entries, one per (host, repository, digest), the most
/// recent kept. Newest first.
fn latest_at_most(entries: Vec<Location>, max: usize) -> Vec<Location> {
    let mut all = latest(entries);
    all.truncate(max);
    all
}

/// At most [`MAX_UNREFERRED`] source images without referrers, the most
/// recent kept. Newest first.
fn bounded_unreferred(unreferred: Vec<Location>) -> Vec<Location> {
    latest_at_most(unreferred, MAX_UNREFERRED)
}

/// One entry per (host, repository, digest), the latest sighting, newest first.
fn latest(entries: Vec<Location>) -> Vec<Location> {
    let mut latest: HashMap<(String, String, Digest), u64> = HashMap::new();
    for l in entries {
        let seen = latest.entry((l.host, l.repository, l.digest)).or_insert(0);
        *seen = (*seen).max(l.seen);
    }
    let mut all: Vec<Location> = latest
        .into_iter()
        .map(|((host, repository, digest), seen)| Location {
            host,
            repository,
            digest,
            seen,
        })
        .collect();
    all.sort_by(newest_first);
    all
}

/// One entry per (host, repository, blob), the latest sighting; at most
/// [`MAX_PER_BLOB`] repositories per (host, blob) and [`MAX_LOCATIONS`] in
/// all, the most recent kept. Newest first.
fn bounded(locations: Vec<Location>) -> Vec<Location> {
    let mut all = latest(locations);
    let mut per_blob: HashMap<(&str, &Digest), usize> = HashMap::new();
    let mut keep = vec![false; all.len()];
    let mut kept = 0;
    for (i, l) in all.iter().enumerate() {
        if kept == MAX_LOCATIONS {
            break;
        }
        let n = per_blob.entry((l.host.as_str(), &l.digest)).or_default();
        if *n < MAX_PER_BLOB {
            *n += 1;
            keep[i] = true;
            kept += 1;
        }
    }
    let mut keep = keep.into_iter();
    all.retain(|_| keep.next().unwrap_or(false));
    all
}

/// Most recently seen first; ties in a stable order (host, digest, repository).
fn newest_first(a: &Location, b: &Location) -> std::cmp::Ordering {
    b.seen
        .cmp(&a.seen)
        .then_with(|| a.host.cmp(&b.host))
        .then_with(|| a.digest.cmp(&b.digest))
        .then_with(|| a.repository.cmp(&b.repository))
}

/// Whether a look at `at` is less than [`UNREFERRED_FRESH_MILLIS`] before
/// `now` (a clock set back makes it stale, not fresh for longer).
fn fresh(at: u64, now: u64) -> bool {
    at <= now && now - at < UNREFERRED_FRESH_MILLIS
}

/// Now, in milliseconds since 1970.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the file remembered when a run started, ready for the planner.
#[derive(Debug, Default, Clone)]
pub struct Remembered {
    /// (host, blob) → repositories, most recently seen first.
    by_blob: HashMap<(String, Digest), Vec<String>>,
    /// (host, repository, subject) → when its referrers were last seen there.
    referred: HashMap<(String, String, Digest), u64>,
    /// (host, source repository, subject) → when it last had no referrers there.
    unreferred: HashMap<(String, String, Digest), u64>,
    /// (host, source repository) → the latest of those.
    unreferred_repositories: HashMap<(String, String), u64>,
}

impl Remembered {
    fn from_file(file: LocationsFile) -> Self {
        let mut locations = file.locations;
        locations.sort_by(newest_first);
        let mut by_blob: HashMap<(String, Digest), Vec<String>> = HashMap::new();
        for l in locations {
            by_blob.entry((l.host, l.digest)).or_default().push(l.repository);
        }
        let referred = file
            .referred
            .into_iter()
            .map(|r| ((r.host, r.repository, r.digest), r.seen))
            .collect();
        let mut unreferred_repositories: HashMap<(String, String), u64> = HashMap::new();
        let unreferred = file
            .unreferred
            .into_iter()
            .map(|r| {
                let at = unreferred_repositories
                    .entry((r.host.clone(), r.repository.clone()))
                    .or_default();
                *at = (*at).max(r.seen);
                ((r.host, r.repository, r.digest), r.seen)
            })
            .collect();
        Remembered {
            by_blob,
            referred,
            unreferred,
            unreferred_repositories,
        }
    }

    /// When source `repository` on `host` last had no referrers of
    /// `subject` as occy looked, if that was less than
    /// [`UNREFERRED_FRESH_MILLIS`] before `now` (milliseconds since 1970).
    pub fn unreferred_since(&self, host: &str, repository: &str, subject: &Digest, now: u64) -> Option<u64> {
        self.unreferred
            .get(&(host.to_string(), repository.to_string(), subject.clone()))
            .copied()
            .filter(|&at| fresh(at, now))
    }

    /// Whether source `repository` on `host` had no referrers of some image
    /// less than [`UNREFERRED_FRESH_MILLIS`] before `now`: its images are
    /// likely to need no lookup, so its tags are not listed ahead of time.
    pub fn unreferred_repository(&self, host: &str, repository: &str, now: u64) -> bool {
        self.unreferred_repositories
            .get(&(host.to_string(), repository.to_string()))
            .is_some_and(|&at| fresh(at, now))
    }

    /// When occy last saw (or put) referrers of `subject` in `repository`
    /// on `host`, in milliseconds since 1970; None when it never did, as
    /// far as the file remembers.
    pub fn referrers_held(&self, host: &str, repository: &str, subject: &Digest) -> Option<u64> {
        self.referred
            .get(&(host.to_string(), repository.to_string(), subject.clone()))
            .copied()
    }

    /// Remembers `repositories` (in this order) for `digest` on `host`,
    /// after any already remembered (a saved plan's own candidates).
    pub fn add(&mut self, host: &str, digest: &Digest, repositories: impl IntoIterator<Item = String>) {
        let known = self.by_blob.entry((host.to_string(), digest.clone())).or_default();
        for r in repositories {
            if !known.contains(&r) {
                known.push(r);
            }
        }
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_blob.is_empty() && self.referred.is_empty() && self.unreferred.is_empty()
    }

    /// Repositories of `host` remembered to hold `digest`, other than
    /// `except` (the repository being written), most recently seen first, at
    /// most [`CANDIDATES`].
    pub fn candidates(&self, host: &str, digest: &Digest, except: &str) -> Vec<String> {
        self.by_blob
            .get(&(host.to_string(), digest.clone()))
            .map(|repos| {
                repos
                    .iter()
                    .filter(|r| r.as_str() != except)
                    .take(CANDIDATES)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    /// `n` distinct blobs in one repository, the i-th seen at time i.
    fn distinct_blobs(n: usize) -> Vec<Location> {
        (0..n)
            .map(|i| Location {
                host: "h".into(),
                repository: "r".into(),
                digest: Digest::of(&(i as u64).to_le_bytes()),
                seen: i as u64,
            })
            .collect()
    }

    fn seen(host: &str, repo: &str, digest: Digest) -> Sighting {
        Sighting {
            host: host.into(),
            repository: repo.into(),
            digest,
        }
    }

    #[tokio::test]
    async fn records_merge_and_answer_most_recent_first() {
        let t = tempfile::tempdir().unwrap();
        let cache = BlobLocations::in_dir(&t.path().join("occy"));
        assert!(cache.load().is_empty(), "no file yet: nothing remembered");
        cache
            .try_record(vec![seen("h:5000", "a", d(1))], vec![], 1_000)
            .await
            .unwrap();
        cache
            .try_record(
                vec![seen("h:5000", "b", d(1)), seen("other:1", "c", d(1))],
                vec![],
                2_000,
            )
            .await
            .unwrap();
        cache
            .try_record(vec![seen("h:5000", "a", d(1))], vec![], 500)
            .await
            .unwrap();
        let r = cache.load();
        // b is the most recent; a older one keeps its latest time (1000).
        assert_eq!(r.candidates("h:5000", &d(1), "x"), ["b", "a"]);
        assert_eq!(
            r.candidates("h:5000", &d(1), "b"),
            ["a"],
            "never the repository written"
        );
        assert_eq!(r.candidates("other:1", &d(1), "x"), ["c"], "per host");
        assert!(r.candidates("h:5000", &d(2), "x").is_empty());
    }

    #[test]
    fn bounded_keeps_the_newest_per_blob_and_in_all() {
        let mut v = Vec::new();
        for i in 0..(MAX_PER_BLOB as u64 + 4) {
            v.push(Location {
                host: "h".into(),
                repository: format!("r{i}"),
                digest: d(1),
                seen: i,
            });
        }
        let kept = bounded(v);
        assert_eq!(kept.len(), MAX_PER_BLOB);
        assert_eq!(kept[0].repository, format!("r{}", MAX_PER_BLOB + 3), "newest first");
        assert!(kept.iter().all(|l| l.seen >= 4), "the oldest dropped: {kept:?}");

        let many: Vec<Location> = distinct_blobs(MAX_LOCATIONS + 50);
        let kept = bounded(many);
        assert_eq!(kept.len(), MAX_LOCATIONS);
        assert_eq!(kept.last().unwrap().seen, 50, "the 50 oldest dropped");
    }

    #[tokio::test]
    async fn a_corrupt_file_is_ignored_then_replaced() {
        let t = tempfile::tempdir().unwrap();
        let cache = BlobLocations::in_dir(t.path());
        std::fs::write(cache.path(), b"{\"version\":1,\"locations\":[{\"host\":").unwrap();
        assert!(cache.load().is_empty());
        std::fs::write(cache.path(), b"{\"version\":99,\"locations\":[]}").unwrap();
        assert!(cache.load().is_empty(), "another format version is not read");
        cache.try_record(vec![seen("h", "a", d(3))], vec![], 7).await.unwrap();
        assert_eq!(cache.load().candidates("h", &d(3), "x"), ["a"]);
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().to_path_buf();
        let threads: Vec<_> = (0..8u8)
            .map(|w| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                    let cache = BlobLocations::in_dir(&dir);
                    for k in 0..10u8 {
                        rt.block_on(cache.try_record(vec![seen("h", &format!("w{w}"), d(k))], vec![], 1 + k as u64))
                            .unwrap();
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let bytes = std::fs::read(dir.join(FILE_NAME)).unwrap();
        let all = parse(&bytes).unwrap().locations;
        assert_eq!(all.len(), 80, "every writer's every sighting is there");
    }

    /// Referrers (or their absence) of subject `n` seen in `repo` of `h:5000`.
    fn referrers_seen(repo: &str, n: u8) -> ReferrersSeen {
        ReferrersSeen {
            host: "h:5000".into(),
            repository: repo.into(),
            subject: d(n),
        }
    }

    #[tokio::test]
    async fn subjects_with_referrers_are_remembered_beside_the_blobs() {
        let t = tempfile::tempdir().unwrap();
        let cache = BlobLocations::in_dir(t.path());
        let r = referrers_seen;
        cache
            .try_record(vec![seen("h:5000", "a", d(9))], vec![r("a", 1)], 10)
            .await
            .unwrap();
        cache.try_record(vec![], vec![r("a", 1), r("b", 2)], 20).await.unwrap();
        let mem = cache.load();
        assert_eq!(
            mem.referrers_held("h:5000", "a", &d(1)),
            Some(20),
            "the latest sighting"
        );
        assert_eq!(mem.referrers_held("h:5000", "b", &d(2)), Some(20));
        assert_eq!(mem.referrers_held("h:5000", "b", &d(1)), None, "per repository");
        assert_eq!(mem.referrers_held("other", "a", &d(1)), None, "per host");
        assert_eq!(mem.candidates("h:5000", &d(9), "x"), ["a"], "the blobs are kept");
        // A file of before (no `referred`) still reads, and is kept when written.
        std::fs::write(cache.path(), br#"{"version":1,"locations":[]}"#).unwrap();
        assert_eq!(cache.load().referrers_held("h:5000", "a", &d(1)), None);
        let many: Vec<Location> = distinct_blobs(MAX_REFERRED + 5);
        let kept = bounded_referred(many);
        assert_eq!(kept.len(), MAX_REFERRED);
        assert_eq!(kept.last().map(|r| r.seen), Some(5), "the oldest dropped");
    }

    #[tokio::test]
    async fn source_images_without_referrers_are_remembered_for_a_while() {
        let t = tempfile::tempdir().unwrap();
        let cache = BlobLocations::in_dir(t.path());
        let r = referrers_seen;
        let at = 1_000_000_000;
        cache
            .try_record_all(vec![seen("h:5000", "a", d(9))], vec![r("a", 1)], vec![r("a", 2)], at)
            .await
            .unwrap();
        let mem = cache.load();
        assert_eq!(mem.unreferred_since("h:5000", "a", &d(2), at + 1), Some(at));
        assert!(mem.unreferred_repository("h:5000", "a", at + 1));
        assert_eq!(mem.unreferred_since("h:5000", "a", &d(1), at + 1), None, "per subject");
        assert_eq!(
            mem.unreferred_since("h:5000", "b", &d(2), at + 1),
            None,
            "per repository"
        );
        assert!(!mem.unreferred_repository("other", "a", at + 1), "per host");
        let later = at + UNREFERRED_FRESH_MILLIS;
        assert_eq!(
            mem.unreferred_since("h:5000", "a", &d(2), later),
            None,
            "stale after a while"
        );
        assert!(!mem.unreferred_repository("h:5000", "a", later));
        assert_eq!(
            mem.unreferred_since("h:5000", "a", &d(2), at - 1),
            None,
            "a clock set back"
        );
        assert_eq!(mem.referrers_held("h:5000", "a", &d(1)), Some(at), "the rest is kept");
        assert_eq!(mem.candidates("h:5000", &d(9), "x"), ["a"]);
        // Bounded, the oldest dropped.
        let kept = bounded_unreferred(distinct_blobs(MAX_UNREFERRED + 3));
        assert_eq!(kept.len(), MAX_UNREFERRED);
        assert_eq!(kept.last().map(|r| r.seen), Some(3));
    }
}
