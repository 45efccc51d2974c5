//! Marching cubes with a case table generated in code from one consistent rule, so every mesh is
//! watertight and outward-oriented. The table and its rule live in the leaf module
//! [`super::mc_tables`], shared with the GPU launcher.
//!
//! # Borders
//! The volume is padded by one virtual layer of background, so a foreground that touches the
//! border is closed half a voxel outside it: the mesh is always closed.
//!
//! # Parallelism
//! Vertices live on sample-grid edges. A first pass counts the crossing edges owned by each sample
//! slice (the `+i`, `+j`, `+k` edges from its samples) and a prefix sum gives each slice its range
//! of vertex ids; a second pass, parallel over chunks of slices, numbers the edges of each slice in
//! the same order, writes the vertices of the slices it owns and emits the triangles. Shared
//! vertices get one id without any locking. As in flying edges, each row keeps the span of its
//! inside samples, and rows (and row ends) that cannot cross the level are skipped.

use rayon::prelude::*;

use super::mc_tables::{corner_offset, edge_origin, table, CaseTable, CENTRE};
use super::mesh::Mesh;
use super::{check_len, spacing_affine};
use crate::volume::Volume;
use crate::Result;

// ---- the two passes ---------------------------------------------------------------------------

/// The padded sample grid: sample `s` along an axis is voxel `s - 1`; samples `0` and `dim + 1`
/// are the virtual background layer.
struct Grid<'a> {
    field: &'a [f32],
    dims: [usize; 3],
    level: f32,
    /// Padded extents `dims + 2`.
    p: [usize; 3],
}

impl Grid<'_> {
    /// Inside flags of padded slice `si` (all background for the padding slices) and the span
    /// of inside samples of each row.
    fn flags(&self, si: usize, out: &mut Flags) {
        out.f.fill(0);
        out.span.fill(EMPTY_SPAN);
        if si == 0 || si > self.dims[0] {
            return;
        }
        let [_, h, w] = self.dims;
        let pw = self.p[2];
        let plane = &self.field[(si - 1) * h * w..si * h * w];
        for j in 0..h {
            let row = &plane[j * w..(j + 1) * w];
            let dst = &mut out.f[(j + 1) * pw + 1..(j + 1) * pw + 1 + w];
            for (d, &v) in dst.iter_mut().zip(row) {
                *d = (v > self.level) as u8;
            }
            if let Some(lo) = dst.iter().position(|&x| x != 0) {
                let hi = dst.iter().rposition(|&x| x != 0).expect("a first one implies a last");
                out.span[j + 1] = (lo + 1, hi + 2);
            }
        }
    }

    fn value(&self, s: [usize; 3]) -> Option<f32> {
        if (0..3).any(|a| s[a] == 0 || s[a] > self.dims[a]) {
            return None;
        }
        Some(self.field[((s[0] - 1) * self.dims[1] + s[1] - 1) * self.dims[2] + s[2] - 1])
    }

    /// Voxel coordinates of the crossing on the edge from sample `s` along `axis`.
    fn crossing(&self, s: [usize; 3], axis: usize) -> [f32; 3] {
        let mut s1 = s;
        s1[axis] += 1;
        let t = match (self.value(s), self.value(s1)) {
            (Some(v0), Some(v1)) => {
                let t = (self.level - v0) / (v1 - v0);
                if t.is_finite() {
                    t.clamp(0.0, 1.0)
                } else {
                    0.5
                }
            }
            // An edge into the padding: the border surface sits half a voxel outside.
            _ => 0.5,
        };
        let mut v = s.map(|x| x as f32 - 1.0);
        v[axis] += t;
        v
    }
}

/// Inside flags of one padded slice plus, per row, the half-open span `[lo, hi)` of its inside
/// samples (flying-edges style trimming: most rows of a volume cross nothing).
struct Flags {
    f: Vec<u8>,
    span: Vec<(usize, usize)>,
}

const EMPTY_SPAN: (usize, usize) = (usize::MAX, 0);

impl Flags {
    fn new(p: [usize; 3]) -> Self {
        Flags { f: vec![0; p[1] * p[2]], span: vec![EMPTY_SPAN; p[1]] }
    }

