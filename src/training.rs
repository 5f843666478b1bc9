//! Training a classifier on real data: the example's model, loss and optimizer
//! in an epoch loop (`train`), and evaluating a saved model (`eval`).

use crate::amp::{autocast_if, AmpDtype, AmpError, GradScaler, GradScalerConfig, GradScalerState};
use crate::checkpoint::Checkpoint;
use crate::data::{split, Dataset, SplitError, Standardizer};
use crate::distributed::{self, DistributedDataParallel, DistributedError, ProcessGroup};
use crate::loss::{CrossEntropyLoss, LossError};
use crate::model::{Classifier, LinearStack};
use crate::optim::{
    self, NormType, Optimizer, OptimizerConfig, OptimizerError, OptimizerKind, OptimizerState,
};
use crate::rng;
use crate::schedule::{
    PlateauMode, ScheduleError, Scheduler, SchedulerConfig, SchedulerState, Stepping,
};
use crate::step::{Backward, ManualStep};
use serde::Serialize;
use std::fmt;
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Reduction, TchError, Tensor};

/// Why training or evaluation could not start, or stopped.
#[derive(Debug)]
pub enum TrainError {
    /// `class_weights` does not have one value per class.
    ClassWeights { got: usize, classes: usize },
    /// The train/test split cannot be made.
    Split(SplitError),
    /// The checkpoint's model takes another number of features than the data has.
    /// (`layer` is its first Linear's name, `outputs` that layer's size.)
    CheckpointFeatures { checkpoint: usize, layer: String, outputs: usize, data: usize },
    /// The data has labels the checkpoint's model has no class for.
    CheckpointClasses { checkpoint: usize, data: usize },
    /// Evaluation with standardization asked for, but the checkpoint has no statistics.
    NoStandardization,
    /// A non-finite loss at a step (not applied) or at evaluation.
    Diverged { loss: f32, epoch: usize, epochs: usize, step: Option<(i64, i64)>, lr: f64 },
    /// An optimizer argument that makes no sense.
    Optimizer(OptimizerError),
    /// A scheduler argument that makes no sense.
    Schedule(ScheduleError),
    /// Another setting outside its range (`what` is the config's field).
    Config { what: &'static str, rule: &'static str },
    /// The loss refused its arguments.
    Loss(LossError),
    /// A resume state that does not fit this run (`what` says how).
    Resume(String),
    /// Saving a resume checkpoint during the run failed (the saver's message).
    Checkpointing(String),
    /// libtorch refused a call.
    Torch(TchError),
    /// A data-parallel run's process group failed (a rank gone, a timeout).
    Distributed(DistributedError),
    /// Autocast or the gradient scaler refused (or a scaler state does not load).
    Amp(AmpError),
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::ClassWeights { got, classes } => {
                write!(f, "{got} class weights for {classes} classes; give one per class")
            }
            TrainError::Split(e) => e.fmt(f),
            TrainError::CheckpointFeatures { checkpoint, layer, outputs, data } => write!(
                f,
                "the checkpoint's model takes {checkpoint} features ({layer}.weight is {outputs}x{checkpoint}), the data has {data}"
            ),
            TrainError::CheckpointClasses { checkpoint, data } => write!(
                f,
                "the checkpoint's model has {checkpoint} classes, the data has labels up to {}",
                data - 1
            ),
            TrainError::NoStandardization => write!(
                f,
                "the checkpoint holds no standardization statistics (a plain state_dict?); evaluate it on raw features if it was trained on them"
            ),
            TrainError::Diverged { loss, epoch, epochs, step: Some((step, steps)), lr } => write!(
                f,
                "training diverged: the loss is {loss} at epoch {epoch} of {epochs}, step {step} of {steps}; lower the learning rate (now {lr:e})"
            ),
            TrainError::Diverged { loss, epoch, epochs, step: None, lr } => write!(
                f,
                "training diverged: the train loss is {loss} after epoch {epoch} of {epochs} (its steps' losses were finite); lower the learning rate (now {lr:e})"
            ),
            TrainError::Optimizer(e) => e.fmt(f),
            TrainError::Schedule(e) => e.fmt(f),
            TrainError::Config { what, rule } => write!(f, "{what} must be {rule}"),
            TrainError::Loss(e) => e.fmt(f),
            TrainError::Resume(what) => write!(f, "{what}"),
            TrainError::Checkpointing(why) => write!(f, "{why}"),
            TrainError::Torch(e) => write!(f, "libtorch: {e}"),
            TrainError::Distributed(e) => e.fmt(f),
            TrainError::Amp(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TrainError {}

impl From<AmpError> for TrainError {
    fn from(e: AmpError) -> Self {
        TrainError::Amp(e)
    }
}

impl From<TchError> for TrainError {
    fn from(e: TchError) -> Self {
        TrainError::Torch(e)
    }
}

impl From<DistributedError> for TrainError {
    fn from(e: DistributedError) -> Self {
        TrainError::Distributed(e)
    }
}

impl From<LossError> for TrainError {
    fn from(e: LossError) -> Self {
        TrainError::Loss(e)
    }
}

impl From<SplitError> for TrainError {
    fn from(e: SplitError) -> Self {
        TrainError::Split(e)
    }
}

/// The knobs of `train`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainConfig {
    /// `torch.manual_seed(seed)` before the split.
    pub seed: i64,
    pub epochs: usize,
    /// Hidden layer sizes: empty is the example's `MyModel`, else an
    /// [`crate::model::Mlp`] (Linear, ReLU, Dropout per hidden layer).
    pub hidden: Vec<usize>,
    /// The Mlp's `nn.Dropout(p)`, in [0, 1); 0 without hidden layers.
    pub dropout: f64,
    /// Rows per optimizer step; `None` is the whole training split (no
    /// shuffling).
    pub batch_size: Option<usize>,
    /// The optimizer and its arguments (`torch.optim.SGD(lr=0.5)` by default).
    #[serde(flatten)]
    pub optimizer: OptimizerConfig,
    /// A learning-rate scheduler, when given, stepped as
    /// [`SchedulerConfig::stepping`] says: after each epoch's steps and
    /// evaluation, or (OneCycleLR) after every `optimizer.step()`.
    /// ReduceLROnPlateau watches the test loss in mode `min`, the test
    /// accuracy in mode `max`. OneCycleLR's `total_steps: None` becomes
    /// `epochs * steps_per_epoch`.
    pub scheduler: Option<SchedulerConfig>,
    /// `torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)` after
    /// each backward, when given.
    pub clip_grad_norm: Option<f64>,
    pub clip_norm_type: NormType,
    /// `torch.nn.utils.clip_grad_value_(params, clip_value)` after each
    /// backward (after the norm clipping), when given.
    pub clip_grad_value: Option<f64>,
    pub label_smoothing: f64,
    /// `nn.CrossEntropyLoss(weight=...)`, one value per class.
    pub class_weights: Option<Vec<f64>>,
    /// The share of rows held out for testing, rounded up.
    pub test_fraction: f64,
    /// Z-score the features with statistics of the training split.
    pub standardize: bool,
    /// Step through the exact fast step ([`ManualStep`]) where it covers
    /// the run (either model, a loss it covers, on the CPU): the same
    /// numbers as the autograd step, faster. `false` always
    /// runs the autograd step, the loop as a porter reads it.
    pub fast_step: bool,
    /// `with torch.autocast(device.type, dtype):` around every forward and
    /// loss (the steps, the evaluations, the confusion matrix), when given;
    /// the fast step is then off (it computes in f32).
    pub amp: Option<AmpDtype>,
    /// `torch.amp.GradScaler(...)`'s arguments, for `amp: Some(Fp16)` (bf16
    /// trains without a scaler, as PyTorch's recipe has it).
    pub grad_scaler: GradScalerConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 0,
            epochs: 200,
            hidden: Vec::new(),
            dropout: 0.0,
            batch_size: None,
            optimizer: OptimizerConfig::default(),
            scheduler: None,
            clip_grad_norm: None,
            clip_norm_type: NormType::Two,
            clip_grad_value: None,
            label_smoothing: 0.0,
            class_weights: None,
            test_fraction: 0.2,
            standardize: true,
            fast_step: true,
            amp: None,
            grad_scaler: GradScalerConfig::default(),
        }
    }
}

