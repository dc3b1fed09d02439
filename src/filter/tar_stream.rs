//! occy's one tar reader, and the streaming rewriter shared by every filter.
//! Filters, `check`, `occy search`, extraction (bundles, expanded `dir://`),
//! the docker-save index and the Docker export unpacker all read archives
//! through [`TarReader`], so a hostile archive parses — or is refused — the
//! same way in every command (the `tar` crate is only used to write).
//!
//! It reads a tar block by block, groups each entry with the extension records before it
//! (PAX `x`/`g`, GNU long names `L`/`K`), lets a chain of filters keep, drop
//! or re-time the entry by its header alone, and writes what is kept with
//! every byte it did not change left as it was — PAX records, long names,
//! xattrs (`SCHILY.xattr.*`, `security.capability` included), hardlinks,
//! symlinks, device nodes and whiteouts pass through untouched. Data is
//! copied through a fixed buffer, so memory does not grow with entry size.
//!
//! Like Go's `archive/tar` (which wrote most layers), header-only entry types
//! (links, directories, devices, fifos) carry no data whatever their size
//! field says.
//!
//! What an entry declares is read the way Go and umoci read it: the path
//! from PAX `path`, else a GNU long name (`L`), else ustar prefix + name; the
//! link from PAX `linkpath`, else `K`, else the header; uid/gid/size from PAX
//! when present; the mtime from PAX `mtime` with its fraction; xattrs from
//! PAX `SCHILY.xattr.*`; device numbers from the header. A header with a bad
//! checksum, a stream ending inside a header, an extension record or data,
//! an extension record over 1 MiB or malformed, and sparse files (GNU `S`
//! entries or PAX `GNU.sparse.*` records, whose data is not the file's
//! bytes) are errors naming the archive.

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::error::{Error, Result};

const BLOCK: usize = 512;
/// Largest extension record (PAX or GNU long name) accepted.
const MAX_EXTENSION: u64 = 1024 * 1024;

/// What kind of entry a header describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Directory,
    Fifo,
    Other(u8),
}

impl EntryKind {
    fn from_flag(flag: u8) -> Self {
        match flag {
            b'0' | 0 | b'7' => EntryKind::File,
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            other => EntryKind::Other(other),
        }
    }

    /// Types whose entries never have data (Go's `isHeaderOnlyType`).
    fn header_only(self) -> bool {
        matches!(
            self,
            EntryKind::HardLink
                | EntryKind::Symlink
                | EntryKind::CharDevice
                | EntryKind::BlockDevice
                | EntryKind::Directory
                | EntryKind::Fifo
        )
    }
}

/// One extension record that precedes an entry.
#[derive(Debug, Clone)]
enum Extension {
    /// A PAX header (`x`, or a global `g`): its header block and records.
    Pax {
        header: [u8; BLOCK],
        records: Vec<(String, Vec<u8>)>,
        changed: bool,
    },
    /// A GNU long name or link (`L`/`K`), or anything else kept verbatim.
    Raw { header: [u8; BLOCK], data: Vec<u8> },
}

/// An entry's header and the extension records before it. Filters read its
/// path, kind and link, and may change its times.
#[derive(Debug, Clone)]
pub struct TarEntry {
    extensions: Vec<Extension>,
    header: [u8; BLOCK],
    header_changed: bool,
    /// The entry's path as written (PAX `path`, GNU long name or ustar
    /// prefix/name), without a leading `./` or `/`.
    pub path: String,
    /// Link target of a hardlink or symlink.
    pub link: Option<String>,
    pub kind: EntryKind,
    /// Data bytes that follow the header (before padding).
    pub data_len: u64,
    /// Whether the path was written absolute (with a leading `/`).
    pub absolute: bool,
    /// `path` and `link` as the bytes written (file names need not be UTF-8).
    path_raw: Vec<u8>,
    link_raw: Option<Vec<u8>>,
}

impl TarEntry {
    /// The path as written, a leading `/` included when it had one: what
    /// messages name.
    pub fn written_path(&self) -> String {
        if self.absolute {
            format!("/{}", self.path)
        } else {
            self.path.clone()
        }
    }

