//! Fuzz harness for the readers (issue 11): mutates the files in tests/data with a fixed seed and
//! runs the NIfTI, DICOM-series and safetensors readers in-process, counting panics, the peak of
//! live heap bytes per trial (a counting global allocator) and the slowest trial.
//!
//! `cargo test --test hardening_fuzz` runs about 15 s. For a long run:
//! `DNVS_FUZZ_SECS=1200 DNVS_FUZZ_SEED=7 nice -n 15 cargo test --release --test hardening_fuzz -- --nocapture`
//! (the seconds are split evenly between the three readers).
//!
//! Pass criteria: zero panics, and no trial whose peak live heap exceeds its honest bound:
//! NIfTI 8 x the inflated file + 8 MiB (4 bytes of f32 per stored byte, twice, plus buffers);
//! DICOM 64 x the series' file bytes + 64 MiB (the decoders' own compression guard is 64x);
//! safetensors 4 x the file + 4 MiB.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::data_path;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            PEAK.fetch_max(LIVE.fetch_add(l.size(), Relaxed) + l.size(), Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            PEAK.fetch_max(LIVE.fetch_add(l.size(), Relaxed) + l.size(), Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            if new >= l.size() {
                let d = new - l.size();
                PEAK.fetch_max(LIVE.fetch_add(d, Relaxed) + d, Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new, Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// splitmix64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random mutation of `b`; `hot` is a byte range mutated more often (headers).
fn mutate(rng: &mut Rng, b: &mut Vec<u8>, hot: std::ops::Range<usize>) {
    let pick = |rng: &mut Rng, b: &Vec<u8>| {
        if rng.below(3) > 0 && hot.end <= b.len() && !hot.is_empty() {
            hot.start + rng.below(hot.len())
        } else {
            rng.below(b.len())
        }
    };
    if b.is_empty() {
        return;
    }
    match rng.below(7) {
        0 => {
            let i = pick(rng, b);
            b[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = pick(rng, b);
            b[i] = rng.next() as u8;
        }
        2 => {
            // An interesting integer at a random (header) offset, either byte order.
            const V: [u32; 8] = [0, 1, 0xFF, 0x7FFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 1337];
            let v = V[rng.below(V.len())].to_le_bytes();
            let i = pick(rng, b);
            let n = [1, 2, 4][rng.below(3)].min(b.len() - i);
            b[i..i + n].copy_from_slice(&v[..n]);
        }
        3 if b.len() >= 4 => {
            // +-1 on a 16- or 32-bit little-endian field (length fields).
            let i = pick(rng, b).min(b.len().saturating_sub(4));
            let mut x = u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
            x = if rng.below(2) == 0 { x.wrapping_add(1) } else { x.wrapping_sub(1) };
            b[i..i + 4].copy_from_slice(&x.to_le_bytes());
        }
        4 => b.truncate(rng.below(b.len())),
        5 => {
            let i = rng.below(b.len());
            let n = rng.below(64).min(b.len() - i);
            let chunk = b[i..i + n].to_vec();
            let at = rng.below(b.len());
            b.splice(at..at, chunk);
        }
        _ => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
        }
    }
}

#[derive(Default, Debug)]
struct Tally {
    trials: usize,
    ok: usize,
    errors: usize,
    panics: Vec<String>,
    over_bound: Vec<String>,
    worst_ratio: f64,
    worst_peak: usize,
    slowest: Duration,
}

/// Runs `read` once, counting a panic and the peak live heap against `bound` bytes.
fn trial(t: &mut Tally, what: &str, bound: usize, read: impl FnOnce() -> bool) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let start = Instant::now();
    // A panic inside the reader is counted, not printed; one in the harness itself still shows.
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read));
    let _ = std::panic::take_hook();
    t.slowest = t.slowest.max(start.elapsed());
    let peak = PEAK.load(Relaxed).saturating_sub(base);
    t.trials += 1;
    match r {
        Ok(true) => t.ok += 1,
        Ok(false) => t.errors += 1,
        Err(p) => {
            let m = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            t.panics.push(format!("{what}: {m}"));
        }
    }
    t.worst_peak = t.worst_peak.max(peak);
    t.worst_ratio = t.worst_ratio.max(peak as f64 / bound as f64);
    if peak > bound {
        t.over_bound.push(format!("{what}: peak {peak} B > bound {bound} B"));
    }
}

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dnvs_fuzz_{tag}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn inflate(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = flate2::read::MultiGzDecoder::new(b).read_to_end(&mut out);
    out
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn fuzz_nifti(rng: &mut Rng, budget: Duration) -> Tally {
    let seeds: Vec<Vec<u8>> = ["bad/ramp_8x8x4.nii", "bad/nan_inf_8x8x4.nii", "bad/mask_01.nii"]
        .iter()
        .map(|f| std::fs::read(data_path(f)).unwrap())
        .chain([inflate(&std::fs::read(data_path("real/totalseg_example_ct_sm.nii.gz")).unwrap())])
        .collect();
    let dir = tmp_dir("nii");
    let mut t = Tally::default();
    let end = Instant::now() + budget;
    while Instant::now() < end {
        let mut b = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(3) {
            mutate(rng, &mut b, 0..352);
        }
        // Plain, gzip of the mutant, or a mutant of the gzip stream itself.
        let (bytes, name) = match rng.below(3) {
            0 => (b, "m.nii"),
            1 => (gzip(&b), "m.nii.gz"),
            _ => {
                let mut g = gzip(&b);
                let n = g.len();
                mutate(rng, &mut g, n.saturating_sub(8)..n);
                (g, "m.nii.gz")
            }
        };
        let honest = bytes.len().max(inflate(&bytes).len());
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        trial(&mut t, name, 8 * honest + (8 << 20), || dnvs_engine::io::read_nifti(&path).is_ok());
    }
    let _ = std::fs::remove_dir_all(&dir);
    t
}

fn fuzz_dicom(rng: &mut Rng, budget: Duration) -> Tally {
    let mut src: Vec<PathBuf> = std::fs::read_dir(data_path("real/totalseg_example_ct_dicom"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    src.sort();
    let seeds: Vec<Vec<u8>> = src[..2].iter().map(|f| std::fs::read(f).unwrap()).collect();
    let dir = tmp_dir("dcm");
    let mut t = Tally::default();
    let end = Instant::now() + budget;
    while Instant::now() < end {
        let which = rng.below(2);
        let mut b = seeds[which].clone();
        // Headers end near the J2K codestream start (~4.9 KB): mutate there most.
        for _ in 0..1 + rng.below(3) {
            mutate(rng, &mut b, 0..5200);
        }
        std::fs::write(dir.join("a.dcm"), if which == 0 { &b } else { &seeds[0] }).unwrap();
        std::fs::write(dir.join("b.dcm"), if which == 1 { &b } else { &seeds[1] }).unwrap();
        let honest = b.len() + seeds[1 - which].len();
        let d = dir.clone();
        trial(&mut t, "dicom", 64 * honest + (64 << 20), move || {
            dnvs_engine::io::read_dicom_series(&d, None).is_ok()
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    t
}

fn fuzz_safetensors(rng: &mut Rng, budget: Duration) -> Tally {
    let seed = std::fs::read(data_path("golden/unet3d_f8.weights.safetensors")).unwrap();
    let header_end = 8 + u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
    let dir = tmp_dir("st");
    let path = dir.join("m.safetensors");
    let mut t = Tally::default();
    let end = Instant::now() + budget;
    while Instant::now() < end {
        let mut b = seed.clone();
        for _ in 0..1 + rng.below(3) {
            mutate(rng, &mut b, 0..header_end);
        }
        std::fs::write(&path, &b).unwrap();
        let p: &Path = &path;
        trial(&mut t, "safetensors", 4 * b.len() + (4 << 20), || {
            dnvs_engine::io::weights::read_safetensors(p).is_ok()
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    t
}

#[test]
fn readers_survive_mutated_inputs() {
    let secs: f64 =
        std::env::var("DNVS_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(15.0);
    let seed: u64 = std::env::var("DNVS_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(11);
    let each = Duration::from_secs_f64(secs / 3.0);
    let mut rng = Rng(seed);
    let results = [
        ("nifti", fuzz_nifti(&mut rng, each)),
        ("dicom", fuzz_dicom(&mut rng, each)),
        ("safetensors", fuzz_safetensors(&mut rng, each)),
    ];
    let mut failed = false;
    for (name, t) in &results {
        println!(
            "fuzz {name}: seed {seed}, {} trials ({} read, {} refused), {} panics, {} over the \
             memory bound, worst peak {:.1} MiB ({:.2} of its bound), slowest {:.2} s",
            t.trials,
            t.ok,
            t.errors,
            t.panics.len(),
            t.over_bound.len(),
            t.worst_peak as f64 / (1 << 20) as f64,
            t.worst_ratio,
            t.slowest.as_secs_f64()
        );
        for m in t.panics.iter().chain(&t.over_bound).take(5) {
            println!("  {m}");
        }
        failed |= !t.panics.is_empty() || !t.over_bound.is_empty() || t.trials == 0;
    }
    assert!(!failed, "a reader panicked or allocated beyond its bound (see above)");
}