/// Loss and accuracy on both splits after one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    /// The learning rate the epoch's steps used.
    pub lr: f64,
    pub train_loss: f32,
    pub train_accuracy: f64,
    pub test_loss: f32,
    pub test_accuracy: f64,
}

/// The sizes of the data a run used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataSummary {
    pub name: String,
    pub rows: usize,
    pub features: usize,
    pub classes: usize,
    pub train_rows: usize,
    pub test_rows: usize,
}

/// What `train` did.
#[derive(Debug)]
pub struct TrainRun {
    pub config: TrainConfig,
    pub device: Device,
    pub data: DataSummary,
    pub epochs: Vec<EpochMetrics>,
    /// On the test split after the last epoch: `[true class][predicted class]`.
    pub confusion: Vec<Vec<i64>>,
    /// Wall time of the epoch loop (steps and per-epoch evaluation).
    pub seconds: f64,
    /// Everything needed to continue the run exactly ([`Start::Resume`]).
    pub state: TrainState,
    /// The saved epoch a resumed run continued after (`epochs` then holds
    /// only the epochs after it).
    pub resumed_after: Option<usize>,
    /// The backward pass the steps ran ([`TrainConfig::fast_step`]).
    pub backward: Backward,
    /// The ranks that trained it ([`train_distributed`]); 1 in one process.
    pub world_size: usize,
    /// The steps of this run's epochs that the GradScaler skipped (a
    /// gradient was inf or NaN: no optimizer step, the scale backed off);
    /// 0 without a scaler.
    pub skipped_steps: usize,
    /// The steps of this run's epochs (on each rank), skipped ones included.
    pub steps: usize,
}

/// Resume checkpoints during a run: `save` gets the run's state after every
/// `every` epochs but the last (whose state is [`TrainRun::state`]); an
/// error from it stops the run.
pub struct Checkpointing<'a> {
    pub every: usize,
    pub save: &'a mut dyn FnMut(&TrainState) -> Result<(), String>,
}

/// Where `train_from` starts.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// A fresh model (PyTorch's init).
    Fresh,
    /// The parameters (and standardization) of a checkpoint; a fresh
    /// optimizer and scheduler.
    Weights(&'a Checkpoint),
    /// Exactly where a run stopped: parameters, optimizer and scheduler
    /// state, the CPU generator's state and the epoch. The config must be
    /// the saved run's (only `epochs` may grow): the optimizer's kind, the
    /// model's sizes, the scheduler's kind and the data's sizes are checked.
    Resume(&'a TrainState),
}

/// A run's state after `epoch` epochs: what a PyTorch script saves to
/// resume (`model.state_dict()`, `optimizer.state_dict()`,
/// `scheduler.state_dict()`, `torch.get_rng_state()`, the epoch).
#[derive(Debug)]
pub struct TrainState {
    pub epoch: usize,
    /// The parameters and the standardization statistics.
    pub checkpoint: Checkpoint,
    pub optimizer_kind: OptimizerKind,
    pub optimizer: OptimizerState,
    /// The scheduler's class (`StepLR`, ...) and state.
    pub scheduler: Option<(String, SchedulerState)>,
    /// `torch.get_rng_state()`.
    pub rng: Vec<u8>,
    /// `scaler.state_dict()`, in a run with a gradient scaler (fp16).
    pub scaler: Option<GradScalerState>,
    /// The data's rows, features and classes.
    pub rows: usize,
    pub features: usize,
    pub classes: usize,
}

impl TrainRun {
    /// The trained model and its standardization statistics (the final
    /// state's).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.state.checkpoint
    }

    pub fn last(&self) -> &EpochMetrics {
        self.epochs.last().expect("at least one epoch")
    }

    /// Training rows processed per second of the epoch loop.
    pub fn samples_per_second(&self) -> f64 {
        (self.data.train_rows * self.epochs.len()) as f64 / self.seconds.max(1e-9)
    }
}

