//! Localisation: from a whole-head CT to the two temporomandibular joints and a volume of
//! interest (VOI) around each.
//!
//! Three parts, each usable alone:
//! 1. **The coarse head** ([`coarse_head`], [`CoarseHeads`]): the CT, in any orientation,
//!    box-averaged onto an axis-aligned RAS canvas of [`CANVAS`] voxels of [`COARSE_MM`] centred
//!    on the field of view (as in training; a larger field of view is cropped to it, air fills
//!    what lies outside the scan). Box averaging (not point sampling)
//!    keeps a 0.4 mm scan from aliasing into noise; a CT coarser than the grid is sampled
//!    trilinearly instead.
//! 2. **Joints from a probability map** ([`joints_from_probs`]): a pure function of the network's
//!    condylar-head probability on that grid and the CT. The components above the threshold are
//!    candidates; the left-right pair of greatest probability mass (60-150 mm apart, joined by a
//!    line near world x) wins over any single stronger blob (the network's false hits sit on the
//!    teeth and mandibular body, near the midline); a lone candidate is kept only well to one
//!    side of the head's midline. Sides are named from world x (RAS: the patient's left has the
//!    lower x). Each centre is refined by mean shift over the map ([`refine_centre`]). Whatever
//!    is refused (too small, at the edge of the scan, no pair, near the midline) is reported.
//! 3. **The VOI** ([`voi_grid_around`], [`cut_voi`]): the same box `synth` renders its VOIs on
//!    (size, 0.4 mm spacing, raised [`VOI_RAISE_MM`] above the condyle centre), resampled from
//!    the CT. `synth` calls [`voi_grid_around`] itself, so there is one definition.
//!
//! [`localize`] runs a network ([`JointNet`]) between 1 and 2, and again on eight views of the
//! canvas tilted by a few degrees and shifted by half a coarse voxel ([`view_poses`]),
//! averaging the refined centres (test-time augmentation); then it cuts the VOIs.

use rayon::prelude::*;
use serde::Serialize;

use crate::geometry::components::{self, Connectivity};
use crate::io::nifti::{generated_header, DataType};
use crate::io::normalize::Normalization;
use crate::io::orientation::{self, Affine};
use crate::io::Volume;
use crate::nn::model::{LoadedModel, ModelOverrides};
use crate::nn::Arch;
use crate::synth::phantom::Grid;
use crate::synth::Side;
use crate::tensor::Device;
use crate::{Error, Result};

pub mod fine;
pub use fine::{FineSource, FINE_CROP, FINE_MM, FINE_TARGET};

/// Voxel size (mm) of the grid the localisation network sees.
pub const COARSE_MM: f64 = 4.0;
/// Smallest coarse grid (voxels along x, y, z): 192 x 256 x 256 mm, a whole head. The network is
/// trained on exactly this shape; larger fields of view get a larger grid.
pub const CANVAS: [usize; 3] = [48, 64, 64];
/// Coarse grid extents are multiples of this (the V-Net's size multiple; the U-Net's 8 divides it).
const GRID_MULTIPLE: usize = 16;
/// Bin-boundary tolerance (coarse voxels) of [`coarse_head`]'s box averaging.
const TIE_EPS: f64 = 1e-6;
/// HU of whatever lies outside the scanned field of view.
pub const AIR_HU: f32 = -1024.0;
/// The HU window the network input is scaled from: `[lo, hi]` maps to `[-1, 1]`, clipped.
pub const HU_WINDOW: (f32, f32) = (-1000.0, 2000.0);
/// Spacing of the per-joint VOIs (mm): the data set contract of `synth`.
pub const VOI_SPACING_MM: f64 = 0.4;
/// Default VOI size in voxels along x, y, z (`synth`'s default).
pub const VOI_DIMS: [usize; 3] = [120, 150, 70];
/// The VOI centre sits this far above the condylar head's centre, so the fossa roof fits.
pub const VOI_RAISE_MM: f64 = 2.0;

/// The box a VOI is sampled on: `dims` voxels of [`VOI_SPACING_MM`], centred
/// [`VOI_RAISE_MM`] along `up` (a unit vector, the patient's superior direction; world +z for a
/// scan whose pose is unknown) above `center_ras_mm`.
pub fn voi_grid_around(center_ras_mm: [f64; 3], up: [f64; 3], dims: [usize; 3]) -> Grid {
    let c = [0, 1, 2].map(|a| center_ras_mm[a] + VOI_RAISE_MM * up[a]);
    Grid::centered(c, dims, [VOI_SPACING_MM; 3])
}

/// The default-size VOI around the condyle centre `center_ras_mm`, resampled (trilinear) from
/// `ct`; voxels outside the scan are air ([`AIR_HU`]). See [`cut_voi_with`].
///
/// # Errors
/// As [`cut_voi_with`].
pub fn cut_voi(ct: &Volume, center_ras_mm: [f64; 3]) -> Result<Volume> {
    cut_voi_with(ct, center_ras_mm, VOI_DIMS)
}

/// The VOI of `dims` voxels around `center_ras_mm` ([`voi_grid_around`] with world +z up),
/// resampled trilinearly from `ct` whatever its orientation, rounded to whole HU in
/// [-1024, 3071]. The result has a diagonal RAS affine and an int16 header, like `synth`'s VOIs.
///
/// # Errors
/// [`Error::Arg`] for an empty CT, a singular affine or a non-finite centre.
pub fn cut_voi_with(ct: &Volume, center_ras_mm: [f64; 3], dims: [usize; 3]) -> Result<Volume> {
    if center_ras_mm.iter().any(|v| !v.is_finite()) {
        return Err(Error::arg("cut_voi", format!("centre {center_ras_mm:?} is not finite")));
    }
    let grid = voi_grid_around(center_ras_mm, [0.0, 0.0, 1.0], dims);
    let sampler = Sampler::new(ct)?;
    let mut data = vec![0f32; grid.len()];
    let [_, h, w] = grid.dims;
    data.par_chunks_mut(h * w).enumerate().for_each(|(i, slab)| {
        for j in 0..h {
            for k in 0..w {
                let v = sampler.at_world(grid.world(i, j, k)).unwrap_or(AIR_HU);
                slab[j * w + k] = v.round().clamp(-1024.0, 3071.0);
            }
        }
    });
    // Whole HU written as int16, as `synth` writes its VOIs.
    let mut v = grid.volume(data);
    v.header = Some(generated_header(&v, DataType::I16, "dnvs-engine localize VOI"));
    Ok(v)
}

/// Trilinear sampling of a volume at world points, whatever its affine.
struct Sampler<'a> {
    vol: &'a Volume,
    /// World -> continuous voxel index.
    inv: Affine,
}

impl<'a> Sampler<'a> {
    fn new(vol: &'a Volume) -> Result<Self> {
        if vol.is_empty() || vol.data.len() != vol.dims.iter().product::<usize>() {
            return Err(Error::arg("localize", format!("empty or inconsistent CT {:?}", vol.dims)));
        }
        let inv = orientation::invert_affine(&vol.affine).ok_or_else(|| {
            Error::arg("localize", format!("the CT's affine {:?} is singular", vol.affine))
        })?;
        Ok(Sampler { vol, inv })
    }

