//! The `nv` pipeline end to end on a phantom head, with stand-in stages (truth centres, truth or
//! HU-threshold segmentation) so it runs in seconds without trained models: every output file,
//! the report's keys, labels back on the CT's grid, a joint outside the field of view, cohorts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use dnvs_engine::geometry::NvParams;
use dnvs_engine::io::{self, orientation, resample::crop_or_pad, Volume, VoxelKind};
use dnvs_engine::pipeline::enhance::EnhanceParams;
use dnvs_engine::pipeline::stages::{
    cut_voi, FixedCenters, LabelSegmenter, NegativeVolume, ThresholdSegmenter, VoiSpec,
};
use dnvs_engine::pipeline::{run_case, CaseOptions, Stages};
use dnvs_engine::synth::{generate_case, Side, SynthConfig};
use dnvs_engine::Device;

/// A held-out phantom head (seed 4242, never a training seed) written once per test binary.
struct Head {
    dir: PathBuf,
    ct: PathBuf,
    labels: PathBuf,
    centers: [[f64; 3]; 2],
    nv_truth: [f64; 2],
}

fn head() -> &'static Head {
    static HEAD: OnceLock<Head> = OnceLock::new();
    HEAD.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("dnvs_pipeline_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = SynthConfig { seed: 4242, ..Default::default() };
        let case = generate_case(&cfg, 0).unwrap();
        let ct = dir.join("head.nii.gz");
        let labels = dir.join("head_labels.nii.gz");
        io::write_nifti(&ct, &case.head_ct, VoxelKind::Image).unwrap();
        io::write_nifti(&labels, &case.head_labels, VoxelKind::Mask).unwrap();
        let centers = Side::BOTH.map(|s| case.phantom.joint_center_world(s));
        let nv_truth = [case.vois[0].nv_mm3, case.vois[1].nv_mm3];
        Head { dir, ct, labels, centers, nv_truth }
    })
}

/// A VOI smaller than the default (30 x 35 x 20 mm at 0.5 mm) keeps the tests cheap.
fn small_voi() -> VoiSpec {
    VoiSpec { dims: [60, 70, 40], spacing_mm: 0.5, raise_mm: 2.0 }
}

