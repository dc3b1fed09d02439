//! One pass over one layer: the uncompressed tar goes through the filter
//! chain entry by entry ([`super::tar_stream`]), and what is kept is hashed
//! (the new diff_id), compressed and hashed again (the new digest and size)
//! on its way to the output — all while it streams, with fixed buffers.
//!
//! A chain that changes no entry (`recompress`, `search`, `inspect`) is a
//! pure re-encoding: the uncompressed bytes pass through exactly as they came
//! — the zero blocks after the end of the archive included, which Python's
//! `tarfile` and GNU tar pad to a 10240-byte record — so the diff_id does not
//! change. Entries are still parsed, for `search` and to refuse a stream that
//! is not a tar.
//!
//! Compression uses every core and is deterministic: block-parallel gzip
//! ([`super::pgzip`], level 6 unless asked; its bytes do not depend on the
//! thread count) and multi-threaded zstd at level 3 unless asked, with a
//! fixed number of workers (zstd's output depends on the level and worker
//! count, never on timing), so the same input and chain give the same bytes
//! on every run and machine.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use super::exclude::Exclude;
use super::normalize_timestamps::normalize_entry;
use super::pgzip::ParallelGzip;
use super::search::PathMatcher;
use super::tar_stream::{TarReader, Verdict, END_OF_ARCHIVE};
use super::{FilterChain, FilterSpec};
use crate::error::{Error, Result};
use crate::image::{Compression, Digest};

/// zstd worker threads: fixed, so the output does not depend on the machine.
const ZSTD_WORKERS: u32 = 4;
/// zstd bytes per job (its minimum is 512 KiB).
const ZSTD_JOB_SIZE: u32 = 2 * 1024 * 1024;

/// What one pass produced.
#[derive(Debug, Clone)]
pub struct LayerResult {
    /// sha256 of the uncompressed output tar.
    pub diff_id: Digest,
    /// sha256 and size of the output blob as written.
    pub digest: Digest,
    pub size: u64,
    /// Length of the uncompressed output tar.
    pub plain_size: u64,
    pub compression: Compression,
    /// Per `inspect` filter, in chain order: the diff_id and uncompressed
    /// size of the layer as it was at that point of the chain.
    pub taps: Vec<(Digest, u64)>,
    /// Per `search` match: the filter's index in the chain and the path.
    pub matches: Vec<(usize, String)>,
}

/// A writer that hashes and counts what goes through it.
pub struct HashWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest::from_hasher(self.hasher), self.count)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The compressor between the plain tar and the blob.
enum Encoder<W: Write> {
    None(W),
    Gzip(ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    fn new(inner: W, compression: Compression, level: Option<i32>) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::None(inner),
            Compression::Gzip => {
                let level = level.unwrap_or(6).clamp(0, 9) as u32;
                // Block-parallel on every core; no file name, mtime 0, OS
                // "unknown": the same bytes every time, whatever the cores.
                let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
                Encoder::Gzip(ParallelGzip::new(inner, level, threads))
            }
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(inner, level.unwrap_or(3))?;
                e.multithread(ZSTD_WORKERS)?;
                // Small jobs keep memory bounded (the default scales with the
                // window: ~100 MiB at 4 workers); fixed, so bytes stay the same.
                e.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                e.include_checksum(false)?;
                e.include_contentsize(false)?;
                Encoder::Zstd(e)
            }
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// A filter as it runs over entries.
enum Stage {
    Normalize(u64),
    Exclude(Exclude),
    Search(usize, PathMatcher),
    /// An `inspect` point: index into the taps.
    Tap(usize),
    /// No effect on entries (recompress).
    Pass,
}

fn stages(chain: &FilterChain) -> Result<(Vec<Stage>, usize)> {
    let mut taps = 0;
    let mut out = Vec::new();
    for (i, f) in chain.filters.iter().enumerate() {
        out.push(match f {
            FilterSpec::NormalizeTimestamps { ts, .. } => Stage::Normalize(*ts),
            FilterSpec::Exclude { patterns } => Stage::Exclude(Exclude::new(patterns)?),
            FilterSpec::Search { pattern, regex } => Stage::Search(i, PathMatcher::new(pattern, *regex)?),
            FilterSpec::Inspect { .. } => {
                taps += 1;
                Stage::Tap(taps - 1)
            }
            FilterSpec::Recompress { .. } => Stage::Pass,
        });
    }
    Ok((out, taps))
}

/// Whether no stage can change or drop an entry: the layer's uncompressed
/// bytes then pass through untouched.
fn keeps_every_byte(stages: &[Stage]) -> bool {
    stages
        .iter()
        .all(|s| matches!(s, Stage::Search(..) | Stage::Tap(_) | Stage::Pass))
}

/// A reader that writes everything it reads to `out`, in order.
struct Tee<'a, R: Read> {
    inner: R,
    out: &'a mut dyn Write,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Writes entry data to the output (when kept) and to the taps that saw it.
struct Fanout<'a> {
    out: Option<&'a mut dyn Write>,
    taps: Vec<&'a mut HashWriter<io::Sink>>,
}

