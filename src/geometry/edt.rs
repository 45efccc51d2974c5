//! Exact Euclidean distance transforms with anisotropic spacing, signed distance fields and the
//! feature transform (the index of the nearest seed voxel).
//!
//! Separable: a 1-D scan along `W` (contiguous) gives each voxel its nearest seed in its row; then
//! Felzenszwalb-Huttenlocher lower envelopes of parabolas along `H` and `D` combine rows into
//! planes and planes into the volume. Each pass is parallel over lines with rayon. The strided
//! passes copy lines into a contiguous buffer first: the `D` pass copies, per `j`, the `(D, W)`
//! block of rows `data[.., j, ..]` (contiguous runs of `W`) so memory is read in whole cache lines.
//! Squared distances are stored in f32; envelope intersections are computed in f64.

use rayon::prelude::*;

use super::{check_len, check_spacing};
use crate::Result;

/// Squared distance used for "no seed in reach".
const FAR: f32 = f32::INFINITY;
/// Feature index used where there is no seed at all.
pub const NO_FEATURE: u32 = u32::MAX;

/// Distances and nearest seeds of [`feature_transform`].
#[derive(Clone, Debug)]
pub struct FeatureTransform {
    /// Distance (mm) to the nearest seed; `f32::INFINITY` without seeds.
    pub dist: Vec<f32>,
    /// Linear index of the nearest seed voxel; [`NO_FEATURE`] without seeds.
    pub nearest: Vec<u32>,
}

