//! examples/train_loop.py, a complete PyTorch training script, on this
//! crate: each Python line is quoted above the Rust that does it, and the
//! two print the same numbers, bit for bit (`tests/examples.rs` runs both).
//!
//!     source scripts/env.sh && cargo run --release --example train_loop -- [--stop-after N] [--checkpoint FILE]
//!
//! (`scripts/env.sh` tells cargo where libtorch is, as for any cargo command
//! here; see the README). With `--checkpoint FILE` the run saves its whole state there
//! after every epoch and, when the file exists at start, resumes from it.
//! The Python saves with `torch.save`, this one a resume checkpoint
//! (`resume::to_bytes`, safetensors): the same state, each side's file.

use cross_entropy_tch::checkpoint::Checkpoint;
use cross_entropy_tch::data::{Bundled, Dataset, Standardizer};
use cross_entropy_tch::model::Mlp;
use cross_entropy_tch::optim::{self, NormType, Optimizer, OptimizerConfig, OptimizerKind};
use cross_entropy_tch::schedule::{Scheduler, SchedulerConfig};
use cross_entropy_tch::training::TrainState;
use cross_entropy_tch::{resume, rng, CrossEntropyLoss};
use std::error::Error;
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

// EPOCHS, BATCH, HIDDEN = 20, 16, 32
const EPOCHS: usize = 20;
const BATCH: i64 = 16;
const HIDDEN: i64 = 32;

