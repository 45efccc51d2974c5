//! Launchers for `kernels/edt.cu`: exact anisotropic Euclidean distance transform, feature
//! transform and signed distance on device buffers, pass for pass as `crate::geometry::edt`.
//! Volumes are row-major `(D, H, W)`; masks travel as one byte per voxel.

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::launch::{self, grid_1d, int, kernel_name, long, Pass};
use super::{alloc, cuda_err, Gpu};
use crate::{Error, Result};

const STEM: &str = "edt";
const OP: &str = "edt";

/// Uploads a boolean mask as bytes.
pub fn upload_mask(gpu: &Gpu, mask: &[bool]) -> Result<CudaSlice<u8>> {
    let bytes: Vec<u8> = mask.iter().map(|&b| b as u8).collect();
    gpu.stream.clone_htod(&bytes).map_err(cuda_err)
}

/// Squared distances (mm^2) to the nearest seed voxel centre and, when `ft`, the linear index of
/// that seed (`u32::MAX` without seeds).
///
/// # Shapes
/// `seeds` holds `dims[0] * dims[1] * dims[2] > 0` bytes.
///
/// # Errors
/// [`Error::Shape`] for a length mismatch, [`Error::Arg`] for sizes beyond the kernels' ints,
/// [`Error::Cuda`] on a launch failure.
pub fn edt_sq(
    gpu: &Gpu,
    seeds: &CudaSlice<u8>,
    dims: [usize; 3],
    spacing: [f64; 3],
    ft: bool,
) -> Result<(CudaSlice<f32>, Option<CudaSlice<u32>>)> {
    let [d, h, w] = dims;
    let n = d * h * w;
    if n == 0 || seeds.len() != n {
        return Err(Error::shape(OP, dims, seeds.len()));
    }
    if n > u32::MAX as usize {
        return Err(Error::arg(OP, format!("{n} voxels exceed the u32 feature index")));
    }
    let mut dist = alloc(gpu, n)?;
    let mut feat = gpu.stream.alloc_zeros::<u32>(if ft { n } else { 1 }).map_err(cuda_err)?;
    let ftf = ft as i32;
    {
        let name = kernel_name(OP, Pass::Fwd, Some("rows"), "f32");
        let f = gpu.function(STEM, &name)?;
        let (rows, wi, s) = (long(d * h), int(OP, w)?, spacing[2] as f32);
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&rows).arg(&wi).arg(&s).arg(&ftf).arg(seeds).arg(&mut dist).arg(&mut feat);
        // SAFETY: edt_fwd_rows_f32(rows, w, s, ft, seeds, dist, feat): rows * w = n bytes of
        // seeds read, n floats of dist written; feat (n when ft, else never touched) written.
        unsafe { launch::launch(gpu, &name, &mut b, grid_1d(gpu, d * h))? };
    }
    // Along H: lines (i, k), start i*h*w + k, stride w. Along D: lines (j, k), start j*w + k,
    // stride h*w. A pass over single-element lines changes nothing (the CPU skips it too).
    let passes = [(h, d * w, h * w, w, spacing[1]), (d, h * w, w, h * w, spacing[0])];
    let scratch = passes.iter().filter(|p| p.0 > 1).map(|p| (p.0 + 1) * p.1).max().unwrap_or(0);
    if scratch == 0 {
        return Ok((dist, ft.then_some(feat)));
    }
    let mut v = gpu.stream.alloc_zeros::<i32>(scratch).map_err(cuda_err)?;
    let mut z = gpu.stream.alloc_zeros::<f64>(scratch).map_err(cuda_err)?;
    let name = kernel_name(OP, Pass::Fwd, Some("lines"), "f32");
    let f = gpu.function(STEM, &name)?;
    for (len, lines, outer, stride, s) in passes {
        if len < 2 {
            continue;
        }
        let mut dist2 = alloc(gpu, n)?;
        let mut feat2 = gpu.stream.alloc_zeros::<u32>(if ft { n } else { 1 }).map_err(cuda_err)?;
        let (ll, ni, inner, ol, sl) =
            (long(lines), int(OP, len)?, int(OP, w)?, long(outer), long(stride));
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&ll).arg(&ni).arg(&inner).arg(&ol).arg(&sl).arg(&s).arg(&ftf);
        b.arg(&dist).arg(&feat).arg(&mut dist2).arg(&mut feat2).arg(&mut v).arg(&mut z);
        // SAFETY: edt_fwd_lines_f32: every line's elements start + q*stride (q < len) lie in the
        // n-element volume (lines * len = n); v and z hold (len + 1) * lines >= what line L
        // indexes ([q * lines + L], q <= len); dist2/feat2 are written at every element.
        unsafe { launch::launch(gpu, &name, &mut b, grid_1d(gpu, lines))? };
        dist = dist2;
        feat = feat2;
    }
    Ok((dist, ft.then_some(feat)))
}

/// In place: squared distances to distances.
pub fn sqrt_in_place(gpu: &Gpu, dist: &mut CudaSlice<f32>) -> Result<()> {
    let name = kernel_name(OP, Pass::Fwd, Some("sqrt"), "f32");
    let f = gpu.function(STEM, &name)?;
    let n = dist.len();
    let nl = long(n);
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(&nl).arg(dist);
    // SAFETY: edt_fwd_sqrt_f32(n, dist) touches dist[0..n).
    unsafe { launch::launch(gpu, &name, &mut b, grid_1d(gpu, n)) }
}

/// Signed distance (mm) to a mask's boundary as `crate::geometry::signed_distance` defines it;
/// `mask` and `not_mask` are the mask and its complement.
pub fn signed_distance(
    gpu: &Gpu,
    mask: &CudaSlice<u8>,
    not_mask: &CudaSlice<u8>,
    dims: [usize; 3],
    spacing: [f64; 3],
) -> Result<CudaSlice<f32>> {
    let (outside, _) = edt_sq(gpu, mask, dims, spacing, false)?;
    let (inside, _) = edt_sq(gpu, not_mask, dims, spacing, false)?;
    let n = outside.len();
    let mut out = alloc(gpu, n)?;
    let name = kernel_name(OP, Pass::Fwd, Some("signed"), "f32");
    let f = gpu.function(STEM, &name)?;
    let nl = long(n);
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(&nl).arg(mask).arg(&outside).arg(&inside).arg(&mut out);
    // SAFETY: edt_fwd_signed_f32(n, mask, outside, inside, out): all hold n elements.
    unsafe { launch::launch(gpu, &name, &mut b, grid_1d(gpu, n))? };
    Ok(out)
}
