//! c10d from Rust (`cross_entropy_tch::distributed`) against PyTorch's
//! `torch.distributed`, on 127.0.0.1 only (gloo on the loopback, `lo`):
//! a Rust rank and Python ranks in one group reduce together, and DDP
//! training with Rust ranks equals PyTorch DDP's bit for bit.

mod common;

use common::*;
use cross_entropy_tch::distributed::{DistributedDataParallel, ProcessGroup, Rendezvous};
use cross_entropy_tch::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use cross_entropy_tch::{CrossEntropyLoss, MyModel};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tch::nn::{Module, VarStore};
use tch::{Device, Kind, Tensor};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A port nobody listens on right now (the kernel's pick).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn rendezvous(rank: usize, world_size: usize, port: u16) -> Rendezvous {
    Rendezvous {
        rank,
        world_size,
        local_rank: rank,
        master_addr: "127.0.0.1".to_string(),
        master_port: port,
        agent_store: false,
    }
}

fn join(rank: usize, world_size: usize, port: u16) -> ProcessGroup {
    ProcessGroup::with_interfaces(&rendezvous(rank, world_size, port), TIMEOUT, &["lo"])
        .unwrap_or_else(|e| panic!("rank {rank}: {e}"))
}

/// `python -c SCRIPT` as rank `rank` of an `env://` job (what torchrun sets).
fn python_rank(python: &PathBuf, script: &str, rank: usize, world: usize, port: u16) -> Child {
    Command::new(python)
        .args(["-c", script])
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("GLOO_SOCKET_IFNAME", "lo")
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a Python rank")
}

fn json_of(child: Child, what: &str) -> Value {
    let out = child.wait_with_output().expect("waiting for a Python rank");
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: not JSON ({e})"))
}

fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()
}

fn json_floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// Each rank's values: `arange(5) * (rank + 1) + 0.25 * rank`, all exact
/// in f32, so the sums are exact in any order (the f64 oracle).
const COLLECTIVES: &str = r#"
import json, torch, torch.distributed as dist
from datetime import timedelta
dist.init_process_group("gloo", timeout=timedelta(seconds=60))
r = dist.get_rank()
t = torch.arange(5, dtype=torch.float32) * (r + 1) + 0.25 * r
dist.all_reduce(t)
b = torch.full((3,), float(r))
dist.broadcast(b, src=0)
dist.barrier()
print(json.dumps({"sum": t.tolist(), "broadcast": b.tolist()}))
dist.destroy_process_group()
"#;

#[test]
fn a_rust_rank_and_python_ranks_reduce_together() {
    let Some(python) = reference_python() else { return };
    for world in [2, 3] {
        let port = free_port();
        let others: Vec<Child> =
            (1..world).map(|r| python_rank(&python, COLLECTIVES, r, world, port)).collect();
        let mut pg = join(0, world, port);
        assert_eq!((pg.rank(), pg.world_size()), (0, world));
        let mut t = Tensor::arange(5, (Kind::Float, Device::Cpu));
        pg.all_reduce_sum(&mut t).unwrap();
        let mut b = Tensor::full([3], 0.0, (Kind::Float, Device::Cpu));
        pg.broadcast(&mut b, 0).unwrap();
        pg.barrier().unwrap();
        let oracle: Vec<f32> = (0..5)
            .map(|i| {
                (0..world).map(|r| i as f64 * (r + 1) as f64 + 0.25 * r as f64).sum::<f64>() as f32
            })
            .collect();
        assert_eq!(floats(&t), oracle, "{world} ranks: ours");
        for (r, child) in others.into_iter().enumerate() {
            let doc = json_of(child, &format!("Python rank {}", r + 1));
            assert_eq!(json_floats(&doc["sum"]), oracle, "{world} ranks: Python rank {}", r + 1);
            assert_eq!(json_floats(&doc["broadcast"]), vec![0.0; 3], "rank {}", r + 1);
        }
    }
}

