//! The phantom data set through files: `synth::write_dataset` -> NIfTI + dataset.json ->
//! `train::dataset::Dataset`. Byte-identical output for identical arguments, exact round trip of
//! the in-memory volumes, clear errors for missing and misaligned files.

use std::path::{Path, PathBuf};

use dnvs_engine::io::{read_nifti, write_nifti, VoxelKind};
use dnvs_engine::synth::{self, SynthConfig};
use dnvs_engine::train::dataset::{Dataset, Side};
use dnvs_engine::Error;

fn small(seed: u64) -> SynthConfig {
    SynthConfig { seed, voi_dims: [40, 48, 28], head_spacing: 5.0, ..SynthConfig::default() }
}

/// A fresh temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("dnvs-dataset-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file under `dir` (relative path -> bytes), sorted.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn identical_arguments_give_identical_bytes() {
    let (a, b, c) = (TempDir::new("a"), TempDir::new("b"), TempDir::new("c"));
    synth::write_dataset(&a.0, 2, &small(9), true, &|_| {}).unwrap();
    synth::write_dataset(&b.0, 2, &small(9), true, &|_| {}).unwrap();
    synth::write_dataset(&c.0, 2, &small(10), false, &|_| {}).unwrap();
    let (ta, tb) = (tree(&a.0), tree(&b.0));
    // 2 heads + 2 labels + 2 x 2 x 4 VOI files + json + 2 x 3 previews.
    assert_eq!(ta.len(), 2 + 2 + 16 + 1 + 6);
    assert!(ta == tb, "same seed must give the same bytes");
    assert!(!a.0.join(".tmp").exists());
    let json = |d: &Path| std::fs::read_to_string(d.join("dataset.json")).unwrap();
    assert_ne!(json(&a.0), json(&c.0));
    // Re-running into a used folder replaces it: no stale previews.
    synth::write_dataset(&a.0, 1, &small(9), false, &|_| {}).unwrap();
    assert!(!a.0.join("preview").exists());
    assert_eq!(tree(&a.0).len(), 1 + 1 + 8 + 1);
}

#[test]
fn round_trip_matches_memory() {
    let dir = TempDir::new("rt");
    let cfg = small(4);
    let manifest = synth::write_dataset(&dir.0, 2, &cfg, false, &|_| {}).unwrap();
    let ds = Dataset::open(&dir.0).unwrap();
    assert_eq!(ds.cases().len(), 2);
    assert_eq!(ds.cases()[1].id, "case_0002");
    assert_eq!(ds.cases()[0].sides, vec![Side::L, Side::R]);
    assert_eq!(manifest.spacing_voi, [0.4; 3]);
    assert_eq!(manifest.labels["3"], "NV");
    for (index, entry) in ds.cases().iter().enumerate() {
        let mem = synth::generate_case(&cfg, index).unwrap();
        let (head, labels) = ds.load_head(&entry.id).unwrap();
        assert_eq!(head.dims, mem.head_ct.dims);
        assert_eq!(head.data, mem.head_ct.data, "head CT is whole HU, stored exactly as int16");
        assert_eq!(labels.data, mem.head_labels.data);
        for v in &mem.vois {
            let s = ds.load_voi(&entry.id, v.side).unwrap();
            assert_eq!(s.ct.data, v.ct.data);
            assert_eq!(s.mc.data, v.mc.data);
            assert_eq!(s.tb.data, v.tb.data);
            assert_eq!(s.nv.data, v.nv.data);
            for r in 0..3 {
                for c in 0..4 {
                    assert!((s.ct.affine[r][c] - v.ct.affine[r][c]).abs() < 1e-4);
                }
            }
            let count = s.nv.data.iter().filter(|&&x| x > 0.5).count() as f64;
            assert!(
                (s.nv_mm3 - count * 0.064).abs() < 1e-3,
                "nv_mm3 {} vs {count} voxels",
                s.nv_mm3
            );
            assert!((s.joint_space_mm - v.joint_space_mm).abs() < 1e-3);
            // One VOI type: what is read back carries the generated truth, side and centre too.
            assert_eq!(s.side, v.side);
            let (got, want) = (s.condyle_center_ras_mm.unwrap(), v.condyle_center_ras_mm.unwrap());
            assert!((0..3).all(|a| (got[a] - want[a]).abs() <= 1e-4), "{got:?} vs {want:?}");
            assert_eq!(s.in_field_of_view, v.in_field_of_view.filter(|in_fov| !in_fov));
        }
    }
    assert!(matches!(ds.load_voi("case_0099", Side::L), Err(Error::Arg { .. })));
}