    /// Continuous voxel index of world point `p`.
    fn index_of(&self, p: [f64; 3]) -> [f64; 3] {
        orientation::apply(&self.inv, p)
    }

    /// Whether continuous index `x` lies within the voxels' footprint.
    fn inside(&self, x: [f64; 3]) -> bool {
        (0..3).all(|a| x[a] >= -0.5 && x[a] <= self.vol.dims[a] as f64 - 0.5)
    }

    /// The trilinear value at world `p`, `None` outside the field of view (edges clamp inside
    /// the half-voxel border).
    fn at_world(&self, p: [f64; 3]) -> Option<f32> {
        let x = self.index_of(p);
        self.inside(x).then(|| self.at_index(x))
    }

    fn at_index(&self, x: [f64; 3]) -> f32 {
        crate::volume::trilinear(&self.vol.data, self.vol.dims, x)
    }
}

/// The world box (mm, per axis `[lo, hi]`) covered by the voxels of `vol` (footprints included).
pub fn field_of_view(vol: &Volume) -> [[f64; 2]; 3] {
    let mut b = [[f64::INFINITY, f64::NEG_INFINITY]; 3];
    for corner in 0..8 {
        let ijk =
            [0, 1, 2].map(|a| if corner >> a & 1 == 1 { vol.dims[a] as f64 - 0.5 } else { -0.5 });
        let p = orientation::apply(&vol.affine, ijk);
        for a in 0..3 {
            b[a][0] = b[a][0].min(p[a]);
            b[a][1] = b[a][1].max(p[a]);
        }
    }
    b
}

/// The coarse RAS grid covering a field of view: [`COARSE_MM`] voxels, at least [`CANVAS`],
/// extents rounded up to a multiple of 16, centred on the field of view. ([`CoarseHeads`] bins
/// the CT over it and cuts the network's canvas out of it.)
pub fn coarse_grid(fov: &[[f64; 2]; 3]) -> Grid {
    let dims = [0, 1, 2].map(|a| {
        let need = ((fov[a][1] - fov[a][0]) / COARSE_MM).ceil().max(1.0) as usize;
        need.max(CANVAS[a]).div_ceil(GRID_MULTIPLE) * GRID_MULTIPLE
    });
    let center = [0, 1, 2].map(|a| 0.5 * (fov[a][0] + fov[a][1]));
    Grid::centered(center, dims, [COARSE_MM; 3])
}

/// The CT box-averaged onto half-[`COARSE_MM`] bins over its whole field of view, from which
/// the network's input ([`coarse_head`]: one [`CANVAS`] of [`COARSE_MM`] voxels) and its copies
/// shifted by half a coarse voxel ([`CoarseHeads::shifted`]) are exact 2x2x2 sums, and its
/// tilted views ([`CoarseHeads::tilted`]) are resampled from the bins: one pass over the CT
/// serves every input [`localize`] feeds the network.
///
/// The canvas is what the network was trained on, centred on the field of view's centre (as
/// every training head was; scanners centre the head). A field of view larger than the canvas
/// is cropped to it rather than slid over: sliding windows would show the joints to the
/// network at other places in its window, and a rotated (oblique) twin of a scan, whose
/// axis-aligned bounding box is larger, would then not get the same canvas on the head.
pub struct CoarseHeads<'a> {
    sampler: Sampler<'a>,
    /// The unshifted canvas grid.
    grid: Grid,
    /// Half-voxel bins over [`coarse_grid`] of the field of view (`2 * dims + 1` per axis).
    fine_dims: [usize; 3],
    /// Index of the canvas's first bin pair in the fine bins.
    fine_offset: [usize; 3],
    sum: Vec<f32>,
    count: Vec<u32>,
    /// The CT averaged over blocks of about [`VIEW_BLOCK_MM`] ([`block_mean`]; `None` when its
    /// voxels are that coarse already), made on the first [`CoarseHeads::tilted`] call.
    blocks: std::sync::OnceLock<Option<Volume>>,
}

impl<'a> CoarseHeads<'a> {
    /// Bins `ct` once and places the canvas.
    ///
    /// # Errors
    /// [`Error::Arg`] for an empty CT or a singular affine.
    pub fn new(ct: &'a Volume) -> Result<Self> {
        let sampler = Sampler::new(ct)?;
        let cover = coarse_grid(&field_of_view(ct));
        let half = COARSE_MM / 2.0;
        let fine = Grid {
            dims: cover.dims.map(|d| 2 * d + 1),
            spacing: [half; 3],
            origin: cover.origin.map(|o| o - half / 2.0),
        };
        let fine_affine = fine.volume(Vec::new()).affine;
        let (sum, count) = box_sums(ct, &fine_affine, fine.dims);
        // The canvas is centred on the field of view's centre (the cover grid's): a rotated
        // twin of a scan has the same centre, so it gets the same canvas.
        let fine_offset = [0, 1, 2].map(|a| cover.dims[a] - CANVAS[a].min(cover.dims[a]));
        let grid = Grid {
            dims: [0, 1, 2].map(|a| CANVAS[a].min(cover.dims[a])),
            spacing: [COARSE_MM; 3],
            origin: [0, 1, 2].map(|a| cover.origin[a] + half * fine_offset[a] as f64),
        };
        Ok(CoarseHeads {
            sampler,
            grid,
            fine_dims: fine.dims,
            fine_offset,
            sum,
            count,
            blocks: std::sync::OnceLock::new(),
        })
    }

    /// The canvas grid shifted by `parity[a]` (0 or 1) half coarse voxels along each world
    /// axis, and the parity clamped to 0 or 1.
    fn shifted_grid(&self, parity: [usize; 3]) -> (Grid, [usize; 3]) {
        let p = parity.map(|x| x.min(1));
        let origin = [0, 1, 2].map(|a| self.grid.origin[a] + COARSE_MM / 2.0 * p[a] as f64);
        (Grid { origin, ..self.grid }, p)
    }

    /// The coarse head on the canvas shifted by `parity[a]` half coarse voxels (0 or 1) along
    /// each world axis, in HU. Each coarse voxel is the mean of the CT voxels whose centres fall
    /// in it; one that catches none (a CT coarser than the grid) takes the trilinear value at its
    /// centre, or air outside the scan.
    pub fn shifted(&self, parity: [usize; 3]) -> Volume {
        let (grid, p) = self.shifted_grid(parity);
        let [_, gh, gw] = grid.dims;
        let [_, fh, fw] = self.fine_dims;
        let o = [0, 1, 2].map(|a| self.fine_offset[a] + p[a]);
        let mut data = vec![0f32; grid.len()];
        data.par_chunks_mut(gh * gw).enumerate().for_each(|(i, slab)| {
            for j in 0..gh {
                for k in 0..gw {
                    let (mut s, mut c) = (0f32, 0u32);
                    for q in 0..8 {
                        let (a, b, e) = (
                            o[0] + 2 * i + (q & 1),
                            o[1] + 2 * j + (q >> 1 & 1),
                            o[2] + 2 * k + (q >> 2),
                        );
                        let f = (a * fh + b) * fw + e;
                        s += self.sum[f];
                        c += self.count[f];
                    }
                    slab[j * gw + k] = if c > 0 {
                        s / c as f32
                    } else {
                        self.sampler.at_world(grid.world(i, j, k)).unwrap_or(AIR_HU)
                    };
                }
            }
        });
        grid.volume(data)
    }

