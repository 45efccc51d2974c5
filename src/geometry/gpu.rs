//! Geometry on a GPU: the same distance transforms, marching cubes and inflation as the CPU
//! modules, computed by `kernels/{edt,marching_cubes,scan,inflate}.cu` through the launchers in
//! `crate::backend::cuda`. Inputs and outputs are host values, exactly as in the CPU functions,
//! plus the GPU `ordinal`; the CPU implementation is the reference (`tests/geometry_gpu.rs`).
//!
//! Every function returns [`Error::Cuda`] when there is no usable GPU `ordinal` (no driver, no
//! device, NVRTC missing), so callers can fall back to the CPU functions with a clear message.
//! The GPU marching cubes numbers vertices and orders triangles as the CPU does, so its meshes are
//! meant to be the CPU's exactly (the tests check invariants and the order); inflation then sees
//! the same surface points, normals and tie-breaks.

use std::sync::Arc;

use super::edt::{FeatureTransform, NO_FEATURE};
use super::inflate::{HitStats, InflateConfig, Inflation};
use super::mesh::Mesh;
use super::{check_len, check_spacing, spacing_affine};
use crate::backend::cuda::{self, cuda_err, edt as kedt, inflate as kinf, Gpu};
use crate::io::Volume;
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

/// [`super::inflate`] on GPU `ordinal`.
///
/// # Errors
/// [`Error::Shape`] when the volumes differ in dims or spacing; [`Error::Cuda`] without a GPU.
pub fn inflate(mc: &Volume, tb: &Volume, cfg: InflateConfig, ordinal: usize) -> Result<Inflation> {
    if mc.dims != tb.dims {
        return Err(Error::shape("inflate", mc.dims, tb.dims));
    }
    if mc.spacing.iter().zip(&tb.spacing).any(|(a, b)| (a - b).abs() > 1e-6 * a.abs()) {
        return Err(Error::shape("inflate (spacing)", mc.spacing, tb.spacing));
    }
    let m = super::mask_from(&mc.data, 0.5);
    let t = super::mask_from(&tb.data, 0.5);
    inflate_masks(&m, &t, mc.dims, mc.spacing, &mc.affine, cfg, ordinal)
}

