//! The GPU self-check: its decision logic with an injected disagreement (runs everywhere: the
//! "GPU" run is the CPU run with one value changed), and the real check on a GPU when there is one
//! (skipped with a printed reason otherwise, failing under `DNVS_REQUIRE_GPU=1`).

mod common;

use common::cuda_device;
use dnvs_engine::nn::gpu_check::{self, DeviceChoice, Entry};
use dnvs_engine::tensor::{Device, Precision};
use dnvs_engine::Error;

/// The CPU workload, computed once per test (a width-4 V-Net step and the single ops).
fn cpu_run() -> Vec<Entry> {
    gpu_check::workload(Device::Cpu, Precision::F32).expect("the workload runs on the CPU")
}

/// A "GPU" run that is the CPU run with element 3 of entry `name` off by `factor` of its value.
fn with_fault(run: &[Entry], name: &str, factor: f32) -> Vec<Entry> {
    let mut out = run.to_vec();
    let e = out.iter_mut().find(|e| e.name == name).expect("entry exists");
    let v = &mut e.values[3];
    *v = *v * (1.0 + factor) + factor;
    out
}

#[test]
fn workload_names_ops_in_network_order_and_agrees_with_itself() {
    let cpu = cpu_run();
    let names: Vec<&str> = cpu.iter().map(|e| e.name.as_str()).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap_or_else(|| panic!("{n} missing"));
    assert!(pos("conv3d k5 out") < pos("batch_norm out"));
    assert!(pos("hard_dice grad 0") < pos("vnet forward"));
    assert!(names.iter().any(|n| n.starts_with("vnet grad ")));
    assert!(names.iter().any(|n| n.starts_with("adam param ")));
    assert!(gpu_check::compare(&cpu, &cpu, Precision::F32, "same").passed());
}

#[test]
fn an_injected_disagreement_falls_back_for_auto_and_fails_explicit_cuda() {
    let cpu = cpu_run();
    let bad = with_fault(&cpu, "conv3d k2 s2 grad 1", 0.05);
    let v = gpu_check::compare(&cpu, &bad, Precision::F32, "test");
    let first = v.first_disagreement().expect("the fault is seen");
    assert_eq!(first.name, "conv3d k2 s2 grad 1");
    assert!(v.ops.iter().filter(|o| !o.agrees).count() == 1, "only the faulty entry disagrees");

    // auto: the CPU, and one line naming the op.
    let (dev, line) = gpu_check::decide(DeviceChoice::Auto, Device::Cuda(0), Ok(v.clone()))
        .expect("auto never fails");
    assert_eq!(dev, Device::Cpu);
    let line = line.expect("a message");
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(line.contains("`conv3d k2 s2 grad 1` disagrees") && line.ends_with("using the CPU"));

    // explicit cuda: an error with the same message.
    match gpu_check::decide(DeviceChoice::Cuda(0), Device::Cuda(0), Ok(v)) {
        Err(Error::Device { op, msg }) => {
            assert_eq!(op, "gpu self-check");
            assert!(msg.contains("`conv3d k2 s2 grad 1` disagrees"), "{msg}");
            assert!(line.contains(&msg), "the same message both ways");
        }
        other => panic!("explicit cuda must fail, got {other:?}"),
    }
}

#[test]
fn a_check_that_cannot_run_is_a_disagreement_too() {
    let broken = Err(Error::Cuda("kernel conv3d_fwd_bf16 not in kernels/conv3d.cu".into()));
    let (dev, line) =
        gpu_check::decide(DeviceChoice::Auto, Device::Cuda(0), broken).expect("auto falls back");
    assert_eq!(dev, Device::Cpu);
    assert!(line.expect("a message").contains("conv3d_fwd_bf16"));
}

#[test]
fn small_bf16_rounding_passes_and_a_wrong_kernel_does_not() {
    let cpu = cpu_run();
    // bf16 operands: every value of the convolutions (which run in the checked precision) off by
    // up to 2^-8 relative (two roundings) passes in bf16, not in f32.
    let rounded: Vec<Entry> = cpu
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if e.name.starts_with("conv") {
                e.values.iter_mut().for_each(|v| *v *= 1.0 + 1.0 / 256.0);
            }
            e
        })
        .collect();
    assert!(gpu_check::compare(&cpu, &rounded, Precision::Bf16, "bf16").passed());
    assert!(!gpu_check::compare(&cpu, &rounded, Precision::F32, "f32").passed());
    // The V-Net runs in f32 under either key: the same 2^-8 there is a disagreement.
    let net_off = with_fault(&cpu, "vnet forward", 1.0 / 256.0);
    assert!(!gpu_check::compare(&cpu, &net_off, Precision::Bf16, "bf16").passed());
    let wrong = with_fault(&cpu, "vnet forward", 1.0);
    assert!(!gpu_check::compare(&cpu, &wrong, Precision::Bf16, "bf16").passed());
    // A gradient 5 % off as a tensor is a disagreement; one element moved by rounding is not.
    let name = "vnet grad down_tr32.ops.0.conv1.weight";
    let mut scaled = cpu.clone();
    let e = scaled.iter_mut().find(|e| e.name == name).expect("that gradient");
    e.values.iter_mut().for_each(|v| *v *= 1.05);
    let v = gpu_check::compare(&cpu, &scaled, Precision::F32, "f32");
    assert_eq!(v.first_disagreement().map(|o| o.name.as_str()), Some(name));
    assert!(gpu_check::compare(&cpu, &with_fault(&cpu, name, 1e-5), Precision::F32, "f32").passed());
}

#[test]
fn the_real_gpu_passes_its_self_check() {
    let Some(Device::Cuda(o)) = cuda_device() else {
        eprintln!("gpu self-check: skipped, no GPU");
        return;
    };
    for prec in [Precision::F32, Precision::Bf16] {
        let v = gpu_check::run_check(o, prec).expect("the check runs");
        for op in &v.ops {
            println!("{prec:?} {:<48} {:.3}x tolerance", op.name, op.worst);
        }
        assert!(v.passed(), "{prec:?}: first disagreement {:?}", v.first_disagreement());
    }
}
