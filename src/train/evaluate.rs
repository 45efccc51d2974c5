//! Scoring a network on held-out joints: the config's loss (the criterion), Dice and IoU, and the
//! distances (HD, HD95, ASSD in mm), per sample; the test rows and the paper's Table 1.
//!
//! Without `loaders.val_patch` a held-out joint is scored on its whole VOI through
//! [`crate::nn::model::infer`], the code `segment` runs, with the fold's one normalisation: the
//! validation Dice is the Dice a user gets from `segment` on that VOI. With `val_patch` the
//! original's patch grid is scored patch by patch (averaged), as `config.txt` runs do.

use crate::autograd;
use crate::geometry;
use crate::io::normalize::Normalization;
use crate::loss;
use crate::nn::model::{self, InferOptions};
use crate::nn::segment::Blend;
use crate::nn::{Mode, Network};
use crate::train::augment::{self, Patch};
use crate::train::config::Config;
use crate::train::metrics;
use crate::train::sampling;
use crate::train::trainer::Sample;
use crate::volume::Volume;
use crate::{Device, Error, Result, Tensor};

/// Per-batch scores.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scores {
    pub loss: f64,
    pub ce: f64,
    pub dice: f64,
    pub iou: f64,
}

impl Scores {
    /// The scores from the first five values [`criterion_unread`] packs
    /// (`[loss, ce, 1 - dice, dice, iou]`), read from the device in one transfer.
    ///
    /// # Errors
    /// [`Error::Shape`] for fewer than five values; the read's error.
    pub fn read(packed: &Tensor) -> Result<Scores> {
        Self::from_packed(&packed.to_vec()?)
    }

    /// [`Scores::read`] on values already on the host.
    ///
    /// # Errors
    /// [`Error::Shape`] for fewer than five values.
    pub fn from_packed(v: &[f32]) -> Result<Scores> {
        if v.len() < 5 {
            return Err(Error::shape("scores", "[loss, ce, 1 - dice, dice, iou, ...]", v.len()));
        }
        let f = |i: usize| f64::from(v[i]);
        Ok(Scores { loss: f(0), ce: f(1), dice: f(3), iou: f(4) })
    }
}

/// Per patient and side test scores of one fold.
#[derive(Clone, Debug)]
pub struct TestRow {
    pub fold: usize,
    /// The epoch of the weights tested (the fold's best).
    pub final_epoch: usize,
    pub id: String,
    pub side: String,
    pub scores: Scores,
    /// Distances of the prediction to the truth (see [`Distances`]).
    pub dist: Distances,
}

/// Distance scores of one prediction, averaged over a sample's patches.
#[derive(Clone, Copy, Debug, Default)]
pub struct Distances {
    /// The original's Hausdorff distance: all foreground voxels, voxel units, 0 when a mask is
    /// empty.
    pub hd: f64,
    /// Surface Hausdorff distance in millimetres (infinite when exactly one mask is empty).
    pub hd_mm: f64,
    /// 95th percentile surface distance (mm).
    pub hd95_mm: f64,
    /// Average symmetric surface distance (mm).
    pub assd_mm: f64,
}

/// The loss of the config on `probs` against `target`, with the original's logged scores.
///
/// # Shapes
/// `probs (N, D, H, W, 2)`, `target (N, D, H, W)`.
pub fn criterion(cfg: &Config, probs: &Tensor, target: &Tensor) -> Result<(Tensor, Scores)> {
    let (total, scalars) = criterion_unread(cfg, probs, target, None)?;
    Ok((total, Scores::read(&scalars)?))
}