/// [`super::inflate::inflate_masks`] on GPU `ordinal`: MC surface, TB signed distance, marches,
/// feature transform, voxelisation and the NV mesh on the GPU; only the assignment of surface
/// points to their voxels (sequential tie-breaking, as on the CPU) runs on the host.
pub fn inflate_masks(
    mc: &[bool],
    tb: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    affine: &[[f64; 4]; 4],
    cfg: InflateConfig,
    ordinal: usize,
) -> Result<Inflation> {
    super::inflate::check_inflate_args(mc, tb, dims, spacing, cfg)?;
    if empty(dims) {
        return Ok(Inflation {
            nv: Vec::new(),
            volume_mm3: 0.0,
            mesh: Mesh::default(),
            stats: HitStats::default(),
        });
    }
    let gpu = device(ordinal)?;
    let s = &gpu.stream;
    let mcf: Vec<f32> = mc.iter().map(|&b| b as u8 as f32).collect();
    let mcf = s.clone_htod(&mcf).map_err(cuda_err)?;
    let surface = mesh_of(&gpu, &mcf, dims, 0.5, &spacing_affine(spacing))?;
    let (mcd, tbd) = (kedt::upload_mask(&gpu, mc)?, kedt::upload_mask(&gpu, tb)?);
    let not_tb: Vec<bool> = tb.iter().map(|&b| !b).collect();
    let phi = kedt::signed_distance(&gpu, &tbd, &kedt::upload_mask(&gpu, &not_tb)?, dims, spacing)?;
    let flat = |v: &[[f32; 3]]| -> Vec<f32> {
        let mut f: Vec<f32> = v.iter().flatten().copied().collect();
        if f.is_empty() {
            f.push(0.0); // cudarc needs a non-empty upload; n = 0 points are never read
        }
        f
    };
    let points = s.clone_htod(&flat(&surface.vertices)).map_err(cuda_err)?;
    let normals = s.clone_htod(&flat(&surface.normals)).map_err(cuda_err)?;
    let hits_d = kinf::march(&gpu, &phi, dims, spacing, cfg.max_mm, &points, &normals)?;
    let hits: Vec<Option<f64>> = s.clone_dtoh(&hits_d).map_err(cuda_err)?[..surface.vertices.len()]
        .iter()
        .map(|&h| (!h.is_nan()).then_some(h))
        .collect();
    let stats = hit_stats(&hits);
    let owner = owners(&surface, dims, spacing);
    let seeds: Vec<bool> = owner.iter().map(|&o| o != u32::MAX).collect();
    let (mut ft_dist, ft_near) =
        kedt::edt_sq(&gpu, &kedt::upload_mask(&gpu, &seeds)?, dims, spacing, true)?;
    kedt::sqrt_in_place(&gpu, &mut ft_dist)?;
    let ft_near = ft_near.expect("edt_sq returns features when asked");
    let reach = hits.iter().flatten().copied().fold(0.0, f64::max);
    let slack = spacing.iter().map(|s| s * s).sum::<f64>().sqrt();
    let owner_d = s.clone_htod(&owner).map_err(cuda_err)?;
    let inputs = kinf::VoxeliseInputs {
        mc: &mcd,
        tb: &tbd,
        ft_dist: &ft_dist,
        ft_near: &ft_near,
        owner: &owner_d,
        hits: &hits_d,
        points: &points,
        normals: &normals,
    };
    let nv_d = kinf::voxelise(&gpu, &inputs, dims, spacing, reach, slack)?;
    let nv: Vec<bool> = s.clone_dtoh(&nv_d).map_err(cuda_err)?.iter().map(|&b| b != 0).collect();
    debug_assert!(ft_near.len() == nv.len() && NO_FEATURE == u32::MAX);
    let count = nv.iter().filter(|&&b| b).count();
    let volume_mm3 = count as f64 * spacing.iter().product::<f64>();
    let nvf: Vec<f32> = nv.iter().map(|&b| b as u8 as f32).collect();
    let nvf = s.clone_htod(&nvf).map_err(cuda_err)?;
    let mesh = mesh_of(&gpu, &nvf, dims, 0.5, affine)?;
    Ok(Inflation { nv, volume_mm3, mesh, stats })
}

/// Each surface point marks the voxel it falls in; a voxel keeps its closest point (the first on
/// ties), exactly as the CPU's voxelisation does.
fn owners(surface: &Mesh, dims: [usize; 3], spacing: [f64; 3]) -> Vec<u32> {
    let [d, h, w] = dims;
    let mut owner = vec![u32::MAX; d * h * w];
    let mut owner_d = vec![f64::INFINITY; d * h * w];
    for (vi, p) in surface.vertices.iter().enumerate() {
        let mut idx = [0usize; 3];
        let mut dd = 0.0;
        for a in 0..3 {
            let u = (p[a] as f64 / spacing[a]).round().clamp(0.0, (dims[a] - 1) as f64);
            idx[a] = u as usize;
            let e = p[a] as f64 - u * spacing[a];
            dd += e * e;
        }
        let q = (idx[0] * h + idx[1]) * w + idx[2];
        if dd < owner_d[q] {
            owner_d[q] = dd;
            owner[q] = vi as u32;
        }
    }
    owner
}

fn hit_stats(hits: &[Option<f64>]) -> HitStats {
    let h: Vec<f64> = hits.iter().flatten().copied().collect();
    let mut s = HitStats { surface_points: hits.len(), hits: h.len(), ..Default::default() };
    if !h.is_empty() {
        s.mean_hit_mm = h.iter().sum::<f64>() / h.len() as f64;
        s.min_hit_mm = h.iter().copied().fold(f64::INFINITY, f64::min);
        s.max_hit_mm = h.iter().copied().fold(0.0, f64::max);
    }
    s
}
