//! Deterministic file content and file trees that compress like real layers.
//!
//! Layers of real images are programs, libraries, scripts and text: deflate
//! finds many matches in them and saves 55–65 %, and a compressor spends its
//! time searching those matches. Uniform pseudo-random bytes behave like
//! neither (no matches, so high levels cost nothing), which makes them a
//! poor input for measuring compression-bound work such as filters.
//! [`RealisticContent`] mixes two kinds of segment:
//!
//! - *text*: words of a fixed vocabulary, common ones far more often than
//!   rare ones (a Zipf-like skew), with spaces, punctuation, newlines and
//!   indentation, as in scripts, configuration and documentation;
//! - *code*: short runs of arbitrary bytes interleaved with repeats of
//!   recent runs and runs of zeros, as in machine code and data tables.
//!
//! [`realistic_tree`] lays such content out as a directory tree of files of
//! log-uniform sizes (256 B to 1 MiB), so a rewriter meets thousands of tar
//! headers, as in a root filesystem. Everything depends only on the seed.

use std::io;

use super::Entry;

/// Words of the vocabulary (made from syllables, so they look like words
/// and share prefixes as identifiers do).
const VOCABULARY: usize = 2048;
/// Bytes generated at a time; repeats refer back within a block.
const BLOCK: usize = 64 * 1024;

/// A small, fast deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }

    /// A number in `0..n`, small ones far more likely (product of two uniforms).
    fn skewed(&mut self, n: u64) -> u64 {
        let a = self.below(n);
        let b = self.below(n);
        (a * b) / n
    }
}

/// The vocabulary: built once per generator from a fixed syllable table.
fn vocabulary() -> Vec<Vec<u8>> {
    const SYLLABLES: [&str; 32] = [
        "con", "fig", "init", "lib", "sys", "str", "get", "set", "data", "path", "user", "file", "load", "read", "er",
        "ing", "al", "ex", "pro", "re", "tion", "val", "ue", "net", "work", "ser", "ver", "han", "dle", "buf", "ptr",
        "map",
    ];
    let mut rng = Rng::new(0x0cc7);
    (0..VOCABULARY)
        .map(|_| {
            let parts = 1 + rng.below(3);
            let mut w = Vec::new();
            for _ in 0..parts {
                w.extend_from_slice(SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize].as_bytes());
            }
            w
        })
        .collect()
}

/// An endless stream of realistic bytes; `text_share` (0–100) is the
/// percentage of segments that are text.
pub struct RealisticContent {
    rng: Rng,
    words: Vec<Vec<u8>>,
    text_share: u64,
    block: Vec<u8>,
    pos: usize,
}

impl RealisticContent {
    pub fn new(seed: u64, text_share: u64) -> Self {
        RealisticContent {
            rng: Rng::new(seed),
            words: vocabulary(),
            text_share: text_share.min(100),
            block: Vec::with_capacity(BLOCK + 4096),
            pos: 0,
        }
    }

    fn refill(&mut self) {
        self.block.clear();
        self.pos = 0;
        while self.block.len() < BLOCK {
            if self.rng.below(100) < self.text_share {
                self.text_segment();
            } else {
                self.code_segment();
            }
        }
    }

    fn text_segment(&mut self) {
        let lines = 1 + self.rng.below(8);
        for _ in 0..lines {
            let indent = self.rng.below(4) * 4;
            self.block.extend(std::iter::repeat_n(b' ', indent as usize));
            let words = 2 + self.rng.below(10);
            for k in 0..words {
                if k > 0 {
                    let sep: &[u8] = match self.rng.below(16) {
                        0 => b", ",
                        1 => b"_",
                        2 => b"(",
                        3 => b" = ",
                        4 => b".",
                        _ => b" ",
                    };
                    self.block.extend_from_slice(sep);
                }
                let w = self.rng.skewed(VOCABULARY as u64) as usize;
                self.block.extend_from_slice(&self.words[w]);
                if self.rng.below(32) == 0 {
                    let n = self.rng.below(100_000);
                    self.block.extend_from_slice(n.to_string().as_bytes());
                }
            }
            self.block.push(b'\n');
        }
    }

