//! Losses: the example's `nn.CrossEntropyLoss()`, all of `nn.CrossEntropyLoss`
//! ([`CrossEntropyLoss`]), and `nn.BCEWithLogitsLoss` ([`BCEWithLogitsLoss`]).

use std::fmt;
use tch::{Device, Kind, Tensor};

pub use tch::Reduction;

/// `nn.CrossEntropyLoss()(outputs, targets)` for `(N, C)` logits and Int64
/// class-index `targets` of shape `(N,)`: the mean over the batch of
/// `-log softmax(outputs)[i, targets[i]]`. This is the example's loss.
///
/// tch's `cross_entropy_for_logits` is `log_softmax` over the last dim
/// (computed in f32) followed by `nll_loss` with mean reduction: for `(N, C)`
/// f32 logits the very ops, in the same order, that PyTorch's
/// `F.cross_entropy` runs, so the value and its gradient are bit-for-bit
/// PyTorch's. It is *not* PyTorch's loss for f64 logits (it computes in
/// f32), it has none of the options, and `(N, C, d1, ...)` logits are
/// refused: use [`CrossEntropyLoss`] there.
///
/// # Panics
/// On logits of 3 or more dims (libtorch's `nll_loss`: "input tensor should
/// be 1D or 2D"), and on targets that do not fit, as tch's call does.
pub fn cross_entropy(outputs: &Tensor, targets: &Tensor) -> Tensor {
    outputs.cross_entropy_for_logits(targets)
}

/// What is wrong with the arguments of a loss, in PyTorch's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum LossError {
    /// The input is 0-dim; cross-entropy wants `(C)`, `(N, C)` or `(N, C, d1, ..., dk)`.
    InputRank,
    /// The input holds no classes (`C = 0`).
    NoClasses,
    /// The input is not a floating-point tensor.
    InputDtype(Kind),
    /// Class-index targets must be Int64 (Long) or Uint8 (Byte); probability
    /// targets must be floating point.
    TargetDtype { kind: Kind, probabilities: bool },
    /// The target's shape does not fit the input's.
    TargetShape { expected: Vec<i64>, got: Vec<i64>, input: Vec<i64> },
    /// A class index outside `[0, C)` that is not `ignore_index`.
    TargetOutOfRange { value: i64, at: Vec<i64>, classes: i64, ignore_index: i64 },
    /// A weight that is not one value per class (or, for BCE, not broadcastable).
    WeightShape { what: &'static str, got: Vec<i64>, expected: String },
    /// A weight whose dtype differs from the input's.
    WeightDtype { what: &'static str, weight: Kind, input: Kind },
    /// A tensor on another device than the input.
    Device { what: &'static str, device: Device, input: Device },
    /// `label_smoothing` outside `[0, 1]`.
    LabelSmoothing(f64),
    /// `ignore_index >= 0` together with probability targets.
    IgnoreIndexWithProbabilities(i64),
    /// A `Reduction::Other` value.
    Reduction(i64),
    /// libtorch refused the call (after our checks passed).
    Torch(String),
}

impl fmt::Display for LossError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossError::InputRank => write!(
                f,
                "input must be (C), (N, C) or (N, C, d1, ..., dk) logits, got a 0-dim tensor"
            ),
            LossError::NoClasses => write!(f, "input has no classes (C = 0 along the class dim)"),
            LossError::InputDtype(k) => {
                write!(f, "input must be floating point (logits), got dtype {k:?}")
            }
            LossError::TargetDtype { kind, probabilities: false } => write!(
                f,
                "class-index target must have dtype Int64 (Long) or Uint8 (Byte), got {kind:?} \
                 (a floating-point target means class probabilities, and must then have the input's shape)"
            ),
            LossError::TargetDtype { kind, probabilities: true } => write!(
                f,
                "target has the input's shape, so it holds class probabilities and must be floating point, got {kind:?}"
            ),
            LossError::TargetShape { expected, got, input } => write!(
                f,
                "target shape {got:?} does not fit input shape {input:?}: expected {expected:?} \
                 for class indices, or {input:?} for class probabilities"
            ),
            LossError::TargetOutOfRange { value, at, classes, ignore_index } => write!(
                f,
                "target {value} at {at:?} is out of bounds: class indices must lie in [0, {classes}) \
                 or equal ignore_index ({ignore_index})"
            ),
            LossError::WeightShape { what, got, expected } => {
                write!(f, "{what} must be {expected}, got shape {got:?}")
            }
            LossError::WeightDtype { what, weight, input } => write!(
                f,
                "{what} has dtype {weight:?} but the input has {input:?}; convert it with .to_kind(Kind::{input:?})"
            ),
            LossError::Device { what, device, input } => {
                write!(f, "{what} is on {device:?} but the input is on {input:?}")
            }
            LossError::LabelSmoothing(e) => {
                write!(f, "label_smoothing must be between 0.0 and 1.0, got {e}")
            }
            LossError::IgnoreIndexWithProbabilities(i) => write!(
                f,
                "ignore_index ({i}) is not supported with class-probability (floating point) targets"
            ),
            LossError::Reduction(r) => {
                write!(f, "reduction must be Reduction::None, Mean or Sum, got Other({r})")
            }
            LossError::Torch(msg) => write!(f, "libtorch: {msg}"),
        }
    }
}

