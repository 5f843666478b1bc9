//! `MyModel`: the example's one-layer model, initialized exactly as PyTorch's
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

use crate::init;
use tch::nn::{self, Module};
use tch::Tensor;

/// The example's model: one fully-connected layer, `features -> classes`
/// (the example's `input_size -> output_size`).
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
    /// its initial values from libtorch's CPU generator in PyTorch's order
    /// ([`init::linear`], see the trap there).
    pub fn new(path: &nn::Path, features: i64, classes: i64) -> MyModel {
        // self.linear = nn.Linear(input_size, output_size)
        MyModel { linear: init::linear(&(path / "linear"), features, classes) }
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
