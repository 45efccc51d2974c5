//! The data of a training run, checked before anything is written: the data set (synthesised
//! when the config asks), each joint's VOI cropped, optionally resampled onto the training grid
//! (`loaders.spacing_mm`), its target mask, the folds, the device, and the normalisation fitted
//! on a fold's training joints.

use std::path::PathBuf;

use crate::io::normalize::Normalization;
use crate::synth::VoiCase;
use crate::train::augment::{Patch, Transform};
use crate::train::checkpoint;
use crate::train::config::{Config, Target};
use crate::train::dataset::{Dataset, Side};
use crate::train::sampling;
use crate::volume::Volume;
use crate::{Device, Error, Result};

/// One joint of one patient, cropped to the VOI shape: the training unit.
#[derive(Clone, Debug)]
pub struct Sample {
    pub id: String,
    /// `L` or `R`.
    pub side: String,
    /// CT values (HU), `voi_shape`.
    pub image: Patch,
    /// 0/1 mask of the target structure.
    pub label: Patch,
    pub spacing: [f64; 3],
    /// Linear indices of the label's foreground voxels (where foreground patches centre).
    pub foreground: Vec<u32>,
    /// The VOI at the data set's own spacing when `loaders.spacing_mm` resampled `image` and
    /// `label`: whole-VOI validation scores this, through the resampling `segment` does.
    pub native: Option<NativeVoi>,
    /// 0/1 joint region on `label`'s grid (the truth NV grown by `loss.joint_margin_mm`), where
    /// the loss's joint term looks; `None` when `loss.joint_w` is 0.
    pub joint: Option<Patch>,
    /// More scans of this VOI on `image`'s grid (`loaders.synth.voi_scan.draws`): training
    /// patches come from `image` or one of these at random; validation sees `image` alone.
    pub scans: Vec<Patch>,
}

/// A joint's VOI (CT and 0/1 mask) on the data set's own grid.
#[derive(Clone, Debug)]
pub struct NativeVoi {
    pub image: Patch,
    pub label: Patch,
    pub spacing: [f64; 3],
}

/// The checked, loaded data of a config: everything that can fail before training does.
pub struct Prepared {
    pub samples: Vec<Sample>,
    /// Sorted case ids.
    pub ids: Vec<String>,
    /// Test ids per fold.
    pub folds: Vec<Vec<String>>,
    pub device: Device,
    /// The voxel spacing every VOI shares (the model card's `spacing_mm`).
    pub spacing: [f64; 3],
    /// SHA-256 of the config file.
    pub config_sha256: String,
}

/// `training.device`: `auto`, `cpu`, or a CUDA device that falls back to the CPU (with a message)
/// when unusable, as the original does.
pub fn resolve_device(spec: &str) -> Result<Device> {
    resolve_device_for(spec, crate::tensor::Precision::default())
}

/// [`resolve_device`] with the precision the GPU self-check (`nn::gpu_check`) runs in: `auto`
/// falls back to the CPU when the GPU disagrees with it, an explicit usable GPU that disagrees
/// is an error.
pub fn resolve_device_for(spec: &str, prec: crate::tensor::Precision) -> Result<Device> {
    use crate::nn::gpu_check::{self, DeviceChoice};
    let choice: DeviceChoice =
        spec.parse().map_err(|e: Error| Error::Config { msg: e.to_string() })?;
    if let DeviceChoice::Cuda(n) = choice {
        if let Err(why) = crate::tensor::probe(n) {
            eprintln!("dnvs-engine: {spec} is not usable ({why}); training on the CPU");
            return Ok(Device::Cpu);
        }
    }
    gpu_check::resolve(choice, prec)
}

/// Writes phantoms into `dataset_dir` when it is missing and `loaders.synth` asks for it.
fn ensure_dataset(cfg: &Config) -> Result<()> {
    let dir = &cfg.loaders.dataset_dir;
    if dir.join("dataset.json").exists() {
        return Ok(());
    }
    let Some(s) = &cfg.loaders.synth else {
        return Err(Error::Config {
            msg: format!(
                "loaders.dataset_dir {}: no dataset.json there (write one with `dnvs-engine synth \
                 --out {}` or add \"synth\": {{\"cases\": N}} to loaders)",
                dir.display(),
                dir.display()
            ),
        });
    };
    eprintln!("dnvs-engine: writing {} phantoms to {}", s.cases, dir.display());
    if cfg.loaders.target.reads_heads() {
        return crate::train::synth_bridge::write_heads(dir, s.cases, s.seed);
    }
    crate::train::synth_bridge::write_phantoms(
        dir,
        s.cases,
        s.seed,
        cfg.loaders.voi_shape,
        s.voi_scan,
        s.gap_mm.unwrap_or_default(),
    )
}