/// Trains `MyModel` (softmax regression), or the `Mlp` of `config.hidden`, on `data`, in the order
/// `scripts/reference.py train` does it, so the per-epoch numbers are
/// PyTorch's: seed, split (`randperm`), standardize, `MyModel(D, C)` (or the
/// parameters of `init`), the optimizer, then per epoch: shuffle (`randperm`, for
/// mini-batches only), steps, evaluation of both splits.
pub fn train(
    data: &Dataset,
    config: &TrainConfig,
    device: Device,
    init: Option<&Checkpoint>,
    on_epoch: impl FnMut(&EpochMetrics),
) -> Result<TrainRun, TrainError> {
    train_from(data, config, device, init.map_or(Start::Fresh, Start::Weights), None, on_epoch)
}

/// [`train`] from a [`Start`]: with [`Start::Resume`] the run continues
/// after the saved epoch (up to `config.epochs`) as if it had never stopped,
/// bit for bit: it redoes the setup (seed, split, model, optimizer,
/// scheduler), then loads the saved states over it, the generator's last.
pub fn train_from(
    data: &Dataset,
    config: &TrainConfig,
    device: Device,
    start: Start<'_>,
    checkpointing: Option<Checkpointing<'_>>,
    on_epoch: impl FnMut(&EpochMetrics),
) -> Result<TrainRun, TrainError> {
    run(data, config, device, start, checkpointing, None, on_epoch)
}

/// [`train_from`] as one rank of a data-parallel job, the way a PyTorch
/// script does it under `torchrun`: the model wrapped in
/// `DistributedDataParallel` (c10d's Reducer: rank 0's parameters at the
/// start, gradients averaged over the ranks in `loss.backward()`, so all
/// ranks keep the same model), and each epoch's training rows dealt out by
/// `DistributedSampler(train_split, world_size, rank, shuffle, seed=seed)`
/// after `sampler.set_epoch(epoch - 1)` (shuffled when a batch is smaller
/// than a rank's share of `ceil(train_rows / world_size)` rows), a batch
/// being `batch_size` of this rank's rows. Each rank evaluates its share of
/// both splits and the sums are reduced ([`evaluate_sharded`]: every rank
/// gets the same metrics); the autograd step always
/// (the Reducer hooks autograd). Every rank must call it with the same
/// data and config.
pub fn train_distributed(
    data: &Dataset,
    config: &TrainConfig,
    device: Device,
    start: Start<'_>,
    checkpointing: Option<Checkpointing<'_>>,
    group: &mut ProcessGroup,
    on_epoch: impl FnMut(&EpochMetrics),
) -> Result<TrainRun, TrainError> {
    run(data, config, device, start, checkpointing, Some(group), on_epoch)
}

