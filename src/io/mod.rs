//! Reading and writing: NIfTI, DICOM series, meshes (STL, PLY, OBJ), safetensors with PyTorch names.
