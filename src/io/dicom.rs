//! DICOM series -> one volume: slices ordered along their normal, spacing from positions, rescale
//! applied, any transfer syntax dicom-pixeldata decodes (incl. JPEG 2000 lossless).
//!
//! Array axes follow the NIfTI habit of dcm2niix-style converters: `i` runs along a row (column
//! index), `j` down the columns (row index), `k` along the slice normal. The affine maps those to
//! RAS millimetres (DICOM's LPS with x and y negated).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};
use rayon::prelude::*;

use super::dicom_scan::check_lengths;
use super::nifti::{generated_header, DataType};
use super::orientation;
use crate::volume::Volume;
use crate::{Error, Result};

/// Relative variation of the slice-to-slice distance tolerated before a series counts as
/// unevenly spaced (missing slices, mixed acquisitions).
const SPACING_TOL: f64 = 0.01;
/// Largest angle (degrees) between the slice stacking direction and the slice normal: more is a
/// gantry tilt, which a rectangular voxel grid cannot represent.
const TILT_TOL_DEG: f64 = 0.1;
/// Slices decoded together (in parallel) before they are placed in the volume.
const DECODE_BATCH: usize = 16;

/// The geometry of one slice file, read without its pixel data.
#[derive(Clone, Debug)]
struct SliceInfo {
    path: PathBuf,
    series: String,
    description: String,
    position: [f64; 3],
    orientation: [f64; 6],
    pixel_spacing: [f64; 2],
    rows: usize,
    columns: usize,
    frames: usize,
    slope: f64,
    intercept: f64,
}

/// Reads the DICOM series in `dir` (every file in it; dot files and `DICOMDIR` are skipped).
/// With several series in the folder, `series` picks one by SeriesInstanceUID.
///
/// Slices are ordered by the projection of ImagePositionPatient on the slice normal (the cross
/// product of the ImageOrientationPatient row and column directions); the slice spacing comes
/// from those positions, never from SliceThickness. RescaleSlope/RescaleIntercept are applied per
/// slice, so a CT reads in HU. The volume carries a generated NIfTI header asking for int16
/// output, so `write_nifti(.., VoxelKind::Image)` stores HU compactly when they fit.
///
/// # Errors
/// [`Error::Format`] naming the folder or file: an empty folder, a file that is not DICOM, a
/// file without the geometry tags, several series when none is chosen (the error lists them), an
/// unknown `series`, slices of different size or orientation, two slices at one position,
/// uneven spacing (> 1 %), a gantry tilt, multi-frame files, pixel data that cannot be decoded,
/// a rescale, position, orientation, spacing, size or bit-depth value that is not a number, an
/// element whose declared length runs past the end of its file (checked before the DICOM parser
/// allocates it), a JPEG 2000 codestream whose size disagrees with Rows x Columns. A panic inside
/// a pixel decoder is contained and reported as an error naming the file. Peak memory: the
/// volume plus 16 decoded slices.
pub fn read_dicom_series(dir: &Path, series: Option<&str>) -> Result<Volume> {
    let files = list_files(dir)?;
    let infos: Vec<SliceInfo> = files.par_iter().map(read_info).collect::<Result<_>>()?;
    let mut slices = choose_series(dir, infos, series)?;
    let geometry = stack_geometry(dir, &mut slices)?;

    let (rows, cols, n) = (geometry.rows, geometry.columns, slices.len());
    // Decoded a batch of slices at a time and placed at once, so the peak is the volume plus one
    // batch, not the volume twice. Frame pixel (r, c) of slice s -> index (c * rows + r) * n + s.
    let mut data = vec![0f32; cols * rows * n];
    for (b, batch) in slices.chunks(DECODE_BATCH).enumerate() {
        let frames: Vec<Vec<f32>> = batch.par_iter().map(decode_slice).collect::<Result<_>>()?;
        let s0 = b * DECODE_BATCH;
        data.par_chunks_mut(rows * n).enumerate().for_each(|(c, plane)| {
            for r in 0..rows {
                for (ds, frame) in frames.iter().enumerate() {
                    plane[r * n + s0 + ds] = frame[r * cols + c];
                }
            }
        });
    }
    let mut vol = Volume {
        data,
        dims: [cols, rows, n],
        spacing: geometry.spacing,
        affine: geometry.affine,
        header: None,
    };
    let uid = &slices[0].series;
    vol.header = Some(generated_header(&vol, DataType::I16, &format!("DICOM series {uid}")));
    Ok(vol)
}

fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.eq_ignore_ascii_case("DICOMDIR") || path.is_dir() {
            continue;
        }
        files.push(path);
    }
    if files.is_empty() {
        return Err(Error::format(dir, "no files in this folder: a DICOM series is needed"));
    }
    files.sort();
    Ok(files)
}

fn open_header(path: &Path) -> Result<DefaultDicomObject> {
    OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| Error::format(path, format!("not a readable DICOM file: {e}")))
}

/// Reads one slice's series and geometry tags (pixel data are not loaded).
fn read_info(path: &PathBuf) -> Result<SliceInfo> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    check_lengths(path, &bytes)?;
    drop(bytes);
    let obj = open_header(path)?;
    let text = |tag, name: &str| -> Result<String> {
        let e = obj
            .element_opt(tag)
            .ok()
            .flatten()
            .ok_or_else(|| Error::format(path, format!("missing {name}")))?;
        let s = e.to_str().map_err(|err| Error::format(path, format!("{name}: {err}")))?;
        Ok(s.trim().trim_end_matches('\0').to_string())
    };
    let floats = |tag, name: &str, n: usize| -> Result<Vec<f64>> {
        let e =
            obj.element_opt(tag).ok().flatten().ok_or_else(|| {
                Error::format(path, format!("missing {name}; not an image slice"))
            })?;
        let v =
            e.to_multi_float64().map_err(|err| Error::format(path, format!("{name}: {err}")))?;
        if v.len() != n || v.iter().any(|x| !x.is_finite()) {
            return Err(Error::format(path, format!("{name} should be {n} numbers, is {v:?}")));
        }
        Ok(v)
    };
    // Absent or empty: the default. Present but not a finite number: an error, never a silent
    // default (an intercept read as 0 shifts one slice by 1024 HU against its neighbours).
    let opt_float = |tag, name: &str, default: f64| -> Result<f64> {
        let Some(e) = obj.element_opt(tag).ok().flatten() else { return Ok(default) };
        let text = e.to_str().map(|t| t.trim().trim_end_matches('\0').to_string());
        if text.as_deref().is_ok_and(str::is_empty) {
            return Ok(default);
        }
        match e.to_float64() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(Error::format(
                path,
                format!("{name} {:?} is not a number", text.unwrap_or_default()),
            )),
        }
    };
    let int = |tag, name: &str| -> Result<usize> {
        let e = obj
            .element_opt(tag)
            .ok()
            .flatten()
            .ok_or_else(|| Error::format(path, format!("missing {name}")))?;
        e.to_int::<u32>()
            .map(|v| v as usize)
            .map_err(|err| Error::format(path, format!("{name}: {err}")))
    };
    let position = floats(tags::IMAGE_POSITION_PATIENT, "ImagePositionPatient", 3)?;
    let orientation = floats(tags::IMAGE_ORIENTATION_PATIENT, "ImageOrientationPatient", 6)?;
    let pixel_spacing = floats(tags::PIXEL_SPACING, "PixelSpacing", 2)?;
    let slope = opt_float(tags::RESCALE_SLOPE, "RescaleSlope", 1.0)?;
    let opt_int = |tag, name: &str, default: usize| -> Result<usize> {
        match obj.element_opt(tag).ok().flatten() {
            None => Ok(default),
            Some(_) => int(tag, name),
        }
    };
    check_pixel_format(path, &int, &opt_int)?;
    let (rows, columns) = (int(tags::ROWS, "Rows")?, int(tags::COLUMNS, "Columns")?);
    if rows == 0 || columns == 0 {
        return Err(Error::format(path, format!("image of {rows} rows x {columns} columns")));
    }
    Ok(SliceInfo {
        path: path.clone(),
        series: text(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?,
        description: text(tags::SERIES_DESCRIPTION, "SeriesDescription").unwrap_or_default(),
        position: [position[0], position[1], position[2]],
        orientation: orientation.try_into().expect("checked: 6 values"),
        pixel_spacing: [pixel_spacing[0], pixel_spacing[1]],
        rows,
        columns,
        frames: opt_int(tags::NUMBER_OF_FRAMES, "NumberOfFrames", 1)?,
        slope: if slope == 0.0 { 1.0 } else { slope },
        intercept: opt_float(tags::RESCALE_INTERCEPT, "RescaleIntercept", 0.0)?,
    })
}

