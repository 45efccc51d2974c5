//! Launchers for `kernels/marching_cubes.cu` (with `kernels/scan.cu`): GPU marching cubes as
//! classify -> exclusive scan -> generate, with the CPU's case table uploaded
//! ([`crate::geometry::mc_tables::flat_case_table`], a leaf module) so both share one table source.

use cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};

use super::launch::{self, grid_1d, int, kernel_name, Pass};
use super::{cuda_err, scan, Gpu};
use crate::geometry::mc_tables::flat_case_table;
use crate::{Error, Result};

const STEM: &str = "marching_cubes";
const OP: &str = "marching_cubes";

/// Scalars of both kernels, mirrored by `McParams` in marching_cubes.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct McParams {
    /// Padded extents `dims + 2`.
    pub p: [i32; 3],
    pub dims: [i32; 3],
    pub level: f32,
    /// Edge vertices in all (informational; ids interleave edges and centroids per slice).
    pub edge_vertices: u32,
    /// `p[0] * p[1] * p[2]`.
    pub samples: i64,
}

// SAFETY: plain `#[repr(C)]` data laid out as McParams in marching_cubes.cu (checked by a test).
unsafe impl DeviceRepr for McParams {}

/// Vertices (voxel coordinates) and counter-clockwise triangles of a mesh, before its affine.
pub type MeshParts = (Vec<[f32; 3]>, Vec<[u32; 3]>);

/// The case table on the GPU.
struct Table {
    tri_offsets: CudaSlice<u32>,
    tris: CudaSlice<u8>,
    centre_offsets: CudaSlice<u32>,
    loop_offsets: CudaSlice<u32>,
    loop_edges: CudaSlice<u8>,
}

fn upload_table(gpu: &Gpu) -> Result<Table> {
    let t = flat_case_table();
    let s = &gpu.stream;
    // cudarc cannot upload an empty slice; every table has at least one loop edge in practice, but
    // pad so that an empty list still gives a valid pointer.
    let edges = if t.loop_edges.is_empty() { vec![0u8] } else { t.loop_edges };
    Ok(Table {
        tri_offsets: s.clone_htod(&t.tri_offsets).map_err(cuda_err)?,
        tris: s.clone_htod(&t.tris).map_err(cuda_err)?,
        centre_offsets: s.clone_htod(&t.centre_offsets).map_err(cuda_err)?,
        loop_offsets: s.clone_htod(&t.loop_offsets).map_err(cuda_err)?,
        loop_edges: s.clone_htod(&edges).map_err(cuda_err)?,
    })
}

/// Marching cubes of a device field (row-major `(D, H, W)`) at `level`: vertices in voxel
/// coordinates and counter-clockwise triangles, the CPU's mesh before its affine, in the CPU's
/// vertex and triangle order (see marching_cubes.cu).
///
/// # Errors
/// [`Error::Shape`] for a length mismatch, [`Error::Arg`] when the mesh needs more than
/// `u32::MAX` vertices or triangles, [`Error::Cuda`] on a launch failure.
pub fn marching_cubes(
    gpu: &Gpu,
    field: &CudaSlice<f32>,
    dims: [usize; 3],
    level: f32,
) -> Result<MeshParts> {
    let n: usize = dims.iter().product();
    if n == 0 || field.len() != n {
        return Err(Error::shape(OP, dims, field.len()));
    }
    let p = dims.map(|d| d + 2);
    let samples = p[0] * p[1] * p[2];
    let mut params = McParams {
        p: [int(OP, p[0])?, int(OP, p[1])?, int(OP, p[2])?],
        dims: [int(OP, dims[0])?, int(OP, dims[1])?, int(OP, dims[2])?],
        level,
        edge_vertices: 0,
        samples: samples as i64,
    };
    let table = upload_table(gpu)?;
    let zeros = |len| gpu.stream.alloc_zeros::<u32>(len).map_err(cuda_err);
    let (mut edges, mut tris, mut centres) = (zeros(samples)?, zeros(samples)?, zeros(samples)?);
    {
        let name = kernel_name(OP, Pass::Fwd, Some("count"), "u32");
        let f = gpu.function(STEM, &name)?;
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&params).arg(field).arg(&table.tri_offsets).arg(&table.centre_offsets);
        b.arg(&mut edges).arg(&mut tris).arg(&mut centres);
        // SAFETY: marching_cubes_fwd_count_u32: field holds D*H*W (read only at non-padding
        // samples), the tables 257 entries (case < 256), the three outputs `samples` each.
        unsafe { launch::launch(gpu, &name, &mut b, grid_1d(gpu, samples))? };
    }
    let (edge_ids, n_edges) = scan::exclusive_u32(gpu, &edges, samples)?;
    let (tri_ids, n_tris) = scan::exclusive_u32(gpu, &tris, samples)?;
    let (centre_ids, n_centres) = scan::exclusive_u32(gpu, &centres, samples)?;
    let n_verts = n_edges + n_centres;
    if n_verts > u32::MAX as u64 || 3 * n_tris > u32::MAX as u64 {
        return Err(Error::arg(OP, format!("{n_verts} vertices, {n_tris} triangles exceed u32")));
    }
    if n_tris == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    params.edge_vertices = n_edges as u32;
    let mut verts = gpu.stream.alloc_zeros::<f32>(3 * n_verts as usize).map_err(cuda_err)?;
    let mut tri_out = zeros(3 * n_tris as usize)?;
    {
        let name = kernel_name(OP, Pass::Fwd, Some("generate"), "f32");
        let f = gpu.function(STEM, &name)?;
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&params).arg(field).arg(&table.tri_offsets).arg(&table.tris);
        b.arg(&table.centre_offsets).arg(&table.loop_offsets).arg(&table.loop_edges);
        b.arg(&edge_ids).arg(&tri_ids).arg(&centre_ids).arg(&mut verts).arg(&mut tri_out);
        // SAFETY: marching_cubes_fwd_generate_f32: the scanned ids address vertices below
        // n_edges + n_centres and triangles below n_tris by construction of the scans over the
        // counts of the same kernel logic; the table indices stay inside the uploaded table.
        unsafe { launch::launch(gpu, &name, &mut b, grid_1d(gpu, samples))? };
    }
    let v = gpu.stream.clone_dtoh(&verts).map_err(cuda_err)?;
    let t = gpu.stream.clone_dtoh(&tri_out).map_err(cuda_err)?;
    Ok((
        v.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
        t.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_layout_matches_the_kernel() {
        // struct McParams { int p[3]; int dims[3]; float level; unsigned edge_vertices; i64 samples; }
        assert_eq!(std::mem::size_of::<McParams>(), 40);
        assert_eq!(std::mem::offset_of!(McParams, level), 24);
        assert_eq!(std::mem::offset_of!(McParams, edge_vertices), 28);
        assert_eq!(std::mem::offset_of!(McParams, samples), 32);
    }
}
