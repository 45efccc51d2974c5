//! Localisation (issue 10): the pure part (probability map -> joints) on hand-made maps, the VOI
//! against synth's own, and the shipped network on held-out phantom heads across poses, fields of
//! view, voxel sizes and orientations.

mod common;

use dnvs_engine::io::orientation::{self, Affine};
use dnvs_engine::io::Volume;
use dnvs_engine::nn::model::LoadedModel;
use dnvs_engine::pipeline::localize::{self, Joints, LocalizeOptions, SideResult, VOI_RAISE_MM};
use dnvs_engine::synth::head_profile::{self, HeadProfile};
use dnvs_engine::synth::{self, Phantom, Side, SynthConfig};
use dnvs_engine::Device;

/// The centre tolerance on held-out heads: 3 mm (measured 0.25-0.95 mm with the fine
/// localiser; 0.32-1.82 mm with the coarse network alone).
const CENTRE_TOL_MM: f64 = 3.0;
/// The shown side of a head with one joint cut off: the 3 mm (measured 0.06-1.16 mm).
const CUT_OFF_TOL_MM: f64 = 3.0;
/// LPS twins must give the RAS twin's centres within this (the 1 mm; measured 0.03 mm).
const TWIN_TOL_MM: f64 = 1.0;
/// Oblique twins: the 1 mm. Measured over eight held-out heads at 2 mm (seed 9001, cases
/// 20-27): with the fine localiser 0.09-0.75 mm from the RAS twin (case 20, tested here: 0.17
/// and 0.41 mm); the coarse network alone (nine views) gave 0.21-1.05 mm.
const OBLIQUE_TOL_MM: f64 = 1.0;

/// Seeds never used to train the shipped model (it was trained on seed 21).
const HELD_OUT_SEED: u64 = 9001;

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f64>().sqrt()
}

/// A 2 mm CT of air, 90 x 100 x 60 voxels centred on the origin (inside the 192 x 256 x 256 mm
/// canvas the network sees).
fn air_ct() -> Volume {
    let mut v = Volume::zeros([90, 100, 60], [2.0; 3]);
    for a in 0..3 {
        v.affine[a][3] = -(v.dims[a] as f64 - 1.0);
    }
    v.data.iter_mut().for_each(|x| *x = -1000.0);
    v
}

/// A probability map on the CT's coarse grid with balls of radius 10 mm at `centres`.
fn ball_map(ct: &Volume, centres: &[[f64; 3]]) -> Volume {
    let coarse = localize::coarse_head(ct).unwrap();
    let data = dnvs_engine::train::joints::ball_label(&coarse, centres, 10.0);
    coarse.with_data(data)
}

fn found(r: &SideResult) -> [f64; 3] {
    match r {
        SideResult::Found(j) => j.condyle_center_ras_mm,
        SideResult::Missing { reason } => panic!("expected a joint, got missing: {reason}"),
    }
}

fn missing(r: &SideResult) -> String {
    match r {
        SideResult::Found(j) => panic!("expected missing, found {:?}", j.condyle_center_ras_mm),
        SideResult::Missing { reason } => reason.clone(),
    }
}