fn main() -> Result<(), Box<dyn Error>> {
    // p.add_argument("--stop-after", type=int, default=EPOCHS)
    // p.add_argument("--checkpoint", default=None)
    let (mut stop_after, mut checkpoint) = (EPOCHS, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--stop-after", Some(n)) => stop_after = n.parse()?,
            ("--checkpoint", Some(path)) => checkpoint = Some(std::path::PathBuf::from(path)),
            _ => {
                return Err(format!(
                    "usage: train_loop [--stop-after N] [--checkpoint FILE], got {flag}"
                )
                .into())
            }
        }
    }

    // rows = list(csv.reader(open("data/wine_data.csv")))[1:]
    // x = torch.tensor([...], dtype=torch.float64); y = torch.tensor([...])
    let data = Dataset::bundled(Bundled::Wine)?; // the same file, read by the crate's CSV reader
    let (x, y) = (data.features_tensor(), data.labels_tensor()); // f64 and i64, as there

    // torch.manual_seed(0)
    tch::manual_seed(0);
    // perm = torch.randperm(len(y))
    let perm = Tensor::f_randperm(data.rows as i64, (Kind::Int64, Device::Cpu))?;
    // test_idx, train_idx = perm[:36], perm[36:]
    let (test_idx, train_idx) = (perm.narrow(0, 0, 36), perm.narrow(0, 36, data.rows as i64 - 36));
    // mean, std = x[train_idx].mean(0), x[train_idx].std(0, correction=0)
    // x = ((x - mean) / std).float()
    // (Standardizer also maps a zero std to 1; wine has none.)
    let standardizer = Standardizer::fit(&x.index_select(0, &train_idx))?;
    let x = standardizer.apply(&x)?;
    // x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    let (x_train, y_train) = (x.index_select(0, &train_idx), y.index_select(0, &train_idx));
    let (x_test, y_test) = (x.index_select(0, &test_idx), y.index_select(0, &test_idx));

    // model = MLP(x.shape[1], HIDDEN, 3, dropout=0.2)
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Mlp::new(&vs.root(), x.size()[1], &[HIDDEN], 3, 0.2); // trap 2: PyTorch's init order
                                                                      // loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    let loss_fn = CrossEntropyLoss::new().label_smoothing(0.1);
    // optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01)
    // (trap 7: tch's nn::AdamW is not torch.optim.AdamW; this one is.)
    let config = OptimizerConfig {
        lr: 0.01,
        weight_decay: 0.01,
        ..OptimizerConfig::new(OptimizerKind::AdamW)
    };
    let mut optimizer = Optimizer::build(&vs, &config)?;
    // steps = -(-len(y_train) // BATCH)
    let n_train = y_train.size()[0];
    let steps = (n_train + BATCH - 1) / BATCH;
    // scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, epochs=EPOCHS,
    //                                                 steps_per_epoch=steps)
    // (trap 10: it also cycles AdamW's beta1.)
    let mut schedule = SchedulerConfig::one_cycle(0.05);
    if let SchedulerConfig::OneCycle { total_steps, .. } = &mut schedule {
        *total_steps = Some(EPOCHS * steps as usize); // epochs=EPOCHS, steps_per_epoch=steps
    }
    let mut scheduler = Scheduler::new(schedule.clone(), &mut optimizer)?;
    // start = 0
    let mut start = 0;
    // if args.checkpoint and os.path.exists(args.checkpoint):
    if let Some(path) = checkpoint.as_ref().filter(|p| p.exists()) {
        // ck = torch.load(args.checkpoint, weights_only=True)
        let ck = resume::read(path)?;
        // model.load_state_dict(ck["model"])
        ck.checkpoint.copy_into(&model.layers.iter().collect::<Vec<_>>())?;
        // optimizer.load_state_dict(ck["optimizer"])
        optimizer.load_state(&ck.optimizer)?;
        // scheduler.load_state_dict(ck["scheduler"])
        let (_, state) = ck.scheduler.as_ref().ok_or("the checkpoint has no scheduler")?;
        scheduler = Scheduler::restore(schedule.clone(), state)?;
        // torch.set_rng_state(ck["rng"])  (trap 12: tch has no binding; rng has)
        rng::set_cpu_state(&ck.rng)?;
        // start = ck["epoch"]
        start = ck.epoch;
    }

    // for epoch in range(start + 1, min(args.stop_after, EPOCHS) + 1):
    for epoch in start + 1..=stop_after.min(EPOCHS) {
        // model.train()  (trap 11: no module mode in tch; forward_t takes it)
        let train = true;
        // order = torch.randperm(len(y_train))
        let order = Tensor::f_randperm(n_train, (Kind::Int64, Device::Cpu))?;
        let mut loss = Tensor::new();
        // for first in range(0, len(y_train), BATCH):
        for first in (0..n_train).step_by(BATCH as usize) {
            // idx = order[first:first + BATCH]
            let idx = order.narrow(0, first, BATCH.min(n_train - first));
            // loss = loss_fn(model(x_train[idx]), y_train[idx])
            let logits = model.forward_t(&x_train.index_select(0, &idx), train);
            loss = loss_fn.f_forward(&logits, &y_train.index_select(0, &idx))?;
            // optimizer.zero_grad()
            optimizer.zero_grad();
            // loss.backward()
            loss.f_backward()?;
            // torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            // (trap 8: tch's clip_grad_norm is another computation)
            let _total_norm =
                optim::clip_grad_norm_(&vs.trainable_variables(), 1.0, NormType::Two)?;
            // optimizer.step()
            optimizer.step()?;
            // scheduler.step()
            scheduler.step(&mut optimizer, None)?;
        }
        // model.eval()
        let train = false;
        // with torch.no_grad():
        let (test_loss, accuracy) = tch::no_grad(|| -> Result<(f64, f64), Box<dyn Error>> {
            // logits = model(x_test)
            let logits = model.forward_t(&x_test, train);
            // test_loss = loss_fn(logits, y_test).item()
            let test_loss = loss_fn.f_forward(&logits, &y_test)?.f_double_value(&[])?;
            // accuracy = (logits.argmax(1) == y_test).float().mean().item()
            let right = logits.f_argmax(1, false)?.f_eq_tensor(&y_test)?;
            let accuracy =
                right.f_to_kind(Kind::Float)?.f_mean(None::<Kind>)?.f_double_value(&[])?;
            Ok((test_loss, accuracy))
        })?;
        // print(f"epoch {epoch}: loss {loss.item()!r} test loss {test_loss!r} "
        //       f"accuracy {accuracy!r} lr {scheduler.get_last_lr()[0]!r}")
        println!(
            "epoch {epoch}: loss {} test loss {} accuracy {} lr {}",
            repr(loss.f_double_value(&[])?),
            repr(test_loss),
            repr(accuracy),
            repr(scheduler.lr())
        );
        // if args.checkpoint:
        if let Some(path) = &checkpoint {
            // torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            //             "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
            //             "epoch": epoch}, args.checkpoint)
            let state = TrainState {
                epoch,
                checkpoint: Checkpoint::of_linears(
                    &model.layers.iter().collect::<Vec<_>>(),
                    Some(standardizer.clone()),
                )?,
                optimizer_kind: config.kind,
                optimizer: optimizer.state()?,
                scheduler: Some((schedule.torch_name().to_string(), scheduler.state())),
                rng: rng::cpu_state()?,
                scaler: None, // no GradScaler in this f32 loop
                rows: data.rows,
                features: data.features,
                classes: data.classes,
            };
            std::fs::write(path, resume::to_bytes(&state)?)?;
        }
    }
    Ok(())
}

/// Python's `repr` of a float: the shortest digits that read back as the
/// same f64 (Rust's `{:?}`), with Python's exponent (`7.9e-06`, not `7.9e-6`).
fn repr(v: f64) -> String {
    let s = format!("{v:?}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let exp: i32 = exp.parse().expect("an exponent");
            format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
        }
        None => s,
    }
}
