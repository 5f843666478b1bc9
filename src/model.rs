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

/// `train --hidden`'s model: Linear layers with a ReLU and a Dropout after
/// each hidden one, as this PyTorch module (each `nn.Linear` initialized,
/// and so drawn from the generator, in construction order):
///
/// ```python
/// class MLP(nn.Module):
///     def __init__(self, features, hidden, classes, dropout):
///         super().__init__()
///         layers, d = [], features
///         for h in hidden:
///             layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)]
///             d = h
///         self.layers = nn.Sequential(*layers, nn.Linear(d, classes))
///
///     def forward(self, x):
///         return self.layers(x)
/// ```
///
/// The `state_dict()` names are `layers.0.weight`, `layers.0.bias`,
/// `layers.3.weight`, ... (every third module is a Linear). tch has no
/// module mode: `forward_t(x, train)` takes what `model.train()` /
/// `model.eval()` set in PyTorch; in train mode each Dropout draws its
/// mask from the default generator (`bernoulli_(1 - p)`, then `div_(1 -
/// p)`), as PyTorch's CPU dropout does; with `dropout` 0 nothing is drawn.
#[derive(Debug)]
pub struct Mlp {
    pub layers: Vec<nn::Linear>,
    pub dropout: f64,
}

impl Mlp {
    /// `MLP(features, hidden, classes, dropout)`.
    pub fn new(path: &nn::Path, features: i64, hidden: &[i64], classes: i64, dropout: f64) -> Mlp {
        let path = path / "layers";
        let sizes: Vec<i64> =
            std::iter::once(features).chain(hidden.iter().copied()).chain([classes]).collect();
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, io)| init::linear(&(&path / (3 * i)), io[0], io[1]))
            .collect();
        Mlp { layers, dropout }
    }
}

impl nn::ModuleT for Mlp {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let last = self.layers.len() - 1;
        let mut h = self.layers[0].forward(x);
        for layer in &self.layers[1..=last] {
            h = layer.forward(&h.relu().dropout(self.dropout, train));
        }
        h
    }
}

/// The model `train` builds: the example's `MyModel` (no hidden layers) or
/// an [`Mlp`].
#[derive(Debug)]
pub enum Classifier {
    Linear(MyModel),
    Mlp(Mlp),
}

impl Classifier {
    /// `MyModel(features, classes)` when `hidden` is empty, else
    /// `MLP(features, hidden, classes, dropout)`.
    pub fn new(
        path: &nn::Path,
        features: i64,
        hidden: &[i64],
        classes: i64,
        dropout: f64,
    ) -> Classifier {
        if hidden.is_empty() {
            Classifier::Linear(MyModel::new(path, features, classes))
        } else {
            Classifier::Mlp(Mlp::new(path, features, hidden, classes, dropout))
        }
    }
}

/// A model made of Linear layers, input to output, with a ReLU and then a
/// Dropout between two layers: [`MyModel`] (one layer), [`Mlp`], and so
/// [`Classifier`]. What checkpoints copy, and what the exact fast step
/// ([`crate::ManualStep`]) computes the gradients of.
pub trait LinearStack {
    /// The Linear layers, input to output.
    fn linears(&self) -> Vec<&nn::Linear>;
    /// The Dropout probability after each hidden layer (0: no Dropout).
    fn dropout(&self) -> f64;
}

impl LinearStack for MyModel {
    fn linears(&self) -> Vec<&nn::Linear> {
        vec![&self.linear]
    }
    fn dropout(&self) -> f64 {
        0.0
    }
}

impl LinearStack for Mlp {
    fn linears(&self) -> Vec<&nn::Linear> {
        self.layers.iter().collect()
    }
    fn dropout(&self) -> f64 {
        self.dropout
    }
}

impl LinearStack for Classifier {
    fn linears(&self) -> Vec<&nn::Linear> {
        match self {
            Classifier::Linear(m) => m.linears(),
            Classifier::Mlp(m) => m.linears(),
        }
    }
    fn dropout(&self) -> f64 {
        match self {
            Classifier::Linear(m) => m.dropout(),
            Classifier::Mlp(m) => m.dropout(),
        }
    }
}

impl nn::ModuleT for Classifier {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            Classifier::Linear(m) => m.forward(x),
            Classifier::Mlp(m) => m.forward_t(x, train),
        }
    }
}
