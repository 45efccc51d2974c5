//! The marching-cubes case table: for each of the 256 inside/outside corner patterns of a cube, the
//! triangles (as cube edge numbers) that close the surface, generated in code from one rule.
//!
//! A leaf module: it names nothing of the crate, so the CPU marching cubes
//! ([`super::marching_cubes`]) and the CUDA launcher (`backend::cuda::marching_cubes`, which
//! uploads [`flat_case_table`]) share one table source without the backend depending on the
//! geometry algorithms (`tests/layering.rs` keeps it so).
//!
//! # The rule
//! On each cube face the sign changes along its four edges are joined by segments that cut off the
//! *inside* corners (value > level): a face with two diagonal inside corners (the classic face
//! ambiguity) always gets two segments, one around each inside corner. The rule looks only at the
//! face's own corners, so the two cubes sharing a face draw the same segments, and each segment is
//! oriented with the outside on its left seen from outside the cube, so the two cubes traverse it
//! in opposite directions. The segments of a cube close into loops, and each loop is fanned into
//! triangles from a vertex that shares no face with the chords' other ends (a chord across an
//! ambiguous face would also be drawn by the neighbour); the rare loop without such a vertex is
//! fanned from an extra vertex at its centroid. Hence: every edge is in exactly two triangles and
//! every directed edge appears once. The same table serves every case, on the CPU and the GPU.

use std::sync::OnceLock;

/// Cube corner `c` sits at offset `(c & 1, (c >> 1) & 1, (c >> 2) & 1)` along `(i, j, k)`.
pub(crate) fn corner_offset(c: usize) -> [usize; 3] {
    [c & 1, (c >> 1) & 1, (c >> 2) & 1]
}

/// Edge `e = 4 * axis + m` runs along `axis` from the corner whose other two bits are `m`.
pub(crate) fn edge_origin(e: usize) -> (usize, usize) {
    let axis = e / 4;
    let m = e % 4;
    let (b, c) = other_axes(axis);
    (axis, ((m & 1) << b) | (((m >> 1) & 1) << c))
}

fn edge_between(c1: usize, c2: usize) -> usize {
    let d = c1 ^ c2;
    let axis = d.trailing_zeros() as usize;
    let o = c1.min(c2);
    let (b, c) = other_axes(axis);
    4 * axis + ((o >> b) & 1) + 2 * ((o >> c) & 1)
}

fn other_axes(a: usize) -> (usize, usize) {
    match a {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    }
}

/// Triangles (as cube edge numbers) for each of the 256 inside/outside corner patterns.
pub(crate) struct CaseTable {
    /// `tris[offsets[c]..offsets[c + 1]]` are the triangles of case `c`.
    pub(crate) offsets: [u16; 257],
    pub(crate) tris: Vec<[u8; 3]>,
    /// Loops that need a centroid vertex, per case (rare: ambiguous faces crossed twice).
    pub(crate) centres: Vec<Vec<Vec<u8>>>,
}

pub(crate) fn table() -> &'static CaseTable {
    static TABLE: OnceLock<CaseTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut offsets = [0u16; 257];
        let mut tris = Vec::new();
        let mut centres = Vec::with_capacity(256);
        for case in 0..256 {
            let ct = case_triangles(case as u8);
            tris.extend(ct.tris);
            centres.push(ct.centres);
            offsets[case + 1] = tris.len() as u16;
        }
        CaseTable { offsets, tris, centres }
    })
}

/// The case table flattened for upload to the GPU (`kernels/marching_cubes.cu`), so CPU and CUDA
/// marching cubes share one table source.
#[derive(Clone, Debug)]
pub struct FlatCaseTable {
    /// Triangles of case `c` are `tris[3 * tri_offsets[c]..3 * tri_offsets[c + 1]]`.
    pub tri_offsets: Vec<u32>,
    /// Cube edge numbers (`< 12`) or `12 + loop` for a loop's centroid vertex, three per triangle.
    pub tris: Vec<u8>,
    /// Centroid loops of case `c` are `centre_offsets[c]..centre_offsets[c + 1]`.
    pub centre_offsets: Vec<u32>,
    /// Edges of loop `l` are `loop_edges[loop_offsets[l]..loop_offsets[l + 1]]`.
    pub loop_offsets: Vec<u32>,
    pub loop_edges: Vec<u8>,
}

/// The table [`super::marching_cubes`] uses, flattened (see [`FlatCaseTable`]).
pub fn flat_case_table() -> FlatCaseTable {
    let t = table();
    let mut flat = FlatCaseTable {
        tri_offsets: t.offsets.iter().map(|&o| o as u32).collect(),
        tris: t.tris.iter().flatten().copied().collect(),
        centre_offsets: vec![0],
        loop_offsets: vec![0],
        loop_edges: Vec::new(),
    };
    for loops in &t.centres {
        for lp in loops {
            flat.loop_edges.extend_from_slice(lp);
            flat.loop_offsets.push(flat.loop_edges.len() as u32);
        }
        flat.centre_offsets.push((flat.loop_offsets.len() - 1) as u32);
    }
    flat
}

fn midpoint(e: usize) -> [f64; 3] {
    let (axis, o) = edge_origin(e);
    let mut p = corner_offset(o).map(|x| x as f64);
    p[axis] += 0.5;
    p
}