impl std::error::Error for LossError {}

impl From<tch::TchError> for LossError {
    fn from(e: tch::TchError) -> Self {
        LossError::Torch(e.to_string().lines().next().unwrap_or_default().to_string())
    }
}

/// `nn.CrossEntropyLoss(weight=None, ignore_index=-100, reduction='mean',
/// label_smoothing=0.0)`, with PyTorch's semantics for every option.
///
/// The input holds logits `x` of shape `(C)`, `(N, C)` or `(N, C, d1, ..., dk)`
/// (the class dim is dim 1, or dim 0 when unbatched). The target is either
///
/// - **class indices** `y` (Int64 or Uint8) of the input's shape without the
///   class dim: `()`, `(N)` or `(N, d1, ..., dk)`. Per element, with
///   `w` the class weights (all 1 without `weight`) and `ε` the label smoothing:
///
///   `l = (1 − ε)·w_y·(−log p_y) + ε/C · Σ_c w_c·(−log p_c)`, where `p = softmax(x)`,
///
///   and `l = 0` where `y == ignore_index`. `Sum` adds the `l`; `Mean` divides
///   that sum by `Σ w_y` over the elements that are not ignored (so a mean
///   over all-ignored targets, or over zero total weight, is NaN, and an
///   empty batch gives NaN; `Sum` gives 0 there);
/// - **class probabilities** `q` (floating point) of the input's very shape,
///   chosen when the two shapes are equal, as PyTorch chooses. With
///   `q' = (1 − ε)·q + ε/C`: `l = Σ_c w_c·q'_c·(−log p_c)`, and `Mean` divides
///   by the number of elements `N·d1⋯dk`, *not* by the weights.
///   `ignore_index` must then be negative (it is unused).
///
/// Underneath is the generated `Tensor::cross_entropy_loss`, the ATen op that
/// `F.cross_entropy` calls, so values and gradients are PyTorch's bit for
/// bit. [`f_forward`](Self::f_forward) checks everything it can first and
/// returns a [`LossError`] naming the problem; [`forward`](Self::forward)
/// panics with that message, like tch's own functions.
///
/// ```
/// use cross_entropy_tch::{CrossEntropyLoss, Reduction};
/// use tch::Tensor;
///
/// let logits = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 1.0, 2.0, 3.0]).view([2, 3]);
/// let target = Tensor::from_slice(&[2i64, 0]);
/// let loss = CrossEntropyLoss::new().forward(&logits, &target); // nn.CrossEntropyLoss()
/// // mean of log(1 + e^-1 + e^-2) and log(1 + e + e^2)
/// let by_hand = ((1.0 + (-1f64).exp() + (-2f64).exp()).ln() + (1.0 + 1f64.exp() + 2f64.exp()).ln()) / 2.0;
/// assert!((loss.double_value(&[]) - by_hand).abs() < 1e-6);
///
/// // Segmentation-style (N, C, d1) logits with (N, d1) targets.
/// let logits = Tensor::zeros([2, 3, 4], (tch::Kind::Float, tch::Device::Cpu));
/// let target = Tensor::zeros([2, 4], (tch::Kind::Int64, tch::Device::Cpu));
/// let per_pixel = CrossEntropyLoss::new().reduction(Reduction::None).forward(&logits, &target);
/// assert_eq!(per_pixel.size(), [2, 4]);
/// assert!((per_pixel.double_value(&[1, 3]) - 3f64.ln()).abs() < 1e-6);
///
/// // Class probabilities: a float target of the input's shape.
/// let probs = Tensor::from_slice(&[0.0f32, 0.0, 1.0, 1.0, 0.0, 0.0]).view([2, 3]);
/// let logits = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 1.0, 2.0, 3.0]).view([2, 3]);
/// let soft = CrossEntropyLoss::new().forward(&logits, &probs);
/// assert!((soft.double_value(&[]) - by_hand).abs() < 1e-6);
/// ```
#[derive(Debug)]
pub struct CrossEntropyLoss {
    weight: Option<Tensor>,
    ignore_index: i64,
    reduction: Reduction,
    label_smoothing: f64,
}

