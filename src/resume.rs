//! Resume checkpoints: a run's [`TrainState`] as one safetensors file,
//! what a PyTorch script saves to continue a run exactly:
//!
//! ```python
//! torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
//!             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
//!             "rng": torch.get_rng_state(),
//!             "epoch": epoch}, path)
//! ```
//!
//! Tensors: the model's, under its `state_dict()` names (so `--load`, `eval`
//! and [`Checkpoint::read`] read the weights of a resume file too), each
//! parameter's optimizer buffers as `optimizer.{i}.{name}` (`i` in
//! `model.parameters()`'s order, `name` `torch.optim`'s: `momentum_buffer`,
//! `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`, `square_avg`, `grad_avg`), and
//! `rng_state` (U8, `torch.get_rng_state()`'s bytes). Metadata (JSON
//! strings): `epoch`; `optimizer` (`{"optimizer", "lr", "momentum",
//! "steps"}`: the kind, the group's lr and momentum or beta1, each
//! parameter's step count or null); `scheduler` (`{"name": its class,
//! "state": `[`SchedulerState`]`}`), when the run has one; `grad_scaler`
//! (`scaler.state_dict()`: `{"scale", "growth_factor", "backoff_factor",
//! "growth_interval", "growth_tracker"}`), when the run has one (fp16); `data` (`rows`,
//! `features`, `classes`); and the standardization statistics as in any
//! checkpoint. `scripts/reference.py train --checkpoint/--resume` writes and
//! reads the same.

use crate::checkpoint::{le_bytes, Checkpoint, CheckpointError};
use crate::optim::{OptimizerKind, OptimizerState, ParamState};
use crate::schedule::SchedulerState;
use crate::training::TrainState;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use tch::{Kind, Tensor};

/// The `format` metadata of a resume checkpoint.
pub const FORMAT: &str = "cross-entropy-tch-resume";

#[derive(Serialize, Deserialize)]
struct OptimizerMeta {
    optimizer: String,
    lr: f64,
    momentum: f64,
    steps: Vec<Option<f64>>,
}

/// (Nested, not flattened: serde's flatten loses f64s when serde_json's
/// `arbitrary_precision` is on, as it is in this crate's tests.)
#[derive(Serialize, Deserialize)]
struct SchedulerMeta {
    name: String,
    state: SchedulerState,
}

#[derive(Serialize, Deserialize)]
struct DataMeta {
    rows: usize,
    features: usize,
    classes: usize,
}

fn json<T: Serialize>(value: &T) -> Result<String, CheckpointError> {
    serde_json::to_string(value).map_err(|e| CheckpointError::Serialize(e.to_string()))
}

/// The safetensors bytes of a resume checkpoint.
pub fn to_bytes(st: &TrainState) -> Result<Vec<u8>, CheckpointError> {
    let torch = |e: tch::TchError| CheckpointError::Serialize(e.to_string());
    let mut extra = Vec::new();
    for (i, p) in st.optimizer.params.iter().enumerate() {
        for (name, t) in &p.tensors {
            let t = t.f_to_device(tch::Device::Cpu).map_err(torch)?;
            let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
            let values =
                Vec::<f32>::try_from(&t.f_flatten(0, -1).map_err(torch)?).map_err(torch)?;
            extra.push((format!("optimizer.{i}.{name}"), Dtype::F32, shape, le_bytes(&values)));
        }
    }
    extra.push(("rng_state".to_string(), Dtype::U8, vec![st.rng.len()], st.rng.clone()));
    let optimizer = OptimizerMeta {
        optimizer: st.optimizer_kind.name().to_string(),
        lr: st.optimizer.lr,
        momentum: st.optimizer.momentum,
        steps: st.optimizer.params.iter().map(|p| p.step).collect(),
    };
    let mut meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("epoch".to_string(), st.epoch.to_string()),
        ("optimizer".to_string(), json(&optimizer)?),
        (
            "data".to_string(),
            json(&DataMeta { rows: st.rows, features: st.features, classes: st.classes })?,
        ),
    ]);
    if let Some((name, state)) = &st.scheduler {
        meta.insert(
            "scheduler".to_string(),
            json(&SchedulerMeta { name: name.clone(), state: state.clone() })?,
        );
    }
    if let Some(scaler) = &st.scaler {
        meta.insert("grad_scaler".to_string(), json(scaler)?);
    }
    st.checkpoint.to_bytes_with(extra, meta)
}

