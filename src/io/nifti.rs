//! NIfTI-1 read (`.nii`, `.nii.gz`) and write, keeping the geometry exactly.
//!
//! The `nifti` crate parses the 348-byte header (either byte order); voxel data are read here so
//! that a header whose dimensions do not fit the file is rejected before anything large is
//! allocated, and so that the on-disk order (i fastest) is transposed to the engine's (k fastest)
//! in one pass. Headers are written by hand, field by field, so the qform/sform codes, pixdim and
//! units of the source survive unchanged.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use nifti::{Endianness, NiftiHeader};
use rayon::prelude::*;

use super::orientation::{self, Affine, Quatern};
use crate::volume::{Volume, VoxelKind};
use crate::{Error, Result};

/// Size of a NIfTI-1 header; voxel data of a single file start at 352 (after 4 extender bytes).
const HEADER_LEN: usize = 348;
const DATA_OFFSET: usize = 352;
/// `NIFTI_UNITS_MM`.
const UNITS_MM: u8 = 2;

/// The datatypes the reader understands (NIfTI-1 `datatype` codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl DataType {
    /// From the header's `datatype` code.
    pub fn from_code(code: i16) -> Option<DataType> {
        Some(match code {
            2 => DataType::U8,
            4 => DataType::I16,
            8 => DataType::I32,
            16 => DataType::F32,
            64 => DataType::F64,
            256 => DataType::I8,
            512 => DataType::U16,
            768 => DataType::U32,
            1024 => DataType::I64,
            1280 => DataType::U64,
            _ => return None,
        })
    }

    /// The header's `datatype` code.
    pub fn code(self) -> i16 {
        match self {
            DataType::U8 => 2,
            DataType::I16 => 4,
            DataType::I32 => 8,
            DataType::F32 => 16,
            DataType::F64 => 64,
            DataType::I8 => 256,
            DataType::U16 => 512,
            DataType::U32 => 768,
            DataType::I64 => 1024,
            DataType::U64 => 1280,
        }
    }

    /// Bytes per voxel.
    pub fn size(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::I16 | DataType::U16 => 2,
            DataType::I32 | DataType::U32 | DataType::F32 => 4,
            DataType::I64 | DataType::U64 | DataType::F64 => 8,
        }
    }

    /// Name as numpy spells it (`uint8`, `int16`, `float32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DataType::U8 => "uint8",
            DataType::I8 => "int8",
            DataType::I16 => "int16",
            DataType::U16 => "uint16",
            DataType::I32 => "int32",
            DataType::U32 => "uint32",
            DataType::I64 => "int64",
            DataType::U64 => "uint64",
            DataType::F32 => "float32",
            DataType::F64 => "float64",
        }
    }

    /// The integer range this type holds exactly in an f32, or `None` for floats.
    fn integer_range(self) -> Option<(f64, f64)> {
        match self {
            DataType::U8 => Some((0.0, 255.0)),
            DataType::I8 => Some((-128.0, 127.0)),
            DataType::I16 => Some((-32768.0, 32767.0)),
            DataType::U16 => Some((0.0, 65535.0)),
            DataType::I32 => Some((-2147483648.0, 2147483647.0)),
            DataType::U32 => Some((0.0, 4294967295.0)),
            _ => None,
        }
    }
}

/// What a NIfTI header says, beyond the geometry a [`Volume`] carries: for `info` and tests.
#[derive(Clone, Debug)]
pub struct NiftiInfo {
    /// On-disk datatype.
    pub datatype: DataType,
    /// `qform_code`, `sform_code`.
    pub qform_code: i16,
    pub sform_code: i16,
    /// `scl_slope`, `scl_inter` as stored.
    pub scl_slope: f32,
    pub scl_inter: f32,
    /// `xyzt_units`.
    pub xyzt_units: u8,
}

/// Reads the header of a NIfTI volume (`header` as a [`Volume`] holds it).
///
/// # Errors
/// [`Error::Format`] naming `path` when the bytes are not a NIfTI-1 header.
pub fn header_info(path: &Path, header: &[u8]) -> Result<NiftiInfo> {
    let h = parse_header(path, header)?;
    let datatype = DataType::from_code(h.datatype).ok_or_else(|| {
        Error::format(path, format!("unsupported NIfTI datatype code {}", h.datatype))
    })?;
    Ok(NiftiInfo {
        datatype,
        qform_code: h.qform_code,
        sform_code: h.sform_code,
        scl_slope: h.scl_slope,
        scl_inter: h.scl_inter,
        xyzt_units: h.xyzt_units,
    })
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<NiftiHeader> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::format(path, "header shorter than 348 bytes"));
    }
    let big = byte_order(path, bytes)?;
    check_dim0(path, bytes, big)?;
    NiftiHeader::from_reader(&bytes[..HEADER_LEN])
        .map_err(|e| Error::format(path, format!("not a NIfTI-1 header: {e}")))
}

