//! `report.png` and the stdout summary of an `nv` run.
//!
//! The picture, one row per side (R first, as a radiologist reads: patient's right on the left):
//! a coronal and a sagittal slice of the VOI CT through the condyle centre with MC (red), TB
//! (green) and NV (blue) over it, and a shaded rendering of the three meshes (a small
//! orthographic z-buffer rasteriser, MC and NV opaque, TB translucent so the joint space shows),
//! seen from lateral, anterior and a little below (so the fossa does not hide the condyle).
//! Under the rows a bar of NV left against right with the asymmetry index. Text is a built-in
//! 5x7 bitmap font, so the PNG reads without anything else.

use std::path::Path;

use super::nv::Report;
use crate::geometry::Mesh;
use crate::io::canvas::Canvas;
use crate::io::orientation;
use crate::synth::Side;
use crate::volume::Volume;
use crate::Result;

/// What the picture shows of one side.
pub struct SidePicture<'a> {
    pub side: Side,
    pub voi: &'a Volume,
    /// 0 bg, 1 MC, 2 TB, 3 NV on the VOI grid.
    pub labels: &'a Volume,
    pub center_ras_mm: [f64; 3],
    /// MC, TB, NV in world mm.
    pub meshes: &'a [Mesh; 3],
}

const WINDOW_HU: (f32, f32) = (-600.0, 1600.0);
const ALPHA: f32 = 0.45;
const COLORS: [[u8; 3]; 3] = [[235, 60, 60], [60, 210, 60], [70, 140, 255]];
const ROW_H: usize = 220;
const GAP: usize = 8;
const TEXT: [u8; 3] = [235, 235, 235];

// ---- slices -----------------------------------------------------------------------------------

/// Which slice of the (world-axis-aligned) VOI a panel shows.
#[derive(Clone, Copy)]
enum Plane {
    /// x across (patient's right on the left), z up.
    Coronal,
    /// y across (anterior on the left), z up.
    Sagittal,
}

/// A slice through voxel `at`, scaled to `ROW_H` pixels high, labels over the CT.
fn slice(voi: &Volume, labels: &Volume, at: [usize; 3], plane: Plane) -> Canvas {
    let [d, h, w] = voi.dims;
    let (cols, rows) = match plane {
        Plane::Coronal => (d, w),
        Plane::Sagittal => (h, w),
    };
    // Keep the voxels square: the VOI spacing is isotropic.
    let scale = ROW_H as f64 / rows as f64;
    let (cw, ch) = (((cols as f64) * scale).round() as usize, ROW_H);
    let mut c = Canvas::new(cw.max(1), ch, [0, 0, 0]);
    for y in 0..ch {
        for x in 0..cw {
            let col = ((x as f64 / scale) as usize).min(cols - 1);
            let row = ((y as f64 / scale) as usize).min(rows - 1);
            let q = match plane {
                Plane::Coronal => voi.index(d - 1 - col, at[1], w - 1 - row),
                Plane::Sagittal => voi.index(at[0], h - 1 - col, w - 1 - row),
            };
            let g = ((voi.data[q] - WINDOW_HU.0) / (WINDOW_HU.1 - WINDOW_HU.0)).clamp(0.0, 1.0);
            let mut px = [g * 255.0; 3];
            let l = labels.data[q] as usize;
            if (1..=3).contains(&l) {
                for (p, k) in px.iter_mut().zip(COLORS[l - 1]) {
                    *p = *p * (1.0 - ALPHA) + f32::from(k) * ALPHA;
                }
            }
            c.set(x, y, px.map(|v| v as u8));
        }
    }
    c
}

// ---- meshes -----------------------------------------------------------------------------------

type V3 = [f64; 3];

fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn cross(a: V3, b: V3) -> V3 {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}
fn unit(a: V3) -> V3 {
    let l = dot(a, a).sqrt();
    if l > 0.0 {
        a.map(|x| x / l)
    } else {
        a
    }
}

/// An orthographic camera: screen x along `right`, y along `up`, depth along `forward`.
struct Camera {
    right: V3,
    up: V3,
    forward: V3,
    center: V3,
    scale: f64,
    size: [usize; 2],
}

