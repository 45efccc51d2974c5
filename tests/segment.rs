//! Sliding-window inference: one window over the golden input reproduces PyTorch's probabilities;
//! overlapping windows blend back into the input's geometry; small volumes are padded and cropped.

mod common;

use common::{assert_close, data_path, Golden};
use dnvs_engine::autograd;
use dnvs_engine::io::Volume;
use dnvs_engine::nn::segment::{self, Blend, Options};
use dnvs_engine::nn::{self, Arch, Mode, Network};
use dnvs_engine::Tensor;

fn golden_net(name: &str, arch: Arch, width: usize) -> Box<dyn Network> {
    let mut net = nn::build(arch, width).unwrap();
    net.load_safetensors(&data_path(&format!("golden/{name}.weights.safetensors"))).unwrap();
    net
}

/// The golden input as a volume with a non-trivial affine, and the golden foreground
/// probabilities `(D, H, W)`.
fn golden_volume(name: &str) -> (Volume, Vec<f32>) {
    let io = Golden::load(&format!("{name}.io.safetensors"));
    let (x, dims) = io.raw("input");
    let mut vol = Volume::zeros([dims[2], dims[3], dims[4]], [0.4, 0.5, 0.6]);
    vol.data = x;
    vol.affine[0][3] = -12.5;
    vol.affine[2][3] = 7.0;
    let (out, _) = io.raw("output");
    let n = vol.data.len();
    (vol, out[n..].to_vec()) // channel 1 of (1, 2, D, H, W)
}

fn same_geometry(a: &Volume, b: &Volume) {
    assert_eq!(a.dims, b.dims);
    assert_eq!(a.spacing, b.spacing);
    assert_eq!(a.affine, b.affine);
    assert_eq!(a.data.len(), b.data.len());
}

#[test]
fn one_window_reproduces_golden_probabilities() {
    for (name, arch, width) in [("vnet_b2", Arch::VNet, 2), ("unet3d_att_f8", Arch::UNetAtt, 8)] {
        let mut net = golden_net(name, arch, width);
        let (vol, want) = golden_volume(name);
        let probs = segment::sliding_window(net.as_mut(), &vol, vol.dims, 0.5).unwrap();
        same_geometry(&probs, &vol);
        assert_close(&format!("{name} probs"), &probs.data, &want, 1e-3, 1e-4);
        // A window larger than the volume shrinks to it: the same single pass.
        let big = segment::sliding_window(net.as_mut(), &vol, [64, 64, 64], 0.5).unwrap();
        assert_eq!(big.data, probs.data);
        let mask = segment::mask_from_probs(&probs);
        same_geometry(&mask, &vol);
        assert!(mask.data.iter().zip(&want).all(|(m, p)| (*m == 1.0) == (*p > 0.5)));
    }
}

/// Forward of one window cut from `vol` at `origin`, foreground channel.
fn window_probs(
    net: &mut dyn Network,
    vol: &Volume,
    origin: [usize; 3],
    size: [usize; 3],
) -> Vec<f32> {
    let mut x = Vec::new();
    for z in origin[0]..origin[0] + size[0] {
        for y in origin[1]..origin[1] + size[1] {
            let i = vol.index(z, y, origin[2]);
            x.extend_from_slice(&vol.data[i..i + size[2]]);
        }
    }
    let t = Tensor::from_vec(x, [1, size[0], size[1], size[2], 1]).unwrap();
    let p = autograd::no_grad(|| net.forward(&t, Mode::Eval)).unwrap().to_vec().unwrap();
    p.chunks_exact(2).map(|c| c[1]).collect()
}