/// `sizeof_hdr` (348, read in either byte order) decides the byte order; any other value means
/// the file is not NIfTI-1. Returns true for big-endian.
fn byte_order(path: &Path, bytes: &[u8]) -> Result<bool> {
    let le = i32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    if le == HEADER_LEN as i32 {
        return Ok(false);
    }
    if le.swap_bytes() == HEADER_LEN as i32 {
        return Ok(true);
    }
    let msg = if le == 540 || le.swap_bytes() == 540 {
        "NIfTI-2 files are not supported (sizeof_hdr 540); convert to NIfTI-1".to_string()
    } else {
        format!("not a NIfTI-1 file (sizeof_hdr {le} instead of 348)")
    };
    Err(Error::format(path, msg))
}

/// `dim[0]` must be 1..=7. Checked here, in the byte order `sizeof_hdr` gave, because the
/// `nifti` crate guesses the byte order from `dim[0]` and would blame `sizeof_hdr` instead.
fn check_dim0(path: &Path, bytes: &[u8], big: bool) -> Result<()> {
    let raw = [bytes[40], bytes[41]];
    let d0 = if big { i16::from_be_bytes(raw) } else { i16::from_le_bytes(raw) };
    if !(1..=7).contains(&d0) {
        return Err(Error::format(
            path,
            format!("invalid dim[0] = {d0}: the number of dimensions must be 1..7"),
        ));
    }
    Ok(())
}

/// Voxels decoded per block while streaming (about 16 MB of f32).
const BLOCK_VOXELS: usize = 4 << 20;
/// A `.nii.gz` whose header claims more than this many times its compressed size is measured
/// (inflated once without keeping anything) before the volume is allocated: CTs compress 2-5x,
/// masks up to several hundred x, and a lying header must not decide an allocation.
const GZ_TRUSTED_RATIO: u64 = 8;

/// An open NIfTI-1 file whose header was parsed and checked, positioned at its first voxel.
///
/// Voxels are read in blocks of whole k-planes ([`NiftiReader::for_each_block`]), so a caller can
/// compute statistics without holding the volume, or fill a volume without also holding the
/// file's bytes: `info` and `convert` stay near one decoded copy of the volume.
pub struct NiftiReader {
    path: PathBuf,
    stream: Box<dyn Read>,
    gz: bool,
    big: bool,
    scale: (f64, f64),
    raw: Vec<u8>,
    /// What the header says about datatype, codes and units.
    pub info: NiftiInfo,
    /// `(i, j, k)` extents.
    pub dims: [usize; 3],
    /// Voxel size in mm (`|pixdim[1..=3]|`), positive and finite.
    pub spacing: [f64; 3],
    /// Voxel -> RAS mm, chosen as [`read_nifti`] documents; finite.
    pub affine: Affine,
}

