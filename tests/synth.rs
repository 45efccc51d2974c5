//! Phantom generator: determinism by seed, HU of each tissue class, anatomical label sizes, the
//! joint space, geometry of the VOIs, and the CLI-facing errors. Small volumes keep it fast:
//! VOIs of 64x56x40 voxels (25.6 x 22.4 x 16 mm) and a 4 mm head.

mod common;

use dnvs_engine::synth::anatomy::{dot, normalize_or, sub};
use dnvs_engine::synth::phantom::{voxel_mean, Tissue};
use dnvs_engine::synth::{self, PhantomCase, Side, SynthConfig, VoiCase};
use dnvs_engine::Error;

fn small(seed: u64) -> SynthConfig {
    SynthConfig { seed, voi_dims: [64, 56, 40], head_spacing: 4.0, ..SynthConfig::default() }
}

fn case(cfg: &SynthConfig, index: usize) -> PhantomCase {
    synth::generate_case(cfg, index).expect("valid config")
}

fn all_volumes(c: &PhantomCase) -> Vec<&[f32]> {
    let mut v = vec![&c.head_ct.data[..], &c.head_labels.data[..]];
    for s in &c.vois {
        v.extend([&s.ct.data[..], &s.mc.data[..], &s.tb.data[..], &s.nv.data[..]]);
    }
    v
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn same_seed_same_bits_other_seed_differs() {
    let a = case(&small(5), 0);
    let b = case(&small(5), 0);
    for (x, y) in all_volumes(&a).iter().zip(all_volumes(&b)) {
        assert_eq!(bits(x), bits(y), "same seed must give identical voxels");
    }
    assert_eq!(a.vois[0].ct.affine, b.vois[0].ct.affine);
    let c = case(&small(6), 0);
    let d = case(&small(5), 1);
    for other in [&c, &d] {
        assert_ne!(bits(&a.vois[0].ct.data), bits(&other.vois[0].ct.data));
        assert_ne!(a.vois[1].joint_space_mm, other.vois[1].joint_space_mm);
    }
}

/// World position of voxel `n` (row-major) of `vol` (diagonal affine).
fn voxel_centre(vol: &dnvs_engine::io::Volume, n: usize) -> [f64; 3] {
    let [_, h, w] = vol.dims;
    let a = vol.affine;
    let ijk = [n / (h * w), n / w % h, n % w];
    [0, 1, 2].map(|r| a[r][3] + a[r][r] * ijk[r] as f64)
}

/// The tissue class at every voxel centre of `vol` (diagonal affine), row-major.
fn tissue_map(ph: &synth::Phantom, vol: &dnvs_engine::io::Volume) -> Vec<Tissue> {
    (0..vol.data.len()).map(|n| ph.eval(voxel_centre(vol, n)).tissue).collect()
}

#[test]
fn every_tissue_class_has_its_hu_range() {
    // Clean render: every voxel's value is inside the range its classes promise.
    let clean = SynthConfig { noise: false, blur_sigma_vox: 0.0, ..small(11) };
    let c = case(&clean, 0);
    let noisy = case(&small(11), 0);
    let ph = &c.phantom;
    let mut seen = std::collections::HashMap::new();
    let vols = [
        (&c.head_ct, &noisy.head_ct),
        (&c.vois[0].ct, &noisy.vois[0].ct),
        (&c.vois[1].ct, &noisy.vois[1].ct),
    ];
    for (vol, noisy_vol) in vols {
        let tissue = tissue_map(ph, vol);
        // A voxel is the mean of the anatomy over it (partial volume), so its value lies
        // between the means of its points' class bounds; a voxel of one class, in its range.
        let a = vol.affine;
        let edges = [[a[0][0], 0.0, 0.0], [0.0, a[1][1], 0.0], [0.0, 0.0, a[2][2]]];
        for (n, (t, &hu)) in tissue.iter().zip(&vol.data).enumerate() {
            let c = voxel_centre(vol, n);
            let lo = voxel_mean(c, edges, |p| ph.eval(p).tissue.hu_range().0);
            let hi = voxel_mean(c, edges, |p| ph.eval(p).tissue.hu_range().1);
            assert!(hu as f64 >= lo - 0.5 && hu as f64 <= hi + 0.5, "{t:?}: {hu} HU, {lo}..{hi}");
            *seen.entry(*t).or_insert(0usize) += 1;
        }
        // With blur and noise, voxels deep in a class (same class at +-1 voxel on every axis)
        // keep a mean inside the class range (blur mixes only a little across boundaries).
        let [d, h, w] = vol.dims;
        let mut sums = std::collections::HashMap::<Tissue, (f64, usize)>::new();
        for i in 1..d - 1 {
            for j in 1..h - 1 {
                for k in 1..w - 1 {
                    let n = vol.index(i, j, k);
                    let t = tissue[n];
                    let inner = [n - h * w, n + h * w, n - w, n + w, n - 1, n + 1]
                        .iter()
                        .all(|&m| tissue[m] == t);
                    if inner {
                        let e = sums.entry(t).or_default();
                        e.0 += noisy_vol.data[n] as f64;
                        e.1 += 1;
                    }
                }
            }
        }
        for (t, (sum, n)) in &sums {
            let mean = sum / *n as f64;
            let (lo, hi) = t.hu_range();
            assert!(mean >= lo - 30.0 && mean <= hi + 30.0, "{t:?}: mean {mean} HU over {n}");
        }
    }
    for t in [Tissue::Air, Tissue::Soft, Tissue::Brain, Tissue::Cancellous, Tissue::Cortical] {
        assert!(seen.get(&t).copied().unwrap_or(0) > 100, "class {t:?} missing: {seen:?}");
    }
}

/// MC voxels of the condylar head above its centre, measured along the head's long axis (ML)
/// and across it horizontally (AP), in mm.
fn head_extents(c: &PhantomCase, v: &VoiCase) -> (f64, f64) {
    let j = c.phantom.joint(v.side);
    let center = j.center();
    let u = normalize_or(sub(j.head.b, j.head.a), [1.0, 0.0, 0.0]);
    let across = normalize_or([-u[1], u[0], 0.0], [0.0, 1.0, 0.0]);
    let (mut ml, mut ap) = ((f64::MAX, f64::MIN), (f64::MAX, f64::MIN));
    let o = v.mc.affine;
    for i in 0..v.mc.dims[0] {
        for jj in 0..v.mc.dims[1] {
            for k in 0..v.mc.dims[2] {
                if v.mc.data[v.mc.index(i, jj, k)] < 0.5 {
                    continue;
                }
                let w =
                    [o[0][3] + 0.4 * i as f64, o[1][3] + 0.4 * jj as f64, o[2][3] + 0.4 * k as f64];
                let a = sub(c.phantom.pose.to_anatomy(w), center);
                if a[2] < 0.5 {
                    continue;
                }
                let (x, y) = (dot(a, u), dot(a, across));
                ml = (ml.0.min(x), ml.1.max(x));
                ap = (ap.0.min(y), ap.1.max(y));
            }
        }
    }
    (ml.1 - ml.0 + 0.4, ap.1 - ap.0 + 0.4)
}

#[test]
fn labels_have_anatomical_sizes() {
    for index in 0..3 {
        let c = case(&small(21), index);
        for v in &c.vois {
            let voxel = 0.4f64.powi(3);
            let count = |m: &[f32]| m.iter().filter(|&&x| x > 0.5).count();
            let (mc, tb, nv) = (count(&v.mc.data), count(&v.tb.data), count(&v.nv.data));
            let (mc_mm3, tb_mm3) = (mc as f64 * voxel, tb as f64 * voxel);
            let (ml, ap) = head_extents(&c, v);
            println!(
                "{} {}: MC {mc_mm3:.0} mm3, TB {tb_mm3:.0} mm3, NV {:.0} mm3, head {ml:.1} x {ap:.1} mm, gap {:.2}",
                c.id, v.side, v.nv_mm3, v.joint_space_mm
            );
            // Condylar head 15-20 mm mediolateral, 8-10 mm anteroposterior (+ one voxel).
            assert!((14.4..=20.8).contains(&ml), "ML extent {ml}");
            assert!((7.6..=10.8).contains(&ap), "AP extent {ap}");
            // Head + neck inside a 16 mm tall VOI: a few hundred to ~2000 mm^3.
            assert!((500.0..=2500.0).contains(&mc_mm3), "MC {mc_mm3} mm3");
            assert!(tb_mm3 > 1000.0, "TB {tb_mm3} mm3");
            // The gap layer: roughly (upper head area ~250-400 mm^2) x (1.5-4 mm).
            assert!((200.0..=2500.0).contains(&v.nv_mm3), "NV {} mm3", v.nv_mm3);
            assert_eq!(v.nv_mm3, nv as f64 * voxel);
            // Labels never overlap.
            for i in 0..v.mc.len() {
                let s = v.mc.data[i] + v.tb.data[i] + v.nv.data[i];
                assert!(s <= 1.0, "overlapping labels at {i}");
            }
        }
    }
}

/// Largest distance (mm) from an NV voxel to the nearest MC voxel: the joint space thickness.
/// Brute force, kept cheap by using only the voxels where the extremes live: NV voxels touching
/// TB and MC voxels touching non-MC.
fn nv_thickness(v: &VoiCase) -> f64 {
    let [d, h, w] = v.mc.dims;
    let touching = |m: &[f32], other: &dyn Fn(usize) -> bool| -> Vec<[f64; 3]> {
        let mut out = Vec::new();
        for i in 1..d - 1 {
            for j in 1..h - 1 {
                for k in 1..w - 1 {
                    let n = v.mc.index(i, j, k);
                    let nb = [n - h * w, n + h * w, n - w, n + w, n - 1, n + 1];
                    if m[n] > 0.5 && nb.iter().any(|&q| other(q)) {
                        out.push([i as f64 * 0.4, j as f64 * 0.4, k as f64 * 0.4]);
                    }
                }
            }
        }
        out
    };
    let mc = touching(&v.mc.data, &|q| v.mc.data[q] < 0.5);
    let nv = touching(&v.nv.data, &|q| v.tb.data[q] > 0.5);
    assert!(!mc.is_empty() && !nv.is_empty());
    nv.iter()
        .map(|p| {
            mc.iter()
                .map(|q| (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2))
                .fold(f64::MAX, f64::min)
                .sqrt()
        })
        .fold(0.0, f64::max)
}

#[test]
fn joint_space_is_1_5_to_4_mm_and_differs_per_side() {
    for seed in [1, 2] {
        let c = case(&small(seed), 0);
        let (l, r) = (&c.vois[0], &c.vois[1]);
        assert_eq!((l.side, r.side), (Side::L, Side::R));
        assert!((l.joint_space_mm - r.joint_space_mm).abs() >= 0.3);
        assert_ne!(l.nv_mm3, r.nv_mm3);
        for v in [l, r] {
            assert!((1.5..=4.0).contains(&v.joint_space_mm));
            let t = nv_thickness(v);
            println!(
                "seed {seed} {}: gap {:.2} mm, NV thickness {t:.2} mm",
                v.side, v.joint_space_mm
            );
            // Voxel centres: the farthest NV voxel is within a voxel of the designed gap.
            assert!(
                (t - v.joint_space_mm).abs() <= 0.5,
                "thickness {t} vs gap {}",
                v.joint_space_mm
            );
        }
    }
}

#[test]
fn a_wider_joint_space_range_draws_wider_joint_spaces() {
    use dnvs_engine::synth::{GapRange, Phantom};
    let wide = GapRange { mm: [1.0, 5.0] };
    let (mut below, mut above) = (0, 0);
    for case in 0..40 {
        let a = Phantom::new(3, case);
        let d = Phantom::with_gaps(3, case, GapRange::default());
        let w = Phantom::with_gaps(3, case, wide);
        let gaps = |p: &Phantom| p.joints.each_ref().map(|j| j.gap_mm);
        assert_eq!(gaps(&a), gaps(&d), "the default range is the range of Phantom::new");
        let [l, r] = gaps(&w);
        assert!((0.3..=1.0).contains(&(l - r).abs()), "case {case}: sides {l:.2} / {r:.2}");
        for g in [l, r] {
            assert!((1.0..=5.0).contains(&g), "case {case}: gap {g}");
            below += usize::from(g < 1.5);
            above += usize::from(g > 4.0);
        }
    }
    assert!(below >= 4 && above >= 4, "{below} joints under 1.5 mm, {above} over 4 mm of 80");
    for bad in [[2.0, 2.5], [0.2, 3.0], [3.0, 9.0]] {
        let cfg = SynthConfig { gaps: GapRange { mm: bad }, ..small(3) };
        let e = synth::generate_case(&cfg, 0).expect_err("a range without room is refused");
        assert!(e.to_string().contains("joint space range"), "{e}");
    }
}

#[test]
fn voi_sits_on_the_joint_inside_the_head() {
    let cfg = small(3);
    let c = case(&cfg, 0);
    let head = &c.head_ct;
    assert_eq!(head.dims, [45, 57, 63]);
    for v in &c.vois {
        assert_eq!(v.ct.dims, cfg.voi_dims);
        for m in [&v.mc, &v.tb, &v.nv] {
            assert_eq!(m.dims, v.ct.dims);
            assert_eq!(m.affine, v.ct.affine);
        }
        for a in 0..3 {
            assert_eq!(v.ct.affine[a][a], 0.4);
            assert_eq!(v.ct.spacing[a], 0.4);
        }
        // The condyle centre (world) is near the VOI centre and inside the MC mask.
        let jc = c.phantom.joint_center_world(v.side);
        let idx = [0, 1, 2].map(|a| ((jc[a] - v.ct.affine[a][3]) / 0.4).round() as usize);
        for a in 0..3 {
            let mid = (cfg.voi_dims[a] as f64 - 1.0) / 2.0;
            assert!((idx[a] as f64 - mid).abs() <= 2.0 / 0.4 + 5.0 + 1.0, "axis {a}: {idx:?}");
        }
        assert_eq!(v.mc.data[v.mc.index(idx[0], idx[1], idx[2])], 1.0);
        // Right joint at +x (RAS), left at -x.
        assert_eq!(jc[0] > 0.0, v.side == Side::R);
        // The VOI lies inside the head volume and the head's CT there is bone (> 200 HU).
        let hi =
            [0, 1, 2].map(|a| ((jc[a] - head.affine[a][3]) / head.affine[a][a]).round() as usize);
        assert!(hi.iter().zip(head.dims).all(|(i, d)| *i < d));
        assert!(head.data[head.index(hi[0], hi[1], hi[2])] > 200.0);
    }
    // Head labels exist only around the joints and contain MC and TB.
    let labels: Vec<u8> = c.head_labels.data.iter().map(|&x| x as u8).collect();
    assert!(labels.contains(&1) && labels.contains(&2));
    assert!(labels.iter().all(|&l| l <= 3));
}

#[test]
fn bad_arguments_are_clear_errors() {
    let cfg = small(1);
    let dir = std::env::temp_dir().join(format!("dnvs-synth-err-{}", std::process::id()));
    let err = synth::write_dataset(&dir, 0, &cfg, false, &|_| {}).unwrap_err();
    assert!(matches!(err, Error::Arg { .. }) && err.to_string().contains("cases"), "{err}");
    let bad = SynthConfig { voi_dims: [0, 10, 10], ..cfg.clone() };
    assert!(matches!(synth::generate_case(&bad, 0), Err(Error::Arg { .. })));
    // A regular file where the output folder should be.
    let file = std::env::temp_dir().join(format!("dnvs-synth-file-{}", std::process::id()));
    std::fs::write(&file, b"x").unwrap();
    let err = synth::write_dataset(&file, 1, &cfg, false, &|_| {}).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("dnvs-synth-file"), "{err}");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn preview_is_a_png() {
    let c = case(&small(4), 0);
    let dir = std::env::temp_dir().join(format!("dnvs-synth-preview-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("voi.png");
    synth::preview::write_voi_preview(&p, &c.vois[0]).unwrap();
    synth::preview::write_head_preview(&dir.join("head.png"), &c).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Mean |difference| between neighbours along x: how sharp the edges are.
fn mean_step_x(v: &dnvs_engine::io::Volume) -> f64 {
    let [d, h, w] = v.dims;
    let mut sum = 0.0;
    for i in 1..d {
        for q in 0..h * w {
            sum += f64::from((v.data[i * h * w + q] - v.data[(i - 1) * h * w + q]).abs());
        }
    }
    sum / ((d - 1) * h * w) as f64
}

#[test]
fn voi_scan_cuts_the_ct_from_a_coarser_scan_and_keeps_the_truth() {
    use dnvs_engine::synth::VoiScan;
    let straight = case(&small(7), 0);
    let scan = VoiScan { inplane_mm: [1.2, 1.2], slice_mm: [1.2, 1.2], draws: 1 };
    let cut = SynthConfig { voi_scan: Some(scan), ..small(7) };
    let (a, b) = (case(&cut, 0), case(&cut, 0));
    for (s, (x, y)) in straight.vois.iter().zip(a.vois.iter().zip(&b.vois)) {
        // Deterministic per seed; same grid and the same 0.4 mm masks as the straight render.
        assert_eq!(bits(&x.ct.data), bits(&y.ct.data));
        assert_eq!(x.ct.affine, s.ct.affine);
        for (m, n) in [(&x.mc, &s.mc), (&x.tb, &s.tb), (&x.nv, &s.nv)] {
            assert_eq!(bits(&m.data), bits(&n.data));
        }
        // The same anatomy, blurrier: a 1.2 mm scan's edges spread over three VOI voxels.
        let (sharp, soft) = (mean_step_x(&s.ct), mean_step_x(&x.ct));
        assert!(soft < 0.7 * sharp, "side {}: steps {soft:.1} vs {sharp:.1} HU", s.side);
        let r = common::correlation(&x.ct.data, &s.ct.data);
        assert!(r > 0.85, "side {}: correlation {r:.3} with the straight render", s.side);
        assert!(x.ct.data.iter().all(|v| v.fract() == 0.0 && (-1024.0..=3071.0).contains(v)));
    }
    // The head itself is the same scan as without the option.
    assert_eq!(bits(&a.head_ct.data), bits(&straight.head_ct.data));
    let bad = SynthConfig {
        voi_scan: Some(VoiScan { inplane_mm: [1.0, 0.5], slice_mm: [1.0, 1.0], draws: 1 }),
        ..small(7)
    };
    let e = synth::generate_case(&bad, 0).expect_err("a reversed range is refused");
    assert!(e.to_string().contains("inplane_mm"), "{e}");
}

#[test]
fn voi_scan_draws_see_one_anatomy_through_several_scanners() {
    use dnvs_engine::synth::VoiScan;
    let one = VoiScan { inplane_mm: [0.6, 1.6], slice_mm: [0.6, 2.0], draws: 1 };
    let three = VoiScan { draws: 3, ..one };
    let a = case(&SynthConfig { voi_scan: Some(one), ..small(7) }, 0);
    let b = case(&SynthConfig { voi_scan: Some(three), ..small(7) }, 0);
    for (x, y) in a.vois.iter().zip(&b.vois) {
        // The first scan is the one a single draw makes; the masks are the same truth.
        assert!(x.scans.is_empty());
        assert_eq!(bits(&x.ct.data), bits(&y.ct.data));
        assert_eq!(bits(&x.tb.data), bits(&y.tb.data));
        assert_eq!(y.scans.len(), 2);
        for s in &y.scans {
            assert_eq!((s.dims, s.affine), (y.ct.dims, y.ct.affine));
            // Another scanner of the same anatomy: different voxels, still the same picture.
            assert_ne!(bits(&s.data), bits(&y.ct.data));
            let r = common::correlation(&s.data, &y.ct.data);
            assert!(r > 0.85, "side {}: correlation {r:.3} between draws", y.side);
        }
        assert_ne!(bits(&y.scans[0].data), bits(&y.scans[1].data));
    }
    let bad = SynthConfig { voi_scan: Some(VoiScan { draws: 0, ..one }), ..small(7) };
    let e = synth::generate_case(&bad, 0).expect_err("zero draws are refused");
    assert!(e.to_string().contains("draws 0"), "{e}");
}

#[test]
fn a_scan_voxel_is_the_mean_of_the_anatomy_over_it() {
    let axes = [[1.5, 0.0, 0.0], [0.0, 1.5, 0.0], [0.0, 0.0, 1.5]];
    // A surface 0.3 mm off the centre of a 1.5 mm voxel: 70 % of it is bone. The centre alone
    // says 100 %; the mean of 3 x 3 x 3 points says two thirds.
    let bone = |p: [f64; 3]| if p[0] < 0.3 { 1.0 } else { 0.0 };
    let m = voxel_mean([0.0; 3], axes, bone);
    assert!((m - 0.7).abs() <= 1.0 / 3.0 + 1e-12 && m < 1.0, "mean {m}");
    assert!((m - 2.0 / 3.0).abs() < 1e-12, "mean {m}");
    // Moving the surface across the voxel moves the value with it, step by step.
    let at = |x0: f64| voxel_mean([0.0; 3], axes, |p| if p[0] < x0 { 1.0 } else { 0.0 });
    assert!(at(-0.6) < at(-0.1) && at(-0.1) < at(0.4), "{} {} {}", at(-0.6), at(-0.1), at(0.4));
    // A voxel no wider than the step is its centre.
    let fine = [[0.4, 0.0, 0.0], [0.0, 0.4, 0.0], [0.0, 0.0, 0.4]];
    assert_eq!(voxel_mean([0.1, 0.0, 0.0], fine, |p| if p[0] < 0.05 { 1.0 } else { 0.0 }), 0.0);
    // Any voxel (oblique, anisotropic) averages a linear field to its value at the centre.
    let c = 0.5f64.sqrt();
    let oblique = [[0.8 * c, 0.8 * c, 0.0], [-0.8 * c, 0.8 * c, 0.0], [0.0, 0.0, 2.4]];
    let lin = |p: [f64; 3]| 3.0 * p[0] - 2.0 * p[1] + 0.5 * p[2] + 7.0;
    let w = [1.0, -2.0, 3.0];
    assert!((voxel_mean(w, oblique, lin) - lin(w)).abs() < 1e-9);
}
