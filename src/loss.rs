//! The loss of the seed: `loss_fn = nn.CrossEntropyLoss()`.

use tch::Tensor;

/// `nn.CrossEntropyLoss()(outputs, targets)` for `(N, C)` logits and Int64
/// class-index `targets` of shape `(N,)`: the mean over the batch of
/// `-log softmax(outputs)[i, targets[i]]`.
///
/// tch's `cross_entropy_for_logits` is `log_softmax` over the last dim
/// followed by `nll_loss` with mean reduction: for `(N, C)` logits the very
/// ops, in the same order, that PyTorch's `F.cross_entropy` runs, so the
/// value and its gradient are bit-for-bit PyTorch's. It differs from
/// PyTorch for other shapes: PyTorch's class dim is dim 1, not the last one.
pub fn cross_entropy(outputs: &Tensor, targets: &Tensor) -> Tensor {
    outputs.cross_entropy_for_logits(targets)
}
