//! Replays every saved fuzz finding (`fuzz/regressions/TARGET/*`) through its
//! target, then a short deterministic mutation run over seeds (the examples'
//! sync files, the quickstart image's manifests, configs and layers), so
//! the parsers' robustness is checked on every test run, not only when
//! someone fuzzes (`fuzz/run.sh`, nightly + cargo-fuzz).

use std::io::Read;
use std::path::Path;

use occy_testkit::fuzz_targets::TARGETS;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_saved_finding_is_handled() {
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let dir = repo().join("fuzz/regressions").join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries {
            let path = e.unwrap().path();
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                continue;
            }
            target(&std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    eprintln!("{replayed} saved inputs replayed");
}

/// Seeds per target.
fn seeds(name: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let blobs = repo().join("examples/quickstart/image/blobs/sha256");
    let all: Vec<Vec<u8>> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    match name {
        "sync_file" => {
            for e in std::fs::read_dir(repo().join("examples")).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "yaml" || x == "toml" || x == "yml") {
                    out.push(std::fs::read(p).unwrap());
                }
            }
        }
        "reference" => {
            for r in [
                "registry://quay.io/org/app:1.0",
                "registry://127.0.0.1:5000/a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "tar:///tmp/app.tar",
                "oci:///srv/layout:1.0",
                "dir:///x?unique_names=true",
                "docker://app:1?socket=/run/d.sock",
                "quay://org/app*:latest?since=2024-01-01",
                "registry://h/org/*:v*",
            ] {
                out.push(r.as_bytes().to_vec());
            }
        }
        "manifest" | "config" => out.extend(all.iter().filter(|b| b.first() == Some(&b'{')).cloned()),
        _ => {
            for b in all.iter().filter(|b| b.starts_with(&[0x1f, 0x8b])) {
                let mut tar = Vec::new();
                flate2::read::GzDecoder::new(&b[..]).read_to_end(&mut tar).unwrap();
                out.push(tar);
            }
        }
    }
    assert!(!out.is_empty(), "no seeds for {name}");
    out
}

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation: flip bytes, cut, duplicate a slice, or write a digit run
/// (tar size fields, JSON numbers).
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        if v.is_empty() {
            v.push(b'{');
        }
        let at = rng.below(v.len());
        match rng.below(5) {
            0 => v[at] ^= 1 << rng.below(8),
            1 => v.truncate(at),
            2 => {
                let end = (at + rng.below(64)).min(v.len());
                let piece = v[at..end].to_vec();
                v.splice(at..at, piece);
            }
            3 => {
                let end = (at + 11).min(v.len());
                for b in &mut v[at..end] {
                    *b = b'7';
                }
            }
            _ => v[at] = rng.next() as u8,
        }
    }
    v
}

#[test]
fn mutated_seeds_never_panic() {
    let rounds: usize = std::env::var("OCCY_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for (name, target) in TARGETS {
        let seeds = seeds(name);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
        for s in &seeds {
            target(s);
        }
        for i in 0..rounds {
            let input = mutate(&mut rng, &seeds[i % seeds.len()]);
            let run = std::panic::catch_unwind(|| target(&input));
            if run.is_err() {
                let saved = std::env::temp_dir().join(format!("occy-fuzz-{name}-{i}"));
                let _ = std::fs::write(&saved, &input);
                panic!("{name} panicked on mutation {i}; input saved at {}", saved.display());
            }
        }
    }
}
