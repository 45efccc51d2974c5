//! placeholder
use super::volume::Volume;
use std::path::Path;
/// stub
pub fn read_dicom_series(_dir: &Path, _series: Option<&str>) -> crate::Result<Volume> {
    Err(crate::Error::NotImplemented("dicom"))
}
