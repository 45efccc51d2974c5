//! One synthetic head: anatomy drawn from a seed, then rendered at any voxel size straight from
//! the signed distances (the VOIs are rendered at 0.4 mm, never upsampled from the head).
//!
//! Anatomy frame (millimetres, RAS): origin between the two condyles, +x to the patient's right,
//! +y anterior, +z superior. A small rigid [`Pose`] places it in the scanner frame.
//!
//! Ground truth of one joint (side `s`, condyle head = capsule `H` of radius `r`, gap `g`):
//! - **MC**: mandible voxels (condylar head, neck and whatever of the ramus lies in the VOI).
//! - **TB**: cranial bone voxels (temporal bone with fossa and eminence, skull base, zygomatic
//!   root). The glenoid fossa is cut out of all cranial bone as `{sdf_H < g}`, the capsule of
//!   radius `r + g`, so the bone that roofs the condyle lies exactly `g` from its surface.
//! - **NV**: the negative volume by ARCHITECTURE.md's definition ("The negative volume,
//!   precisely", the one `geometry::inflate` implements on masks), computed here independently
//!   from the analytic geometry ([`NvTruth`]): a voxel centre `v` outside all bone, at distance
//!   `d` from the mandible, has its closest mandible surface point `p = v - d grad(d)` with
//!   normal `grad(d)`; `v` is NV when `p` is a head point (on the condylar process, not the
//!   coronoid; within `head_depth_mm` of the mandible's top along world superior;
//!   `n . up > min_up`) and the ray `p + t n`, sphere-traced
//!   through the analytic cranial distance inside the VOI, enters cranial bone at `h` with
//!   `d <= h <= max_mm`. `nv_mm3` = NV voxel count x voxel volume.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::anatomy::{
    add, dot, mat_t_vec, normalize_or, rotation_xyz, scale, smin, sub, Aabb, Capsule, Cylinder,
    Ellipsoid, Plate, Pose, RoundBox, V3,
};
use super::noise::{gauss_at, hash_words, splitmix64, Rng, ValueNoise};
use super::Side;
use crate::geometry::NvParams;
use crate::volume::Volume;
use crate::{Error, Result};

/// Smallest sphere-tracing step of the truth's rays (mm): far below a voxel (0.4 mm) and any
/// bone thickness, so no bone is stepped over.
const MIN_STEP_MM: f64 = 0.01;
/// Central-difference step of the mandible distance's gradient (mm).
const GRAD_EPS_MM: f64 = 1e-4;

/// Tissue classes with their own HU range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tissue {
    /// Outside the head and in the airway: -1000 HU.
    Air,
    /// Muscle and subcutaneous tissue: 0..80 HU.
    Soft,
    /// Brain: 0..80 HU (darker than muscle).
    Brain,
    /// Bone interior (diploe, marrow): 200..400 HU.
    Cancellous,
    /// Bone within the cortical thickness of its surface: 800..1800 HU.
    Cortical,
}

impl Tissue {
    /// The HU range the phantom promises for this class before blur and noise.
    pub fn hu_range(self) -> (f64, f64) {
        match self {
            Tissue::Air => (-1000.0, -1000.0),
            Tissue::Soft | Tissue::Brain => (0.0, 80.0),
            Tissue::Cancellous => (200.0, 400.0),
            Tissue::Cortical => (800.0, 1800.0),
        }
    }
}

/// Which bone a point belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bone {
    None,
    Mandible,
    Cranial,
    Vertebra,
}

/// A primitive of a bone group.
#[derive(Clone, Copy, Debug)]
enum Prim {
    Capsule(Capsule),
    Plate(Plate),
    Box(RoundBox),
    Cylinder(Cylinder, Aabb),
    /// A ring in the axial plane: centre, major radius, minor radius.
    Torus(V3, f64, f64),
    Ellipsoid(Ellipsoid),
}

impl Prim {
    fn sdf(&self, p: V3) -> f64 {
        match self {
            Prim::Capsule(c) => c.sdf(p),
            Prim::Plate(pl) => pl.sdf(p),
            Prim::Box(b) => b.sdf(p),
            Prim::Cylinder(c, _) => c.sdf(p),
            Prim::Ellipsoid(e) => e.sdf(p),
            Prim::Torus(c, big, small) => {
                let dx = p[0] - c[0];
                let dy = p[1] - c[1];
                let ring = (dx * dx + dy * dy).sqrt() - big;
                (ring * ring + (p[2] - c[2]).powi(2)).sqrt() - small
            }
        }
    }

    fn bounds(&self) -> Aabb {
        match self {
            Prim::Capsule(c) => c.bounds(),
            Prim::Plate(p) => p.bounds(),
            Prim::Box(b) => b.bounds(),
            Prim::Cylinder(_, bb) => *bb,
            Prim::Torus(c, big, small) => Aabb::around(&[*c], big + small),
            Prim::Ellipsoid(e) => {
                Aabb { lo: super::anatomy::sub(e.c, e.semi), hi: add(e.c, e.semi) }
            }
        }
    }
}