impl CrossEntropyLoss {
    /// The class weights given to [`CrossEntropyLoss::weight`], if any.
    pub fn class_weight(&self) -> Option<&Tensor> {
        self.weight.as_ref()
    }

    /// The `ignore_index` in force (-100 unless set).
    pub fn ignored_index(&self) -> i64 {
        self.ignore_index
    }

    /// The reduction in force (`Mean` unless set).
    pub fn reduction_mode(&self) -> Reduction {
        self.reduction
    }

    /// The `label_smoothing` in force (0 unless set).
    pub fn smoothing(&self) -> f64 {
        self.label_smoothing
    }
}

impl Default for CrossEntropyLoss {
    fn default() -> Self {
        CrossEntropyLoss::new()
    }
}

impl CrossEntropyLoss {
    /// `nn.CrossEntropyLoss()`: no weights, `ignore_index=-100`, mean, no smoothing.
    pub fn new() -> Self {
        CrossEntropyLoss {
            weight: None,
            ignore_index: -100,
            reduction: Reduction::Mean,
            label_smoothing: 0.0,
        }
    }

    /// `weight=`: a 1-D tensor of `C` class weights, of the input's dtype and
    /// device (PyTorch does not convert either, and neither do we: note that
    /// `Tensor::from_slice(&[1.0, 2.0])` is f64).
    ///
    /// ```
    /// use cross_entropy_tch::CrossEntropyLoss;
    /// use tch::Tensor;
    ///
    /// let logits = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 0.0]).view([2, 2]);
    /// let target = Tensor::from_slice(&[0i64, 1]);
    /// let loss = CrossEntropyLoss::new()
    ///     .weight(Tensor::from_slice(&[3.0f32, 1.0]))
    ///     .forward(&logits, &target);
    /// // (3 ln 2 + 1 ln 2) / (3 + 1): the weighted mean divides by the weights.
    /// assert!((loss.double_value(&[]) - 2f64.ln()).abs() < 1e-6);
    /// ```
    pub fn weight(mut self, weight: Tensor) -> Self {
        self.weight = Some(weight);
        self
    }

    /// `ignore_index=`: targets equal to it add nothing to the loss nor to the
    /// mean's denominator (default -100, PyTorch's). Any value is allowed,
    /// inside `[0, C)` too (then that class is never learnt).
    ///
    /// ```
    /// use cross_entropy_tch::CrossEntropyLoss;
    /// use tch::Tensor;
    ///
    /// let logits = Tensor::from_slice(&[0.0f32, 0.0, 5.0, 0.0]).view([2, 2]);
    /// let target = Tensor::from_slice(&[0i64, -1]); // the second row is padding
    /// let loss = CrossEntropyLoss::new().ignore_index(-1).forward(&logits, &target);
    /// assert!((loss.double_value(&[]) - 2f64.ln()).abs() < 1e-6); // the first row alone
    /// ```
    pub fn ignore_index(mut self, ignore_index: i64) -> Self {
        self.ignore_index = ignore_index;
        self
    }

