//! Model checkpoints as safetensors files that PyTorch reads and writes.
//!
//! Tensors: `linear.weight` `(C, D)` and `linear.bias` `(C,)`, f32: the names
//! of `MyModel().state_dict()`, so `model.load_state_dict(load_file(path))`
//! works in PyTorch, strictly. A model with hidden layers ([`crate::model::Mlp`])
//! has `layers.0.weight`, `layers.0.bias`, `layers.3.weight`, ...: its
//! `nn.Sequential`'s names. The standardization statistics go in the
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

/// A model's parameters and the statistics its inputs were standardized with.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The Linear layers, input to output (one for `MyModel`).
    pub layers: Vec<LinearParams>,
    pub classes: usize,
    pub features: usize,
    /// The hidden layers' sizes (empty for `MyModel`).
    pub hidden: Vec<usize>,
    pub standardizer: Option<Standardizer>,
}

/// One `nn.Linear`'s parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearParams {
    /// `(out_features, in_features)`, row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// The `state_dict()` prefixes of a model's Linear layers: `linear` for
/// `MyModel`, `layers.0`, `layers.3`, ... for an `Mlp` of `layers` Linears.
pub fn layer_names(layers: usize) -> Vec<String> {
    if layers == 1 {
        vec!["linear".to_string()]
    } else {
        (0..layers).map(|i| format!("layers.{}", 3 * i)).collect()
    }
}

impl Checkpoint {
    /// The parameters of a model's Linear layers (input to output), copied
    /// to the host: what `model.state_dict()` holds.
    pub fn of_linears(
        linears: &[&tch::nn::Linear],
        standardizer: Option<Standardizer>,
    ) -> Result<Checkpoint, tch::TchError> {
        let host = |t: &tch::Tensor| -> Result<Vec<f32>, tch::TchError> {
            Vec::<f32>::try_from(&t.f_detach()?.f_to_device(tch::Device::Cpu)?.f_flatten(0, -1)?)
        };
        let mut layers = Vec::new();
        for l in linears {
            let bias = match &l.bs {
                Some(b) => host(b)?,
                None => return Err(tch::TchError::Shape("a Linear without a bias".to_string())),
            };
            layers.push(LinearParams { weight: host(&l.ws)?, bias });
        }
        let sizes: Vec<usize> = linears.iter().map(|l| l.ws.size()[0] as usize).collect();
        let (Some(first), Some(&classes)) = (linears.first(), sizes.last()) else {
            return Err(tch::TchError::Shape("a model without layers".to_string()));
        };
        Ok(Checkpoint {
            layers,
            classes,
            features: first.ws.size()[1] as usize,
            hidden: sizes[..sizes.len() - 1].to_vec(),
            standardizer,
        })
    }

    /// `model.load_state_dict(...)`: copies the parameters into a model's
    /// Linear layers, which must have this checkpoint's sizes.
    pub fn copy_into(&self, linears: &[&tch::nn::Linear]) -> Result<(), tch::TchError> {
        let sizes = self.sizes();
        let fits = linears.len() == self.layers.len()
            && linears
                .iter()
                .zip(sizes.windows(2))
                .all(|(l, io)| l.ws.size() == [io[1] as i64, io[0] as i64] && l.bs.is_some());
        if !fits {
            return Err(tch::TchError::Shape(format!(
                "the checkpoint's layers are {sizes:?}, the model's are not"
            )));
        }
        tch::no_grad(|| {
            for (layer, params) in linears.iter().zip(&self.layers) {
                let w = tch::Tensor::f_from_slice(&params.weight)?
                    .f_view(layer.ws.size().as_slice())?;
                let device = layer.ws.device();
                layer.ws.shallow_clone().f_copy_(&w.f_to_device(device)?)?;
                if let Some(bs) = &layer.bs {
                    let b = tch::Tensor::f_from_slice(&params.bias)?.f_to_device(device)?;
                    bs.shallow_clone().f_copy_(&b)?;
                }
            }
            Ok(())
        })
    }

