//! Our log_softmax kernels (`csrc/log_softmax.cpp`) against ATen's, bit for
//! bit, and against an f64 oracle:
//!
//! ```python
//! out = torch.log_softmax(x, 1)
//! grad_in = torch._log_softmax_backward_data(grad, out, 1, torch.float32)
//! ```

mod common;

use common::*;
use cross_entropy_tch::log_softmax::{log_softmax, log_softmax_backward, rows_kernel_applies};
use tch::{Kind, Tensor};

/// Where ATen runs its AVX512 kernels, ours must run (else these tests
/// would compare ATen with itself): ATen's own choice, from
/// `ATEN_CPU_CAPABILITY` (compared as ATen compares it) or else the CPU's
/// AVX512 VL, BW, DQ and FMA.
fn ours_expected() -> bool {
    #[cfg(target_arch = "x86_64")]
    let avx512 = std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let avx512 = false;
    match std::env::var("ATEN_CPU_CAPABILITY").as_deref() {
        Ok("avx512") => true,
        Ok("avx2") | Ok("default") => false,
        _ => avx512, // unset, or a value ATen ignores
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    Vec::<f32>::try_from(t.contiguous().view([-1])).unwrap().iter().map(|v| v.to_bits()).collect()
}

/// Every element's bits equal, except that a NaN need only meet a NaN:
/// which of two NaN operands x86 returns depends on the operand order the
/// compiler picks (and a debug build's `fma` may flip a NaN's sign), and a
/// NaN stays a NaN whatever its payload.
#[track_caller]
fn assert_same_bits(ours: &Tensor, aten: &Tensor, what: &str) {
    assert_eq!(ours.size(), aten.size(), "{what}: shapes");
    let (a, b) = (bits(ours), bits(aten));
    let same =
        |x: u32, y: u32| x == y || (f32::from_bits(x).is_nan() && f32::from_bits(y).is_nan());
    if let Some(i) = (0..a.len()).find(|&i| !same(a[i], b[i])) {
        panic!(
            "{what}: element {i} is {} ({:#010x}), ATen's {} ({:#010x})",
            f32::from_bits(a[i]),
            a[i],
            f32::from_bits(b[i]),
            b[i]
        );
    }
}

/// Rows of logits: ordinary ones, large and tiny scales, ties, signed
/// zeros, infinities and NaNs.
fn logits(rng: &mut Rng, rows: usize, c: usize) -> Vec<Vec<f32>> {
    (0..rows)
        .map(|i| {
            (0..c)
                .map(|j| match (i % 13, j % 3) {
                    (0, _) => rng.uniform(-3.0e38, 3.0e38),
                    (1, _) => rng.uniform(-1e-40, 1e-40), // subnormals
                    (2, _) => 1.5,                        // a row of ties
                    (3, 0) => -0.0,
                    (3, _) => 0.0,
                    (4, 1) => f32::INFINITY,
                    (5, 2) => f32::NEG_INFINITY,
                    (6, 0) => f32::NAN,
                    (8, 1) => -f32::NAN,                  // after a finite value
                    (7, _) => rng.uniform(-200.0, 200.0), // exp underflows
                    _ => rng.uniform(-8.0, 8.0),
                })
                .collect()
        })
        .collect()
}

#[test]
fn log_softmax_and_its_backward_are_atens_bit_for_bit() {
    let mut rng = Rng(7);
    // Up to 15 classes our kernels run; from 16 ATen's do. 0, 1 and 600
    // rows: empty, one, and more than one block of 256.
    for c in [1, 2, 3, 7, 10, 15, 16, 17, 40] {
        for rows in [0, 1, 5, 255, 256, 600] {
            let x = matrix_tensor(&logits(&mut rng, rows, c));
            let what = format!("{rows} x {c}");
            let expected = ours_expected() && c < 16 && rows > 0;
            if rows > 0 {
                assert_eq!(rows_kernel_applies(&x), expected, "{what}: which kernel runs");
            }
            let out = log_softmax(&x).unwrap();
            assert_same_bits(&out, &x.log_softmax(1, Kind::Float), &format!("{what} forward"));

            let mut grad = rng.matrix(rows, c, -2.0, 2.0);
            for (i, row) in grad.iter_mut().enumerate() {
                match i % 17 {
                    9 => row[0] = f32::INFINITY,
                    10 => row[c - 1] = f32::NAN,
                    _ => {}
                }
            }
            let grad = matrix_tensor(&grad);
            let aten_out = x.log_softmax(1, Kind::Float);
            let aten = Tensor::internal_log_softmax_backward_data(&grad, &aten_out, 1, Kind::Float);
            assert_same_bits(
                &log_softmax_backward(&grad, &aten_out).unwrap(),
                &aten,
                &format!("{what} backward"),
            );
        }
    }
}

#[test]
fn what_our_kernels_do_not_cover_goes_to_aten() {
    let mut rng = Rng(11);
    let x = matrix_tensor(&rng.matrix(9, 5, -4.0, 4.0));
    // Not contiguous, f64, one dimension: ATen's kernels, the same answer.
    let xt = matrix_tensor(&rng.matrix(5, 9, -4.0, 4.0)).tr();
    let x64 = x.to_kind(Kind::Double);
    for (t, what) in [(&xt, "transposed"), (&x64, "f64")] {
        assert!(!rows_kernel_applies(t), "{what}");
        assert_same_bits(
            &log_softmax(t).unwrap().to_kind(Kind::Float),
            &t.log_softmax(1, t.kind()).to_kind(Kind::Float),
            what,
        );
    }
    let one_d = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    assert!(!rows_kernel_applies(&one_d));
    // A gradient of another shape is an error, not a crash.
    let out = x.log_softmax(1, Kind::Float);
    let err = log_softmax_backward(&Tensor::zeros([3, 3], (Kind::Float, tch::Device::Cpu)), &out);
    assert!(err.is_err(), "a 3 x 3 gradient for a 9 x 5 output");
}

/// Against f64: log_softmax to within 4 f32 ulps of its magnitude plus one
/// ulp of the row's log-sum-exp (the two f32 subtractions and SLEEF's
/// 1-ulp exp and log), and the backward `g - softmax(x) * sum(g)` to within
/// 1e-6 of the row's gradient scale.
#[test]
fn log_softmax_and_its_backward_match_f64() {
    let mut rng = Rng(3);
    for c in [2, 3, 10, 15] {
        let rows = rng.matrix(300, c, -10.0, 10.0);
        let grad = rng.matrix(300, c, -1.0, 1.0);
        let x = matrix_tensor(&rows);
        let out = log_softmax(&x).unwrap();
        let back = log_softmax_backward(&matrix_tensor(&grad), &out).unwrap();
        let (out, back) = (
            Vec::<f32>::try_from(out.view([-1])).unwrap(),
            Vec::<f32>::try_from(back.view([-1])).unwrap(),
        );
        for (i, (row, g)) in to_f64(&rows).iter().zip(to_f64(&grad)).enumerate() {
            let p = softmax_row(row);
            let sum_g: f64 = g.iter().sum();
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            for j in 0..c {
                let expected = row[j] - lse;
                let ulp = f32::EPSILON as f64;
                let tol = 4.0 * ulp * expected.abs() + 2.0 * ulp * lse.abs().max(1.0);
                let got = out[i * c + j] as f64;
                assert!(
                    (got - expected).abs() <= tol,
                    "log_softmax [{i}, {j}]: {got} against {expected}"
                );
                let expected = g[j] - p[j] * sum_g;
                let got = back[i * c + j] as f64;
                let tol = 1e-6 * (1.0 + sum_g.abs());
                assert!(
                    (got - expected).abs() <= tol,
                    "backward [{i}, {j}]: {got} against {expected}"
                );
            }
        }
    }
}