/// PyTorch DDP on the seed's model: 20 rows of `randn`, each rank its
/// shard `x[rank::world]` (DistributedSampler without shuffling), a model
/// seeded differently on each rank (DDP broadcasts rank 0's), five steps.
/// Prints the losses and the final parameters of its rank.
const DDP: &str = r#"
import json, os, sys, torch, torch.distributed as dist, torch.nn as nn
from datetime import timedelta
from torch.nn.parallel import DistributedDataParallel as DDP
dist.init_process_group("gloo", timeout=timedelta(seconds=60))
r, w = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
x = torch.randn(20, 10)
y = torch.randint(0, 3, (20,))
torch.manual_seed(100 + r)
model = DDP(nn.Linear(10, 3))
opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if sys.argv[1] == "sgd"
       else torch.optim.Adam(model.parameters(), lr=0.01))
losses = []
for step in range(5):
    loss = nn.CrossEntropyLoss()(model(x[r::w]), y[r::w])
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
m = model.module
print(json.dumps({"losses": losses, "weight": m.weight.flatten().tolist(), "bias": m.bias.tolist()}))
# No rank leaves (and takes rank 0's store with it) before all are done.
dist.barrier()
dist.destroy_process_group()
"#;

/// The same job as [`DDP`]'s, as rank `rank` here: what a porter's loop
/// looks like with [`DistributedDataParallel`] (`reducer`), or with
/// `broadcast_parameters` at the start and `all_reduce_gradients` after
/// each backward.
fn rust_ddp_rank(
    mut pg: ProcessGroup,
    optimizer: &str,
    reducer: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (rank, world) = (pg.rank() as i64, pg.world_size() as i64);
    let (x, y, vs, model) = {
        // tch's generator is the process's: one rank builds at a time.
        static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = BUILD.lock().unwrap();
        tch::manual_seed(0);
        let x = Tensor::randn([20, 10], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(3, [20], (Kind::Int64, Device::Cpu));
        tch::manual_seed(100 + rank);
        let vs = VarStore::new(Device::Cpu);
        let model = MyModel::new(&vs.root(), 10, 3);
        (x, y, vs, model)
    };
    let mut ddp = if reducer {
        Some(DistributedDataParallel::new(&mut pg, &vs).unwrap())
    } else {
        pg.broadcast_parameters(&vs).unwrap();
        None
    };
    let kind = if optimizer == "sgd" { OptimizerKind::Sgd } else { OptimizerKind::Adam };
    let mut config = OptimizerConfig::new(kind);
    if optimizer == "sgd" {
        (config.lr, config.momentum) = (0.1, 0.9);
    } else {
        config.lr = 0.01;
    }
    let mut opt = Optimizer::build(&vs, &config).unwrap();
    let (xs, ys) = (x.slice(0, rank, 20, world), y.slice(0, rank, 20, world));
    let mut losses = Vec::new();
    for _ in 0..5 {
        let logits = match &mut ddp {
            Some(ddp) => ddp.forward(|| model.forward(&xs)).unwrap(),
            None => model.forward(&xs),
        };
        let loss = CrossEntropyLoss::new().forward(&logits, &ys);
        opt.zero_grad();
        loss.backward();
        if ddp.is_none() {
            pg.all_reduce_gradients(&vs).unwrap();
        }
        opt.step().unwrap();
        losses.push(loss.double_value(&[]) as f32);
    }
    pg.barrier().unwrap(); // the scripts' last barrier
    let vars = vs.variables();
    (losses, floats(&vars["linear.weight"]), floats(&vars["linear.bias"]))
}

fn ddp_doc(doc: &Value) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (json_floats(&doc["losses"]), json_floats(&doc["weight"]), json_floats(&doc["bias"]))
}

