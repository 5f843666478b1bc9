//! The commands: each takes its parsed flags, runs the library and shows
//! the result (text or `--json` on stdout, progress on stderr, files).

use super::args::{BenchArgs, Cli, Command, EvalArgs, ExampleArgs, TrainArgs};
use super::config::{check_resume, eval_error, load_checkpoint, load_resume, UsageError};
use super::output_file::AtomicFile;
use super::progress::Progress;
use super::{bench, launch, plot, report, text};
use anyhow::{Context, Result};
use cross_entropy_tch::device::DeviceRequest;
use cross_entropy_tch::distributed::{self, ProcessGroup, Rendezvous};
use cross_entropy_tch::training::Start;
use cross_entropy_tch::{example, resume, training};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Runs what the flags ask for, printing to stdout.
pub fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        None => run_example(&cli.example),
        Some(Command::Train(args)) => run_train(args),
        Some(Command::Eval(args)) => run_eval(args),
        Some(Command::Bench(args)) => run_bench(args),
    }
}

/// Writes one JSON document and a newline to stdout. Serialized first: a
/// write error inside `serde_json::to_writer` would hide its `io::Error`
/// from the error chain, and a closed stdout (`| head`) would then be
/// reported instead of ending the run quietly.
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let mut text = serde_json::to_vec(value).context("serializing the JSON")?;
    text.push(b'\n');
    std::io::stdout().lock().write_all(&text).context("writing the JSON to stdout")
}

/// Writes a line to stdout.
fn print_line(line: &str) -> Result<()> {
    writeln!(std::io::stdout().lock(), "{line}").context("writing to stdout")
}

fn run_example(args: &ExampleArgs) -> Result<()> {
    let config = args.config()?;
    let device = args.common.apply()?;
    let json = args.common.json;
    if !json {
        print_line(&text::header(&config, device))?;
    }
    let steps = config.steps;
    let mut write_error = None;
    let run = example::run_example(&config, device, |step, loss| {
        if !json && text::prints_step(step, steps) && write_error.is_none() {
            write_error = print_line(&text::step_line(step, steps, loss)).err();
        }
    })?;
    if let Some(e) = write_error {
        return Err(e);
    }
    if json {
        print_json(&report::Report::of(&run)?)
    } else {
        print_line(&text::summary(&run)?)
    }
}

fn run_train(args: &TrainArgs) -> Result<()> {
    let torchrun = std::env::var_os("WORLD_SIZE").is_some();
    match (args.nproc, torchrun) {
        (Some(n), false) => return launch::launch(n),
        (Some(_), true) => {
            return Err(UsageError::msg(
                "--nproc starts ranks of its own; under torchrun (WORLD_SIZE set) leave it out"
                    .to_string(),
            ))
        }
        (None, _) => {}
    }
    // One rank of a data-parallel job (torchrun's or --nproc's).
    if torchrun && std::env::var_os("TORCH_CPP_LOG_LEVEL").is_none() {
        // The error says it; c10d's warnings before it would bury it.
        distributed::set_c10_log_level(3);
    }
    let mut device = args.common.apply()?;
    let group = if torchrun {
        let rdv = Rendezvous::from_env().map_err(UsageError::wrap)?;
        let timeout = Duration::from_secs_f64(args.dist_timeout);
        let rank = rdv.rank;
        device = rank_device(args.common.device, &rdv).with_context(|| format!("rank {rank}"))?;
        let group = if device.is_cuda() {
            ProcessGroup::with_nccl(&rdv, timeout)
        } else {
            ProcessGroup::new(&rdv, timeout)
        };
        Some(group.with_context(|| format!("rank {rank}"))?)
    } else {
        None
    };
    match group.as_ref().map(ProcessGroup::rank) {
        Some(rank) => train_rank(args, group, device).with_context(|| format!("rank {rank}")),
        None => train_rank(args, None, device),
    }
}

/// A data-parallel rank's device. On CUDA its own GPU, `cuda:LOCAL_RANK`
/// (what a torchrun script's `torch.cuda.set_device(local_rank)` picks;
/// NCCL refuses two ranks on one GPU): for `--device cuda`, where this
/// build has NCCL and the machine that GPU, and for `auto` where every
/// rank on this machine (`LOCAL_WORLD_SIZE`) has a GPU of its own and
/// NCCL is built; `auto` is the CPU otherwise, and so is `cpu`.
fn rank_device(request: DeviceRequest, rdv: &Rendezvous) -> Result<tch::Device> {
    let gpus = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
    match request {
        DeviceRequest::Cpu => Ok(tch::Device::Cpu),
        DeviceRequest::Auto => {
            let local_ranks = std::env::var("LOCAL_WORLD_SIZE")
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(rdv.world_size);
            let own_gpus = gpus > 0 && local_ranks <= gpus && distributed::nccl_built();
            Ok(if own_gpus { tch::Device::Cuda(rdv.local_rank) } else { tch::Device::Cpu })
        }
        DeviceRequest::Cuda(0) => rank_gpu(rdv, gpus),
        DeviceRequest::Cuda(n) => Err(UsageError::msg(format!(
            "--device cuda:{n}: under DDP each rank trains on cuda:LOCAL_RANK; give --device cuda"
        ))),
    }
}

