//! Model checkpoints as safetensors files that PyTorch reads and writes.
//!
//! Tensors: `linear.weight` `(C, D)` and `linear.bias` `(C,)`, f32: the names
//! of `MyModel().state_dict()`, so `model.load_state_dict(load_file(path))`
//! works in PyTorch, strictly. The standardization statistics go in the
//! file's string metadata (`standardize_mean`, `standardize_std`: JSON
//! arrays), where `load_file` does not see them;
//! `safetensors.torch.save_file(sd, path, metadata=...)` writes the same.

use crate::data::Standardizer;
use crate::output::AtomicFile;
use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
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

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Checkpoint {
    /// The safetensors bytes of this checkpoint.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let (w, b) = (le_bytes(&self.weight), le_bytes(&self.bias));
        let tensors = [
            (WEIGHT, TensorView::new(Dtype::F32, vec![self.classes, self.features], &w)?),
            (BIAS, TensorView::new(Dtype::F32, vec![self.classes], &b)?),
        ];
        let mut metadata = HashMap::from([("format".to_string(), "cross-entropy-tch".to_string())]);
        if let Some(s) = &self.standardizer {
            metadata.insert("standardize_mean".into(), serde_json::to_string(&s.mean)?);
            metadata.insert("standardize_std".into(), serde_json::to_string(&s.std)?);
        }
        Ok(safetensors::serialize(tensors, &Some(metadata))?)
    }

    /// Writes the file through a temporary file in the same directory and a
    /// rename, so a crash never leaves a truncated checkpoint.
    pub fn save(&self, file: AtomicFile) -> Result<()> {
        file.commit(&self.to_bytes()?)
    }

    /// Reads a checkpoint written by this crate or by
    /// `safetensors.torch.save_file(model.state_dict(), path)`.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let shown = path.display();
        let bytes = std::fs::read(path).with_context(|| format!("--load {shown}: cannot read"))?;
        Checkpoint::from_bytes(&bytes).with_context(|| format!("--load {shown}"))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| anyhow::anyhow!("not a valid safetensors file ({e})"))?;
        let get = |name: &str| {
            st.tensor(name).map_err(|_| {
                let mut names = st.names();
                names.sort();
                anyhow::anyhow!("no tensor named '{name}' (the file has {names:?}); expected {WEIGHT} and {BIAS}, MyModel's state_dict() names")
            })
        };
        let (w, b) = (get(WEIGHT)?, get(BIAS)?);
        for (name, t) in [(WEIGHT, &w), (BIAS, &b)] {
            if t.dtype() != Dtype::F32 {
                bail!("{name} has dtype {:?}, expected F32 (float32)", t.dtype());
            }
        }
        let (ws, bs) = (w.shape().to_vec(), b.shape().to_vec());
        if ws.len() != 2 || bs.len() != 1 || bs[0] != ws[0] {
            bail!("{WEIGHT} has shape {ws:?} and {BIAS} {bs:?}; expected (classes, features) and (classes,)");
        }
        let floats = |t: &TensorView| -> Vec<f32> {
            t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        };
        let standardizer = match SafeTensors::read_metadata(bytes)?.1.metadata() {
            Some(meta) => match (meta.get("standardize_mean"), meta.get("standardize_std")) {
                (Some(m), Some(s)) => {
                    let mean: Vec<f64> =
                        serde_json::from_str(m).context("standardize_mean metadata")?;
                    let std: Vec<f64> =
                        serde_json::from_str(s).context("standardize_std metadata")?;
                    if mean.len() != ws[1] || std.len() != ws[1] {
                        bail!(
                            "the standardization metadata has {} values, the model {} features",
                            mean.len(),
                            ws[1]
                        );
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
