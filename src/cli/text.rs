//! What a person reads: the example's account of its run, `train`'s and
//! `eval`'s summaries, the per-epoch line and `bench`'s line. (The `--json`
//! documents are `report.rs`'s, the progress bar `progress.rs`'s.)

use super::report::BenchResult;
use cross_entropy_tch::device::device_name;
use cross_entropy_tch::example::{ExampleConfig, ExampleRun};
use cross_entropy_tch::loss::cross_entropy;
use cross_entropy_tch::optim::OptimizerConfig;
use cross_entropy_tch::schedule::SchedulerConfig;
use cross_entropy_tch::training::{EpochMetrics, EvalRun, TrainRun};
use tch::{Device, TchError};

/// A result of `TchError` or the text: the example's summary reads tensors.
type Result<T> = std::result::Result<T, TchError>;

/// PyTorch's `print(loss)` for a scalar loss that came out of
/// `nn.CrossEntropyLoss()`: `tensor(1.1429, grad_fn=<NllLossBackward0>)`.
pub fn pytorch_loss_repr(loss: f32) -> String {
    format!("tensor({loss:.4}, grad_fn=<NllLossBackward0>)")
}

/// How many per-step loss lines a long run prints (evenly spaced, plus the last).
pub const MAX_STEP_LINES: usize = 20;

/// Whether step `step` of `steps` gets a line of its own.
pub fn prints_step(step: usize, steps: usize) -> bool {
    let every = steps.div_ceil(MAX_STEP_LINES).max(1);
    step == 1 || step == steps || step.is_multiple_of(every)
}

/// The line printed for one step: PyTorch's `print(loss)` and what it means.
pub fn step_line(step: usize, steps: usize, loss: f32) -> String {
    let width = steps.to_string().len();
    format!(
        "step {step:>width$}/{steps}: print(loss) -> {}   (f32 {loss})",
        pytorch_loss_repr(loss)
    )
}

/// What is about to run, printed before the first step.
pub fn header(config: &ExampleConfig, device: Device) -> String {
    let ExampleConfig { seed, batch_size: n, features, classes: c, lr, .. } = *config;
    format!(
        "model:   MyModel(linear=Linear(in_features={features}, out_features={c}, bias=True)) on {device}\n\
         optim:   nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr={lr})\n\
         data:    torch.manual_seed({seed}); inputs = torch.randn({n}, {features}); targets = torch.randint(0, {c}, ({n},))",
        device = device_name(device),
    )
}

/// The human-readable account printed after the steps: what the loss means,
/// and what the SGD step(s) changed.
pub fn summary(run: &ExampleRun) -> Result<String> {
    let ExampleConfig { batch_size: n, classes: c, lr, steps, .. } = run.config;
    let targets = Vec::<i64>::try_from(&run.targets)?;
    let first = run.losses[0];
    let dw = (&run.final_params.weight - &run.initial.weight).abs();
    let db = (&run.final_params.bias - &run.initial.bias).abs();
    // The loss of the final parameters on the same batch (one extra forward
    // on the CPU copies: nothing random is drawn, nothing else changes).
    let after = tch::no_grad(|| {
        let logits = run.inputs.linear(&run.final_params.weight, Some(&run.final_params.bias));
        cross_entropy(&logits, &run.targets).double_value(&[])
    });
    let updates =
        if steps == 1 { "one SGD step".to_string() } else { format!("{steps} SGD steps") };
    Ok(format!(
        "targets: {targets:?}\n\
         loss:    step 1: the mean over the {n} rows of -log softmax(outputs)[target] = {first}\n\
         \x20        (a model that guesses uniformly scores ln {c} = {uniform:.4})\n\
         update:  {updates} with lr = {lr}: weight moved by at most {dw_max:.3e} (mean {dw_mean:.3e}), bias by at most {db_max:.3e}\n\
         after:   the loss on the same batch is now {after:.6} ({delta:+.6})",
        uniform = (c as f64).ln(),
        dw_max = dw.max().double_value(&[]),
        dw_mean = dw.mean(None).double_value(&[]),
        db_max = db.max().double_value(&[]),
        delta = after - first as f64,
    ))
}