impl Write for Fanout<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(o) = self.out.as_mut() {
            o.write_all(buf)?;
        }
        for t in self.taps.iter_mut() {
            t.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `chain` over the uncompressed tar `input` and writes the result,
/// compressed as asked, to `out`. `what` names the layer in errors. The
/// input is read to its end, so a verifying reader below sees all of it.
pub fn rewrite_layer(
    input: impl Read,
    chain: &FilterChain,
    compression: Compression,
    level: Option<i32>,
    out: impl Write,
    what: &str,
) -> Result<LayerResult> {
    let (mut stages, tap_count) = stages(chain)?;
    let io_err = |e: io::Error| Error::stream(what, e);
    let blob = HashWriter::new(out);
    let encoder = Encoder::new(blob, compression, level).map_err(io_err)?;
    let mut plain = HashWriter::new(io::BufWriter::with_capacity(256 * 1024, encoder));
    let mut taps: Vec<HashWriter<io::Sink>> = (0..tap_count).map(|_| HashWriter::new(io::sink())).collect();
    let mut matches = Vec::new();

    let passthrough = keeps_every_byte(&stages);
    if passthrough {
        // Every byte read goes to the output and every tap as it came; the
        // entries are only looked at.
        let mut fan = Fanout {
            out: Some(&mut plain),
            taps: taps.iter_mut().collect(),
        };
        let mut reader = TarReader::new(
            Tee {
                inner: input,
                out: &mut fan,
            },
            what.to_string(),
        );
        while let Some(entry) = reader.next_entry()? {
            for stage in &stages {
                if let Stage::Search(i, m) = stage {
                    let path = entry.path.trim_end_matches('/');
                    if m.is_match(path) {
                        matches.push((*i, path.to_string()));
                    }
                }
            }
            reader.skip_data()?;
        }
        reader.drain()?;
    } else {
        rewrite_entries(input, &mut stages, &mut plain, &mut taps, &mut matches, what)?;
        plain.write_all(&END_OF_ARCHIVE).map_err(io_err)?;
    }

    let (buffered, diff_id, plain_size) = plain.finish();
    let encoder = buffered.into_inner().map_err(|e| io_err(e.into_error()))?;
    let blob = encoder.finish().map_err(io_err)?;
    let (mut out, digest, size) = blob.finish();
    out.flush().map_err(io_err)?;
    let taps = taps
        .into_iter()
        .map(|mut t| {
            if !passthrough {
                let _ = t.write_all(&END_OF_ARCHIVE);
            }
            let (_, d, n) = t.finish();
            (d, n)
        })
        .collect();
    Ok(LayerResult {
        diff_id,
        digest,
        size,
        plain_size,
        compression,
        taps,
        matches,
    })
}

/// The rewriting pass: each entry through the stages, what is kept written
/// to `plain` (without the end-of-archive blocks), what each tap saw to it.
fn rewrite_entries(
    input: impl Read,
    stages: &mut [Stage],
    plain: &mut dyn Write,
    taps: &mut [HashWriter<io::Sink>],
    matches: &mut Vec<(usize, String)>,
    what: &str,
) -> Result<()> {
    let io_err = |e: io::Error| Error::stream(what, e);
    let mut reader = TarReader::new(input, what.to_string());
    while let Some(mut entry) = reader.next_entry()? {
        let mut verdict = Verdict::Keep;
        let mut seen_by = Vec::new();
        for stage in stages.iter_mut() {
            match stage {
                Stage::Normalize(ts) => verdict = normalize_entry(&mut entry, *ts),
                Stage::Exclude(ex) => verdict = ex.entry(&entry),
                Stage::Search(i, m) => {
                    if m.is_match(entry.path.trim_end_matches('/')) {
                        matches.push((*i, entry.path.trim_end_matches('/').to_string()));
                    }
                }
                Stage::Tap(k) => {
                    taps[*k].write_all(&entry.header_bytes()).map_err(io_err)?;
                    seen_by.push(*k);
                }
                Stage::Pass => {}
            }
            if verdict == Verdict::Drop {
                break;
            }
        }
        if verdict == Verdict::Keep {
            plain.write_all(&entry.header_bytes()).map_err(io_err)?;
        }
        if verdict == Verdict::Drop && seen_by.is_empty() {
            reader.skip_data()?;
            continue;
        }
        let mut fan = Fanout {
            out: if verdict == Verdict::Keep {
                Some(&mut *plain)
            } else {
                None
            },
            taps: taps
                .iter_mut()
                .enumerate()
                .filter(|(k, _)| seen_by.contains(k))
                .map(|(_, t)| t)
                .collect(),
        };
        reader.copy_data(&mut fan)?;
    }
    reader.drain()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, body, mtime) in [
            ("etc/os-release", &b"ID=x\n"[..], 1_700_000_000u64),
            ("app/main.pyc", &b"\x00\x01"[..], 1_700_000_001),
            ("app/main.py", &b"print(1)\n"[..], 1_700_000_002),
            ("tmp/junk", &b"junk"[..], 1_700_000_003),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(mtime);
            b.append_data(&mut h, path, body).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn run(filters: &[&str], c: Compression) -> (LayerResult, Vec<u8>) {
        let chain = FilterChain::parse(&filters.iter().map(|s| s.to_string()).collect::<Vec<_>>(), None).unwrap();
        let mut out = Vec::new();
        let r = rewrite_layer(&layer()[..], &chain, c, None, &mut out, "layer t").unwrap();
        (r, out)
    }

    fn entries(plain: &[u8]) -> Vec<(String, u64)> {
        let mut a = tar::Archive::new(plain);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mtime().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn exclude_two_patterns_and_normalize() {
        let (r, out) = run(
            &["exclude:pattern=**/*.pyc,pattern=tmp", "normalize-timestamps:ts=7"],
            Compression::None,
        );
        assert_eq!(
            entries(&out),
            vec![("etc/os-release".into(), 7), ("app/main.py".into(), 7)]
        );
        assert_eq!(r.diff_id, Digest::of(&out));
        assert_eq!(r.digest, r.diff_id);
        assert_eq!(r.size, out.len() as u64);
    }

    #[test]
    fn gzip_and_zstd_outputs_are_deterministic_and_hash_right() {
        for c in [Compression::Gzip, Compression::Zstd] {
            let (a, out_a) = run(&["normalize-timestamps"], c);
            let (b, out_b) = run(&["normalize-timestamps"], c);
            assert_eq!(out_a, out_b, "{c:?}");
            assert_eq!(a.digest, Digest::of(&out_a));
            assert_eq!(a.digest, b.digest);
            assert_eq!(Compression::sniff(&out_a), c);
            let mut plain = Vec::new();
            match c {
                Compression::Gzip => {
                    flate2::read::GzDecoder::new(&out_a[..])
                        .read_to_end(&mut plain)
                        .unwrap();
                }
                _ => {
                    zstd::stream::read::Decoder::new(&out_a[..])
                        .unwrap()
                        .read_to_end(&mut plain)
                        .unwrap();
                }
            }
            assert_eq!(Digest::of(&plain), a.diff_id);
        }
    }

    #[test]
    fn a_chain_that_changes_no_entry_passes_every_byte_padding_included() {
        // Padded to a 10240-byte record, as GNU tar and Python's tarfile write.
        let mut padded = layer();
        padded.resize(padded.len().div_ceil(10240) * 10240 + 10240, 0);
        for filters in [
            &["recompress:format=zstd"][..],
            &[
                "search:pattern=*.pyc",
                "inspect:file=/dev/null",
                "recompress:format=gzip",
            ][..],
        ] {
            let chain = FilterChain::parse(&filters.iter().map(|s| s.to_string()).collect::<Vec<_>>(), None).unwrap();
            let mut out = Vec::new();
            let r = rewrite_layer(&padded[..], &chain, Compression::None, None, &mut out, "layer t").unwrap();
            assert!(out == padded, "{filters:?}: the bytes pass through untouched");
            assert_eq!(r.diff_id, Digest::of(&padded));
            assert!(r.taps.iter().all(|t| t.0 == r.diff_id && t.1 == padded.len() as u64));
            if filters.len() > 1 {
                assert_eq!(r.matches, vec![(0, "app/main.pyc".to_string())]);
            }
        }
        // Not a tar: refused, even when nothing would change.
        let chain = FilterChain::parse(&["recompress:format=zstd".to_string()], None).unwrap();
        let junk = vec![7u8; 2048];
        assert!(rewrite_layer(&junk[..], &chain, Compression::None, None, &mut Vec::new(), "layer t").is_err());
    }

    #[test]
    fn search_reports_and_inspect_taps_see_the_layer_at_their_point() {
        let (r, out) = run(
            &[
                "inspect:file=/dev/null",
                "search:pattern=*.pyc",
                "exclude:pattern=app",
                "inspect:file=/dev/null",
            ],
            Compression::None,
        );
        assert_eq!(r.matches, vec![(1, "app/main.pyc".to_string())]);
        assert_eq!(r.taps.len(), 2);
        // The first tap sees the input as it came.
        assert_eq!(r.taps[0].0, Digest::of(&layer()));
        assert_eq!(r.taps[1].0, r.diff_id);
        assert_eq!(r.taps[1].1, out.len() as u64);
    }
}