/// A union of primitives, each skipped when the point is outside its bounding box (a point
/// inside a primitive is always inside its box, so signs and depths stay right).
#[derive(Clone, Debug, Default)]
struct Group {
    parts: Vec<(Prim, Aabb)>,
    bounds: Option<Aabb>,
}

impl Group {
    fn push(&mut self, p: Prim) {
        let b = p.bounds();
        self.bounds = Some(self.bounds.map_or(b, |o| o.union(&b)));
        self.parts.push((p, b));
    }

    /// Union distance, or a large positive value far from every part.
    fn sdf(&self, p: V3, margin: f64) -> f64 {
        let mut d = 1e9;
        if !self.bounds.is_some_and(|b| b.near(p, margin)) {
            return d;
        }
        for (prim, b) in &self.parts {
            if b.near(p, margin) {
                d = f64::min(d, prim.sdf(p));
            }
        }
        d
    }

    /// [`Group::sdf`] and the index (in push order) of the part that attains it.
    fn nearest(&self, p: V3, margin: f64) -> (f64, Option<usize>) {
        let mut best = (1e9, None);
        if !self.bounds.is_some_and(|b| b.near(p, margin)) {
            return best;
        }
        for (i, (prim, b)) in self.parts.iter().enumerate() {
            if b.near(p, margin) {
                let d = prim.sdf(p);
                if d < best.0 {
                    best = (d, Some(i));
                }
            }
        }
        best
    }
}

/// One temporomandibular joint in the anatomy frame.
#[derive(Clone, Debug)]
pub struct Joint {
    pub side: Side,
    /// The condylar head: a capsule along the head's mediolateral long axis.
    pub head: Capsule,
    /// Designed joint space (mm): the fossa surface is the head's offset by this distance.
    pub gap_mm: f64,
    /// Mediolateral length of the head (mm).
    pub length_mm: f64,
}

impl Joint {
    /// Centre of the condylar head.
    pub fn center(&self) -> V3 {
        scale(add(self.head.a, self.head.b), 0.5)
    }
}

/// The range the designed joint spaces are drawn from (mm): the first joint's uniformly, the
/// other's 0.3-1.0 mm from it and inside the range (the two sides differ, as real ones do).
///
/// Training phantoms may use a wider range than the held-out heads: where a scan blurs the
/// joint space, a model's best guess leans towards the spaces it was trained on, so a range that
/// ends where the test range ends pulls the narrowest and widest joints inwards.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GapRange {
    pub mm: [f64; 2],
}

impl Default for GapRange {
    fn default() -> Self {
        GapRange { mm: [1.5, 4.0] }
    }
}

impl GapRange {
    /// # Errors
    /// [`Error::Arg`] unless 0.5 <= lo, lo + 1 <= hi <= 8 mm (the second joint needs room to
    /// differ from the first by up to 1 mm).
    pub fn validate(&self) -> Result<()> {
        let [lo, hi] = self.mm;
        if !(0.5 <= lo && lo + 1.0 <= hi && hi <= 8.0) {
            return Err(Error::arg(
                "synth",
                format!("joint space range [{lo}, {hi}] mm: need 0.5 <= lo, lo + 1 <= hi <= 8"),
            ));
        }
        Ok(())
    }

    pub fn is_default(&self) -> bool {
        *self == GapRange::default()
    }
}

/// Intensity parameters of one case (HU).
#[derive(Clone, Copy, Debug)]
struct Hu {
    cortical: f64,
    cancellous: f64,
    muscle: f64,
    brain: f64,
    subcut: f64,
}

/// A synthetic head drawn from `(seed, case)`; rendering is a pure function of it.
#[derive(Clone, Debug)]
pub struct Phantom {
    key: u64,
    pub pose: Pose,
    /// Joints, index 0 = L, 1 = R.
    pub joints: [Joint; 2],
    skull: Ellipsoid,
    skull_thickness: f64,
    vault_floor_z: f64,
    brain_floor_z: f64,
    base: RoundBox,
    foramen: Cylinder,
    cranial: Group,
    mandible: Group,
    /// Per joint (L, R): the mandible parts of the condylar process (head and neck capsules),
    /// the only mandible surface the NV truth inflates (the coronoid is not the head).
    condylar: [[usize; 2]; 2],
    vertebrae: Group,
    cortex_cranial: f64,
    cortex_mandible: f64,
    cortex_vertebra: f64,
    skin: (Ellipsoid, Ellipsoid, Capsule),
    subcut_mm: f64,
    /// Pharynx, nasal cavity and maxillary sinuses: air inside the head.
    air_spaces: Group,
    hu: Hu,
    texture: ValueNoise,
    soft_texture: ValueNoise,
    /// Standard deviation of the added Gaussian noise (HU).
    pub noise_sigma: f64,
}