fn truth_stages(h: &Head, centers: [Option<[f64; 3]>; 2]) -> Stages {
    Stages {
        localizer: Box::new(FixedCenters { centers, voi: small_voi() }),
        segmenter: Box::new(LabelSegmenter { labels: io::read_volume(&h.labels).unwrap() }),
        nv: Box::new(NegativeVolume { params: NvParams::default(), device: Device::Cpu }),
    }
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn end_to_end_on_a_phantom_head_writes_every_output() {
    let h = head();
    let out = h.dir.join("e2e");
    let mut stages = truth_stages(h, h.centers.map(Some));
    let opts = CaseOptions {
        enhance: Some(EnhanceParams::default()),
        save_probs: true,
        gt: Some(h.labels.clone()),
        nan_to: None,
    };
    let mut seen = Vec::new();
    let report = run_case(&h.ct, &out, &mut stages, &opts, &mut |s| seen.push(s.to_string()))
        .expect("pipeline");
    assert!(seen.contains(&"segment L".to_string()) && seen.contains(&"write".to_string()));

    for f in ["report.json", "report.png", "labels.nii.gz"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    for side in ["L", "R"] {
        for f in ["ct.nii.gz", "mc.nii.gz", "tb.nii.gz", "nv.nii.gz", "mc_prob.nii.gz"] {
            assert!(out.join(side).join(f).is_file(), "{side}/{f}");
        }
        for f in ["mc.stl", "tb.stl", "nv.stl"] {
            let len = std::fs::metadata(out.join(side).join(f)).unwrap().len();
            assert!(len > 84 + 50 * 100, "{side}/{f}: {len} bytes is not a real mesh");
        }
    }

    // report.json: the keys the issue lists.
    let j = read_json(&out.join("report.json"));
    for k in ["input", "engine_version", "models", "sides", "asymmetry", "timings_s"] {
        assert!(j.get(k).is_some(), "report.json lacks {k}");
    }
    for k in ["localize", "mc", "tb"] {
        assert!(j["models"].get(k).is_some(), "models.{k}");
    }
    for k in ["nv_l_minus_r_mm3", "nv_ratio_l_over_r", "asymmetry_index"] {
        assert!(j["asymmetry"][k].is_number(), "asymmetry.{k}");
    }
    for side in ["L", "R"] {
        let s = &j["sides"][side];
        for k in ["condyle_center_ras_mm", "voi", "mc_volume_mm3", "tb_volume_mm3", "nv_mm3"] {
            assert!(s.get(k).is_some(), "{side}.{k}");
        }
        for k in ["shape", "spacing_mm", "affine"] {
            assert!(s["voi"].get(k).is_some(), "{side}.voi.{k}");
        }
        for k in ["anterior", "superior", "posterior", "min", "mean", "median"] {
            assert!(s["joint_space_mm"].get(k).is_some(), "{side}.joint_space_mm.{k}");
        }
        for k in ["dice", "iou", "hd_mm", "hd95_mm", "assd_mm"] {
            assert!(s["metrics"]["mc"].get(k).is_some(), "{side}.metrics.mc.{k}");
        }
        assert!(s["files"]["nv_mesh"].as_str() == Some(&format!("{side}/nv.stl")));
    }
    let t = &j["timings_s"];
    assert!(["read", "localize", "segment", "enhance", "inflate", "mesh", "write"]
        .iter()
        .all(|k| t[k].as_f64().is_some_and(|v| v >= 0.0)));

    // Values: the truth segmentation reproduces the truth masks on the VOI grid, and the NV of
    // the truth masks lands near the phantom's own (finer, analytic) NV.
    let mut errors = Vec::new();
    for (i, side) in Side::BOTH.iter().enumerate() {
        let s = report.sides[side.name()].as_ref().unwrap();
        let m = s.metrics.unwrap();
        assert!(m.mc.dice > 0.97, "{side} MC Dice {}", m.mc.dice);
        // Enhancement may add a few edge voxels to a perfect TB.
        assert!(m.tb.dice > 0.9, "{side} TB Dice {}", m.tb.dice);
        let rel = (s.nv_mm3 - h.nv_truth[i]).abs() / h.nv_truth[i];
        eprintln!(
            "{side}: NV {:.1} mm^3, phantom truth {:.1}, VOI-grid truth {:.1}, rel error {rel:.3}, \
             NV Dice {:.3}",
            s.nv_mm3, h.nv_truth[i], m.nv_truth_mm3, m.nv.dice
        );
        errors.push(rel);
    }
    // The truth masks come from the 1.5 mm head grid: the condyle is blocky there and its head
    // normals coarse, so this checks the plumbing (VOI cut, NV, labels back), not accuracy
    // (that is measured on 0.4 mm VOIs, docs/PERF.md).
    assert!(errors.iter().all(|&e| e < 0.4), "NV relative errors {errors:?}");
    let ai = report.asymmetry.asymmetry_index.unwrap();
    let (l, r) =
        (report.sides["L"].as_ref().unwrap().nv_mm3, report.sides["R"].as_ref().unwrap().nv_mm3);
    assert!((ai - (l - r).abs() / (l + r)).abs() < 1e-12);

    // labels.nii.gz: the CT's grid and affine exactly, all three structures on both sides.
    let ct = io::read_volume(&h.ct).unwrap();
    let lab = io::read_volume(&out.join("labels.nii.gz")).unwrap();
    assert_eq!(lab.dims, ct.dims);
    assert_eq!(lab.affine, ct.affine);
    let gt = io::read_volume(&h.labels).unwrap();
    for id in [1.0, 2.0, 3.0] {
        let n = lab.data.iter().filter(|&&v| v == id).count();
        assert!(n > 20, "label {id}: {n} voxels");
    }
    // And where they land: MC voxels of the output are MC in the truth (same grid).
    let (agree, total) = lab
        .data
        .iter()
        .zip(&gt.data)
        .filter(|(l, _)| **l == 1.0)
        .fold((0, 0), |(a, t), (_, g)| (a + usize::from(*g == 1.0), t + 1));
    assert!(agree as f64 > 0.9 * total as f64, "MC back in the CT: {agree} of {total}");

    // report.png: one row per side and the bar.
    let png = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(out.join("report.png")).unwrap(),
    ));
    let info = png.read_info().unwrap().info().clone();
    assert!(info.width >= 900 && info.height >= 600, "{}x{}", info.width, info.height);

    // Rerunning into the same folder replaces it (it is an earlier output).
    let again = run_case(&h.ct, &out, &mut stages, &CaseOptions::default(), &mut |_| {}).unwrap();
    assert!(again.sides["L"].as_ref().unwrap().metrics.is_none());
    assert!(!out.join("L/mc_prob.nii.gz").exists(), "old files do not survive a rerun");
}