impl Camera {
    /// Looking at the joint of `side` from lateral, anterior and a little below, fitted to
    /// `meshes`.
    fn for_side(side: Side, meshes: &[&Mesh], size: [usize; 2]) -> Option<Camera> {
        let lateral = [side.sign(), 0.0, 0.0];
        let eye = unit([lateral[0] * 0.8, 0.45, -0.3]);
        let forward = eye.map(|x| -x);
        let right = unit(cross(forward, [0.0, 0.0, 1.0]));
        let up = cross(right, forward);
        let pts: Vec<V3> =
            meshes.iter().flat_map(|m| m.vertices.iter().map(|v| v.map(f64::from))).collect();
        if pts.is_empty() {
            return None;
        }
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for p in &pts {
            for a in 0..3 {
                lo[a] = lo[a].min(p[a]);
                hi[a] = hi[a].max(p[a]);
            }
        }
        let center = [0, 1, 2].map(|a| (lo[a] + hi[a]) / 2.0);
        let (mut ex, mut ey) = (1e-6f64, 1e-6f64);
        for p in &pts {
            let d = sub(*p, center);
            ex = ex.max(dot(d, right).abs());
            ey = ey.max(dot(d, up).abs());
        }
        let scale = 0.46 * (size[0] as f64 / ex).min(size[1] as f64 / ey);
        Some(Camera { right, up, forward, center, scale, size })
    }

    fn project(&self, p: V3) -> V3 {
        let d = sub(p, self.center);
        [
            self.size[0] as f64 / 2.0 + dot(d, self.right) * self.scale,
            self.size[1] as f64 / 2.0 - dot(d, self.up) * self.scale,
            dot(d, self.forward),
        ]
    }
}

/// Fragments of a mesh: per pixel the nearest depth and its shade, `INFINITY` where empty.
struct Layer {
    depth: Vec<f64>,
    shade: Vec<f32>,
}

/// Rasterises `mesh` (flat-shaded, two-sided headlight) into a fresh layer.
fn rasterise(mesh: &Mesh, cam: &Camera) -> Layer {
    let [w, h] = cam.size;
    let mut layer = Layer { depth: vec![f64::INFINITY; w * h], shade: vec![0.0; w * h] };
    let pts: Vec<V3> = mesh.vertices.iter().map(|v| cam.project(v.map(f64::from))).collect();
    for t in &mesh.triangles {
        let [a, b, c] = t.map(|i| pts[i as usize]);
        let world = t.map(|i| mesh.vertices[i as usize].map(f64::from));
        let n = unit(cross(sub(world[1], world[0]), sub(world[2], world[0])));
        let shade = (0.25 + 0.75 * dot(n, cam.forward).abs()) as f32;
        let area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
        if area.abs() < 1e-12 {
            continue;
        }
        let x0 = a[0].min(b[0]).min(c[0]).floor().max(0.0) as usize;
        let x1 = (a[0].max(b[0]).max(c[0]).ceil().max(0.0) as usize).min(w.saturating_sub(1));
        let y0 = a[1].min(b[1]).min(c[1]).floor().max(0.0) as usize;
        let y1 = (a[1].max(b[1]).max(c[1]).ceil().max(0.0) as usize).min(h.saturating_sub(1));
        for y in y0..=y1 {
            for x in x0..=x1 {
                let p = [x as f64 + 0.5, y as f64 + 0.5];
                let e =
                    |u: V3, v: V3| (v[0] - u[0]) * (p[1] - u[1]) - (v[1] - u[1]) * (p[0] - u[0]);
                let (wa, wb, wc) = (e(b, c) / area, e(c, a) / area, e(a, b) / area);
                if wa < 0.0 || wb < 0.0 || wc < 0.0 {
                    continue;
                }
                let z = wa * a[2] + wb * b[2] + wc * c[2];
                let q = y * w + x;
                if z < layer.depth[q] {
                    layer.depth[q] = z;
                    layer.shade[q] = shade;
                }
            }
        }
    }
    layer
}