/// `epoch  20/200: train loss 0.1234 acc 0.967 | test loss 0.2345 acc 0.933`
pub fn epoch_line(m: &EpochMetrics, epochs: usize) -> String {
    let width = epochs.to_string().len();
    format!(
        "epoch {:>width$}/{epochs}: train loss {:.4} acc {:.3} | test loss {:.4} acc {:.3}",
        m.epoch, m.train_loss, m.train_accuracy, m.test_loss, m.test_accuracy
    )
}

/// The confusion matrix as a table, rows the true classes.
pub fn confusion_table(m: &[Vec<i64>]) -> String {
    let width = m
        .iter()
        .flatten()
        .map(|v| v.to_string().len())
        .max()
        .unwrap_or(1)
        .max(m.len().to_string().len())
        + 2;
    let mut s = format!("{:>8}", "true\\pred");
    for c in 0..m.len() {
        s += &format!("{c:>width$}");
    }
    for (t, row) in m.iter().enumerate() {
        s += &format!("\n{t:>9}");
        for v in row {
            s += &format!("{v:>width$}");
        }
    }
    s
}

/// `SGD lr 0.5, momentum 0.9`: the optimizer and the arguments that are not
/// torch.optim's defaults.
pub fn optimizer_text(o: &OptimizerConfig) -> String {
    let d = OptimizerConfig::new(o.kind);
    let mut s = format!("{} lr {}", o.kind.torch_name(), o.lr);
    let numbers = [
        ("momentum", o.momentum, d.momentum),
        ("dampening", o.dampening, d.dampening),
        ("weight_decay", o.weight_decay, d.weight_decay),
        ("eps", o.eps, d.eps),
        ("alpha", o.alpha, d.alpha),
    ];
    for (name, v, default) in numbers {
        if v != default {
            s += &format!(", {name} {v}");
        }
    }
    if o.betas != d.betas {
        s += &format!(", betas ({}, {})", o.betas.0, o.betas.1);
    }
    for (name, on) in [("nesterov", o.nesterov), ("amsgrad", o.amsgrad), ("centered", o.centered)] {
        if on {
            s += &format!(", {name}");
        }
    }
    s
}