/// A head-frame point evaluated: its tissue, bone and clean HU.
#[derive(Clone, Copy, Debug)]
pub struct PointEval {
    pub tissue: Tissue,
    pub bone: Bone,
    pub hu: f64,
}

fn deg(x: f64) -> f64 {
    x.to_radians()
}

impl Phantom {
    /// Draws case number `case` (0-based) of the data set with seed `seed`, joint spaces from
    /// the default [`GapRange`].
    pub fn new(seed: u64, case: u64) -> Self {
        Self::with_gaps(seed, case, GapRange::default())
    }

    /// [`Phantom::new`] with the joint spaces drawn from `gaps` (another range draws another
    /// case of the same seed: the rest of the anatomy follows from the same random stream).
    pub fn with_gaps(seed: u64, case: u64, gaps: GapRange) -> Self {
        let key = hash_words(&[seed, case, 0x7a6d_6a21]);
        let mut rng = Rng::new(key);
        let k = rng.uniform(0.95, 1.05);

        // Skull vault: an ellipsoidal shell; skull base plate below it.
        let skull = Ellipsoid {
            c: [0.0, rng.uniform(0.0, 6.0) * k, rng.uniform(28.0, 36.0) * k],
            semi: [
                rng.uniform(68.0, 74.0) * k,
                rng.uniform(84.0, 93.0) * k,
                rng.uniform(78.0, 86.0) * k,
            ],
        };
        let skull_thickness = rng.uniform(5.5, 7.5);
        let cortex_cranial = rng.uniform(1.4, 2.0);
        let cortex_mandible = rng.uniform(1.2, 2.0);
        let cortex_vertebra = rng.uniform(1.0, 1.5);
        let base_z = rng.uniform(6.0, 8.0);

        // Joints: independent size, position, orientation and gap per side (asymmetry).
        let [g_lo, g_hi] = gaps.mm;
        let g_first = rng.uniform(g_lo, g_hi);
        let delta = rng.uniform(0.3, 1.0);
        let g_second = if (g_first + delta <= g_hi && rng.unit() < 0.5) || g_first - delta < g_lo {
            g_first + delta
        } else {
            g_first - delta
        };
        let gaps = if rng.unit() < 0.5 { [g_first, g_second] } else { [g_second, g_first] };
        let half_width = 50.0 * k;
        let joints = [Side::L, Side::R].map(|side| {
            let s = side.sign();
            let r = rng.uniform(4.0, 5.0);
            let length = rng.uniform(15.0, 20.0);
            let theta = deg(rng.uniform(10.0, 25.0));
            let phi = deg(rng.sym(4.0));
            let c = [s * (half_width + rng.sym(2.0)), rng.sym(2.0), rng.sym(2.0)];
            // Long axis points laterally; the medial pole sits posterior (theta) as in real
            // condyles, with a small coronal tilt (phi).
            let u = [s * theta.cos() * phi.cos(), theta.sin() * phi.cos(), phi.sin()];
            let h = length / 2.0 - r;
            let head = Capsule { a: add(c, scale(u, -h)), b: add(c, scale(u, h)), r };
            Joint { side, head, gap_mm: gaps[side.index()], length_mm: length }
        });

        // Skull base: a plate closing the vault at the level of the fossae, pierced by the
        // foramen magnum.
        let base =
            RoundBox { c: [0.0, -12.0 * k, base_z + 3.0], half: [64.0 * k, 62.0 * k, 3.0], r: 1.5 };
        let foramen =
            Cylinder { c: [0.0, -30.0 * k, base_z + 3.0], radius: 14.0 * k, half_height: 6.0 };
        let mut cranial = Group::default();
        let mut mandible = Group::default();
        let mut condylar = [[0usize; 2]; 2];
        let ramus_half_h = 20.0 * k;
        let body_z = -58.0 * k;
        for j in &joints {
            let s = j.side.sign();
            let c = j.center();
            let (r, g) = (j.head.r, j.gap_mm);
            let u = super::anatomy::normalize_or(
                super::anatomy::sub(j.head.b, j.head.a),
                [s, 0.0, 0.0],
            );
            // Temporal bone mass: reaches down to just below the head's centre so the cavity cut
            // out of it is a real fossa with a postglenoid wall.
            let z_lo = c[2] - 1.5;
            let z_hi = base_z + 4.0;
            cranial.push(Prim::Box(RoundBox {
                c: [c[0] - s * 1.0, c[1] - 1.0, 0.5 * (z_lo + z_hi)],
                half: [12.0 + j.length_mm * 0.1, 11.0, 0.5 * (z_hi - z_lo)],
                r: 4.0,
            }));
            // Articular eminence: a convex ridge anterior-inferior to the fossa.
            let e = add(c, [0.0, r + g + rng.uniform(1.5, 2.5), -r * rng.uniform(0.5, 0.7)]);
            let half_len = j.length_mm / 2.0 + 2.0;
            let er = rng.uniform(3.8, 4.6);
            cranial.push(Prim::Capsule(Capsule {
                a: add(e, scale(u, -half_len)),
                b: add(e, scale(u, half_len)),
                r: er,
            }));
            // Zygomatic arch running forward from the eminence.
            cranial.push(Prim::Capsule(Capsule {
                a: add(e, [s * 4.0, 0.0, 0.0]),
                b: [s * (c[0].abs() + 3.0), c[1] + 45.0 * k, c[2] - 6.0],
                r: 2.5,
            }));

            // Mandible: head, neck, ramus, coronoid.
            let first = mandible.parts.len();
            condylar[j.side.index()] = [first, first + 1];
            mandible.push(Prim::Capsule(j.head));
            let neck_end = add(c, [-s * 1.5, rng.uniform(1.5, 3.5), -13.0 * k]);
            mandible.push(Prim::Capsule(Capsule {
                a: add(c, [0.0, 0.0, -1.0]),
                b: neck_end,
                r: rng.uniform(3.0, 3.6),
            }));
            let tilt = deg(rng.uniform(5.0, 12.0));
            let ramus_c = [c[0] - s * 3.0, c[1] + 8.0 * k, c[2] - 15.0 * k - ramus_half_h];
            mandible.push(Prim::Plate(Plate::new(
                ramus_c,
                [0.0, 13.0 * k * tilt.cos(), 13.0 * k * tilt.sin()],
                [0.0, -tilt.sin() * ramus_half_h, tilt.cos() * ramus_half_h],
                3.2,
            )));
            mandible.push(Prim::Capsule(Capsule {
                a: [c[0] - s * 4.0, c[1] + 18.0 * k, c[2] - 16.0 * k],
                b: [c[0] - s * 4.0, c[1] + 22.0 * k, c[2] - 6.0 * k],
                r: 2.8,
            }));
        }
        // Mandibular body: a U of vertical plates from each gonial angle to the chin.
        let body_w = 45.0 * k;
        let body_len = 78.0 * k;
        let body_half_h = rng.uniform(10.0, 12.0) * k;
        let body_r = rng.uniform(4.5, 5.5);
        let steps = 5;
        for s in [-1.0, 1.0] {
            let pt = |i: usize| {
                let a = deg(90.0 * i as f64 / steps as f64);
                [s * body_w * a.cos(), -2.0 * k + body_len * a.sin(), body_z]
            };
            for i in 0..steps {
                let (p0, p1) = (pt(i), pt(i + 1));
                let mid = scale(add(p0, p1), 0.5);
                let half = scale(super::anatomy::sub(p1, p0), 0.5);
                mandible.push(Prim::Plate(Plate::new(mid, half, [0.0, 0.0, body_half_h], body_r)));
            }
        }

        // Cervical vertebrae C1-C5 behind the airway.
        let mut vertebrae = Group::default();
        let yv = -12.0 * k;
        let z1 = -26.0 * k;
        vertebrae.push(Prim::Torus([0.0, yv, z1], 14.0 * k, 3.0));
        for s in [-1.0, 1.0] {
            let m = [s * 12.0 * k, yv, z1];
            vertebrae.push(Prim::Capsule(Capsule { a: m, b: m, r: 6.5 }));
        }
        for i in 1..5 {
            let z = z1 - 18.0 * k * i as f64;
            let y = yv + 4.0 + 1.0 * i as f64;
            let body = Cylinder { c: [0.0, y, z], radius: 8.0 * k, half_height: 6.5 * k };
            let bb = Aabb::around(&[[0.0, y, z]], 8.0 * k);
            vertebrae.push(Prim::Cylinder(body, bb));
            let tip = [0.0, y - 23.0 * k, z];
            for s in [-1.0, 1.0] {
                vertebrae.push(Prim::Capsule(Capsule { a: [s * 7.0, y - 4.0, z], b: tip, r: 2.5 }));
                vertebrae.push(Prim::Capsule(Capsule {
                    a: [s * 6.0, y - 2.0, z],
                    b: [s * 22.0 * k, y - 4.0, z],
                    r: 2.2,
                }));
            }
            vertebrae.push(Prim::Capsule(Capsule {
                a: tip,
                b: [0.0, tip[1] - 9.0 * k, z - 5.0],
                r: 2.5,
            }));
            if i == 1 {
                // The dens of C2 rises into the ring of the atlas.
                vertebrae.push(Prim::Capsule(Capsule {
                    a: [0.0, y, z + 6.0],
                    b: [0.0, y - 1.0, z1 + 3.0],
                    r: 4.0,
                }));
            }
        }

        let scalp = rng.uniform(4.0, 7.0);
        let skin = (
            Ellipsoid { c: skull.c, semi: skull.semi.map(|v| v + scalp) },
            Ellipsoid { c: [0.0, 28.0 * k, -42.0 * k], semi: [60.0 * k, 72.0 * k, 54.0 * k] },
            Capsule { a: [0.0, -8.0 * k, -170.0], b: [0.0, -8.0 * k, -45.0 * k], r: 52.0 * k },
        );
        let mut air_spaces = Group::default();
        air_spaces.push(Prim::Capsule(Capsule {
            a: [0.0, 16.0 * k, -110.0],
            b: [0.0, 14.0 * k, base_z - 4.0],
            r: rng.uniform(6.0, 8.0),
        }));
        // Nasal cavity from the nasopharynx forward, maxillary sinuses beside it.
        air_spaces.push(Prim::Box(RoundBox {
            c: [0.0, 52.0 * k, -14.0 * k],
            half: [rng.uniform(7.0, 10.0), 34.0 * k, 13.0 * k],
            r: 4.0,
        }));
        let sinus = [rng.uniform(11.0, 15.0), rng.uniform(14.0, 18.0), rng.uniform(14.0, 18.0)];
        for s in [-1.0, 1.0] {
            air_spaces.push(Prim::Ellipsoid(Ellipsoid {
                c: [s * 27.0 * k, 55.0 * k, -20.0 * k],
                semi: sinus.map(|v| v * k),
            }));
        }
        let hu = Hu {
            cortical: rng.uniform(1250.0, 1550.0),
            cancellous: rng.uniform(270.0, 330.0),
            muscle: rng.uniform(40.0, 60.0),
            brain: rng.uniform(28.0, 40.0),
            subcut: rng.uniform(12.0, 25.0),
        };
        let subcut_mm = rng.uniform(3.0, 5.0);
        let noise_sigma = rng.uniform(10.0, 20.0);
        let pose = Pose {
            rot: rotation_xyz(deg(rng.sym(4.0)), deg(rng.sym(4.0)), deg(rng.sym(4.0))),
            shift: [rng.sym(4.0), rng.sym(4.0), rng.sym(4.0)],
        };
        Phantom {
            key,
            pose,
            joints,
            skull,
            skull_thickness,
            base,
            foramen,
            vault_floor_z: base_z + 3.0,
            brain_floor_z: base_z + 6.0,
            cranial,
            mandible,
            condylar,
            vertebrae,
            cortex_cranial,
            cortex_mandible,
            cortex_vertebra,
            skin,
            subcut_mm,
            air_spaces,
            hu,
            texture: ValueNoise::new(key ^ 1, 1.6),
            soft_texture: ValueNoise::new(key ^ 2, 6.0),
            noise_sigma,
        }
    }