    /// The layer sizes, `features`, hidden..., `classes`.
    pub fn sizes(&self) -> Vec<usize> {
        std::iter::once(self.features)
            .chain(self.hidden.iter().copied())
            .chain([self.classes])
            .collect()
    }
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
    /// A tensor the model needs is missing; `names` are the file's.
    MissingTensor { name: String, names: Vec<String> },
    /// A tensor that is not float32.
    Dtype { name: String, dtype: String },
    /// A layer's weight and bias shapes that are not `(out, in)` and
    /// `(out,)`, or whose `in` is not the previous layer's `out`.
    Shape { layer: String, weight: Vec<usize>, bias: Vec<usize> },
    /// The standardization metadata is not what this crate writes.
    Metadata(String),
    /// safetensors refused to serialize.
    Serialize(String),
    /// pytorch-reader could not read a `.pt` file (its reason).
    Pt(String),
    /// A `.pt` file that holds something else than a dict of tensors.
    PtContent(String),
    /// A model checkpoint where a resume checkpoint was expected.
    NotResume,
    /// A resume checkpoint's state that is not what this crate writes.
    Resume(String),
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
                "no tensor named '{name}' (the file has {names:?}); expected {WEIGHT} and {BIAS} (MyModel's state_dict() names) or layers.0.weight, layers.0.bias, layers.3.weight, ... (the MLP's)"
            ),
            CheckpointError::Dtype { name, dtype } => {
                write!(f, "{name} has dtype {dtype}, expected F32 (float32)")
            }
            CheckpointError::Shape { layer, weight, bias } => write!(
                f,
                "{layer}.weight has shape {weight:?} and {layer}.bias {bias:?}; expected (out, in) and (out,), each in the previous layer's out"
            ),
            CheckpointError::Metadata(why) => write!(f, "standardization metadata: {why}"),
            CheckpointError::Serialize(why) => write!(f, "cannot serialize: {why}"),
            CheckpointError::Resume(why) => write!(f, "resume state: {why}"),
            CheckpointError::Pt(why) => write!(f, "not a readable torch.save file ({why})"),
            CheckpointError::PtContent(why) => write!(f, "{why}"),
            CheckpointError::NotResume => write!(
                f,
                "a model checkpoint, not a resume checkpoint (no optimizer, scheduler or generator state; train --checkpoint writes one); --load starts from its weights"
            ),
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