    fn code_segment(&mut self) {
        let runs = 4 + self.rng.below(28);
        for _ in 0..runs {
            match self.rng.below(10) {
                // A repeat of a recent run, as instruction sequences repeat.
                0..=4 if self.block.len() > 64 => {
                    let len = 4 + self.rng.below(28) as usize;
                    let back = 1 + self.rng.skewed(self.block.len().min(8192) as u64 - 1) as usize;
                    let start = self.block.len().saturating_sub(back.max(len));
                    for i in 0..len {
                        let b = self.block[start + i];
                        self.block.push(b);
                    }
                }
                // A few zeros (padding, small constants).
                5 => {
                    let len = 1 + self.rng.below(12) as usize;
                    self.block.extend(std::iter::repeat_n(0u8, len));
                }
                // Arbitrary bytes.
                _ => {
                    let len = 2 + self.rng.below(10) as usize;
                    for _ in 0..len {
                        self.block.push(self.rng.next() as u8);
                    }
                }
            }
        }
    }
}

impl io::Read for RealisticContent {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.block.len() {
            self.refill();
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Entries of a directory tree under `dir` holding about `size` bytes of
/// realistic content: files of log-uniform sizes from 256 B to 1 MiB, 64 to
/// a directory, named like a root filesystem's (`.so`, `.py`, `.conf` …;
/// text-like names get mostly text).
pub fn realistic_tree(dir: &str, size: u64, seed: u64) -> Vec<Entry> {
    const KINDS: [(&str, u64); 6] = [
        ("so", 20),
        ("bin", 10),
        ("py", 90),
        ("conf", 95),
        ("txt", 100),
        ("dat", 40),
    ];
    let mut rng = Rng::new(seed ^ 0x7ee);
    let mut entries = vec![Entry::Dir(dir.to_string())];
    let (mut left, mut n) = (size, 0u64);
    while left > 0 {
        if n % 64 == 0 {
            entries.push(Entry::Dir(format!("{dir}/d{:03}", n / 64)));
        }
        // log2 of the size, uniform in 8..20 (256 B .. 1 MiB), with 1/8 steps.
        let eighths = 64 + rng.below(96);
        let this = ((1u64 << (eighths / 8)) * (8 + eighths % 8) / 8).min(left);
        let (ext, text_share) = KINDS[rng.below(KINDS.len() as u64) as usize];
        entries.push(Entry::Realistic(
            format!("{dir}/d{:03}/f{n:05}.{ext}", n / 64),
            this,
            seed.wrapping_mul(1_000_003).wrapping_add(n),
            text_share,
        ));
        left -= this;
        n += 1;
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn sample(seed: u64, share: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        RealisticContent::new(seed, share).read_exact(&mut out).unwrap();
        out
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_others_differ() {
        assert_eq!(sample(3, 50, 200_000), sample(3, 50, 200_000));
        assert_ne!(sample(3, 50, 200_000), sample(4, 50, 200_000));
    }

    #[test]
    fn gzip_saves_about_as_much_as_on_real_layers() {
        let data = sample(11, 50, 4 << 20);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gz.write_all(&data).unwrap();
        let ratio = gz.finish().unwrap().len() as f64 / data.len() as f64;
        assert!((0.25..0.55).contains(&ratio), "gzip -6 ratio {ratio:.3}");
    }

    #[test]
    fn a_tree_holds_the_size_asked_in_many_files() {
        let entries = realistic_tree("usr", 8 << 20, 5);
        let (files, bytes) = entries.iter().fold((0, 0), |(f, b), e| match e {
            Entry::Realistic(_, size, _, _) => (f + 1, b + size),
            _ => (f, b),
        });
        assert_eq!(bytes, 8 << 20);
        assert!(files > 40, "{files} files");
    }
}