/// Loads and checks everything a config needs before the first step: the data set exists (or is
/// synthesised), every VOI and mask exists, aligns and is at least `voi_shape`, has no
/// non-finite voxel (unless `nan_to` replaces them), all VOIs share one spacing, there are enough
/// cases for the folds. Crops VOIs larger than `voi_shape` about their centre (the original's
/// `precrop`).
///
/// # Errors
/// [`Error::Config`], [`Error::Io`] or [`Error::Format`] naming the case, side and file.
pub fn prepare(cfg: &Config) -> Result<Prepared> {
    prepare_with(cfg, None)
}

/// [`prepare`], replacing non-finite CT voxels by `nan_to` when given.
pub fn prepare_with(cfg: &Config, nan_to: Option<f32>) -> Result<Prepared> {
    ensure_dataset(cfg)?;
    let ds = Dataset::open(&cfg.loaders.dataset_dir)?;
    let mut ids: Vec<String> = ds.cases().iter().map(|c| c.id.clone()).collect();
    ids.sort();
    let folds = sampling::k_folds(&ids, cfg.training.k_follds_number)?;
    let voi = cfg.loaders.voi_shape;
    let mut samples = Vec::new();
    let mut spacing: Option<[f64; 3]> = None;
    if cfg.loaders.target == Target::Joints {
        samples = crate::train::joints::samples(cfg, &ds, &ids)?;
    } else if cfg.loaders.target == Target::JointsFine {
        samples = crate::train::joints::fine_samples(cfg, &ds, &ids)?;
    }
    if cfg.loaders.target.reads_heads() {
        spacing = samples.first().map(|s| s.spacing);
    }
    // Order as the original's val loader: every case's left joint, then every case's right.
    let joint_sides = if cfg.loaders.target.reads_heads() { &[][..] } else { &cfg.loaders.sides };
    for side_name in joint_sides {
        let side = if side_name == "L" { Side::L } else { Side::R };
        for id in &ids {
            let entry = ds.cases().iter().find(|c| &c.id == id).expect("ids come from cases()");
            if !entry.sides.contains(&side) {
                continue;
            }
            let mut v = ds.load_voi(id, side)?;
            let ct_file = ct_path(&ds, id, side);
            let bad = match nan_to {
                Some(x) => {
                    crate::volume::replace_non_finite(&mut v.ct, x);
                    0
                }
                None => crate::volume::count_non_finite(&v.ct),
            };
            if bad > 0 {
                return Err(Error::format(
                    &ct_file,
                    format!(
                        "{bad} of {} voxels are NaN or infinite; fix the CT or give --nan-to HU",
                        v.ct.data.len()
                    ),
                ));
            }
            let mask = target_mask(cfg.loaders.target, &v);
            check_aligned(id, side_name, &v.ct, mask)?;
            if (0..3).any(|a| v.ct.dims[a] < voi[a]) {
                return Err(Error::Config {
                    msg: format!(
                        "case {id} side {side_name}: VOI {:?} is smaller than loaders.voi_shape {voi:?}",
                        v.ct.dims
                    ),
                });
            }
            match spacing {
                None => spacing = Some(v.ct.spacing),
                Some(s) if crate::nn::model::needs_resampling(v.ct.spacing, s) => {
                    return Err(Error::format(
                        &ct_file,
                        format!(
                            "spacing {:?} mm differs from the other VOIs' {s:?}: resample the data \
                             set to one spacing",
                            v.ct.spacing
                        ),
                    ));
                }
                Some(_) => {}
            }
            let c = sampling::centre_corner(v.ct.dims, voi);
            let image = sampling::crop(&v.ct.data, v.ct.dims, c, voi);
            let mut label = sampling::crop(&mask.data, mask.dims, c, voi);
            binarize(&mut label);
            let joint = if cfg.loss.joint_w > 0.0 {
                check_aligned(id, side_name, &v.ct, &v.nv)?;
                Some(joint_region(&v.nv, c, voi, cfg.loss.joint_margin_mm)?)
            } else {
                None
            };
            let scans: Vec<Patch> =
                v.scans.iter().map(|ct| sampling::crop(&ct.data, ct.dims, c, voi)).collect();
            let native = NativeVoi { image, label, spacing: v.ct.spacing };
            let (image, label, spacing, joint, native, scans) = match cfg.loaders.spacing_mm {
                Some(s) if crate::nn::model::needs_resampling(native.spacing, s) => {
                    let (image, label) = onto_training_grid(&native, s)?;
                    check_patch_fits(cfg, id, side_name, image.dims)?;
                    let joint = joint.map(|j| mask_onto_grid(&j, native.spacing, s)).transpose()?;
                    let scans = scans
                        .iter()
                        .map(|p| linear_onto_grid(p, native.spacing, s))
                        .collect::<Result<Vec<_>>>()?;
                    (image, label, s, joint, Some(native), scans)
                }
                _ => (native.image, native.label, native.spacing, joint, None, scans),
            };
            let foreground =
                (0..label.data.len() as u32).filter(|i| label.data[*i as usize] > 0.5).collect();
            samples.push(Sample {
                id: id.clone(),
                side: side_name.clone(),
                image,
                label,
                spacing,
                foreground,
                native,
                joint,
                scans,
            });
        }
    }
    let Some(mut spacing) = spacing else {
        return Err(Error::Config {
            msg: "the data set has no VOI for the configured sides".into(),
        });
    };
    if let Some(s) = samples.first().filter(|s| s.native.is_some()) {
        spacing = s.spacing;
    }
    let prec =
        cfg.training.precision.parse().map_err(|e: Error| Error::Config { msg: e.to_string() })?;
    let device = resolve_device_for(&cfg.training.device, prec)?;
    let config_sha256 = checkpoint::config_sha256(cfg)?;
    Ok(Prepared { samples, ids, folds, device, spacing, config_sha256 })
}

