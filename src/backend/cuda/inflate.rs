//! Launchers for `kernels/inflate.cu`: the normal marches through TB's signed distance field and
//! the voxelisation of the negative volume, mirroring `crate::geometry::inflate`.

use cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};

use super::launch::{self, grid_1d, int, kernel_name, long, Pass};
use super::{cuda_err, Gpu};
use crate::{Error, Result};

const STEM: &str = "inflate";
const OP: &str = "inflate";

/// Scalars of both kernels, mirrored by `InflateParams` in inflate.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InflateParams {
    /// Points (march) or voxels (voxelise).
    pub n: i64,
    pub dims: [i32; 3],
    pub pad: i32,
    pub spacing: [f64; 3],
    /// Longest march (mm).
    pub t_max: f64,
    /// Longest hit (mm), voxelise only.
    pub reach: f64,
    /// Voxel diagonal (mm), voxelise only.
    pub slack: f64,
}

// SAFETY: plain `#[repr(C)]` data laid out as InflateParams in inflate.cu (checked by a test).
unsafe impl DeviceRepr for InflateParams {}

fn params(n: usize, dims: [usize; 3], spacing: [f64; 3]) -> Result<InflateParams> {
    Ok(InflateParams {
        n: long(n),
        dims: [int(OP, dims[0])?, int(OP, dims[1])?, int(OP, dims[2])?],
        spacing,
        ..Default::default()
    })
}

/// Hit distance (mm) of every surface point, NaN where its ray meets no TB within `t_max`.
///
/// # Shapes
/// `phi` (D, H, W); `points`, `normals` `(n, 3)` flat, in the millimetre frame `index * spacing`.
pub fn march(
    gpu: &Gpu,
    phi: &CudaSlice<f32>,
    dims: [usize; 3],
    spacing: [f64; 3],
    t_max: f64,
    points: &CudaSlice<f32>,
    normals: &CudaSlice<f32>,
) -> Result<CudaSlice<f64>> {
    let n = points.len() / 3;
    if normals.len() != points.len() || phi.len() != dims.iter().product::<usize>() {
        return Err(Error::shape(OP, points.len(), normals.len()));
    }
    let mut p = params(n, dims, spacing)?;
    p.t_max = t_max;
    let mut hits = gpu.stream.alloc_zeros::<f64>(n.max(1)).map_err(cuda_err)?;
    let name = kernel_name(OP, Pass::Fwd, Some("march"), "f32");
    let f = gpu.function(STEM, &name)?;
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(&p).arg(phi).arg(points).arg(normals).arg(&mut hits);
    // SAFETY: inflate_fwd_march_f32: phi is read only at clamped in-volume indices; points and
    // normals hold 3n, hits n (max(n, 1) allocated).
    unsafe { launch::launch(gpu, &name, &mut b, grid_1d(gpu, n))? };
    Ok(hits)
}

/// Device inputs of [`voxelise`].
pub struct VoxeliseInputs<'a> {
    pub mc: &'a CudaSlice<u8>,
    pub tb: &'a CudaSlice<u8>,
    pub ft_dist: &'a CudaSlice<f32>,
    pub ft_near: &'a CudaSlice<u32>,
    /// Surface point each seed voxel holds (`u32::MAX` elsewhere).
    pub owner: &'a CudaSlice<u32>,
    pub hits: &'a CudaSlice<f64>,
    pub points: &'a CudaSlice<f32>,
    pub normals: &'a CudaSlice<f32>,
}

/// The NV mask (one byte per voxel).
pub fn voxelise(
    gpu: &Gpu,
    x: &VoxeliseInputs,
    dims: [usize; 3],
    spacing: [f64; 3],
    reach: f64,
    slack: f64,
) -> Result<CudaSlice<u8>> {
    let n: usize = dims.iter().product();
    for len in [x.mc.len(), x.tb.len(), x.ft_dist.len(), x.ft_near.len(), x.owner.len()] {
        if len != n {
            return Err(Error::shape(OP, dims, len));
        }
    }
    let mut p = params(n, dims, spacing)?;
    p.reach = reach;
    p.slack = slack;
    let mut nv = gpu.stream.alloc_zeros::<u8>(n).map_err(cuda_err)?;
    let name = kernel_name(OP, Pass::Fwd, Some("voxelise"), "f32");
    let f = gpu.function(STEM, &name)?;
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(&p).arg(x.mc).arg(x.tb).arg(x.ft_dist).arg(x.ft_near).arg(x.owner);
    b.arg(x.hits).arg(x.points).arg(x.normals).arg(&mut nv);
    // SAFETY: inflate_fwd_voxelise_f32: the volume buffers hold n (checked above); owner values
    // and ft_near index seed voxels whose owner is a valid point id (the seeds are exactly the
    // voxels with an owner), so hits/points/normals are read inside their lengths.
    unsafe { launch::launch(gpu, &name, &mut b, grid_1d(gpu, n))? };
    Ok(nv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_layout_matches_the_kernel() {
        // struct InflateParams { i64 n; int dims[3]; int pad; double spacing[3]; double t_max,
        // reach, slack; }
        assert_eq!(std::mem::size_of::<InflateParams>(), 72);
        assert_eq!(std::mem::offset_of!(InflateParams, spacing), 24);
        assert_eq!(std::mem::offset_of!(InflateParams, t_max), 48);
        assert_eq!(std::mem::offset_of!(InflateParams, slack), 64);
    }
}
