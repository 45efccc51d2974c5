//! Inflation against the analytic negative volume: a sphere of radius r (MC) inside a spherical
//! cavity of radius R (TB = everything farther than R) gives NV = 4/3 pi (R^3 - r^3).

use dnvs_engine::geometry::inflate::inflate_masks;
use dnvs_engine::geometry::{spacing_affine, InflateConfig};

struct Case {
    r: f64,
    big_r: f64,
    spacing: [f64; 3],
}

fn shells(c: &Case) -> (Vec<bool>, Vec<bool>, [usize; 3]) {
    let extent = 2.0 * c.big_r + 6.0;
    let dims = c.spacing.map(|s| (extent / s).ceil() as usize);
    let centre = [0, 1, 2].map(|a| (dims[a] as f64 - 1.0) * c.spacing[a] / 2.0);
    let n: usize = dims.iter().product();
    let (mut mc, mut tb) = (vec![false; n], vec![false; n]);
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                let p = [i, j, k].map(|x| x as f64);
                let d: f64 =
                    (0..3).map(|a| (p[a] * c.spacing[a] - centre[a]).powi(2)).sum::<f64>().sqrt();
                let q = (i * dims[1] + j) * dims[2] + k;
                mc[q] = d <= c.r;
                tb[q] = d > c.big_r;
            }
        }
    }
    (mc, tb, dims)
}

#[test]
fn sphere_in_spherical_cavity() {
    let cases = [
        Case { r: 8.0, big_r: 16.0, spacing: [1.0; 3] },
        Case { r: 6.0, big_r: 11.0, spacing: [0.8, 1.0, 0.7] },
    ];
    for c in &cases {
        let (mc, tb, dims) = shells(c);
        let cfg = InflateConfig { max_mm: 2.0 * c.big_r };
        let out =
            inflate_masks(&mc, &tb, dims, c.spacing, &spacing_affine(c.spacing), cfg).unwrap();
        let want = 4.0 / 3.0 * std::f64::consts::PI * (c.big_r.powi(3) - c.r.powi(3));
        let err = (out.volume_mm3 - want) / want;
        println!(
            "r {} R {} spacing {:?}: NV {:.1} mm^3, analytic {want:.1} ({:+.2}%), {:?}",
            c.r,
            c.big_r,
            c.spacing,
            out.volume_mm3,
            100.0 * err,
            out.stats
        );
        assert!(err.abs() < 0.03);
        assert_eq!(out.stats.hits, out.stats.surface_points);
        let gap = c.big_r - c.r;
        assert!((out.stats.mean_hit_mm - gap).abs() < 0.1 * gap);
        // NV never overlaps MC or TB; its mesh is closed and outward.
        assert!(out.nv.iter().zip(&mc).zip(&tb).all(|((n, m), t)| !(*n && (*m || *t))));
        assert!(out.mesh.topology().is_closed_oriented());
        assert!(out.mesh.enclosed_volume() > 0.0);
    }
}

#[test]
fn no_tb_in_reach_gives_no_volume() {
    let c = Case { r: 5.0, big_r: 12.0, spacing: [1.0; 3] };
    let (mc, tb, dims) = shells(&c);
    let cfg = InflateConfig { max_mm: 3.0 };
    let out = inflate_masks(&mc, &tb, dims, c.spacing, &spacing_affine(c.spacing), cfg).unwrap();
    assert_eq!(out.stats.hits, 0);
    assert_eq!(out.volume_mm3, 0.0);
    assert!(out.mesh.triangles.is_empty());
    let bad = InflateConfig { max_mm: -1.0 };
    assert!(inflate_masks(&mc, &tb, dims, c.spacing, &spacing_affine(c.spacing), bad).is_err());
}
