//! Data augmentation on 3-D patches, as the original's `transforms_3d.py` (after
//! wolny/pytorch-3dunet) does it: Normalize, Standardize, RandomFlip, RandomRotate,
//! ElasticDeformation, RandomContrast, each with its `execution_probability`.
//!
//! **Image and label move together.** The original gives every transform object its own random
//! state seeded with the same number, so the raw list's RandomFlip and the label list's RandomFlip
//! draw the same numbers. Here the stream of the n-th transform named X in a list is seeded by
//! `(sample seed, X, n)`: the same pairing, with no global state, so a sample is reproducible
//! from its seed alone. [`check_pairing`] rejects configs whose raw and label geometric transforms
//! would not draw alike (different axes, angles or probabilities).
//!
//! Differences from the original, deliberately: spline orders above 1 use trilinear
//! interpolation (0 stays nearest, which is what labels need); rotations of labels are always
//! nearest with fill 0 (the original fills labels with -1, which wraps to 255 in its uint8 masks).

use serde::Deserialize;
use serde_json::Value;

use crate::io::normalize::Normalization;
use crate::train::rng::{mix_seed, str_seed, Rng};
use crate::{Error, Result};

/// How samples outside the volume are filled (scipy.ndimage's `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Boundary {
    /// The fill value (for images the bottom of the normalised range, -1 for Normalize; 0 for
    /// labels).
    Constant,
    /// The edge voxel repeated.
    Nearest,
    /// Half-sample symmetric: `d c b a | a b c d | d c b a`.
    Reflect,
    /// Whole-sample symmetric: `d c b | a b c d | c b a`.
    Mirror,
    /// Periodic.
    Wrap,
}

/// One transform with its parameters (the config's `{"name": ..., ...}` objects).
#[derive(Clone, Debug, PartialEq)]
pub enum Transform {
    /// Min-max to `[-1, 1]` with the training cases' min and max (or the given ones), fitted once
    /// per fold (see [`crate::io::normalize::Normalization`]).
    Normalize { min_value: Option<f32>, max_value: Option<f32> },
    /// nnU-Net's CT normalisation (`{"name": "CTNormalize"}`), fitted once per fold on the
    /// training cases' foreground voxels.
    CtNormalize,
    /// Zero mean, unit std over the patch (as the original does, ignoring given values).
    Standardize,
    /// Flip along each listed axis with probability `p`.
    RandomFlip { axes: Vec<usize>, p: f64 },
    /// Rotation by an integer angle in `[-angle_spectrum, angle_spectrum)` degrees in a plane
    /// picked from `axes`, about the patch centre, same shape.
    RandomRotate {
        angle_spectrum: i64,
        axes: Vec<[usize; 2]>,
        mode: Boundary,
        order: usize,
        p: f64,
    },
    /// Smooth random displacement fields (Gaussian-filtered normal noise, `sigma` voxels, times
    /// `alpha` voxels), sampled with `spline_order` and reflecting boundaries.
    ElasticDeformation { spline_order: usize, alpha: f64, sigma: f64, p: f64 },
    /// `mean + a * (x - mean)` clipped to `[-1, 1]`, `a` uniform in `alpha`.
    RandomContrast { alpha: [f64; 2], p: f64 },
}