impl NiftiReader {
    /// Opens `path` and checks its header against the file: magic, dimensions, datatype,
    /// spacing, affine, and that the data the header needs are there (for `.gz`, measured before
    /// anything of the claimed size is allocated when the claim is out of proportion).
    ///
    /// # Errors
    /// As [`read_nifti`].
    pub fn open(path: &Path) -> Result<NiftiReader> {
        let (mut stream, gz, file_len) = open_stream(path)?;
        let mut raw = vec![0u8; HEADER_LEN];
        let n = read_full(&mut stream, &mut raw, path)?;
        if n < HEADER_LEN {
            return Err(Error::format(
                path,
                format!("not a NIfTI-1 file: only {n} bytes, a header needs {HEADER_LEN}"),
            ));
        }
        let h = parse_header(path, &raw)?;
        let info = header_info(path, &raw)?;
        check_magic(path, &h)?;
        let dims = spatial_dims(path, &h)?;
        let dt = info.datatype;
        let n_bytes = dims
            .iter()
            .try_fold(dt.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| Error::format(path, format!("dimensions {dims:?} overflow")))?;
        let vox_offset = data_offset(path, &h)?;
        let needed = vox_offset + n_bytes as u64;
        if !gz && needed > file_len {
            return Err(Error::format(
                path,
                format!(
                    "header dimensions {dims:?} of {} need {needed} bytes, the file has {file_len}",
                    dt.name()
                ),
            ));
        }
        if gz && needed > GZ_TRUSTED_RATIO * file_len {
            let have = inflated_len(path, needed)?;
            if have < needed {
                let got = have.saturating_sub(vox_offset) as usize;
                return Err(short_data(path, dims, dt, got, n_bytes));
            }
        }
        let (spacing, affine) = geometry(path, &h)?;
        // Skip extensions up to vox_offset.
        let skip = vox_offset - HEADER_LEN as u64;
        let skipped = std::io::copy(&mut (&mut stream).take(skip), &mut std::io::sink())
            .map_err(|e| gz_err(path, e))?;
        if skipped < skip {
            return Err(short_data(path, dims, dt, 0, n_bytes));
        }
        Ok(NiftiReader {
            path: path.to_path_buf(),
            stream,
            gz,
            big: h.endianness == Endianness::Big,
            scale: scaling(h.scl_slope, h.scl_inter),
            raw,
            info,
            dims,
            spacing,
            affine,
        })
    }

    /// The 348 header bytes, as [`Volume::header`] keeps them.
    pub fn header_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Calls `f(k0, values)` for consecutive blocks of whole k-planes starting at plane `k0`,
    /// values scaled to f32 in disk order (`i` fastest, then `j`, then `k`). At the end a gzip
    /// stream is read to its end so that its checksum and length are verified: a corrupt
    /// `.nii.gz` is an error even when the voxels came out of it.
    ///
    /// # Errors
    /// [`Error::Format`] naming the file for truncated or corrupt data.
    pub fn for_each_block(&mut self, mut f: impl FnMut(usize, &[f32])) -> Result<()> {
        let [nx, ny, nz] = self.dims;
        let plane = nx * ny;
        let dt = self.info.datatype;
        let per_block = (BLOCK_VOXELS / plane).clamp(1, nz);
        let mut bytes = Vec::new();
        let mut k0 = 0;
        while k0 < nz {
            let k1 = (k0 + per_block).min(nz);
            bytes.resize((k1 - k0) * plane * dt.size(), 0);
            let got = read_full(&mut self.stream, &mut bytes, &self.path)?;
            if got < bytes.len() {
                let total = nx * ny * nz * dt.size();
                return Err(short_data(
                    &self.path,
                    self.dims,
                    dt,
                    k0 * plane * dt.size() + got,
                    total,
                ));
            }
            let (slope, inter) = self.scale;
            f(k0, &decode_all(&bytes, dt, self.big, slope, inter));
            k0 = k1;
        }
        if self.gz {
            std::io::copy(&mut self.stream, &mut std::io::sink())
                .map_err(|e| gz_err(&self.path, e))?;
        }
        Ok(())
    }
}

/// The file as a byte stream (inflated when it starts with the gzip magic: the content decides,
/// not the name), whether it is gzip, and the file's size.
fn open_stream(path: &Path) -> Result<(Box<dyn Read>, bool, u64)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let gz = reader.fill_buf().map_err(|e| Error::io(path, e))?.starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn Read> =
        if gz { Box::new(MultiGzDecoder::new(reader)) } else { Box::new(reader) };
    Ok((stream, gz, file_len))
}

/// How many bytes the gzip stream of `path` inflates to, counting no further than `limit`.
fn inflated_len(path: &Path, limit: u64) -> Result<u64> {
    let (stream, _, _) = open_stream(path)?;
    std::io::copy(&mut stream.take(limit), &mut std::io::sink()).map_err(|e| gz_err(path, e))
}

fn check_magic(path: &Path, h: &NiftiHeader) -> Result<()> {
    let magic = &h.magic[..3];
    if magic == b"n+1" {
        return Ok(());
    }
    let msg = if magic == b"ni1" {
        "a NIfTI header/image pair (.hdr/.img); only single-file .nii / .nii.gz is supported"
            .to_string()
    } else {
        format!("not a NIfTI-1 file (magic {:?})", String::from_utf8_lossy(&h.magic))
    };
    Err(Error::format(path, msg))
}

