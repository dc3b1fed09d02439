//! Sweeping what crashed runs left beside file destinations: temporary
//! files and directories named by occy's pattern (`.NAME.occy-tmp-XXXXXX`,
//! see `atomic.rs`) that no live writer holds, and `.NAME.occy-old-PID`
//! directories a bundle replacement set aside in a process that is gone.
//!
//! A writer holds an exclusive `flock` on each temporary it creates for as
//! long as it lives, so a temporary whose lock can be taken has no writer:
//! its process died (a `kill -9`, a power cut). The lock is taken a moment
//! after the file is created, so a temporary changed in the last
//! [`MIN_AGE`] is left alone whatever its lock says. A sweep takes the lock
//! before removing, so two runs sweeping at once cannot both act on one file.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fs4::fs_std::FileExt;

use crate::reference::Reference;

/// Temporaries changed more recently than this are never swept.
pub const MIN_AGE: Duration = Duration::from_secs(2);

/// What a sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub entries: usize,
    pub bytes: u64,
}

impl Swept {
    fn add(&mut self, other: Swept) {
        self.entries += other.entries;
        self.bytes += other.bytes;
    }
}

/// Sweeps the stale temporaries of one destination: beside a tarball or a
/// bundle, those named after it or its state record; in an OCI layout or a `dir://`, those in
/// its root, `blobs/sha256` or its layer directories. Other destinations
/// have nothing to sweep.
pub fn sweep_destination(dest: &Reference) -> Swept {
    let mut swept = Swept::default();
    match dest {
        Reference::Tar { path } | Reference::Bundle { path } => {
            let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                return swept;
            };
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            swept.add(sweep_dir(dir, Some(&name)));
            // The state record beside it (`.NAME.occy-state.json`).
            swept.add(sweep_dir(dir, Some(&format!(".{name}.occy-state.json"))));
        }
        Reference::Oci { path, .. } => {
            swept.add(sweep_dir(path, None));
            swept.add(sweep_dir(&path.join("blobs").join("sha256"), None));
        }
        Reference::Archive { path, .. } => {
            // The staging layout of the next archive.
            let layout = crate::archive::staging_layout(path);
            swept.add(sweep_dir(&layout, None));
            swept.add(sweep_dir(&layout.join("blobs").join("sha256"), None));
        }
        Reference::Dir { path, .. } => {
            swept.add(sweep_dir(path, None));
            if let Ok(rd) = std::fs::read_dir(path) {
                for e in rd.flatten() {
                    let hidden = e.file_name().to_string_lossy().starts_with('.');
                    let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                    if is_dir && (!hidden || e.file_name() == ".occy-state") {
                        swept.add(sweep_dir(&e.path(), None));
                    }
                }
            }
        }
        _ => {}
    }
    swept
}

/// Sweeps one directory; with `only_for`, only the temporaries of that name.
fn sweep_dir(dir: &Path, only_for: Option<&str>) -> Swept {
    let mut swept = Swept::default();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return swept;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(kind) = classify(&name, only_for) else {
            continue;
        };
        let path = e.path();
        let removed = match kind {
            Kind::Temp => remove_if_unheld(&path),
            Kind::Old(pid) if !process_alive(pid) => remove_now(&path),
            Kind::Old(_) => None,
        };
        if let Some(bytes) = removed {
            tracing::debug!("removed {} ({bytes} bytes), left by an interrupted run", path.display());
            swept.entries += 1;
            swept.bytes += bytes;
        }
    }
    swept
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// `.NAME.occy-tmp-XXXXXX`
    Temp,
    /// `.NAME.occy-old-PID`
    Old(i32),
}

/// Whether `name` is one of occy's temporaries (of `only_for`, if given).
fn classify(name: &str, only_for: Option<&str>) -> Option<Kind> {
    let rest = name.strip_prefix('.')?;
    let rest = match only_for {
        Some(base) => rest.strip_prefix(base)?.strip_prefix('.')?,
        None => {
            let i = rest.rfind(".occy-")?;
            &rest[i + 1..]
        }
    };
    if let Some(suffix) = rest.strip_prefix("occy-tmp-") {
        return (!suffix.is_empty() && suffix.chars().all(|c| c.is_ascii_alphanumeric())).then_some(Kind::Temp);
    }
    let pid = rest.strip_prefix("occy-old-")?;
    pid.parse::<i32>().ok().filter(|p| *p > 0).map(Kind::Old)
}

/// Removes a temporary nobody holds and that has not changed lately;
/// returns its size, or None when it was left.
fn remove_if_unheld(path: &Path) -> Option<u64> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        return None;
    }
    let age = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    if age < MIN_AGE {
        return None;
    }
    let f = std::fs::File::open(path).ok()?;
    if !matches!(FileExt::try_lock_exclusive(&f), Ok(true)) {
        return None;
    }
    let out = remove_now(path);
    drop(f);
    out
}

fn remove_now(path: &Path) -> Option<u64> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.is_dir() {
        let bytes = tree_size(path);
        super::bundle::make_writable_and_remove(path).ok()?;
        Some(bytes)
    } else {
        std::fs::remove_file(path).ok()?;
        Some(meta.len())
    }
}

fn tree_size(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Whether process `pid` exists (kill(pid, 0) succeeds or is refused for
/// lack of permission).
fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_recognised_by_occys_pattern_only() {
        assert_eq!(classify(".a.tar.occy-tmp-5mElr7", None), Some(Kind::Temp));
        assert_eq!(classify(".a.tar.occy-tmp-5mElr7", Some("a.tar")), Some(Kind::Temp));
        assert_eq!(classify(".a.tar.occy-tmp-5mElr7", Some("b.tar")), None);
        assert_eq!(classify(".ab.tar.occy-tmp-5mElr7", Some("b.tar")), None);
        assert_eq!(classify(".b.occy-old-123", Some("b")), Some(Kind::Old(123)));
        assert_eq!(classify(".expand.occy-tmp-XyZ123", None), Some(Kind::Temp));
        assert_eq!(
            classify(
                "..a.tar.occy-state.json.occy-tmp-Ab12Cd",
                Some(".a.tar.occy-state.json")
            ),
            Some(Kind::Temp)
        );
        assert_eq!(classify(".a.tar.occy-state.json", Some("a.tar")), None);
        for other in [
            "a.tar",
            ".a.tar",
            ".occy-state",
            ".a.occy-tmp-",
            ".a.occy-tmp-x/y",
            "x.occy-tmp-abc",
        ] {
            assert_eq!(classify(other, None), None, "{other}");
        }
    }

    #[test]
    fn a_held_temporary_stays_and_an_unheld_stale_one_goes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.tar");
        let held = super::super::atomic::temp_beside(&out).unwrap();
        std::fs::write(held.path(), b"being written").unwrap();
        let stale = dir.path().join(".a.tar.occy-tmp-dead01");
        std::fs::write(&stale, vec![0u8; 1000]).unwrap();
        let fresh = dir.path().join(".a.tar.occy-tmp-new001");
        std::fs::write(&fresh, b"just made").unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        for p in [held.path(), stale.as_path()] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let swept = sweep_destination(&Reference::Tar { path: out });
        assert_eq!(
            swept,
            Swept {
                entries: 1,
                bytes: 1000
            }
        );
        assert!(held.path().exists(), "a live writer's temporary stays");
        assert!(fresh.exists(), "a temporary changed a moment ago stays");
        assert!(!stale.exists());
    }
}