/// [`criterion`] without reading anything: the loss and its scores packed as one tensor
/// `[loss, ce, 1 - dice, dice, iou]` (see [`Scores::read`]) on the probabilities' device, so a
/// training step can add its own scalars and read them all in one transfer. With `joint` (the
/// label inside the joint region, [`loss::IGNORE_INDEX`] outside) the loss adds
/// `loss.joint_w` times the NLL over the joint region; the logged CE stays the whole patch's.
///
/// # Errors
/// As [`criterion`].
pub fn criterion_unread(
    cfg: &Config,
    probs: &Tensor,
    target: &Tensor,
    joint: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let l = &cfg.loss;
    let w = [l.w0, l.w1];
    let ce = loss::nll_probs(probs, target, Some(&w))?;
    let (hard_loss, hard_scores) = loss::hard_dice_scores(probs, target)?;
    let dice_loss = if l.soft_dice { loss::soft_dice(probs, target)? } else { hard_loss };
    let total = match l.loss_type.as_str() {
        "CE" => ce.clone(),
        "D" => dice_loss,
        _ => crate::ops::add(&dice_loss, &crate::ops::scale(&ce, l.dce_w)?)?,
    };
    let total = match joint.filter(|_| l.joint_w > 0.0) {
        Some(j) => {
            let joint_ce = loss::nll_probs(probs, j, Some(&w))?;
            crate::ops::add(&total, &crate::ops::scale(&joint_ce, l.joint_w)?)?
        }
        None => total,
    };
    let scalars = pack(&[&total, &ce, &hard_scores])?;
    Ok((total, scalars))
}

/// The values of several small tensors on one device as one flat tensor there (nothing read,
/// nothing recorded), so the host reads them in one transfer.
///
/// # Errors
/// Those of `concat_channels` (tensors on different devices).
pub fn pack(parts: &[&Tensor]) -> Result<Tensor> {
    let cols: Vec<Tensor> = parts
        .iter()
        .map(|t| t.reshape_detached(vec![1, 1, 1, 1, t.numel()]))
        .collect::<Result<_>>()?;
    let refs: Vec<&Tensor> = cols.iter().collect();
    let packed = autograd::no_grad(|| crate::ops::concat_channels(&refs))?;
    let n = packed.numel();
    packed.reshape_detached(vec![n])
}

/// The validation/test patches of one sample (`val_patch` on the `val_stride` grid), transformed
/// with the test lists.
fn eval_patches(cfg: &Config, s: &Sample, norm: &Normalization) -> Vec<(Patch, Patch)> {
    let dims = s.image.dims;
    let patch = cfg.loaders.val_patch.unwrap_or(dims);
    let stride = cfg.loaders.val_stride.unwrap_or(patch);
    let t = &cfg.transforms;
    sampling::grid(dims, patch, stride)
        .into_iter()
        .map(|c| {
            let mut img = sampling::crop(&s.image.data, dims, c, patch);
            let mut lab = sampling::crop(&s.label.data, dims, c, patch);
            augment::apply_pair(&t.test_raw, &t.test_label, &mut img, &mut lab, norm, 0);
            (img, lab)
        })
        .collect()
}

/// Foreground probabilities of one patch (recording off), checked finite.
fn patch_probs(net: &mut dyn Network, img: &Patch, dev: Device) -> Result<Tensor> {
    let [d, h, w] = img.dims;
    let x = Tensor::from_vec(img.data.clone(), vec![1, d, h, w, 1])?.to_device(dev)?;
    autograd::no_grad(|| net.forward(&x, Mode::Eval))
}

