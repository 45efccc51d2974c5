//! Dice, IoU, Hausdorff, HD95, ASSD against MONAI's test values
//! (tests/metrics/test_hausdorff_distance.py), and the empty-mask conventions.

use dnvs_engine::geometry::metrics::{directed_hausdorff, hausdorff_original};
use dnvs_engine::geometry::segmentation_metrics;

/// MONAI's `create_spherical_seg_3d`: voxel `(i, j, k)` is inside when
/// `(i*s0 - c0)^2 + (j*s1 - c1)^2 + (k*s2 - c2)^2 <= r^2` (the centre is not scaled).
fn monai_sphere(radius: f64, centre: [f64; 3], spacing: [f64; 3]) -> Vec<bool> {
    let n = 99;
    let mut v = vec![false; n * n * n];
    for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                let d2 = (i as f64 * spacing[0] - centre[0]).powi(2)
                    + (j as f64 * spacing[1] - centre[1]).powi(2)
                    + (k as f64 * spacing[2] - centre[2]).powi(2);
                v[(i * n + j) * n + k] = d2 <= radius * radius;
            }
        }
    }
    v
}

const DIMS: [usize; 3] = [99, 99, 99];

#[test]
fn monai_spheres_anisotropic() {
    let s = [0.85, 1.2, 0.9];
    let a = monai_sphere(20.0, [20.0; 3], s);
    let b = monai_sphere(20.0, [19.0; 3], s);
    let m = segmentation_metrics(&a, &b, DIMS, s).unwrap();
    let directed = directed_hausdorff(&a, &b, DIMS, s, None).unwrap();
    println!("{m:?} directed {directed}");
    assert!((m.hd_mm - 2.2671568).abs() < 1e-4, "hd {}", m.hd_mm);
    assert!((directed - 2.0808651447296143).abs() < 1e-4, "directed {directed}");
}

#[test]
fn monai_spheres_radius_20_vs_40() {
    let s = [1.0; 3];
    let a = monai_sphere(20.0, [20.0, 33.0, 22.0], s);
    let b = monai_sphere(40.0, [20.0, 33.0, 22.0], s);
    let m = segmentation_metrics(&a, &b, DIMS, s).unwrap();
    println!("{m:?}");
    assert!((m.hd_mm - 20.223748416156685).abs() < 1e-4, "hd {}", m.hd_mm);
    assert!((m.hd95_mm - 20.09975124224178).abs() < 1e-4, "hd95 {}", m.hd95_mm);
    let d95 = directed_hausdorff(&a, &b, DIMS, s, Some(95.0)).unwrap();
    assert!((d95 - 19.924858845171276).abs() < 1e-4, "directed hd95 {d95}");
    // Overlap: a lies inside b.
    let (na, nb) = (a.iter().filter(|&&x| x).count(), b.iter().filter(|&&x| x).count());
    assert!((m.dice - 2.0 * na as f64 / (na + nb) as f64).abs() < 1e-12);
    assert!((m.iou - na as f64 / nb as f64).abs() < 1e-12);
    assert!(m.assd_mm > 10.0 && m.assd_mm < m.hd_mm);
    assert!(m.hd_original_vox > 0.0);
}

#[test]
fn identical_and_empty_masks() {
    let dims = [10, 11, 12];
    let s = [0.5, 0.6, 0.7];
    let mut a = vec![false; 1320];
    for (q, x) in a.iter_mut().enumerate().take(700).skip(300) {
        *x = q % 3 != 0;
    }
    let empty = vec![false; 1320];
    let same = segmentation_metrics(&a, &a, dims, s).unwrap();
    assert_eq!(
        (same.dice, same.iou, same.hd_mm, same.hd95_mm, same.assd_mm),
        (1.0, 1.0, 0.0, 0.0, 0.0)
    );
    let both = segmentation_metrics(&empty, &empty, dims, s).unwrap();
    assert_eq!((both.dice, both.iou, both.hd_mm, both.hd_original_vox), (1.0, 1.0, 0.0, 0.0));
    let one = segmentation_metrics(&a, &empty, dims, s).unwrap();
    assert_eq!((one.dice, one.iou), (0.0, 0.0));
    assert!(one.hd_mm.is_infinite() && one.hd95_mm.is_infinite() && one.assd_mm.is_infinite());
    assert_eq!(one.hd_original_vox, 0.0);
    assert!(segmentation_metrics(&a, &empty, [10, 11, 11], s).is_err());
}

#[test]
fn original_hausdorff_uses_all_voxels_in_voxel_units() {
    // Two single voxels 3 apart along k, spacing ignored.
    let dims = [4, 4, 8];
    let mut a = vec![false; 128];
    let mut b = vec![false; 128];
    a[(4 + 1) * 8 + 1] = true;
    b[(4 + 1) * 8 + 4] = true;
    b[(8 + 2) * 8 + 4] = true; // one more: (2, 2, 4) is sqrt(1 + 1 + 9) from a's voxel
    let hd = hausdorff_original(&a, &b, dims).unwrap();
    assert!((hd - 11f64.sqrt()).abs() < 1e-6, "{hd}");
}
