//! Mesh files: binary STL, binary little-endian PLY (positions, normals, faces) and OBJ. Written
//! atomically (temp file + rename), in the mesh's own units (world millimetres).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::geometry::Mesh;
use crate::{Error, Result};

/// A mesh file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshFormat {
    Stl,
    Ply,
    Obj,
}

impl MeshFormat {
    /// The format named by a path's extension (`.stl`, `.ply`, `.obj`, any case).
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "stl" => Ok(MeshFormat::Stl),
            "ply" => Ok(MeshFormat::Ply),
            "obj" => Ok(MeshFormat::Obj),
            _ => Err(Error::format(path, "mesh files end in .stl, .ply or .obj")),
        }
    }
}

/// Writes `mesh` in the format its extension names.
///
/// # Errors
/// [`Error::Format`] for an unknown extension, [`Error::Io`] when writing fails.
pub fn write_mesh(path: &Path, mesh: &Mesh) -> Result<()> {
    let format = MeshFormat::from_path(path)?;
    crate::atomic::write_with(path, |w| match format {
        MeshFormat::Stl => stl(w, mesh),
        MeshFormat::Ply => ply(w, mesh),
        MeshFormat::Obj => obj(w, mesh),
    })
}

fn face_normal(mesh: &Mesh, t: &[u32; 3]) -> [f32; 3] {
    let [a, b, c] = t.map(|i| mesh.vertices[i as usize]);
    let u = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let v = [c[0] - a[0], c[1] - a[1], c[2] - a[2]];
    let n = [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]];
    let l = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
    if l > 0.0 {
        n.map(|x| x / l)
    } else {
        [0.0; 3]
    }
}

fn stl(w: &mut impl Write, mesh: &Mesh) -> std::io::Result<()> {
    let mut header = [0u8; 80];
    let text = b"dnvs-engine binary STL, millimetres";
    header[..text.len()].copy_from_slice(text);
    w.write_all(&header)?;
    w.write_all(&(mesh.triangles.len() as u32).to_le_bytes())?;
    for t in &mesh.triangles {
        for x in face_normal(mesh, t) {
            w.write_all(&x.to_le_bytes())?;
        }
        for &i in t {
            for x in mesh.vertices[i as usize] {
                w.write_all(&x.to_le_bytes())?;
            }
        }
        w.write_all(&[0, 0])?;
    }
    Ok(())
}

fn ply(w: &mut impl Write, mesh: &Mesh) -> std::io::Result<()> {
    let has_normals = mesh.normals.len() == mesh.vertices.len();
    write!(
        w,
        "ply\nformat binary_little_endian 1.0\ncomment dnvs-engine, millimetres\n\
         element vertex {}\nproperty float x\nproperty float y\nproperty float z\n",
        mesh.vertices.len()
    )?;
    if has_normals {
        write!(w, "property float nx\nproperty float ny\nproperty float nz\n")?;
    }
    write!(
        w,
        "element face {}\nproperty list uchar int vertex_indices\nend_header\n",
        mesh.triangles.len()
    )?;
    for (i, v) in mesh.vertices.iter().enumerate() {
        for x in v {
            w.write_all(&x.to_le_bytes())?;
        }
        if has_normals {
            for x in mesh.normals[i] {
                w.write_all(&x.to_le_bytes())?;
            }
        }
    }
    for t in &mesh.triangles {
        w.write_all(&[3u8])?;
        for &i in t {
            w.write_all(&(i as i32).to_le_bytes())?;
        }
    }
    Ok(())
}

fn obj(w: &mut impl Write, mesh: &Mesh) -> std::io::Result<()> {
    writeln!(w, "# dnvs-engine mesh, millimetres")?;
    for v in &mesh.vertices {
        writeln!(w, "v {} {} {}", v[0], v[1], v[2])?;
    }
    let has_normals = mesh.normals.len() == mesh.vertices.len();
    if has_normals {
        for n in &mesh.normals {
            writeln!(w, "vn {} {} {}", n[0], n[1], n[2])?;
        }
    }
    for t in &mesh.triangles {
        let [a, b, c] = t.map(|i| i + 1);
        if has_normals {
            writeln!(w, "f {a}//{a} {b}//{b} {c}//{c}")?;
        } else {
            writeln!(w, "f {a} {b} {c}")?;
        }
    }
    Ok(())
}

/// Reads a binary STL into an indexed mesh, merging vertices with identical coordinates (what
/// STL loses: the sharing). Used to check round trips.
///
/// # Errors
/// [`Error::Io`] when reading fails, [`Error::Format`] for a truncated file.
pub fn read_stl(path: &Path) -> Result<Mesh> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| Error::io(path, e))?;
    if bytes.len() < 84 {
        return Err(Error::format(path, "shorter than a binary STL header"));
    }
    let n = u32::from_le_bytes([bytes[80], bytes[81], bytes[82], bytes[83]]) as usize;
    if bytes.len() < 84 + n * 50 {
        return Err(Error::format(path, format!("{n} triangles announced, file too short")));
    }
    let f = |o: usize| f32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let mut index = std::collections::HashMap::new();
    let mut mesh = Mesh::default();
    for t in 0..n {
        let base = 84 + t * 50 + 12;
        let mut tri = [0u32; 3];
        for (c, slot) in tri.iter_mut().enumerate() {
            let o = base + c * 12;
            let v = [f(o), f(o + 4), f(o + 8)];
            let key = v.map(f32::to_bits);
            *slot = *index.entry(key).or_insert_with(|| {
                mesh.vertices.push(v);
                (mesh.vertices.len() - 1) as u32
            });
        }
        mesh.triangles.push(tri);
    }
    mesh.compute_normals();
    Ok(mesh)
}