/// Squared distance (mm^2) from every voxel to the nearest seed voxel centre.
///
/// # Shapes
/// `seeds.len() == dims[0] * dims[1] * dims[2]`, row-major `(D, H, W)`.
///
/// # Errors
/// [`crate::Error::Shape`] for a length mismatch, [`crate::Error::Arg`] for a bad spacing.
pub fn edt_sq(seeds: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Result<Vec<f32>> {
    check_len("edt", seeds.len(), dims)?;
    check_spacing("edt", spacing)?;
    Ok(transform::<false>(seeds, dims, spacing).0)
}

/// Distance (mm) from every voxel to the nearest seed voxel centre (`INFINITY` without seeds).
pub fn distance_to(seeds: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Result<Vec<f32>> {
    let mut d = edt_sq(seeds, dims, spacing)?;
    d.par_iter_mut().for_each(|v| *v = v.sqrt());
    Ok(d)
}

/// scipy's `distance_transform_edt(mask, sampling=spacing)`: for each foreground voxel the
/// distance (mm) to the nearest background voxel, 0 on the background. A mask without background
/// gives `INFINITY` everywhere.
pub fn edt(mask: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Result<Vec<f32>> {
    let bg: Vec<bool> = mask.par_iter().map(|&m| !m).collect();
    distance_to(&bg, dims, spacing)
}

/// Distance (mm) to and linear index of the nearest seed voxel for every voxel. Ties go to one of
/// the nearest seeds.
pub fn feature_transform(
    seeds: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
) -> Result<FeatureTransform> {
    check_len("feature_transform", seeds.len(), dims)?;
    check_spacing("feature_transform", spacing)?;
    let (mut dist, nearest) = transform::<true>(seeds, dims, spacing);
    dist.par_iter_mut().for_each(|v| *v = v.sqrt());
    Ok(FeatureTransform { dist, nearest })
}

/// Signed distance (mm) to a mask's boundary: for a background voxel the distance to the nearest
/// foreground voxel centre, for a foreground voxel minus the distance to the nearest background
/// voxel centre. The zero crossing between two neighbouring voxel centres of different labels is
/// their midpoint, where marching cubes at 0.5 puts the surface. Empty masks give `+INFINITY`,
/// full masks `-INFINITY`.
pub fn signed_distance(mask: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Result<Vec<f32>> {
    let outside = distance_to(mask, dims, spacing)?;
    let inside = edt(mask, dims, spacing)?;
    Ok(mask
        .par_iter()
        .zip(outside.par_iter().zip(inside.par_iter()))
        .map(|(&m, (&o, &i))| if m { -i } else { o })
        .collect())
}

// ---- passes -----------------------------------------------------------------------------------

/// Shares a raw pointer across rayon tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct SyncPtr<T>(*mut T);
// SAFETY: only used by tasks that write disjoint index sets (documented at each use).
unsafe impl<T> Send for SyncPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SyncPtr<T> {}

fn transform<const FT: bool>(
    seeds: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
) -> (Vec<f32>, Vec<u32>) {
    let [d, h, w] = dims;
    let n = d * h * w;
    let mut dist = vec![FAR; n];
    let mut feat = if FT { vec![NO_FEATURE; n] } else { Vec::new() };
    if n == 0 {
        return (dist, feat);
    }
    scan_rows::<FT>(seeds, w, spacing[2] as f32, &mut dist, &mut feat);
    pass_h::<FT>(dims, spacing[1], &mut dist, &mut feat);
    if d > 1 {
        pass_d::<FT>(dims, spacing[0], &mut dist, &mut feat);
    }
    (dist, feat)
}

/// Pass 1 along `W`: two sweeps per row give the nearest seed in the row.
fn scan_rows<const FT: bool>(seeds: &[bool], w: usize, s: f32, dist: &mut [f32], feat: &mut [u32]) {
    let body = |(r, (row, seed)): (usize, (&mut [f32], &[bool])), frow: &mut [u32]| {
        let mut last: Option<usize> = None;
        for k in 0..w {
            if seed[k] {
                last = Some(k);
            }
            if let Some(l) = last {
                let x = (k - l) as f32 * s;
                row[k] = x * x;
                if FT {
                    frow[k] = (r * w + l) as u32;
                }
            }
        }
        last = None;
        for k in (0..w).rev() {
            if seed[k] {
                last = Some(k);
            }
            if let Some(l) = last {
                let x = (l - k) as f32 * s;
                if x * x < row[k] {
                    row[k] = x * x;
                    if FT {
                        frow[k] = (r * w + l) as u32;
                    }
                }
            }
        }
    };
    if FT {
        dist.par_chunks_mut(w)
            .zip(seeds.par_chunks(w))
            .zip(feat.par_chunks_mut(w))
            .enumerate()
            .for_each(|(r, ((row, seed), frow))| body((r, (row, seed)), frow));
    } else {
        dist.par_chunks_mut(w)
            .zip(seeds.par_chunks(w))
            .enumerate()
            .for_each(|(r, (row, seed))| body((r, (row, seed)), &mut []));
    }
}

/// Reusable buffers of the lower-envelope pass for one line of length `n`.
struct Envelope {
    f: Vec<f32>,
    fi: Vec<u32>,
    out: Vec<f32>,
    outi: Vec<u32>,
    v: Vec<usize>,
    z: Vec<f64>,
}

impl Envelope {
    fn new(n: usize) -> Self {
        Envelope {
            f: vec![0.0; n],
            fi: vec![0; n],
            out: vec![0.0; n],
            outi: vec![0; n],
            v: vec![0; n],
            z: vec![0.0; n + 1],
        }
    }

    /// Lower envelope of the parabolas `(x - q s)^2 + f[q]` sampled at `x = p s`: writes `out`
    /// (and `outi`, the feature of the winning parabola, when `FT`). Returns false when nothing
    /// changes (no finite value, or every value 0), so the caller can skip writing back.
    ///
    /// A zero at `b` (a seed on this line) beats every parabola behind it for every voxel beyond
    /// it: `(x - b)^2 <= (x - q)^2 + f[q]` when `b` lies between `q` and `x` and `f[q] >= 0`. So
    /// the line splits at its zeros into independent stretches, each bounded by its two zeros,
    /// and runs of zeros cost nothing: on a sparse mask (distance to the background) almost
    /// every line is all zeros or one short stretch.
    fn run<const FT: bool>(&mut self, s: f64) -> bool {
        let n = self.f.len();
        let mut changed = false;
        let mut p = 0;
        while p < n {
            if self.f[p] == 0.0 {
                self.out[p] = 0.0;
                if FT {
                    self.outi[p] = self.fi[p];
                }
                p += 1;
                continue;
            }
            let a = p;
            while p < n && self.f[p] != 0.0 {
                p += 1;
            }
            let lo = a.saturating_sub(1);
            let hi = (p + 1).min(n);
            changed |= self.stretch::<FT>(s, lo, hi, a, p);
        }
        changed
    }

    /// The envelope of the parabolas at `lo..hi`, written for the voxels `a..b` (within it).
    /// Returns false when the range holds no finite value (the outputs are then infinite).
    fn stretch<const FT: bool>(
        &mut self,
        s: f64,
        lo: usize,
        hi: usize,
        a: usize,
        b: usize,
    ) -> bool {
        let f = &self.f;
        let (v, z) = (&mut self.v, &mut self.z);
        let Some(first) = (lo..hi).find(|&q| f[q].is_finite()) else {
            self.out[a..b].fill(FAR);
            return false;
        };
        let mut k = 0usize;
        v[0] = first;
        z[0] = f64::NEG_INFINITY;
        z[1] = f64::INFINITY;
        for q in first + 1..hi {
            let fq = f[q] as f64;
            if !fq.is_finite() {
                continue;
            }
            let pq = q as f64 * s;
            let hq = fq + pq * pq;
            loop {
                let vk = v[k];
                let pv = vk as f64 * s;
                let sect = (hq - (f[vk] as f64 + pv * pv)) / (2.0 * (pq - pv));
                // z[0] is -inf, so this stops at k = 0 at the latest.
                if sect <= z[k] {
                    k -= 1;
                    continue;
                }
                k += 1;
                v[k] = q;
                z[k] = sect;
                z[k + 1] = f64::INFINITY;
                break;
            }
        }
        k = 0;
        for p in a..b {
            let x = p as f64 * s;
            while z[k + 1] < x {
                k += 1;
            }
            let q = v[k];
            let dx = x - q as f64 * s;
            self.out[p] = (dx * dx + f[q] as f64) as f32;
            if FT {
                self.outi[p] = self.fi[q];
            }
        }
        true
    }
}

/// Pass 2 along `H`, parallel over slices; columns are gathered from the slice.
fn pass_h<const FT: bool>(dims: [usize; 3], s: f64, dist: &mut [f32], feat: &mut [u32]) {
    let [_, h, w] = dims;
    if h < 2 {
        return;
    }
    let body = |plane: &mut [f32], fplane: &mut [u32], env: &mut Envelope| {
        for k in 0..w {
            for j in 0..h {
                env.f[j] = plane[j * w + k];
                if FT {
                    env.fi[j] = fplane[j * w + k];
                }
            }
            if env.run::<FT>(s) {
                for j in 0..h {
                    plane[j * w + k] = env.out[j];
                    if FT {
                        fplane[j * w + k] = env.outi[j];
                    }
                }
            }
        }
    };
    if FT {
        dist.par_chunks_mut(h * w)
            .zip(feat.par_chunks_mut(h * w))
            .for_each_init(|| Envelope::new(h), |env, (p, fp)| body(p, fp, env));
    } else {
        dist.par_chunks_mut(h * w)
            .for_each_init(|| Envelope::new(h), |env, p| body(p, &mut [], env));
    }
}

/// Pass 3 along `D`, parallel over `j`: the `(D, W)` block of rows is copied in whole rows.
fn pass_d<const FT: bool>(dims: [usize; 3], s: f64, dist: &mut [f32], feat: &mut [u32]) {
    let [d, h, w] = dims;
    let dp = SyncPtr(dist.as_mut_ptr());
    let fp = SyncPtr(feat.as_mut_ptr());
    (0..h).into_par_iter().for_each_init(
        || (Envelope::new(d), vec![0f32; d * w], vec![0u32; if FT { d * w } else { 0 }]),
        |(env, block, fblock), j| {
            let (dp, fp) = (dp, fp);
            for i in 0..d {
                let src = (i * h + j) * w;
                // SAFETY: rows (i, j, ..) for this task's j are read and written only by this
                // task; `src + w <= d * h * w` = the buffer length.
                unsafe {
                    std::ptr::copy_nonoverlapping(dp.0.add(src), block.as_mut_ptr().add(i * w), w);
                    if FT {
                        std::ptr::copy_nonoverlapping(
                            fp.0.add(src),
                            fblock.as_mut_ptr().add(i * w),
                            w,
                        );
                    }
                }
            }
            for k in 0..w {
                for i in 0..d {
                    env.f[i] = block[i * w + k];
                    if FT {
                        env.fi[i] = fblock[i * w + k];
                    }
                }
                if env.run::<FT>(s) {
                    for i in 0..d {
                        block[i * w + k] = env.out[i];
                        if FT {
                            fblock[i * w + k] = env.outi[i];
                        }
                    }
                }
            }
            for i in 0..d {
                let dst = (i * h + j) * w;
                // SAFETY: as above: this task owns rows (.., j, ..).
                unsafe {
                    std::ptr::copy_nonoverlapping(block.as_ptr().add(i * w), dp.0.add(dst), w);
                    if FT {
                        std::ptr::copy_nonoverlapping(fblock.as_ptr().add(i * w), fp.0.add(dst), w);
                    }
                }
            }
        },
    );
}