#[test]
fn probability_map_to_joints_names_sides_and_refuses_with_reasons() {
    let ct = air_ct();
    let opts = LocalizeOptions { voi_dims: [20, 20, 20], ..LocalizeOptions::default() };
    let (l, r) = ([-48.0, 4.0, 10.0], [50.0, 0.0, 8.0]);
    let j = localize::joints_from_probs(&ball_map(&ct, &[r, l]), &ct, &opts).unwrap();
    // Centroids of 4 mm voxel balls: within a millimetre of the centres they were drawn around.
    assert!(distance(found(&j.left), l) < 1.0, "{:?}", found(&j.left));
    assert!(distance(found(&j.right), r) < 1.0, "{:?}", found(&j.right));

    // Both candidates on one side: the larger is kept, named by the midline, the other missing.
    let j =
        localize::joints_from_probs(&ball_map(&ct, &[r, [80.0, 0.0, 8.0]]), &ct, &opts).unwrap();
    assert!(found(&j.right)[0] > 40.0);
    assert!(missing(&j.left).contains("apart"), "{}", missing(&j.left));

    // A bigger blob low in the middle (the network's false hit on the mandibular body of the real
    // head) does not break up the left-right pair: the pair wins on their joint mass.
    let jaw = [6.0, 30.0, -40.0];
    let mut map = ball_map(&ct, &[l, r]);
    let big = ball_map(&ct, &[jaw, [jaw[0] + 8.0, jaw[1], jaw[2]]]);
    map.data.iter_mut().zip(&big.data).for_each(|(a, b)| *a = a.max(*b));
    let j = localize::joints_from_probs(&map, &ct, &opts).unwrap();
    assert!(distance(found(&j.left), l) < 1.0, "{:?}", found(&j.left));
    assert!(distance(found(&j.right), r) < 1.0, "{:?}", found(&j.right));
    // Alone, that blob is refused: it lies near the head's midline, where no condyle is.
    let j = localize::joints_from_probs(&big, &ct, &opts).unwrap();
    assert!(missing(&j.left).contains("midline"), "{}", missing(&j.left));
    assert!(missing(&j.right).contains("midline"), "{}", missing(&j.right));

    // A lone speck is too small; nothing at all says so.
    let mut speck = ball_map(&ct, &[]);
    let q = speck.index(30, 30, 30);
    speck.data[q] = 1.0;
    let j = localize::joints_from_probs(&speck, &ct, &opts).unwrap();
    assert!(missing(&j.left).contains("too small"));
    assert!(missing(&j.right).contains("too small"));

    // At the edge of the scan (x = 90 mm is its edge): cut off, not boxed.
    let j =
        localize::joints_from_probs(&ball_map(&ct, &[l, [87.0, 0.0, 8.0]]), &ct, &opts).unwrap();
    assert!(missing(&j.right).contains("edge"), "{}", missing(&j.right));
    assert!(distance(found(&j.left), l) < 1.0);
}

#[test]
fn localize_voi_equals_synth_voi_when_the_centre_is_exact() {
    let cfg = SynthConfig {
        seed: 5,
        voi_dims: [40, 48, 30],
        head_spacing: 1.0,
        noise: false,
        ..SynthConfig::default()
    };
    let case = synth::generate_case(&cfg, 0).unwrap();
    for v in &case.vois {
        // The centre synth boxed (its jittered condyle centre): the VOI centre minus the raise.
        let mid = orientation::apply(&v.ct.affine, v.ct.dims.map(|d| (d as f64 - 1.0) / 2.0));
        // localize raises the box along world z (it does not know the pose).
        let centre = [mid[0], mid[1], mid[2] - VOI_RAISE_MM];
        let cut = localize::cut_voi_with(&case.head_ct, centre, cfg.voi_dims).unwrap();
        assert_eq!(cut.dims, v.ct.dims);
        assert_eq!(cut.spacing, v.ct.spacing);
        for r in 0..4 {
            for c in 0..4 {
                assert!((cut.affine[r][c] - v.ct.affine[r][c]).abs() < 1e-9, "{r},{c}");
            }
        }
        // Same anatomy: resampled from the 1 mm head vs rendered at 0.4 mm.
        let corr = common::correlation(&cut.data, &v.ct.data);
        let mad = cut.data.iter().zip(&v.ct.data).map(|(a, b)| (a - b).abs()).sum::<f32>()
            / cut.data.len() as f32;
        eprintln!("side {}: correlation {corr:.3}, mean |diff| {mad:.0} HU", v.side);
        // The geometry above is exact; the content is the same anatomy, but the 1 mm head loses
        // the 0.4 mm render's thin cortex (partial volume): ~190 HU mean |diff| measured.
        assert!(corr > 0.9, "side {}: correlation {corr}", v.side);
        assert!(mad < 250.0, "side {}: mean |diff| {mad} HU", v.side);
    }
}

/// The shipped localisation networks (see models/README.md): the coarse one and the fine one.
struct Nets {
    coarse: LoadedModel,
    fine: LoadedModel,
}

fn model() -> Nets {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let coarse =
        localize::open_model(&dir.join("localize_unet8.safetensors"), Device::Cpu).unwrap();
    assert_eq!(coarse.card().target, "joints", "the shipped model carries its card");
    let fine = localize::open_fine_model(&dir.join("localize_fine_unet8.safetensors"), Device::Cpu)
        .unwrap();
    assert_eq!(fine.card().target, localize::FINE_TARGET);
    Nets { coarse, fine }
}

/// A held-out head of the `head` profile with voxel sizes in the given ranges, with its scan.
fn head(case: u64, profile: &HeadProfile) -> (Phantom, head_profile::Scan, Volume) {
    let mut ph = Phantom::new(HELD_OUT_SEED, case);
    let scan = head_profile::draw_scan(profile, &ph, HELD_OUT_SEED, case);
    ph.pose = scan.pose;
    let ct = head_profile::render_scan(&ph, &scan, scan.dims(), &scan.affine());
    (ph, scan, ct)
}