    /// The path as the archive's bytes (`path` is its lossy UTF-8 text):
    /// what extraction creates, so a non-UTF-8 file name survives.
    pub fn path_bytes(&self) -> &[u8] {
        &self.path_raw
    }

    /// The link target as the archive's bytes.
    pub fn link_bytes(&self) -> Option<&[u8]> {
        self.link_raw.as_deref()
    }

    /// Sets the modification time, and the access and change times where the
    /// entry records them (PAX `atime`/`ctime`, GNU header fields), to `ts`.
    pub fn set_times(&mut self, ts: u64) {
        let old_mtime = parse_number(&self.header[136..148]).unwrap_or(u64::MAX);
        if old_mtime != ts {
            write_octal(&mut self.header[136..148], ts);
            self.header_changed = true;
        }
        if is_gnu(&self.header) {
            for range in [345..357, 357..369] {
                let field = &self.header[range.clone()];
                if field.iter().any(|&b| b != 0) && parse_number(field) != Some(ts) {
                    write_octal(&mut self.header[range], ts);
                    self.header_changed = true;
                }
            }
        }
        let value = ts.to_string().into_bytes();
        for ext in &mut self.extensions {
            if let Extension::Pax { records, changed, .. } = ext {
                for (key, v) in records.iter_mut() {
                    if matches!(key.as_str(), "mtime" | "atime" | "ctime") && *v != value {
                        *v = value.clone();
                        *changed = true;
                    }
                }
            }
        }
    }

    /// The entry's own PAX records (`x` headers, not global `g` ones), in
    /// order; a later record of the same key overrides an earlier one.
    fn pax_records(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.extensions.iter().flat_map(|ext| match ext {
            Extension::Pax { header, records, .. } if header[156] == b'x' => records
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
    }

    /// The last value of PAX record `key`.
    fn pax(&self, key: &str) -> Option<&[u8]> {
        self.pax_records().filter(|(k, _)| *k == key).map(|(_, v)| v).last()
    }

    /// A numeric PAX record, or the header field at `range`.
    fn pax_or_number(&self, key: &str, range: std::ops::Range<usize>) -> u64 {
        self.pax(key)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .or_else(|| parse_number(&self.header[range]))
            .unwrap_or(0)
    }

    /// The modification time the entry records (PAX `mtime` wins).
    pub fn mtime(&self) -> Option<String> {
        if let Some(v) = self.pax("mtime") {
            return Some(String::from_utf8_lossy(v).into_owned());
        }
        parse_number(&self.header[136..148]).map(|n| n.to_string())
    }

    /// The modification time as seconds and nanoseconds: the PAX `mtime`
    /// record with its fraction when it parses, else the header's whole
    /// seconds (0 when unreadable).
    pub fn mtime_precise(&self) -> (i64, u32) {
        if let Some(t) = self.pax("mtime").and_then(parse_pax_time) {
            return t;
        }
        let secs = if self.header[136] == 0xff {
            0
        } else {
            parse_number(&self.header[136..148]).unwrap_or(0)
        };
        (i64::try_from(secs).unwrap_or(i64::MAX), 0)
    }

    /// The owner's uid (PAX `uid` wins over the header).
    pub fn uid(&self) -> u64 {
        self.pax_or_number("uid", 108..116)
    }

    /// The owner's gid (PAX `gid` wins over the header).
    pub fn gid(&self) -> u64 {
        self.pax_or_number("gid", 116..124)
    }

    /// Major and minor device numbers (character and block devices).
    pub fn device(&self) -> (u32, u32) {
        let n = |r: std::ops::Range<usize>| parse_number(&self.header[r]).unwrap_or(0).min(u32::MAX as u64) as u32;
        (n(329..337), n(337..345))
    }

    /// Extended attributes from PAX `SCHILY.xattr.NAME` records (name,
    /// value), a later record of a name replacing an earlier one.
    pub fn xattrs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (k, v) in self.pax_records() {
            if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                out.retain(|(n, _)| n.as_slice() != name.as_bytes());
                out.push((name.as_bytes().to_vec(), v.to_vec()));
            }
        }
        out
    }