#[test]
fn a_joint_outside_the_field_of_view_is_null_with_a_reason() {
    let h = head();
    let ct = io::read_volume(&h.ct).unwrap();
    // Keep the patient's right half (+x, high i): the left condyle is outside.
    let half = ct.dims[0] / 2;
    let right: Volume =
        crop_or_pad(&ct, [half as i64, 0, 0], [ct.dims[0] - half, ct.dims[1], ct.dims[2]], 0.0)
            .unwrap();
    let path = h.dir.join("right_half.nii.gz");
    io::write_nifti(&path, &right, VoxelKind::Image).unwrap();
    let out = h.dir.join("half");
    let mut stages = Stages {
        localizer: Box::new(FixedCenters { centers: h.centers.map(Some), voi: small_voi() }),
        segmenter: Box::new(LabelSegmenter { labels: io::read_volume(&h.labels).unwrap() }),
        nv: Box::new(NegativeVolume { params: NvParams::default(), device: Device::Cpu }),
    };
    let opts = CaseOptions { enhance: None, ..Default::default() };
    let report = run_case(&path, &out, &mut stages, &opts, &mut |_| {}).unwrap();
    let j = read_json(&out.join("report.json"));
    assert!(j["sides"]["L"].is_null(), "{}", j["sides"]["L"]);
    let why = j["reasons"]["L"].as_str().unwrap();
    assert!(why.contains("outside the CT's field of view"), "{why}");
    assert!(j["sides"]["R"].is_object());
    assert!(j["asymmetry"]["asymmetry_index"].is_null());
    assert!(!report.reasons.contains_key("R"));
    assert!(!out.join("L").exists() && out.join("R/nv.stl").is_file());
    let lab = io::read_volume(&out.join("labels.nii.gz")).unwrap();
    assert_eq!((lab.dims, lab.affine), (right.dims, right.affine));
}

#[test]
fn a_ct_not_in_hounsfield_units_is_warned_about_and_a_head_in_hu_is_not() {
    let h = head();
    let opts = CaseOptions { enhance: None, save_probs: false, gt: None, nan_to: None };
    let hu_warning = |r: &dnvs_engine::pipeline::Report| {
        r.warnings.iter().find(|w| w.contains("Hounsfield")).cloned()
    };
    let mut stages = truth_stages(h, h.centers.map(Some));
    let report = run_case(&h.ct, &h.dir.join("hu"), &mut stages, &opts, &mut |_| {}).unwrap();
    assert_eq!(hu_warning(&report), None);

    // The same head as raw stored values: a rescale intercept of -1024 never applied.
    let mut raw = io::read_volume(&h.ct).unwrap();
    raw.data.iter_mut().for_each(|v| *v += 1024.0);
    let raw_path = h.dir.join("head_raw.nii.gz");
    io::write_nifti(&raw_path, &raw, VoxelKind::Image).unwrap();
    let out = h.dir.join("raw");
    let report = run_case(&raw_path, &out, &mut stages, &opts, &mut |_| {}).unwrap();
    let w = hu_warning(&report).expect("raw values are warned about");
    assert!(w.contains("1st percentile is"), "{w}");
    let j = read_json(&out.join("report.json"));
    assert!(j["warnings"].as_array().unwrap().iter().any(|x| x.as_str() == Some(w.as_str())));
}

