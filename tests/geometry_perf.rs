//! CPU-time measurements of the geometry for docs/PERF.md on a shared machine, where wall time
//! mostly measures the other processes. Ignored by default; run in release:
//! `cargo test --release --test geometry_perf -- --ignored --nocapture`.

use std::time::Instant;

use dnvs_engine::geometry::{edt, marching_cubes_spacing, metrics::hausdorff};

/// User + system CPU time of this process (all threads), seconds, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the ")".
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn time(name: &str, reps: usize, mut f: impl FnMut()) {
    f();
    let (c0, t0) = (cpu_seconds(), Instant::now());
    for _ in 0..reps {
        f();
    }
    let cpu = (cpu_seconds() - c0) / reps as f64;
    let wall = t0.elapsed().as_secs_f64() / reps as f64;
    println!("{name}: cpu {:.1} ms/iter, wall {:.1} ms/iter", cpu * 1e3, wall * 1e3);
}

fn field(n: usize) -> Vec<f32> {
    let c = (n as f32 - 1.0) / 2.0;
    let r = 0.4 * n as f32;
    let mut v = Vec::with_capacity(n * n * n);
    for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                let (x, y, z) = (i as f32 - c, j as f32 - c, k as f32 - c);
                let d = (x * x + y * y + z * z).sqrt();
                v.push(r - d + 2.0 * (x * 0.15).sin() * (y * 0.13).cos());
            }
        }
    }
    v
}

#[test]
#[ignore = "timing for PERF.md; run in release"]
fn geometry_cpu_time() {
    println!("threads {}", rayon::current_num_threads());
    for n in [128usize, 256] {
        let f = field(n);
        let reps = if n == 128 { 10 } else { 3 };
        time(&format!("marching_cubes {n}^3"), reps, || {
            let m = marching_cubes_spacing(&f, [n; 3], 0.0, [1.0; 3]).unwrap();
            assert!(!m.triangles.is_empty());
        });
        let ball: Vec<bool> = f.iter().map(|&x| x > 0.0).collect();
        time(&format!("edt {n}^3"), reps, || {
            edt(&ball, [n; 3], [1.0; 3]).unwrap();
        });
    }
    let dims = [120usize, 150, 70];
    let ell = |c: [f64; 3], ax: [f64; 3]| -> Vec<bool> {
        let mut v = Vec::new();
        for i in 0..dims[0] {
            for j in 0..dims[1] {
                for k in 0..dims[2] {
                    let p = [i as f64, j as f64, k as f64];
                    v.push((0..3).map(|a| ((p[a] - c[a]) / ax[a]).powi(2)).sum::<f64>() <= 1.0);
                }
            }
        }
        v
    };
    let a = ell([60.0, 75.0, 35.0], [40.0, 50.0, 25.0]);
    let b = ell([62.0, 72.0, 36.0], [38.0, 52.0, 22.0]);
    time("hausdorff 120x150x70", 5, || {
        hausdorff(&a, &b, dims, [0.4; 3], None).unwrap();
    });
}

/// The inputs of the side-by-side EDT comparison with the `edt` PyPI package
/// (`docs/edt_side_by_side.py` builds the same masks with numpy): 256^3, spacing (1.0, 0.8, 1.2),
/// a ball of radius 0.4 n (dense) and one of radius 0.1 n (sparse), centre (n - 1) / 2.
fn ball(n: usize, frac: f64) -> Vec<bool> {
    let c = (n as f64 - 1.0) / 2.0;
    let r2 = (frac * n as f64).powi(2);
    let mut v = Vec::with_capacity(n * n * n);
    for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                let d2 = (i as f64 - c).powi(2) + (j as f64 - c).powi(2) + (k as f64 - c).powi(2);
                v.push(d2 <= r2);
            }
        }
    }
    v
}

#[test]
#[ignore = "timing for PERF.md; run in release beside docs/edt_side_by_side.py"]
fn edt_side_by_side() {
    let n = 256;
    let spacing = [1.0, 0.8, 1.2];
    for (name, frac) in [("dense ball r=0.4n", 0.4), ("sparse ball r=0.1n", 0.1)] {
        let m = ball(n, frac);
        let d = edt(&m, [n; 3], spacing).unwrap();
        let sum: f64 = d.iter().map(|&x| x as f64).sum();
        println!("{name}: checksum {sum:.1}");
        let (mut best, mut best_cpu) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..5 {
            let (c0, t0) = (cpu_seconds(), Instant::now());
            edt(&m, [n; 3], spacing).unwrap();
            best = best.min(t0.elapsed().as_secs_f64());
            best_cpu = best_cpu.min(cpu_seconds() - c0);
        }
        println!(
            "engine edt {name} 256^3 ({} threads): best wall {:.1} ms, best CPU {:.1} ms",
            rayon::current_num_threads(),
            best * 1e3,
            best_cpu * 1e3
        );
    }
}