/// Where the voxels start. In a single file the data cannot start before the header and extender
/// end; some writers leave vox_offset at 0 (nibabel then reads the header bytes as voxels; we
/// start at 352).
fn data_offset(path: &Path, h: &NiftiHeader) -> Result<u64> {
    let vox_offset = h.vox_offset;
    if !(0.0..=1e9).contains(&vox_offset) {
        return Err(Error::format(path, format!("invalid vox_offset {vox_offset}")));
    }
    Ok((vox_offset as u64).max(DATA_OFFSET as u64))
}

/// Spacing and affine, refusing a spacing that is zero or not finite and an affine that is not
/// finite or collapses an axis: both would turn every distance downstream into garbage.
fn geometry(path: &Path, h: &NiftiHeader) -> Result<([f64; 3], Affine)> {
    let mut spacing = [0.0; 3];
    for (a, s) in spacing.iter_mut().enumerate() {
        let p = h.pixdim[a + 1];
        if !(p.is_finite() && p != 0.0) {
            return Err(Error::format(
                path,
                format!(
                    "voxel spacing pixdim[{}] = {p} (axis {}): a spacing must be a finite, \
                     non-zero number of mm",
                    a + 1,
                    ["i", "j", "k"][a]
                ),
            ));
        }
        *s = (p as f64).abs();
    }
    let affine = best_affine(h);
    let finite = affine.iter().flatten().all(|v| v.is_finite());
    let collapsed = (0..3).find(|&c| (0..3).all(|r| affine[r][c] == 0.0));
    if !finite || collapsed.is_some() {
        let from = if h.sform_code > 0 { "sform" } else { "qform" };
        return Err(Error::format(
            path,
            format!(
                "the {from} affine {:?} is not finite or maps an axis to nothing",
                &affine[..3]
            ),
        ));
    }
    Ok((spacing, affine))
}

/// Reads a 3-D NIfTI-1 file (`.nii` or `.nii.gz`, detected by content), applying
/// scl_slope/scl_inter (slope 0 or not finite means no scaling) and choosing the affine as
/// nibabel does: the sform when `sform_code > 0`, else the qform when `qform_code > 0`, else the
/// NIfTI-1 "method 1" diagonal of pixdim (nibabel would centre and x-flip that last one, a
/// legacy Analyze convention; files without codes are rare and the standard says diagonal).
///
/// A 4-D file with one time point (and any further axes of length 1) reads as 3-D. Peak memory
/// is the decoded volume plus one block of about 16 MB.
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened; [`Error::Format`] naming the file for anything
/// wrong in it: not NIfTI-1, a wrong `dim[0]`, 2-D or 4-D data, an unsupported datatype, a zero
/// or non-finite spacing or affine, dimensions that need more voxel bytes than the file holds
/// (found before the voxel buffer is allocated), a truncated or corrupt gzip stream (its CRC and
/// length are checked).
pub fn read_nifti(path: &Path) -> Result<Volume> {
    read_nifti_with_info(path).map(|(v, _)| v)
}

/// [`read_nifti`] that also returns what the header says about datatype, codes and units.
///
/// # Errors
/// As [`read_nifti`].
pub fn read_nifti_with_info(path: &Path) -> Result<(Volume, NiftiInfo)> {
    let mut reader = NiftiReader::open(path)?;
    let dims = reader.dims;
    let mut data = vec![0f32; dims.iter().product()];
    reader.for_each_block(|k0, block| place_planes(block, k0, dims, &mut data))?;
    let NiftiReader { raw, info, spacing, affine, .. } = reader;
    Ok((Volume { data, dims, spacing, affine, header: Some(raw) }, info))
}

/// A read failure inside the file (for `.gz` also a bad or cut deflate stream or a bad CRC).
fn gz_err(path: &Path, e: std::io::Error) -> Error {
    Error::format(path, format!("truncated or corrupt data: {e}"))
}

fn short_data(path: &Path, dims: [usize; 3], dt: DataType, got: usize, want: usize) -> Error {
    Error::format(
        path,
        format!(
            "truncated: header dimensions {dims:?} of {} need {want} voxel bytes, the file holds {got}",
            dt.name()
        ),
    )
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(gz_err(path, e)),
        }
    }
    Ok(n)
}