/// The transform names a config may use.
pub const NAMES: [&str; 7] = [
    "Normalize",
    "CTNormalize",
    "Standardize",
    "RandomFlip",
    "RandomRotate",
    "ElasticDeformation",
    "RandomContrast",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NormalizeCfg {
    #[serde(default)]
    min_value: Option<f32>,
    #[serde(default)]
    max_value: Option<f32>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyCfg {}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StandardizeCfg {
    #[serde(default)]
    #[allow(dead_code)] // accepted like the original, which recomputes them per patch
    mean: Option<f32>,
    #[serde(default)]
    #[allow(dead_code)]
    std: Option<f32>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlipCfg {
    #[serde(default = "d_flip_axes")]
    axes: Vec<usize>,
    #[serde(default = "d_half")]
    execution_probability: f64,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateCfg {
    #[serde(default = "d_angle")]
    angle_spectrum: i64,
    #[serde(default)]
    axes: Option<Vec<[usize; 2]>>,
    #[serde(default = "d_constant")]
    mode: Boundary,
    #[serde(default)]
    order: usize,
    #[serde(default = "d_one")]
    execution_probability: f64,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ElasticCfg {
    spline_order: usize,
    #[serde(default = "d_alpha")]
    alpha: f64,
    #[serde(default = "d_sigma")]
    sigma: f64,
    #[serde(default = "d_tenth")]
    execution_probability: f64,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContrastCfg {
    #[serde(default = "d_contrast")]
    alpha: [f64; 2],
    #[serde(default = "d_tenth")]
    execution_probability: f64,
}
fn d_flip_axes() -> Vec<usize> {
    vec![1]
}
fn d_half() -> f64 {
    0.5
}
fn d_tenth() -> f64 {
    0.1
}
fn d_one() -> f64 {
    1.0
}
fn d_angle() -> i64 {
    10
}
fn d_constant() -> Boundary {
    Boundary::Constant
}
fn d_alpha() -> f64 {
    15.0
}
fn d_sigma() -> f64 {
    3.0
}
fn d_contrast() -> [f64; 2] {
    [0.5, 1.0]
}

/// Parses one `{"name": ..., params}` object. Unknown names and unknown parameters are errors
/// that list the valid ones.
pub fn parse_transform(v: &Value, _is_label: bool) -> Result<Transform> {
    let cfg = |msg: String| Error::Config { msg };
    let mut obj =
        v.as_object().cloned().ok_or_else(|| cfg(format!("expected an object, got {v}")))?;
    let name = match obj.remove("name") {
        Some(Value::String(s)) => s,
        _ => return Err(cfg("missing \"name\"".into())),
    };
    let rest = Value::Object(obj);
    fn de<T: serde::de::DeserializeOwned>(name: &str, v: Value) -> Result<T> {
        serde_json::from_value(v).map_err(|e| Error::Config { msg: format!("{name}: {e}") })
    }
    let prob = |p: f64| {
        if (0.0..=1.0).contains(&p) {
            Ok(p)
        } else {
            Err(cfg(format!("{name}: execution_probability {p} is not in [0, 1]")))
        }
    };
    let t = match name.as_str() {
        "Normalize" => {
            let c: NormalizeCfg = de(&name, rest)?;
            if let (Some(lo), Some(hi)) = (c.min_value, c.max_value) {
                if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
                    return Err(cfg(format!("Normalize: max_value {hi} <= min_value {lo}")));
                }
            }
            Transform::Normalize { min_value: c.min_value, max_value: c.max_value }
        }
        "CTNormalize" => {
            let _: EmptyCfg = de(&name, rest)?;
            Transform::CtNormalize
        }
        "Standardize" => {
            let _: StandardizeCfg = de(&name, rest)?;
            Transform::Standardize
        }
        "RandomFlip" => {
            let c: FlipCfg = de(&name, rest)?;
            if c.axes.iter().any(|a| *a > 2) {
                return Err(cfg(format!("RandomFlip: axes {:?} must be 0, 1 or 2", c.axes)));
            }
            Transform::RandomFlip { axes: c.axes, p: prob(c.execution_probability)? }
        }
        "RandomRotate" => {
            let c: RotateCfg = de(&name, rest)?;
            let axes = c.axes.unwrap_or_else(|| vec![[1, 0], [2, 1], [2, 0]]);
            if axes.is_empty() || axes.iter().any(|[a, b]| a == b || *a > 2 || *b > 2) {
                return Err(cfg(format!(
                    "RandomRotate: axes {axes:?} must be pairs of distinct 0..2"
                )));
            }
            if c.angle_spectrum < 0 || c.order > 5 {
                return Err(cfg("RandomRotate: angle_spectrum >= 0 and order 0..=5".into()));
            }
            Transform::RandomRotate {
                angle_spectrum: c.angle_spectrum,
                axes,
                mode: c.mode,
                order: c.order,
                p: prob(c.execution_probability)?,
            }
        }
        "ElasticDeformation" => {
            let c: ElasticCfg = de(&name, rest)?;
            if c.spline_order > 5
                || c.sigma.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
                || c.alpha < 0.0
            {
                return Err(cfg(
                    "ElasticDeformation: spline_order 0..=5, sigma > 0, alpha >= 0".into()
                ));
            }
            Transform::ElasticDeformation {
                spline_order: c.spline_order,
                alpha: c.alpha,
                sigma: c.sigma,
                p: prob(c.execution_probability)?,
            }
        }
        "RandomContrast" => {
            let c: ContrastCfg = de(&name, rest)?;
            if c.alpha[0] > c.alpha[1] {
                return Err(cfg(format!("RandomContrast: alpha {:?} is not [min, max]", c.alpha)));
            }
            Transform::RandomContrast { alpha: c.alpha, p: prob(c.execution_probability)? }
        }
        other => {
            return Err(cfg(format!("unknown transform `{other}`, expected one of {NAMES:?}")))
        }
    };
    Ok(t)
}

impl Transform {
    /// The config name.
    pub fn name(&self) -> &'static str {
        match self {
            Transform::Normalize { .. } => "Normalize",
            Transform::CtNormalize => "CTNormalize",
            Transform::Standardize => "Standardize",
            Transform::RandomFlip { .. } => "RandomFlip",
            Transform::RandomRotate { .. } => "RandomRotate",
            Transform::ElasticDeformation { .. } => "ElasticDeformation",
            Transform::RandomContrast { .. } => "RandomContrast",
        }
    }

    /// Whether it moves voxels (and so must be applied to the label as well).
    pub fn is_geometric(&self) -> bool {
        matches!(
            self,
            Transform::RandomFlip { .. }
                | Transform::RandomRotate { .. }
                | Transform::ElasticDeformation { .. }
        )
    }

    /// The parameters that decide its random draws (what raw and label must share).
    fn draw_key(&self) -> String {
        match self {
            Transform::RandomFlip { axes, p } => format!("RandomFlip axes {axes:?} p {p}"),
            Transform::RandomRotate { angle_spectrum, axes, p, .. } => {
                format!("RandomRotate angle_spectrum {angle_spectrum} axes {axes:?} p {p}")
            }
            Transform::ElasticDeformation { alpha, sigma, p, .. } => {
                format!("ElasticDeformation alpha {alpha} sigma {sigma} p {p}")
            }
            t => t.name().to_string(),
        }
    }
}

/// Checks that the label list applies the same geometric transforms, in the same order, with the
/// same random parameters, as the raw list (else image and mask would no longer align).
pub fn check_pairing(raw: &[Transform], label: &[Transform]) -> std::result::Result<(), String> {
    let geo = |l: &[Transform]| -> Vec<String> {
        l.iter().filter(|t| t.is_geometric()).map(|t| t.draw_key()).collect()
    };
    let (r, l) = (geo(raw), geo(label));
    if r != l {
        return Err(format!(
            "the raw and label lists must have the same geometric transforms with the same axes, \
             angles, alpha, sigma and probabilities, in the same order (raw: {r:?}, label: {l:?})"
        ));
    }
    if let Some(t) = label.iter().find(|t| !t.is_geometric()) {
        return Err(format!("label transforms must be geometric, got {}", t.name()));
    }
    Ok(())
}

/// A 3-D array being transformed: `data` row-major over `dims` (D, H, W).
#[derive(Clone, Debug, PartialEq)]
pub struct Patch {
    pub data: Vec<f32>,
    pub dims: [usize; 3],
}

/// Applies a raw list to the image and a label list to the label, paired as the module docs say.
/// `norm` is the fold's fitted normalisation: what `Normalize` and `CTNormalize` apply.
pub fn apply_pair(
    raw: &[Transform],
    label: &[Transform],
    image: &mut Patch,
    mask: &mut Patch,
    norm: &Normalization,
    seed: u64,
) {
    apply_list(raw, image, norm, seed, false);
    apply_list(label, mask, norm, seed, true);
}

/// Applies one list; `is_label` forces nearest sampling and fill 0.
pub fn apply_list(
    list: &[Transform],
    x: &mut Patch,
    norm: &Normalization,
    seed: u64,
    is_label: bool,
) {
    let mut seen: Vec<&str> = Vec::new();
    for t in list {
        let n = seen.iter().filter(|s| **s == t.name()).count() as u64;
        seen.push(t.name());
        let mut rng = Rng::new(mix_seed(&[seed, str_seed(t.name()), n]));
        apply_one(t, x, norm, &mut rng, is_label);
    }
}

fn apply_one(t: &Transform, x: &mut Patch, norm: &Normalization, rng: &mut Rng, is_label: bool) {
    match t {
        // One fitted mapping for the whole fold, the one the model card carries.
        Transform::Normalize { .. } | Transform::CtNormalize => norm.apply(&mut x.data),
        Transform::Standardize => {
            let n = x.data.len().max(1) as f64;
            let mean = x.data.iter().map(|v| *v as f64).sum::<f64>() / n;
            let var = x.data.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
            let std = var.sqrt().max(1e-6);
            x.data.iter_mut().for_each(|v| *v = ((*v as f64 - mean) / std) as f32);
        }
        Transform::RandomFlip { axes, p } => {
            for &axis in axes {
                if rng.uniform() < *p {
                    flip(x, axis);
                }
            }
        }
        Transform::RandomRotate { angle_spectrum, axes, mode, order, p } => {
            if *p < 1.0 && rng.uniform() >= *p {
                return;
            }
            let plane = axes[rng.below(axes.len())];
            let angle = rng.int_range(-angle_spectrum, *angle_spectrum);
            let (order, mode, cval) =
                if is_label { (0, Boundary::Constant, 0.0) } else { (*order, *mode, norm.floor()) };
            rotate(x, plane, angle as f64, order, mode, cval);
        }
        Transform::ElasticDeformation { spline_order, alpha, sigma, p } => {
            if rng.uniform() >= *p {
                return;
            }
            let order = if is_label { 0 } else { *spline_order };
            elastic(x, rng, *alpha, *sigma, order);
        }
        Transform::RandomContrast { alpha, p } => {
            if rng.uniform() >= *p {
                return;
            }
            let a = rng.uniform_range(alpha[0], alpha[1]) as f32;
            let mean =
                (x.data.iter().map(|v| *v as f64).sum::<f64>() / x.data.len().max(1) as f64) as f32;
            x.data.iter_mut().for_each(|v| *v = (mean + a * (*v - mean)).clamp(-1.0, 1.0));
        }
    }
}

/// Reverses the order along `axis`.
pub fn flip(x: &mut Patch, axis: usize) {
    let [d, h, w] = x.dims;
    let src = x.data.clone();
    for i in 0..d {
        for j in 0..h {
            for k in 0..w {
                let (si, sj, sk) = match axis {
                    0 => (d - 1 - i, j, k),
                    1 => (i, h - 1 - j, k),
                    _ => (i, j, w - 1 - k),
                };
                x.data[(i * h + j) * w + k] = src[(si * h + sj) * w + sk];
            }
        }
    }
}

/// Maps an integer coordinate into `[0, n)` by the boundary rule; `None` means "use the fill".
fn wrap_index(i: i64, n: usize, mode: Boundary) -> Option<usize> {
    let n = n as i64;
    if (0..n).contains(&i) {
        return Some(i as usize);
    }
    let r = match mode {
        Boundary::Constant => return None,
        Boundary::Nearest => i.clamp(0, n - 1),
        Boundary::Wrap => i.rem_euclid(n),
        Boundary::Reflect => {
            let m = i.rem_euclid(2 * n);
            if m < n {
                m
            } else {
                2 * n - 1 - m
            }
        }
        Boundary::Mirror => {
            if n == 1 {
                0
            } else {
                let m = i.rem_euclid(2 * n - 2);
                if m < n {
                    m
                } else {
                    2 * n - 2 - m
                }
            }
        }
    };
    Some(r as usize)
}

/// Samples `x` at a real coordinate: nearest for order 0, trilinear otherwise.
fn sample(x: &Patch, c: [f64; 3], order: usize, mode: Boundary, cval: f32) -> f32 {
    let [d, h, w] = x.dims;
    let at = |i: i64, j: i64, k: i64| -> f32 {
        match (wrap_index(i, d, mode), wrap_index(j, h, mode), wrap_index(k, w, mode)) {
            (Some(i), Some(j), Some(k)) => x.data[(i * h + j) * w + k],
            _ => cval,
        }
    };
    if order == 0 {
        return at(c[0].round() as i64, c[1].round() as i64, c[2].round() as i64);
    }
    let f = [c[0].floor(), c[1].floor(), c[2].floor()];
    let t = [c[0] - f[0], c[1] - f[1], c[2] - f[2]];
    let b = [f[0] as i64, f[1] as i64, f[2] as i64];
    let mut acc = 0.0f64;
    for corner in 0..8 {
        let o = [(corner >> 2) & 1, (corner >> 1) & 1, corner & 1];
        let wgt: f64 = (0..3).map(|a| if o[a] == 1 { t[a] } else { 1.0 - t[a] }).product();
        if wgt != 0.0 {
            acc += wgt * at(b[0] + o[0] as i64, b[1] + o[1] as i64, b[2] + o[2] as i64) as f64;
        }
    }
    acc as f32
}

/// Rotates by `deg` degrees in the plane of `plane` about the centre, keeping the shape
/// (scipy.ndimage.rotate with `reshape=False`).
pub fn rotate(x: &mut Patch, plane: [usize; 2], deg: f64, order: usize, mode: Boundary, cval: f32) {
    if deg == 0.0 {
        return;
    }
    let [d, h, w] = x.dims;
    let centre = [(d as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0];
    let (s, c) = deg.to_radians().sin_cos();
    let [a, b] = plane;
    let mut out = vec![0.0f32; x.data.len()];
    for i in 0..d {
        for j in 0..h {
            for k in 0..w {
                let p = [i as f64, j as f64, k as f64];
                let (u, v) = (p[a] - centre[a], p[b] - centre[b]);
                // The inverse rotation maps each output voxel to where it came from.
                let mut q = p;
                q[a] = centre[a] + c * u + s * v;
                q[b] = centre[b] - s * u + c * v;
                out[(i * h + j) * w + k] = sample(x, q, order, mode, cval);
            }
        }
    }
    x.data = out;
}

/// 1-D Gaussian kernel truncated at 4 sigma (scipy's default), normalised.
fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let r = (4.0 * sigma + 0.5) as i64;
    let k: Vec<f64> = (-r..=r).map(|i| (-0.5 * (i as f64 / sigma).powi(2)).exp()).collect();
    let s: f64 = k.iter().sum();
    k.into_iter().map(|v| v / s).collect()
}

/// Separable Gaussian filter with zeros outside (scipy's `mode="constant", cval=0`).
fn gaussian_filter(f: &mut [f64], dims: [usize; 3], sigma: f64) {
    let k = gaussian_kernel(sigma);
    let r = (k.len() / 2) as i64;
    let strides = [dims[1] * dims[2], dims[2], 1];
    for axis in 0..3 {
        let n = dims[axis] as i64;
        let src = f.to_vec();
        for (idx, out) in f.iter_mut().enumerate() {
            let pos = (idx / strides[axis] % dims[axis]) as i64;
            let base = idx as i64 - pos * strides[axis] as i64;
            let mut acc = 0.0;
            for (t, kv) in k.iter().enumerate() {
                let q = pos + t as i64 - r;
                if (0..n).contains(&q) {
                    acc += kv * src[(base + q * strides[axis] as i64) as usize];
                }
            }
            *out = acc;
        }
    }
}

/// Elastic deformation: three smoothed normal displacement fields, drawn z, y, x in turn.
fn elastic(x: &mut Patch, rng: &mut Rng, alpha: f64, sigma: f64, order: usize) {
    let n = x.data.len();
    let mut fields = Vec::with_capacity(3);
    for _ in 0..3 {
        let mut f: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        gaussian_filter(&mut f, x.dims, sigma);
        f.iter_mut().for_each(|v| *v *= alpha);
        fields.push(f);
    }
    let [d, h, w] = x.dims;
    let mut out = vec![0.0f32; n];
    for i in 0..d {
        for j in 0..h {
            for k in 0..w {
                let idx = (i * h + j) * w + k;
                let q = [
                    i as f64 + fields[0][idx],
                    j as f64 + fields[1][idx],
                    k as f64 + fields[2][idx],
                ];
                out[idx] = sample(x, q, order, Boundary::Reflect, 0.0);
            }
        }
    }
    x.data = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_modes_match_scipy() {
        // scipy: reflect of index -1 in n=4 is 0, mirror is 1; wrap is 3.
        assert_eq!(wrap_index(-1, 4, Boundary::Reflect), Some(0));
        assert_eq!(wrap_index(-1, 4, Boundary::Mirror), Some(1));
        assert_eq!(wrap_index(-1, 4, Boundary::Wrap), Some(3));
        assert_eq!(wrap_index(5, 4, Boundary::Nearest), Some(3));
        assert_eq!(wrap_index(4, 4, Boundary::Constant), None);
    }

    #[test]
    fn rotate_90_moves_an_axis_onto_another() {
        let dims = [1, 3, 3];
        let mut x = Patch { data: (0..9).map(|v| v as f32).collect(), dims };
        rotate(&mut x, [1, 2], 90.0, 0, Boundary::Constant, -1.0);
        // The centre stays; four quarter turns give the identity.
        assert_eq!(x.data[4], 4.0);
        for _ in 0..3 {
            rotate(&mut x, [1, 2], 90.0, 0, Boundary::Constant, -1.0);
        }
        assert_eq!(x.data, (0..9).map(|v| v as f32).collect::<Vec<_>>());
    }
}
