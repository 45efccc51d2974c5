//! Quick-look PNGs of a phantom: axial, coronal and sagittal slices side by side, CT in a bone
//! window on the top row and with the labels over it below (MC red, TB green, NV blue). Radiological convention: the
//! patient's right (+x) on the image's left, anterior up in axial, superior up otherwise.

use std::path::Path;

use super::{PhantomCase, VoiCase};
use crate::volume::Volume;
use crate::Result;

/// Grey window (HU) wide enough for soft tissue and cortical bone.
const WINDOW: (f32, f32) = (-600.0, 1600.0);
const OVERLAY_ALPHA: f32 = 0.45;
const COLORS: [[f32; 3]; 3] = [[255.0, 60.0, 60.0], [60.0, 220.0, 60.0], [60.0, 140.0, 255.0]];

/// An RGB image.
pub(crate) struct Image {
    pub(crate) w: usize,
    pub(crate) h: usize,
    pub(crate) rgb: Vec<u8>,
}

/// Which plane a panel shows.
#[derive(Clone, Copy)]
pub(crate) enum Plane {
    Axial,
    Coronal,
    Sagittal,
}

/// One panel through voxel `at`: `label(idx)` gives 0 (none) or 1..=3 (MC, TB, NV).
pub(crate) fn panel(
    ct: &Volume,
    label: &dyn Fn(usize) -> u8,
    at: [usize; 3],
    plane: Plane,
    zoom: usize,
) -> Image {
    let [d, h, w] = ct.dims;
    // (columns, rows) and the voxel of each (col, row) before zoom.
    let (cols, rows) = match plane {
        Plane::Axial => (d, h),
        Plane::Coronal => (d, w),
        Plane::Sagittal => (h, w),
    };
    let voxel = |c: usize, r: usize| -> usize {
        match plane {
            // +x (right) on the left, +y (anterior) up.
            Plane::Axial => ct.index(d - 1 - c, h - 1 - r, at[2]),
            // +x on the left, +z (superior) up.
            Plane::Coronal => ct.index(d - 1 - c, at[1], w - 1 - r),
            // Anterior on the left, superior up.
            Plane::Sagittal => ct.index(at[0], h - 1 - c, w - 1 - r),
        }
    };
    let (iw, ih) = (cols * zoom, rows * zoom);
    let mut rgb = vec![0u8; iw * ih * 3];
    for y in 0..ih {
        for x in 0..iw {
            let idx = voxel(x / zoom, y / zoom);
            let g = ((ct.data[idx] - WINDOW.0) / (WINDOW.1 - WINDOW.0)).clamp(0.0, 1.0) * 255.0;
            let mut px = [g; 3];
            let l = label(idx);
            if l > 0 {
                let c = COLORS[usize::from(l - 1).min(2)];
                for (p, c) in px.iter_mut().zip(c) {
                    *p = *p * (1.0 - OVERLAY_ALPHA) + c * OVERLAY_ALPHA;
                }
            }
            let o = (y * iw + x) * 3;
            for ch in 0..3 {
                rgb[o + ch] = px[ch] as u8;
            }
        }
    }
    Image { w: iw, h: ih, rgb }
}

/// Panels side by side on black, 4 pixels apart.
pub(crate) fn montage_row(panels: &[Image]) -> Image {
    let gap = 4;
    let w = panels.iter().map(|p| p.w).sum::<usize>() + gap * panels.len().saturating_sub(1);
    let h = panels.iter().map(|p| p.h).max().unwrap_or(0);
    let mut rgb = vec![0u8; w * h * 3];
    let mut x0 = 0;
    for p in panels {
        for y in 0..p.h {
            let src = &p.rgb[y * p.w * 3..(y + 1) * p.w * 3];
            let o = (y * w + x0) * 3;
            rgb[o..o + p.w * 3].copy_from_slice(src);
        }
        x0 += p.w + gap;
    }
    Image { w, h, rgb }
}

/// The three planes through `at`: CT alone on the top row, with the labels below.
fn montage(ct: &Volume, label: &dyn Fn(usize) -> u8, at: [usize; 3], zoom: usize) -> Image {
    let planes = [Plane::Axial, Plane::Coronal, Plane::Sagittal];
    let plain = planes.map(|p| panel(ct, &|_| 0, at, p, zoom));
    let labelled = planes.map(|p| panel(ct, label, at, p, zoom));
    let (top, bottom) = (montage_row(&plain), montage_row(&labelled));
    let gap = 4;
    let mut rgb = top.rgb;
    rgb.resize(top.w * (top.h + gap) * 3, 0);
    rgb.extend_from_slice(&bottom.rgb);
    Image { w: top.w, h: top.h + gap + bottom.h, rgb }
}

pub(crate) fn write_png(path: &Path, img: &Image) -> Result<()> {
    crate::io::png::write_rgb(path, img.w, img.h, &img.rgb)
}

/// Voxel index nearest to world point `p` in `vol` (diagonal affine), clamped into the volume.
fn voxel_of(vol: &Volume, p: [f64; 3]) -> [usize; 3] {
    [0, 1, 2].map(|a| {
        let t = ((p[a] - vol.affine[a][3]) / vol.affine[a][a]).round();
        t.clamp(0.0, vol.dims[a] as f64 - 1.0) as usize
    })
}

/// Axial, coronal and sagittal slices through the centre of a VOI, zoomed 2x.
///
/// # Errors
/// [`Error::Io`] when the file cannot be written.
pub fn write_voi_preview(path: &Path, v: &VoiCase) -> Result<()> {
    let at = v.ct.dims.map(|d| d / 2);
    let label = |i: usize| {
        if v.nv.data[i] > 0.5 {
            3
        } else if v.tb.data[i] > 0.5 {
            2
        } else {
            u8::from(v.mc.data[i] > 0.5)
        }
    };
    write_png(path, &montage(&v.ct, &label, at, 2))
}

/// Axial and coronal slices through the right condyle and a sagittal one through it, zoomed 2x.
///
/// # Errors
/// [`Error::Io`] when the file cannot be written.
pub fn write_head_preview(path: &Path, case: &PhantomCase) -> Result<()> {
    let at = voxel_of(&case.head_ct, case.phantom.joint_center_world(super::Side::R));
    let labels = &case.head_labels;
    let label = |i: usize| labels.data[i] as u8;
    write_png(path, &montage(&case.head_ct, &label, at, 2))
}