/// The three spatial extents, refusing 1-D/2-D data and more than one time point.
fn spatial_dims(path: &Path, h: &NiftiHeader) -> Result<[usize; 3]> {
    let ndim = h.dim[0] as usize;
    if !(1..=7).contains(&ndim) {
        return Err(Error::format(path, format!("invalid dim[0] = {ndim}")));
    }
    let dim: Vec<i64> = h.dim[1..=ndim].iter().map(|&d| d as i16 as i64).collect();
    if let Some(d) = dim.iter().find(|&&d| d < 1) {
        return Err(Error::format(path, format!("invalid dimension {d} in dim {dim:?}")));
    }
    if ndim < 3 {
        return Err(Error::format(
            path,
            format!("{ndim}-D image (dim {dim:?}); a 3-D volume is needed"),
        ));
    }
    if dim[3..].iter().any(|&d| d > 1) {
        return Err(Error::format(
            path,
            format!("{ndim}-D image (dim {dim:?}); a 3-D volume (or one time point) is needed"),
        ));
    }
    Ok([dim[0] as usize, dim[1] as usize, dim[2] as usize])
}

/// The (slope, intercept) applied to stored values; identity when the slope is 0 or not finite.
fn scaling(slope: f32, inter: f32) -> (f64, f64) {
    if slope == 0.0 || !slope.is_finite() {
        (1.0, 0.0)
    } else {
        (slope as f64, if inter.is_finite() { inter as f64 } else { 0.0 })
    }
}

/// Every voxel of `bytes` as f32 (`raw * slope + inter`, in f64), same order.
fn decode_all(bytes: &[u8], dt: DataType, big: bool, slope: f64, inter: f64) -> Vec<f32> {
    let scale = |v: f64| (v * slope + inter) as f32;
    macro_rules! each {
        ($t:ty, $n:expr) => {
            bytes
                .par_chunks_exact($n)
                .map(|c| {
                    let a: [u8; $n] = c.try_into().expect("chunks_exact gives $n bytes");
                    scale(if big { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) } as f64)
                })
                .collect()
        };
    }
    match dt {
        DataType::U8 => bytes.par_iter().map(|&b| scale(b as f64)).collect(),
        DataType::I8 => bytes.par_iter().map(|&b| scale(b as i8 as f64)).collect(),
        DataType::I16 => each!(i16, 2),
        DataType::U16 => each!(u16, 2),
        DataType::I32 => each!(i32, 4),
        DataType::U32 => each!(u32, 4),
        DataType::I64 => each!(i64, 8),
        DataType::U64 => each!(u64, 8),
        DataType::F32 => each!(f32, 4),
        DataType::F64 => each!(f64, 8),
    }
}

/// i-rows handled together when moving planes between the two orders: 16 output streams, each
/// written a block's k-run at a time, stay in cache.
const I_TILE: usize = 16;

/// Puts the disk-order k-planes `block` (`[t][ny][nx]`, i fastest) starting at plane `k0` into
/// the engine-order volume `out` (`(i * ny + j) * nz + k`).
fn place_planes(block: &[f32], k0: usize, [nx, ny, nz]: [usize; 3], out: &mut [f32]) {
    let t = block.len() / (nx * ny);
    out.par_chunks_mut(I_TILE * ny * nz).enumerate().for_each(|(tile, rows)| {
        let i0 = tile * I_TILE;
        let i1 = (i0 + I_TILE).min(nx);
        for j in 0..ny {
            for kk in 0..t {
                let src = &block[(kk * ny + j) * nx..][..nx];
                for i in i0..i1 {
                    rows[((i - i0) * ny + j) * nz + k0 + kk] = src[i];
                }
            }
        }
    });
}

/// The k-planes `k0..k1` of the engine-order volume `data` in disk order (`[t][ny][nx]`).
fn gather_planes(data: &[f32], k0: usize, k1: usize, [nx, ny, nz]: [usize; 3]) -> Vec<f32> {
    let t = k1 - k0;
    // One task per j: it reads contiguous k-runs and writes its own [t][nx] rows.
    let rows: Vec<Vec<f32>> = (0..ny)
        .into_par_iter()
        .map(|j| {
            let mut local = vec![0f32; t * nx];
            for i in 0..nx {
                let run = &data[(i * ny + j) * nz + k0..][..t];
                for (kk, &v) in run.iter().enumerate() {
                    local[kk * nx + i] = v;
                }
            }
            local
        })
        .collect();
    let mut block = vec![0f32; t * ny * nx];
    for (j, local) in rows.iter().enumerate() {
        for kk in 0..t {
            block[(kk * ny + j) * nx..][..nx].copy_from_slice(&local[kk * nx..][..nx]);
        }
    }
    block
}

