//! PyTorch's classic cross-entropy example (`MyModel` with one `nn.Linear`,
//! `nn.CrossEntropyLoss()`, `torch.optim.SGD`), ported to Rust on tch so that
//! it computes the very same numbers as PyTorch, and the pieces a porter of
//! PyTorch training code needs to get the same numbers too.
//!
//! - [`init`]: PyTorch's `nn.Linear` initialization for any tch `Linear`;
//! - [`model`]: `MyModel`, the example's model;
//! - [`loss`]: the example's `nn.CrossEntropyLoss()`, all of
//!   `nn.CrossEntropyLoss` and `nn.BCEWithLogitsLoss` with every option;
//! - [`example`]: the example's program (forward, loss, zero_grad, backward, step);
//! - [`optim`]: `torch.optim`'s SGD, Adam, AdamW and RMSprop and
//!   `clip_grad_norm_`/`clip_grad_value_`, bit for bit (tch's Adam is not);
//! - [`schedule`]: learning-rate schedulers with PyTorch's recursive formulas;
//! - [`step`]: the exact fast step (the same gradients without autograd);
//! - [`log_softmax`]: ATen's `log_softmax` and its backward, the same bits,
//!   faster for a few classes (what the fast step runs);
//! - [`data`]: the bundled data sets, the CSV reader, split, standardization;
//! - [`training`]: the training loop (config in, per-epoch metrics out
//!   through a callback) and evaluation;
//! - [`checkpoint`]: safetensors checkpoints PyTorch reads and writes;
//! - [`device`]: `cpu`, `cuda`, `cuda:N` or `auto`, resolved on this machine;
//! - [`amp`]: `torch.autocast(device_type, dtype)` on libtorch's autocast
//!   (CPU and CUDA, bf16 and fp16) and `torch.amp.GradScaler`;
//! - [`distributed`]: c10d's process group (gloo; NCCL on CUDA),
//!   `torchrun`'s environment and DDP's parameter broadcast and gradient
//!   averaging.
//!
//! The command line (`cross-entropy-tch`) sits on top of this library behind
//! the default `cli` feature: `default-features = false` brings no clap,
//! indicatif or plotters. Errors are typed ([`LossError`],
//! [`data::DataError`], [`checkpoint::CheckpointError`],
//! [`training::TrainError`], [`device::DeviceError`],
//! [`distributed::DistributedError`], [`amp::AmpError`]) and say what is wrong in
//! the library's terms.

pub mod amp;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod distributed;
pub mod example;
mod ffi;
pub mod init;
pub mod log_softmax;
pub mod loss;
pub mod model;
pub mod optim;
pub mod resume;
pub mod rng;
pub mod schedule;
pub mod step;
pub mod training;

pub use example::{run_example, ExampleConfig, ExampleRun};
pub use loss::{BCEWithLogitsLoss, CrossEntropyLoss, LossError, Reduction};
pub use model::MyModel;
pub use step::ManualStep;
pub use training::{train, TrainConfig, TrainError};

/// The README's Rust blocks, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The guide's Rust blocks, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/guide.md")]
struct GuideDoctests;

/// The libtorch version this crate was built against (read from the
/// libtorch directory itself by `build.rs`).
pub const LIBTORCH_VERSION: &str = env!("CE_LIBTORCH_VERSION");