/// MC and NV opaque, TB at 40 % over whatever lies behind it.
fn render_meshes(side: Side, meshes: &[Mesh; 3], size: [usize; 2]) -> Canvas {
    let mut c = Canvas::new(size[0], size[1], [20, 20, 28]);
    let all: Vec<&Mesh> = meshes.iter().collect();
    let Some(cam) = Camera::for_side(side, &all, size) else {
        c.text(8, size[1] / 2, "NO SURFACES", 2, TEXT);
        return c;
    };
    let layers: Vec<Layer> = meshes.iter().map(|m| rasterise(m, &cam)).collect();
    for q in 0..size[0] * size[1] {
        let (mc, tb, nv) = (&layers[0], &layers[1], &layers[2]);
        let opaque = if mc.depth[q] <= nv.depth[q] { (mc, 0) } else { (nv, 2) };
        let mut px = [20.0f32, 20.0, 28.0];
        if opaque.0.depth[q].is_finite() {
            px = COLORS[opaque.1].map(|k| f32::from(k) * opaque.0.shade[q]);
        }
        if tb.depth[q] < opaque.0.depth[q] {
            let t = COLORS[1].map(|k| f32::from(k) * tb.shade[q]);
            for a in 0..3 {
                px[a] = px[a] * 0.6 + t[a] * 0.4;
            }
        }
        c.rgb[q * 3..q * 3 + 3].copy_from_slice(&px.map(|v| v.clamp(0.0, 255.0) as u8));
    }
    c
}

// ---- the page ---------------------------------------------------------------------------------

fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("-".to_string(), |x| format!("{x:.1}{unit}"))
}

/// The NV bar chart: L and R bars on a shared scale, values and the asymmetry index.
fn bars(report: &Report, w: usize) -> Canvas {
    let h = 150;
    let mut c = Canvas::new(w, h, [12, 12, 16]);
    let nv = |s: &str| report.sides.get(s).and_then(|x| x.as_ref()).map(|x| x.nv_mm3);
    let (l, r) = (nv("L"), nv("R"));
    let max = l.unwrap_or(0.0).max(r.unwrap_or(0.0)).max(1e-9);
    let bar_w = w.saturating_sub(260);
    for (row, (name, v)) in [("L", l), ("R", r)].into_iter().enumerate() {
        let y = 12 + row * 44;
        c.text(10, y + 6, name, 3, TEXT);
        match v {
            Some(v) => {
                let len = ((v / max) * bar_w as f64).round() as usize;
                c.fill(50, y, len.max(1), 32, COLORS[2]);
                c.text(60 + len, y + 9, &format!("{v:.1} MM3"), 2, TEXT);
            }
            None => c.text(50, y + 9, "NOT FOUND", 2, [200, 120, 120]),
        }
    }
    let a = &report.asymmetry;
    let line = format!(
        "NV L-R {}  L/R {}  ASYMMETRY INDEX |L-R|/(L+R) {}",
        fmt_opt(a.nv_l_minus_r_mm3, " MM3"),
        a.nv_ratio_l_over_r.map_or("-".into(), |x| format!("{x:.2}")),
        a.asymmetry_index.map_or("-".into(), |x| format!("{x:.3}")),
    );
    c.text(10, h - 40, &line, 2, TEXT);
    c
}

/// One side's caption: NV, joint spaces, volumes and (with --gt) the scores.
fn caption(report: &Report, side: Side) -> Vec<String> {
    let Some(Some(s)) = report.sides.get(side.name()) else {
        let why = report.reasons.get(side.name()).cloned().unwrap_or_default();
        return vec![format!("{side}: NOT FOUND"), why.chars().take(110).collect()];
    };
    let js = &s.joint_space_mm;
    let mut lines = vec![
        format!(
            "{side}: NV {:.1} MM3   MC {:.0} MM3   TB {:.0} MM3",
            s.nv_mm3, s.mc_volume_mm3, s.tb_volume_mm3
        ),
        format!(
            "JOINT SPACE MM: ANT {} SUP {} POST {} MIN {} MEAN {}",
            fmt_opt(js.anterior, ""),
            fmt_opt(js.superior, ""),
            fmt_opt(js.posterior, ""),
            fmt_opt(js.min, ""),
            fmt_opt(js.mean, "")
        ),
    ];
    if let Some(m) = &s.metrics {
        lines.push(format!(
            "VS TRUTH: DICE MC {:.3} TB {:.3} NV {:.3}  NV TRUTH {:.1} MM3",
            m.mc.dice, m.tb.dice, m.nv.dice, m.nv_truth_mm3
        ));
    }
    if !s.warnings.is_empty() {
        lines.push("WARNING: THE JOINT SPACE CLOSES (MIN < 1 VOXEL): NV LIKELY TOO SMALL".into());
    }
    lines
}