    /// The CT averaged over blocks of about [`VIEW_BLOCK_MM`] ([`block_mean`]), or the CT itself
    /// when its voxels are that coarse; made once, on first use.
    pub fn blocked(&self) -> &Volume {
        let ct = self.sampler.vol;
        self.blocks.get_or_init(|| block_mean(ct, VIEW_BLOCK_MM)).as_ref().unwrap_or(ct)
    }

    /// The canvas shifted by `parity` ([`CoarseHeads::shifted`]) and then rotated by `rot` about
    /// its centre: the coarse head seen in a slightly different pose, for test-time views. Each
    /// coarse voxel is the mean of the CT voxels whose centres fall in it (binned afresh: an
    /// interpolation of the half-voxel bins blurs the head, and the network, trained on exact
    /// box means, then misplaces the condyles by a millimetre more), or the trilinear value at
    /// its centre when none does. A fine CT is binned from its [`block_mean`] (eight binning
    /// passes over a 512x512x300 CT would cost more than the networks): the 4 mm box then
    /// spreads by at most [`VIEW_BLOCK_MM`]. The result carries the rotated affine.
    pub fn tilted(&self, rot: &[[f64; 3]; 3], parity: [usize; 3]) -> Volume {
        let (grid, _) = self.shifted_grid(parity);
        let [d, h, w] = grid.dims;
        let (first, last) = (grid.world(0, 0, 0), grid.world(d - 1, h - 1, w - 1));
        let centre = [0, 1, 2].map(|a| 0.5 * (first[a] + last[a]));
        // Canvas index -> world: centre + rot (axis-aligned point - centre).
        let mut affine = orientation::identity();
        for r in 0..3 {
            for c in 0..3 {
                affine[r][c] = rot[r][c] * COARSE_MM;
            }
            affine[r][3] =
                centre[r] + (0..3).map(|c| rot[r][c] * (grid.origin[c] - centre[c])).sum::<f64>();
        }
        let (sum, count) = box_sums(self.blocked(), &affine, grid.dims);
        let mut data = vec![0f32; grid.len()];
        data.par_chunks_mut(h * w).enumerate().for_each(|(i, slab)| {
            for (q, v) in slab.iter_mut().enumerate() {
                let f = i * h * w + q;
                *v = if count[f] > 0 {
                    sum[f] / count[f] as f32
                } else {
                    let x = [i as f64, (q / w) as f64, (q % w) as f64];
                    self.sampler.at_world(orientation::apply(&affine, x)).unwrap_or(AIR_HU)
                };
            }
        });
        let mut v = grid.volume(data);
        v.affine = affine;
        v
    }
}

/// Largest block (mm along each array axis) [`block_mean`] averages a fine CT over before its
/// tilted views are binned: a quarter of a coarse voxel, so the views stay box averages.
pub const VIEW_BLOCK_MM: f64 = 1.0;

/// `ct` averaged over blocks of `f[a] = floor(block_mm / spacing[a])` whole voxels along each
/// array axis (voxels past the last whole block are dropped: under `block_mm` of the scan's
/// border), with the affine of the block centres; `None` when no axis has `f[a] > 1`.
pub fn block_mean(ct: &Volume, block_mm: f64) -> Option<Volume> {
    let f = [0, 1, 2].map(|a| ((block_mm / ct.spacing[a]).floor() as usize).max(1));
    let dims = [0, 1, 2].map(|a| ct.dims[a] / f[a]);
    if f == [1; 3] || dims.contains(&0) {
        return None;
    }
    let [_, h, w] = ct.dims;
    let [_, bh, bw] = dims;
    let norm = 1.0 / (f[0] * f[1] * f[2]) as f32;
    let mut data = vec![0f32; dims.iter().product()];
    data.par_chunks_mut(bh * bw).enumerate().for_each(|(bi, slab)| {
        for i in bi * f[0]..(bi + 1) * f[0] {
            for j in 0..bh * f[1] {
                let row = &ct.data[(i * h + j) * w..(i * h + j) * w + bw * f[2]];
                let out = &mut slab[(j / f[1]) * bw..(j / f[1] + 1) * bw];
                for (o, block) in out.iter_mut().zip(row.chunks_exact(f[2])) {
                    *o += block.iter().sum::<f32>() * norm;
                }
            }
        }
    });
    let mut affine = ct.affine;
    let first = orientation::apply(&ct.affine, f.map(|x| (x as f64 - 1.0) / 2.0));
    for r in 0..3 {
        for c in 0..3 {
            affine[r][c] = ct.affine[r][c] * f[c] as f64;
        }
        affine[r][3] = first[r];
    }
    let spacing = [0, 1, 2].map(|a| ct.spacing[a] * f[a] as f64);
    Some(Volume { data, dims, spacing, affine, header: None })
}

/// `a b` of two affines (apply `b`, then `a`).
fn compose(a: &Affine, b: &Affine) -> Affine {
    let mut out = orientation::identity();
    for (r, row) in out.iter_mut().enumerate().take(3) {
        for (c, v) in row.iter_mut().enumerate() {
            *v =
                (0..3).map(|k| a[r][k] * b[k][c]).sum::<f64>() + if c == 3 { a[r][3] } else { 0.0 };
        }
    }
    out
}

/// Per-bin sums and counts of the CT voxels whose centres fall in each voxel of the grid of
/// `dims` voxels whose index -> world map is `grid_affine` (any orientation). For an
/// axis-aligned grid, a centre on a bin boundary goes to the lower bin whatever the array's
/// direction, so an LPS or flipped twin fills the same bins.
fn box_sums(ct: &Volume, grid_affine: &Affine, dims: [usize; 3]) -> (Vec<f32>, Vec<u32>) {
    let n = dims.iter().product();
    let [gd, gh, gw] = dims;
    // CT index -> grid continuous index is affine: one matrix, stepped along each row.
    let inv = orientation::invert_affine(grid_affine).expect("a grid's affine is invertible");
    let to_grid = compose(&inv, &ct.affine);
    let step = [to_grid[0][2], to_grid[1][2], to_grid[2][2]];
    let [d, h, w] = ct.dims;
    // One accumulator per thread, not per rayon split: the bins can hold millions of voxels.
    let chunks = rayon::current_num_threads().clamp(1, d.max(1));
    (0..chunks)
        .into_par_iter()
        .map(|c| {
            let (mut sum, mut count) = (vec![0f32; n], vec![0u32; n]);
            for i in (c * d / chunks)..((c + 1) * d / chunks) {
                for j in 0..h {
                    let row = orientation::apply(&to_grid, [i as f64, j as f64, 0.0]);
                    let src = &ct.data[(i * h + j) * w..(i * h + j + 1) * w];
                    for (k, &v) in src.iter().enumerate() {
                        let kf = k as f64;
                        let g = [0, 1, 2].map(|a| (row[a] + step[a] * kf - TIE_EPS).round());
                        if g[0] < 0.0 || g[1] < 0.0 || g[2] < 0.0 {
                            continue;
                        }
                        let (gi, gj, gk) = (g[0] as usize, g[1] as usize, g[2] as usize);
                        if gi < gd && gj < gh && gk < gw {
                            let q = (gi * gh + gj) * gw + gk;
                            sum[q] += v;
                            count[q] += 1;
                        }
                    }
                }
            }
            (sum, count)
        })
        .reduce(
            || (vec![0f32; n], vec![0u32; n]),
            |(mut s, mut c), (s2, c2)| {
                s.iter_mut().zip(&s2).for_each(|(a, b)| *a += b);
                c.iter_mut().zip(&c2).for_each(|(a, b)| *a += b);
                (s, c)
            },
        )
}