    /// `reduction='none' | 'mean' | 'sum'` as [`Reduction::None`],
    /// [`Reduction::Mean`] (default), [`Reduction::Sum`].
    ///
    /// ```
    /// use cross_entropy_tch::{CrossEntropyLoss, Reduction};
    /// use tch::Tensor;
    ///
    /// let logits = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 0.0, 0.0, 0.0]).view([3, 2]);
    /// let target = Tensor::from_slice(&[0i64, 1, 1]);
    /// let none = CrossEntropyLoss::new().reduction(Reduction::None).forward(&logits, &target);
    /// assert_eq!(none.size(), [3]);
    /// let sum = CrossEntropyLoss::new().reduction(Reduction::Sum).forward(&logits, &target);
    /// assert!((sum.double_value(&[]) - 3.0 * 2f64.ln()).abs() < 1e-6);
    /// ```
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// `label_smoothing=ε` in `[0, 1]`: the target becomes `(1 − ε)·onehot + ε/C`.
    ///
    /// ```
    /// use cross_entropy_tch::CrossEntropyLoss;
    /// use tch::Tensor;
    ///
    /// let logits = Tensor::from_slice(&[2.0f32, 0.0]).view([1, 2]);
    /// let target = Tensor::from_slice(&[0i64]);
    /// let loss = CrossEntropyLoss::new().label_smoothing(0.2).forward(&logits, &target);
    /// // -log p = (softplus(-2), softplus(2)); targets (0.9, 0.1)
    /// let sp = |z: f64| (1.0 + z.exp()).ln();
    /// assert!((loss.double_value(&[]) - (0.9 * sp(-2.0) + 0.1 * sp(2.0))).abs() < 1e-6);
    /// ```
    pub fn label_smoothing(mut self, label_smoothing: f64) -> Self {
        self.label_smoothing = label_smoothing;
        self
    }

    /// The loss of `input` logits against `target`; panics with the
    /// [`LossError`] message on misuse, like tch's non-`f_` functions.
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Tensor {
        self.f_forward(input, target).unwrap_or_else(|e| panic!("CrossEntropyLoss: {e}"))
    }

    /// The loss of `input` logits against `target`, or what is wrong with them.
    pub fn f_forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor, LossError> {
        self.check(input, target)?;
        self.f_forward_unchecked(input, target)
    }

    /// The loss without [`f_forward`](Self::f_forward)'s checks, for a hot
    /// loop whose targets were checked once already: the class-index check
    /// reads the targets back to the host on every call. libtorch still
    /// rejects bad input on the CPU (as an `Err`), but on CUDA an
    /// out-of-range class index is a device-side assert that ends the process.
    pub fn f_forward_unchecked(
        &self,
        input: &Tensor,
        target: &Tensor,
    ) -> Result<Tensor, LossError> {
        Ok(input.f_cross_entropy_loss(
            target,
            self.weight.as_ref(),
            self.reduction,
            self.ignore_index,
            self.label_smoothing,
        )?)
    }

