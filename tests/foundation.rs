//! Tensors and the tape: construction, errors, and gradient accumulation through `add`.

mod common;

use dnvs_engine::autograd::{backward, no_grad};
use dnvs_engine::{ops, Device, Tensor};

#[test]
fn from_vec_checks_element_count() {
    let err = Tensor::from_vec(vec![0.0; 5], [2, 3]).unwrap_err();
    assert!(err.to_string().contains("[2, 3]"), "{err}");
}

#[test]
fn gradients_accumulate_where_paths_meet() {
    let a = Tensor::param(vec![1.0, 2.0], [2]).unwrap();
    let b = ops::add(&a, &a).unwrap();
    let c = ops::add(&b, &a).unwrap();
    let seed = Tensor::from_vec(vec![1.0, 10.0], [2]).unwrap();
    let g = dnvs_engine::autograd::backward_with(&c, seed).unwrap();
    assert_eq!(g.get(&a).unwrap().to_vec().unwrap(), vec![3.0, 30.0]);
}

#[test]
fn no_grad_records_nothing() {
    let a = Tensor::param(vec![1.0], [1]).unwrap();
    let b = no_grad(|| ops::add(&a, &a).unwrap());
    assert!(!b.tracks_grad());
    let g = backward(&b.requires_grad()).unwrap();
    assert!(g.get(&a).is_none());
}

#[test]
fn device_parses() {
    assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda(1));
    assert!("gpu".parse::<Device>().is_err());
}
