//! Exact EDT, feature transform and signed distance against brute force, anisotropic spacing.

use dnvs_engine::geometry::{
    distance_to, edt, edt::NO_FEATURE, feature_transform, signed_distance,
};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn coords(q: usize, dims: [usize; 3]) -> [usize; 3] {
    [q / (dims[1] * dims[2]), (q / dims[2]) % dims[1], q % dims[2]]
}

fn dist2(a: [usize; 3], b: [usize; 3], s: [f64; 3]) -> f64 {
    (0..3).map(|i| ((a[i] as f64 - b[i] as f64) * s[i]).powi(2)).sum()
}

fn brute(seeds: &[bool], dims: [usize; 3], s: [f64; 3]) -> Vec<f64> {
    let idx: Vec<usize> = (0..seeds.len()).filter(|&q| seeds[q]).collect();
    (0..seeds.len())
        .map(|q| {
            idx.iter()
                .map(|&p| dist2(coords(q, dims), coords(p, dims), s))
                .fold(f64::INFINITY, f64::min)
                .sqrt()
        })
        .collect()
}

struct Case {
    dims: [usize; 3],
    spacing: [f64; 3],
    density: f64,
}

#[test]
fn edt_and_feature_transform_match_brute_force() {
    let cases = [
        Case { dims: [7, 9, 11], spacing: [0.85, 1.2, 0.9], density: 0.05 },
        Case { dims: [12, 5, 8], spacing: [2.5, 0.4, 1.0], density: 0.01 },
        Case { dims: [1, 13, 6], spacing: [1.0, 0.7, 3.0], density: 0.1 },
        Case { dims: [9, 1, 1], spacing: [0.3, 1.0, 1.0], density: 0.2 },
        Case { dims: [6, 6, 6], spacing: [1.0, 1.0, 1.0], density: 0.5 },
    ];
    for (ci, c) in cases.iter().enumerate() {
        for seed in 1..5u64 {
            let mut rng = Rng(seed * 1000 + ci as u64);
            let n: usize = c.dims.iter().product();
            let seeds: Vec<bool> = (0..n).map(|_| rng.next() < c.density).collect();
            let want = brute(&seeds, c.dims, c.spacing);
            let got = distance_to(&seeds, c.dims, c.spacing).unwrap();
            let ft = feature_transform(&seeds, c.dims, c.spacing).unwrap();
            for q in 0..n {
                let what = format!("case {ci} seed {seed} voxel {:?}", coords(q, c.dims));
                if want[q].is_infinite() {
                    assert!(got[q].is_infinite(), "{what}");
                    assert_eq!(ft.nearest[q], NO_FEATURE, "{what}");
                    continue;
                }
                assert!((got[q] as f64 - want[q]).abs() <= 1e-4 * (1.0 + want[q]), "{what}");
                // The feature is a seed at exactly the reported distance.
                let f = ft.nearest[q] as usize;
                assert!(seeds[f], "{what}: feature {f} is not a seed");
                let df = dist2(coords(q, c.dims), coords(f, c.dims), c.spacing).sqrt();
                assert!((df - want[q]).abs() <= 1e-4 * (1.0 + want[q]), "{what}: {df}");
                assert!((ft.dist[q] - got[q]).abs() <= 1e-5 * (1.0 + got[q]), "{what}");
            }
        }
    }
}

#[test]
fn scipy_convention_and_signed_distance() {
    let dims = [9, 10, 11];
    let s = [0.5, 1.5, 1.0];
    let mut rng = Rng(42);
    let mask: Vec<bool> = (0..990).map(|_| rng.next() < 0.6).collect();
    let bg: Vec<bool> = mask.iter().map(|m| !m).collect();
    let e = edt(&mask, dims, s).unwrap();
    let want_in = brute(&bg, dims, s);
    let want_out = brute(&mask, dims, s);
    let sdf = signed_distance(&mask, dims, s).unwrap();
    for q in 0..mask.len() {
        if mask[q] {
            assert!((e[q] as f64 - want_in[q]).abs() < 1e-4);
            assert!((sdf[q] as f64 + want_in[q]).abs() < 1e-4);
        } else {
            assert_eq!(e[q], 0.0);
            assert!((sdf[q] as f64 - want_out[q]).abs() < 1e-4);
        }
    }
    // No seeds: infinite, and bad input is an error value.
    assert!(distance_to(&[false; 8], [2, 2, 2], [1.0; 3]).unwrap().iter().all(|d| d.is_infinite()));
    assert!(distance_to(&[false; 8], [2, 2, 3], [1.0; 3]).is_err());
    assert!(distance_to(&[false; 8], [2, 2, 2], [1.0, -1.0, 1.0]).is_err());
}
