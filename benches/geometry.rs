//! Criterion benches of the geometry: marching cubes and EDT at 128^3 and 256^3, Hausdorff on a
//! VOI-sized pair of masks (120 x 150 x 70 at 0.4 mm) and inflation on that VOI.
//! Names: `cpu/<op>/<shape>`.
//!
//! Inputs: marching cubes meshes a smooth field (a sphere of radius 0.4 n plus a ripple, so the
//! surface is not axis-aligned); the EDT is scipy's `distance_transform_edt` of a ball of radius
//! 0.4 n (distance of each inside voxel to the outside); Hausdorff compares two offset
//! ellipsoids; inflation grows a ball of radius 8 mm in a spherical cavity of radius 11 mm.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dnvs_engine::geometry::{edt, marching_cubes_spacing, metrics::hausdorff};
use dnvs_engine::geometry::{negative_volume, NvParams};
use dnvs_engine::io::Volume;
use dnvs_engine::Device;

fn field(n: usize) -> Vec<f32> {
    let c = (n as f32 - 1.0) / 2.0;
    let r = 0.4 * n as f32;
    let mut v = Vec::with_capacity(n * n * n);
    for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                let (x, y, z) = (i as f32 - c, j as f32 - c, k as f32 - c);
                let d = (x * x + y * y + z * z).sqrt();
                let ripple = 2.0 * (x * 0.15).sin() * (y * 0.13).cos();
                v.push(r - d + ripple);
            }
        }
    }
    v
}

fn ellipsoid(dims: [usize; 3], centre: [f64; 3], axes: [f64; 3]) -> Vec<bool> {
    let mut v = Vec::with_capacity(dims.iter().product());
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                let p = [i as f64, j as f64, k as f64];
                v.push((0..3).map(|a| ((p[a] - centre[a]) / axes[a]).powi(2)).sum::<f64>() <= 1.0);
            }
        }
    }
    v
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    for n in [128usize, 256] {
        let f = field(n);
        g.bench_with_input(BenchmarkId::new("marching_cubes", format!("{n}^3")), &f, |b, f| {
            b.iter(|| marching_cubes_spacing(f, [n; 3], 0.0, [1.0; 3]).unwrap())
        });
        let ball: Vec<bool> = f.iter().map(|&x| x > 0.0).collect();
        g.bench_with_input(BenchmarkId::new("edt", format!("{n}^3")), &ball, |b, m| {
            b.iter(|| edt(m, [n; 3], [1.0; 3]).unwrap())
        });
    }
    let dims = [120, 150, 70];
    let a = ellipsoid(dims, [60.0, 75.0, 35.0], [40.0, 50.0, 25.0]);
    let b = ellipsoid(dims, [62.0, 72.0, 36.0], [38.0, 52.0, 22.0]);
    g.bench_function("hausdorff/120x150x70", |bn| {
        bn.iter(|| hausdorff(&a, &b, dims, [0.4; 3], None).unwrap())
    });
    // A VOI-sized joint: MC ball of radius 8 mm in a cavity of radius 11 mm, 0.4 mm voxels.
    let s = [0.4; 3];
    let centre = [60.0, 75.0, 35.0];
    let mc = ellipsoid(dims, centre, [20.0; 3]);
    let cavity = ellipsoid(dims, centre, [27.5; 3]);
    let tb: Vec<bool> = cavity.iter().map(|&c| !c).collect();
    let vol = |m: &[bool]| {
        let mut v = Volume::zeros(dims, s);
        v.data = m.iter().map(|&b| b as u8 as f32).collect();
        v
    };
    g.bench_function("inflate/120x150x70", |bn| {
        bn.iter(|| {
            negative_volume(&vol(&mc), &vol(&tb), &NvParams::default(), Device::Cpu).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