    fn clear(&mut self) {
        self.f.fill(0);
        self.span.fill(EMPTY_SPAN);
    }
}

/// The sample range `[lo - 1, hi)` (clipped to `[0, end)`) outside which the given row spans
/// cannot produce a crossing or a non-empty cube.
#[inline]
fn trimmed(spans: &[(usize, usize)], end: usize) -> (usize, usize) {
    let (lo, hi) = spans.iter().fold(EMPTY_SPAN, |a, b| (a.0.min(b.0), a.1.max(b.1)));
    if lo >= hi {
        (0, 0)
    } else {
        (lo.saturating_sub(1), hi.min(end))
    }
}

/// Visits the crossing edges owned by slice `si` in the one fixed order both passes use.
#[inline]
fn for_each_crossing(
    p: [usize; 3],
    fl0: &Flags,
    fl1: Option<&Flags>,
    mut visit: impl FnMut(usize, usize, usize),
) {
    let (ph, pw) = (p[1], p[2]);
    let f0 = &fl0.f[..];
    let f1 = fl1.map(|x| &x.f[..]);
    for j in 0..ph {
        let below = fl0.span.get(j + 1).copied().unwrap_or(EMPTY_SPAN);
        let next = fl1.map_or(EMPTY_SPAN, |x| x.span[j]);
        let (k0, k1) = trimmed(&[fl0.span[j], below, next], pw);
        for k in k0..k1 {
            let q = j * pw + k;
            let a = f0[q];
            if let Some(f1) = f1 {
                if a != f1[q] {
                    visit(0, j, k);
                }
            }
            if j + 1 < ph && a != f0[q + pw] {
                visit(1, j, k);
            }
            if k + 1 < pw && a != f0[q + 1] {
                visit(2, j, k);
            }
        }
    }
}

/// Vertex ids of a slice's edges, one plane per axis.
struct SliceIds {
    ids: [Vec<u32>; 3],
}

/// Case number of the cube at `(j, k)` between two slices' flags.
#[inline]
fn cube_case(f0: &[u8], f1: &[u8], q: usize, pw: usize) -> usize {
    (f0[q]
        | (f1[q] << 1)
        | (f0[q + pw] << 2)
        | (f1[q + pw] << 3)
        | (f0[q + 1] << 4)
        | (f1[q + 1] << 5)
        | (f0[q + pw + 1] << 6)
        | (f1[q + pw + 1] << 7)) as usize
}

/// The cube range along `k` of cube row `j` between two slices that can be non-empty.
#[inline]
fn cube_span(f0: &Flags, f1: &Flags, j: usize, pw: usize) -> (usize, usize) {
    trimmed(&[f0.span[j], f0.span[j + 1], f1.span[j], f1.span[j + 1]], pw - 1)
}

/// Centroid vertices needed by the cubes between two slices.
fn count_centres(p: [usize; 3], table: &CaseTable, f0: &Flags, f1: &Flags) -> usize {
    let pw = p[2];
    let mut n = 0;
    for j in 0..p[1] - 1 {
        let (k0, k1) = cube_span(f0, f1, j, pw);
        for k in k0..k1 {
            n += table.centres[cube_case(&f0.f, &f1.f, j * pw + k, pw)].len();
        }
    }
    n
}