#[test]
fn ddp_with_rust_ranks_equals_pytorch_ddp() {
    let Some(python) = reference_python() else { return };
    for optimizer in ["sgd", "adam"] {
        let script = DDP.replace("sys.argv[1]", &format!("{optimizer:?}"));
        for world in [2usize, 3] {
            // PyTorch alone: `world` Python ranks.
            let port = free_port();
            let torch: Vec<_> = (0..world)
                .map(|r| python_rank(&python, &script, r, world, port))
                .collect::<Vec<_>>()
                .into_iter()
                .enumerate()
                .map(|(r, c)| ddp_doc(&json_of(c, &format!("PyTorch DDP rank {r}"))))
                .collect();
            for r in 1..world {
                assert_eq!(torch[r].1, torch[0].1, "PyTorch's ranks agree");
            }
            // Ours alone: `world` Rust ranks (threads of this process, each
            // its own store client and gloo context).
            let port = free_port();
            let threads: Vec<_> = (0..world)
                .map(|r| {
                    std::thread::spawn(move || rust_ddp_rank(join(r, world, port), optimizer, true))
                })
                .collect();
            let ours: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            // A mixed job: rank 0 ours, the others PyTorch DDP.
            let port = free_port();
            let others: Vec<Child> =
                (1..world).map(|r| python_rank(&python, &script, r, world, port)).collect();
            let mixed0 = rust_ddp_rank(join(0, world, port), optimizer, true);
            let mixed: Vec<_> = others
                .into_iter()
                .map(|c| ddp_doc(&json_of(c, "a Python rank of the mixed job")))
                .collect();

            let what = format!("{optimizer}, {world} ranks");
            for r in 0..world {
                // Each rank's loss is its own shard's.
                assert_eq!(ours[r].0, torch[r].0, "{what}: rank {r}'s losses");
                assert_eq!(ours[r].1, torch[r].1, "{what}: rank {r}'s weight");
                assert_eq!(ours[r].2, torch[r].2, "{what}: rank {r}'s bias");
            }
            assert_eq!(mixed0, torch[0], "{what}: the mixed job's Rust rank");
            for (i, m) in mixed.iter().enumerate() {
                assert_eq!(m, &torch[i + 1], "{what}: the mixed job's Python rank {}", i + 1);
            }

            // all_reduce_gradients: DDP's first-iteration bucket every step.
            let port = free_port();
            let threads: Vec<_> = (0..world)
                .map(|r| {
                    std::thread::spawn(move || {
                        rust_ddp_rank(join(r, world, port), optimizer, false)
                    })
                })
                .collect();
            let plain: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            if world == 2 {
                // a + b in either order: bit-equal to DDP.
                assert_eq!(plain, torch, "{what}: all_reduce_gradients");
            } else {
                // Gloo's ring adds each element in an order set by its place
                // in the bucket, and DDP's bucket order changes after the
                // first iteration: the same sums in another order, within a
                // few f32 ulps of the weights (about 1e-7 here) after five steps.
                let diff = plain[0].1.iter().zip(&torch[0].1).map(|(a, b)| (a - b).abs());
                let diff = diff.fold(0f32, f32::max);
                assert!(diff < 1e-5, "{what}: all_reduce_gradients off by {diff}");
                eprintln!("{what}: all_reduce_gradients differs from DDP by at most {diff:e}");
            }
        }
    }
}