fn run(net: &mut Nets, ct: &Volume) -> Joints {
    let opts = LocalizeOptions { voi_dims: [16, 16, 16], ..LocalizeOptions::default() };
    localize::localize(ct, &mut net.coarse, Some(&mut net.fine), &opts).unwrap()
}

#[test]
fn held_out_heads_both_centres_within_3_mm() {
    let mut net = model();
    let coarse = HeadProfile {
        inplane_mm: [1.0, 2.5],
        slice_mm: [1.0, 3.0],
        p_one_side_out: 0.0,
        ..HeadProfile::default()
    };
    let mut worst: f64 = 0.0;
    let mut errors = Vec::new();
    for case in 0..5 {
        let (ph, scan, ct) = head(case, &coarse);
        let j = run(&mut net, &ct);
        for side in Side::BOTH {
            let truth = head_profile::joint_center(&ph, &scan, side);
            let got = found(j.side(side));
            let d = distance(got, truth);
            eprintln!("case {case} {side}: {d:.2} mm (spacing {:?})", scan.spacing);
            worst = worst.max(d);
            errors.push(format!("case {case} {side}: {d:.2} mm"));
        }
    }
    eprintln!("worst centre error {worst:.2} mm");
    assert!(worst < CENTRE_TOL_MM, "worst {worst:.2} mm: {errors:?}");
}

#[test]
fn a_head_with_one_joint_cut_off_reports_that_side_missing() {
    let mut net = model();
    let cut = HeadProfile {
        inplane_mm: [1.5, 2.5],
        slice_mm: [1.5, 3.0],
        p_one_side_out: 1.0,
        ..HeadProfile::default()
    };
    for case in 10..13 {
        let (ph, scan, ct) = head(case, &cut);
        let out = scan.out_of_view.expect("p_one_side_out = 1");
        let j = run(&mut net, &ct);
        let reason = missing(j.side(out));
        eprintln!("case {case}: {out} missing: {reason}");
        let other = if out == Side::L { Side::R } else { Side::L };
        let d = distance(found(j.side(other)), head_profile::joint_center(&ph, &scan, other));
        eprintln!("case {case}: {other} {d:.2} mm from the truth");
        assert!(d < CUT_OFF_TOL_MM, "case {case}: the shown side is {d:.2} mm off");
    }
}

/// The affine of the same field of view stored LPS (i towards L, j towards P).
fn lps_twin(ras: &Affine, dims: [usize; 3]) -> Affine {
    let mut a = *ras;
    for axis in 0..2 {
        a[axis][3] += a[axis][axis] * (dims[axis] as f64 - 1.0);
        a[axis][axis] = -a[axis][axis];
    }
    a
}

/// An oblique grid over the same field of view: rotated 12 degrees about x and 8 about z around
/// its centre (a gantry tilt).
fn oblique_twin(ras: &Affine, dims: [usize; 3]) -> Affine {
    let (sx, cx) = 12f64.to_radians().sin_cos();
    let (sz, cz) = 8f64.to_radians().sin_cos();
    let rx = [[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]];
    let rz = [[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]];
    let mut rot = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            rot[i][j] = (0..3).map(|k| rz[i][k] * rx[k][j]).sum();
        }
    }
    let centre = orientation::apply(ras, dims.map(|d| (d as f64 - 1.0) / 2.0));
    let mut a = orientation::identity();
    for r in 0..3 {
        for c in 0..3 {
            a[r][c] = rot[r][c] * ras[c][c];
        }
    }
    let half = dims.map(|d| (d as f64 - 1.0) / 2.0);
    for r in 0..3 {
        a[r][3] = centre[r] - (0..3).map(|c| a[r][c] * half[c]).sum::<f64>();
    }
    a
}

/// Heads scanned at 2 mm with both joints in view (the twin and command-line tests).
fn two_mm_both_joints() -> HeadProfile {
    HeadProfile {
        inplane_mm: [2.0, 2.0],
        slice_mm: [2.0, 2.0],
        p_one_side_out: 0.0,
        ..HeadProfile::default()
    }
}

