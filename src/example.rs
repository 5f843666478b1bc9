//! The example's program (the classic PyTorch cross-entropy example this
//! crate ports), line for line:
//!
//! ```python
//! model = MyModel(10, 3)
//! loss_fn = nn.CrossEntropyLoss()
//! optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
//!
//! inputs = torch.randn(10, 10)
//! targets = torch.randint(0, 3, (10,))
//!
//! outputs = model(inputs)
//! loss = loss_fn(outputs, targets)
//! print(loss)
//!
//! optimizer.zero_grad()
//! loss.backward()
//! optimizer.step()
//! ```

use crate::loss::cross_entropy;
use crate::model::MyModel;
use serde::Serialize;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, TchError, Tensor};

/// The example's knobs. [`Default`] is the example as written.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ExampleConfig {
    /// `torch.manual_seed(seed)` before the model is built.
    pub seed: i64,
    /// Rows of `torch.randn(batch_size, features)`.
    pub batch_size: i64,
    /// `MyModel(features, ...)`.
    pub features: i64,
    /// `MyModel(..., classes)` and `torch.randint(0, classes, ...)`.
    pub classes: i64,
    /// `torch.optim.SGD(..., lr=lr)`.
    pub lr: f64,
    /// How many times forward / loss / zero_grad / backward / step run.
    pub steps: usize,
}

impl Default for ExampleConfig {
    fn default() -> Self {
        ExampleConfig { seed: 0, batch_size: 10, features: 10, classes: 3, lr: 0.01, steps: 1 }
    }
}

/// A copy of `MyModel`'s parameters (or of their gradients) on the CPU.
#[derive(Debug)]
pub struct Params {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Params {
    fn of(weight: &Tensor, bias: &Tensor) -> Params {
        Params { weight: host_copy(weight), bias: host_copy(bias) }
    }
}

/// Everything the example computes, on the CPU, for printing and for the
/// parity tests.
#[derive(Debug)]
pub struct ExampleRun {
    pub config: ExampleConfig,
    pub device: Device,
    /// Parameters before the first step.
    pub initial: Params,
    pub inputs: Tensor,
    pub targets: Tensor,
    /// Logits of the first forward pass.
    pub outputs: Tensor,
    /// The loss of each step, before that step's update.
    pub losses: Vec<f32>,
    /// Gradients of the first step.
    pub grad: Params,
    /// Parameters after the last step.
    pub final_params: Params,
}

/// The example's objects, before its first step: model, optimizer, inputs and
/// targets, all drawn on the CPU in the example's order.
pub struct ExampleSetup {
    pub vs: nn::VarStore,
    pub model: MyModel,
    pub optimizer: nn::Optimizer,
    pub inputs: Tensor,
    pub targets: Tensor,
}

impl ExampleSetup {
    /// The example's first lines, from `torch.manual_seed` to `torch.randint`.
    pub fn new(config: &ExampleConfig) -> Result<ExampleSetup, TchError> {
        let &ExampleConfig { seed, batch_size, features, classes, lr, .. } = config;
        tch::manual_seed(seed);
        // model = MyModel(features, classes), built on the CPU.
        let vs = nn::VarStore::new(Device::Cpu);
        let model = MyModel::new(&vs.root(), features, classes);
        // loss_fn = nn.CrossEntropyLoss(): see `loss::cross_entropy`.
        // optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        let optimizer = nn::Sgd::default().build(&vs, lr)?;
        // inputs = torch.randn(batch_size, features)
        let inputs = Tensor::f_randn([batch_size, features], (Kind::Float, Device::Cpu))?;
        // targets = torch.randint(0, classes, (batch_size,)); tch's randint
        // takes only the exclusive upper bound, the lower one is 0.
        let targets = Tensor::f_randint(classes, [batch_size], (Kind::Int64, Device::Cpu))?;
        Ok(ExampleSetup { vs, model, optimizer, inputs, targets })
    }

    /// `model.to(device)`, `inputs.to(device)`, `targets.to(device)`.
    pub fn to_device(mut self, device: Device) -> Result<ExampleSetup, TchError> {
        if device != Device::Cpu {
            self.vs.set_device(device);
        }
        self.inputs = self.inputs.f_to_device(device)?;
        self.targets = self.targets.f_to_device(device)?;
        Ok(self)
    }
}

/// Runs the example on `device`. Everything random is drawn on the CPU, in the
/// example's order, and only then moved, so a CUDA run starts from the very
/// numbers of a CPU run and of PyTorch. `on_step(step, loss)` is called after
/// each step's loss is known (steps count from 1), for progress output.
pub fn run_example(
    config: &ExampleConfig,
    device: Device,
    mut on_step: impl FnMut(usize, f32),
) -> Result<ExampleRun, TchError> {
    let setup = ExampleSetup::new(config)?;
    let (initial, inputs_cpu, targets_cpu) = (
        Params::of(setup.model.weight(), setup.model.bias()),
        setup.inputs.copy(),
        setup.targets.copy(),
    );
    let ExampleSetup { vs: _vs, model, mut optimizer, inputs, targets } =
        setup.to_device(device)?;
    let steps = config.steps;

    let mut first: Option<(Tensor, Params)> = None;
    let mut losses = Vec::with_capacity(steps.min(1 << 16));
    for step in 1..=steps {
        let outputs = model.forward(&inputs); // outputs = model(inputs)
        let loss = cross_entropy(&outputs, &targets); // loss = loss_fn(outputs, targets)
        let value = loss.f_double_value(&[])? as f32; // print(loss)
        losses.push(value);
        on_step(step, value);

        optimizer.zero_grad(); // optimizer.zero_grad()
        loss.backward(); // loss.backward()
        if first.is_none() {
            let grad = Params::of(&model.weight().grad(), &model.bias().grad());
            first = Some((host_copy(&outputs), grad));
        }
        optimizer.step(); // optimizer.step()
    }
    let (outputs, grad) =
        first.ok_or_else(|| TchError::Shape("steps must be at least 1".to_string()))?;

    Ok(ExampleRun {
        config: *config,
        device,
        initial,
        inputs: inputs_cpu,
        targets: targets_cpu,
        outputs,
        losses,
        grad,
        final_params: Params::of(model.weight(), model.bias()),
    })
}

/// A detached copy on the CPU that later in-place updates do not touch.
fn host_copy(t: &Tensor) -> Tensor {
    t.detach().to_device(Device::Cpu).copy()
}
