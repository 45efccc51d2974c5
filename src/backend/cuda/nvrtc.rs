//! NVRTC: compiles the embedded `kernels/*.cu` sources to a CUBIN for the device's own
//! architecture at first use, and keeps the result on disk so later runs skip the compiler.
//!
//! The cache key is a hash of the source, the target architecture, the NVRTC version and the
//! options, so editing a kernel, moving to another card or upgrading NVRTC recompiles, and
//! nothing else does. NVRTC is loaded at run time (cudarc `dynamic-loading`); every entry point
//! first checks that the library is loadable, because cudarc panics on a missing library.
//!
//! The kernels include no headers (bf16 is handled as raw bits, tensor-core math is inline PTX),
//! so no CUDA toolkit is needed; when one is found (`CUDA_HOME`, `CUDA_PATH`, `/usr/local/cuda`)
//! its `include/` directory (or `$DNVS_CUDA_INCLUDE`) is still passed, for kernels that may want `cuda_bf16.h` later.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::PathBuf;

use cudarc::nvrtc::sys;

use crate::{Error, Result};

/// Options every kernel is compiled with (besides the architecture and include path). No fast
/// math: the kernels are tested against the CPU reference at fp32 tolerance.
const OPTIONS: &[&str] = &["--std=c++17", "--fmad=true"];

/// Whether the NVRTC library can be loaded.
pub fn present() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names; calls nothing in it.
    unsafe { sys::is_culib_present() }
}

/// The NVRTC version `(major, minor)`, or why NVRTC is unusable.
pub fn version() -> std::result::Result<(i32, i32), String> {
    if !present() {
        return Err("libnvrtc not found (set LD_LIBRARY_PATH; see .ci/install-nvrtc.sh)".into());
    }
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: the library is loaded (checked above); both pointers are valid for one write.
    let rc = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    if rc != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(format!("nvrtcVersion failed: {rc:?}"));
    }
    Ok((major, minor))
}

/// The toolkit include directory, when one exists: `$DNVS_CUDA_INCLUDE` (what
/// .ci/install-nvrtc.sh prints), `$CUDA_HOME/include`, `$CUDA_PATH/include`, then
/// `/usr/local/cuda/include`. The kernels need no headers, so `None` is not an error.
pub fn include_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DNVS_CUDA_INCLUDE").map(PathBuf::from).filter(|p| p.is_dir())
    {
        return Some(d);
    }
    let from_env = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|root| PathBuf::from(root).join("include"));
    from_env.chain(std::iter::once(PathBuf::from("/usr/local/cuda/include"))).find(|p| p.is_dir())
}

/// Where compiled kernels are kept: `$DNVS_KERNEL_CACHE`, else `$XDG_CACHE_HOME/dnvs-engine/kernels`,
/// else `~/.cache/dnvs-engine/kernels`; `None` when no home is known (then nothing is cached).
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DNVS_KERNEL_CACHE") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("dnvs-engine").join("kernels"))
}

/// FNV-1a, 64 bit: a stable hash (std's hasher may change between Rust releases).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff; // separator, so ("ab", "c") and ("a", "bc") differ
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Compiles `src` (module `name`, for messages) to a CUBIN for `arch` (`"sm_90"`), using the disk
/// cache when possible. A cache that cannot be read or written is skipped, never an error.
///
/// # Errors
/// [`Error::Cuda`] when NVRTC is missing or the source does not compile (with NVRTC's log).
pub fn compile_cached(name: &str, src: &str, arch: &str) -> Result<Vec<u8>> {
    let (major, minor) = version().map_err(Error::Cuda)?;
    let ver = format!("{major}.{minor}");
    let key =
        fnv1a(&[src.as_bytes(), arch.as_bytes(), ver.as_bytes(), OPTIONS.join(" ").as_bytes()]);
    let path = cache_dir().map(|d| d.join(format!("{name}-{arch}-{key:016x}.cubin")));
    if let Some(bytes) = path.as_ref().and_then(|p| std::fs::read(p).ok()) {
        if !bytes.is_empty() {
            return Ok(bytes);
        }
    }
    let cubin = compile(name, src, arch)?;
    if let Some(p) = path {
        // The one atomic writer: a concurrent reader never sees half a file. A cache that
        // cannot be written is skipped.
        if p.parent().map(std::fs::create_dir_all).unwrap_or(Ok(())).is_ok() {
            let _ = crate::atomic::write_atomic(&p, &cubin);
        }
    }
    Ok(cubin)
}