fn rank_gpu(rdv: &Rendezvous, gpus: usize) -> Result<tch::Device> {
    if !distributed::nccl_built() {
        return Err(UsageError::msg(
            "train under DDP on CUDA needs NCCL, and this build has none (build-notes.md, \"NCCL\"): add --device cpu"
                .to_string(),
        ));
    }
    if rdv.local_rank >= gpus {
        return Err(UsageError::msg(format!(
            "LOCAL_RANK {} has no GPU of its own: this machine has {gpus} CUDA device(s); start at most {gpus} ranks on it, or add --device cpu",
            rdv.local_rank
        )));
    }
    Ok(tch::Device::Cuda(rdv.local_rank))
}

fn train_rank(
    args: &TrainArgs,
    mut group: Option<ProcessGroup>,
    device: tch::Device,
) -> Result<()> {
    // Rank 0 (or the one process) prints and writes; the others only train.
    let lead = group.as_ref().is_none_or(|g| g.rank() == 0);
    let mut config = args.config()?;
    let data = args.data.load()?;
    let resume = args.resume.as_deref().map(load_resume).transpose()?;
    let loaded = args.load.as_deref().map(load_checkpoint).transpose()?;
    let init = loaded.as_ref().or(resume.as_ref().map(|st| &st.checkpoint));
    if let (Some(ck), None) = (init, &args.hidden) {
        config.hidden = ck.hidden.clone(); // the file's model, unless --hidden says otherwise
    }
    args.check(&data, &config, init)?;
    if let (Some(st), Some(path)) = (&resume, &args.resume) {
        check_resume(st, &data, &config, path)?;
    }
    if let Some(g) = &mut group {
        // Every rank with the same settings and data, or none starts.
        let fingerprint = serde_json::to_vec(&(&config, &data.name, data.rows, data.features))
            .context("serializing the settings")?;
        g.check_same("settings", &fingerprint)?;
    }
    // Every output path is checked before training starts (rank 0's).
    let out = |path: &Option<std::path::PathBuf>, flag| {
        path.as_deref().filter(|_| lead).map(|p| AtomicFile::create(p, flag)).transpose()
    };
    let save = out(&args.save, "--save")?;
    let resume_out = out(&args.checkpoint, "--checkpoint")?;
    let csv = out(&args.metrics_csv, "--metrics-csv")?;
    let plot_file = out(&args.plot, "--plot")?;

    let quiet = args.quiet || !lead;
    let mut progress = Progress::new(config.epochs, quiet, std::io::stderr().is_terminal());
    let start = match (&resume, &loaded) {
        (Some(st), _) => Start::Resume(st),
        (None, Some(ck)) => Start::Weights(ck),
        (None, None) => Start::Fresh,
    };
    let mut save_state = |st: &training::TrainState| -> Result<(), String> {
        let Some(file) = resume_out.as_ref() else {
            return Ok(()); // a rank other than 0
        };
        let bytes =
            resume::to_bytes(st).map_err(|e| format!("serializing the resume checkpoint: {e}"))?;
        file.replace(&bytes).map_err(|e| format!("{e:#}"))
    };
    let checkpointing =
        args.checkpoint_every.map(|every| training::Checkpointing { every, save: &mut save_state });
    let on_epoch = |m: &training::EpochMetrics| progress.epoch(m);
    let run = match &mut group {
        None => training::train_from(&data, &config, device, start, checkpointing, on_epoch),
        Some(g) => {
            training::train_distributed(&data, &config, device, start, checkpointing, g, on_epoch)
        }
    };
    progress.finish();
    let run = run?;
    if !lead {
        return Ok(());
    }

    let mut written = Vec::new();
    if let Some(file) = plot_file {
        written.push(file.path().display().to_string());
        file.commit(plot::training_curves_svg(&run)?.as_bytes())?;
    }
    if let Some(file) = csv {
        written.push(file.path().display().to_string());
        file.commit(report::metrics_csv(&run).as_bytes())?;
    }
    if let Some(file) = save {
        written.push(file.path().display().to_string());
        let bytes = run.checkpoint().to_bytes().context("serializing the checkpoint")?;
        file.commit(&bytes)?;
    }
    if let Some(file) = resume_out {
        written.push(file.path().display().to_string());
        let bytes = resume::to_bytes(&run.state).context("serializing the resume checkpoint")?;
        file.commit(&bytes)?;
    }
    if args.common.json {
        print_json(&report::TrainReport::of(&run))
    } else {
        print_line(&text::train_summary(&run, &written))
    }
}

fn run_eval(args: &EvalArgs) -> Result<()> {
    let device = args.common.apply()?;
    let data = args.data.load()?;
    let ck = load_checkpoint(&args.load)?;
    let run = training::eval(&data, &ck, !args.no_standardize, device)
        .map_err(|e| eval_error(e, &args.load))?;
    if args.common.json {
        print_json(&report::EvalReport::of(&run))
    } else {
        print_line(&text::eval_summary(&run))
    }
}

fn run_bench(args: &BenchArgs) -> Result<()> {
    let config = args.bench_config()?;
    let device = args.example.common.apply()?;
    let result = if args.gemm_only {
        bench::bench_gemms(&config, args.warmup, args.amp, device)?
    } else {
        bench::bench_example_step(
            &config,
            args.warmup,
            args.backward,
            args.optimizer,
            args.amp,
            device,
        )?
    };
    if args.example.common.json {
        print_json(&result)
    } else {
        print_line(&text::bench_line(&result))
    }
}