#[test]
fn overlapping_windows_blend_in_the_input_geometry() {
    let mut net = golden_net("unet3d_f8", Arch::UNet, 8);
    // 24 x 16 x 16 from two copies of the golden input: windows of 16 at D offsets 0 and 8.
    let (g, _) = golden_volume("unet3d_f8");
    let mut vol = Volume::zeros([24, 16, 16], g.spacing);
    vol.affine = g.affine;
    vol.data = g.data.iter().chain(&g.data[..8 * 256]).copied().collect();
    for blend in [Blend::Gaussian, Blend::Linear, Blend::Constant] {
        let opt = Options { window: [16, 16, 16], overlap: 0.5, blend };
        let probs = segment::sliding_window_with(net.as_mut(), &vol, &opt).unwrap();
        same_geometry(&probs, &vol);
        let first = window_probs(net.as_mut(), &vol, [0, 0, 0], [16, 16, 16]);
        let second = window_probs(net.as_mut(), &vol, [8, 0, 0], [16, 16, 16]);
        // Voxels seen by one window only are that window's output.
        assert_close("only first", &probs.data[..8 * 256], &first[..8 * 256], 1e-5, 1e-6);
        assert_close("only second", &probs.data[16 * 256..], &second[8 * 256..], 1e-5, 1e-6);
        // In the overlap: a convex blend of the two.
        for i in 0..8 * 256 {
            let (a, b, p) = (first[8 * 256 + i], second[i], probs.data[8 * 256 + i]);
            assert!(p >= a.min(b) - 1e-6 && p <= a.max(b) + 1e-6, "{blend:?} voxel {i}");
        }
    }
}

#[test]
fn small_volumes_are_padded_and_cropped() {
    let mut net = golden_net("vnet_b2", Arch::VNet, 2);
    let (g, _) = golden_volume("vnet_b2");
    // 20 x 30 x 10 corner of the golden input: padded to 32 x 32 x 16 and cropped back.
    let mut vol = Volume::zeros([20, 30, 10], g.spacing);
    vol.data.clear();
    for z in 0..20 {
        for y in 0..30 {
            let i = g.index(z, y, 0);
            vol.data.extend_from_slice(&g.data[i..i + 10]);
        }
    }
    let probs = segment::sliding_window(net.as_mut(), &vol, [128, 128, 64], 0.25).unwrap();
    same_geometry(&probs, &vol);
    assert!(probs.data.iter().all(|p| (0.0..=1.0).contains(p)));
}

#[test]
fn bad_options_are_errors() {
    let mut net = nn::build(Arch::UNet, 8).unwrap();
    let vol = Volume::zeros([16, 16, 16], [1.0; 3]);
    assert!(segment::sliding_window(net.as_mut(), &vol, [16, 16, 16], 1.0).is_err());
    assert!(segment::sliding_window(net.as_mut(), &vol, [0, 16, 16], 0.5).is_err());
    let empty = Volume::zeros([0, 16, 16], [1.0; 3]);
    assert!(segment::sliding_window(net.as_mut(), &empty, [16, 16, 16], 0.5).is_err());
}

#[test]
fn cli_writes_mask_and_probs_in_the_input_geometry() {
    use dnvs_engine::io::{self, VoxelKind};
    let (vol, want) = golden_volume("vnet_b2");
    let dir = std::env::temp_dir().join(format!("dnvs-segment-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, mask, probs) =
        (dir.join("ct.nii.gz"), dir.join("mask.nii.gz"), dir.join("probs.nii.gz"));
    io::write_nifti(&input, &vol, VoxelKind::Image).unwrap();
    let model = data_path("golden/vnet_b2.weights.safetensors");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dnvs-engine"))
        .args(["segment", "--arch", "vnet", "--normalize", "none", "--device", "cpu"])
        .args(["--window", "32,32,32"])
        .arg("--model")
        .arg(&model)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&mask)
        .arg("--probs")
        .arg(&probs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (m, p) = (io::read_nifti(&mask).unwrap(), io::read_nifti(&probs).unwrap());
    io::check_aligned(&vol, &m, "ct/mask").unwrap();
    io::check_aligned(&vol, &p, "ct/probs").unwrap();
    assert_close("cli probs", &p.data, &want, 1e-3, 1e-4);
    let agree = m.data.iter().zip(&want).filter(|(m, w)| (**m == 1.0) == (**w > 0.5)).count();
    assert_eq!(agree, want.len());

    // Weights of another width are refused with a hint.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dnvs-engine"))
        .args(["segment", "--arch", "vnet", "--width", "4", "--normalize", "none"])
        .args(["--device", "cpu"])
        .arg("--model")
        .arg(&model)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&mask)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--width"));
}
