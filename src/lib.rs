//! PyTorch's classic cross-entropy example (`MyModel` with one `nn.Linear`,
//! `nn.CrossEntropyLoss()`, `torch.optim.SGD`), ported to Rust on tch so that
//! it computes the very same numbers as PyTorch.
//!
//! - [`model`] holds `MyModel`, initialized exactly like PyTorch's `nn.Linear`;
//! - [`loss`] holds the seed's `nn.CrossEntropyLoss()`, and all of
//!   `nn.CrossEntropyLoss` and `nn.BCEWithLogitsLoss` with every option;
//! - [`seed`] holds the seed's program: forward, loss, zero_grad, backward, step;
//! - [`training`] trains the same model on real data ([`data`]) and evaluates it;
//! - [`checkpoint`] reads and writes safetensors checkpoints PyTorch shares;
//! - [`device`] parses `--device cpu|cuda|cuda:N|auto`;
//! - [`output`] prints the human-readable accounts and the `--json` documents;
//! - [`plot`] draws the training curves;
//! - [`bench`](mod@bench) times the step (and holds the exact autograd-free step);
//! - [`cli`] holds the flags.

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod device;
pub mod loss;
pub mod model;
pub mod output;
pub mod plot;
pub mod seed;
pub mod training;

pub use loss::{BCEWithLogitsLoss, CrossEntropyLoss, LossError, Reduction};
pub use model::MyModel;
pub use seed::{run_seed, SeedConfig, SeedRun};