/// Reads a resume checkpoint written by this crate or by
/// `scripts/reference.py train --checkpoint`.
pub fn read(path: &Path) -> Result<TrainState, CheckpointError> {
    let bytes = std::fs::read(path).map_err(CheckpointError::Io)?;
    from_bytes(&bytes)
}

/// Parses the bytes of a resume checkpoint.
pub fn from_bytes(bytes: &[u8]) -> Result<TrainState, CheckpointError> {
    let checkpoint = Checkpoint::from_bytes(bytes)?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| CheckpointError::NotSafetensors(e.to_string()))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| CheckpointError::NotSafetensors(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let bad = CheckpointError::Resume;
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(CheckpointError::NotResume);
    }
    let field = |key: &str| meta.get(key).ok_or_else(|| bad(format!("no '{key}' entry")));
    let parse = |key: &str| -> Result<serde_json::Value, CheckpointError> {
        serde_json::from_str(field(key)?).map_err(|e| bad(format!("{key}: {e}")))
    };
    let epoch: usize = field("epoch")?.parse().map_err(|e| bad(format!("epoch: {e}")))?;
    let optimizer: OptimizerMeta =
        serde_json::from_value(parse("optimizer")?).map_err(|e| bad(format!("optimizer: {e}")))?;
    let optimizer_kind: OptimizerKind =
        optimizer.optimizer.parse().map_err(|e: String| bad(format!("optimizer: {e}")))?;
    let data: DataMeta =
        serde_json::from_value(parse("data")?).map_err(|e| bad(format!("data: {e}")))?;
    let scheduler = match meta.get("scheduler") {
        None => None,
        Some(_) => {
            let s: SchedulerMeta = serde_json::from_value(parse("scheduler")?)
                .map_err(|e| bad(format!("scheduler: {e}")))?;
            Some((s.name, s.state))
        }
    };
    let scaler = match meta.get("grad_scaler") {
        None => None,
        Some(_) => Some(
            serde_json::from_value(parse("grad_scaler")?)
                .map_err(|e| bad(format!("grad_scaler: {e}")))?,
        ),
    };
    let rng = st.tensor("rng_state").map_err(|_| bad("no rng_state tensor".to_string()))?;
    if rng.dtype() != Dtype::U8 {
        return Err(bad(format!("rng_state has dtype {:?}, expected U8", rng.dtype())));
    }
    let mut params = Vec::new();
    for (i, step) in optimizer.steps.iter().enumerate() {
        let mut p = ParamState { step: *step, tensors: Vec::new() };
        let prefix = format!("optimizer.{i}.");
        let mut names: Vec<&String> =
            st.names().into_iter().filter(|n| n.starts_with(&prefix)).collect();
        names.sort();
        for name in names {
            let t = st.tensor(name).map_err(|e| bad(format!("{name}: {e}")))?;
            if t.dtype() != Dtype::F32 {
                return Err(bad(format!("{name} has dtype {:?}, expected F32", t.dtype())));
            }
            let values: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
            let tensor = Tensor::f_from_slice(&values)
                .and_then(|t| t.f_view(shape.as_slice()))
                .and_then(|t| t.f_to_kind(Kind::Float))
                .map_err(|e| bad(format!("{name}: {e}")))?;
            p.tensors.push((name[prefix.len()..].to_string(), tensor));
        }
        params.push(p);
    }
    if st.names().iter().any(|n| {
        n.strip_prefix("optimizer.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i >= params.len())
    }) {
        return Err(bad(format!("optimizer buffers for more than {} parameters", params.len())));
    }
    Ok(TrainState {
        epoch,
        checkpoint,
        optimizer_kind,
        optimizer: OptimizerState { lr: optimizer.lr, momentum: optimizer.momentum, params },
        scheduler,
        rng: rng.data().to_vec(),
        scaler,
        rows: data.rows,
        features: data.features,
        classes: data.classes,
    })
}