#[test]
fn an_output_folder_with_foreign_files_is_refused() {
    let h = head();
    let out = h.dir.join("foreign");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("thesis.docx"), b"precious").unwrap();
    let mut stages = truth_stages(h, [None, None]);
    let e = run_case(&h.ct, &out, &mut stages, &CaseOptions::default(), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("not an nv output"), "{e}");
    assert!(out.join("thesis.docx").is_file());
}

fn nv_cli(input: &Path, out: &Path, joints: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dnvs-engine"))
        .args(["nv", "--device", "cpu", "--segmenter", "gt", "--enhance", "off"])
        .arg("--gt")
        .arg(&head().labels)
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(["--joints", joints])
        .output()
        .unwrap()
}

#[test]
fn a_cohort_with_a_broken_file_records_it_and_a_rerun_skips_finished_cases() {
    let h = head();
    let dir = h.dir.join("cohort_in");
    std::fs::create_dir_all(&dir).unwrap();
    // Two copies of the head (the same --joints fit both) and a file that is not a NIfTI.
    std::fs::copy(&h.ct, dir.join("a.nii.gz")).unwrap();
    std::fs::copy(&h.ct, dir.join("b.nii.gz")).unwrap();
    std::fs::write(dir.join("broken.nii.gz"), b"this is not a CT").unwrap();
    let [l, r] = h.centers;
    let joints = format!("L={},{},{};R={},{},{}", l[0], l[1], l[2], r[0], r[1], r[2]);
    let out = h.dir.join("cohort_out");

    let first = nv_cli(&dir, &out, &joints);
    let stdout = String::from_utf8_lossy(&first.stdout);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(1), "stdout {stdout}\nstderr {stderr}");
    assert!(stdout.contains("2 done, 0 skipped (complete), 1 failed"), "{stdout}");
    assert!(stderr.contains("1 of 3 cases failed"), "{stderr}");
    let table = std::fs::read_to_string(out.join("cohort.csv")).unwrap();
    let header = table.lines().next().unwrap_or_default();
    assert!(header.ends_with(",asymmetry_index,warnings,error"), "{header}");
    let rows: Vec<&str> = table.lines().skip(1).collect();
    let status = |r: &str| r.split(',').nth(2).unwrap_or("").to_string();
    assert_eq!(rows.iter().filter(|r| status(r) == "done").count(), 4, "{table}");
    let failed: Vec<&&str> = rows.iter().filter(|r| status(r) == "failed").collect();
    assert_eq!(failed.len(), 1, "{table}");
    assert!(failed[0].starts_with("broken,-,failed") && failed[0].contains("broken.nii.gz"));
    for c in ["a", "b"] {
        assert!(out.join(c).join("report.json").is_file());
    }
    assert!(!out.join("broken").exists(), "no half output for the failed case");

    let second = nv_cli(&dir, &out, &joints);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert_eq!(second.status.code(), Some(1));
    assert!(stdout.contains("0 done, 2 skipped (complete), 1 failed"), "{stdout}");
    let again = std::fs::read_to_string(out.join("cohort.csv")).unwrap();
    assert_eq!(again.lines().filter(|r| r.contains("done (earlier run)")).count(), 4, "{again}");
}

