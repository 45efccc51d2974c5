//! Criterion benches of the CPU convolution kernels on the V-Net's shapes (batch 1, padding k/2,
//! stride 1) and its 2x2x2 stride-2 down/up convolutions. Names are `cpu/<pass>/<shape>`; each
//! bench reports elements as FLOPs (`2 * voxels_out * K * kvol * C` per pass), so criterion's
//! "thrpt" column reads in GFLOP/s when divided by 1e9 ("Gelem/s").
//!
//! `cargo bench --bench ops` runs criterion (short: 10 samples, 3 s each);
//! `DNVS_BENCH_TABLE=1 cargo bench --bench ops` instead prints one GFLOP/s table (best of a few
//! runs per pass), the numbers docs/PERF.md quotes.

use std::time::{Duration, Instant};

use criterion::{black_box, Criterion, Throughput};
use dnvs_engine::backend::cpu::conv3d::{self, ConvGeom};
use dnvs_engine::backend::cpu::conv_transpose3d;

/// One benchmarked convolution.
struct Case {
    name: &'static str,
    g: ConvGeom,
    transposed: bool,
}

fn conv(name: &'static str, dhw: [usize; 3], c: usize, k: usize, ks: usize, s: usize) -> Case {
    let pad = if s == 1 { ks / 2 } else { 0 };
    let g = ConvGeom::new(1, dhw, c, k, [ks; 3], s, pad).expect("valid bench geometry");
    Case { name, g, transposed: false }
}

/// Up convolution of a `dhw` input with `c_in -> k_out` channels, kernel 2 stride 2.
fn up(name: &'static str, dhw: [usize; 3], c_in: usize, k_out: usize) -> Case {
    let g = conv_transpose3d::geometry([1, dhw[0], dhw[1], dhw[2], c_in], k_out, [2; 3], 2)
        .expect("valid bench geometry");
    Case { name, g, transposed: true }
}

fn cases() -> Vec<Case> {
    vec![
        conv("k5_c16_56x72x32", [56, 72, 32], 16, 16, 5, 1),
        conv("k5_c32_56x72x32", [56, 72, 32], 32, 32, 5, 1),
        conv("k5_c64_28x36x16", [28, 36, 16], 64, 64, 5, 1),
        conv("k3_c32_56x72x32", [56, 72, 32], 32, 32, 3, 1),
        conv("k2s2_c16to32_56x72x32", [56, 72, 32], 16, 32, 2, 2),
        up("up_k2s2_c64to32_28x36x16", [28, 36, 16], 64, 32),
        // The V-Net's deep, small-volume levels (64x64x32 and 32^3 patches): few voxels, most
        // window taps in the padding, 2-8 M weights per layer.
        conv("k5_c128_8x8x4", [8, 8, 4], 128, 128, 5, 1),
        conv("k5_c256_4x4x2", [4, 4, 2], 256, 256, 5, 1),
        conv("k5_c256_2x2x2", [2, 2, 2], 256, 256, 5, 1),
        conv("k5_c128_16x16x8", [16, 16, 8], 128, 128, 5, 1),
    ]
}

/// The three passes of a case as closures over fixed random data.
type Pass = (&'static str, Box<dyn Fn()>);

fn passes(case: &Case) -> Vec<Pass> {
    let g = case.g;
    let x = data(g.in_voxels() * g.c, 1);
    let go = data(g.out_voxels() * g.k, 2);
    let w = data(g.k * g.patch_len(), 3);
    if case.transposed {
        // The transposed conv's input is the convolution's output side, and vice versa.
        let (xt, gt) = (go, x);
        let (xt2, gt2, w2) = (xt.clone(), gt.clone(), w.clone());
        vec![
            (
                "conv_transpose3d_fwd",
                Box::new(move || drop(black_box(conv_transpose3d::fwd(&xt, &w, None, &g)))),
            ),
            (
                "conv_transpose3d_bwd_input",
                Box::new(move || drop(black_box(conv_transpose3d::bwd_input(&gt, &w2, &g)))),
            ),
            (
                "conv_transpose3d_bwd_weight",
                Box::new(move || drop(black_box(conv_transpose3d::bwd_weight(&xt2, &gt2, &g)))),
            ),
        ]
    } else {
        let (x2, w2, go2) = (x.clone(), w.clone(), go.clone());
        vec![
            ("conv3d_fwd", Box::new(move || drop(black_box(conv3d::fwd(&x, &w, None, &g))))),
            (
                "conv3d_bwd_input",
                Box::new(move || drop(black_box(conv3d::bwd_input(&go, &w2, &g)))),
            ),
            (
                "conv3d_bwd_weight",
                Box::new(move || drop(black_box(conv3d::bwd_weight(&x2, &go2, &g)))),
            ),
        ]
    }
}

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 1.6e7 - 0.5)
        .collect()
}

fn bench_conv(c: &mut Criterion) {
    for case in cases() {
        for (pass, f) in passes(&case) {
            let mut group = c.benchmark_group(format!("cpu/{pass}"));
            group.sample_size(10).measurement_time(Duration::from_secs(3));
            group.warm_up_time(Duration::from_millis(500));
            group.throughput(Throughput::Elements(case.g.flops() as u64));
            group.bench_function(case.name, |b| b.iter(&f));
            group.finish();
        }
    }
}

/// CPU seconds (user + system) this process has used so far, from `/proc/self/stat` (0 where
/// that file does not exist). With a shared machine, FLOPs per CPU second says how fast the
/// kernels run when they do run; wall-clock GFLOP/s says what the machine gave them.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    // `rest` starts at field 3 (state, not numeric, skipped by the parse filter), so utime is
    // the 11th numeric value.
    (f.get(10).unwrap_or(&0.0) + f.get(11).unwrap_or(&0.0)) / 100.0
}

/// Best-of-`reps` GFLOP/s per case and pass, printed as a markdown table.
fn table() {
    let reps: usize =
        std::env::var("DNVS_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let only = std::env::var("DNVS_BENCH_ONLY").unwrap_or_default();
    println!("| shape | pass | ms | GFLOP/s (wall) | GFLOP per CPU-s |\n|---|---|---|---|---|");
    for case in cases().into_iter().filter(|c| c.name.contains(&only)) {
        for (pass, f) in passes(&case) {
            f(); // warm the thread-local buffers and caches
            let (mut best, c0) = (f64::INFINITY, cpu_seconds());
            for _ in 0..reps {
                let t = Instant::now();
                f();
                best = best.min(t.elapsed().as_secs_f64());
            }
            let cpu = (cpu_seconds() - c0) / reps as f64;
            let gflop = case.g.flops() / 1e9;
            println!(
                "| {} | {pass} | {:.1} | {:.1} | {:.1} |",
                case.name,
                best * 1e3,
                gflop / best,
                gflop / cpu.max(1e-9)
            );
        }
    }
}

fn main() {
    if std::env::var("DNVS_BENCH_TABLE").is_ok() {
        table();
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench_conv(&mut c);
    c.final_summary();
}