/// The CT averaged onto the network's canvas of [`COARSE_MM`] voxels ([`CoarseHeads`]), in HU:
/// the unshifted [`CoarseHeads::shifted`].
///
/// # Errors
/// [`Error::Arg`] for an empty CT or a singular affine.
pub fn coarse_head(ct: &Volume) -> Result<Volume> {
    Ok(CoarseHeads::new(ct)?.shifted([0; 3]))
}

/// The localiser's input mapping as a model card states it: [`HU_WINDOW`] clipped, then scaled
/// to `[-1, 1]` (nnU-Net's CT form with mean and std chosen to do exactly that).
pub fn hu_window() -> Normalization {
    let (lo, hi) = HU_WINDOW;
    Normalization::Ct { lo, hi, mean: 0.5 * (lo + hi), std: 0.5 * (hi - lo) }
}

/// The network input from coarse HU ([`hu_window`]); non-finite voxels become air (-1).
pub fn normalize_hu(hu: &[f32]) -> Vec<f32> {
    let mut x: Vec<f32> = hu.iter().map(|&v| if v.is_finite() { v } else { HU_WINDOW.0 }).collect();
    hu_window().apply(&mut x);
    x
}

/// What localisation needs from a network: the condylar-head probability of every voxel of a
/// coarse head (HU, [`coarse_head`]'s grid), in that grid.
pub trait JointNet {
    /// # Errors
    /// Any error of the network.
    fn condyle_probability(&mut self, coarse_hu: &Volume) -> Result<Volume>;
}

/// The card's target name of a localisation model.
pub const TARGET: &str = "joints";

/// What a localisation model without a card (trained before cards existed) is taken to be: a
/// U-Net on the [`COARSE_MM`] grid fed through [`hu_window`], one [`CANVAS`] window.
pub fn cardless_overrides() -> ModelOverrides {
    ModelOverrides {
        arch: Some(Arch::UNet),
        normalization: Some(hu_window()),
        window: Some(CANVAS),
        spacing_mm: Some([COARSE_MM; 3]),
        ..ModelOverrides::default()
    }
}

/// Opens a localisation model (weights file or fold folder): its card when it has one (which
/// must say target `joints`), else [`cardless_overrides`].
///
/// # Errors
/// [`Error::Arg`] naming the file when its card is for another target; errors of
/// [`LoadedModel::open`].
pub fn open_model(path: &std::path::Path, device: Device) -> Result<LoadedModel> {
    let probe = LoadedModel::open(path, &cardless_overrides(), device)?;
    if !probe.has_card() {
        return Ok(probe);
    }
    open_for_target(path, device, TARGET)
}

/// Opens a fine localisation model ([`fine`]); it must carry a card of target
/// [`FINE_TARGET`].
///
/// # Errors
/// [`Error::Arg`] naming the file when it has no card or one for another target; errors of
/// [`LoadedModel::open`].
pub fn open_fine_model(path: &std::path::Path, device: Device) -> Result<LoadedModel> {
    open_for_target(path, device, FINE_TARGET)
}

fn open_for_target(path: &std::path::Path, device: Device, target: &str) -> Result<LoadedModel> {
    let model = LoadedModel::open(path, &ModelOverrides::default(), device)?;
    if !model.has_card() || model.card().target != target {
        let found = if model.has_card() { model.card().target.as_str() } else { "none (no card)" };
        return Err(Error::arg(
            "localize",
            format!(
                "{} is a model for target '{found}', not a '{target}' localisation model",
                model.path().display()
            ),
        ));
    }
    Ok(model)
}

/// The card's normalisation, spacing and window; the coarse head is already on the card's
/// [`COARSE_MM`] grid, so nothing is resampled.
impl JointNet for LoadedModel {
    fn condyle_probability(&mut self, coarse_hu: &Volume) -> Result<Volume> {
        let mut p = self.predict(coarse_hu)?;
        p.probs.pop().ok_or_else(|| Error::arg("localize", "the model produced no class"))
    }
}

/// Thresholds of [`joints_from_probs`]. The defaults are anatomical (adult condyles lie 80-125 mm
/// apart, a mirror pair at nearly the same height and depth), not fitted to any scan.
#[derive(Clone, Debug)]
pub struct LocalizeOptions {
    /// Probability above which a coarse voxel is condyle.
    pub threshold: f32,
    /// Smallest component kept as one of a pair (mm^3): a pair is strong evidence, so a weak
    /// partner (a condyle seen at 3 mm in-plane fills few coarse voxels) is enough.
    pub min_pair_member_mm3: f64,
    /// Smallest component kept alone (mm^3); the training label is a 10 mm ball (4189 mm^3).
    pub min_component_mm3: f64,
    /// Distance between the two condyle centres (mm): `[min, max]`.
    pub separation_mm: [f64; 2],
    /// Largest angle (degrees) between the line joining a pair and world x: head roll and yaw
    /// (up to ~15 degrees on a scanner table) tilt it, a pair of unrelated blobs rarely lines up.
    pub max_pair_tilt_deg: f64,
    /// A lone candidate must lie at least this far (mm) left or right of the head's midline (the
    /// x centre of its tissue at the candidate's height): condyles sit at the sides of the head,
    /// not near the middle where the teeth, spine and skull-base midline structures are.
    pub min_lateral_mm: f64,
    /// A centre closer than this to the edge of the scanned field of view is not boxed: the
    /// condyle is (partly) outside the scan.
    pub edge_margin_mm: f64,
    /// Radius (mm) of the window the centre is refined in ([`refine_centre`]): the training
    /// label's 10 mm ball plus half a coarse voxel.
    pub refine_radius_mm: f64,
    /// Refine each centre on eight tilted and shifted views of the canvas too ([`localize`],
    /// [`view_poses`]): nine network passes; the centre then no longer depends on how the
    /// scan's orientation and the 4 mm grid sample the head.
    pub views: bool,
    /// VOI size in voxels of [`VOI_SPACING_MM`].
    pub voi_dims: [usize; 3],
}