/// Writes `report.png` (see the module docs).
///
/// # Errors
/// [`Error::Io`] / [`Error::Format`] when the file cannot be written.
pub fn write_png(path: &Path, report: &Report, sides: &[SidePicture]) -> Result<()> {
    let mesh_size = [300, ROW_H];
    let mut rows: Vec<(Side, Option<Canvas>)> = Vec::new();
    for side in [Side::R, Side::L] {
        let pic = sides.iter().find(|p| p.side == side);
        rows.push((side, pic.map(|p| side_row(p, mesh_size)).transpose()?));
    }
    let width = rows.iter().filter_map(|r| r.1.as_ref().map(|c| c.w)).max().unwrap_or(700).max(900);
    let caption_h = 4 * 20 + 8;
    let title_h = 34;
    let height = title_h + rows.len() * (caption_h + ROW_H + GAP) + 150 + GAP;
    let mut page = Canvas::new(width, height, [0, 0, 0]);
    let name = Path::new(&report.input)
        .file_name()
        .map_or(report.input.clone(), |n| n.to_string_lossy().into_owned());
    page.text(8, 8, &format!("DNVS NEGATIVE VOLUME  {name}  (MC RED, TB GREEN, NV BLUE)"), 2, TEXT);
    let mut y = title_h;
    for (side, row) in &rows {
        for (i, line) in caption(report, *side).iter().enumerate() {
            page.text(8, y + i * 20, line, 2, TEXT);
        }
        y += caption_h;
        match row {
            Some(c) => page.blit(c, 0, y),
            None => page.fill(0, y, width, ROW_H, [30, 18, 18]),
        }
        y += ROW_H + GAP;
    }
    page.blit(&bars(report, width), 0, y);
    page.write(path)
}

/// Coronal slice, sagittal slice and mesh rendering side by side.
fn side_row(p: &SidePicture, mesh_size: [usize; 2]) -> Result<Canvas> {
    let inv = super::stages::invert(&p.voi.affine)?;
    let c = orientation::apply(&inv, p.center_ras_mm);
    let at = [0, 1, 2].map(|a| c[a].round().clamp(0.0, (p.voi.dims[a] - 1) as f64) as usize);
    let panels = [
        slice(p.voi, p.labels, at, Plane::Coronal),
        slice(p.voi, p.labels, at, Plane::Sagittal),
        render_meshes(p.side, p.meshes, mesh_size),
    ];
    let w = panels.iter().map(|c| c.w).sum::<usize>() + GAP * 2;
    let mut row = Canvas::new(w, ROW_H, [0, 0, 0]);
    let mut x = 0;
    for c in &panels {
        row.blit(c, x, 0);
        x += c.w + GAP;
    }
    Ok(row)
}

/// The stdout summary: per side NV and joint spaces, the asymmetry, where the files are.
pub fn summary(report: &Report, out: &Path) -> String {
    let mut s = String::new();
    for side in Side::BOTH {
        match report.sides.get(side.name()) {
            Some(Some(r)) => {
                let js = &r.joint_space_mm;
                s += &format!(
                    "{side}: NV {:.1} mm^3, joint space min {} mean {} (ant {} sup {} post {}) mm",
                    r.nv_mm3,
                    fmt_opt(js.min, ""),
                    fmt_opt(js.mean, ""),
                    fmt_opt(js.anterior, ""),
                    fmt_opt(js.superior, ""),
                    fmt_opt(js.posterior, ""),
                );
                if let Some(m) = &r.metrics {
                    s += &format!(
                        "; truth NV {:.1} mm^3, Dice MC {:.3} TB {:.3}",
                        m.nv_truth_mm3, m.mc.dice, m.tb.dice
                    );
                }
                s.push('\n');
                for w in &r.warnings {
                    s += &format!("warning: {w}\n");
                }
            }
            _ => {
                let why = report.reasons.get(side.name()).map_or("", |r| r.as_str());
                s += &format!("{side}: not found ({why})\n");
            }
        }
    }
    for w in &report.warnings {
        s += &format!("warning: {w}\n");
    }
    if let Some(ai) = report.asymmetry.asymmetry_index {
        s += &format!("asymmetry index |L-R|/(L+R) = {ai:.3}\n");
    }
    s += &format!(
        "files: {0}/report.json, {0}/report.png, {0}/labels.nii.gz, {0}/L/, {0}/R/\n",
        out.display()
    );
    s
}