    /// The permission bits (and setuid/setgid/sticky) from the header.
    pub fn mode(&self) -> u32 {
        parse_number(&self.header[100..108]).unwrap_or(0) as u32 & 0o7777
    }

    /// Whether the entry records a modification time before 1970 (a
    /// negative base-256 header field or a negative PAX `mtime`).
    pub fn negative_mtime(&self) -> bool {
        if self.header[136] == 0xff {
            return true;
        }
        self.extensions.iter().any(|ext| match ext {
            Extension::Pax { records, .. } => records.iter().any(|(k, v)| k == "mtime" && v.first() == Some(&b'-')),
            Extension::Raw { .. } => false,
        })
    }

    /// The bytes that go before the entry's data: extension records and header.
    pub fn header_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BLOCK * (1 + 2 * self.extensions.len()));
        for ext in &self.extensions {
            match ext {
                Extension::Pax {
                    header,
                    records,
                    changed,
                } => {
                    let data = encode_pax(records);
                    let mut h = *header;
                    if *changed {
                        write_octal(&mut h[124..136], data.len() as u64);
                        set_checksum(&mut h);
                    }
                    out.extend_from_slice(&h);
                    out.extend_from_slice(&data);
                    out.resize(out.len() + padding(data.len() as u64), 0);
                }
                Extension::Raw { header, data } => {
                    out.extend_from_slice(header);
                    out.extend_from_slice(data);
                    out.resize(out.len() + padding(data.len() as u64), 0);
                }
            }
        }
        let mut h = self.header;
        if self.header_changed {
            set_checksum(&mut h);
        }
        out.extend_from_slice(&h);
        out
    }
}

/// What a filter decides for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Drop,
}

/// A reader that counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Reads entries from an uncompressed tar stream.
pub struct TarReader<R: Read> {
    inner: Counted<R>,
    /// Data left of the current entry, then its padding.
    remaining: u64,
    pad: u64,
    done: bool,
    what: String,
}