/// Samples per pixel and bit depths the reader can turn into HU: one greyscale sample of 8 or 16
/// (or 32) bits, `BitsStored` at most `BitsAllocated`, `HighBit` below it.
fn check_pixel_format(
    path: &Path,
    int: &dyn Fn(dicom_object::Tag, &str) -> Result<usize>,
    opt_int: &dyn Fn(dicom_object::Tag, &str, usize) -> Result<usize>,
) -> Result<()> {
    let spp = opt_int(tags::SAMPLES_PER_PIXEL, "SamplesPerPixel", 1)?;
    if spp != 1 {
        return Err(Error::format(
            path,
            format!("{spp} samples per pixel; a greyscale CT is needed"),
        ));
    }
    let allocated = int(tags::BITS_ALLOCATED, "BitsAllocated")?;
    let stored = opt_int(tags::BITS_STORED, "BitsStored", allocated)?;
    let high = opt_int(tags::HIGH_BIT, "HighBit", stored.saturating_sub(1))?;
    if ![8, 16, 32].contains(&allocated) || stored == 0 || stored > allocated || high >= allocated {
        return Err(Error::format(
            path,
            format!(
                "BitsAllocated {allocated}, BitsStored {stored}, HighBit {high}: not a pixel \
                 format of 8, 16 or 32 bits"
            ),
        ));
    }
    Ok(())
}