    /// The joint of `side`.
    pub fn joint(&self, side: Side) -> &Joint {
        &self.joints[side.index()]
    }

    /// Distance to the union of cranial bone before the fossae are cut out of it.
    ///
    /// `margin`: primitives whose boxes lie farther than it are skipped (their distance is then
    /// larger than `margin` but not exact); 0 when only the sign matters.
    fn cranial_raw_with(&self, a: V3, d_outer: f64, margin: f64) -> f64 {
        // Shell between the outer and inner tables, only above the skull base.
        let shell = d_outer.max(-(d_outer + self.skull_thickness)).max(self.vault_floor_z - a[2]);
        // The base plate stays inside the skull outline.
        let base = self.base.sdf(a).max(d_outer).max(-self.foramen.sdf(a));
        shell.min(base).min(self.cranial.sdf(a, margin))
    }

    /// Cranial bone distance with both glenoid fossae cut out (`g - sdf_head` is positive
    /// inside the offset capsule).
    fn cranial(&self, a: V3, d_outer: f64) -> f64 {
        self.cranial_within(a, d_outer, 0.0)
    }

    /// [`Phantom::cranial`], a lower bound of the true distance wherever that is below `margin`.
    fn cranial_within(&self, a: V3, d_outer: f64, margin: f64) -> f64 {
        let raw = self.cranial_raw_with(a, d_outer, margin);
        if raw >= 0.0 {
            return raw;
        }
        let j = &self.joints[usize::from(a[0] > 0.0)];
        raw.max(j.gap_mm - j.head.sdf(a))
    }