fn run(
    data: &Dataset,
    config: &TrainConfig,
    device: Device,
    start: Start<'_>,
    mut checkpointing: Option<Checkpointing<'_>>,
    group: Option<&mut ProcessGroup>,
    mut on_epoch: impl FnMut(&EpochMetrics),
) -> Result<TrainRun, TrainError> {
    let (init, resume) = match start {
        Start::Fresh => (None, None),
        Start::Weights(ck) => (Some(ck), None),
        Start::Resume(st) => (Some(&st.checkpoint), Some(st)),
    };
    let classes = check_train(data, config, init)?;
    if let Some(st) = resume {
        check_resume(st, data, config)?;
    }
    tch::manual_seed(config.seed);
    let (test_idx, train_idx) = split(data.rows, config.test_fraction)?;
    let x = data.features_tensor();
    let y = data.labels_tensor();
    let standardizer = match (config.standardize, init.and_then(|c| c.standardizer.clone())) {
        (false, _) => None,
        (true, Some(s)) => Some(s),
        (true, None) => Some(Standardizer::fit(&x.index_select(0, &train_idx))?),
    };
    let x = match &standardizer {
        Some(s) => s.apply(&x)?,
        None => x.to_kind(Kind::Float),
    };

    let mut vs = nn::VarStore::new(Device::Cpu);
    let hidden: Vec<i64> = config.hidden.iter().map(|&h| h as i64).collect();
    let (features, classes64) = (data.features as i64, classes as i64);
    let model = Classifier::new(&vs.root(), features, &hidden, classes64, config.dropout);
    if let Some(ck) = init {
        ck.copy_into(&model.linears())?;
    }
    if device != Device::Cpu {
        vs.set_device(device);
    }
    let to = |t: Tensor| t.f_to_device(device);
    let (x_train, y_train) =
        (to(x.index_select(0, &train_idx))?, to(y.index_select(0, &train_idx))?);
    let (x_test, y_test) = (to(x.index_select(0, &test_idx))?, to(y.index_select(0, &test_idx))?);
    let n_train = x_train.size()[0];

    // model = DDP(model): rank 0's parameters to every rank.
    let mut group = group;
    let mut ddp = match group.as_deref_mut() {
        Some(g) => Some((DistributedDataParallel::new(g, &vs)?, g.rank(), g.world_size())),
        None => None,
    };
    // The rows one rank trains on per epoch: DistributedSampler's
    // num_samples, ceil(n / world_size); the whole split in one process.
    let n_rank = ddp.as_ref().map_or(n_train, |(_, _, w)| (n_train + *w as i64 - 1) / *w as i64);
    let mut optimizer = Optimizer::build(&vs, &config.optimizer)?;
    // A batch larger than the rows (or than i64 holds) is all the rows.
    let batch =
        config.batch_size.map_or(n_rank, |b| i64::try_from(b).map_or(n_rank, |b| b.min(n_rank)));
    let steps_per_epoch = (n_rank + batch - 1) / batch;
    // scheduler = torch.optim.lr_scheduler.<Name>(optimizer, ...)
    let scheduler_config = scheduler_config(config, steps_per_epoch as usize)?;
    let mut scheduler = match &scheduler_config {
        Some(c) => Some(Scheduler::new(c.clone(), &mut optimizer).map_err(TrainError::Schedule)?),
        None => None,
    };
    // with torch.autocast(device.type, dtype): around forward and loss.
    let autocast = config.amp.map(|dtype| (device, dtype));
    // scaler = torch.amp.GradScaler(device.type, ...), for fp16.
    let mut scaler = match config.amp {
        Some(dtype) if dtype.needs_scaler() => Some(GradScaler::new(device, config.grad_scaler)?),
        _ => None,
    };
    let first_epoch = match resume {
        None => 1,
        Some(st) => {
            // optimizer.load_state_dict(...); scheduler.load_state_dict(...);
            // scaler.load_state_dict(...); torch.set_rng_state(...)
            optimizer.load_state(&st.optimizer).map_err(TrainError::Optimizer)?;
            if let (Some(s), Some(state)) = (&mut scaler, &st.scaler) {
                s.load_state(state)?;
            }
            if let (Some(c), Some((_, state))) = (&scheduler_config, &st.scheduler) {
                scheduler =
                    Some(Scheduler::restore(c.clone(), state).map_err(TrainError::Schedule)?);
            }
            rng::set_cpu_state(&st.rng).map_err(|e| TrainError::Resume(e.to_string()))?;
            st.epoch + 1
        }
    };
    let stepping = config.scheduler.as_ref().map(|c| c.stepping());
    let clip = Clip {
        params: vs.trainable_variables(),
        norm: config.clip_grad_norm.map(|max| (max, config.clip_norm_type)),
        value: config.clip_grad_value,
    };
    let mut loss_fn = CrossEntropyLoss::new().label_smoothing(config.label_smoothing);
    if let Some(w) = &config.class_weights {
        let w: Vec<f32> = w.iter().map(|&v| v as f32).collect();
        loss_fn = loss_fn.weight(to(Tensor::from_slice(&w))?);
    }

    // The exact fast step where it covers the run: one call beside the
    // autograd step (`train_step`), with the same numbers. On the CPU only
    // until a GPU run has checked it there (tests/cuda.rs has the check).
    let fast = if config.fast_step
        && device == Device::Cpu
        && config.amp.is_none()
        && ddp.is_none()
        && ManualStep::covers(&loss_fn)
    {
        Some(ManualStep::new(&model)?)
    } else {
        None
    };
    let backward = if fast.is_some() { Backward::Manual } else { Backward::Autograd };

    // The one full check of logits against labels (class range, shapes,
    // weights); the steps and evaluations then skip it.
    for (x, y) in [(&x_train, &y_train), (&x_test, &y_test)] {
        let _ = tch::no_grad(|| loss_fn.f_forward(&model.forward_t(x, false), y))?;
    }
    // The run's whole state after an epoch (a resume checkpoint).
    let state_at = |epoch,
                    optimizer: &Optimizer,
                    scheduler: &Option<Scheduler>,
                    scaler: &Option<GradScaler>| {
        let scaler = scaler.as_ref().map(GradScaler::state).transpose()?;
        state_of(epoch, &model, &standardizer, optimizer, scheduler, scaler, config, data, classes)
    };
    let mut skipped_steps = 0;
    let start = std::time::Instant::now();
    // (Not more: a huge --epochs is the user's to stop, not an allocation.)
    let mut epochs = Vec::with_capacity(config.epochs.min(1 << 16));
    let diverged = |loss: f32, epoch: usize, step: Option<i64>| TrainError::Diverged {
        loss,
        epoch,
        epochs: config.epochs,
        step: step.map(|s| (s, steps_per_epoch)),
        lr: config.optimizer.lr,
    };
    for epoch in first_epoch..=config.epochs {
        let lr = optimizer.lr();
        let shuffled;
        let (xs, ys) = if let Some((_, rank, world)) = &ddp {
            // sampler.set_epoch(epoch - 1); this rank's rows in its order.
            let shuffle = batch < n_rank;
            let rows = distributed::sampler_indices(
                n_train as usize,
                *world,
                *rank,
                shuffle,
                config.seed,
                epoch as i64 - 1,
            )
            .map_err(|e| TrainError::Resume(e.to_string()))?;
            let rows = to(Tensor::from_slice(&rows))?;
            shuffled = (x_train.f_index_select(0, &rows)?, y_train.f_index_select(0, &rows)?);
            (&shuffled.0, &shuffled.1)
        } else if batch >= n_train {
            (&x_train, &y_train)
        } else {
            // A fresh shuffle each epoch, from the seeded CPU generator. The
            // rows are gathered once in that order and each batch is a slice
            // of them: the same rows as `x_train[perm[first:first + batch]]`.
            let perm = to(Tensor::f_randperm(n_train, (Kind::Int64, Device::Cpu))?)?;
            shuffled = (x_train.f_index_select(0, &perm)?, y_train.f_index_select(0, &perm)?);
            (&shuffled.0, &shuffled.1)
        };
        // The steps' losses stay on the device until the epoch ends: no host
        // read inside the epoch. The first non-finite one then stops the run.
        let mut step_losses = Vec::with_capacity(steps_per_epoch as usize);
        for step in 0..steps_per_epoch {
            let first = step * batch;
            let rows = batch.min(n_rank - first);
            let (xb, yb) = (xs.f_narrow(0, first, rows)?, ys.f_narrow(0, first, rows)?);
            let step = (&model, &loss_fn, fast.as_ref(), autocast);
            let ddp = ddp.as_mut().map(|(d, _, _)| d);
            let opt = (&mut optimizer, scaler.as_mut());
            let (loss, stepped) = train_step(step, ddp, opt, &clip, &xb, &yb)?;
            step_losses.push(loss);
            skipped_steps += usize::from(!stepped);
            if let (Some(s), Some(Stepping::PerBatch)) = (&mut scheduler, stepping) {
                s.step(&mut optimizer, None).map_err(TrainError::Schedule)?; // per batch
            }
        }
        let losses = Tensor::f_stack(&step_losses, 0)?.f_to_device(Device::Cpu)?;
        if let Some((step, &loss)) =
            Vec::<f32>::try_from(&losses)?.iter().enumerate().find(|(_, l)| !l.is_finite())
        {
            return Err(diverged(loss, epoch, Some(step as i64 + 1)));
        }
        let eval = (&model, &loss_fn, fast.as_ref(), autocast);
        let ((train_loss, train_accuracy), (test_loss, test_accuracy)) = match group.as_deref_mut()
        {
            // Each rank its share of the rows, the sums reduced.
            Some(g) => (
                evaluate_sharded(eval, &x_train, &y_train, g)?,
                evaluate_sharded(eval, &x_test, &y_test, g)?,
            ),
            None => (evaluate(eval, &x_train, &y_train)?, evaluate(eval, &x_test, &y_test)?),
        };
        let metrics =
            EpochMetrics { epoch, lr, train_loss, train_accuracy, test_loss, test_accuracy };
        if !train_loss.is_finite() {
            return Err(diverged(train_loss, epoch, None));
        }
        on_epoch(&metrics);
        epochs.push(metrics);
        match (&mut scheduler, &config.scheduler) {
            // scheduler.step(test_loss) or scheduler.step(test_accuracy)
            (Some(s), Some(SchedulerConfig::Plateau { mode, .. })) => {
                let metric = match mode {
                    PlateauMode::Min => test_loss as f64,
                    PlateauMode::Max => test_accuracy,
                };
                s.step(&mut optimizer, Some(metric)).map_err(TrainError::Schedule)?;
            }
            // scheduler.step(), once per epoch
            (Some(s), _) if stepping == Some(Stepping::PerEpoch) => {
                s.step(&mut optimizer, None).map_err(TrainError::Schedule)?;
            }
            _ => {}
        }
        if let Some(c) = &mut checkpointing {
            if epoch % c.every.max(1) == 0 && epoch < config.epochs {
                let st = state_at(epoch, &optimizer, &scheduler, &scaler)?;
                (c.save)(&st).map_err(TrainError::Checkpointing)?;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();

    let world_size = ddp.as_ref().map_or(1, |(_, _, w)| *w);
    let steps = epochs.len() * steps_per_epoch as usize;

    let confusion = match group.as_deref_mut() {
        Some(g) => confusion_matrix_sharded(&model, &x_test, &y_test, classes, autocast, g)?,
        None => autocast_if(autocast, || confusion_matrix(&model, &x_test, &y_test, classes))??,
    };
    if let Some(g) = group {
        g.barrier()?; // no rank leaves (with rank 0's store) before all are done
    }
    let state = state_at(config.epochs, &optimizer, &scheduler, &scaler)?;
    Ok(TrainRun {
        config: config.clone(),
        device,
        data: DataSummary {
            name: data.name.clone(),
            rows: data.rows,
            features: data.features,
            classes,
            train_rows: n_train as usize,
            test_rows: x_test.size()[0] as usize,
        },
        epochs,
        confusion,
        seconds,
        state,
        resumed_after: resume.map(|st| st.epoch),
        backward,
        world_size,
        skipped_steps,
        steps,
    })
}

/// Checks that data, config and checkpoint fit together (everything `train`
/// would reject before its first step), and returns the number of classes.
pub fn check_train(
    data: &Dataset,
    config: &TrainConfig,
    init: Option<&Checkpoint>,
) -> Result<usize, TrainError> {
    let classes = match init {
        Some(ck) => check_checkpoint_fits(ck, data)?,
        None => data.classes,
    };
    if let Some(w) = &config.class_weights {
        if w.len() != classes {
            return Err(TrainError::ClassWeights { got: w.len(), classes });
        }
    }
    crate::data::split_sizes(data.rows, config.test_fraction)?;
    config.optimizer.check().map_err(TrainError::Optimizer)?;
    let bad = |what, rule| Err(TrainError::Config { what, rule });
    if config.epochs == 0 {
        return bad("epochs", "at least 1");
    }
    if config.batch_size == Some(0) {
        return bad("batch_size", "at least 1");
    }
    if config.hidden.contains(&0) {
        return bad("hidden", "sizes of at least 1");
    }
    if init.is_some_and(|ck| ck.hidden != config.hidden) {
        return bad("hidden", "the checkpoint's hidden sizes");
    }
    if !(0.0..1.0).contains(&config.dropout) {
        return bad("dropout", "in [0, 1)");
    }
    if config.dropout != 0.0 && config.hidden.is_empty() {
        return bad("dropout", "0 without hidden layers (MyModel has no Dropout)");
    }
    let (_, n_train) = crate::data::split_sizes(data.rows, config.test_fraction)?;
    let batch = config.batch_size.map_or(n_train, |b| b.min(n_train));
    scheduler_config(config, n_train.div_ceil(batch))?;
    for (what, clip) in
        [("clip_grad_norm", config.clip_grad_norm), ("clip_grad_value", config.clip_grad_value)]
    {
        if clip.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
            return bad(what, "finite and > 0");
        }
    }
    Ok(classes)
}

/// The run's state after `epoch` epochs (and that epoch's scheduler step).
#[allow(clippy::too_many_arguments)]
fn state_of(
    epoch: usize,
    model: &Classifier,
    standardizer: &Option<Standardizer>,
    optimizer: &Optimizer,
    scheduler: &Option<Scheduler>,
    scaler: Option<GradScalerState>,
    config: &TrainConfig,
    data: &Dataset,
    classes: usize,
) -> Result<TrainState, TrainError> {
    Ok(TrainState {
        epoch,
        checkpoint: Checkpoint::of_linears(&model.linears(), standardizer.clone())?,
        optimizer_kind: config.optimizer.kind,
        optimizer: optimizer.state()?,
        scheduler: scheduler
            .as_ref()
            .zip(config.scheduler.as_ref())
            .map(|(s, c)| (c.torch_name().to_string(), s.state())),
        rng: rng::cpu_state().map_err(|e| TrainError::Resume(e.to_string()))?,
        scaler,
        rows: data.rows,
        features: data.features,
        classes,
    })
}

/// Whether a resume state fits this data and config (what [`train_from`]
/// checks first).
pub fn check_resume(
    st: &TrainState,
    data: &Dataset,
    config: &TrainConfig,
) -> Result<(), TrainError> {
    let differs = |what: &str, saved: String, now: String| {
        Err(TrainError::Resume(format!(
            "the saved run has {what} {saved}, this one {now}; resume with the same settings"
        )))
    };
    if (st.rows, st.features) != (data.rows, data.features) {
        let shape = |r: usize, f: usize| format!("{r} rows of {f} features");
        return differs("data of", shape(st.rows, st.features), shape(data.rows, data.features));
    }
    if st.optimizer_kind != config.optimizer.kind {
        let (a, b) = (st.optimizer_kind.torch_name(), config.optimizer.kind.torch_name());
        return differs("optimizer", a.to_string(), b.to_string());
    }
    let saved = st.scheduler.as_ref().map_or("none", |(n, _)| n.as_str());
    let now = config.scheduler.as_ref().map_or("none", |c| c.torch_name());
    if saved != now {
        return differs("scheduler", saved.to_string(), now.to_string());
    }
    let needs_scaler = config.amp.is_some_and(AmpDtype::needs_scaler);
    if st.scaler.is_some() != needs_scaler {
        let scaler = |on: bool| if on { "a GradScaler (fp16)" } else { "no GradScaler" };
        return Err(TrainError::Resume(format!(
            "the saved run has {}, this one {}; resume with the same settings",
            scaler(st.scaler.is_some()),
            scaler(needs_scaler)
        )));
    }
    if let Some(state) = &st.scaler {
        state.check()?;
    }
    if st.epoch >= config.epochs {
        return Err(TrainError::Resume(format!(
            "the saved run is at epoch {}; ask for more epochs than that",
            st.epoch
        )));
    }
    Ok(())
}

/// The scheduler config with OneCycleLR's `total_steps` filled in
/// (`epochs * steps_per_epoch`), checked.
fn scheduler_config(
    config: &TrainConfig,
    steps_per_epoch: usize,
) -> Result<Option<SchedulerConfig>, TrainError> {
    let Some(mut s) = config.scheduler.clone() else {
        return Ok(None);
    };
    let steps = config.epochs.saturating_mul(steps_per_epoch);
    if let SchedulerConfig::OneCycle { total_steps, .. } = &mut s {
        match total_steps {
            None => *total_steps = Some(steps),
            // PyTorch fails at the step past total_steps.
            Some(t) if *t < steps => {
                return Err(TrainError::Config {
                    what: "total_steps",
                    rule: "at least epochs x steps per epoch (OneCycleLR is stepped per batch)",
                })
            }
            Some(_) => {}
        }
    }
    s.check().map_err(TrainError::Schedule)?;
    Ok(Some(s))
}

/// forward, loss, zero_grad, backward, (clip,) step: the example's five
/// lines. Returns the loss, left on the device.
/// With a gradient scaler (fp16): `scaler.scale(loss).backward()`,
/// `scaler.unscale_(optimizer)` before any clipping, `scaler.step(optimizer)`
/// (no step where a gradient is inf or NaN), `scaler.update()`. Returns the
/// loss, left on the device, and whether the optimizer stepped.
fn train_step(
    step: Eval<'_>,
    ddp: Option<&mut DistributedDataParallel>,
    (optimizer, scaler): (&mut Optimizer, Option<&mut GradScaler>),
    clip: &Clip,
    x: &Tensor,
    y: &Tensor,
) -> Result<(Tensor, bool), TrainError> {
    let (model, loss_fn, fast, autocast) = step;
    let loss = match fast {
        // The exact fast step: the same forward, loss and gradients as the
        // four lines below, without the autograd engine.
        Some(manual) => manual.f_step(model, loss_fn, x, y)?,
        None => {
            // with torch.autocast(...):  (when the run has --amp)
            let loss = autocast_if(autocast, || -> Result<Tensor, TrainError> {
                // model.train(); outputs = model(x) (through DDP's forward)
                let outputs = match ddp {
                    Some(ddp) => ddp.forward(|| model.forward_t(x, true))?,
                    None => model.forward_t(x, true),
                };
                // The labels were checked once, before the loop.
                Ok(loss_fn.f_forward_unchecked(&outputs, y)?)
            })??;
            optimizer.zero_grad();
            match &scaler {
                Some(s) => s.scale(&loss)?.f_backward()?,
                None => loss.f_backward()?,
            }
            loss
        }
    };
    let stepped = match scaler {
        Some(s) => {
            if clip.norm.is_some() || clip.value.is_some() {
                s.unscale_(&clip.params)?;
            }
            clip.apply()?;
            let stepped = s.step(optimizer, &clip.params)?;
            s.update()?;
            stepped
        }
        None => {
            clip.apply()?;
            optimizer.step()?;
            true
        }
    };
    Ok((loss.f_detach()?, stepped))
}

/// A model, its loss, the fast step where it runs, and the autocast region
/// (device, dtype) of a run with `amp`.
type Eval<'a> =
    (&'a Classifier, &'a CrossEntropyLoss, Option<&'a ManualStep>, Option<(Device, AmpDtype)>);

/// Gradient clipping between `loss.backward()` and `optimizer.step()`.
struct Clip {
    params: Vec<Tensor>,
    norm: Option<(f64, NormType)>,
    value: Option<f64>,
}

impl Clip {
    fn apply(&self) -> Result<(), TchError> {
        if let Some((max_norm, norm_type)) = self.norm {
            let _total = optim::clip_grad_norm_(&self.params, max_norm, norm_type)?;
        }
        if let Some(clip_value) = self.value {
            optim::clip_grad_value_(&self.params, clip_value)?;
        }
        Ok(())
    }
}

/// Loss and accuracy of the model on `(x, y)`, without gradients. The
/// labels must be valid class indices: callers check them once beforehand.
fn evaluate(eval: Eval<'_>, x: &Tensor, y: &Tensor) -> Result<(f32, f64), TrainError> {
    let (model, loss_fn, fast, autocast) = eval;
    let rows = y.size()[0] as f64;
    if let Some(manual) = fast {
        // The same loss and count as the lines below, from the fast step's
        // kernels in one call.
        let (loss, correct) = manual.f_evaluate(model, loss_fn, x, y)?;
        return Ok((loss, correct as f64 / rows));
    }
    // model.eval(); with torch.no_grad(): (and torch.autocast(...))
    autocast_if(autocast, || {
        tch::no_grad(|| {
            let logits = model.forward_t(x, false);
            // The labels were checked once, before any evaluation.
            let loss = loss_fn.f_forward_unchecked(&logits, y)?.f_double_value(&[])? as f32;
            let correct = logits.argmax(1, false).eq_tensor(y).sum(Kind::Int64).int64_value(&[]);
            Ok((loss, correct as f64 / rows))
        })
    })?
}

/// [`evaluate`] on one rank of a data-parallel run, the way a DDP script
/// evaluates: each rank takes its strided share of the rows (`x[rank::W]`:
/// no padding, so no row counts twice, unlike `DistributedSampler`'s),
/// sums its losses (`reduction='sum'`), its rows' class weights (the mean's
/// denominator; the row count without weights) and its correct predictions,
/// and one `dist.all_reduce` of the three in f64 sums them over the ranks.
/// The loss is then `sum / weights` rounded to f32, the accuracy `correct /
/// rows`, the same on every rank. Computed on the whole split in one
/// process, the mean loss is f32 arithmetic in another order, so the two
/// agree to f32 rounding, not bit for bit.
fn evaluate_sharded(
    eval: Eval<'_>,
    x: &Tensor,
    y: &Tensor,
    group: &mut ProcessGroup,
) -> Result<(f32, f64), TrainError> {
    let (model, loss_fn, _, autocast) = eval;
    let rows = y.size()[0];
    let (xs, ys) = shard(x, y, group)?;
    // nn.CrossEntropyLoss(weight, label_smoothing=..., reduction="sum")
    let mut sum_fn = CrossEntropyLoss::new()
        .label_smoothing(loss_fn.smoothing())
        .ignore_index(loss_fn.ignored_index())
        .reduction(Reduction::Sum);
    if let Some(w) = loss_fn.class_weight() {
        sum_fn = sum_fn.weight(w.shallow_clone());
    }
    let mut sums = autocast_if(autocast, || {
        tch::no_grad(|| -> Result<Tensor, TrainError> {
            let logits = model.forward_t(&xs, false);
            let loss = sum_fn.f_forward_unchecked(&logits, &ys)?.f_to_kind(Kind::Double)?;
            let weights = match loss_fn.class_weight() {
                Some(w) => {
                    w.f_index_select(0, &ys)?.f_to_kind(Kind::Double)?.f_sum(Kind::Double)?
                }
                None => Tensor::from(ys.size()[0] as f64).f_to_device(ys.device())?,
            };
            let correct = logits.f_argmax(1, false)?.f_eq_tensor(&ys)?.f_sum(Kind::Double)?;
            Ok(Tensor::f_stack(&[loss, weights, correct], 0)?.f_to_device(Device::Cpu)?)
        })
    })??;
    group.all_reduce_sum(&mut sums)?;
    let s = Vec::<f64>::try_from(&sums)?;
    Ok(((s[0] / s[1]) as f32, s[2] / rows as f64))
}

/// This rank's rows of `(x, y)` for evaluation: `x[rank::world_size]`, the
/// same strided view as Python's slice (not a copy: the matmul then reads
/// the rows as PyTorch's does).
fn shard(x: &Tensor, y: &Tensor, group: &ProcessGroup) -> Result<(Tensor, Tensor), TchError> {
    let (rank, world) = (group.rank() as i64, group.world_size() as i64);
    Ok((x.f_slice(0, rank, None, world)?, y.f_slice(0, rank, None, world)?))
}

/// [`confusion_matrix`] on one rank of a data-parallel run: each rank counts
/// its share of the rows (as [`evaluate_sharded`]), one `dist.all_reduce`
/// sums the counts (exact: integers).
fn confusion_matrix_sharded(
    model: &Classifier,
    x: &Tensor,
    y: &Tensor,
    classes: usize,
    autocast: Option<(Device, AmpDtype)>,
    group: &mut ProcessGroup,
) -> Result<Vec<Vec<i64>>, TrainError> {
    let (xs, ys) = shard(x, y, group)?;
    let counts = autocast_if(autocast, || confusion_matrix(model, &xs, &ys, classes))??;
    let flat: Vec<i64> = counts.concat();
    let mut t = Tensor::from_slice(&flat);
    group.all_reduce_sum(&mut t)?;
    let flat = Vec::<i64>::try_from(&t)?;
    Ok(flat.chunks(classes).map(<[i64]>::to_vec).collect())
}

/// `[true class][predicted class]` counts.
pub fn confusion_matrix(
    model: &Classifier,
    x: &Tensor,
    y: &Tensor,
    classes: usize,
) -> Result<Vec<Vec<i64>>, TchError> {
    let pred = tch::no_grad(|| model.forward_t(x, false).argmax(1, false));
    let pred = Vec::<i64>::try_from(&pred.f_to_device(Device::Cpu)?)?;
    let truth = Vec::<i64>::try_from(&y.f_to_device(Device::Cpu)?)?;
    let mut m = vec![vec![0i64; classes]; classes];
    for (t, p) in truth.iter().zip(&pred) {
        m[*t as usize][*p as usize] += 1;
    }
    Ok(m)
}

/// The checkpoint's class count, if it fits the data's features and labels.
fn check_checkpoint_fits(ck: &Checkpoint, data: &Dataset) -> Result<usize, TrainError> {
    let sizes = ck.sizes();
    let fits = ck.layers.len() + 1 == sizes.len()
        && ck
            .layers
            .iter()
            .zip(sizes.windows(2))
            .all(|(l, io)| l.weight.len() == io[0] * io[1] && l.bias.len() == io[1]);
    if !fits {
        return Err(TrainError::Config {
            what: "checkpoint",
            rule: "a weight of out x in values and a bias of out values per layer",
        });
    }
    if ck.features != data.features {
        let layer = crate::checkpoint::layer_names(ck.layers.len()).swap_remove(0);
        let outputs = ck.sizes()[1];
        let (checkpoint, data) = (ck.features, data.features);
        return Err(TrainError::CheckpointFeatures { checkpoint, layer, outputs, data });
    }
    if ck.classes < data.classes {
        return Err(TrainError::CheckpointClasses { checkpoint: ck.classes, data: data.classes });
    }
    Ok(ck.classes)
}

/// A model built from a checkpoint, for evaluation.
pub fn model_from_checkpoint(
    ck: &Checkpoint,
    device: Device,
) -> Result<(nn::VarStore, Classifier), TchError> {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let hidden: Vec<i64> = ck.hidden.iter().map(|&h| h as i64).collect();
    let model = Classifier::new(&vs.root(), ck.features as i64, &hidden, ck.classes as i64, 0.0);
    ck.copy_into(&model.linears())?;
    if device != Device::Cpu {
        vs.set_device(device);
    }
    Ok((vs, model))
}

/// Accuracy and confusion matrix of a checkpoint on a whole data set.
#[derive(Debug)]
pub struct EvalRun {
    pub data: DataSummary,
    pub device: Device,
    pub loss: f32,
    pub accuracy: f64,
    pub confusion: Vec<Vec<i64>>,
}

/// Evaluates a saved model on every row of `data`, standardized with the
/// checkpoint's statistics (or not at all when `standardize` is false).
pub fn eval(
    data: &Dataset,
    ck: &Checkpoint,
    standardize: bool,
    device: Device,
) -> Result<EvalRun, TrainError> {
    let classes = check_checkpoint_fits(ck, data)?;
    let x = data.features_tensor();
    let x = match (standardize, &ck.standardizer) {
        (false, _) => x.to_kind(Kind::Float),
        (true, Some(s)) => s.apply(&x)?,
        (true, None) => return Err(TrainError::NoStandardization),
    };
    let (_vs, model) = model_from_checkpoint(ck, device)?;
    let x = x.f_to_device(device)?;
    let y = data.labels_tensor().f_to_device(device)?;
    let (loss, accuracy) = evaluate((&model, &CrossEntropyLoss::new(), None, None), &x, &y)?;
    Ok(EvalRun {
        data: DataSummary {
            name: data.name.clone(),
            rows: data.rows,
            features: data.features,
            classes,
            train_rows: 0,
            test_rows: data.rows,
        },
        device,
        loss,
        accuracy,
        confusion: confusion_matrix(&model, &x, &y, classes)?,
    })
}
