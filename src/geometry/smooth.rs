//! Volume-preserving mesh smoothing (Taubin's lambda|mu filter).

use rayon::prelude::*;

use super::mesh::Mesh;

/// Taubin smoothing: `iterations` pairs of a shrinking Laplacian step (`lambda`) and an inflating
/// one (`mu < -lambda`), which removes the voxel staircase without the shrinkage of plain
/// Laplacian smoothing. Uniform (umbrella) weights over the vertex's edge neighbours. Topology is
/// unchanged; normals are recomputed. Typical values: `lambda = 0.5`, `mu = -0.53`.
pub fn taubin_smooth(mesh: &mut Mesh, iterations: usize, lambda: f32, mu: f32) {
    if iterations == 0 || mesh.vertices.is_empty() {
        return;
    }
    let (start, nbr) = neighbours(mesh);
    let mut next = mesh.vertices.clone();
    for _ in 0..iterations {
        for f in [lambda, mu] {
            let cur = &mesh.vertices;
            next.par_iter_mut().enumerate().for_each(|(v, out)| {
                let ns = &nbr[start[v]..start[v + 1]];
                let p = cur[v];
                if ns.is_empty() {
                    *out = p;
                    return;
                }
                let mut c = [0f32; 3];
                for &u in ns {
                    let q = cur[u as usize];
                    for a in 0..3 {
                        c[a] += q[a];
                    }
                }
                let inv = 1.0 / ns.len() as f32;
                *out = [0, 1, 2].map(|a| p[a] + f * (c[a] * inv - p[a]));
            });
            std::mem::swap(&mut mesh.vertices, &mut next);
        }
    }
    mesh.compute_normals();
}

/// Averages every vertex normal with its edge neighbours' `iterations` times (renormalised each
/// time), leaving the vertices where they are. Marching cubes of a mask gives staircase normals
/// (a voxelised sphere has vertical walls several voxels high around its equator, all with
/// exactly horizontal normals); what the inflation needs is the normal of the smooth surface the
/// voxels sample, which this approximates: after `k` rounds a normal averages the faces within
/// about `sqrt(k)` edges.
pub fn smooth_normals(mesh: &mut Mesh, iterations: usize) {
    if iterations == 0 || mesh.vertices.is_empty() || mesh.normals.len() != mesh.vertices.len() {
        return;
    }
    let (start, nbr) = neighbours(mesh);
    let mut next = mesh.normals.clone();
    for _ in 0..iterations {
        let cur = &mesh.normals;
        next.par_iter_mut().enumerate().for_each(|(v, out)| {
            let mut c = cur[v];
            for &u in &nbr[start[v]..start[v + 1]] {
                let q = cur[u as usize];
                for a in 0..3 {
                    c[a] += q[a];
                }
            }
            let len = (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt();
            // A zero sum (opposite sheets touching) keeps the vertex's own normal.
            *out = if len > 1e-12 { c.map(|x| x / len) } else { cur[v] };
        });
        std::mem::swap(&mut mesh.normals, &mut next);
    }
}

/// Vertex adjacency in compressed rows: neighbours of `v` are `nbr[start[v]..start[v + 1]]`.
fn neighbours(mesh: &Mesh) -> (Vec<usize>, Vec<u32>) {
    let n = mesh.vertices.len();
    let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(mesh.triangles.len() * 6);
    for t in &mesh.triangles {
        for e in 0..3 {
            let (a, b) = (t[e], t[(e + 1) % 3]);
            pairs.push((a, b));
            pairs.push((b, a));
        }
    }
    pairs.par_sort_unstable();
    pairs.dedup();
    let mut start = vec![0usize; n + 1];
    for &(a, _) in &pairs {
        start[a as usize + 1] += 1;
    }
    for v in 0..n {
        start[v + 1] += start[v];
    }
    (start, pairs.into_iter().map(|(_, b)| b).collect())
}