impl Default for LocalizeOptions {
    fn default() -> Self {
        LocalizeOptions {
            threshold: 0.5,
            min_pair_member_mm3: 250.0,
            min_component_mm3: 600.0,
            separation_mm: [60.0, 150.0],
            max_pair_tilt_deg: 30.0,
            min_lateral_mm: 30.0,
            edge_margin_mm: 6.0,
            refine_radius_mm: 12.0,
            views: true,
            voi_dims: VOI_DIMS,
        }
    }
}

/// A found joint.
#[derive(Clone, Debug)]
pub struct Joint {
    /// Centre of the condylar head, world RAS mm.
    pub condyle_center_ras_mm: [f64; 3],
    /// The CT resampled on the VOI grid ([`voi_grid_around`]).
    pub voi: Volume,
    /// Mean network probability over the component.
    pub score: f64,
}

/// One side's outcome. (`Found` holds the VOI by value: interface 3 of the shared contract.)
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum SideResult {
    Found(Joint),
    Missing { reason: String },
}

impl SideResult {
    /// The joint when found.
    pub fn found(&self) -> Option<&Joint> {
        match self {
            SideResult::Found(j) => Some(j),
            SideResult::Missing { .. } => None,
        }
    }
}

/// Both sides (the patient's left and right).
#[derive(Clone, Debug)]
pub struct Joints {
    pub left: SideResult,
    pub right: SideResult,
}

impl Joints {
    /// The result of `side`.
    pub fn side(&self, side: Side) -> &SideResult {
        match side {
            Side::L => &self.left,
            Side::R => &self.right,
        }
    }
}

/// A condyle candidate on the coarse grid.
#[derive(Clone, Debug)]
struct Candidate {
    center: [f64; 3],
    volume_mm3: f64,
    /// Sum of the probabilities over the component.
    mass: f64,
    /// Mean probability over the component.
    score: f64,
}

/// Connected components of `prob > threshold` with their probability-weighted centroids (world
/// mm), largest mass first.
#[allow(clippy::needless_range_loop)] // per-axis accumulation
fn candidates(prob: &Volume, threshold: f32) -> Result<Vec<Candidate>> {
    let mask: Vec<bool> = prob.data.iter().map(|&p| p > threshold).collect();
    let comps = components::label(&mask, prob.dims, Connectivity::TwentySix)?;
    let n = comps.sizes.len();
    let mut acc = vec![([0f64; 3], 0f64); n];
    let [_, h, w] = prob.dims;
    for (q, &l) in comps.labels.iter().enumerate() {
        if l == 0 {
            continue;
        }
        let (i, j, k) = (q / (h * w), (q / w) % h, q % w);
        let p = orientation::apply(&prob.affine, [i as f64, j as f64, k as f64]);
        let wgt = f64::from(prob.data[q]);
        let a = &mut acc[l as usize - 1];
        for ax in 0..3 {
            a.0[ax] += wgt * p[ax];
        }
        a.1 += wgt;
    }
    let voxel_mm3: f64 = prob.spacing.iter().product();
    let mut out: Vec<Candidate> = acc
        .iter()
        .zip(&comps.sizes)
        .map(|((s, wsum), &size)| Candidate {
            center: s.map(|v| v / wsum),
            volume_mm3: size as f64 * voxel_mm3,
            mass: *wsum,
            score: wsum / size as f64,
        })
        .collect();
    out.sort_by(|a, b| b.mass.total_cmp(&a.mass));
    Ok(out)
}

/// How far world point `p` lies inside the CT's field of view along the CT's own array axes
/// (mm; negative outside).
fn depth_inside(s: &Sampler, p: [f64; 3]) -> f64 {
    let x = s.index_of(p);
    (0..3)
        .map(|a| {
            let sp = s.vol.spacing[a];
            let lo = (x[a] + 0.5) * sp;
            let hi = (s.vol.dims[a] as f64 - 0.5 - x[a]) * sp;
            lo.min(hi)
        })
        .fold(f64::INFINITY, f64::min)
}

/// The chosen candidate per side ([`Side::index`]) and, for a side without one, why.
struct Selection {
    sides: [Option<Candidate>; 2],
    notes: Vec<String>,
}

/// Why `a` and `b` cannot be the two condyles, `None` when they can: their distance within
/// `separation_mm` and the line joining them within `max_pair_tilt_deg` of world x.
fn pair_flaw(a: &Candidate, b: &Candidate, opts: &LocalizeOptions) -> Option<String> {
    let d = [0, 1, 2].map(|i| b.center[i] - a.center[i]);
    let dist = d.iter().map(|v| v * v).sum::<f64>().sqrt();
    let tilt = (d[0].abs() / dist.max(1e-9)).clamp(0.0, 1.0).acos().to_degrees();
    if dist < opts.separation_mm[0] {
        Some(format!("only {dist:.0} mm apart (both on one side)"))
    } else if dist > opts.separation_mm[1] {
        Some(format!("{dist:.0} mm apart (too far for a pair)"))
    } else if tilt > opts.max_pair_tilt_deg {
        Some(format!(
            "joined by a line {tilt:.0} degrees off left-right (> {:.0}: not a mirror pair)",
            opts.max_pair_tilt_deg
        ))
    } else {
        None
    }
}

/// Chooses the condyles among the components of `prob`: the pair of greatest probability mass
/// that can be a left-right pair ([`pair_flaw`]); without one, the component of greatest mass
/// alone when it lies where a condyle can ([`lone_flaw`]). Components too small or at the edge
/// of the scan are never chosen.
fn select(prob: &Volume, sampler: &Sampler, opts: &LocalizeOptions) -> Result<Selection> {
    let mut notes: Vec<String> = Vec::new();
    let mut ok: Vec<Candidate> = Vec::new();
    for c in candidates(prob, opts.threshold)? {
        let depth = depth_inside(sampler, c.center);
        if c.volume_mm3 < opts.min_pair_member_mm3 {
            notes.push(format!(
                "a {:.0} mm^3 candidate at {} is too small (< {:.0} mm^3)",
                c.volume_mm3,
                fmt_mm(c.center),
                opts.min_pair_member_mm3
            ));
        } else if depth < opts.edge_margin_mm {
            notes.push(format!(
                "the candidate at {} lies {depth:.1} mm from the edge of the scan (condyle cut off)",
                fmt_mm(c.center)
            ));
        } else {
            ok.push(c);
        }
    }
    let mut best: Option<(f64, usize, usize)> = None;
    for i in 0..ok.len() {
        for j in i + 1..ok.len() {
            let mass = ok[i].mass + ok[j].mass;
            if pair_flaw(&ok[i], &ok[j], opts).is_none() && best.is_none_or(|b| mass > b.0) {
                best = Some((mass, i, j));
            }
        }
    }
    if let Some((_, i, j)) = best {
        let (a, b) = (ok[i].clone(), ok[j].clone());
        let (lo, hi) = if a.center[0] <= b.center[0] { (a, b) } else { (b, a) };
        return Ok(Selection { sides: [Some(lo), Some(hi)], notes });
    }
    if let [a, b, ..] = ok.as_slice() {
        let flaw = pair_flaw(a, b, opts).unwrap_or_default();
        notes.push(format!(
            "the two strongest candidates, {} and {}, are {flaw}",
            fmt_mm(a.center),
            fmt_mm(b.center)
        ));
    }
    let mut sides = [None, None];
    let lone = ok.into_iter().find(|c| {
        let big = c.volume_mm3 >= opts.min_component_mm3;
        if !big {
            notes.push(format!(
                "the lone candidate at {} is too small to stand alone ({:.0} < {:.0} mm^3)",
                fmt_mm(c.center),
                c.volume_mm3,
                opts.min_component_mm3
            ));
        }
        big
    });
    if let Some(c) = lone {
        let (mid, how) = head_midline_x(prob, sampler, c.center);
        let off = c.center[0] - mid;
        if off.abs() < opts.min_lateral_mm {
            notes.push(format!(
                "the lone candidate at {} lies {:.0} mm from the head's midline (x = {mid:.0} mm, \
                 {how}; a condyle lies at least {:.0} mm to the side)",
                fmt_mm(c.center),
                off.abs(),
                opts.min_lateral_mm
            ));
        } else {
            let side = if off < 0.0 { Side::L } else { Side::R };
            notes.push(format!(
                "one condyle kept at {} ({} of the head's midline x = {mid:.0} mm, {how})",
                fmt_mm(c.center),
                side_word(side)
            ));
            sides[side.index()] = Some(c);
        }
    }
    Ok(Selection { sides, notes })
}

