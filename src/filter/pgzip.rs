//! Block-parallel gzip, as pigz does it: the stream is cut into 128 KiB
//! blocks, each compressed on its own thread as raw deflate primed with the
//! last 32 KiB of the block before (so the ratio stays close to a single
//! stream) and ended with a sync flush, and the blocks are written in order
//! between one gzip header and one trailer. The result is one ordinary gzip
//! member any gunzip reads.
//!
//! The bytes depend only on the data, the level and the block size — never
//! on the number of threads or on timing — so layers stay reproducible.
//! Compression runs on worker threads while the caller keeps decompressing
//! and rewriting; memory is bounded by the blocks in flight (2 per thread).

use std::io::{self, Write};

use flate2::{Compress, Compression, FlushCompress, Status};

/// Uncompressed bytes per block (pigz's default).
pub const BLOCK: usize = 128 * 1024;
/// Deflate's window: the dictionary each block gets from the one before.
const DICT: usize = 32 * 1024;
/// gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// One block for a worker: its sequence number, dictionary and data.
struct Job {
    seq: u64,
    dict: Vec<u8>,
    data: Vec<u8>,
    last: bool,
}

/// A gzip writer that compresses blocks on worker threads while the caller
/// goes on producing data: blocks are handed out as they fill, and their
/// outputs written in order as they come back. At most `2 × threads`
/// blocks are in flight, so memory stays bounded.
pub struct ParallelGzip<W: Write> {
    out: W,
    max_in_flight: usize,
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    results: std::sync::mpsc::Receiver<(u64, io::Result<Vec<u8>>)>,
    workers: Vec<std::thread::JoinHandle<()>>,
    /// Outputs that came back ahead of their turn.
    waiting: std::collections::BTreeMap<u64, Vec<u8>>,
    next_seq: u64,
    next_to_write: u64,
    /// Input not yet handed out (less than a block).
    pending: Vec<u8>,
    /// The last `DICT` bytes handed out.
    dict: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    header_written: bool,
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(out: W, level: u32, threads: usize) -> Self {
        let threads = threads.max(1);
        let level = level.min(9);
        let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<Job>(threads * 2);
        let (res_tx, res_rx) = std::sync::mpsc::channel();
        let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let job_rx = job_rx.clone();
                let res_tx = res_tx.clone();
                std::thread::spawn(move || loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let out = deflate_block(level, &job.dict, &job.data, job.last);
                    if res_tx.send((job.seq, out)).is_err() {
                        return;
                    }
                })
            })
            .collect();
        ParallelGzip {
            out,
            max_in_flight: threads * 2,
            jobs: Some(job_tx),
            results: res_rx,
            workers,
            waiting: std::collections::BTreeMap::new(),
            next_seq: 0,
            next_to_write: 0,
            pending: Vec::with_capacity(BLOCK),
            dict: Vec::new(),
            crc: crc32fast::Hasher::new(),
            total: 0,
            header_written: false,
        }
    }

    /// Writes every finished output whose turn has come, waiting for results
    /// until at most `keep` blocks are still in flight. (Dropping the writer
    /// closes the job channel, which stops the workers.)
    fn collect(&mut self, keep: usize) -> io::Result<()> {
        loop {
            while let Some(bytes) = self.waiting.remove(&self.next_to_write) {
                self.out.write_all(&bytes)?;
                self.next_to_write += 1;
            }
            let in_flight = (self.next_seq - self.next_to_write) as usize;
            if in_flight <= keep {
                return Ok(());
            }
            let (seq, result) = self
                .results
                .recv()
                .map_err(|_| io::Error::other("the gzip workers stopped"))?;
            self.waiting.insert(seq, result?);
        }
    }

    /// Hands one block to the workers.
    fn submit(&mut self, data: Vec<u8>, last: bool) -> io::Result<()> {
        if !self.header_written {
            self.out.write_all(&HEADER)?;
            self.header_written = true;
        }
        self.collect(self.max_in_flight.saturating_sub(1))?;
        self.crc.update(&data);
        self.total += data.len() as u64;
        let dict = std::mem::take(&mut self.dict);
        self.dict = data[data.len().saturating_sub(DICT)..].to_vec();
        let job = Job {
            seq: self.next_seq,
            dict,
            data,
            last,
        };
        self.next_seq += 1;
        self.jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))?
            .send(job)
            .map_err(|_| io::Error::other("the gzip workers stopped"))
    }

    /// Writes what is left, the final block and the trailer.
    pub fn finish(mut self) -> io::Result<W> {
        let rest = std::mem::take(&mut self.pending);
        self.submit(rest, true)?;
        self.collect(0)?;
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
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
        let mut rest = buf;
        while !rest.is_empty() {
            let room = BLOCK - self.pending.len();
            let take = room.min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            // A full block is handed out only once more data follows, so the
            // last block (which ends the stream) is never empty.
            if self.pending.len() == BLOCK && !rest.is_empty() {
                let block = std::mem::replace(&mut self.pending, Vec::with_capacity(BLOCK));
                self.submit(block, false)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Finished blocks are written as they come back; the block being
        // filled cannot be flushed without changing the output bytes.
        self.collect(usize::MAX)?;
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