    /// Everything libtorch would reject (or, on CUDA, abort on), checked first.
    fn check(&self, input: &Tensor, target: &Tensor) -> Result<(), LossError> {
        let eps = self.label_smoothing;
        if !(0.0..=1.0).contains(&eps) {
            return Err(LossError::LabelSmoothing(eps));
        }
        check_reduction(self.reduction)?;
        let shape = input.size();
        if shape.is_empty() {
            return Err(LossError::InputRank);
        }
        check_float_input(input)?;
        let class_dim = if shape.len() == 1 { 0 } else { 1 };
        let classes = shape[class_dim];
        if classes == 0 {
            return Err(LossError::NoClasses);
        }
        check_device("target", target, input)?;
        if let Some(w) = &self.weight {
            if w.size() != [classes] {
                return Err(LossError::WeightShape {
                    what: "weight",
                    got: w.size(),
                    expected: format!("a 1-D tensor of {classes} values, one per class"),
                });
            }
            check_same_kind("weight", w, input)?;
            check_device("weight", w, input)?;
        }
        let target_shape = target.size();
        if target_shape == shape {
            // Same shape as the input: class probabilities, as PyTorch decides.
            if !is_float(target.kind()) {
                return Err(LossError::TargetDtype { kind: target.kind(), probabilities: true });
            }
            if self.ignore_index >= 0 {
                return Err(LossError::IgnoreIndexWithProbabilities(self.ignore_index));
            }
            return Ok(());
        }
        let mut expected = shape.clone();
        expected.remove(class_dim);
        if target_shape != expected {
            return Err(LossError::TargetShape { expected, got: target_shape, input: shape });
        }
        if !matches!(target.kind(), Kind::Int64 | Kind::Uint8) {
            return Err(LossError::TargetDtype { kind: target.kind(), probabilities: false });
        }
        check_class_indices(target, classes, self.ignore_index)
    }
}

/// `nn.BCEWithLogitsLoss(weight=None, reduction='mean', pos_weight=None)`:
/// per element, with `σ` the sigmoid,
///
/// `l = −w·(pos_weight·y·log σ(x) + (1 − y)·log(1 − σ(x)))`,
///
/// computed stably from the logits (no `σ` that rounds to 0 or 1: finite at
/// logits of ±100 and far beyond). `weight` broadcasts against the input;
/// `pos_weight` against the last (class) dim. Underneath is the generated
/// `Tensor::binary_cross_entropy_with_logits`, the op PyTorch calls.
///
/// Two-class cross-entropy on logits `(z0, z1)` is this loss on `z1 − z0`
/// with target 1 for class 1:
///
/// ```
/// use cross_entropy_tch::{BCEWithLogitsLoss, CrossEntropyLoss};
/// use tch::Tensor;
///
/// let z = Tensor::from_slice(&[0.5f32, -1.0, 3.0, 2.0, -100.0, 100.0]).view([3, 2]);
/// let class = Tensor::from_slice(&[1i64, 0, 1]);
/// let ce = CrossEntropyLoss::new().forward(&z, &class);
/// let margin = z.select(1, 1) - z.select(1, 0);
/// let bce = BCEWithLogitsLoss::new().forward(&margin, &class.to_kind(tch::Kind::Float));
/// assert!((ce.double_value(&[]) - bce.double_value(&[])).abs() < 1e-5);
/// ```
#[derive(Debug)]
pub struct BCEWithLogitsLoss {
    weight: Option<Tensor>,
    pos_weight: Option<Tensor>,
    reduction: Reduction,
}

impl Default for BCEWithLogitsLoss {
    fn default() -> Self {
        BCEWithLogitsLoss::new()
    }
}

impl BCEWithLogitsLoss {
    /// `nn.BCEWithLogitsLoss()`: no weights, mean.
    pub fn new() -> Self {
        BCEWithLogitsLoss { weight: None, pos_weight: None, reduction: Reduction::Mean }
    }

    /// `weight=`: a rescaling weight broadcast against the input.
    pub fn weight(mut self, weight: Tensor) -> Self {
        self.weight = Some(weight);
        self
    }

    /// `pos_weight=`: the weight of the positive term, per class (last dim).
    ///
    /// ```
    /// use cross_entropy_tch::BCEWithLogitsLoss;
    /// use tch::Tensor;
    ///
    /// let x = Tensor::from_slice(&[0.0f32, 0.0]);
    /// let y = Tensor::from_slice(&[1.0f32, 0.0]);
    /// let loss = BCEWithLogitsLoss::new().pos_weight(Tensor::from_slice(&[3.0f32])).forward(&x, &y);
    /// assert!((loss.double_value(&[]) - (3.0 + 1.0) / 2.0 * 2f64.ln()).abs() < 1e-6);
    /// ```
    pub fn pos_weight(mut self, pos_weight: Tensor) -> Self {
        self.pos_weight = Some(pos_weight);
        self
    }

