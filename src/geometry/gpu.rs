//! Geometry on a GPU: the GPU arms of the distance transforms, marching cubes and the inflation
//! steps, computed by `kernels/{edt,marching_cubes,scan,inflate}.cu` through the launchers in
//! `crate::backend::cuda`. Inputs and outputs are host values, exactly as in the CPU functions,
//! plus the GPU `ordinal`; `geometry::inflate` picks the arm per step from its `device`, and the
//! CPU implementation is the reference (`tests/geometry_gpu.rs`).
//!
//! Every function returns [`Error::Cuda`] when there is no usable GPU `ordinal` (no driver, no
//! device, NVRTC missing), so callers can fall back to the CPU functions with a clear message.
//! The GPU marching cubes numbers vertices and orders triangles as the CPU does, so its meshes are
//! meant to be the CPU's exactly (the tests check invariants and the order); inflation then sees
//! the same surface points, normals and tie-breaks.

use std::sync::Arc;

use super::edt::FeatureTransform;
use super::inflate::VoxeliseInput;
use super::mesh::Mesh;
use super::{check_len, check_spacing};
use crate::backend::cuda::{self, cuda_err, edt as kedt, inflate as kinf, Gpu};
use crate::{Error, Result};

/// GPU `ordinal`, or an error that says geometry could not use it.
fn device(ordinal: usize) -> Result<Arc<Gpu>> {
    cuda::gpu(ordinal).map_err(|e| Error::Cuda(format!("GPU geometry on cuda:{ordinal}: {e}")))
}

fn empty(dims: [usize; 3]) -> bool {
    dims.contains(&0)
}

/// [`super::edt_sq`] on GPU `ordinal`: squared distance (mm^2) to the nearest seed voxel centre.
///
/// # Errors
/// As the CPU function, plus [`Error::Cuda`] without a usable GPU.
pub fn edt_sq(
    seeds: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    ordinal: usize,
) -> Result<Vec<f32>> {
    edt_to_host(seeds, dims, spacing, ordinal, false)
}

/// [`super::distance_to`] on GPU `ordinal`.
pub fn distance_to(
    seeds: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    ordinal: usize,
) -> Result<Vec<f32>> {
    edt_to_host(seeds, dims, spacing, ordinal, true)
}

/// Squared distances (or distances when `take_sqrt`) to the nearest seed, computed on the GPU and
/// copied back.
fn edt_to_host(
    seeds: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    ordinal: usize,
    take_sqrt: bool,
) -> Result<Vec<f32>> {
    check_len("edt", seeds.len(), dims)?;
    check_spacing("edt", spacing)?;
    if empty(dims) {
        return Ok(Vec::new());
    }
    let gpu = device(ordinal)?;
    let s = kedt::upload_mask(&gpu, seeds)?;
    let (mut d, _) = kedt::edt_sq(&gpu, &s, dims, spacing, false)?;
    if take_sqrt {
        kedt::sqrt_in_place(&gpu, &mut d)?;
    }
    gpu.stream.clone_dtoh(&d).map_err(cuda_err)
}

/// [`super::edt`] (scipy's `distance_transform_edt`) on GPU `ordinal`.
pub fn edt(mask: &[bool], dims: [usize; 3], spacing: [f64; 3], ordinal: usize) -> Result<Vec<f32>> {
    let bg: Vec<bool> = mask.iter().map(|&m| !m).collect();
    distance_to(&bg, dims, spacing, ordinal)
}

/// [`super::feature_transform`] on GPU `ordinal`.
pub fn feature_transform(
    seeds: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    ordinal: usize,
) -> Result<FeatureTransform> {
    check_len("feature_transform", seeds.len(), dims)?;
    check_spacing("feature_transform", spacing)?;
    if empty(dims) {
        return Ok(FeatureTransform { dist: Vec::new(), nearest: Vec::new() });
    }
    let gpu = device(ordinal)?;
    let s = kedt::upload_mask(&gpu, seeds)?;
    let (mut d, f) = kedt::edt_sq(&gpu, &s, dims, spacing, true)?;
    kedt::sqrt_in_place(&gpu, &mut d)?;
    let f = f.expect("edt_sq returns features when asked");
    Ok(FeatureTransform {
        dist: gpu.stream.clone_dtoh(&d).map_err(cuda_err)?,
        nearest: gpu.stream.clone_dtoh(&f).map_err(cuda_err)?,
    })
}

/// [`super::signed_distance`] on GPU `ordinal`.
pub fn signed_distance(
    mask: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    ordinal: usize,
) -> Result<Vec<f32>> {
    check_len("signed_distance", mask.len(), dims)?;
    check_spacing("signed_distance", spacing)?;
    if empty(dims) {
        return Ok(Vec::new());
    }
    let gpu = device(ordinal)?;
    let not: Vec<bool> = mask.iter().map(|&m| !m).collect();
    let (m, nm) = (kedt::upload_mask(&gpu, mask)?, kedt::upload_mask(&gpu, &not)?);
    let sd = kedt::signed_distance(&gpu, &m, &nm, dims, spacing)?;
    gpu.stream.clone_dtoh(&sd).map_err(cuda_err)
}

