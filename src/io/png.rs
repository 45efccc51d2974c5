//! PNG pictures (previews, training curves, the pipeline's report): 8-bit RGB, written
//! atomically so a viewer never opens half a file.

use std::path::Path;

use crate::{Error, Result};

/// Writes `rgb` (`w * h * 3` bytes, rows top to bottom) as an 8-bit RGB PNG at `path`, atomically.
///
/// # Errors
/// [`Error::Format`] naming `path` when the encoder refuses the image (e.g. a buffer of the wrong
/// length), [`Error::Io`] when the file cannot be written.
pub fn write_rgb(path: &Path, w: usize, h: usize, rgb: &[u8]) -> Result<()> {
    let err = |e: png::EncodingError| Error::format(path, format!("png: {e}"));
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(err)?;
        writer.write_image_data(rgb).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    crate::atomic::write_atomic(path, &bytes)
}