    /// `reduction=`, as for [`CrossEntropyLoss::reduction`].
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The loss; panics with the [`LossError`] message on misuse.
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Tensor {
        self.f_forward(input, target).unwrap_or_else(|e| panic!("BCEWithLogitsLoss: {e}"))
    }

    /// The loss, or what is wrong with the arguments.
    pub fn f_forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor, LossError> {
        check_reduction(self.reduction)?;
        check_float_input(input)?;
        let shape = input.size();
        if target.size() != shape {
            return Err(LossError::TargetShape {
                expected: shape.clone(),
                got: target.size(),
                input: shape,
            });
        }
        if !is_float(target.kind()) {
            return Err(LossError::TargetDtype { kind: target.kind(), probabilities: true });
        }
        check_device("target", target, input)?;
        for (what, w) in [("weight", &self.weight), ("pos_weight", &self.pos_weight)] {
            let Some(w) = w else { continue };
            if !broadcasts_to(&w.size(), &shape) {
                return Err(LossError::WeightShape {
                    what,
                    got: w.size(),
                    expected: format!("broadcastable to the input's shape {shape:?}"),
                });
            }
            check_same_kind(what, w, input)?;
            check_device(what, w, input)?;
        }
        Ok(input.f_binary_cross_entropy_with_logits(
            target,
            self.weight.as_ref(),
            self.pos_weight.as_ref(),
            self.reduction,
        )?)
    }
}

fn is_float(kind: Kind) -> bool {
    matches!(kind, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

fn check_float_input(input: &Tensor) -> Result<(), LossError> {
    match input.kind() {
        k if is_float(k) => Ok(()),
        k => Err(LossError::InputDtype(k)),
    }
}

/// The weights' dtype must be the input's, except inside an autocast region
/// ([`crate::amp::autocast`]): both losses are on autocast's f32 list, so
/// libtorch casts input and weights to f32 first, as `torch.autocast` does.
fn check_same_kind(what: &'static str, w: &Tensor, input: &Tensor) -> Result<(), LossError> {
    if w.kind() != input.kind() && !crate::amp::is_enabled(input.device()) {
        return Err(LossError::WeightDtype { what, weight: w.kind(), input: input.kind() });
    }
    Ok(())
}

fn check_device(what: &'static str, t: &Tensor, input: &Tensor) -> Result<(), LossError> {
    if t.device() != input.device() {
        return Err(LossError::Device { what, device: t.device(), input: input.device() });
    }
    Ok(())
}

fn check_reduction(reduction: Reduction) -> Result<(), LossError> {
    match reduction {
        Reduction::Other(r) => Err(LossError::Reduction(r)),
        _ => Ok(()),
    }
}

/// Whether a tensor of shape `from` broadcasts to `to` (right-aligned dims
/// equal or 1, no more dims than `to`).
fn broadcasts_to(from: &[i64], to: &[i64]) -> bool {
    from.len() <= to.len()
        && from.iter().rev().zip(to.iter().rev()).all(|(&f, &t)| f == t || f == 1)
}

/// Every class index lies in `[0, classes)` or equals `ignore_index`. Read on
/// the host: on CUDA an out-of-range index is a device-side assert that
/// kills the process, so it must be caught before libtorch sees it.
fn check_class_indices(target: &Tensor, classes: i64, ignore_index: i64) -> Result<(), LossError> {
    if target.numel() == 0 {
        return Ok(());
    }
    let flat = target.f_to_kind(Kind::Int64)?.f_to_device(Device::Cpu)?.f_flatten(0, -1)?;
    let values = Vec::<i64>::try_from(&flat)?;
    let Some(i) = values.iter().position(|&v| v != ignore_index && !(0..classes).contains(&v))
    else {
        return Ok(());
    };
    // The multi-index of flat position i.
    let mut at = Vec::new();
    let mut rest = i as i64;
    for &d in target.size().iter().rev() {
        at.push(rest % d);
        rest /= d;
    }
    at.reverse();
    Err(LossError::TargetOutOfRange { value: values[i], at, classes, ignore_index })
}