/// [`super::marching_cubes`] on GPU `ordinal`: foreground `value > level`, vertices mapped by
/// `affine` (voxel index -> world), normals computed as on the CPU.
///
/// # Errors
/// As the CPU function, plus [`Error::Cuda`] without a usable GPU.
pub fn marching_cubes(
    field: &[f32],
    dims: [usize; 3],
    level: f32,
    affine: &[[f64; 4]; 4],
    ordinal: usize,
) -> Result<Mesh> {
    check_len("marching_cubes", field.len(), dims)?;
    if empty(dims) {
        return Ok(Mesh::default());
    }
    let gpu = device(ordinal)?;
    let f = gpu.stream.clone_htod(field).map_err(cuda_err)?;
    mesh_of(&gpu, &f, dims, level, affine)
}

fn mesh_of(
    gpu: &Gpu,
    field: &cudarc::driver::CudaSlice<f32>,
    dims: [usize; 3],
    level: f32,
    affine: &[[f64; 4]; 4],
) -> Result<Mesh> {
    let (vertices, triangles) = cuda::marching_cubes::marching_cubes(gpu, field, dims, level)?;
    let mut mesh = Mesh { vertices, normals: Vec::new(), triangles };
    mesh.transform(affine);
    Ok(mesh)
}

/// The normal marches of [`super::inflate`] on GPU `ordinal`: hit distance of every point along
/// its normal through TB's signed distance field `phi` (`None`: no TB within `max_mm`).
///
/// # Shapes
/// `phi` (D, H, W); `points`, `normals` one per point, in the millimetre frame.
pub(crate) fn march(
    phi: &[f32],
    dims: [usize; 3],
    spacing: [f64; 3],
    points: &[[f32; 3]],
    normals: &[[f32; 3]],
    max_mm: f64,
    ordinal: usize,
) -> Result<Vec<Option<f64>>> {
    check_len("march", phi.len(), dims)?;
    if points.is_empty() || empty(dims) {
        return Ok(vec![None; points.len()]);
    }
    let gpu = device(ordinal)?;
    let s = &gpu.stream;
    let phi = s.clone_htod(phi).map_err(cuda_err)?;
    let points = s.clone_htod(&flat(points)).map_err(cuda_err)?;
    let normals = s.clone_htod(&flat(normals)).map_err(cuda_err)?;
    let hits = kinf::march(&gpu, &phi, dims, spacing, max_mm, &points, &normals)?;
    let hits = s.clone_dtoh(&hits).map_err(cuda_err)?;
    Ok(hits.iter().take(points.len() / 3).map(|&h| (!h.is_nan()).then_some(h)).collect())
}

/// The voxelisation of [`super::inflate`] on GPU `ordinal`, from the host values the CPU arm
/// uses (`owner`: the surface point each seed voxel holds; `ft`: the seeds' feature transform).
pub(crate) fn voxelise(
    x: &VoxeliseInput,
    owner: &[u32],
    ft: &FeatureTransform,
    ordinal: usize,
) -> Result<Vec<bool>> {
    let n: usize = x.dims.iter().product();
    for len in [x.mc.len(), x.tb.len(), owner.len(), ft.dist.len(), ft.nearest.len()] {
        check_len("voxelise", len, x.dims)?;
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let gpu = device(ordinal)?;
    let s = &gpu.stream;
    let (reach, slack) = x.reach_and_slack();
    let hits: Vec<f64> = x.hits.iter().map(|h| h.unwrap_or(f64::NAN)).collect();
    let hits = if hits.is_empty() { vec![f64::NAN] } else { hits };
    let up = |v: &[u32]| s.clone_htod(v).map_err(cuda_err);
    let inputs = (
        kedt::upload_mask(&gpu, x.mc)?,
        kedt::upload_mask(&gpu, x.tb)?,
        s.clone_htod(&ft.dist).map_err(cuda_err)?,
        up(&ft.nearest)?,
        up(owner)?,
        s.clone_htod(&hits).map_err(cuda_err)?,
        s.clone_htod(&flat(&x.surface.vertices)).map_err(cuda_err)?,
        s.clone_htod(&flat(&x.surface.normals)).map_err(cuda_err)?,
    );
    let k = kinf::VoxeliseInputs {
        mc: &inputs.0,
        tb: &inputs.1,
        ft_dist: &inputs.2,
        ft_near: &inputs.3,
        owner: &inputs.4,
        hits: &inputs.5,
        points: &inputs.6,
        normals: &inputs.7,
    };
    let nv = kinf::voxelise(&gpu, &k, x.dims, x.spacing, reach, slack)?;
    Ok(s.clone_dtoh(&nv).map_err(cuda_err)?.iter().map(|&b| b != 0).collect())
}

/// Points flattened for upload; cudarc needs a non-empty buffer (n = 0 points are never read).
fn flat(v: &[[f32; 3]]) -> Vec<f32> {
    let mut f: Vec<f32> = v.iter().flatten().copied().collect();
    if f.is_empty() {
        f.push(0.0);
    }
    f
}