/// Marching cubes of `field` (row-major `(D, H, W)`) at `level`: foreground is `value > level`,
/// vertices are mapped to world millimetres by `affine` (voxel index -> world, NIfTI rows).
///
/// # Shapes
/// `field.len() == dims[0] * dims[1] * dims[2]`.
///
/// # Errors
/// [`crate::Error::Shape`] when the length does not match `dims`; [`crate::Error::Arg`] when the
/// mesh would need more than `u32::MAX` vertices.
pub fn marching_cubes(
    field: &[f32],
    dims: [usize; 3],
    level: f32,
    affine: &[[f64; 4]; 4],
) -> Result<Mesh> {
    check_len("marching_cubes", field.len(), dims)?;
    if !level.is_finite() {
        // A NaN level puts every voxel outside: an empty mesh that looks like a result.
        return Err(crate::Error::arg(
            "marching_cubes",
            format!("level must be finite, got {level}"),
        ));
    }
    let p = dims.map(|d| d + 2);
    let plane = p[1] * p[2];
    let grid = Grid { field, dims, level, p };
    let table = table();

    // Pass 1: crossing edges owned by each slice, and centroid vertices of the slab above it.
    let counts: Vec<(usize, usize)> = (0..p[0])
        .into_par_iter()
        .map_init(
            || (Flags::new(p), Flags::new(p)),
            |(f0, f1), si| {
                grid.flags(si, f0);
                let has_next = si + 1 < p[0];
                if has_next {
                    grid.flags(si + 1, f1);
                }
                let mut n = 0;
                for_each_crossing(p, f0, has_next.then_some(&*f1), |_, _, _| n += 1);
                let c = if has_next { count_centres(p, table, f0, f1) } else { 0 };
                (n, c)
            },
        )
        .collect();
    let mut offsets = vec![0usize; p[0] + 1];
    for (i, (e, c)) in counts.iter().enumerate() {
        offsets[i + 1] = offsets[i] + e + c;
    }
    let total = offsets[p[0]];
    if total > u32::MAX as usize {
        return Err(crate::Error::arg("marching_cubes", format!("{total} vertices exceed u32")));
    }

    // Pass 2: chunks of cube slabs; slab `si` (cubes between slices si and si+1) owns slice si's
    // edge vertices and its own centroid vertices. The last padded slice has no crossings.
    let slabs = p[0] - 1;
    let n_chunks = (rayon::current_num_threads() * 4).min(slabs).max(1);
    let bounds: Vec<usize> = (0..=n_chunks).map(|c| c * slabs / n_chunks).collect();
    let mut vertices = vec![[0f32; 3]; total];
    let mut parts: Vec<(usize, usize, &mut [[f32; 3]])> = Vec::with_capacity(n_chunks);
    let mut rest: &mut [[f32; 3]] = &mut vertices;
    for c in 0..n_chunks {
        let (a, b) = (bounds[c], bounds[c + 1]);
        let (mine, tail) = rest.split_at_mut(offsets[b] - offsets[a]);
        parts.push((a, b, mine));
        rest = tail;
    }

    let tri_parts: Vec<Vec<[u32; 3]>> = parts
        .into_par_iter()
        .map(|(a, b, verts)| {
            let base = offsets[a];
            let mut flags = [Flags::new(p), Flags::new(p), Flags::new(p)];
            let new_ids =
                || SliceIds { ids: [vec![0u32; plane], vec![0u32; plane], vec![0u32; plane]] };
            let mut ids = [new_ids(), new_ids()];
            let mut tris = Vec::new();
            grid.flags(a, &mut flags[0]);
            grid.flags(a + 1, &mut flags[1]);
            let own = Some((&mut *verts, base));
            number_slice(&grid, a, offsets[a], &flags[0], &flags[1], &mut ids[0], own);
            for si in a..b {
                // flags[0] = slice si, flags[1] = si+1; load si+2.
                if si + 2 < p[0] {
                    grid.flags(si + 2, &mut flags[2]);
                } else {
                    flags[2].clear();
                }
                let own = if si + 1 < b { Some((&mut *verts, base)) } else { None };
                let (lo, hi) = ids.split_at_mut(1);
                number_slice(&grid, si + 1, offsets[si + 1], &flags[1], &flags[2], &mut hi[0], own);
                let slab = Slab {
                    si,
                    f0: &flags[0],
                    f1: &flags[1],
                    ids0: &lo[0],
                    ids1: &hi[0],
                    first_centre: offsets[si] + counts[si].0,
                };
                emit_slab(&grid, table, &slab, verts, base, &mut tris);
                flags.rotate_left(1);
                ids.swap(0, 1);
            }
            tris
        })
        .collect();

    let mut triangles = Vec::with_capacity(tri_parts.iter().map(Vec::len).sum());
    for t in tri_parts {
        triangles.extend(t);
    }
    let mut mesh = Mesh { vertices, normals: Vec::new(), triangles };
    // Vertices are in voxel coordinates so far; `transform` maps them, fixes the winding of a
    // mirroring affine and computes the normals.
    mesh.transform(affine);
    Ok(mesh)
}