/// The human-readable account of a training run.
pub fn train_summary(run: &TrainRun, written: &[String]) -> String {
    let (c, d) = (&run.config, &run.data);
    let m = run.last();
    let w = run.world_size;
    // DistributedSampler's rows per rank, and the backend that averages the
    // gradients (NCCL for a model on CUDA).
    let share = d.train_rows.div_ceil(w);
    let backend = if run.device.is_cuda() { "nccl" } else { "gloo" };
    let batch = match c.batch_size {
        Some(b) if w > 1 && b < share => {
            format!(
                "DDP over {w} ranks ({backend}), mini-batches of {b} per rank, reshuffled each epoch"
            )
        }
        _ if w > 1 => {
            format!("DDP over {w} ranks ({backend}), each a full batch of its {share} rows")
        }
        Some(b) if b < d.train_rows => format!("mini-batches of {b}, reshuffled each epoch"),
        _ => "full batch".to_string(),
    };
    let mut optim = optimizer_text(&c.optimizer);
    match &c.scheduler {
        // It replaces the optimizer's lr from the first step.
        Some(SchedulerConfig::OneCycle { max_lr, .. }) => {
            optim += &format!(", OneCycleLR max_lr {max_lr}")
        }
        Some(s) => optim += &format!(", {}", s.torch_name()),
        None => {}
    }
    if let Some(max) = c.clip_grad_norm {
        optim += &format!(", clip_grad_norm_ {max} (norm {})", c.clip_norm_type);
    }
    if let Some(v) = c.clip_grad_value {
        optim += &format!(", clip_grad_value_ {v}");
    }
    if let Some(dtype) = c.amp {
        optim += &format!(", autocast({})", dtype.torch_name());
        if dtype.needs_scaler() {
            let g = &c.grad_scaler;
            optim += &format!(
                " + GradScaler(init_scale={}, growth_interval={})",
                g.init_scale, g.growth_interval
            );
        }
    }
    let mut loss = Vec::new();
    if let Some(w) = &c.class_weights {
        loss.push(format!("weight={w:?}"));
    }
    if c.label_smoothing != 0.0 {
        loss.push(format!("label_smoothing={}", c.label_smoothing));
    }
    let model = if c.hidden.is_empty() {
        format!(
            "MyModel(linear=Linear(in_features={}, out_features={}, bias=True))",
            d.features, d.classes
        )
    } else {
        let sizes: Vec<String> = c.hidden.iter().map(|h| h.to_string()).collect();
        format!(
            "MLP({} -> {} -> {}, ReLU, Dropout(p={}))",
            d.features,
            sizes.join(" -> "),
            d.classes,
            c.dropout
        )
    };
    let epochs = match run.resumed_after {
        Some(k) => format!("{} epochs, resumed after epoch {k}", c.epochs),
        None => format!("{} epochs", run.epochs.len()),
    };
    let mut s = format!(
        "data:      {} ({} rows, {} features, {} classes): {} train, {} test, {}\n\
         model:     {model} on {}\n\
         training:  {epochs}, {batch}, {optim}, nn.CrossEntropyLoss({}), seed {}\n\
         final:     train loss {:.4} accuracy {:.3} | test loss {:.4} accuracy {:.3}\n\
         speed:     {:.0} samples/s ({:.2} s for {} epochs)\n\
         confusion matrix of the test split (rows: true class, columns: predicted):\n{}",
        d.name,
        d.rows,
        d.features,
        d.classes,
        d.train_rows,
        d.test_rows,
        if c.standardize { "standardized" } else { "raw features" },
        device_name(run.device),
        loss.join(", "),
        c.seed,
        m.train_loss,
        m.train_accuracy,
        m.test_loss,
        m.test_accuracy,
        run.samples_per_second(),
        run.seconds,
        run.epochs.len(),
        confusion_table(&run.confusion),
    );
    if let Some(scaler) = &run.state.scaler {
        s += &format!(
            "\nscaler:    GradScaler skipped {} of {} steps (inf/NaN gradients); scale now {}",
            run.skipped_steps, run.steps, scaler.scale
        );
    }
    if !written.is_empty() {
        s += &format!("\nwrote:     {}", written.join(", "));
    }
    s
}

/// The human-readable account of an evaluation.
pub fn eval_summary(run: &EvalRun) -> String {
    let d = &run.data;
    format!(
        "data:      {} ({} rows, {} features, {} classes) on {}\n\
         result:    loss {:.4} accuracy {:.3} ({} of {} right)\n\
         confusion matrix (rows: true class, columns: predicted):\n{}",
        d.name,
        d.rows,
        d.features,
        d.classes,
        device_name(run.device),
        run.loss,
        run.accuracy,
        run.confusion.iter().enumerate().map(|(i, r)| r[i]).sum::<i64>(),
        d.rows,
        confusion_table(&run.confusion),
    )
}

/// `bench`'s line: what was timed and how long a step took.
pub fn bench_line(r: &BenchResult) -> String {
    format!(
        "{} steps ({:?} backward{}) of ({}, {} -> {}) on {} with {} thread(s): {:.2} us/step; loss after: {}",
        r.steps,
        r.backward,
        r.amp.map(|dtype| format!(", {dtype} autocast")).unwrap_or_default(),
        r.batch_size,
        r.features,
        r.classes,
        r.device,
        r.threads,
        r.us_per_step,
        r.final_loss
    )
}