/// Half the height and depth (mm) of the bar of head tissue [`head_midline_x`] looks at.
const MIDLINE_SLAB_MM: f64 = 16.0;
/// HU above which a voxel is head (skin, fat, muscle, bone), not air.
const TISSUE_HU: f32 = -400.0;
/// Half the breadth of an adult head at the level of the joints (mm; bizygomatic breadth is
/// 120-150 mm): where the midline lies from the one side of a head the scan cut off.
const HALF_HEAD_MM: f64 = 68.0;

/// The head's midline x near `at` (tissue within [`MIDLINE_SLAB_MM`] of it in height and depth,
/// which leaves out a table under the head; sampled on the probability map's grid points) and
/// how it was found. With the head whole in the scan's
/// left-right extent, the x centre of its tissue. A head cut off on one side (tissue running
/// into the edge of the scan) has its tissue centre pulled to the side still shown, so the
/// midline is taken [`HALF_HEAD_MM`] in from the skin of that side. With no tissue, or the head
/// cut on both sides, the grid's own x centre (scans are centred on the head).
fn head_midline_x(prob: &Volume, sampler: &Sampler, at: [f64; 3]) -> (f64, &'static str) {
    let [d, h, w] = prob.dims;
    let (mut sx, mut n) = (0f64, 0usize);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut cut_lo, mut cut_hi) = (false, false);
    let tissue = |p: [f64; 3]| sampler.at_world(p).is_some_and(|v| v > TISSUE_HU);
    for i in 0..d {
        for j in 0..h {
            for k in 0..w {
                let p = orientation::apply(&prob.affine, [i as f64, j as f64, k as f64]);
                let near = (1..3).all(|a| (p[a] - at[a]).abs() <= MIDLINE_SLAB_MM);
                if !near || !tissue(p) {
                    continue;
                }
                sx += p[0];
                n += 1;
                lo = lo.min(p[0]);
                hi = hi.max(p[0]);
                // Tissue whose neighbour along x is outside the scan: the head is cut there.
                let beside = |dx: f64| sampler.at_world([p[0] + dx, p[1], p[2]]).is_none();
                cut_lo |= beside(-prob.spacing[0]);
                cut_hi |= beside(prob.spacing[0]);
            }
        }
    }
    match (n > 0, cut_lo, cut_hi) {
        (true, false, false) => (sx / n as f64, "centre of the head's tissue"),
        (true, true, false) => (hi - HALF_HEAD_MM, "half a head in from the skin, head cut off"),
        (true, false, true) => (lo + HALF_HEAD_MM, "half a head in from the skin, head cut off"),
        _ => {
            let last = orientation::apply(&prob.affine, [(d - 1) as f64, 0.0, 0.0]);
            (0.5 * (prob.affine[0][3] + last[0]), "centre of the scan")
        }
    }
}

/// Refines a condyle centre on a probability map: the probability-weighted mean of the grid
/// points within `radius_mm` of the centre, iterated (mean shift). The network was trained to
/// paint a ball around the centre, so the mean over a window that holds the whole ball is its
/// centre, free of the cut a threshold makes through the ball's soft rim.
pub fn refine_centre(prob: &Volume, start: [f64; 3], radius_mm: f64) -> [f64; 3] {
    let Some(inv) = orientation::invert_affine(&prob.affine) else { return start };
    let mut c = start;
    for _ in 0..20 {
        let x = orientation::apply(&inv, c);
        let mut lo = [0usize; 3];
        let mut hi = [0usize; 3];
        for a in 0..3 {
            let r = radius_mm / prob.spacing[a];
            lo[a] = (x[a] - r).floor().max(0.0) as usize;
            hi[a] = ((x[a] + r).ceil().max(0.0) as usize).min(prob.dims[a].saturating_sub(1));
        }
        let (mut acc, mut wsum) = ([0f64; 3], 0f64);
        let [_, h, w] = prob.dims;
        for i in lo[0]..=hi[0] {
            for j in lo[1]..=hi[1] {
                for k in lo[2]..=hi[2] {
                    let p = orientation::apply(&prob.affine, [i as f64, j as f64, k as f64]);
                    let d2: f64 = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum();
                    let wgt = f64::from(prob.data[(i * h + j) * w + k]);
                    if d2 <= radius_mm * radius_mm && wgt > 0.0 {
                        (0..3).for_each(|a| acc[a] += wgt * p[a]);
                        wsum += wgt;
                    }
                }
            }
        }
        if wsum <= 0.0 {
            return c;
        }
        let next = acc.map(|v| v / wsum);
        let moved: f64 = (0..3).map(|a| (next[a] - c[a]).powi(2)).sum::<f64>().sqrt();
        c = next;
        if moved < 0.01 {
            break;
        }
    }
    c
}

/// Joints from the condylar-head probability on a coarse grid and the CT it came from.
///
/// The components above the threshold are the candidates. The pair of greatest probability
/// mass that can be the two condyles (`separation_mm` apart, joined by a line within
/// `max_pair_tilt_deg` of left-right) is named by x (lower x = the patient's left). Without
/// such a pair, the strongest candidate alone is kept when it is large enough and lies at least
/// `min_lateral_mm` to one side of the head's midline, and named by that side. A candidate
/// whose centre is within `edge_margin_mm` of the edge of the scan is refused. Each centre is
/// then refined on the map ([`refine_centre`]). Every side without a joint says why.
///
/// # Errors
/// [`Error::Arg`] for an empty or inconsistent CT or probability map; errors of [`cut_voi_with`].
pub fn joints_from_probs(prob: &Volume, ct: &Volume, opts: &LocalizeOptions) -> Result<Joints> {
    check_map(prob)?;
    let sampler = Sampler::new(ct)?;
    let sel = select(prob, &sampler, opts)?;
    let centres =
        sel.sides.clone().map(|c| c.map(|c| refine_centre(prob, c.center, opts.refine_radius_mm)));
    finish(sel, centres, ct, opts)
}

