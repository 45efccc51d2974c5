//! Signed-distance primitives in millimetres (negative inside) and the rigid pose that places the
//! anatomy in the scanner frame. Distances are exact wherever the phantom's ground truth depends
//! on them (capsules, plates, boxes); the ellipsoid is a close bound used only for skull and skin.

/// A point or direction in millimetres.
pub type V3 = [f64; 3];

/// `a + b`.
pub fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

/// `a - b`.
pub fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

/// `s a`.
pub fn scale(a: V3, s: f64) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

/// Scalar product.
pub fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Euclidean length.
pub fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}

/// `a / |a|`, or `fallback` for a zero vector.
pub fn normalize_or(a: V3, fallback: V3) -> V3 {
    let n = norm(a);
    if n > 1e-12 {
        scale(a, 1.0 / n)
    } else {
        fallback
    }
}

/// Nearest point to `p` on the segment `a`-`b`.
pub fn closest_on_segment(p: V3, a: V3, b: V3) -> V3 {
    let ab = sub(b, a);
    let len2 = dot(ab, ab);
    let t = if len2 > 0.0 { (dot(sub(p, a), ab) / len2).clamp(0.0, 1.0) } else { 0.0 };
    add(a, scale(ab, t))
}

/// A segment swept by a sphere of radius `r`: exact distance, and its offset by `g` is the same
/// capsule with radius `r + g` (what makes the joint space exact).
#[derive(Clone, Copy, Debug)]
pub struct Capsule {
    pub a: V3,
    pub b: V3,
    pub r: f64,
}

impl Capsule {
    /// Signed distance (mm) from `p`, negative inside.
    pub fn sdf(&self, p: V3) -> f64 {
        norm(sub(p, closest_on_segment(p, self.a, self.b))) - self.r
    }

    /// Outward unit normal of the level set through `p` (direction from the axis to `p`).
    pub fn normal(&self, p: V3) -> V3 {
        normalize_or(sub(p, closest_on_segment(p, self.a, self.b)), [0.0, 0.0, 1.0])
    }

    /// A box that contains the solid.
    pub fn bounds(&self) -> Aabb {
        Aabb::around(&[self.a, self.b], self.r)
    }
}

/// A rectangle (centre, two orthogonal half-axis vectors) swept by a sphere of radius `r`: a plate
/// with rounded edges. Exact because the half axes are orthogonal (clamping each coordinate of the
/// projection finds the nearest rectangle point).
#[derive(Clone, Copy, Debug)]
pub struct Plate {
    pub c: V3,
    pub u: V3,
    pub v: V3,
    pub r: f64,
}

impl Plate {
    /// A plate whose second axis is made orthogonal to the first (Gram-Schmidt), so callers can
    /// pass roughly perpendicular directions.
    pub fn new(c: V3, u: V3, v: V3, r: f64) -> Self {
        let un = normalize_or(u, [1.0, 0.0, 0.0]);
        let v_orth = sub(v, scale(un, dot(v, un)));
        let v = scale(normalize_or(v_orth, [0.0, 0.0, 1.0]), norm(v));
        Plate { c, u, v, r }
    }

    /// Signed distance (mm) from `p`, negative inside.
    pub fn sdf(&self, p: V3) -> f64 {
        let d = sub(p, self.c);
        let mut nearest = self.c;
        for axis in [self.u, self.v] {
            let len2 = dot(axis, axis);
            if len2 > 0.0 {
                nearest = add(nearest, scale(axis, (dot(d, axis) / len2).clamp(-1.0, 1.0)));
            }
        }
        norm(sub(p, nearest)) - self.r
    }

    /// A box that contains the solid.
    pub fn bounds(&self) -> Aabb {
        let corners = [
            add(add(self.c, self.u), self.v),
            add(sub(self.c, self.u), self.v),
            sub(add(self.c, self.u), self.v),
            sub(sub(self.c, self.u), self.v),
        ];
        Aabb::around(&corners, self.r)
    }
}