/// The affine nibabel's `get_best_affine` picks (sform, then qform, then pixdim diagonal).
fn best_affine(h: &NiftiHeader) -> Affine {
    if h.sform_code > 0 {
        sform_affine(h)
    } else if h.qform_code > 0 {
        qform_affine(h)
    } else {
        let mut a = orientation::identity();
        for (axis, row) in a.iter_mut().take(3).enumerate() {
            row[axis] = h.pixdim[axis + 1] as f64;
        }
        a
    }
}

fn sform_affine(h: &NiftiHeader) -> Affine {
    let mut a = orientation::identity();
    for (row, srow) in [h.srow_x, h.srow_y, h.srow_z].iter().enumerate() {
        for col in 0..4 {
            a[row][col] = srow[col] as f64;
        }
    }
    a
}

fn qform_affine(h: &NiftiHeader) -> Affine {
    orientation::quatern_to_affine(&Quatern {
        bcd: [h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64],
        offset: [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64],
        pixdim: [h.pixdim[1] as f64, h.pixdim[2] as f64, h.pixdim[3] as f64],
        qfac: h.pixdim[0] as f64,
    })
}

/// Writes `vol` to `path` (`.nii`, or gzip-compressed when the name ends in `.gz`) atomically
/// (a temporary file in the same folder, renamed at the end; removed on error).
///
/// Datatype: masks uint8 (values rounded; outside 0..=255 is an error), probabilities float32,
/// images keep the source header's integer datatype and scl_slope/scl_inter when they reproduce
/// every value exactly, float32 otherwise.
///
/// Geometry: when the volume still has the affine and spacing its header gives, the header's
/// qform, sform, codes, pixdim and units are written back unchanged. When the geometry changed
/// (crop, resample, reorientation), both forms are re-derived from the new affine with the
/// source's codes (1 = scanner when the source had none). Generated volumes (`header: None`) get
/// qform = sform = the affine, codes 1, units mm.
///
/// # Errors
/// [`Error::Shape`] when `data` does not match `dims`; [`Error::Arg`] for a mask value that is
/// not a uint8; [`Error::Io`] naming the output when it cannot be written.
pub fn write_nifti(path: &Path, vol: &Volume, kind: VoxelKind) -> Result<()> {
    let n: usize = vol.dims.iter().product();
    if vol.data.len() != n {
        return Err(Error::shape("write_nifti", vol.dims, vol.data.len()));
    }
    if let Some(d) = vol.dims.iter().find(|&&d| d == 0 || d > i16::MAX as usize) {
        return Err(Error::arg(
            "write_nifti",
            format!("dimension {d} cannot be stored in NIfTI-1"),
        ));
    }
    let source = match &vol.header {
        Some(bytes) => Some(parse_header(path, bytes)?),
        None => None,
    };
    let storage = output_type(vol, kind, source.as_ref())?;
    let header = build_header(vol, storage, source);
    let gz = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    write_atomic(path, |w| {
        if gz {
            let mut enc = GzEncoder::new(w, flate2::Compression::new(3));
            enc.write_all(&header)?;
            write_body(&mut enc, vol, storage)?;
            enc.finish()?.flush()
        } else {
            w.write_all(&header)?;
            write_body(w, vol, storage)?;
            w.flush()
        }
    })
}

/// Streams the voxels in disk order, a block of k-planes at a time, so writing never holds a
/// second full copy of the volume.
fn write_body(w: &mut impl Write, vol: &Volume, storage: Storage) -> std::io::Result<()> {
    let [nx, ny, nz] = vol.dims;
    let per_block = (BLOCK_VOXELS / (nx * ny)).clamp(1, nz);
    for k0 in (0..nz).step_by(per_block) {
        let k1 = (k0 + per_block).min(nz);
        let block = gather_planes(&vol.data, k0, k1, vol.dims);
        w.write_all(&encode_block(block, storage))?;
    }
    Ok(())
}

/// How voxels are stored: `value = raw * slope + inter`, raw of type `dt`.
#[derive(Clone, Copy, Debug)]
struct Storage {
    dt: DataType,
    slope: f64,
    inter: f64,
}

impl Storage {
    fn plain(dt: DataType) -> Storage {
        Storage { dt, slope: 1.0, inter: 0.0 }
    }
}