/// Owns an NVRTC program and destroys it on every exit path.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: self.0 came from a successful nvrtcCreateProgram and is destroyed once.
        unsafe {
            sys::nvrtcDestroyProgram(&mut self.0);
        }
    }
}

fn check(what: &str, name: &str, rc: sys::nvrtcResult) -> Result<()> {
    if rc == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(Error::Cuda(format!("NVRTC {what} failed for {name}: {rc:?}")))
    }
}

/// Compiles `src` to a CUBIN for `arch` without the cache.
///
/// # Errors
/// [`Error::Cuda`] when NVRTC is missing or the compilation fails; the message carries the log.
pub fn compile(name: &str, src: &str, arch: &str) -> Result<Vec<u8>> {
    version().map_err(Error::Cuda)?;
    let csrc = CString::new(src).map_err(|_| Error::Cuda(format!("{name}: NUL in source")))?;
    let cname = CString::new(format!("{name}.cu")).expect("module names have no NUL");
    let mut opts: Vec<CString> =
        OPTIONS.iter().map(|o| CString::new(*o).expect("no NUL")).collect();
    opts.push(CString::new(format!("--gpu-architecture={arch}")).expect("no NUL"));
    if let Some(inc) = include_dir() {
        if let Ok(o) = CString::new(format!("--include-path={}", inc.display())) {
            opts.push(o);
        }
    }
    let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();

    let mut raw: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: NVRTC is loaded (version() succeeded); csrc and cname are NUL-terminated and outlive
    // the call; zero headers means the two header arrays are not read.
    let rc = unsafe {
        sys::nvrtcCreateProgram(
            &mut raw,
            csrc.as_ptr(),
            cname.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    check("create", name, rc)?;
    let prog = Program(raw);
    // SAFETY: prog is a live program; opt_ptrs holds opts.len() pointers into `opts`, alive here.
    let rc =
        unsafe { sys::nvrtcCompileProgram(prog.0, opt_ptrs.len() as c_int, opt_ptrs.as_ptr()) };
    if rc != sys::nvrtcResult::NVRTC_SUCCESS {
        let log = program_log(&prog);
        return Err(Error::Cuda(format!(
            "NVRTC could not compile kernels/{name}.cu for {arch} ({rc:?}):\n{log}"
        )));
    }
    let mut size = 0usize;
    // SAFETY: prog compiled successfully; size is valid for one write.
    check("cubin size", name, unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut size) })?;
    if size == 0 {
        return Err(Error::Cuda(format!("NVRTC produced an empty CUBIN for {name} ({arch})")));
    }
    let mut cubin = vec![0u8; size];
    // SAFETY: cubin has exactly the `size` bytes NVRTC asked for.
    check("cubin", name, unsafe { sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr().cast()) })?;
    Ok(cubin)
}

fn program_log(prog: &Program) -> String {
    let mut size = 0usize;
    // SAFETY: prog is live; size is valid for one write.
    let rc = unsafe { sys::nvrtcGetProgramLogSize(prog.0, &mut size) };
    if rc != sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
        return String::from("(no log)");
    }
    let mut buf = vec![0u8; size];
    // SAFETY: buf has the `size` bytes (terminator included) NVRTC reported.
    let rc = unsafe { sys::nvrtcGetProgramLog(prog.0, buf.as_mut_ptr().cast()) };
    if rc != sys::nvrtcResult::NVRTC_SUCCESS {
        return String::from("(no log)");
    }
    CStr::from_bytes_until_nul(&buf)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|_| String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_separates_parts_and_is_stable() {
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        assert_eq!(fnv1a(&[b"x"]), fnv1a(&[b"x"]));
    }
}