    fn skin_sdf(&self, a: V3) -> f64 {
        let (cranium, face, neck) = &self.skin;
        smin(smin(cranium.sdf(a), face.sdf(a), 12.0), neck.sdf(a), 15.0)
    }

    /// Tissue, bone and clean HU at anatomy point `a`.
    pub fn eval_anatomy(&self, a: V3) -> PointEval {
        let air = PointEval { tissue: Tissue::Air, bone: Bone::None, hu: -1000.0 };
        let d_skin = self.skin_sdf(a);
        if d_skin > 0.0 || self.air_spaces.sdf(a, 0.0) < 0.0 {
            return air;
        }
        let d_outer = self.skull.sdf(a);
        let bones: [(Bone, &dyn Fn() -> f64, f64); 3] = [
            (Bone::Mandible, &|| self.mandible.sdf(a, 0.0), self.cortex_mandible),
            (Bone::Cranial, &|| self.cranial(a, d_outer), self.cortex_cranial),
            (Bone::Vertebra, &|| self.vertebrae.sdf(a, 0.0), self.cortex_vertebra),
        ];
        for (bone, dist, cortex) in bones {
            let d = dist();
            if d < 0.0 {
                let tex = self.texture.sample(a);
                let (tissue, hu) = if d > -cortex {
                    (Tissue::Cortical, self.hu.cortical + 80.0 * tex)
                } else {
                    (Tissue::Cancellous, self.hu.cancellous + 60.0 * tex)
                };
                return PointEval { tissue, bone, hu };
            }
        }
        let tex = self.soft_texture.sample(a);
        let (tissue, hu) = if d_skin > -self.subcut_mm {
            (Tissue::Soft, self.hu.subcut + 4.0 * tex)
        } else if a[2] > self.brain_floor_z && d_outer < -self.skull_thickness {
            (Tissue::Brain, self.hu.brain + 4.0 * tex)
        } else {
            (Tissue::Soft, self.hu.muscle + 8.0 * tex)
        };
        PointEval { tissue, bone: Bone::None, hu }
    }

