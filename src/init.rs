//! PyTorch's `nn.Linear` initialization for any tch `Linear`, drawn in
//! PyTorch's order from libtorch's CPU generator, so that after the same
//! `torch.manual_seed` the parameters are PyTorch's bit for bit.
//!
//! ```python
//! layer = nn.Linear(in_features, out_features)   # PyTorch
//! ```
//! ```
//! use cross_entropy_tch::init;
//! use tch::{nn::VarStore, Device};
//!
//! tch::manual_seed(0);
//! let vs = VarStore::new(Device::Cpu);
//! let layer = init::linear(&(vs.root() / "fc1"), 784, 128); // nn.Linear(784, 128)
//! assert_eq!(layer.ws.size(), [128, 784]);
//! ```

use tch::nn;

/// `nn.Linear(in_features, out_features)` under `path`: the parameters are
/// named `weight` and `bias` below it and initialized as PyTorch does.
///
/// Porting trap: tch's default `LinearConfig` is not PyTorch's `nn.Linear`
/// init. It draws the weight from Kaiming-uniform with ReLU gain (bound
/// `sqrt(6 / fan_in)`, PyTorch's is `1 / sqrt(fan_in)`), and it creates the
/// bias *before* the weight, so even with the right bounds the random stream
/// would be consumed in the other order. So the layer is created as zeros
/// (no random numbers drawn) and then [`reset_linear`] runs PyTorch's
/// `reset_parameters`.
///
/// The weight is also *registered* first, as `nn.Linear` registers it, so
/// that the var store's `trainable_variables()` lists parameters in the
/// order of PyTorch's `model.parameters()`. That order matters wherever
/// parameters are reduced together: `clip_grad_norm_`'s norm of the
/// per-parameter norms rounds differently in another order.
pub fn linear(path: &nn::Path, in_features: i64, out_features: i64) -> nn::Linear {
    let ws = path.zeros("weight", &[out_features, in_features]);
    let bs = Some(path.zeros("bias", &[out_features]));
    let layer = nn::Linear { ws, bs };
    reset_linear(&layer);
    layer
}

/// PyTorch's `nn.Linear.reset_parameters`, in its order: weight first
/// (`kaiming_uniform_(weight, a=sqrt(5))`), then bias (uniform in
/// ±1/sqrt(fan_in)). Works on any tch `Linear`, with or without a bias.
pub fn reset_linear(layer: &nn::Linear) {
    let fan_in = layer.ws.size()[1];
    let weight_bound = kaiming_uniform_bound(fan_in, 5f64.sqrt());
    let bias_bound = if fan_in > 0 { 1.0 / (fan_in as f64).sqrt() } else { 0.0 };
    tch::no_grad(|| {
        // `uniform_` casts the f64 bounds to the tensor's f32, as PyTorch does.
        let _ = layer.ws.shallow_clone().uniform_(-weight_bound, weight_bound);
        if let Some(bs) = &layer.bs {
            let _ = bs.shallow_clone().uniform_(-bias_bound, bias_bound);
        }
    });
}

/// The bound of `torch.nn.init.kaiming_uniform_(w, a)` with the default
/// `mode='fan_in', nonlinearity='leaky_relu'`, computed in f64 with the same
/// operations in the same order as PyTorch's Python code, so that the bound
/// (and hence every drawn f32) is the very same. For `a = sqrt(5)` this is
/// 1/sqrt(fan_in) up to f64 rounding.
pub fn kaiming_uniform_bound(fan_in: i64, a: f64) -> f64 {
    // gain = math.sqrt(2.0 / (1 + negative_slope**2))
    let gain = (2.0 / (1.0 + a.powi(2))).sqrt();
    // std = gain / math.sqrt(fan)
    let std = gain / (fan_in as f64).sqrt();
    // bound = math.sqrt(3.0) * std
    3f64.sqrt() * std
}