/// Builds one case from the face rule described in the module docs.
fn case_triangles(case: u8) -> CaseTriangles {
    let inside = |c: usize| (case >> c) & 1 == 1;
    let mut next = [usize::MAX; 12];
    for axis in 0..3 {
        let (b, c) = other_axes(axis);
        for side in 0..2 {
            let corners =
                [(0, 0), (1, 0), (1, 1), (0, 1)].map(|(x, y)| (side << axis) | (x << b) | (y << c));
            let crosses: Vec<usize> =
                (0..4).filter(|&q| inside(corners[q]) != inside(corners[(q + 1) % 4])).collect();
            // Each segment: two face edges and the inside corners it cuts off.
            let mut segments: Vec<(usize, usize, Vec<usize>)> = Vec::new();
            match crosses.len() {
                2 => {
                    let e1 = edge_between(corners[crosses[0]], corners[(crosses[0] + 1) % 4]);
                    let e2 = edge_between(corners[crosses[1]], corners[(crosses[1] + 1) % 4]);
                    let ins = corners.iter().copied().filter(|&q| inside(q)).collect();
                    segments.push((e1, e2, ins));
                }
                4 => {
                    for q in 0..4 {
                        if inside(corners[q]) {
                            let prev = corners[(q + 3) % 4];
                            let e1 = edge_between(prev, corners[q]);
                            let e2 = edge_between(corners[q], corners[(q + 1) % 4]);
                            segments.push((e1, e2, vec![corners[q]]));
                        }
                    }
                }
                _ => {}
            }
            let mut normal = [0.0; 3];
            normal[axis] = if side == 1 { 1.0 } else { -1.0 };
            for (e1, e2, ins) in segments {
                let (m1, m2) = (midpoint(e1), midpoint(e2));
                let d = [m2[0] - m1[0], m2[1] - m1[1], m2[2] - m1[2]];
                let left = [
                    normal[1] * d[2] - normal[2] * d[1],
                    normal[2] * d[0] - normal[0] * d[2],
                    normal[0] * d[1] - normal[1] * d[0],
                ];
                let mut cin = [0.0; 3];
                for &q in &ins {
                    let o = corner_offset(q);
                    for a in 0..3 {
                        cin[a] += o[a] as f64 / ins.len() as f64;
                    }
                }
                let to_in: f64 = (0..3).map(|a| left[a] * (cin[a] - 0.5 * (m1[a] + m2[a]))).sum();
                // The outside must be on the left: swap when the inside corners are there.
                let (from, to) = if to_in > 0.0 { (e2, e1) } else { (e1, e2) };
                next[from] = to;
            }
        }
    }
    let mut out = CaseTriangles::default();
    let mut seen = [false; 12];
    for start in 0..12 {
        if next[start] == usize::MAX || seen[start] {
            continue;
        }
        let mut poly = Vec::new();
        let mut e = start;
        while !seen[e] {
            seen[e] = true;
            poly.push(e as u8);
            e = next[e];
        }
        triangulate(&poly, &mut out);
    }
    out
}

/// Two crossing edges lie on a common cube face.
fn share_face(e1: u8, e2: u8) -> bool {
    let corners = |e: u8| {
        let (axis, o) = edge_origin(e as usize);
        [o, o | (1 << axis)]
    };
    let (a, b) = (corners(e1), corners(e2));
    // A face is where one coordinate bit is constant over all four corners.
    (0..3).any(|bit| {
        let v = (a[0] >> bit) & 1;
        [a[1], b[0], b[1]].iter().all(|c| (c >> bit) & 1 == v)
    })
}

/// Fans a loop from a vertex whose chords touch no face the apex shares (a chord between two
/// vertices of one face would also be drawn by the neighbouring cube across that ambiguous face);
/// when no such apex exists, fans from a new vertex at the loop's centroid.
fn triangulate(poly: &[u8], out: &mut CaseTriangles) {
    let n = poly.len();
    let apex = (0..n).find(|&a| (2..n - 1).all(|d| !share_face(poly[a], poly[(a + d) % n])));
    match apex {
        Some(a) => {
            for t in 1..n - 1 {
                out.tris.push([poly[a], poly[(a + t) % n], poly[(a + t + 1) % n]]);
            }
        }
        None => {
            let c = CENTRE + out.centres.len() as u8;
            for t in 0..n {
                out.tris.push([c, poly[t], poly[(t + 1) % n]]);
            }
            out.centres.push(poly.to_vec());
        }
    }
}

/// Triangles of one case. Corner numbers below [`CENTRE`] are cube edges; `CENTRE + c` is the
/// centroid vertex of loop `centres[c]`.
#[derive(Default)]
struct CaseTriangles {
    tris: Vec<[u8; 3]>,
    centres: Vec<Vec<u8>>,
}

/// First index of the loop-centroid vertices in a case's triangles.
pub(crate) const CENTRE: u8 = 12;

#[cfg(test)]
mod tests {
    use super::*;

    /// Each case alone is a closed, consistently oriented set of faces once its neighbours are
    /// added; here: every loop closed and the table uses each crossing edge exactly once per loop.
    #[test]
    fn every_case_uses_each_crossing_edge() {
        for case in 0..=255u8 {
            let tris = case_triangles(case).tris;
            let inside = |c: usize| (case >> c) & 1 == 1;
            let crossing: Vec<usize> = (0..12)
                .filter(|&e| {
                    let (axis, o) = edge_origin(e);
                    inside(o) != inside(o | (1 << axis))
                })
                .collect();
            for e in 0..12 {
                let used = tris.iter().any(|t| t.contains(&(e as u8)));
                assert!(tris.iter().flatten().all(|&x| x < CENTRE + 4));
                assert_eq!(used, crossing.contains(&e), "case {case} edge {e}");
            }
        }
    }
}