fn invalid(what: &str, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{what}: {msg}"))
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R, what: impl Into<String>) -> Self {
        TarReader {
            inner: Counted { inner, count: 0 },
            remaining: 0,
            pad: 0,
            done: false,
            what: what.into(),
        }
    }

    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>> {
        let mut b = [0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            let n = self
                .inner
                .read(&mut b[filled..])
                .map_err(|e| Error::stream(&self.what, e))?;
            if n == 0 {
                if filled == 0 {
                    return Ok(None);
                }
                return Err(invalid(&self.what, "the tar stream ends inside a header"));
            }
            filled += n;
        }
        Ok(Some(b))
    }

    fn read_exact_vec(&mut self, len: u64) -> Result<Vec<u8>> {
        if len > MAX_EXTENSION {
            return Err(invalid(
                &self.what,
                format!("an extension record of {len} bytes is over the {MAX_EXTENSION} byte limit"),
            ));
        }
        let what = &self.what;
        let short = |e: io::Error| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                invalid(what, "the tar stream ends inside an extension record")
            } else {
                Error::stream(what, e)
            }
        };
        let mut v = vec![0u8; len as usize];
        self.inner.read_exact(&mut v).map_err(short)?;
        let mut pad = vec![0u8; padding(len)];
        self.inner.read_exact(&mut pad).map_err(short)?;
        Ok(v)
    }

    /// The next entry, or None at the end of the archive. The previous
    /// entry's data must have been read or skipped.
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>> {
        if self.remaining > 0 || self.pad > 0 {
            self.skip_data()?;
        }
        if self.done {
            return Ok(None);
        }
        let mut extensions = Vec::new();
        let mut pax_path = None;
        let mut pax_link = None;
        let mut pax_size = None;
        let mut gnu_path = None;
        let mut gnu_link = None;
        loop {
            let Some(header) = self.read_block()? else {
                // No end-of-archive blocks: accept a plain EOF at an entry boundary.
                self.done = true;
                return if extensions.is_empty() {
                    Ok(None)
                } else {
                    Err(invalid(&self.what, "the tar stream ends after an extension record"))
                };
            };
            if header.iter().all(|&b| b == 0) {
                self.done = true;
                if !extensions.is_empty() {
                    return Err(invalid(
                        &self.what,
                        "an extension record is followed by the end of the archive",
                    ));
                }
                return Ok(None);
            }
            if !checksum_ok(&header) {
                return Err(invalid(
                    &self.what,
                    "a tar header has a bad checksum (not a tar stream, or corrupt)",
                ));
            }
            let size = parse_number(&header[124..136])
                .ok_or_else(|| invalid(&self.what, "a tar header has an unreadable size"))?;
            match header[156] {
                b'x' | b'g' => {
                    let data = self.read_exact_vec(size)?;
                    let records = parse_pax(&data).map_err(|m| invalid(&self.what, m))?;
                    if header[156] == b'x' {
                        for (k, v) in &records {
                            if k.starts_with("GNU.sparse.") {
                                return Err(invalid(
                                    &self.what,
                                    "a PAX sparse file (GNU.sparse.* records) is not supported: \
                                     rebuild the archive without --sparse",
                                ));
                            }
                            match k.as_str() {
                                "path" => pax_path = Some(v.clone()),
                                "linkpath" => pax_link = Some(v.clone()),
                                "size" => pax_size = std::str::from_utf8(v).ok().and_then(|s| s.parse::<u64>().ok()),
                                _ => {}
                            }
                        }
                    }
                    extensions.push(Extension::Pax {
                        header,
                        records,
                        changed: false,
                    });
                }
                b'L' | b'K' => {
                    let data = self.read_exact_vec(size)?;
                    let text = data.split(|&b| b == 0).next().unwrap_or(&[]).to_vec();
                    if header[156] == b'L' {
                        gnu_path = Some(text);
                    } else {
                        gnu_link = Some(text);
                    }
                    extensions.push(Extension::Raw { header, data });
                }
                b'S' => {
                    return Err(invalid(
                        &self.what,
                        format!(
                            "entry {:?} is a GNU sparse file, which is not supported: \
                             rebuild the archive without --sparse",
                            String::from_utf8_lossy(&ustar_path(&header))
                        ),
                    ));
                }
                flag => {
                    let kind = EntryKind::from_flag(flag);
                    let data_len = if kind.header_only() {
                        0
                    } else {
                        pax_size.unwrap_or(size)
                    };
                    let path = pax_path.or(gnu_path).unwrap_or_else(|| ustar_path(&header));
                    let link = match kind {
                        EntryKind::HardLink | EntryKind::Symlink => Some(
                            pax_link
                                .or(gnu_link)
                                .unwrap_or_else(|| field_bytes(&header[157..257]).to_vec()),
                        ),
                        _ => None,
                    };
                    self.remaining = data_len;
                    self.pad = padding(data_len) as u64;
                    return Ok(Some(TarEntry {
                        extensions,
                        header,
                        header_changed: false,
                        absolute: path.starts_with(b"/"),
                        path: String::from_utf8_lossy(normalize_bytes(&path)).into_owned(),
                        link: link.as_deref().map(|l| String::from_utf8_lossy(l).into_owned()),
                        path_raw: normalize_bytes(&path).to_vec(),
                        link_raw: link,
                        kind,
                        data_len,
                    }));
                }
            }
        }
    }

    /// Copies the current entry's data (and padding) to `out`.
    pub fn copy_data(&mut self, out: &mut dyn Write) -> Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let total = self.remaining + self.pad;
        let mut left = total;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = self
                .inner
                .read(&mut buf[..want])
                .map_err(|e| Error::stream(&self.what, e))?;
            if n == 0 {
                return Err(invalid(&self.what, "the tar stream ends inside an entry's data"));
            }
            out.write_all(&buf[..n]).map_err(|e| Error::stream(&self.what, e))?;
            left -= n as u64;
        }
        self.remaining = 0;
        self.pad = 0;
        Ok(())
    }

    /// Reads up to `buf.len()` bytes of the current entry's data (never its
    /// padding); 0 at the end of the data. A stream ending early is an error.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.remaining) as usize;
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::stream(&self.what, e)),
            }
        };
        if n == 0 {
            return Err(invalid(&self.what, "the tar stream ends inside an entry's data"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// Reads past the current entry's data.
    pub fn skip_data(&mut self) -> Result<()> {
        self.copy_data(&mut io::sink())
    }

    /// Bytes of the stream read so far (the offset of the current entry's
    /// data right after [`Self::next_entry`]).
    pub fn position(&self) -> u64 {
        self.inner.count
    }

    /// Reads the rest of the stream (trailing zero blocks) so that whatever
    /// verifies the input sees all of it.
    pub fn drain(&mut self) -> Result<()> {
        io::copy(&mut self.inner, &mut io::sink()).map_err(|e| Error::stream(&self.what, e))?;
        Ok(())
    }
}

impl<R: Read + Seek> TarReader<R> {
    /// Seeks past the current entry's data and padding instead of reading
    /// them (an index of a large archive on disk). Whether the data is really
    /// there is for the caller to check against the file's length.
    pub fn seek_past_data(&mut self) -> Result<()> {
        let skip = self.remaining + self.pad;
        if skip > 0 {
            let by = i64::try_from(skip).map_err(|_| invalid(&self.what, "an entry is too large"))?;
            self.inner
                .inner
                .seek(SeekFrom::Current(by))
                .map_err(|e| Error::stream(&self.what, e))?;
            self.inner.count += skip;
        }
        self.remaining = 0;
        self.pad = 0;
        Ok(())
    }
}

/// The end-of-archive marker: two zero blocks.
pub const END_OF_ARCHIVE: [u8; 2 * BLOCK] = [0u8; 2 * BLOCK];

fn padding(len: u64) -> usize {
    ((BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64) as usize
}

fn is_gnu(h: &[u8; BLOCK]) -> bool {
    &h[257..265] == b"ustar  \0"
}

fn field_bytes(f: &[u8]) -> &[u8] {
    let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
    &f[..end]
}

fn ustar_path(h: &[u8; BLOCK]) -> Vec<u8> {
    let name = field_bytes(&h[0..100]);
    if &h[257..263] == b"ustar\0" {
        let prefix = field_bytes(&h[345..500]);
        if !prefix.is_empty() {
            return [prefix, b"/", name].concat();
        }
    }
    name.to_vec()
}

/// [`normalize_path`] on the bytes as written.
fn normalize_bytes(mut s: &[u8]) -> &[u8] {
    loop {
        if let Some(rest) = s.strip_prefix(b"./") {
            s = rest;
        } else if let Some(rest) = s.strip_prefix(b"/") {
            s = rest;
        } else {
            return s;
        }
    }
}

/// Strips a leading `./` or `/` (layers are written both ways).
pub fn normalize_path(p: &str) -> String {
    let mut s = p;
    loop {
        if let Some(rest) = s.strip_prefix("./") {
            s = rest;
        } else if let Some(rest) = s.strip_prefix('/') {
            s = rest;
        } else {
            break;
        }
    }
    s.to_string()
}

/// Parses an octal (space/NUL padded) or base-256 numeric field.
fn parse_number(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|b| b & 0x80 != 0) {
        let mut n: u64 = (f[0] & 0x7f) as u64;
        for &b in &f[1..] {
            n = n.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(n);
    }
    let s: String = f
        .iter()
        .map(|&b| b as char)
        .filter(|c| !matches!(c, '\0' | ' '))
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(&s, 8).ok()
}

/// Writes `n` into a numeric field: octal with a NUL when it fits, else base-256.
fn write_octal(f: &mut [u8], n: u64) {
    let digits = f.len() - 1;
    let s = format!("{n:0digits$o}");
    if s.len() <= digits {
        f[..digits].copy_from_slice(s.as_bytes());
        f[digits] = 0;
    } else {
        f.fill(0);
        let mut v = n;
        for b in f.iter_mut().rev() {
            *b = (v & 0xff) as u8;
            v >>= 8;
        }
        f[0] |= 0x80;
    }
}

fn checksum_of(h: &[u8; BLOCK]) -> u64 {
    h.iter()
        .enumerate()
        .map(|(i, &b)| if (148..156).contains(&i) { b' ' as u64 } else { b as u64 })
        .sum()
}

fn checksum_ok(h: &[u8; BLOCK]) -> bool {
    parse_number(&h[148..156]) == Some(checksum_of(h))
}

fn set_checksum(h: &mut [u8; BLOCK]) {
    let sum = checksum_of(h);
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

/// Parses a PAX time (`-?SECONDS[.FRACTION]`) into seconds and
/// nanoseconds; None when malformed.
pub fn parse_pax_time(raw: &[u8]) -> Option<(i64, u32)> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    let mut secs: i64 = whole.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let mut nanos: u32 = digits.parse().ok()?;
    if whole.starts_with('-') && nanos > 0 {
        // -1.25 is 1.25 s before the epoch: -2 s + 0.75 s.
        secs = secs.checked_sub(1)?;
        nanos = 1_000_000_000 - nanos;
    }
    Some((secs, nanos))
}

fn parse_pax(data: &[u8]) -> std::result::Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("a PAX record has no length")?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("a PAX record has a bad length")?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err("a PAX record is malformed".into());
        }
        let body = &rest[space + 1..len - 1];
        let eq = body.iter().position(|&b| b == b'=').ok_or("a PAX record has no '='")?;
        out.push((
            String::from_utf8_lossy(&body[..eq]).into_owned(),
            body[eq + 1..].to_vec(),
        ));
        rest = &rest[len..];
    }
    Ok(out)
}