/// An axis-aligned box with rounded edges (`half` extents include the rounding `r`).
#[derive(Clone, Copy, Debug)]
pub struct RoundBox {
    pub c: V3,
    pub half: V3,
    pub r: f64,
}

impl RoundBox {
    /// Signed distance (mm) from `p`, negative inside.
    pub fn sdf(&self, p: V3) -> f64 {
        let q = [
            (p[0] - self.c[0]).abs() - self.half[0] + self.r,
            (p[1] - self.c[1]).abs() - self.half[1] + self.r,
            (p[2] - self.c[2]).abs() - self.half[2] + self.r,
        ];
        let outside = norm([q[0].max(0.0), q[1].max(0.0), q[2].max(0.0)]);
        outside + q[0].max(q[1]).max(q[2]).min(0.0) - self.r
    }

    /// A box that contains the solid.
    pub fn bounds(&self) -> Aabb {
        Aabb { lo: sub(self.c, self.half), hi: add(self.c, self.half) }
    }
}

/// An axis-aligned ellipsoid. The distance is Quilez's bound `k0 (k0 - 1) / k1`, within a few
/// per cent of the true distance near the surface for the mild aspect ratios of a skull.
#[derive(Clone, Copy, Debug)]
pub struct Ellipsoid {
    pub c: V3,
    pub semi: V3,
}

impl Ellipsoid {
    /// Signed distance (mm) from `p`, negative inside.
    pub fn sdf(&self, p: V3) -> f64 {
        let d = sub(p, self.c);
        let k0 = norm([d[0] / self.semi[0], d[1] / self.semi[1], d[2] / self.semi[2]]);
        let k1 = norm([
            d[0] / (self.semi[0] * self.semi[0]),
            d[1] / (self.semi[1] * self.semi[1]),
            d[2] / (self.semi[2] * self.semi[2]),
        ]);
        if k1 < 1e-12 {
            -self.semi[0].min(self.semi[1]).min(self.semi[2])
        } else {
            k0 * (k0 - 1.0) / k1
        }
    }
}

/// A vertical (z) cylinder with flat caps: exact distance.
#[derive(Clone, Copy, Debug)]
pub struct Cylinder {
    pub c: V3,
    pub radius: f64,
    pub half_height: f64,
}

impl Cylinder {
    /// Signed distance (mm) from `p`, negative inside.
    pub fn sdf(&self, p: V3) -> f64 {
        let d = sub(p, self.c);
        let radial = (d[0] * d[0] + d[1] * d[1]).sqrt() - self.radius;
        let axial = d[2].abs() - self.half_height;
        let outside = norm([radial.max(0.0), axial.max(0.0), 0.0]);
        outside + radial.max(axial).min(0.0)
    }
}

/// Polynomial smooth minimum with blend radius `k` (mm): soft tissue outlines only (it is not an
/// exact distance, which is why bone never uses it).
pub fn smin(a: f64, b: f64, k: f64) -> f64 {
    let h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0);
    b + (a - b) * h - k * h * (1.0 - h)
}

/// An axis-aligned bounding box, used to skip primitives far from a point.
#[derive(Clone, Copy, Debug)]
pub struct Aabb {
    pub lo: V3,
    pub hi: V3,
}

impl Aabb {
    /// The box around `points`, grown by `margin`.
    pub fn around(points: &[V3], margin: f64) -> Self {
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for p in points {
            for a in 0..3 {
                lo[a] = lo[a].min(p[a] - margin);
                hi[a] = hi[a].max(p[a] + margin);
            }
        }
        Aabb { lo, hi }
    }

    /// The box around both.
    pub fn union(&self, o: &Aabb) -> Aabb {
        Aabb {
            lo: [self.lo[0].min(o.lo[0]), self.lo[1].min(o.lo[1]), self.lo[2].min(o.lo[2])],
            hi: [self.hi[0].max(o.hi[0]), self.hi[1].max(o.hi[1]), self.hi[2].max(o.hi[2])],
        }
    }

    /// Whether `p` lies within `margin` of the box.
    pub fn near(&self, p: V3, margin: f64) -> bool {
        (0..3).all(|a| p[a] >= self.lo[a] - margin && p[a] <= self.hi[a] + margin)
    }
}