/// The truth of `target` in a loaded joint. (A new target adds its arm here.)
pub fn target_mask(target: Target, v: &VoiCase) -> &Volume {
    match target {
        Target::Mc => &v.mc,
        Target::Tb => &v.tb,
        Target::Nv => &v.nv,
        // Joints samples come from whole heads (`train::joints`), never per-joint VOIs.
        Target::Joints | Target::JointsFine => &v.tb,
    }
}

/// A native VOI resampled onto the training grid of `spacing` mm: the CT linearly (as `segment`
/// resamples its input), the mask as [`mask_onto_grid`].
fn onto_training_grid(native: &NativeVoi, spacing: [f64; 3]) -> Result<(Patch, Patch)> {
    let image = linear_onto_grid(&native.image, native.spacing, spacing)?;
    let label = mask_onto_grid(&native.label, native.spacing, spacing)?;
    Ok((image, label))
}

/// A patch of `from` mm voxels resampled linearly onto `to` mm voxels.
fn linear_onto_grid(p: &Patch, from: [f64; 3], to: [f64; 3]) -> Result<Patch> {
    use crate::io::resample::{resample_to_spacing, Interp};
    let mut v = Volume::zeros(p.dims, from);
    v.data.clone_from(&p.data);
    let r = resample_to_spacing(&v, to, Interp::Linear)?;
    Ok(Patch { data: r.data, dims: r.dims })
}

/// A 0/1 mask resampled linearly onto `to` mm voxels and thresholded at one half.
fn mask_onto_grid(p: &Patch, from: [f64; 3], to: [f64; 3]) -> Result<Patch> {
    let mut m = linear_onto_grid(p, from, to)?;
    binarize(&mut m);
    Ok(m)
}

/// A mask's values as 0/1: foreground where above one half.
fn binarize(m: &mut Patch) {
    m.data.iter_mut().for_each(|x| *x = if *x > 0.5 { 1.0 } else { 0.0 });
}

/// The joint region of a VOI cropped at `corner` to `shape`: the voxels within `margin_mm` of
/// the truth negative volume, 0/1. It spans both faces that bound the joint space (the condyle's
/// top and the fossa's floor) wherever the NV touches them. All 0 when the NV mask is empty.
fn joint_region(
    nv: &Volume,
    corner: [usize; 3],
    shape: [usize; 3],
    margin_mm: f64,
) -> Result<Patch> {
    let cropped = sampling::crop(&nv.data, nv.dims, corner, shape);
    let seeds: Vec<bool> = cropped.data.iter().map(|&x| x > 0.5).collect();
    let mut data = vec![0.0f32; seeds.len()];
    if seeds.iter().any(|&b| b) {
        let d = crate::geometry::edt::distance_to(&seeds, shape, nv.spacing)?;
        for (o, &d) in data.iter_mut().zip(&d) {
            *o = f32::from(u8::from(f64::from(d) <= margin_mm));
        }
    }
    Ok(Patch { data, dims: shape })
}