fn output_type(vol: &Volume, kind: VoxelKind, source: Option<&NiftiHeader>) -> Result<Storage> {
    match kind {
        VoxelKind::Probability => Ok(Storage::plain(DataType::F32)),
        VoxelKind::Mask => {
            if let Some(v) = vol.data.iter().find(|v| !(v.round() >= 0.0 && v.round() <= 255.0)) {
                return Err(Error::arg(
                    "write_nifti",
                    format!("mask value {v} does not fit uint8 (0..=255)"),
                ));
            }
            Ok(Storage::plain(DataType::U8))
        }
        VoxelKind::Image => {
            let Some(h) = source else { return Ok(Storage::plain(DataType::F32)) };
            let src = DataType::from_code(h.datatype);
            let Some((dt, (lo, hi))) = src.and_then(|d| d.integer_range().map(|r| (d, r))) else {
                return Ok(Storage::plain(DataType::F32));
            };
            // Keep the source's integer type and scaling when every value is reproduced exactly
            // by it (a CT stays int16, a scaled uint8 stays uint8 with its slope).
            let (slope, inter) = scaling(h.scl_slope, h.scl_inter);
            let fits = vol.data.par_iter().all(|&v| {
                let raw = ((v as f64 - inter) / slope).round();
                raw >= lo && raw <= hi && (raw * slope + inter) as f32 == v
            });
            Ok(if fits { Storage { dt, slope, inter } } else { Storage::plain(DataType::F32) })
        }
    }
}

/// Disk-order values to their little-endian bytes in `storage`.
fn encode_block(mut disk: Vec<f32>, storage: Storage) -> Vec<u8> {
    let Storage { dt, slope, inter } = storage;
    if slope != 1.0 || inter != 0.0 {
        disk.par_iter_mut().for_each(|v| *v = ((*v as f64 - inter) / slope).round() as f32);
    }
    // Integer outputs were range-checked (masks rounded) before encoding, so `as` never
    // saturates a value that matters.
    macro_rules! each {
        ($conv:expr) => {
            disk.par_iter().flat_map_iter(|&v| $conv(v).to_le_bytes()).collect()
        };
    }
    match dt {
        DataType::U8 => disk.par_iter().map(|&v| v.round() as u8).collect(),
        DataType::I8 => disk.par_iter().map(|&v| v.round() as i8 as u8).collect(),
        DataType::I16 => each!(|v: f32| v.round() as i16),
        DataType::U16 => each!(|v: f32| v.round() as u16),
        DataType::I32 => each!(|v: f32| v.round() as i32),
        DataType::U32 => each!(|v: f32| v.round() as u32),
        DataType::I64 => each!(|v: f32| v.round() as i64),
        DataType::U64 => each!(|v: f32| v.round() as u64),
        DataType::F32 => each!(|v: f32| v),
        DataType::F64 => each!(|v: f32| v as f64),
    }
}

/// A generated header: qform = sform = the affine (scanner), units mm.
fn fresh_header(vol: &Volume) -> NiftiHeader {
    let mut h =
        NiftiHeader { sform_code: 1, qform_code: 1, xyzt_units: UNITS_MM, ..Default::default() };
    set_geometry(&mut h, &vol.affine);
    h
}

/// Sets qform, sform and pixdim from `affine`.
fn set_geometry(h: &mut NiftiHeader, affine: &Affine) {
    let q = orientation::affine_to_quatern(affine);
    h.quatern_b = q.bcd[0] as f32;
    h.quatern_c = q.bcd[1] as f32;
    h.quatern_d = q.bcd[2] as f32;
    h.quatern_x = q.offset[0] as f32;
    h.quatern_y = q.offset[1] as f32;
    h.quatern_z = q.offset[2] as f32;
    h.pixdim[0] = q.qfac as f32;
    for a in 0..3 {
        h.pixdim[a + 1] = q.pixdim[a] as f32;
    }
    for (row, srow) in [&mut h.srow_x, &mut h.srow_y, &mut h.srow_z].into_iter().enumerate() {
        for col in 0..4 {
            srow[col] = affine[row][col] as f32;
        }
    }
}