fn choose_series(dir: &Path, infos: Vec<SliceInfo>, want: Option<&str>) -> Result<Vec<SliceInfo>> {
    let mut by_series: BTreeMap<String, Vec<SliceInfo>> = BTreeMap::new();
    for info in infos {
        by_series.entry(info.series.clone()).or_default().push(info);
    }
    let listing = || {
        by_series
            .iter()
            .map(|(uid, s)| format!("{uid} ({} files, \"{}\")", s.len(), s[0].description))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match want {
        Some(uid) => {
            let uid = uid.trim();
            if !by_series.contains_key(uid) {
                let msg = format!("series {uid} is not in this folder; it holds: {}", listing());
                return Err(Error::format(dir, msg));
            }
            Ok(by_series.remove(uid).expect("checked: key present"))
        }
        None if by_series.len() > 1 => Err(Error::format(
            dir,
            format!(
                "{} series in this folder, choose one with --series UID: {}",
                by_series.len(),
                listing()
            ),
        )),
        None => Ok(by_series.into_values().next().expect("list_files found files")),
    }
}

struct StackGeometry {
    rows: usize,
    columns: usize,
    spacing: [f64; 3],
    affine: orientation::Affine,
}

/// Sorts `slices` along the normal and derives spacing and the RAS affine, refusing series that
/// do not form a regular grid.
fn stack_geometry(dir: &Path, slices: &mut [SliceInfo]) -> Result<StackGeometry> {
    let first = slices[0].clone();
    for s in slices.iter() {
        if s.frames != 1 {
            return Err(Error::format(
                &s.path,
                format!("multi-frame file ({} frames) is not supported", s.frames),
            ));
        }
        if (s.rows, s.columns) != (first.rows, first.columns) {
            return Err(Error::format(
                &s.path,
                format!(
                    "slice is {}x{} but {} is {}x{}",
                    s.rows,
                    s.columns,
                    first.path.display(),
                    first.rows,
                    first.columns
                ),
            ));
        }
        let same_orient =
            s.orientation.iter().zip(&first.orientation).all(|(a, b)| (a - b).abs() < 1e-4);
        let same_spacing =
            s.pixel_spacing.iter().zip(&first.pixel_spacing).all(|(a, b)| (a - b).abs() < 1e-4);
        if !same_orient || !same_spacing {
            return Err(Error::format(
                &s.path,
                format!(
                    "orientation {:?} / pixel spacing {:?} differ from {} ({:?} / {:?})",
                    s.orientation,
                    s.pixel_spacing,
                    first.path.display(),
                    first.orientation,
                    first.pixel_spacing
                ),
            ));
        }
    }
    let o = first.orientation;
    let row_dir = [o[0], o[1], o[2]];
    let col_dir = [o[3], o[4], o[5]];
    let normal = cross(row_dir, col_dir);
    let norm = dot(normal, normal).sqrt();
    // Rows and columns of a valid slice are orthonormal; NaN lands here too.
    if norm.is_nan() || norm <= 0.5 {
        return Err(Error::format(
            &first.path,
            format!("degenerate ImageOrientationPatient {o:?}"),
        ));
    }
    let normal = normal.map(|v| v / norm);
    slices.sort_by(|a, b| dot(a.position, normal).total_cmp(&dot(b.position, normal)));
    let n = slices.len();
    if n < 2 {
        return Err(Error::format(
            dir,
            "the series has a single slice: a 3-D volume needs at least two (spacing is taken \
             from slice positions)",
        ));
    }
    let dists: Vec<f64> = slices.iter().map(|s| dot(s.position, normal)).collect();
    let steps: Vec<f64> = dists.windows(2).map(|w| w[1] - w[0]).collect();
    if let Some(i) = steps.iter().position(|&d| d.abs() < 1e-4) {
        return Err(Error::format(
            dir,
            format!(
                "{} and {} are at the same position (several acquisitions in one series?)",
                slices[i].path.display(),
                slices[i + 1].path.display()
            ),
        ));
    }
    let mean = (dists[n - 1] - dists[0]) / (n - 1) as f64;
    let worst = steps.iter().map(|d| (d - mean).abs()).fold(0.0, f64::max);
    if worst > SPACING_TOL * mean {
        let (lo, hi) = steps.iter().fold((f64::MAX, f64::MIN), |(l, h), &d| (l.min(d), h.max(d)));
        return Err(Error::format(
            dir,
            format!(
                "uneven slice spacing: steps between {lo:.4} and {hi:.4} mm (mean {mean:.4}); \
                 missing slices or mixed acquisitions"
            ),
        ));
    }
    let (p0, p1) = (slices[0].position, slices[n - 1].position);
    let step = [0, 1, 2].map(|a| (p1[a] - p0[a]) / (n - 1) as f64);
    let step_len = dot(step, step).sqrt();
    let cos = (dot(step, normal) / step_len).clamp(-1.0, 1.0);
    let tilt = cos.acos().to_degrees();
    if tilt > TILT_TOL_DEG {
        return Err(Error::format(
            dir,
            format!(
                "gantry tilt: slices are stacked {tilt:.2} degrees off their normal; resample the \
                 series first (e.g. dcm2niix) - a tilted stack is not a rectangular grid"
            ),
        ));
    }
    // LPS -> RAS: negate x and y of every column and of the origin.
    let [ps_row, ps_col] = first.pixel_spacing;
    let columns_lps = [row_dir.map(|v| v * ps_col), col_dir.map(|v| v * ps_row), step];
    let mut affine = orientation::identity();
    let flip = [-1.0, -1.0, 1.0];
    for w in 0..3 {
        for (axis, col) in columns_lps.iter().enumerate() {
            affine[w][axis] = flip[w] * col[w];
        }
        affine[w][3] = flip[w] * p0[w];
    }
    Ok(StackGeometry {
        rows: first.rows,
        columns: first.columns,
        spacing: [ps_col, ps_row, step_len],
        affine,
    })
}

/// Decodes one slice's stored values and applies its rescale. A panic inside the decoders (the
/// DICOM crates' JPEG 2000 adapter indexed past its buffer on a mutated codestream) is caught
/// here and becomes an error naming the file.
fn decode_slice(s: &SliceInfo) -> Result<Vec<f32>> {
    std::panic::catch_unwind(AssertUnwindSafe(|| decode_slice_inner(s))).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|m| m.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".to_string());
        Err(Error::format(
            &s.path,
            format!("pixel data cannot be decoded (decoder failed: {what})"),
        ))
    })
}