#[test]
fn lps_and_oblique_twins_give_the_ras_centres() {
    let mut net = model();
    let (ph, scan, ras) = head(20, &two_mm_both_joints());
    let base = run(&mut net, &ras);
    let dims = scan.dims();
    for (name, affine) in
        [("LPS", lps_twin(&scan.affine(), dims)), ("oblique", oblique_twin(&scan.affine(), dims))]
    {
        let twin = head_profile::render_scan(&ph, &scan, dims, &affine);
        let j = run(&mut net, &twin);
        for side in Side::BOTH {
            let d = distance(found(j.side(side)), found(base.side(side)));
            let truth = head_profile::joint_center(&ph, &scan, side);
            eprintln!(
                "{name} {side}: {d:.2} mm from the RAS twin (truth: RAS {:.2} mm, {name} {:.2} mm)",
                distance(found(base.side(side)), truth),
                distance(found(j.side(side)), truth)
            );
            let tol = if name == "LPS" { TWIN_TOL_MM } else { OBLIQUE_TOL_MM };
            assert!(d < tol, "{name} {side}: {d:.2} mm from the RAS twin");
        }
    }
}

/// The real VTK head (tests/data/real/README.md: 64x64x93 at 3.2x3.2x1.5 mm, diagonal affine,
/// anterior = +y and superior = +z checked on the images). Where its condyles are was read off
/// the CT by eye (slices rendered to PNG with nibabel and PIL, 2026-11-30): in sagittal slices at
/// x = -52..-46 and x = +42..+48 mm the ramus rises as a bright column at y = -8..+5 mm into the
/// glenoid fossa, its top (the condylar head) at z = 30-37 mm, just in front of the dark ear
/// canal (y = -10..-20, z = 40-45); coronal slices at y = -9 and -3 show both rami reaching
/// z = 35 at x = -55..-45 and +42..+50. The boxes below hold that region with a margin of about a
/// condyle's half-size; the network's false candidate on the mandibular body (near
/// (15, 16, -47) mm) lies far outside both. Left and right cannot be checked on this scan
/// (README), so the sides are taken from its affine.
#[test]
fn real_head_ct_both_condyles_found_in_the_condylar_region() {
    let mut net = model();
    let ct = dnvs_engine::io::read_volume(&common::data_path("real/vtk_headsq_ct.nii.gz")).unwrap();
    let opts = LocalizeOptions { voi_dims: [16, 16, 16], ..LocalizeOptions::default() };
    let j = localize::localize(&ct, &mut net.coarse, Some(&mut net.fine), &opts).unwrap();
    // (side, x range, y range, z range) in world mm.
    let regions = [
        (Side::L, [-60.0, -40.0], [-15.0, 5.0], [24.0, 42.0]),
        (Side::R, [38.0, 56.0], [-15.0, 5.0], [24.0, 42.0]),
    ];
    for (side, x, y, z) in regions {
        let c = found(j.side(side));
        eprintln!("real head {side}: {c:.1?}");
        for (a, r) in [x, y, z].iter().enumerate() {
            assert!(r[0] <= c[a] && c[a] <= r[1], "{side}: axis {a} at {:.1} outside {r:?}", c[a]);
        }
    }
}

/// The command line: without `--model` the default models come from the cache (installed from
/// `models/` into an empty cache) and the fine look runs; a fine model of the wrong target is
/// refused with the file and both targets named.
#[test]
fn the_cli_uses_the_default_models_and_refuses_a_wrong_fine_model() {
    use std::process::Command;
    let (ph, scan, ct) = head(21, &two_mm_both_joints());
    let dir = std::env::temp_dir().join(format!("dnvs_localize_cli_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("head.nii.gz");
    dnvs_engine::io::write_nifti(&input, &ct, dnvs_engine::io::VoxelKind::Image).unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = |out: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dnvs-engine"))
            .current_dir(repo)
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .args(["localize", "--device", "cpu", "--voi-size", "16,16,16", "--input"])
            .arg(&input)
            .arg("--out")
            .arg(dir.join(out))
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = run("default", &[]);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    assert!(stderr.contains("localize_fine"), "the fine model is installed and used: {stderr}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("default/joints.json")).unwrap())
            .unwrap();
    for side in Side::BOTH {
        let c: Vec<f64> = j[side.name()]["condyle_center_ras_mm"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let d = distance([c[0], c[1], c[2]], head_profile::joint_center(&ph, &scan, side));
        eprintln!("cli {side}: {d:.2} mm from the truth");
        assert!(d < CENTRE_TOL_MM, "{side}: {d:.2} mm");
    }
    let coarse = repo.join("models/localize_unet8.safetensors");
    let bad = run("bad", &["--fine-model", coarse.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("localize_unet8.safetensors") && stderr.contains("joints_fine"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
