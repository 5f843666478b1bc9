//! `MyModel`: the seed's one-layer model, initialized exactly as PyTorch's
//! `nn.Linear` initializes itself.
//!
//! ```python
//! class MyModel(nn.Module):
//!     def __init__(self, input_size, output_size):
//!         super(MyModel, self).__init__()
//!         self.linear = nn.Linear(input_size, output_size)
//!
//!     def forward(self, x):
//!         return self.linear(x)
//! ```

use tch::nn::{self, Module};
use tch::Tensor;

/// The seed's model: one fully-connected layer, `input_size -> output_size`.
///
/// Its parameters live in the [`nn::VarStore`] it was built from, under the
/// names PyTorch's `state_dict()` uses: `linear.weight` and `linear.bias`.
///
/// ```
/// use cross_entropy_tch::MyModel;
/// use tch::nn::{Module, VarStore};
/// use tch::{Device, Kind, Tensor};
///
/// tch::manual_seed(0); // torch.manual_seed(0)
/// let vs = VarStore::new(Device::Cpu);
/// let model = MyModel::new(&vs.root(), 10, 3); // model = MyModel(10, 3)
/// let outputs = model.forward(&Tensor::randn([4, 10], (Kind::Float, Device::Cpu)));
/// assert_eq!(outputs.size(), [4, 3]);
/// let mut names: Vec<String> = vs.variables().into_keys().collect();
/// names.sort();
/// assert_eq!(names, ["linear.bias", "linear.weight"]);
/// ```
#[derive(Debug)]
pub struct MyModel {
    pub linear: nn::Linear,
}

impl MyModel {
    /// `MyModel(input_size, output_size)`: builds the layer under `path`
    /// (use the var store's root to get PyTorch's parameter names) and draws
    /// its initial values from libtorch's CPU generator in PyTorch's order.
    pub fn new(path: &nn::Path, input_size: i64, output_size: i64) -> MyModel {
        // Porting trap: tch's default `LinearConfig` is not PyTorch's
        // `nn.Linear` init. It draws the weight from Kaiming-uniform with ReLU
        // gain (bound sqrt(6 / fan_in), PyTorch's is 1 / sqrt(fan_in)), and it
        // creates the bias *before* the weight, so even with the right bounds
        // the random stream would be consumed in the other order. So we create
        // both as zeros (no random numbers drawn) and then run PyTorch's
        // `reset_parameters` ourselves.
        let no_draw = nn::LinearConfig {
            ws_init: nn::Init::Const(0.0),
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let linear = nn::linear(path / "linear", input_size, output_size, no_draw);
        let model = MyModel { linear };
        model.reset_parameters();
        model
    }

    /// PyTorch's `nn.Linear.reset_parameters`, in its order: weight first
    /// (`kaiming_uniform_(weight, a=sqrt(5))`), then bias (uniform in
    /// ±1/sqrt(fan_in)).
    pub fn reset_parameters(&self) {
        let fan_in = self.linear.ws.size()[1];
        let weight_bound = kaiming_uniform_bound(fan_in, 5f64.sqrt());
        let bias_bound = if fan_in > 0 { 1.0 / (fan_in as f64).sqrt() } else { 0.0 };
        tch::no_grad(|| {
            // `uniform_` casts the f64 bounds to the tensor's f32, as PyTorch does.
            let _ = self.linear.ws.shallow_clone().uniform_(-weight_bound, weight_bound);
            if let Some(bs) = &self.linear.bs {
                let _ = bs.shallow_clone().uniform_(-bias_bound, bias_bound);
            }
        });
    }

    /// The layer's weight, `(output_size, input_size)`.
    pub fn weight(&self) -> &Tensor {
        &self.linear.ws
    }

    /// The layer's bias, `(output_size,)`.
    pub fn bias(&self) -> &Tensor {
        self.linear.bs.as_ref().expect("MyModel's linear layer always has a bias")
    }
}

impl Module for MyModel {
    /// `return self.linear(x)`.
    fn forward(&self, x: &Tensor) -> Tensor {
        self.linear.forward(x)
    }
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