fn build_header(vol: &Volume, storage: Storage, source: Option<NiftiHeader>) -> Vec<u8> {
    let dt = storage.dt;
    let mut h = match source {
        Some(mut h) => {
            let pixdim = [h.pixdim[1] as f64, h.pixdim[2] as f64, h.pixdim[3] as f64];
            let same = best_affine(&h) == vol.affine && pixdim.map(f64::abs) == vol.spacing;
            if !same {
                if h.qform_code <= 0 && h.sform_code <= 0 {
                    h.qform_code = 1;
                    h.sform_code = 1;
                }
                set_geometry(&mut h, &vol.affine);
            }
            h
        }
        None => fresh_header(vol),
    };
    h.dim = [3, vol.dims[0] as u16, vol.dims[1] as u16, vol.dims[2] as u16, 1, 1, 1, 1];
    h.datatype = dt.code();
    h.bitpix = (dt.size() * 8) as i16;
    h.vox_offset = DATA_OFFSET as f32;
    // Both came from the source's f32 fields (or are 1 and 0): exact.
    h.scl_slope = storage.slope as f32;
    h.scl_inter = storage.inter as f32;
    // The source's display window and value range rarely fit what is written now.
    h.cal_min = 0.0;
    h.cal_max = 0.0;
    h.glmin = 0;
    h.glmax = 0;
    serialize_header(&h)
}

/// The 348 header bytes plus 4 zero extender bytes, little-endian, at the NIfTI-1 offsets.
fn serialize_header(h: &NiftiHeader) -> Vec<u8> {
    let mut b = Vec::with_capacity(DATA_OFFSET);
    b.extend_from_slice(&(HEADER_LEN as i32).to_le_bytes());
    b.extend_from_slice(&h.data_type);
    b.extend_from_slice(&h.db_name);
    b.extend_from_slice(&h.extents.to_le_bytes());
    b.extend_from_slice(&h.session_error.to_le_bytes());
    b.push(h.regular);
    b.push(h.dim_info);
    for d in h.dim {
        b.extend_from_slice(&(d as i16).to_le_bytes());
    }
    for f in [h.intent_p1, h.intent_p2, h.intent_p3] {
        b.extend_from_slice(&f.to_le_bytes());
    }
    for s in [h.intent_code, h.datatype, h.bitpix, h.slice_start] {
        b.extend_from_slice(&s.to_le_bytes());
    }
    for f in h.pixdim.iter().chain([h.vox_offset, h.scl_slope, h.scl_inter].iter()) {
        b.extend_from_slice(&f.to_le_bytes());
    }
    b.extend_from_slice(&h.slice_end.to_le_bytes());
    b.push(h.slice_code);
    b.push(h.xyzt_units);
    for f in [h.cal_max, h.cal_min, h.slice_duration, h.toffset] {
        b.extend_from_slice(&f.to_le_bytes());
    }
    b.extend_from_slice(&h.glmax.to_le_bytes());
    b.extend_from_slice(&h.glmin.to_le_bytes());
    let mut descrip = [0u8; 80];
    let n = h.descrip.len().min(80);
    descrip[..n].copy_from_slice(&h.descrip[..n]);
    b.extend_from_slice(&descrip);
    b.extend_from_slice(&h.aux_file);
    b.extend_from_slice(&h.qform_code.to_le_bytes());
    b.extend_from_slice(&h.sform_code.to_le_bytes());
    let q = [h.quatern_b, h.quatern_c, h.quatern_d, h.quatern_x, h.quatern_y, h.quatern_z];
    for f in q.iter().chain(&h.srow_x).chain(&h.srow_y).chain(&h.srow_z) {
        b.extend_from_slice(&f.to_le_bytes());
    }
    b.extend_from_slice(&h.intent_name);
    b.extend_from_slice(b"n+1\0");
    debug_assert_eq!(b.len(), HEADER_LEN);
    b.extend_from_slice(&[0u8; 4]);
    b
}

/// The one atomic writer (`crate::atomic`): temporary sibling, fsync, rename, cleanup on error.
use crate::atomic::write_with as write_atomic;

/// A NIfTI header for a volume that has no file of its own yet (a DICOM series), whose images
/// should be stored as `datatype` when their values fit it: qform = sform = the affine (scanner),
/// units mm, `descrip` set.
pub fn generated_header(vol: &Volume, datatype: DataType, descrip: &str) -> Vec<u8> {
    let mut h = fresh_header(vol);
    h.dim = [3, vol.dims[0] as u16, vol.dims[1] as u16, vol.dims[2] as u16, 1, 1, 1, 1];
    h.datatype = datatype.code();
    h.bitpix = (datatype.size() * 8) as i16;
    h.vox_offset = DATA_OFFSET as f32;
    h.scl_slope = 1.0;
    let mut d = descrip.as_bytes().to_vec();
    d.truncate(79);
    h.descrip = d;
    let mut bytes = serialize_header(&h);
    bytes.truncate(HEADER_LEN);
    bytes
}