/// A 3x3 rotation, rows first.
pub type M3 = [[f64; 3]; 3];

/// Rotation from small Euler angles (radians) about x, then y, then z.
pub fn rotation_xyz(ax: f64, ay: f64, az: f64) -> M3 {
    let (sx, cx) = ax.sin_cos();
    let (sy, cy) = ay.sin_cos();
    let (sz, cz) = az.sin_cos();
    let rx = [[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]];
    let ry = [[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]];
    let rz = [[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]];
    matmul(rz, matmul(ry, rx))
}

/// `a b`.
pub fn matmul(a: M3, b: M3) -> M3 {
    let mut out = [[0.0; 3]; 3];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

/// `m v`.
pub fn mat_vec(m: &M3, v: V3) -> V3 {
    [dot(m[0], v), dot(m[1], v), dot(m[2], v)]
}

/// Transposed product `m^T v` (the inverse of a rotation).
pub fn mat_t_vec(m: &M3, v: V3) -> V3 {
    [
        m[0][0] * v[0] + m[1][0] * v[1] + m[2][0] * v[2],
        m[0][1] * v[0] + m[1][1] * v[1] + m[2][1] * v[2],
        m[0][2] * v[0] + m[1][2] * v[1] + m[2][2] * v[2],
    ]
}

/// Anatomy -> scanner: `world = rot * anatomy + shift`. Rigid, so distances stay millimetres.
#[derive(Clone, Copy, Debug)]
pub struct Pose {
    pub rot: M3,
    pub shift: V3,
}

impl Pose {
    /// Anatomy point -> scanner point.
    pub fn to_world(&self, a: V3) -> V3 {
        add(mat_vec(&self.rot, a), self.shift)
    }

    /// Scanner point -> anatomy point.
    pub fn to_anatomy(&self, w: V3) -> V3 {
        mat_t_vec(&self.rot, sub(w, self.shift))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capsule_and_plate_distances_are_exact() {
        let c = Capsule { a: [0.0, 0.0, 0.0], b: [10.0, 0.0, 0.0], r: 2.0 };
        assert!((c.sdf([5.0, 3.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!((c.sdf([-3.0, 0.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!((c.sdf([5.0, 0.0, 0.0]) + 2.0).abs() < 1e-12);
        let p = Plate::new([0.0; 3], [5.0, 0.0, 0.0], [0.0, 0.0, 3.0], 1.0);
        assert!((p.sdf([0.0, 4.0, 0.0]) - 3.0).abs() < 1e-12);
        assert!((p.sdf([8.0, 0.0, 7.0]) - 4.0).abs() < 1e-12);
        assert!((p.sdf([1.0, 0.5, 1.0]) + 0.5).abs() < 1e-12);
    }

    #[test]
    fn box_cylinder_ellipsoid_signs() {
        let b = RoundBox { c: [0.0; 3], half: [2.0, 3.0, 4.0], r: 0.5 };
        assert!((b.sdf([3.0, 0.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!((b.sdf([0.0; 3]) + 2.0).abs() < 1e-12);
        let cy = Cylinder { c: [0.0; 3], radius: 2.0, half_height: 5.0 };
        assert!((cy.sdf([0.0, 3.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!((cy.sdf([0.0, 0.0, 7.0]) - 2.0).abs() < 1e-12);
        let e = Ellipsoid { c: [0.0; 3], semi: [70.0, 90.0, 80.0] };
        assert!((e.sdf([75.0, 0.0, 0.0]) - 5.0).abs() < 0.1);
        assert!((e.sdf([0.0, 85.0, 0.0]) + 5.0).abs() < 0.5);
    }

    #[test]
    fn pose_round_trips() {
        let pose = Pose { rot: rotation_xyz(0.05, -0.03, 0.08), shift: [1.0, -2.0, 3.0] };
        let a = [10.0, 20.0, -30.0];
        let back = pose.to_anatomy(pose.to_world(a));
        assert!(norm(sub(a, back)) < 1e-12);
    }
}
