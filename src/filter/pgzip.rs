//! Block-parallel gzip, as pigz does it: the stream is cut into 128 KiB
//! blocks, each compressed on its own thread as raw deflate primed with the
//! last 32 KiB of the block before (so the ratio stays close to a single
//! stream) and ended with a sync flush, and the blocks are written in order
//! between one gzip header and one trailer. The result is one ordinary gzip
//! member any gunzip reads.
//!
//! The bytes depend only on the data, the level and the block size — never
//! on the number of threads or on timing — so layers stay reproducible.
//! Memory is bounded: one batch of blocks per thread pair at a time.

use std::io::{self, Write};

use flate2::{Compress, Compression, FlushCompress, Status};

/// Uncompressed bytes per block (pigz's default).
pub const BLOCK: usize = 128 * 1024;
/// Deflate's window: the dictionary each block gets from the one before.
const DICT: usize = 32 * 1024;
/// gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// A gzip writer that compresses blocks on several threads.
pub struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    threads: usize,
    /// Input not yet compressed (whole blocks are taken a batch at a time).
    pending: Vec<u8>,
    /// The last `DICT` bytes of the input already compressed.
    dict: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    header_written: bool,
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(out: W, level: u32, threads: usize) -> Self {
        ParallelGzip {
            out,
            level: level.min(9),
            threads: threads.max(1),
            pending: Vec::new(),
            dict: Vec::new(),
            crc: crc32fast::Hasher::new(),
            total: 0,
            header_written: false,
        }
    }

    fn batch_len(&self) -> usize {
        BLOCK * self.threads * 2
    }

    /// Compresses `data` (whole blocks, except at the end) and writes it.
    fn compress_batch(&mut self, data: &[u8], last: bool) -> io::Result<()> {
        if !self.header_written {
            self.out.write_all(&HEADER)?;
            self.header_written = true;
        }
        let blocks: Vec<&[u8]> = if data.is_empty() {
            vec![&[][..]]
        } else {
            data.chunks(BLOCK).collect()
        };
        let n = blocks.len();
        // Each block's dictionary: the tail of the block before it.
        let dicts: Vec<&[u8]> = (0..n)
            .map(|i| {
                if i == 0 {
                    &self.dict[..]
                } else {
                    let prev = blocks[i - 1];
                    &prev[prev.len().saturating_sub(DICT)..]
                }
            })
            .collect();
        let level = self.level;
        let mut outputs: Vec<Option<io::Result<Vec<u8>>>> = (0..n).map(|_| None).collect();
        let per_thread = n.div_ceil(self.threads);
        std::thread::scope(|s| {
            for (chunk_index, slots) in outputs.chunks_mut(per_thread).enumerate() {
                let first = chunk_index * per_thread;
                let blocks = &blocks;
                let dicts = &dicts;
                s.spawn(move || {
                    for (k, slot) in slots.iter_mut().enumerate() {
                        let i = first + k;
                        *slot = Some(deflate_block(level, dicts[i], blocks[i], last && i == n - 1));
                    }
                });
            }
        });
        for o in outputs {
            let bytes = o.unwrap_or_else(|| Err(io::Error::other("a compression thread did not finish")))?;
            self.out.write_all(&bytes)?;
        }
        self.crc.update(data);
        self.total += data.len() as u64;
        let tail_start = data.len().saturating_sub(DICT);
        if data.len() >= DICT {
            self.dict = data[tail_start..].to_vec();
        } else {
            self.dict.extend_from_slice(data);
            let excess = self.dict.len().saturating_sub(DICT);
            self.dict.drain(..excess);
        }
        Ok(())
    }

    /// Writes what is left, the final block and the trailer.
    pub fn finish(mut self) -> io::Result<W> {
        let rest = std::mem::take(&mut self.pending);
        self.compress_batch(&rest, true)?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&(self.total as u32).to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Raw deflate of one block, primed with `dict`; a sync flush ends it unless
/// it is the last block of the stream.
fn deflate_block(level: u32, dict: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        if out.len() == out.capacity() {
            out.reserve(64 * 1024);
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete when all input is in and the output
            // buffer was not filled up.
            _ if !last && all_in && out.len() < out.capacity() => break,
            _ => {}
        }
    }
    Ok(out)
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        let batch = self.batch_len();
        if self.pending.len() >= batch {
            let take = self.pending.len() / BLOCK * BLOCK;
            // Keep at least one byte back so the final block is never empty
            // when data ends on a block boundary.
            let take = if take == self.pending.len() { take - BLOCK } else { take };
            let data: Vec<u8> = self.pending.drain(..take).collect();
            self.compress_batch(&data, false)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Blocks are emitted a batch at a time; flushing the inner writer is
        // all that can be done without changing the output bytes.
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn data(len: usize) -> Vec<u8> {
        let mut x: u32 = 12345;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                // Half text-like, half noise.
                if (i / 4096) % 2 == 0 {
                    b"the quick brown fox "[i % 20]
                } else {
                    x as u8
                }
            })
            .collect()
    }

    fn gz(input: &[u8], threads: usize, writes: usize) -> Vec<u8> {
        let mut w = ParallelGzip::new(Vec::new(), 6, threads);
        for chunk in input.chunks(writes.max(1)) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    fn gunzip(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn round_trips_at_every_size() {
        for len in [0, 1, 100, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK, 9 * BLOCK + 77] {
            let input = data(len);
            let out = gz(&input, 3, 10_000);
            assert_eq!(gunzip(&out), input, "len {len}");
        }
    }

    #[test]
    fn bytes_do_not_depend_on_threads_or_write_sizes() {
        let input = data(11 * BLOCK + 5);
        let a = gz(&input, 1, 1 << 20);
        let b = gz(&input, 4, 777);
        let c = gz(&input, 7, 65_536);
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn the_dictionary_keeps_the_ratio_close_to_one_stream() {
        let input = data(16 * BLOCK);
        let ours = gz(&input, 2, 1 << 16).len();
        let mut single = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        single.write_all(&input).unwrap();
        let single = single.finish().unwrap().len();
        assert!((ours as f64) < single as f64 * 1.02, "{ours} vs {single}");
    }

    #[test]
    fn command_line_gzip_reads_it() {
        let input = data(5 * BLOCK + 3);
        let out = gz(&input, 2, 4096);
        let Ok(mut child) = std::process::Command::new("gzip")
            .args(["-dc"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            return;
        };
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&out));
        let result = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(result.status.success());
        assert_eq!(result.stdout, input);
    }
}