fn check_map(prob: &Volume) -> Result<()> {
    if prob.data.len() != prob.dims.iter().product::<usize>() || prob.is_empty() {
        return Err(Error::arg("localize", format!("empty probability map {:?}", prob.dims)));
    }
    Ok(())
}

/// The joints of a selection with its refined centres: VOIs cut, reasons for missing sides.
fn finish(
    sel: Selection,
    centres: [Option<[f64; 3]>; 2],
    ct: &Volume,
    opts: &LocalizeOptions,
) -> Result<Joints> {
    let why = |side: Side| {
        let base = format!("no condyle found on the patient's {}", side_word(side));
        if sel.notes.is_empty() {
            format!("{base} (no component above p = {})", opts.threshold)
        } else {
            format!("{base}: {}", sel.notes.join("; "))
        }
    };
    let result = |side: Side| -> Result<SideResult> {
        Ok(match (&sel.sides[side.index()], centres[side.index()]) {
            (Some(c), Some(centre)) => SideResult::Found(Joint {
                condyle_center_ras_mm: centre,
                voi: cut_voi_with(ct, centre, opts.voi_dims)?,
                score: c.score,
            }),
            _ => SideResult::Missing { reason: why(side) },
        })
    };
    Ok(Joints { left: result(Side::L)?, right: result(Side::R)? })
}

fn side_word(s: Side) -> &'static str {
    match s {
        Side::L => "left",
        Side::R => "right",
    }
}

fn fmt_mm(p: [f64; 3]) -> String {
    format!("({:.1}, {:.1}, {:.1}) mm", p[0], p[1], p[2])
}

/// What [`localize_with_maps`] saw: the coarse head the network read and its probability map
/// (the unshifted grid), for inspection (`localize --probs`).
pub struct Localized {
    pub joints: Joints,
    pub coarse_hu: Volume,
    pub probability: Volume,
}

/// Tilt (degrees) of the test-time views about each world axis ([`view_poses`]). The network
/// was trained on heads turned up to 15 degrees, so 7 more keeps a posed head near what it has
/// seen. Measured on eight held-out twins at 2 mm (docs/PERF.md): an oblique scan's centres
/// 0.21-1.05 mm from its RAS twin's (one view: 0.7-2.8 mm on four of them); 10 degrees, or 14-27
/// views, did no better.
pub const VIEW_TILT_DEG: f64 = 7.0;

/// The eight test-time views: the canvas tilted by +-[`VIEW_TILT_DEG`] about x, y and z (the
/// eight corners of that cube of rotations, sign of axis a from bit a of the view's number) and
/// shifted by half a coarse voxel along the axes of the same bits, so the views sample both the
/// pose and the 4 mm grid's phase.
pub fn view_poses() -> [([[f64; 3]; 3], [usize; 3]); 8] {
    std::array::from_fn(|q| {
        let bits = [q & 1, q >> 1 & 1, q >> 2 & 1];
        let t = VIEW_TILT_DEG.to_radians();
        let ang = bits.map(|b| if b == 1 { t } else { -t });
        (crate::synth::anatomy::rotation_xyz(ang[0], ang[1], ang[2]), bits)
    })
}

/// Localises both joints in `ct`: coarse head, network, [`joints_from_probs`]'s choice, then
/// (with `views`) each centre refined on the canvas and on eight tilted and shifted views of it
/// ([`view_poses`]) and averaged, then (with a `fine` network) refined again on a 64 mm box of
/// 2 mm voxels around it ([`fine`]). The coarse network's centre errs by 1-2 mm in a direction
/// that depends on how the head lies on the 4 mm grid and on what the field of view holds;
/// the views average the first out, the fine look, which sees only the joint's surroundings,
/// the second: an oblique scan then agrees with its axis-aligned twin.
///
/// # Errors
/// As [`coarse_head`], the networks', and [`joints_from_probs`].
pub fn localize(
    ct: &Volume,
    model: &mut dyn JointNet,
    fine: Option<&mut dyn JointNet>,
    opts: &LocalizeOptions,
) -> Result<Joints> {
    Ok(localize_with_maps(ct, model, fine, opts)?.joints)
}

/// [`localize`], also returning the coarse head and its probability map.
///
/// # Errors
/// As [`localize`].
pub fn localize_with_maps(
    ct: &Volume,
    model: &mut dyn JointNet,
    fine: Option<&mut dyn JointNet>,
    opts: &LocalizeOptions,
) -> Result<Localized> {
    let heads = CoarseHeads::new(ct)?;
    let coarse_hu = heads.shifted([0; 3]);
    let probability = model.condyle_probability(&coarse_hu)?;
    check_map(&probability)?;
    let sel = select(&probability, &heads.sampler, opts)?;
    let starts = sel.sides.clone().map(|c| c.map(|c| c.center));
    let refine = |p: &Volume| starts.map(|s| s.map(|s| refine_centre(p, s, opts.refine_radius_mm)));
    let mut sum = refine(&probability);
    if opts.views && starts.iter().any(Option::is_some) {
        let poses = view_poses();
        for (rot, parity) in &poses {
            let prob = model.condyle_probability(&heads.tilted(rot, *parity))?;
            check_map(&prob)?;
            for (acc, c) in sum.iter_mut().zip(refine(&prob)) {
                if let (Some(acc), Some(c)) = (acc.as_mut(), c) {
                    (0..3).for_each(|a| acc[a] += c[a]);
                }
            }
        }
        let n = (poses.len() + 1) as f64;
        sum = sum.map(|c| c.map(|c| c.map(|v| v / n)));
    }
    if let Some(fine) = fine {
        let src = FineSource::borrowed(heads.blocked());
        for c in sum.iter_mut().flatten() {
            if let Some(r) = fine::refine_fine(&src, fine, *c)? {
                *c = r;
            }
        }
    }
    let joints = finish(sel, sum, ct, opts)?;
    Ok(Localized { joints, coarse_hu, probability })
}

/// `joints.json` geometry of one VOI.
#[derive(Clone, Debug, Serialize)]
pub struct VoiInfo {
    pub shape: [usize; 3],
    pub spacing_mm: [f64; 3],
    pub affine: [[f64; 4]; 4],
}

/// One side of `joints.json`: the joint, or `null` fields with a reason.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum SideJson {
    Found { condyle_center_ras_mm: [f64; 3], voi: VoiInfo, score: f64 },
    Missing { reason: String },
}

impl From<&SideResult> for SideJson {
    fn from(s: &SideResult) -> Self {
        match s {
            SideResult::Found(j) => SideJson::Found {
                condyle_center_ras_mm: j
                    .condyle_center_ras_mm
                    .map(|v| (v * 1000.0).round() / 1000.0),
                voi: VoiInfo { shape: j.voi.dims, spacing_mm: j.voi.spacing, affine: j.voi.affine },
                score: (j.score * 1e4).round() / 1e4,
            },
            SideResult::Missing { reason } => SideJson::Missing { reason: reason.clone() },
        }
    }
}

