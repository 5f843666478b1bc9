//! The example's step written with candle (candle-nn `Linear`,
//! `loss::cross_entropy`, `SGD`, CPU): the pure-Rust alternative a user might
//! pick, timed like `cross-entropy-tch bench` for `scripts/bench.sh`.
//! Candle draws its own random numbers, so its losses are not PyTorch's.
//!
//!     candle-step BATCH INPUT CLASSES STEPS WARMUP
use candle_core::{DType, Device, Tensor};
use candle_nn::{loss, Linear, Module, Optimizer, VarBuilder, VarMap, SGD};

fn main() -> candle_core::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("a number")).collect();
    let [n, d, c, steps, warmup] = args[..] else {
        eprintln!("usage: candle-step BATCH INPUT CLASSES STEPS WARMUP");
        std::process::exit(2);
    };
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let model: Linear = candle_nn::linear(d, c, vb.pp("linear"))?;
    let mut sgd = SGD::new(varmap.all_vars(), 0.01)?;
    let inputs = Tensor::randn(0f32, 1f32, (n, d), &dev)?;
    let targets = Tensor::rand(0f32, c as f32, n, &dev)?.floor()?.to_dtype(DType::U32)?;
    let mut step = || -> candle_core::Result<()> {
        let outputs = model.forward(&inputs)?;
        let l = loss::cross_entropy(&outputs, &targets)?;
        sgd.backward_step(&l)
    };
    for _ in 0..warmup {
        step()?;
    }
    let start = std::time::Instant::now();
    for _ in 0..steps {
        step()?;
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / steps.max(1) as f64;
    let final_loss = loss::cross_entropy(&model.forward(&inputs)?, &targets)?.to_scalar::<f32>()?;
    println!(
        "{{\"implementation\": \"candle\", \"device\": \"cpu\", \"batch_size\": {n}, \"features\": {d}, \"classes\": {c}, \"warmup\": {warmup}, \"steps\": {steps}, \"us_per_step\": {us}, \"final_loss\": {final_loss}}}"
    );
    Ok(())
}