#[test]
fn missing_and_misaligned_files_are_named() {
    let empty = TempDir::new("empty");
    std::fs::create_dir_all(&empty.0).unwrap();
    let err = Dataset::open(&empty.0).unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("dataset.json"), "{err}");

    let dir = TempDir::new("broken");
    synth::write_dataset(&dir.0, 1, &small(2), false, &|_| {}).unwrap();
    // A mask shifted by half a voxel does not align with its CT.
    let mc = dir.0.join("voi/case_0001_R_mc.nii.gz");
    let mut vol = read_nifti(&mc).unwrap();
    vol.affine[0][3] += 0.2;
    vol.header = None;
    write_nifti(&mc, &vol, VoxelKind::Mask).unwrap();
    let ds = Dataset::open(&dir.0).unwrap();
    ds.load_voi("case_0001", Side::L).unwrap();
    let err = ds.load_voi("case_0001", Side::R).unwrap_err().to_string();
    assert!(err.contains("case_0001_R_mc") && err.contains("case_0001_R_ct"), "{err}");
    // A deleted file is reported when the data set is opened.
    std::fs::remove_file(dir.0.join("voi/case_0001_L_nv.nii.gz")).unwrap();
    let err = Dataset::open(&dir.0).unwrap_err().to_string();
    assert!(err.contains("case_0001_L_nv.nii.gz") && err.contains("missing"), "{err}");
}

#[test]
fn extra_scans_of_a_voi_round_trip() {
    use dnvs_engine::synth::VoiScan;
    let dir = TempDir::new("scans");
    let scan = VoiScan { inplane_mm: [0.8, 1.6], slice_mm: [0.8, 2.0], draws: 3 };
    let cfg = SynthConfig { voi_scan: Some(scan), ..small(5) };
    synth::write_dataset(&dir.0, 1, &cfg, false, &|_| {}).unwrap();
    let ds = Dataset::open(&dir.0).unwrap();
    let side = &ds.manifest().cases[0].sides[&Side::L];
    assert_eq!(side.scans, ["voi/case_0001_L_ct2.nii.gz", "voi/case_0001_L_ct3.nii.gz"]);
    let mem = synth::generate_case(&cfg, 0).unwrap();
    for v in &mem.vois {
        let s = ds.load_voi("case_0001", v.side).unwrap();
        assert_eq!(s.scans.len(), 2);
        for (got, want) in s.scans.iter().zip(&v.scans) {
            assert_eq!(got.data, want.data, "extra scans are whole HU, stored exactly");
        }
    }
    // A data set of one draw names no extra scans (dataset.json as before the option).
    let one = TempDir::new("scans1");
    let cfg1 = SynthConfig { voi_scan: Some(VoiScan { draws: 1, ..scan }), ..small(5) };
    synth::write_dataset(&one.0, 1, &cfg1, false, &|_| {}).unwrap();
    let json = std::fs::read_to_string(one.0.join("dataset.json")).unwrap();
    assert!(!json.contains("scans"), "{json}");
}

#[test]
fn the_joint_space_range_is_recorded_in_the_data_set_unless_it_is_the_default() {
    use dnvs_engine::synth::GapRange;
    let read = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("dataset.json")).unwrap()).unwrap()
    };
    let (plain, wide) = (TempDir::new("gap-default"), TempDir::new("gap-wide"));
    let cfg = SynthConfig { voi_dims: [16, 16, 16], ..small(4) };
    synth::write_dataset(&plain.0, 1, &cfg, false, &|_| {}).unwrap();
    let cfg = SynthConfig { gaps: GapRange { mm: [1.0, 5.0] }, ..cfg };
    let m = synth::write_dataset(&wide.0, 1, &cfg, false, &|_| {}).unwrap();
    assert!(read(&plain.0).get("gap_mm").is_none(), "the default is not written");
    assert_eq!(read(&wide.0)["gap_mm"], serde_json::json!([1.0, 5.0]));
    assert_eq!(m.gap_mm, GapRange { mm: [1.0, 5.0] });
    for s in ["L", "R"] {
        let g = read(&wide.0)["cases"][0]["sides"][s]["joint_space_mm"].as_f64().unwrap();
        assert!((1.0..=5.0).contains(&g), "{s}: {g}");
    }
}