/// Writes `preview_{L,R}_{axial,coronal,sagittal}.png` into `dir`: slices of the CT (1 mm,
/// closest canonical orientation, radiological view: the patient's right on the image's left)
/// through each found condyle centre, with its VOI box drawn in red. Returns the files written.
///
/// # Errors
/// [`Error::Io`] when a file cannot be written; resampling errors.
pub fn write_preview(
    dir: &std::path::Path,
    ct: &Volume,
    joints: &Joints,
) -> Result<Vec<std::path::PathBuf>> {
    use crate::synth::preview::{panel, write_png, Plane};
    let canon = crate::io::as_closest_canonical(ct);
    let view = crate::io::resample::resample_to_spacing(
        &canon,
        [1.0; 3],
        crate::io::resample::Interp::Linear,
    )?;
    let inv = orientation::invert_affine(&view.affine)
        .ok_or_else(|| Error::arg("localize", "the CT's affine is singular"))?;
    let mut written = Vec::new();
    for side in Side::BOTH {
        let Some(j) = joints.side(side).found() else { continue };
        let lo = orientation::apply(&j.voi.affine, [-0.5; 3]);
        let hi = orientation::apply(&j.voi.affine, j.voi.dims.map(|d| d as f64 - 0.5));
        let at =
            orientation::apply(&inv, j.condyle_center_ras_mm).map(|x| x.round().max(0.0) as usize);
        let at = [0, 1, 2].map(|a| at[a].min(view.dims[a] - 1));
        let [_, h, w] = view.dims;
        // 1 on the box's outline: inside it and within a voxel of a face.
        let outline = |q: usize| -> u8 {
            let p = orientation::apply(
                &view.affine,
                [(q / (h * w)) as f64, ((q / w) % h) as f64, (q % w) as f64],
            );
            let inside = (0..3).all(|a| p[a] >= lo[a] - 0.7 && p[a] <= hi[a] + 0.7);
            let near = (0..3).any(|a| (p[a] - lo[a]).abs() < 0.7 || (p[a] - hi[a]).abs() < 0.7);
            u8::from(inside && near)
        };
        for (plane, name) in
            [(Plane::Axial, "axial"), (Plane::Coronal, "coronal"), (Plane::Sagittal, "sagittal")]
        {
            let img = panel(&view, &outline, at, plane, 2);
            let path = dir.join(format!("preview_{side}_{name}.png"));
            write_png(&path, &img)?;
            written.push(path);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_inverse_round_trips() {
        let mut a = orientation::identity();
        a[0] = [0.0, -0.8, 0.1, 12.0];
        a[1] = [0.9, 0.0, 0.0, -5.0];
        a[2] = [0.0, 0.2, 2.5, 30.0];
        let inv = orientation::invert_affine(&a).unwrap();
        let p = orientation::apply(&a, [3.0, 4.0, 5.0]);
        let back = orientation::apply(&inv, p);
        for (x, y) in back.iter().zip([3.0, 4.0, 5.0]) {
            assert!((x - y).abs() < 1e-9);
        }
    }

    /// A 300 mm cube (larger than the canvas on every axis) whose HU is its world x: the canvas
    /// is [`CANVAS`] centred on the field of view, each coarse voxel the mean of the CT voxels in
    /// it (a linear ramp's mean is its value at the bin's centre), and the shifted canvases move
    /// by exactly half a coarse voxel.
    #[test]
    fn the_canvas_is_centred_on_the_field_of_view_and_shifts_by_half_voxels() {
        let mut ct = Volume::zeros([150, 150, 150], [2.0; 3]);
        for a in 0..3 {
            ct.affine[a][3] = 10.0 - 149.0;
        }
        let [_, h, w] = ct.dims;
        for (q, v) in ct.data.iter_mut().enumerate() {
            *v = orientation::apply(&ct.affine, [(q / (h * w)) as f64, 0.0, 0.0])[0] as f32;
        }
        let heads = CoarseHeads::new(&ct).unwrap();
        for parity in [[0, 0, 0], [1, 0, 0], [1, 1, 1]] {
            let v = heads.shifted(parity);
            assert_eq!(v.dims, CANVAS);
            let mid = orientation::apply(&v.affine, CANVAS.map(|d| (d as f64 - 1.0) / 2.0));
            for (a, m) in mid.iter().enumerate() {
                let want = 10.0 + COARSE_MM / 2.0 * parity[a] as f64;
                assert!((m - want).abs() < 1e-9, "parity {parity:?} axis {a}: centre {m}");
            }
            for i in [0, 17, CANVAS[0] - 1] {
                let x = orientation::apply(&v.affine, [i as f64, 3.0, 5.0])[0];
                let got = v.data[v.index(i, 3, 5)] as f64;
                assert!((got - x).abs() < 1e-3, "parity {parity:?} i {i}: {got} vs x {x}");
            }
        }
    }

    /// A tilted view without tilt is the shifted canvas; a tilted view of a ramp in world x
    /// still reads the world x of each voxel's centre (a linear ramp's box mean), through the
    /// block means of a fine CT too.
    #[test]
    fn tilted_views_are_box_means_on_the_rotated_grid() {
        for sp in [2.0, 0.5] {
            let n = (300.0 / sp) as usize;
            let mut ct = Volume::zeros([n, n / 2, n / 2], [sp; 3]);
            for a in 0..3 {
                ct.affine[a][3] = -(ct.dims[a] as f64 - 1.0) * sp / 2.0;
            }
            let [_, h, w] = ct.dims;
            for (q, v) in ct.data.iter_mut().enumerate() {
                *v = orientation::apply(&ct.affine, [(q / (h * w)) as f64, 0.0, 0.0])[0] as f32;
            }
            let heads = CoarseHeads::new(&ct).unwrap();
            let id = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
            if sp == 2.0 {
                let (a, b) = (heads.tilted(&id, [1, 0, 1]), heads.shifted([1, 0, 1]));
                assert_eq!(a.affine, b.affine);
                let worst =
                    a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
                assert!(worst < 1e-3, "identity view differs from the shifted canvas by {worst}");
            }
            let (rot, parity) = view_poses()[5];
            let v = heads.tilted(&rot, parity);
            for at in [[24, 20, 30], [10, 40, 25], [40, 25, 38]] {
                let x = orientation::apply(&v.affine, at.map(|i| i as f64))[0];
                let got = f64::from(v.data[v.index(at[0], at[1], at[2])]);
                // The CT (or block) centres a rotated bin catches are not centred in it: off
                // by up to about half their spacing.
                let tol = 0.6 * sp.max(VIEW_BLOCK_MM);
                assert!((got - x).abs() < tol, "spacing {sp}, voxel {at:?}: {got} vs world x {x}");
            }
        }
    }

    #[test]
    fn coarse_grid_covers_the_field_of_view() {
        let g = coarse_grid(&[[-100.0, 100.0], [-50.0, 50.0], [0.0, 300.0]]);
        assert_eq!(g.dims, [64, 64, 80]);
        assert!((g.origin[0] + g.world(63, 0, 0)[0]).abs() < 1e-9);
    }
}
