//! An indexed triangle mesh (shared vertices, per-vertex normals) and its invariants: area,
//! enclosed volume, watertightness and orientation.

use std::collections::HashMap;

/// Indexed triangle mesh in world millimetres. Triangles are counter-clockwise seen from outside
/// (right-hand rule gives the outward normal).
#[derive(Clone, Debug, Default)]
pub struct Mesh {
    /// Vertex positions (mm).
    pub vertices: Vec<[f32; 3]>,
    /// Unit vertex normals (area-weighted face normals), pointing outward.
    pub normals: Vec<[f32; 3]>,
    /// Vertex indices, counter-clockwise seen from outside.
    pub triangles: Vec<[u32; 3]>,
}

/// What [`Mesh::topology`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Undirected edges used by a number of triangles other than two.
    pub non_manifold_edges: usize,
    /// Directed edges used twice (neighbouring triangles with opposite winding).
    pub flipped_edges: usize,
    /// Undirected edge count.
    pub edges: usize,
}

impl Topology {
    /// Every edge in exactly two triangles, each directed edge once.
    pub fn is_closed_oriented(&self) -> bool {
        self.non_manifold_edges == 0 && self.flipped_edges == 0
    }
}

fn sub(a: [f32; 3], b: [f32; 3]) -> [f64; 3] {
    [(a[0] - b[0]) as f64, (a[1] - b[1]) as f64, (a[2] - b[2]) as f64]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

impl Mesh {
    /// Total triangle area (mm^2).
    pub fn area(&self) -> f64 {
        self.triangles
            .iter()
            .map(|t| {
                let [a, b, c] = t.map(|i| self.vertices[i as usize]);
                let n = cross(sub(b, a), sub(c, a));
                0.5 * (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt()
            })
            .sum()
    }

    /// Signed enclosed volume (mm^3) by the divergence theorem: positive for a closed mesh with
    /// outward orientation.
    pub fn enclosed_volume(&self) -> f64 {
        self.triangles
            .iter()
            .map(|t| {
                let [a, b, c] = t.map(|i| self.vertices[i as usize].map(|x| x as f64));
                let bc = cross(b, c);
                (a[0] * bc[0] + a[1] * bc[1] + a[2] * bc[2]) / 6.0
            })
            .sum()
    }

    /// Counts edges that break watertightness or consistent orientation.
    pub fn topology(&self) -> Topology {
        let mut directed: HashMap<(u32, u32), u32> =
            HashMap::with_capacity(self.triangles.len() * 3);
        for t in &self.triangles {
            for e in 0..3 {
                *directed.entry((t[e], t[(e + 1) % 3])).or_insert(0) += 1;
            }
        }
        let mut undirected: HashMap<(u32, u32), u32> = HashMap::with_capacity(directed.len() / 2);
        let mut flipped = 0;
        for (&(a, b), &n) in &directed {
            if n > 1 {
                flipped += 1;
            }
            *undirected.entry((a.min(b), a.max(b))).or_insert(0) += n;
        }
        Topology {
            non_manifold_edges: undirected.values().filter(|&&n| n != 2).count(),
            flipped_edges: flipped,
            edges: undirected.len(),
        }
    }

    /// Recomputes unit vertex normals as area-weighted sums of the face normals.
    pub fn compute_normals(&mut self) {
        let mut acc = vec![[0f64; 3]; self.vertices.len()];
        for t in &self.triangles {
            let [a, b, c] = t.map(|i| self.vertices[i as usize]);
            // The cross product's length is twice the area: the weighting comes for free.
            let n = cross(sub(b, a), sub(c, a));
            for &i in t {
                let s = &mut acc[i as usize];
                s[0] += n[0];
                s[1] += n[1];
                s[2] += n[2];
            }
        }
        self.normals = acc
            .into_iter()
            .map(|n| {
                let l = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
                if l > 0.0 {
                    [(n[0] / l) as f32, (n[1] / l) as f32, (n[2] / l) as f32]
                } else {
                    [0.0; 3]
                }
            })
            .collect();
    }

    /// Maps every vertex through a voxel-to-world affine (rows of a 4x4 matrix) and flips the
    /// winding when the affine mirrors space, so the mesh stays outward-oriented.
    pub fn transform(&mut self, affine: &[[f64; 4]; 4]) {
        for v in &mut self.vertices {
            let p = v.map(|x| x as f64);
            *v = [0, 1, 2].map(|r| {
                (affine[r][0] * p[0] + affine[r][1] * p[1] + affine[r][2] * p[2] + affine[r][3])
                    as f32
            });
        }
        if det3(affine) < 0.0 {
            for t in &mut self.triangles {
                t.swap(1, 2);
            }
        }
        self.compute_normals();
    }
}

/// Determinant of the upper-left 3x3 block.
pub(crate) fn det3(a: &[[f64; 4]; 4]) -> f64 {
    a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
        - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
        + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
}