#[test]
fn a_bad_environment_is_one_clear_error() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    };
    let cases: [(&'static [(&str, &str)], &str); 5] = [
        (&[], "WORLD_SIZE: not set"),
        (&[("WORLD_SIZE", "two")], "WORLD_SIZE: \"two\" is not a non-negative integer"),
        (&[("WORLD_SIZE", "2"), ("RANK", "2")], "RANK: 2 is not below WORLD_SIZE 2"),
        (&[("WORLD_SIZE", "0"), ("RANK", "0")], "WORLD_SIZE: is 0"),
        (
            &[("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "70000")],
            "MASTER_PORT: \"70000\" is not a port (0 to 65535)",
        ),
    ];
    for (env, message) in cases {
        let err = Rendezvous::from_vars(vars(env)).unwrap_err().to_string();
        assert!(err.starts_with(message), "{env:?}: {err}");
    }
    let rdv = Rendezvous::from_vars(vars(&[
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29500"),
        ("TORCHELASTIC_USE_AGENT_STORE", "True"),
    ]))
    .unwrap();
    assert_eq!(rdv, Rendezvous { agent_store: true, ..rendezvous(1, 2, 29500) });

    // Nobody hosts the store: rank 1 gives up after the timeout, with c10d's
    // reason on one line.
    let started = std::time::Instant::now();
    let err = ProcessGroup::with_interfaces(
        &rendezvous(1, 2, free_port()),
        Duration::from_secs(2),
        &["lo"],
    )
    .err()
    .expect("no store to join");
    let message = err.to_string();
    assert!(started.elapsed() < Duration::from_secs(30), "{message}");
    assert!(message.starts_with("joining the process group: "), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    // A port in use: rank 0 cannot host the store there.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let err = ProcessGroup::with_interfaces(&rendezvous(0, 1, port), TIMEOUT, &["lo"])
        .err()
        .expect("a busy port");
    let message = err.to_string();
    assert!(message.starts_with("joining the process group: "), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
}

/// `scripts/reference.py ARGS` as every rank of a `world`-rank job, the
/// way torchrun starts it; rank 0's stdout.
fn reference_ddp(python: &PathBuf, world: usize, args: &[&str]) -> Value {
    let port = free_port();
    let ranks: Vec<Child> = (0..world)
        .map(|r| {
            Command::new(python)
                .arg(root().join("scripts/reference.py"))
                .args(args)
                .env("RANK", r.to_string())
                .env("LOCAL_RANK", r.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("GLOO_SOCKET_IFNAME", "lo")
                .env("OMP_NUM_THREADS", "1") // as torchrun and --nproc
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting a reference rank")
        })
        .collect();
    let mut docs: Vec<Value> = Vec::new();
    for (r, child) in ranks.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "reference rank {r} {args:?}: {stderr}");
        if r == 0 {
            docs.push(serde_json::from_slice(&out.stdout).expect("rank 0's JSON"));
        } else {
            assert!(out.stdout.is_empty(), "only rank 0 prints");
        }
    }
    docs.remove(0)
}

fn f32_of(v: &Value) -> f32 {
    v.to_string().parse().unwrap()
}

/// `train --nproc N` against the same job under PyTorch DDP: every epoch's
/// metrics (each rank's share evaluated, the sums reduced), the confusion
/// matrix and the saved weights, bit for bit; 2 and 3 ranks, SGD with
/// momentum, Adam, the MLP with dropout, a scheduler and clipping, class
/// weights with label smoothing.
#[test]
fn train_nproc_equals_pytorch_ddp() {
    let Some(python) = reference_python() else { return };
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("distributed-train");
    std::fs::create_dir_all(&dir).unwrap();
    // The last one in mixed precision: fp16 autocast under DDP, with a
    // GradScaler whose first steps overflow (skipped on every rank alike).
    let runs: [&[&str]; 5] = [
        &["--dataset", "digits", "--epochs", "4", "--batch-size", "32", "--momentum", "0.9"],
        &["--dataset", "iris", "--epochs", "6", "--batch-size", "16", "--optimizer", "adam"],
        &["--dataset", "iris", "--epochs", "5", "--batch-size", "10", "--hidden", "8,4"],
        &["--dataset", "wine", "--epochs", "5", "--hidden", "6", "--dropout", "0.25"],
        &["--dataset", "iris", "--epochs", "5", "--batch-size", "16", "--hidden", "8"],
    ];
    let extra: [&[&str]; 5] = [
        &[],
        &["--scheduler", "step", "--step-size", "2", "--clip-grad-norm", "1"],
        &["--dropout", "0.5", "--optimizer", "adamw", "--lr", "0.01"],
        &["--class-weights", "1,2,0.5", "--label-smoothing", "0.1"],
        &["--amp", "fp16", "--init-scale", "1e9", "--growth-interval", "2"],
    ];
    for world in [2usize, 3] {
        for (i, (run, more)) in runs.iter().zip(extra).enumerate() {
            let ours_file = dir.join(format!("ours-{world}-{i}.safetensors"));
            let theirs_file = dir.join(format!("theirs-{world}-{i}.safetensors"));
            let mut args = vec!["train", "--json", "--quiet", "--device", "cpu"];
            args.extend_from_slice(run);
            args.extend_from_slice(more);
            let what = format!("{world} ranks, {args:?}");
            let mut ours_args = args.clone();
            let nproc = world.to_string();
            ours_args.extend(["--nproc", &nproc, "--save", ours_file.to_str().unwrap()]);
            let out = bin().args(&ours_args).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{what}: {stderr}");
            let ours: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
            let mut theirs_args = args.clone();
            theirs_args.extend(["--save", theirs_file.to_str().unwrap()]);
            let theirs = reference_ddp(&python, world, &theirs_args);

            assert_eq!(ours["world_size"], world, "{what}");
            assert_eq!(theirs["world_size"], world, "{what}");
            let (a, b) = (ours["epochs"].as_array().unwrap(), theirs["epochs"].as_array().unwrap());
            assert_eq!(a.len(), b.len(), "{what}");
            for (ea, eb) in a.iter().zip(b) {
                for key in ["lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy"] {
                    assert_eq!(
                        f32_of(&ea[key]).to_bits(),
                        f32_of(&eb[key]).to_bits(),
                        "{what}: epoch {} {key}",
                        ea["epoch"]
                    );
                }
            }
            assert_eq!(ours["confusion_matrix"], theirs["confusion_matrix"], "{what}");
            let read = cross_entropy_tch::checkpoint::Checkpoint::read;
            assert_eq!(read(&ours_file).unwrap(), read(&theirs_file).unwrap(), "{what}: weights");
        }
    }
}

/// Under DDP each rank evaluates its share of the rows (`x[rank::W]`) and
/// the sums are reduced: with class weights and label smoothing, 3 ranks
/// (shares of 48, 47 and 47 of the 142 train rows, 12 each of the 36
/// test rows), every
/// epoch's reduced metrics must be those of the whole split. The last
/// epoch's are computed here from the saved weights in f64
/// (tests/common/ce_oracle.rs); the loss to 2e-6 relative, the f32 rounding
/// of the logits and of the sums (the reduced loss is `sum / weights` in
/// f64 over f32 partial sums). The accuracies exactly, and the test
/// accuracy is also the confusion matrix's diagonal (counts reduced too).
#[test]
fn sharded_metrics_are_the_whole_splits() {
    use common::ce_oracle::{oracle, Opts, Red, Target};
    use cross_entropy_tch::checkpoint::Checkpoint;
    use cross_entropy_tch::data::{split, Bundled, Dataset};
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("distributed-metrics");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("wine-3.safetensors");
    let weights = [1.0, 2.0, 0.5];
    let out = bin()
        .args(["train", "--json", "--quiet", "--device", "cpu", "--dataset", "wine"])
        .args(["--epochs", "3", "--nproc", "3", "--class-weights", "1,2,0.5"])
        .args(["--label-smoothing", "0.1", "--save", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let last = &doc["final"];

    let ck = Checkpoint::read(&file).unwrap();
    let data = Dataset::bundled(Bundled::Wine).unwrap();
    let (test_idx, train_idx) = {
        let _g = rng_lock();
        tch::manual_seed(0); // train's default --seed, then its split
        split(data.rows, 0.2).unwrap()
    };
    let x = Vec::<f64>::try_from(&data.features_tensor().flatten(0, -1)).unwrap();
    let st = ck.standardizer.as_ref().expect("standardized");
    let (f, c) = (data.features, data.classes);
    let (w, b) = (&ck.layers[0].weight, &ck.layers[0].bias);
    let whole = |idx: &Tensor| {
        let rows = Vec::<i64>::try_from(idx).unwrap();
        let mut logits = Vec::new();
        let mut correct = 0;
        for &r in &rows {
            // (x - mean) / std in f64, then f32 (as train feeds the model).
            let z: Vec<f64> = (0..f)
                .map(|j| ((x[r as usize * f + j] - st.mean[j]) / st.std[j]) as f32 as f64)
                .collect();
            let row: Vec<f64> = (0..c)
                .map(|k| b[k] as f64 + (0..f).map(|j| w[k * f + j] as f64 * z[j]).sum::<f64>())
                .collect();
            let best = (0..c).max_by(|&i, &j| row[i].total_cmp(&row[j])).unwrap();
            correct += usize::from(best as i64 == data.labels[r as usize]);
            logits.extend(row);
        }
        let labels = rows.iter().map(|&r| data.labels[r as usize]).collect();
        let opts = Opts {
            weight: Some(weights.to_vec()),
            eps: 0.1,
            reduction: Red::Mean,
            ..Opts::default()
        };
        let (loss, _) = oracle(&logits, &[rows.len(), c], &Target::Index(labels), &opts);
        (loss[0], correct as f64 / rows.len() as f64)
    };
    for (split, idx) in [("train", &train_idx), ("test", &test_idx)] {
        let (loss, accuracy) = whole(idx);
        let ours = last[format!("{split}_loss")].as_f64().unwrap();
        assert_close(ours, loss, 2e-6, 0.0, &format!("{split} loss"));
        assert_eq!(
            last[format!("{split}_accuracy")].as_f64().unwrap(),
            accuracy,
            "{split} accuracy"
        );
    }
    let m = doc["confusion_matrix"].as_array().unwrap();
    let cell = |t: usize, p: usize| m[t].as_array().unwrap()[p].as_i64().unwrap();
    let total: i64 =
        (0..c).flat_map(|t| (0..c).map(move |p| (t, p))).map(|(t, p)| cell(t, p)).sum();
    let diagonal: i64 = (0..c).map(|t| cell(t, t)).sum();
    assert_eq!(total, test_idx.size()[0], "every test row counted once");
    assert_eq!(last["test_accuracy"].as_f64().unwrap(), diagonal as f64 / total as f64);
}

/// Our binary as rank `rank` of a `world`-rank job on `port`, as torchrun
/// starts a rank.
fn our_rank(rank: usize, world: &str, port: u16, args: &[&str]) -> Child {
    bin()
        .args(args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world)
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("GLOO_SOCKET_IFNAME", "lo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a rank")
}

/// Its status and its stderr, which must be one line.
fn one_line_failure(child: Child, what: &str) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert!(!out.status.success(), "{what}: succeeded");
    assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
    assert!(stderr.starts_with("error: "), "{what}: {stderr}");
    (out.status.code(), stderr)
}

#[test]
fn a_bad_job_ends_every_rank_with_one_line_and_writes_nothing() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("distributed-faults");
    std::fs::create_dir_all(&dir).unwrap();
    let save = dir.join("model.safetensors");
    let _ = std::fs::remove_file(&save);
    let save_arg = save.to_str().unwrap();
    let train = ["train", "--quiet", "--device", "cpu", "--dataset", "iris", "--epochs", "3"];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut a: Vec<&str> = train.to_vec();
        a.extend_from_slice(extra);
        a.extend(["--save", save_arg]);
        a
    };

    // A rank started with other options than rank 0: every rank says so.
    let port = free_port();
    let a = our_rank(0, "2", port, &with(&[]));
    let b = our_rank(1, "2", port, &with(&["--lr", "0.1"]));
    for (r, child) in [a, b].into_iter().enumerate() {
        let (code, line) = one_line_failure(child, &format!("mismatch, rank {r}"));
        assert_eq!(code, Some(1), "{line}");
        assert!(line.contains("rank 1 was started with other settings than rank 0"), "{line}");
    }

    // WORLD_SIZE 3 with two ranks: both give up after --dist-timeout.
    let port = free_port();
    let started = std::time::Instant::now();
    let args = with(&["--dist-timeout", "3"]);
    let ranks = [our_rank(0, "3", port, &args), our_rank(1, "3", port, &args)];
    for (r, child) in ranks.into_iter().enumerate() {
        let (_, line) = one_line_failure(child, &format!("a missing rank, rank {r}"));
        assert!(line.starts_with(&format!("error: rank {r}: ")), "{line}");
    }
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());

    // A busy MASTER_PORT: rank 0 cannot host the store.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let (_, line) = one_line_failure(our_rank(0, "1", port, &with(&[])), "a busy port");
    assert!(line.starts_with("error: rank 0: joining the process group: "), "{line}");

    // Bad torchrun variables: usage errors (status 2), before any rendezvous.
    let (code, line) = one_line_failure(our_rank(2, "2", 1, &with(&[])), "RANK 2 of 2");
    assert_eq!(code, Some(2), "{line}");
    assert!(line.contains("RANK: 2 is not below WORLD_SIZE 2"), "{line}");
    let (code, line) = one_line_failure(our_rank(0, "1", 1, &with(&["--nproc", "2"])), "both");
    assert_eq!(code, Some(2), "{line}");
    assert!(line.contains("--nproc starts ranks of its own"), "{line}");

    // A rank that dies mid-run (SIGKILL): the launcher ends the job, rank 0
    // fails at its next collective, with one line, and nothing is saved.
    let mut args = vec!["train", "--quiet", "--device", "cpu", "--dataset", "digits"];
    args.extend(["--epochs", "100000", "--batch-size", "8", "--nproc", "2", "--save", save_arg]);
    let launcher = bin().args(&args).stderr(Stdio::piped()).spawn().unwrap();
    let pid = launcher.id();
    let children = || -> Vec<u32> {
        let path = format!("/proc/{pid}/task/{pid}/children");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while children().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500)); // into the epochs
    let ranks = children();
    assert_eq!(ranks.len(), 2, "two ranks running");
    // The second child is rank 1 (spawned in order).
    // SAFETY: a plain kill(2) of our own child.
    unsafe { libc::kill(ranks[1] as i32, libc::SIGKILL) };
    let started = std::time::Instant::now();
    let out = launcher.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert!(started.elapsed() < Duration::from_secs(20), "the job ended in time");
    assert_eq!(out.status.code(), Some(137), "the killed rank's status: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: rank 0: "), "{stderr}");
    assert!(!save.exists(), "no model saved by a failed job");
}