fn encode_pax(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        // "LEN key=value\n", where LEN counts its own digits.
        let body = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        // A long name goes through a GNU 'L' record.
        let long = format!("dir/{}/file.txt", "x".repeat(120));
        b.append_data(&mut h, &long, &b"hello"[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mtime(5);
        h.set_cksum();
        b.append_link(&mut h, "./lnk", "dir").unwrap();
        // A PAX entry with times and an xattr.
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o755);
        h.set_mtime(99);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_pax_extensions([
            ("mtime", &b"99.5"[..]),
            ("atime", &b"98"[..]),
            ("SCHILY.xattr.security.capability", &b"\x01\x00\x00\x02"[..]),
        ])
        .unwrap();
        b.append_data(&mut h, "bin/tool", &b"abc"[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn rewrite(input: &[u8], mut f: impl FnMut(&mut TarEntry) -> Verdict) -> Vec<u8> {
        let mut r = TarReader::new(input, "test");
        let mut out = Vec::new();
        while let Some(mut e) = r.next_entry().unwrap() {
            if f(&mut e) == Verdict::Keep {
                out.extend_from_slice(&e.header_bytes());
                r.copy_data(&mut out).unwrap();
            } else {
                r.skip_data().unwrap();
            }
        }
        out.extend_from_slice(&END_OF_ARCHIVE);
        out
    }

    #[test]
    fn unchanged_entries_are_byte_identical() {
        let input = archive();
        let out = rewrite(&input, |_| Verdict::Keep);
        assert_eq!(&out[..], &input[..out.len()]);
        assert!(input[out.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn paths_kinds_and_links_are_read() {
        let input = archive();
        let mut seen = Vec::new();
        rewrite(&input, |e| {
            seen.push((e.path.clone(), e.kind, e.link.clone(), e.data_len));
            Verdict::Keep
        });
        assert_eq!(seen.len(), 3);
        assert!(seen[0].0.ends_with("/file.txt") && seen[0].0.len() > 120);
        assert_eq!(seen[1], ("lnk".into(), EntryKind::Symlink, Some("dir".into()), 0));
        assert_eq!(seen[2], ("bin/tool".into(), EntryKind::File, None, 3));
    }

    #[test]
    fn times_are_rewritten_everywhere_and_the_rest_survives() {
        let out = rewrite(&archive(), |e| {
            e.set_times(0);
            Verdict::Keep
        });
        let mut a = tar::Archive::new(&out[..]);
        let mut n = 0;
        for entry in a.entries().unwrap() {
            let mut entry = entry.unwrap();
            assert_eq!(entry.header().mtime().unwrap(), 0);
            if let Some(ext) = entry.pax_extensions().unwrap() {
                let recs: Vec<(String, Vec<u8>)> = ext
                    .map(|r| {
                        let r = r.unwrap();
                        (r.key().unwrap().to_string(), r.value_bytes().to_vec())
                    })
                    .collect();
                assert!(recs.contains(&("mtime".into(), b"0".to_vec())));
                assert!(recs.contains(&("atime".into(), b"0".to_vec())));
                assert!(recs.contains(&("SCHILY.xattr.security.capability".into(), b"\x01\x00\x00\x02".to_vec())));
                let mut body = String::new();
                entry.read_to_string(&mut body).unwrap();
                assert_eq!(body, "abc");
            }
            n += 1;
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn dropped_entries_vanish_with_their_extension_records() {
        let out = rewrite(&archive(), |e| {
            if e.path.starts_with("dir/") {
                Verdict::Drop
            } else {
                Verdict::Keep
            }
        });
        let mut a = tar::Archive::new(&out[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["lnk", "bin/tool"]);
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let mut r = TarReader::new(&b"definitely not a tar header"[..], "layer x");
        assert!(r.next_entry().unwrap_err().to_string().contains("layer x"));
        let input = archive();
        let mut r = TarReader::new(&input[..700], "layer y");
        let e = r.next_entry();
        let failed = match e {
            Err(_) => true,
            Ok(_) => r.copy_data(&mut Vec::new()).is_err() || r.next_entry().is_err(),
        };
        assert!(failed);
    }

    #[test]
    fn pax_times_keep_their_fraction() {
        let t = |s: &str| parse_pax_time(s.as_bytes());
        assert_eq!(t("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(t("1700000000.5"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(t("1.123456789123"), Some((1, 123_456_789)));
        assert_eq!(t("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(t("12x"), None);
        assert_eq!(t("1.2e3"), None);
    }

    #[test]
    fn pax_owner_xattrs_devices_and_sparse() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Char);
        h.set_size(0);
        h.set_uid(7);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_pax_extensions([
            ("uid", &b"3000000"[..]),
            ("SCHILY.xattr.user.a", &b"1"[..]),
            ("SCHILY.xattr.user.a", &b"2"[..]),
            ("mtime", &b"5.25"[..]),
        ])
        .unwrap();
        b.append_data(&mut h, "dev/null", io::empty()).unwrap();
        let input = b.into_inner().unwrap();
        let mut r = TarReader::new(&input[..], "t");
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!((e.uid(), e.gid(), e.device()), (3_000_000, 0, (1, 3)));
        assert_eq!(e.xattrs(), vec![(b"user.a".to_vec(), b"2".to_vec())]);
        assert_eq!(e.mtime_precise(), (5, 250_000_000));
        assert!(r.next_entry().unwrap().is_none());

        let mut sparse = input.clone();
        sparse[1024 + 156] = b'S';
        let mut h = [0u8; BLOCK];
        h.copy_from_slice(&sparse[1024..1536]);
        set_checksum(&mut h);
        sparse[1024..1536].copy_from_slice(&h);
        let err = TarReader::new(&sparse[..], "t").next_entry().unwrap_err();
        assert!(err.to_string().contains("sparse"), "{err}");
    }

    #[test]
    fn non_utf8_names_keep_their_bytes() {
        let mut h = [0u8; BLOCK];
        let name = b"./caf\xe9/x";
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(b"00000000000\0");
        h[156] = b'2';
        h[157..160].copy_from_slice(b"\xff/y");
        h[257..265].copy_from_slice(b"ustar\x0000");
        set_checksum(&mut h);
        let input = [&h[..], &[0u8; 1024][..]].concat();
        let mut r = TarReader::new(&input[..], "t");
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.path_bytes(), b"caf\xe9/x");
        assert_eq!(e.path, "caf\u{fffd}/x");
        assert_eq!(e.link_bytes(), Some(&b"\xff/y"[..]));
    }

    #[test]
    fn pax_lengths_count_their_own_digits() {
        let recs = vec![("k".to_string(), vec![b'v'; 95])];
        let enc = encode_pax(&recs);
        assert_eq!(parse_pax(&enc).unwrap(), recs);
        assert_eq!(enc.len(), 102);
        assert!(enc.starts_with(b"102 "));
    }
}