/// The whole VOI of a sample through the inference path, as `(probs (1, D, H, W, 2), mask)`: on
/// the data set's own grid when training resampled it (so the score is `segment`'s).
fn whole_voi_probs(
    cfg: &Config,
    net: &mut dyn Network,
    s: &Sample,
    norm: &Normalization,
    dev: Device,
    phased: bool,
) -> Result<(Tensor, Patch)> {
    let (image, label, spacing) = match &s.native {
        Some(n) => (&n.image, &n.label, n.spacing),
        None => (&s.image, &s.label, s.spacing),
    };
    let mut vol = Volume::zeros(image.dims, spacing);
    vol.data.clone_from(&image.data);
    let opts = InferOptions {
        normalization: norm,
        spacing_mm: Some(s.spacing),
        window: cfg.window(),
        overlap: cfg.loaders.overlap,
        blend: Blend::Gaussian,
        phased,
    };
    let pred = model::infer(net, &vol, &opts)?;
    let [d, h, w] = image.dims;
    let mut p = Vec::with_capacity(2 * vol.data.len());
    for (b, f) in pred.probs[0].data.iter().zip(&pred.probs[1].data) {
        p.extend_from_slice(&[*b, *f]);
    }
    Ok((Tensor::from_vec(p, vec![1, d, h, w, 2])?.to_device(dev)?, label.clone()))
}

/// How thoroughly [`evaluate`] scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scoring {
    /// After every epoch: overlap scores on one lattice, which is all the ranking of epochs
    /// needs; the shifted lattices of `segment` would make each validation up to eight passes.
    Epoch,
    /// The test rows, the card and `eval`: `segment`'s own path (its shifted lattices) and the
    /// surface distances too, so the card's Dice is the Dice a user gets.
    Final,
}

/// Scores (and, for [`Scoring::Final`], distances) of `net` on each sample, averaged over its
/// patches (one "patch", the whole VOI, without `val_patch`).
///
/// # Errors
/// [`Error::Diverged`] when the network's output is not finite (no score is made of it); any
/// op's error.
pub fn evaluate(
    cfg: &Config,
    net: &mut dyn Network,
    samples: &[&Sample],
    norm: &Normalization,
    dev: Device,
    scoring: Scoring,
) -> Result<Vec<(Scores, Distances)>> {
    let thorough = scoring == Scoring::Final;
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        let pairs: Vec<(Tensor, Patch)> = if cfg.loaders.val_patch.is_some() {
            eval_patches(cfg, s, norm)
                .into_iter()
                .map(|(img, lab)| Ok((patch_probs(net, &img, dev)?, lab)))
                .collect::<Result<_>>()?
        } else {
            vec![whole_voi_probs(cfg, net, s, norm, dev, thorough).map_err(as_divergence)?]
        };
        let mut acc = (Scores::default(), Distances::default());
        for (probs, lab) in &pairs {
            let p = probs.to_device(Device::Cpu)?.to_vec()?;
            if let Some(n) = Some(p.iter().filter(|v| !v.is_finite()).count()).filter(|n| *n > 0) {
                return Err(Error::Diverged(format!(
                    "the network gives {n} non-finite probabilities on held-out joint {} {}",
                    s.id, s.side
                )));
            }
            let [d, h, w] = lab.dims;
            let y = Tensor::from_vec(lab.data.clone(), vec![1, d, h, w])?.to_device(dev)?;
            let (_, sc) = autograd::no_grad(|| criterion(cfg, probs, &y))?;
            add_scores(&mut acc.0, &sc);
            if thorough {
                let pred = metrics::argmax_fg(&p);
                let gt: Vec<bool> = lab.data.iter().map(|v| *v > 0.5).collect();
                let spacing = s.native.as_ref().map_or(s.spacing, |n| n.spacing);
                let m = geometry::metrics::segmentation_metrics(&pred, &gt, lab.dims, spacing)?;
                acc.1.hd += m.hd_original_vox;
                acc.1.hd_mm += m.hd_mm;
                acc.1.hd95_mm += m.hd95_mm;
                acc.1.assd_mm += m.assd_mm;
            }
        }
        let n = pairs.len().max(1) as f64;
        let d = acc.1;
        let dist = Distances {
            hd: d.hd / n,
            hd_mm: d.hd_mm / n,
            hd95_mm: d.hd95_mm / n,
            assd_mm: d.assd_mm / n,
        };
        out.push((div_scores(acc.0, n), dist));
    }
    Ok(out)
}

