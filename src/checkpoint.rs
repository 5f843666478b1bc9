//! Model checkpoints as safetensors files that PyTorch reads and writes.
//!
//! Tensors: `linear.weight` `(C, D)` and `linear.bias` `(C,)`, f32: the names
//! of `MyModel().state_dict()`, so `model.load_state_dict(load_file(path))`
//! works in PyTorch, strictly. The standardization statistics go in the
//! file's string metadata (`standardize_mean`, `standardize_std`: JSON
//! arrays), where `load_file` does not see them;
//! `safetensors.torch.save_file(sd, path, metadata=...)` writes the same.

use crate::data::Standardizer;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

pub const WEIGHT: &str = "linear.weight";
pub const BIAS: &str = "linear.bias";

/// A `MyModel`'s parameters and the statistics its inputs were standardized with.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// `(classes, features)`, row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub classes: usize,
    pub features: usize,
    pub standardizer: Option<Standardizer>,
}

/// Why a checkpoint could not be read or written. Like `std::fs` errors it
/// does not name the file: the caller knows it.
#[derive(Debug)]
pub enum CheckpointError {
    /// The file could not be read.
    Io(std::io::Error),
    /// A `torch.save` file (zip archive or pickle), not safetensors.
    TorchSave,
    /// Not a safetensors file (the parser's reason).
    NotSafetensors(String),
    /// A tensor `MyModel` needs is missing; `names` are the file's.
    MissingTensor { name: &'static str, names: Vec<String> },
    /// A tensor that is not float32.
    Dtype { name: &'static str, dtype: String },
    /// Weight and bias shapes that are not `(classes, features)` and `(classes,)`.
    Shape { weight: Vec<usize>, bias: Vec<usize> },
    /// The standardization metadata is not what this crate writes.
    Metadata(String),
    /// safetensors refused to serialize.
    Serialize(String),
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::Io(e) => write!(f, "cannot read: {e}"),
            CheckpointError::TorchSave => write!(
                f,
                "a torch.save file (a .pt zip or pickle archive), not safetensors; save the state_dict as safetensors in PyTorch: \
                 from safetensors.torch import save_file; save_file(model.state_dict(), \"model.safetensors\")"
            ),
            CheckpointError::NotSafetensors(why) => {
                write!(f, "not a valid safetensors file ({why})")
            }
            CheckpointError::MissingTensor { name, names } => write!(
                f,
                "no tensor named '{name}' (the file has {names:?}); expected {WEIGHT} and {BIAS}, MyModel's state_dict() names"
            ),
            CheckpointError::Dtype { name, dtype } => {
                write!(f, "{name} has dtype {dtype}, expected F32 (float32)")
            }
            CheckpointError::Shape { weight, bias } => write!(
                f,
                "{WEIGHT} has shape {weight:?} and {BIAS} {bias:?}; expected (classes, features) and (classes,)"
            ),
            CheckpointError::Metadata(why) => write!(f, "standardization metadata: {why}"),
            CheckpointError::Serialize(why) => write!(f, "cannot serialize: {why}"),
        }
    }
}

impl std::error::Error for CheckpointError {}

/// Whether `bytes` start like a `torch.save` file: a zip archive (the
/// default since PyTorch 1.6) or a pickle (protocol 2 and up, the legacy
/// format).
fn is_torch_save(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || (bytes.len() > 1 && bytes[0] == 0x80 && bytes[1] <= 5)
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Checkpoint {
    /// The safetensors bytes of this checkpoint.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CheckpointError> {
        let err = |e: safetensors::SafeTensorError| CheckpointError::Serialize(e.to_string());
        let (w, b) = (le_bytes(&self.weight), le_bytes(&self.bias));
        let tensors = [
            (
                WEIGHT,
                TensorView::new(Dtype::F32, vec![self.classes, self.features], &w).map_err(err)?,
            ),
            (BIAS, TensorView::new(Dtype::F32, vec![self.classes], &b).map_err(err)?),
        ];
        let mut metadata = HashMap::from([("format".to_string(), "cross-entropy-tch".to_string())]);
        if let Some(s) = &self.standardizer {
            let json = |v: &Vec<f64>| {
                serde_json::to_string(v).map_err(|e| CheckpointError::Serialize(e.to_string()))
            };
            metadata.insert("standardize_mean".into(), json(&s.mean)?);
            metadata.insert("standardize_std".into(), json(&s.std)?);
        }
        safetensors::serialize(tensors, &Some(metadata)).map_err(err)
    }

    /// Reads a checkpoint written by this crate or by
    /// `safetensors.torch.save_file(model.state_dict(), path)`.
    pub fn read(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let bytes = std::fs::read(path).map_err(CheckpointError::Io)?;
        Checkpoint::from_bytes(&bytes)
    }

    /// Parses the bytes of a checkpoint file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            if is_torch_save(bytes) {
                CheckpointError::TorchSave
            } else {
                CheckpointError::NotSafetensors(e.to_string())
            }
        })?;
        let get = |name: &'static str| {
            st.tensor(name).map_err(|_| {
                let mut names: Vec<String> = st.names().into_iter().cloned().collect();
                names.sort();
                CheckpointError::MissingTensor { name, names }
            })
        };
        let (w, b) = (get(WEIGHT)?, get(BIAS)?);
        for (name, t) in [(WEIGHT, &w), (BIAS, &b)] {
            if t.dtype() != Dtype::F32 {
                return Err(CheckpointError::Dtype { name, dtype: format!("{:?}", t.dtype()) });
            }
        }
        let (ws, bs) = (w.shape().to_vec(), b.shape().to_vec());
        if ws.len() != 2 || bs.len() != 1 || bs[0] != ws[0] {
            return Err(CheckpointError::Shape { weight: ws, bias: bs });
        }
        let floats = |t: &TensorView| -> Vec<f32> {
            t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        };
        let metadata = SafeTensors::read_metadata(bytes)
            .map_err(|e| CheckpointError::NotSafetensors(e.to_string()))?
            .1;
        let parse = |what: &str, text: &str| {
            serde_json::from_str::<Vec<f64>>(text)
                .map_err(|e| CheckpointError::Metadata(format!("{what}: {e}")))
        };
        let standardizer = match metadata.metadata() {
            Some(meta) => match (meta.get("standardize_mean"), meta.get("standardize_std")) {
                (Some(m), Some(s)) => {
                    let mean = parse("standardize_mean", m)?;
                    let std = parse("standardize_std", s)?;
                    if mean.len() != ws[1] || std.len() != ws[1] {
                        return Err(CheckpointError::Metadata(format!(
                            "{} values for a model of {} features",
                            mean.len(),
                            ws[1]
                        )));
                    }
                    Some(Standardizer { mean, std })
                }
                _ => None,
            },
            None => None,
        };
        Ok(Checkpoint {
            weight: floats(&w),
            bias: floats(&b),
            classes: ws[0],
            features: ws[1],
            standardizer,
        })
    }
}
