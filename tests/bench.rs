//! The benchmark's fast path is exact: `ManualStep` (the autograd kernels
//! called directly) leaves the very parameters `loss.backward()` leaves, bit
//! for bit, and the `bench` subcommand's final loss equals PyTorch's.

mod common;

use common::*;
use cross_entropy_tch::loss::cross_entropy;
use cross_entropy_tch::ManualStep;
use cross_entropy_tch::MyModel;
use serde_json::Value;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Parameters after `steps` seed steps, and the first step's gradients.
fn train(
    seed: i64,
    (n, d, c): (i64, i64, i64),
    lr: f64,
    steps: usize,
    manual: bool,
) -> Vec<Tensor> {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = MyModel::new(&vs.root(), d, c);
    let mut opt = nn::Sgd::default().build(&vs, lr).unwrap();
    let x = Tensor::randn([n, d], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(c, [n], (Kind::Int64, Device::Cpu));
    let fast = ManualStep::new(&model).unwrap();
    let mut first_grads = vec![];
    for step in 0..steps {
        if manual {
            fast.gradients(&model, &x, &y);
        } else {
            let loss = cross_entropy(&model.forward(&x), &y);
            opt.zero_grad();
            loss.backward();
        }
        if step == 0 {
            first_grads = vec![model.weight().grad().copy(), model.bias().grad().copy()];
        }
        opt.step();
    }
    let mut out = vec![model.weight().copy(), model.bias().copy()];
    out.extend(first_grads);
    out
}

#[test]
fn manual_backward_is_bit_equal_to_autograd() {
    let _rng = rng_lock();
    for (seed, shape, lr, steps) in [
        (0, (10, 10, 3), 0.01, 50),
        (1, (1, 5, 2), 0.5, 30),
        (2, (64, 32, 10), 0.1, 40),
        (3, (33, 7, 5), 1.0, 25),
        (4, (256, 784, 10), 0.05, 5),
    ] {
        let a = train(seed, shape, lr, steps, false);
        let b = train(seed, shape, lr, steps, true);
        for (what, (x, y)) in ["weight", "bias", "first grad of weight", "first grad of bias"]
            .iter()
            .zip(a.iter().zip(&b))
        {
            assert_eq!(x.size(), y.size());
            assert!(
                x.equal(y),
                "{shape:?}: {what} differs (max |diff| {})",
                (x - y).abs().max().double_value(&[])
            );
        }
    }
}

/// The fast step against `loss.backward()` for the loss options `train`
/// never reaches: targets at `ignore_index` (-100) among the rest, with
/// class weights and label smoothing, through an MLP with dropout (the same
/// masks: both draw from the same seed). The loss and every gradient are
/// bit-equal.
#[test]
fn manual_step_equals_autograd_with_ignored_targets_weights_and_smoothing() {
    use cross_entropy_tch::model::{LinearStack, Mlp};
    use cross_entropy_tch::CrossEntropyLoss;
    use tch::nn::ModuleT;
    let _rng = rng_lock();
    let grads = |manual: bool| -> Vec<Tensor> {
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Mlp::new(&vs.root(), 6, &[8, 5], 4, 0.25);
        // 244 targets, about 30% ignored: enough for the weights' sum to
        // run in vector lanes, where zeros in place of the ignored targets'
        // weights (ATen's other branch) would round otherwise.
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([244, 6], opts);
        let weight = Tensor::rand([4], opts) * 3.0;
        let ignored = Tensor::rand([244], opts).lt(0.3);
        let y = Tensor::randint(4, [244], (Kind::Int64, Device::Cpu)).masked_fill(&ignored, -100);
        let loss_fn = CrossEntropyLoss::new().weight(weight).label_smoothing(0.15);
        tch::manual_seed(11); // the dropout masks
        let loss = if manual {
            let step = ManualStep::new(&model).unwrap();
            step.f_step(&model, &loss_fn, &x, &y).unwrap()
        } else {
            let loss = loss_fn.forward(&model.forward_t(&x, true), &y);
            loss.backward();
            loss
        };
        let mut out = vec![loss.detach()];
        for layer in model.linears() {
            out.push(layer.ws.grad().copy());
            out.push(layer.bs.as_ref().unwrap().grad().copy());
        }
        out
    };
    let (autograd, manual) = (grads(false), grads(true));
    for (i, (a, m)) in autograd.iter().zip(&manual).enumerate() {
        let what = if i == 0 { "the loss".to_string() } else { format!("gradient {i}") };
        assert!(
            a.equal(m),
            "{what} differs (max |diff| {})",
            (a - m).abs().max().double_value(&[])
        );
    }
}

/// `ManualStep::f_evaluate` is `train`'s evaluation after each epoch:
///
/// ```python
/// model.eval()
/// with torch.no_grad():
///     logits = model(x)
///     loss = loss_fn(logits, y).item()
///     correct = (logits.argmax(1) == y).sum().item()
/// ```
///
/// the same bits, ties (argmax's first index) and NaN logits (argmax's
/// first NaN) included.
#[test]
fn the_fast_evaluation_is_the_eval_mode_forward_loss_and_argmax() {
    use cross_entropy_tch::model::{LinearStack, Mlp};
    use cross_entropy_tch::CrossEntropyLoss;
    use tch::nn::ModuleT;
    let _rng = rng_lock();
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Mlp::new(&vs.root(), 6, &[8], 5, 0.3);
    let opts = (Kind::Float, Device::Cpu);
    let x = Tensor::randn([300, 6], opts);
    let y = Tensor::randint(5, [300], (Kind::Int64, Device::Cpu));
    let plain = CrossEntropyLoss::new();
    let smoothed =
        CrossEntropyLoss::new().weight(Tensor::rand([5], opts) + 0.5).label_smoothing(0.1);
    let step = ManualStep::new(&model).unwrap();
    let check = |loss_fn: &CrossEntropyLoss, what: &str| {
        let (loss, correct) = step.f_evaluate(&model, loss_fn, &x, &y).unwrap();
        let logits = tch::no_grad(|| model.forward_t(&x, false));
        let expected = loss_fn.forward(&logits, &y).double_value(&[]) as f32;
        let expected_correct =
            logits.argmax(1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
        assert!(
            loss.to_bits() == expected.to_bits() || (loss.is_nan() && expected.is_nan()),
            "{what}: loss {loss} against {expected}"
        );
        assert_eq!(correct, expected_correct, "{what}: correct rows");
        correct
    };
    check(&plain, "initial weights");
    check(&smoothed, "weights and smoothing");
    let layers = model.linears();
    let last = layers.last().unwrap();
    let (w, b) = (&last.ws, last.bs.as_ref().unwrap());
    tch::no_grad(|| {
        // Classes 1 and 3 tie on every row (argmax answers 1), and beat the rest.
        let row1 = w.get(1).copy();
        w.get(3).copy_(&row1);
        b.get(3).copy_(&b.get(1));
        let _ = b.get(1).g_add_scalar_(100.0);
        let _ = b.get(3).g_add_scalar_(100.0);
    });
    let ties = check(&plain, "ties");
    assert_eq!(ties, y.eq(1).sum(Kind::Int64).int64_value(&[]), "ties go to the first class");
    tch::no_grad(|| {
        let _ = b.get(4).fill_(f64::NAN);
        let _ = b.get(2).fill_(f64::NAN);
    });
    let nan = check(&plain, "NaN logits");
    assert_eq!(nan, y.eq(2).sum(Kind::Int64).int64_value(&[]), "the first NaN is the largest");
}

#[test]
fn bench_final_loss_equals_pytorchs() {
    let Some(python) = reference_python() else { return };
    for shape in [["10", "10", "3"], ["64", "32", "10"]] {
        let [n, d, c] = shape;
        let args = [
            "bench",
            "--json",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--steps",
            "200",
            "--warmup",
            "10",
            "--batch-size",
            n,
            "--features",
            d,
            "--classes",
            c,
        ];
        let torch = run_reference(&python, &args);
        let torch: Value = serde_json::from_slice(&torch.stdout).unwrap();
        for backward in ["autograd", "manual"] {
            let mut ours = args.to_vec();
            ours.extend(["--backward", backward]);
            let out = run_bin(&ours);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let rust: Value = serde_json::from_slice(&out.stdout).unwrap();
            let (a, b): (f32, f32) = (
                rust["final_loss"].to_string().parse().unwrap(),
                torch["final_loss"].to_string().parse().unwrap(),
            );
            assert_eq!(a.to_bits(), b.to_bits(), "{shape:?} {backward}: rust {a}, pytorch {b}");
            assert!(rust["us_per_step"].as_f64().unwrap() > 0.0);
        }
    }
}

/// `bench --amp`: the step under `torch.autocast("cpu", dtype)` (fp16 with
/// a default GradScaler) is PyTorch's `reference.py bench --amp` bit for
/// bit, with SGD and Adam; and differs from the f32 step, so that an amp
/// flag that did nothing would fail here.
#[test]
fn bench_with_amp_equals_pytorchs_autocast() {
    let Some(python) = reference_python() else { return };
    let loss = |v: &Value| -> f32 { v["final_loss"].to_string().parse().unwrap() };
    let base = "bench --json --device cpu --threads 1 --steps 100 --warmup 5 --batch-size 64 \
                --features 32 --classes 10";
    for optimizer in ["sgd", "adam"] {
        let f32_args: Vec<String> = format!("{base} --optimizer {optimizer}")
            .split_whitespace()
            .map(String::from)
            .collect();
        let f32_args: Vec<&str> = f32_args.iter().map(String::as_str).collect();
        let f32_run: Value = serde_json::from_slice(&run_bin(&f32_args).stdout).unwrap();
        for dtype in ["bf16", "fp16"] {
            let mut args = f32_args.clone();
            args.extend(["--amp", dtype]);
            let torch: Value =
                serde_json::from_slice(&run_reference(&python, &args).stdout).unwrap();
            let out = run_bin(&args);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let rust: Value = serde_json::from_slice(&out.stdout).unwrap();
            let what = format!("{optimizer} {dtype}");
            assert_eq!(rust["amp"], dtype, "{what}");
            assert_eq!(torch["amp"], dtype, "{what}");
            let (a, b) = (loss(&rust), loss(&torch));
            assert_eq!(a.to_bits(), b.to_bits(), "{what}: rust {a}, pytorch {b}");
            assert_ne!(a.to_bits(), loss(&f32_run).to_bits(), "{what}: the same as f32");
        }
    }
    // The manual backward is the f32 step: asked for with --amp, refused.
    let out = run_bin(&["bench", "--device", "cpu", "--amp", "bf16", "--backward", "manual"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: --amp bf16 steps through autograd; --backward manual is the f32 step"
    );
}
