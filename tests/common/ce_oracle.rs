//! `nn.CrossEntropyLoss`, every option, in f64, written from the formulas
//! (see the rustdoc of `CrossEntropyLoss`), independent of libtorch.
//!
//! Each element (n, s) of the input (class dim 1, or 0 when unbatched) gets a
//! coefficient vector `a` with `l = Σ_c a_c·(−log p_c)`, `p = softmax(x)`:
//! - class index y, not ignored: `a_c = (1 − ε)·w_y·[c = y] + ε/C·w_c`;
//! - ignored: `a = 0`;
//! - probabilities q: `a_c = w_c·((1 − ε)·q_c + ε/C)`.
//!
//! Then `dl/dx_j = (Σ_c a_c)·p_j − a_j`. `Mean` divides by `Σ w_y` over the
//! non-ignored elements (index targets) or by the element count
//! (probability targets). When that sum is 0, PyTorch's loss is NaN and so is
//! the gradient of every element that is not ignored (its backward divides
//! `w_y` by the total weight, 0/0), while an ignored element's gradient stays
//! 0 (checked against torch 2.13 for all-ignored and zero-weight batches,
//! with and without smoothing).

#![allow(dead_code)]

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Red {
    None,
    Mean,
    Sum,
}

#[derive(Debug, Clone)]
pub enum Target {
    Index(Vec<i64>),
    Prob(Vec<f64>),
}

#[derive(Debug, Clone)]
pub struct Opts {
    pub weight: Option<Vec<f64>>,
    pub ignore_index: i64,
    pub reduction: Red,
    pub eps: f64,
}

impl Default for Opts {
    fn default() -> Self {
        Opts { weight: None, ignore_index: -100, reduction: Red::Mean, eps: 0.0 }
    }
}

/// The loss (one value, or one per element for `Red::None`) and the gradient
/// of the sum of those values with respect to the input (same layout).
pub fn oracle(input: &[f64], shape: &[usize], target: &Target, o: &Opts) -> (Vec<f64>, Vec<f64>) {
    let (n, c, s) = match shape.len() {
        1 => (1, shape[0], 1),
        _ => (shape[0], shape[1], shape[2..].iter().product()),
    };
    let w = |k: usize| o.weight.as_ref().map_or(1.0, |w| w[k]);
    let at = |ni: usize, k: usize, si: usize| ni * c * s + k * s + si;
    let mut losses = Vec::with_capacity(n * s);
    let mut grad = vec![0.0; input.len()];
    let mut denom = 0.0;
    let mut ignored = vec![false; n * s];
    for ni in 0..n {
        for si in 0..s {
            let x: Vec<f64> = (0..c).map(|k| input[at(ni, k, si)]).collect();
            let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            let neg_logp: Vec<f64> = x.iter().map(|v| lse - (v - m)).collect();
            let p: Vec<f64> = neg_logp.iter().map(|v| (-v).exp()).collect();
            let a: Vec<f64> = match target {
                Target::Index(t) => {
                    let y = t[ni * s + si];
                    if y == o.ignore_index {
                        ignored[ni * s + si] = true;
                        vec![0.0; c]
                    } else {
                        let y = y as usize;
                        denom += w(y);
                        (0..c)
                            .map(|k| {
                                let hard = if k == y { (1.0 - o.eps) * w(y) } else { 0.0 };
                                hard + o.eps / c as f64 * w(k)
                            })
                            .collect()
                    }
                }
                Target::Prob(q) => {
                    denom += 1.0;
                    (0..c)
                        .map(|k| w(k) * ((1.0 - o.eps) * q[at(ni, k, si)] + o.eps / c as f64))
                        .collect()
                }
            };
            losses.push(a.iter().zip(&neg_logp).map(|(a, l)| a * l).sum::<f64>());
            let sum_a: f64 = a.iter().sum();
            for k in 0..c {
                grad[at(ni, k, si)] = sum_a * p[k] - a[k];
            }
        }
    }
    match o.reduction {
        Red::None => (losses, grad),
        Red::Sum => (vec![losses.iter().sum()], grad),
        Red::Mean => {
            // A zero denominator (all ignored, zero total weight, empty
            // batch) gives NaN, as in PyTorch, even where smoothing makes the
            // numerator non-zero: PyTorch adds (1 − ε)·(0/0) = NaN to it.
            if denom == 0.0 {
                let grad = (0..input.len())
                    .map(|i| if ignored[(i / (c * s)) * s + i % s] { 0.0 } else { f64::NAN })
                    .collect();
                return (vec![f64::NAN], grad);
            }
            (vec![losses.iter().sum::<f64>() / denom], grad.iter().map(|g| g / denom).collect())
        }
    }
}