/// A `--nproc 2` run stopped after 3 of 6 epochs (`--checkpoint`, written
/// by rank 0) and resumed (`--resume`, read by every rank) ends with the
/// weights of the run that never stopped: the MLP with dropout, so the
/// generator's state matters.
#[test]
fn a_data_parallel_run_resumes_exactly() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("distributed-resume");
    std::fs::create_dir_all(&dir).unwrap();
    let (straight, ck, resumed) = (
        dir.join("straight.safetensors"),
        dir.join("ck.safetensors"),
        dir.join("resumed.safetensors"),
    );
    let base = ["train", "--quiet", "--device", "cpu", "--dataset", "iris", "--nproc", "2"];
    let model = ["--hidden", "8", "--dropout", "0.3", "--batch-size", "16", "--momentum", "0.9"];
    let run = |extra: &[&str]| {
        let out = bin().args(base).args(model).args(extra).output().unwrap();
        assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["--epochs", "6", "--save", straight.to_str().unwrap()]);
    run(&["--epochs", "3", "--checkpoint", ck.to_str().unwrap()]);
    run(&["--epochs", "6", "--resume", ck.to_str().unwrap(), "--save", resumed.to_str().unwrap()]);
    let read = cross_entropy_tch::checkpoint::Checkpoint::read;
    assert_eq!(read(&straight).unwrap(), read(&resumed).unwrap(), "resumed != straight");
}