/// f32 values as little-endian bytes (safetensors' layout).
pub fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Checkpoint {
    /// The safetensors bytes of this checkpoint.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CheckpointError> {
        self.to_bytes_with(Vec::new(), HashMap::new())
    }

    /// The safetensors bytes of this checkpoint with more tensors (`(name,
    /// dtype, shape, little-endian bytes)`) and metadata beside the model's:
    /// what a resume checkpoint adds.
    pub fn to_bytes_with(
        &self,
        extra: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
        extra_metadata: HashMap<String, String>,
    ) -> Result<Vec<u8>, CheckpointError> {
        let err = |e: safetensors::SafeTensorError| CheckpointError::Serialize(e.to_string());
        let sizes = self.sizes();
        let bytes: Vec<(Vec<u8>, Vec<u8>)> =
            self.layers.iter().map(|l| (le_bytes(&l.weight), le_bytes(&l.bias))).collect();
        let mut tensors = Vec::new();
        for (i, (name, (w, b))) in
            layer_names(self.layers.len()).into_iter().zip(&bytes).enumerate()
        {
            let (inputs, outputs) = (sizes[i], sizes[i + 1]);
            let weight = TensorView::new(Dtype::F32, vec![outputs, inputs], w).map_err(err)?;
            let bias = TensorView::new(Dtype::F32, vec![outputs], b).map_err(err)?;
            tensors.push((format!("{name}.weight"), weight));
            tensors.push((format!("{name}.bias"), bias));
        }
        for (name, dtype, shape, data) in &extra {
            tensors
                .push((name.clone(), TensorView::new(*dtype, shape.clone(), data).map_err(err)?));
        }
        let mut metadata = HashMap::from([("format".to_string(), "cross-entropy-tch".to_string())]);
        metadata.extend(extra_metadata);
        if let Some(s) = &self.standardizer {
            let json = |v: &Vec<f64>| {
                serde_json::to_string(v).map_err(|e| CheckpointError::Serialize(e.to_string()))
            };
            metadata.insert("standardize_mean".into(), json(&s.mean)?);
            metadata.insert("standardize_std".into(), json(&s.std)?);
        }
        safetensors::serialize(tensors, &Some(metadata)).map_err(err)
    }

    /// Reads a checkpoint written by this crate, by
    /// `safetensors.torch.save_file(model.state_dict(), path)` or by
    /// `torch.save(model.state_dict(), path)` ([`Checkpoint::from_pt`]).
    pub fn read(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let bytes = std::fs::read(path).map_err(CheckpointError::Io)?;
        // safetensors first: its first byte is its header's length, which
        // can look like a pickle's protocol mark (0x80).
        match Checkpoint::from_bytes(&bytes) {
            Err(CheckpointError::TorchSave) => Checkpoint::from_pt(path),
            other => other,
        }
    }

    /// Parses the bytes of a safetensors checkpoint (a `torch.save` file is
    /// refused here: [`Checkpoint::read`] reads those from their path).
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            if is_torch_save(bytes) {
                CheckpointError::TorchSave
            } else {
                CheckpointError::NotSafetensors(e.to_string())
            }
        })?;
        let names: Vec<String> = st.names().into_iter().cloned().collect();
        let metadata = SafeTensors::read_metadata(bytes)
            .map_err(|e| CheckpointError::NotSafetensors(e.to_string()))?
            .1;
        assemble(
            names,
            |name| {
                let t = st.tensor(name).ok()?;
                Some(Ok(Found {
                    dtype: format!("{:?}", t.dtype()),
                    shape: t.shape().to_vec(),
                    data: Box::new(move || Ok(t.data().to_vec())),
                }))
            },
            metadata.metadata().as_ref(),
        )
    }

    /// Reads a `torch.save(model.state_dict(), path)` file (the zip archive
    /// of PyTorch 1.6 and later; an `OrderedDict` or a plain `dict`),
    /// without Python and without running anything in it: the pickle is
    /// interpreted by pytorch-reader, which knows only PyTorch's tensor
    /// rebuild calls, and this function then accepts only a dict whose
    /// every value is a tensor. Anything else (an object, a number, a
    /// nested dict, a call it does not know) is refused. A `.pt` file has
    /// no standardization statistics.
    pub fn from_pt(path: &Path) -> Result<Checkpoint, CheckpointError> {
        use pytorch_reader::{PickleValue, PytorchReader};
        let pt = |e: pytorch_reader::PytorchError| CheckpointError::Pt(e.to_string());
        let root = PytorchReader::read_pickle_data(path, None).map_err(pt)?;
        let PickleValue::Dict(entries) = root else {
            return Err(CheckpointError::PtContent(format!(
                "the file holds {}, not a state_dict (a dict of tensors); save model.state_dict() itself",
                describe(&root)
            )));
        };
        let mut keys: Vec<&String> = entries.keys().collect();
        keys.sort();
        // `state_dict()`'s OrderedDict carries `_metadata`, each module's
        // state-dict version: a dict of dicts of plain values.
        let plain = |v: &PickleValue| {
            matches!(v, PickleValue::Int(_) | PickleValue::String(_) | PickleValue::Bool(_))
        };
        let version_info = |v: &PickleValue| match v {
            PickleValue::Dict(modules) => modules.values().all(|m| match m {
                PickleValue::Dict(fields) => fields.values().all(plain),
                _ => false,
            }),
            _ => false,
        };
        for key in keys {
            match &entries[key] {
                PickleValue::Unsupported(t) if t == "torch.Tensor" => {}
                v if key == "_metadata" && version_info(v) => {}
                other => {
                    return Err(CheckpointError::PtContent(format!(
                        "'{key}' is {}, not a tensor: only a state_dict (a dict of tensors) is read; save model.state_dict() itself",
                        describe(other)
                    )))
                }
            }
        }
        let reader = PytorchReader::new(path).map_err(pt)?;
        let names = reader.keys();
        assemble(
            names,
            |name| {
                let t = reader.get(name)?;
                Some(Ok(Found {
                    dtype: format!("{:?}", t.dtype()),
                    shape: t.shape().to_vec(),
                    data: Box::new(move || {
                        t.read().map_err(|e| CheckpointError::Pt(e.to_string()))
                    }),
                }))
            },
            None,
        )
    }
}