/// Gives the crossing edges of slice `si` their ids (from `first`) and, when `out` is given,
/// writes their vertices into it (`out[id - base]`).
fn number_slice(
    grid: &Grid,
    si: usize,
    first: usize,
    f0: &Flags,
    f1: &Flags,
    ids: &mut SliceIds,
    mut out: Option<(&mut [[f32; 3]], usize)>,
) {
    let p = grid.p;
    let has_next = si + 1 < p[0];
    let mut id = first;
    for_each_crossing(p, f0, has_next.then_some(f1), |axis, j, k| {
        ids.ids[axis][j * p[2] + k] = id as u32;
        if let Some((buf, base)) = out.as_mut() {
            buf[id - *base] = grid.crossing([si, j, k], axis);
        }
        id += 1;
    });
}

/// The two slices around one slab of cubes.
struct Slab<'a> {
    si: usize,
    f0: &'a Flags,
    f1: &'a Flags,
    ids0: &'a SliceIds,
    ids1: &'a SliceIds,
    /// Id of the slab's first centroid vertex.
    first_centre: usize,
}

/// Emits the triangles of the cubes of one slab (and writes its centroid vertices).
fn emit_slab(
    grid: &Grid,
    table: &CaseTable,
    slab: &Slab,
    verts: &mut [[f32; 3]],
    base: usize,
    tris: &mut Vec<[u32; 3]>,
) {
    let p = grid.p;
    let pw = p[2];
    let mut next_centre = slab.first_centre;
    for j in 0..p[1] - 1 {
        let (k0, k1) = cube_span(slab.f0, slab.f1, j, pw);
        for k in k0..k1 {
            let q = j * pw + k;
            let case = cube_case(&slab.f0.f, &slab.f1.f, q, pw);
            if case == 0 || case == 255 {
                continue;
            }
            let centres = &table.centres[case];
            let c0 = next_centre;
            for lp in centres {
                let mut c = [0f32; 3];
                for &e in lp {
                    let (axis, o) = edge_origin(e as usize);
                    let [di, dj, dk] = corner_offset(o);
                    let x = grid.crossing([slab.si + di, j + dj, k + dk], axis);
                    for a in 0..3 {
                        c[a] += x[a] / lp.len() as f32;
                    }
                }
                verts[next_centre - base] = c;
                next_centre += 1;
            }
            let lo = table.offsets[case] as usize;
            let hi = table.offsets[case + 1] as usize;
            for t in &table.tris[lo..hi] {
                tris.push(t.map(|e| {
                    if e >= CENTRE {
                        (c0 + (e - CENTRE) as usize) as u32
                    } else {
                        edge_id(e as usize, j, k, pw, slab.ids0, slab.ids1)
                    }
                }));
            }
        }
    }
}

#[inline]
fn edge_id(e: usize, j: usize, k: usize, pw: usize, ids0: &SliceIds, ids1: &SliceIds) -> u32 {
    let (axis, o) = edge_origin(e);
    let [di, dj, dk] = corner_offset(o);
    let s = if di == 0 { ids0 } else { ids1 };
    s.ids[axis][(j + dj) * pw + k + dk]
}

/// [`marching_cubes`] with a diagonal affine of `spacing` (origin at voxel 0).
pub fn marching_cubes_spacing(
    field: &[f32],
    dims: [usize; 3],
    level: f32,
    spacing: [f64; 3],
) -> Result<Mesh> {
    super::check_spacing("marching_cubes", spacing)?;
    marching_cubes(field, dims, level, &spacing_affine(spacing))
}

/// Marching cubes of a volume at `level` in its world frame (the volume's affine).
pub fn mesh_volume(vol: &Volume, level: f32) -> Result<Mesh> {
    marching_cubes(&vol.data, vol.dims, level, &vol.affine)
}