    /// [`Phantom::eval_anatomy`] at a scanner-frame point.
    pub fn eval(&self, w: V3) -> PointEval {
        self.eval_anatomy(self.pose.to_anatomy(w))
    }

    /// The analytic NV truth of `side`'s joint on the VOI `grid` (see [`NvTruth`]).
    pub fn nv_truth(&self, side: Side, grid: &Grid, params: NvParams) -> NvTruth {
        let up = up_of(&self.pose);
        // The mandible's highest point is its condylar head's (a capsule: the higher end's
        // sphere top); the neck, ramus and coronoid lie lower.
        let head = self.joint(side).head;
        let top = dot(head.a, up).max(dot(head.b, up)) + head.r;
        let hi = [0, 1, 2].map(|a| grid.origin[a] + grid.spacing[a] * (grid.dims[a] as f64 - 1.0));
        NvTruth { side, params, up, top, lo: grid.origin, hi }
    }

    /// Mandible distance at anatomy point `a` and its unit gradient (central differences; the
    /// union of exact distances is exact outside, so the gradient is the outward normal of the
    /// closest surface point).
    fn mandible_distance(&self, a: V3, margin: f64) -> (f64, Option<usize>, V3) {
        let (d, part) = self.mandible.nearest(a, margin);
        let g = [0, 1, 2].map(|k| {
            let mut plus = a;
            let mut minus = a;
            plus[k] += GRAD_EPS_MM;
            minus[k] -= GRAD_EPS_MM;
            (self.mandible.sdf(plus, margin) - self.mandible.sdf(minus, margin))
                / (2.0 * GRAD_EPS_MM)
        });
        (d, part, normalize_or(g, up_of(&self.pose)))
    }

    /// Whether anatomy point `a` (already known to be outside all bone) is NV of `truth`'s joint.
    fn in_nv(&self, truth: &NvTruth, a: V3) -> bool {
        let prm = &truth.params;
        // Exact wherever it is within max_mm: no primitive that close is skipped.
        let (d, part, n) = self.mandible_distance(a, prm.max_mm + 1.0);
        if d <= 0.0 || d > prm.max_mm {
            return false;
        }
        // The head is the condylar process's surface (inflate finds it as the part of the band
        // below the top connected to the top; here the anatomy names it).
        if !part.is_some_and(|i| self.condylar[truth.side.index()].contains(&i)) {
            return false;
        }
        let p = sub(a, scale(n, d));
        if dot(p, truth.up) < truth.top - prm.head_depth_mm || dot(n, truth.up) <= prm.min_up {
            return false;
        }
        self.first_bone_along(truth, p, n).is_some_and(|h| h >= d)
    }