/// Non-finite network output found by the inference path is a divergence during training.
fn as_divergence(e: Error) -> Error {
    match e {
        Error::Arg { op: "predict", msg } if msg.contains("non-finite") => Error::Diverged(msg),
        e => e,
    }
}

pub fn fmt_f(v: f64) -> String {
    format!("{v:.6}")
}

/// A test row as CSV fields (`HD` in voxels as the original, then `HD_mm`, `HD95_mm`,
/// `ASSD_mm`).
pub fn test_fields(r: &TestRow) -> Vec<String> {
    vec![
        r.fold.to_string(),
        r.final_epoch.to_string(),
        r.id.clone(),
        r.side.clone(),
        fmt_f(r.scores.loss),
        fmt_f(r.scores.ce),
        fmt_f(r.scores.dice),
        fmt_f(r.scores.iou),
        fmt_f(r.dist.hd),
        fmt_f(r.dist.hd_mm),
        fmt_f(r.dist.hd95_mm),
        fmt_f(r.dist.assd_mm),
    ]
}

pub fn add_scores(a: &mut Scores, b: &Scores) {
    a.loss += b.loss;
    a.ce += b.ce;
    a.dice += b.dice;
    a.iou += b.iou;
}

pub fn div_scores(a: Scores, n: f64) -> Scores {
    Scores { loss: a.loss / n, ce: a.ce / n, dice: a.dice / n, iou: a.iou / n }
}

/// Mean of a column of test rows (NaN when there are none).
pub fn mean_of(rows: &[TestRow], f: fn(&TestRow) -> f64) -> f64 {
    metrics::mean_std(&rows.iter().map(f).collect::<Vec<_>>()).0
}

/// Means and population standard deviations of the test rows in the shape of the paper's Table 1
/// (Dice and IoU in percent), as Markdown.
pub fn table_1(model: &str, loss_type: &str, target: &str, rows: &[TestRow]) -> String {
    let col = |f: fn(&TestRow) -> f64| metrics::mean_std(&rows.iter().map(f).collect::<Vec<_>>());
    let mut s = format!("| Obj. | Score | {model} {loss_type} |\n|---|---|---|\n");
    type Column = fn(&TestRow) -> f64;
    let lines: [(&str, Column, f64); 7] = [
        ("DICE", |r| r.scores.dice, 100.0),
        ("IoU", |r| r.scores.iou, 100.0),
        ("CE", |r| r.scores.ce, 1.0),
        ("HD (voxels)", |r| r.dist.hd, 1.0),
        ("HD (mm)", |r| r.dist.hd_mm, 1.0),
        ("HD95 (mm)", |r| r.dist.hd95_mm, 1.0),
        ("ASSD (mm)", |r| r.dist.assd_mm, 1.0),
    ];
    for (name, f, k) in lines {
        let (m, sd) = col(f);
        s.push_str(&format!("| {target} | {name} | {:.1} ± {:.1} |\n", m * k, sd * k));
    }
    s.push_str(&format!("\n{} joints (patient, side).\n", rows.len()));
    s
}

#[cfg(test)]
mod pack_tests {
    use super::*;

    /// The step's one read: scalars and a score vector packed in order, read back as scores.
    #[test]
    fn packed_scalars_read_back_in_order() {
        let (a, b) = (Tensor::scalar(0.5), Tensor::scalar(0.25));
        let hard = Tensor::from_vec(vec![0.2, 0.8, 0.6], [3]).unwrap();
        let p = pack(&[&a, &b, &hard, &Tensor::scalar(9.0)]).unwrap();
        assert_eq!(p.to_vec().unwrap(), [0.5, 0.25, 0.2, 0.8, 0.6, 9.0]);
        let s = Scores::read(&p).unwrap();
        assert_eq!(
            (s.loss, s.ce, s.dice, s.iou),
            (0.5, 0.25, f64::from(0.8f32), f64::from(0.6f32))
        );
        assert!(Scores::from_packed(&[1.0; 4]).is_err());
    }
}