#[test]
fn an_empty_segmentation_makes_the_side_null_with_a_reason() {
    let h = head();
    let out = h.dir.join("empty");
    // No voxel of a CT reaches 10^6 HU: both MC and TB come out empty.
    let mut stages = Stages {
        localizer: Box::new(FixedCenters { centers: [Some(h.centers[0]), None], voi: small_voi() }),
        segmenter: Box::new(ThresholdSegmenter { bone_hu: 1e6 }),
        nv: Box::new(NegativeVolume { params: NvParams::default(), device: Device::Cpu }),
    };
    let opts = CaseOptions { enhance: None, ..Default::default() };
    let report = run_case(&h.ct, &out, &mut stages, &opts, &mut |_| {}).unwrap();
    assert!(report.sides.values().all(Option::is_none));
    assert!(
        report.reasons["L"].contains("MC segmentation of the L VOI is empty"),
        "{:?}",
        report.reasons
    );
    assert!(report.reasons["R"].contains("no R joint centre given"));
    let lab = io::read_volume(&out.join("labels.nii.gz")).unwrap();
    assert!(lab.data.iter().all(|&v| v == 0.0));
    assert!(out.join("report.png").is_file());
}

/// A tiny untrained V-Net saved with a card, standing in for a trained MC or TB model.
fn tiny_model(dir: &Path, target: &str) -> PathBuf {
    tiny_model_file(dir, target, 7, &format!("{target}.safetensors"))
}

/// [`tiny_model`] with its weights drawn from `seed`, saved as `dir/file`.
fn tiny_model_file(dir: &Path, target: &str, seed: u64, file: &str) -> PathBuf {
    use dnvs_engine::io::normalize::Normalization;
    use dnvs_engine::nn::model::{save_with_card, ModelCard, CARD_FORMAT};
    use dnvs_engine::nn::{build_seeded, Arch};
    let net = build_seeded(Arch::VNet, 2, seed).unwrap();
    let card = ModelCard {
        format: CARD_FORMAT,
        arch: Arch::VNet,
        width: 2,
        target: target.into(),
        classes: 2,
        spacing_mm: [1.0; 3],
        normalization: Normalization::Minmax { min: -1000.0, max: 2000.0 },
        patch: [32; 3],
        window: [32; 3],
        config_sha256: "0".repeat(64),
        dataset: "none (untrained test model)".into(),
        seed,
        train_cases: vec![],
        val_cases: vec![],
        dice: None,
        hd95_mm: None,
        engine_version: dnvs_engine::VERSION.into(),
        scan_mm: None,
    };
    let path = dir.join(file);
    save_with_card(net.as_ref(), &path, &card).unwrap();
    path
}

/// An ensemble (`mc.safetensors`, `mc.2.safetensors`, as `models train` installs one per fold)
/// segments with the mean of its members' probabilities, and the report's card lists the others.
#[test]
fn an_ensemble_segments_with_the_mean_of_its_members() {
    use dnvs_engine::nn::model::{LoadedModel, ModelOverrides};
    use dnvs_engine::pipeline::models::member_paths;
    use dnvs_engine::pipeline::stages::{ModelSegmenter, Segmenter};
    let h = head();
    let dir = h.dir.join("ensemble");
    std::fs::create_dir_all(&dir).unwrap();
    for (seed, file) in [(7, "mc.safetensors"), (8, "mc.2.safetensors"), (9, "mc.4.safetensors")] {
        tiny_model_file(&dir, "mc", seed, file);
    }
    let paths = member_paths(&dir, "mc");
    assert_eq!(paths, [dir.join("mc.safetensors"), dir.join("mc.2.safetensors")], "stops at 3");
    assert!(member_paths(&dir, "tb").is_empty());
    let open = |p: &Path| LoadedModel::open(p, &ModelOverrides::default(), Device::Cpu).unwrap();
    let ct = io::read_volume(&h.ct).unwrap();
    let voi = cut_voi(&ct, h.centers[1], &small_voi()).unwrap();
    let fg = |members: Vec<LoadedModel>| {
        let mut seg = ModelSegmenter { mc: members, tb: vec![open(&paths[0])] };
        let cards = seg.cards();
        (seg.segment(&voi, h.centers[1]).unwrap().mc, cards)
    };
    let (a, _) = fg(vec![open(&paths[0])]);
    let (b, _) = fg(vec![open(&paths[1])]);
    let (mean, cards) = fg(paths.iter().map(|p| open(p)).collect());
    assert_eq!(mean.dims, voi.dims);
    let worst = (0..a.data.len())
        .map(|i| (mean.data[i] - 0.5 * (a.data[i] + b.data[i])).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-6, "mean of the members, off by {worst}");
    assert!(a.data.iter().zip(&b.data).any(|(x, y)| (x - y).abs() > 1e-3), "members differ");
    let mc = cards[0].as_ref().unwrap();
    assert_eq!(mc["seed"], 7);
    assert_eq!(mc["ensemble"].as_array().map(|m| m.len()), Some(1));
    assert_eq!(mc["ensemble"][0]["seed"], 8);
    assert!(cards[1].as_ref().unwrap().get("ensemble").is_none(), "one TB model: no list");
}

