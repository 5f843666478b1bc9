//! `rng::cpu_state` / `rng::set_cpu_state` are `torch.get_rng_state()` /
//! `torch.set_rng_state()`: the same bytes as PyTorch's after the same seed
//! and draws, and a restored state draws the same numbers again.

mod common;
use common::{reference_python, rng_lock};
use cross_entropy_tch::rng;
use tch::{Device, Kind, Tensor};

#[test]
fn a_restored_state_draws_the_same_numbers() {
    let _guard = rng_lock();
    tch::manual_seed(7);
    let _ = Tensor::randn([5], (Kind::Float, Device::Cpu));
    let state = rng::cpu_state().unwrap();
    assert_eq!(state.len(), 5056, "mt19937's state as PyTorch writes it");
    let a = Tensor::randperm(100, (Kind::Int64, Device::Cpu));
    let b = Tensor::rand([7], (Kind::Float, Device::Cpu));
    rng::set_cpu_state(&state).unwrap();
    assert!(a.equal(&Tensor::randperm(100, (Kind::Int64, Device::Cpu))));
    assert!(b.equal(&Tensor::rand([7], (Kind::Float, Device::Cpu))));
    // A state of another size is libtorch's error, not a crash.
    let err = rng::set_cpu_state(&state[..100]).unwrap_err();
    assert!(!err.0.is_empty(), "{err}");
}

#[test]
fn the_state_is_pytorchs_byte_for_byte() {
    let Some(python) = reference_python() else { return };
    let _guard = rng_lock();
    tch::manual_seed(3);
    let _ = Tensor::randperm(10, (Kind::Int64, Device::Cpu));
    let ours = rng::cpu_state().unwrap();
    let script = "import torch, sys; torch.manual_seed(3); torch.randperm(10); \
                  sys.stdout.buffer.write(bytes(torch.get_rng_state().tolist()))";
    let out = std::process::Command::new(&python).args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), ours.len());
    assert!(out.stdout == ours, "the generator states differ");
}