/// `train_patch` (and `val_patch`) must fit in a VOI on the training grid.
fn check_patch_fits(cfg: &Config, id: &str, side: &str, dims: [usize; 3]) -> Result<()> {
    let l = &cfg.loaders;
    for (name, p) in [("train_patch", Some(l.train_patch)), ("val_patch", l.val_patch)] {
        if let Some(p) = p.filter(|p| (0..3).any(|a| p[a] > dims[a])) {
            return Err(Error::Config {
                msg: format!(
                    "case {id} side {side}: loaders.{name} {p:?} does not fit in the VOI, which is \
                     {dims:?} voxels on the {:?} mm training grid (loaders.spacing_mm)",
                    l.spacing_mm.unwrap_or_default()
                ),
            });
        }
    }
    Ok(())
}

/// The CT file of a joint (for messages).
fn ct_path(ds: &Dataset, id: &str, side: Side) -> PathBuf {
    ds.manifest()
        .cases
        .iter()
        .find(|c| c.id == id)
        .and_then(|c| c.sides.get(&side))
        .map(|s| ds.dir().join(&s.image))
        .unwrap_or_else(|| ds.dir().to_path_buf())
}

fn check_aligned(id: &str, side: &str, ct: &Volume, mask: &Volume) -> Result<()> {
    let close = ct
        .affine
        .iter()
        .flatten()
        .zip(mask.affine.iter().flatten())
        .all(|(a, b)| (a - b).abs() < 1e-3);
    if ct.dims != mask.dims || !close {
        return Err(Error::Config {
            msg: format!(
                "case {id} side {side}: the CT ({:?}) and its mask ({:?}) do not align (shape or affine differ)",
                ct.dims, mask.dims
            ),
        });
    }
    Ok(())
}

/// Fits the config's normalisation on the training joints of a fold: `Normalize` takes their
/// min and max (unless the transform gives them), `CTNormalize` nnU-Net's statistics of their
/// foreground voxels, a per-patch `Standardize` becomes a per-volume z-score at inference, and
/// no normalising transform means none.
///
/// # Errors
/// [`Error::Config`] when the training joints hold no finite (foreground) voxel.
pub fn fit_normalization(cfg: &Config, train: &[&Sample]) -> Result<Normalization> {
    let none = || Error::Config {
        msg: "the training joints have no finite voxel to fit the normalisation on".into(),
    };
    for t in &cfg.transforms.train_raw {
        match t {
            Transform::Normalize { min_value, max_value } => {
                let all = train.iter().flat_map(|s| s.image.data.iter().copied());
                let Some(Normalization::Minmax { min, max }) = Normalization::fit_minmax(all)
                else {
                    return Err(none());
                };
                return Ok(Normalization::Minmax {
                    min: min_value.unwrap_or(min),
                    max: max_value.unwrap_or(max),
                });
            }
            Transform::CtNormalize => {
                let fg: Vec<f32> = train
                    .iter()
                    .flat_map(|s| s.foreground.iter().map(|i| s.image.data[*i as usize]))
                    .collect();
                return Normalization::fit_ct(fg).ok_or_else(none);
            }
            Transform::Standardize => return Ok(Normalization::Zscore),
            _ => {}
        }
    }
    Ok(Normalization::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_joint_region_is_the_nv_grown_by_the_margin() {
        // One NV voxel at (5, 5, 5) of a 0.4 mm grid; a 0.9 mm margin reaches offsets up to
        // |o|^2 = 5 voxels^2 (0.89 mm): two along an axis, (1, 2, 0), but not (1, 2, 2) (1.2 mm).
        let mut nv = Volume::zeros([12, 12, 12], [0.4; 3]);
        nv.data[(5 * 12 + 5) * 12 + 5] = 1.0;
        let r = joint_region(&nv, [1, 1, 1], [10, 10, 10], 0.9).unwrap();
        let at = |i: usize, j: usize, k: usize| r.data[(i * 10 + j) * 10 + k];
        assert_eq!(at(4, 4, 4), 1.0);
        assert_eq!(at(4, 4, 6), 1.0);
        assert_eq!(at(4, 4, 7), 0.0);
        assert_eq!(at(5, 6, 6), 0.0);
        // (0,0,0), (1,0,0) x6, (2,0,0) x6, (1,1,0) x12, (1,1,1) x8, (2,1,0) x24.
        assert_eq!(r.data.iter().filter(|&&x| x == 1.0).count(), 1 + 6 + 6 + 12 + 8 + 24);
        // No NV: no region (the joint term then sits out).
        let none = joint_region(&Volume::zeros([12; 3], [0.4; 3]), [0; 3], [12; 3], 0.9).unwrap();
        assert!(none.data.iter().all(|&x| x == 0.0));
    }
}