#[test]
fn carded_models_segment_through_the_model_stage_and_their_cards_reach_the_report() {
    use dnvs_engine::nn::model::{LoadedModel, ModelOverrides};
    use dnvs_engine::pipeline::stages::ModelSegmenter;
    let h = head();
    let dir = h.dir.join("models");
    std::fs::create_dir_all(&dir).unwrap();
    let open = |t: &str| {
        LoadedModel::open(&tiny_model(&dir, t), &ModelOverrides::default(), Device::Cpu).unwrap()
    };
    let mut stages = Stages {
        localizer: Box::new(FixedCenters { centers: [None, Some(h.centers[1])], voi: small_voi() }),
        segmenter: Box::new(ModelSegmenter { mc: vec![open("mc")], tb: vec![open("tb")] }),
        nv: Box::new(NegativeVolume { params: NvParams::default(), device: Device::Cpu }),
    };
    let out = h.dir.join("carded");
    let opts = CaseOptions { enhance: None, save_probs: true, gt: None, nan_to: None };
    // An untrained network's output is arbitrary: the side is measured or null with a reason,
    // never an error, and the probabilities are on the VOI grid.
    let report = run_case(&h.ct, &out, &mut stages, &opts, &mut |_| {}).unwrap();
    let j = read_json(&out.join("report.json"));
    assert_eq!(j["models"]["mc"]["target"], "mc");
    assert_eq!(j["models"]["tb"]["arch"], "vnet");
    assert!(j["models"]["localize"].is_null());
    match &report.sides["R"] {
        Some(s) => {
            let p = io::read_volume(&out.join("R/mc_prob.nii.gz")).unwrap();
            assert_eq!(p.dims, s.voi.shape);
            assert!(p.data.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        None => assert!(report.reasons["R"].contains("segmentation"), "{:?}", report.reasons),
    }
}

#[test]
fn a_ct_with_nan_voxels_is_refused_unless_nan_to_says_what_to_put_there() {
    let h = head();
    let mut ct = io::read_volume(&h.ct).unwrap();
    for i in [0, 17, 4242] {
        ct.data[i] = f32::NAN;
    }
    ct.data[99] = f32::INFINITY;
    let path = h.dir.join("nan_head.nii.gz");
    io::write_nifti(&path, &ct, VoxelKind::Image).unwrap();
    let out = h.dir.join("nan");
    let mut stages = truth_stages(h, h.centers.map(Some));
    let opts = CaseOptions { enhance: None, ..Default::default() };
    let err = run_case(&path, &out, &mut stages, &opts, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("nan_head.nii.gz") && err.contains("4 of"), "{err}");
    assert!(!out.join("report.json").exists(), "nothing written for a refused CT");
    let opts = CaseOptions { enhance: None, nan_to: Some(-1000.0), ..Default::default() };
    run_case(&path, &out, &mut stages, &opts, &mut |_| {}).expect("--nan-to repairs the CT");
    assert!(out.join("report.json").is_file());
}

/// The localisation network as the pipeline's first stage (the model the repo ships, trained on
/// head-profile phantoms): on the held-out head both joints are found within 3 mm of the
/// phantom's condyle centres and the report carries the localiser's card.
#[test]
fn the_shipped_localisation_model_finds_both_joints_of_a_held_out_head() {
    use dnvs_engine::pipeline::localize::{open_fine_model, open_model, LocalizeOptions};
    use dnvs_engine::pipeline::stages::ModelLocalizer;
    let h = head();
    let model_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/localize_unet8.safetensors");
    let model = open_model(&model_path, Device::Cpu).expect("the shipped localisation model");
    let fine_path = model_path.with_file_name("localize_fine_unet8.safetensors");
    let fine = Some(open_fine_model(&fine_path, Device::Cpu).expect("the shipped fine model"));
    let mut stages = truth_stages(h, h.centers.map(Some));
    let opts = LocalizeOptions::default();
    stages.localizer = Box::new(ModelLocalizer { model, fine, opts });
    let out = h.dir.join("model_localizer");
    let opts = CaseOptions { enhance: None, ..Default::default() };
    let report = run_case(&h.ct, &out, &mut stages, &opts, &mut |_| {}).expect("pipeline");
    for (i, side) in ["L", "R"].into_iter().enumerate() {
        let s = report.sides[side].as_ref().unwrap_or_else(|| panic!("{side} found"));
        let err = (0..3)
            .map(|a| (s.condyle_center_ras_mm[a] - h.centers[i][a]).powi(2))
            .sum::<f64>()
            .sqrt();
        eprintln!("{side}: centre {:.2?} error {err:.2} mm", s.condyle_center_ras_mm);
        assert!(err < 3.0, "{side} centre {err:.2} mm from the truth");
    }
    let j = read_json(&out.join("report.json"));
    assert_eq!(j["models"]["localize"]["target"], "joints");
}

#[test]
fn metrics_count_on_the_ct_grid_only_where_the_truth_is_labelled() {
    let h = head();
    let full = io::read_volume(&h.labels).unwrap();
    // A rater who stopped labelling the left condyle's neck 4 mm below the joint centre: the
    // truth below that level is unlabelled, while the segmentation goes on down the ramus.
    let mut partial = full.clone();
    let cut_z = h.centers[0][2] - 4.0;
    let [d, hh, w] = full.dims;
    let mut removed = 0;
    for i in 0..d {
        for j in 0..hh {
            for k in 0..w {
                let p = orientation::apply(&full.affine, [i as f64, j as f64, k as f64]);
                let q = full.index(i, j, k);
                if p[0] < 0.0 && p[2] < cut_z && partial.data[q] != 0.0 {
                    partial.data[q] = 0.0;
                    removed += usize::from(full.data[q] == 1.0);
                }
            }
        }
    }
    assert!(removed > 20, "the cut removed {removed} MC voxels");
    let gt = h.dir.join("partial_labels.nii.gz");
    io::write_nifti(&gt, &partial, VoxelKind::Mask).unwrap();
    // The VOI 3 mm off the labelled box's centre, so part of it lies outside the labels.
    let centres = [h.centers[0], h.centers[1]].map(|c| Some([c[0] + 3.0, c[1], c[2]]));
    let mut stages = Stages {
        localizer: Box::new(FixedCenters { centers: centres, voi: small_voi() }),
        segmenter: Box::new(LabelSegmenter { labels: full }),
        nv: Box::new(NegativeVolume { params: NvParams::default(), device: Device::Cpu }),
    };
    let opts = CaseOptions { enhance: None, gt: Some(gt), ..Default::default() };
    let out = h.dir.join("partial");
    let report = run_case(&h.ct, &out, &mut stages, &opts, &mut |_| {}).unwrap();
    for side in ["L", "R"] {
        let m = report.sides[side].as_ref().unwrap().metrics.unwrap();
        // The truth segmentation, scored on the truth's own grid and labelled box, is perfect.
        assert!(m.mc.dice > 0.999 && m.tb.dice > 0.999, "{side}: {:?} {:?}", m.mc, m.tb);
        assert_eq!(m.mc.hd_mm, Some(0.0), "{side}");
    }
}