fn decode_slice_inner(s: &SliceInfo) -> Result<Vec<f32>> {
    let obj = dicom_object::open_file(&s.path)
        .map_err(|e| Error::format(&s.path, format!("not a readable DICOM file: {e}")))?;
    check_j2k_frame(s, &obj)?;
    let decoded = obj
        .decode_pixel_data()
        .map_err(|e| Error::format(&s.path, format!("cannot decode pixel data: {e}")))?;
    if decoded.samples_per_pixel() != 1 {
        return Err(Error::format(
            &s.path,
            format!("{} samples per pixel; a greyscale CT is needed", decoded.samples_per_pixel()),
        ));
    }
    let raw: Vec<f64> = decoded
        .to_vec_with_options(&ConvertOptions::new().with_modality_lut(ModalityLutOption::None))
        .map_err(|e| Error::format(&s.path, format!("cannot convert pixel data: {e}")))?;
    if raw.len() != s.rows * s.columns {
        return Err(Error::format(
            &s.path,
            format!("{} pixels decoded, Rows x Columns is {}", raw.len(), s.rows * s.columns),
        ));
    }
    Ok(raw.iter().map(|&v| (v * s.slope + s.intercept) as f32).collect())
}

/// JPEG 2000 transfer syntaxes (lossless, lossy, HTJ2K variants).
const J2K_SYNTAXES: [&str; 5] = [
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
];

/// Checks a JPEG 2000 frame's codestream header (SIZ) against the slice's Rows, Columns and
/// one greyscale component before the decoder sees it: the decoder writes as many samples as
/// the codestream says into a buffer sized from Rows x Columns.
fn check_j2k_frame(s: &SliceInfo, obj: &DefaultDicomObject) -> Result<()> {
    let ts = obj.meta().transfer_syntax().trim_end_matches('\0').trim();
    if !J2K_SYNTAXES.contains(&ts) {
        return Ok(());
    }
    let fragment = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .and_then(|e| e.value().fragments().and_then(|f| f.first()))
        .ok_or_else(|| {
            Error::format(&s.path, "JPEG 2000 transfer syntax without pixel data fragments")
        })?;
    let siz = j2k_siz(fragment).ok_or_else(|| {
        Error::format(&s.path, "JPEG 2000 pixel data without a readable codestream header (SIZ)")
    })?;
    if (siz.width, siz.height, siz.components) != (s.columns as u64, s.rows as u64, 1)
        || !siz.full_res
    {
        return Err(Error::format(
            &s.path,
            format!(
                "JPEG 2000 codestream is {}x{} with {} component(s){}, the slice header says \
                 {}x{} greyscale",
                siz.width,
                siz.height,
                siz.components,
                if siz.full_res { "" } else { " (subsampled)" },
                s.columns,
                s.rows
            ),
        ));
    }
    Ok(())
}

/// What a JPEG 2000 SIZ marker segment says about the image.
struct J2kSiz {
    width: u64,
    height: u64,
    components: u16,
    /// Every component at full resolution (XRsiz = YRsiz = 1).
    full_res: bool,
}

/// Finds SOC + SIZ (`FF4F FF51`) near the start of a fragment (a JP2 wrapper may precede it) and
/// reads the image size and components. `None` when absent or cut short.
fn j2k_siz(f: &[u8]) -> Option<J2kSiz> {
    let head = &f[..f.len().min(4096)];
    let at = head.windows(4).position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])? + 4;
    let u32_at = |p: usize| Some(u32::from_be_bytes(f.get(at + p..at + p + 4)?.try_into().ok()?));
    let u16_at = |p: usize| Some(u16::from_be_bytes(f.get(at + p..at + p + 2)?.try_into().ok()?));
    // Lsiz(2) Rsiz(2) Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz (4 each) Csiz(2), then
    // Ssiz XRsiz YRsiz per component.
    let (x, y, xo, yo) = (u32_at(4)?, u32_at(8)?, u32_at(12)?, u32_at(16)?);
    let components = u16_at(36)?;
    let mut full_res = true;
    for c in 0..components as usize {
        let sub = f.get(at + 38 + 3 * c + 1..at + 38 + 3 * c + 3)?;
        full_res &= sub == [1, 1];
    }
    Some(J2kSiz {
        width: (x as u64).checked_sub(xo as u64)?,
        height: (y as u64).checked_sub(yo as u64)?,
        components,
        full_res,
    })
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