/// NCCL is in the build wherever libtorch has CUDA (both venvs' wheels, with
/// the headers scripts/setup.sh installs), and `with_nccl` reaches
/// libtorch_cuda.so's own `ProcessGroupNCCL` constructor: without a GPU that
/// constructor refuses, and its message comes back as one line. With a GPU
/// (tests/cuda.rs runs NCCL there), a one-rank group is made.
#[test]
fn nccl_is_built_and_its_constructor_runs() {
    let cuda_libtorch = std::path::Path::new(env!("CE_LIBTORCH_LIB")).join("libtorch_cuda.so");
    if !cuda_libtorch.exists() {
        return skip("this libtorch has no libtorch_cuda.so, so no NCCL");
    }
    assert!(
        cross_entropy_tch::distributed::nccl_built(),
        "libtorch has CUDA but the build has no NCCL (see build.rs's warning)"
    );
    let rdv = rendezvous(0, 1, free_port());
    match ProcessGroup::with_nccl(&rdv, TIMEOUT) {
        Ok(mut g) if tch::Cuda::is_available() => g.barrier().unwrap(),
        Ok(_) => panic!("ProcessGroupNCCL was made without a GPU"),
        Err(e) => {
            let line = e.to_string();
            assert!(!tch::Cuda::is_available(), "with a GPU: {line}");
            assert!(line.contains("ProcessGroupNCCL") && line.contains("GPU"), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }
}