/// What a Python value in a `.pt` file is, for an error message.
fn describe(value: &pytorch_reader::PickleValue) -> String {
    use pytorch_reader::PickleValue as V;
    match value {
        V::None => "None".to_string(),
        V::Bool(_) => "a bool".to_string(),
        V::Int(_) => "an int".to_string(),
        V::Float(_) => "a float".to_string(),
        V::String(_) => "a string".to_string(),
        V::List(_) => "a list".to_string(),
        V::Dict(_) => "a dict".to_string(),
        V::Bytes(_) => "bytes".to_string(),
        V::Unsupported(t) => format!("a {t} object"),
    }
}

/// A tensor as a reader found it: its dtype's name (`F32`), its shape and
/// a way to get its little-endian bytes.
struct Found<'a> {
    dtype: String,
    shape: Vec<usize>,
    data: Box<dyn FnOnce() -> Result<Vec<u8>, CheckpointError> + 'a>,
}

/// The model a file's tensors describe (MyModel's `linear`, or as many
/// `layers.{3i}` as there are), with the standardization statistics of
/// `metadata` when it has both.
fn assemble<'a>(
    mut names: Vec<String>,
    get: impl Fn(&str) -> Option<Result<Found<'a>, CheckpointError>>,
    metadata: Option<&HashMap<String, String>>,
) -> Result<Checkpoint, CheckpointError> {
    names.sort();
    let count = if names.iter().any(|n| n == WEIGHT) {
        1
    } else {
        let mut k = 0;
        while names.contains(&format!("layers.{}.weight", 3 * k)) {
            k += 1;
        }
        k.max(1)
    };
    let mut layers: Vec<(Vec<usize>, LinearParams)> = Vec::new();
    for layer in layer_names(count) {
        let fetch = |name: String| -> Result<(Vec<usize>, Vec<f32>), CheckpointError> {
            let found = get(&name).ok_or_else(|| CheckpointError::MissingTensor {
                name: name.clone(),
                names: names.clone(),
            })??;
            if found.dtype != "F32" {
                return Err(CheckpointError::Dtype { name, dtype: found.dtype });
            }
            let bytes = (found.data)()?;
            let floats = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Ok((found.shape, floats))
        };
        let (ws, weight) = fetch(format!("{layer}.weight"))?;
        let (bs, bias) = fetch(format!("{layer}.bias"))?;
        let previous = layers.last().map(|(shape, _)| shape[0]);
        if ws.len() != 2 || bs.len() != 1 || bs[0] != ws[0] || previous.is_some_and(|p| p != ws[1])
        {
            return Err(CheckpointError::Shape { layer, weight: ws, bias: bs });
        }
        layers.push((ws, LinearParams { weight, bias }));
    }
    let features = layers[0].0[1];
    let parse = |what: &str, text: &str| {
        serde_json::from_str::<Vec<f64>>(text)
            .map_err(|e| CheckpointError::Metadata(format!("{what}: {e}")))
    };
    let standardizer = match metadata {
        Some(meta) => match (meta.get("standardize_mean"), meta.get("standardize_std")) {
            (Some(m), Some(s)) => {
                let mean = parse("standardize_mean", m)?;
                let std = parse("standardize_std", s)?;
                if mean.len() != features || std.len() != features {
                    return Err(CheckpointError::Metadata(format!(
                        "{} values for a model of {features} features",
                        mean.len(),
                    )));
                }
                Some(Standardizer { mean, std })
            }
            _ => None,
        },
        None => None,
    };
    Ok(Checkpoint {
        classes: layers[count - 1].0[0],
        features,
        hidden: layers[..count - 1].iter().map(|(shape, _)| shape[0]).collect(),
        layers: layers.into_iter().map(|(_, params)| params).collect(),
        standardizer,
    })
}