    /// The first `t` in `[0, max_mm]` where `p + t n` (anatomy frame) enters cranial bone, or
    /// `None` when the ray leaves the VOI's voxel-centre box or reaches `max_mm` first. Sphere
    /// tracing on the cranial distance (a lower bound of the true distance: unions and
    /// intersections of exact distances), then bisection to 1e-6 mm.
    fn first_bone_along(&self, truth: &NvTruth, p: V3, n: V3) -> Option<f64> {
        let margin = truth.params.max_mm + 1.0;
        let bone = |t: f64| {
            let x = add(p, scale(n, t));
            self.cranial_within(x, self.skull.sdf(x), margin)
        };
        let mut t = 0.0;
        let mut prev = 0.0;
        loop {
            if !truth.inside(self.pose.to_world(add(p, scale(n, t)))) {
                return None;
            }
            let s = bone(t);
            if s <= 0.0 {
                let (mut lo, mut hi) = (prev, t);
                while hi - lo > 1e-6 {
                    let mid = 0.5 * (lo + hi);
                    if bone(mid) <= 0.0 {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                return Some(hi);
            }
            if t >= truth.params.max_mm {
                return None;
            }
            prev = t;
            t = (t + s.max(MIN_STEP_MM)).min(truth.params.max_mm);
        }
    }

    /// Label of a scanner-frame point for `truth`'s joint: 0 bg, 1 MC, 2 TB, 3 NV.
    pub fn label(&self, truth: &NvTruth, w: V3, e: &PointEval) -> u8 {
        match e.bone {
            Bone::Mandible => 1,
            Bone::Cranial => 2,
            Bone::Vertebra => 0,
            Bone::None => u8::from(self.in_nv(truth, self.pose.to_anatomy(w))) * 3,
        }
    }

    /// Centre of the condylar head of `side` in the scanner frame.
    pub fn joint_center_world(&self, side: Side) -> V3 {
        self.pose.to_world(self.joint(side).center())
    }

    /// Key for per-voxel noise of volume `which` (stateless, so parallel rendering is exact).
    pub fn noise_key(&self, which: u64) -> u64 {
        hash_words(&[self.key, which, 0x6e6f_6973])
    }
}

/// World superior (scanner +z) in the anatomy frame.
fn up_of(pose: &Pose) -> V3 {
    mat_t_vec(&pose.rot, [0.0, 0.0, 1.0])
}

/// What the analytic NV of one joint needs: the definition's parameters, world superior in the
/// anatomy frame, the mandible's top along it, and the VOI's voxel-centre box (world), which
/// bounds the rays as the VOI's masks bound `geometry::inflate`'s.
#[derive(Clone, Copy, Debug)]
pub struct NvTruth {
    pub side: Side,
    pub params: NvParams,
    up: V3,
    top: f64,
    lo: V3,
    hi: V3,
}

impl NvTruth {
    /// Whether world point `w` lies in the VOI's voxel-centre box.
    fn inside(&self, w: V3) -> bool {
        (0..3).all(|a| w[a] >= self.lo[a] && w[a] <= self.hi[a])
    }
}

/// A regular axis-aligned grid in the scanner frame.
#[derive(Clone, Copy, Debug)]
pub struct Grid {
    pub dims: [usize; 3],
    pub spacing: [f64; 3],
    /// World position of voxel (0, 0, 0).
    pub origin: V3,
}

impl Grid {
    /// A grid of `dims` voxels of `spacing` centred on `center`.
    pub fn centered(center: V3, dims: [usize; 3], spacing: [f64; 3]) -> Self {
        let origin = [0, 1, 2].map(|a| center[a] - spacing[a] * (dims[a] as f64 - 1.0) / 2.0);
        Grid { dims, spacing, origin }
    }

    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn world(&self, i: usize, j: usize, k: usize) -> V3 {
        [
            self.origin[0] + self.spacing[0] * i as f64,
            self.origin[1] + self.spacing[1] * j as f64,
            self.origin[2] + self.spacing[2] * k as f64,
        ]
    }

    /// One voxel step along each axis, as world vectors (the edges of a voxel).
    pub fn voxel_edges(&self) -> [V3; 3] {
        let s = self.spacing;
        [[s[0], 0.0, 0.0], [0.0, s[1], 0.0], [0.0, 0.0, s[2]]]
    }

    /// Whether world point `w` lies within the grid's voxel footprint.
    pub fn contains(&self, w: V3) -> bool {
        (0..3).all(|a| {
            let t = (w[a] - self.origin[a]) / self.spacing[a];
            t >= -0.5 && t <= self.dims[a] as f64 - 0.5
        })
    }

    /// Trilinear value of `data` (laid out on this grid) at world point `w`; points outside
    /// take the nearest edge voxel's values.
    pub fn sample_linear(&self, data: &[f32], w: V3) -> f32 {
        let x = [0, 1, 2].map(|a| (w[a] - self.origin[a]) / self.spacing[a]);
        crate::volume::trilinear(data, self.dims, x)
    }

    /// An empty volume with this grid's geometry (diagonal RAS affine).
    pub fn volume(&self, data: Vec<f32>) -> Volume {
        let mut v = Volume::zeros([0, 0, 0], self.spacing);
        v.dims = self.dims;
        for a in 0..3 {
            v.affine[a][3] = self.origin[a];
        }
        v.data = data;
        v
    }
}

/// The largest distance (mm) between the points a scan voxel's value is averaged over.
///
/// A CT voxel records the mean attenuation of its volume (partial volume), not the anatomy at
/// its centre. Sampling only the centre aliases every surface to the voxel grid: a 1.6 mm joint
/// space in a 1.5 mm scan shows as one dark voxel or two depending on where the grid falls, and
/// where inside a voxel a surface lies is lost before the blur, for any model. Averaging points
/// this far apart keeps it to within a fraction of this step, and costs a render at this
/// spacing for scans up to [`VOXEL_MEAN_MAX_POINTS`] steps per voxel edge.
pub const VOXEL_MEAN_STEP_MM: f64 = 0.5;

/// The most points along one voxel edge (64 per voxel): voxels coarser than 2 mm, which only
/// tests and the coarsest scans use, are averaged over a quarter of their edge, so that a 4 mm
/// head does not cost a 0.5 mm one.
pub const VOXEL_MEAN_MAX_POINTS: usize = 4;

/// The mean of `f` over the voxel centred at world point `w` whose edges are the world vectors
/// `edges` (one voxel step along each grid axis): `f` at the cell centres of a regular lattice
/// of cells at most [`VOXEL_MEAN_STEP_MM`] wide (and at most [`VOXEL_MEAN_MAX_POINTS`] along an
/// edge). A voxel no wider than the step is its centre alone.
pub fn voxel_mean(w: V3, edges: [V3; 3], f: impl Fn(V3) -> f64) -> f64 {
    let n = edges.map(|e| {
        let cells = (super::anatomy::norm(e) / VOXEL_MEAN_STEP_MM).ceil() as usize;
        cells.clamp(1, VOXEL_MEAN_MAX_POINTS)
    });
    if n == [1, 1, 1] {
        return f(w);
    }
    let cell = |a: usize, i: usize| (i as f64 + 0.5) / n[a] as f64 - 0.5;
    let mut sum = 0.0;
    for i in 0..n[0] {
        for j in 0..n[1] {
            for k in 0..n[2] {
                let t = [cell(0, i), cell(1, j), cell(2, k)];
                sum += f([0, 1, 2].map(|c| w[c] + (0..3).map(|a| t[a] * edges[a][c]).sum::<f64>()));
            }
        }
    }
    sum / (n[0] * n[1] * n[2]) as f64
}

/// Renders clean HU and per-voxel values of `f` over `grid`, in parallel over `i` slabs.
pub fn render<T: Send + Copy + Default>(
    grid: &Grid,
    f: impl Fn(V3) -> (f32, T) + Sync,
) -> (Vec<f32>, Vec<T>) {
    let [_, h, w] = grid.dims;
    let n = grid.len();
    let mut ct = vec![0f32; n];
    let mut extra = vec![T::default(); n];
    ct.par_chunks_mut(h * w.max(1)).zip(extra.par_chunks_mut(h * w.max(1))).enumerate().for_each(
        |(i, (ct_slab, ex_slab))| {
            for j in 0..h {
                for k in 0..w {
                    let (v, e) = f(grid.world(i, j, k));
                    ct_slab[j * w + k] = v;
                    ex_slab[j * w + k] = e;
                }
            }
        },
    );
    (ct, extra)
}

/// Separable Gaussian blur (partial-volume effect) with `sigma` in voxels, clamped edges.
pub fn blur(data: &mut [f32], dims: [usize; 3], sigma: f64) {
    if sigma <= 0.0 || data.is_empty() {
        return;
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let mut kernel: Vec<f64> =
        (-radius..=radius).map(|x| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp()).collect();
    let sum: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|w| *w /= sum);
    let [_, h, w] = dims;
    let strides = [h * w, w, 1];
    for axis in 0..3 {
        let len = dims[axis];
        let stride = strides[axis];
        let src = data.to_vec();
        // Every voxel reads only `src`, so the parallel write order does not matter.
        data.par_chunks_mut(h * w).enumerate().for_each(|(i, slab)| {
            for j in 0..h {
                for k in 0..w {
                    let idx = [i, j, k];
                    let pos = idx[axis] as isize;
                    let base = i * h * w + j * w + k - idx[axis] * stride;
                    let mut acc = 0.0;
                    for (t, kw) in kernel.iter().enumerate() {
                        let q = (pos + t as isize - radius).clamp(0, len as isize - 1) as usize;
                        acc += kw * src[base + q * stride] as f64;
                    }
                    slab[j * w + k] = acc as f32;
                }
            }
        });
    }
}

/// Adds Gaussian noise of `sigma` HU that depends only on `(key, voxel index)`.
///
/// Each voxel picks one of 2^16 Gaussian samples (drawn from `key`) by a hash of its index: one
/// mixing round per voxel instead of a logarithm and a cosine, with the same distribution.
pub fn add_noise(data: &mut [f32], key: u64, sigma: f64) {
    if sigma <= 0.0 {
        return;
    }
    const TABLE_BITS: u32 = 16;
    let table: Vec<f32> =
        (0..1u64 << TABLE_BITS).map(|i| (sigma * gauss_at(key, i)) as f32).collect();
    let mask = (1u64 << TABLE_BITS) - 1;
    let pick_key = splitmix64(key ^ 0x7069_636b);
    data.par_iter_mut().enumerate().for_each(|(i, v)| {
        *v += table[(splitmix64(pick_key ^ i as u64) & mask) as usize];
    });
}
