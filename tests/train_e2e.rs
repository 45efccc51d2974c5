//! Training end to end on phantoms, on the CPU: a small V-Net learns the condyle, a resumed run
//! is bitwise the run that never stopped, and bad configs and data fail before training starts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dnvs_engine::train::config::Config;
use dnvs_engine::train::trainer::{self, TrainOptions};

/// A fresh folder under the system temp dir.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dnvs_train_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const VOI: [usize; 3] = [32, 40, 32];
const CASES: usize = 6;

/// The phantom data set all tests share (written once per test binary).
fn dataset() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = scratch("data").join("phantoms");
        dnvs_engine::train::synth_bridge::write_phantoms(&d, CASES, 3, VOI).expect("phantoms");
        d
    })
}

/// A small config: V-Net width 4, 16^3 patches, CE + hard Dice, light augmentation.
fn config_json(data: &Path, run: &Path, epochs: usize, samples: usize) -> String {
    format!(
        r#"{{
 "manual_seed": 11,
 "training": {{"device": "cpu", "model_name": "VNet", "width": 4, "num_epochs": {epochs},
   "k_follds_number": 3, "folds": [1], "batch_size": 2, "learning_rate": 0.003, "wd": 0.0,
   "step_size": 20, "gamma": 0.5, "precision": "fp32", "run_dir": "{run}"}},
 "loss": {{"loss_type": "DCE", "dce_w": 1, "w0": 1, "w1": 1, "nll": "True"}},
 "loaders": {{
   "dataset_dir": "{data}", "target": "mc", "voi_shape": [{}, {}, {}],
   "train_patch": [16, 16, 16], "val_patch": [32, 32, 32], "val_stride": [32, 32, 32],
   "train_dataset_size": {samples},
   "transformer": {{
     "train": {{"raw": [{{"name": "Normalize"}}, {{"name": "RandomFlip", "axes": [0], "execution_probability": 0.5}}],
               "label": [{{"name": "RandomFlip", "axes": [0], "execution_probability": 0.5}}]}},
     "test": {{"raw": [{{"name": "Normalize"}}], "label": []}}
   }}
 }}
}}"#,
        VOI[0],
        VOI[1],
        VOI[2],
        data = data.display(),
        run = run.display()
    )
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("config.json");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_small_vnet_learns_the_condyle() {
    let dir = scratch("learn");
    let run = dir.join("run");
    let cfg = Config::load(&write_config(&dir, &config_json(dataset(), &run, 8, 24))).unwrap();
    let t = std::time::Instant::now();
    let summary =
        trainer::train(&cfg, &TrainOptions { quiet: true, ..Default::default() }).unwrap();
    assert!(summary.finished);
    let dice: Vec<f64> = summary.tests.iter().map(|r| r.scores.dice).collect();
    let mean = dice.iter().sum::<f64>() / dice.len() as f64;
    // Chance: a constant prediction scores 0 (nothing) or 2f/(1+f) (everything, foreground
    // fraction f); a random one with rate q scores at most about that. Take the best of those
    // over the held-out joints.
    let prep = trainer::prepare(&cfg).unwrap();
    let chance = prep
        .samples
        .iter()
        .filter(|s| summary.tests.iter().any(|r| r.id == s.id))
        .map(|s| {
            let f = s.label.data.iter().sum::<f32>() as f64 / s.label.data.len() as f64;
            2.0 * f / (1.0 + f)
        })
        .fold(0.0, f64::max);
    eprintln!(
        "held-out MC Dice per joint {dice:?}, mean {mean:.3} (chance at most {chance:.3}), {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert!(mean > 0.6 && mean > chance + 0.1, "held-out Dice {mean:.3} is no better than chance");
    for f in [
        "loss_convergence.csv",
        "test_results.csv",
        "progress.png",
        "state.json",
        "fold1/best.safetensors",
        "fold1/last.safetensors",
    ] {
        assert!(run.join(f).exists(), "{f} written");
    }
    let conv = std::fs::read_to_string(run.join("loss_convergence.csv")).unwrap();
    assert!(conv.starts_with("k,epoch,mode,iter,loss,ce,dice,IoU\n"));
    let tests = std::fs::read_to_string(run.join("test_results.csv")).unwrap();
    assert_eq!(tests.lines().count(), 1 + summary.tests.len());
    // eval: each fold's best weights on its held-out joints, CSV and the Table 1 shape.
    let report = dnvs_engine::train::eval::eval(&cfg, &Default::default()).unwrap();
    assert_eq!(report.rows.len(), summary.tests.len());
    assert!(report.table.contains("| MC | DICE |"), "{}", report.table);
    assert!(run.join("eval_results.csv").exists() && run.join("table_1.md").exists());
    eprintln!("{}", report.table);
}

#[test]
fn resume_is_bitwise_the_uninterrupted_run() {
    let dir = scratch("resume");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let once = Config::load(&write_config(&dir, &config_json(dataset(), &a, 4, 4))).unwrap();
    let quiet = TrainOptions { quiet: true, ..Default::default() };
    trainer::train(&once, &quiet).unwrap();
    let dir_b = dir.join("cfg_b");
    std::fs::create_dir_all(&dir_b).unwrap();
    let sliced = Config::load(&write_config(&dir_b, &config_json(dataset(), &b, 4, 4))).unwrap();
    let first =
        trainer::train(&sliced, &TrainOptions { stop_after_epochs: Some(2), ..quiet.clone() })
            .unwrap();
    assert!(!first.finished);
    assert_eq!(trainer::load_state(&b).unwrap().epoch_done, 2);
    let resumed = trainer::load_run_config(&b).unwrap();
    trainer::train(&resumed, &TrainOptions { resume: true, ..quiet }).unwrap();
    // The tensors, bit for bit. (The files' cards differ by design: each run's config file
    // names its own run folder, so `config_sha256` differs.)
    let read = |run: &Path| {
        dnvs_engine::io::weights::read_safetensors(&run.join("fold1/last.safetensors"))
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, t.dims, t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    };
    assert!(
        read(&a) == read(&b),
        "weights after 4 epochs differ between the resumed and the uninterrupted run"
    );
    let (sa, sb) = (trainer::load_state(&a).unwrap(), trainer::load_state(&b).unwrap());
    assert_eq!(sa.adam_step, sb.adam_step);
    let moments = |p: &Path, s: &trainer::TrainState| {
        std::fs::read(p.join(s.adam_file.as_ref().unwrap())).unwrap()
    };
    assert!(moments(&a, &sa) == moments(&b, &sb), "Adam moments differ");
    let rows = |p: &Path| std::fs::read_to_string(p.join("loss_convergence.csv")).unwrap();
    assert_eq!(rows(&a), rows(&b), "the logs match too");
}

fn expect_err(cfg_text: &str, dir: &Path, needle: &str) {
    let run = dir.join("run");
    let r = Config::load(&write_config(dir, cfg_text))
        .and_then(|c| trainer::train(&c, &TrainOptions { quiet: true, ..Default::default() }));
    let e = r.err().unwrap_or_else(|| panic!("training started; expected an error about {needle}"));
    assert!(e.to_string().contains(needle), "error {e} should mention {needle}");
    assert!(!run.join("state.json").exists(), "failed before training");
}

#[test]
fn bad_configs_and_data_fail_before_training() {
    let dir = scratch("bad");
    let run = dir.join("run");
    let good = config_json(dataset(), &run, 1, 2);
    // Unknown key: the error lists the valid ones.
    expect_err(&good.replace("\"wd\"", "\"weight_decay\""), &dir, "learning_rate");
    // Unknown transform.
    expect_err(&good.replacen("\"RandomFlip\"", "\"RandomFlop\"", 1), &dir, "RandomFlop");
    // Patch larger than the VOI.
    expect_err(
        &good.replace("\"train_patch\": [16, 16, 16]", "\"train_patch\": [64, 16, 16]"),
        &dir,
        "train_patch",
    );
    // A data set without dataset.json and no synth section.
    expect_err(
        &good.replace(&dataset().display().to_string(), &dir.join("nowhere").display().to_string()),
        &dir,
        "dataset.json",
    );
    // A data set whose file is missing: copy dataset.json only.
    let broken = dir.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(dataset().join("dataset.json"), broken.join("dataset.json")).unwrap();
    let r = Config::load(&write_config(
        &dir,
        &good.replace(&dataset().display().to_string(), &broken.display().to_string()),
    ))
    .and_then(|c| trainer::train(&c, &TrainOptions { quiet: true, ..Default::default() }));
    assert!(r.is_err(), "missing VOI files are an error");
    assert!(!run.join("state.json").exists());
    // A VOI smaller than voi_shape.
    expect_err(
        &good.replace(
            &format!("\"voi_shape\": [{}, {}, {}]", VOI[0], VOI[1], VOI[2]),
            &format!("\"voi_shape\": [{}, {}, {}]", VOI[0] + 8, VOI[1], VOI[2]),
        ),
        &dir,
        "smaller than loaders.voi_shape",
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_mask_that_does_not_align_with_its_ct_fails_before_training() {
    let dir = scratch("misaligned");
    let data = dir.join("data");
    copy_dir(dataset(), &data);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("dataset.json")).unwrap()).unwrap();
    let mc =
        manifest["cases"][0]["sides"]["L"]["mc"].as_str().expect("an MC mask path").to_string();
    let mut vol = dnvs_engine::io::read_nifti(&data.join(&mc)).unwrap();
    vol.affine[0][3] += 5.0; // shifted by 5 mm: same shape, another place
    vol.header = None;
    dnvs_engine::io::write_nifti(&data.join(&mc), &vol, dnvs_engine::io::VoxelKind::Mask).unwrap();
    let run = dir.join("run");
    let cfg = Config::load(&write_config(&dir, &config_json(&data, &run, 1, 2))).unwrap();
    let e = trainer::train(&cfg, &TrainOptions { quiet: true, ..Default::default() })
        .expect_err("a misaligned mask is an error");
    assert!(e.to_string().to_lowercase().contains("align"), "{e}");
    assert!(!run.join("state.json").exists(), "failed before training");
}
