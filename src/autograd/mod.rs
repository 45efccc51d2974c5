//! A minimal reverse-mode autograd. Each differentiable op attaches a [`Node`] to its output: the
//! op's inputs and a closure mapping the output's gradient to theirs. [`backward`] orders the graph
//! behind a loss topologically and replays the closures in reverse, summing gradients that meet.
//! Under [`no_grad`] nothing is recorded and no tensors are kept alive for a backward pass.

pub mod gradcheck;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

pub use crate::tensor::{BackwardFn, Node};
use crate::tensor::{Tensor, TensorId};
use crate::{Error, Result};

thread_local! {
    static GRAD_OFF: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with recording off: ops build no nodes and save no tensors.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_OFF.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_OFF.with(|g| g.replace(true)));
    f()
}

/// Whether an op with these inputs must record a node: recording is on and one input tracks
/// gradients. Ops call this before saving anything for backward.
pub fn needs_grad(inputs: &[&Tensor]) -> bool {
    !GRAD_OFF.with(|g| g.get()) && inputs.iter().any(|t| t.tracks_grad())
}

/// Attaches a backward node to `out` when [`needs_grad`] holds for `inputs`; else returns `out`.
/// `backward` returns one entry per input, in order.
pub fn record(
    op: &'static str,
    out: Tensor,
    inputs: &[&Tensor],
    backward: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Tensor {
    if !needs_grad(inputs) {
        return out;
    }
    let inputs = inputs.iter().map(|t| (*t).clone()).collect();
    out.with_node(Node { op, inputs, backward: Box::new(backward) })
}

/// Gradients of the leaves (parameters) behind a loss, keyed by tensor identity.
#[derive(Default)]
pub struct Gradients(HashMap<TensorId, Tensor>);

impl Gradients {
    /// The gradient of `t`, if the loss depends on it.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.0.get(&t.id())
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The gradient of each of `params`, in order, zeros of its shape (on its device) where the
    /// loss does not depend on it: what an optimiser step takes.
    ///
    /// # Errors
    /// Those of allocating the zeros.
    pub fn ordered(&self, params: &[Tensor]) -> Result<Vec<Tensor>> {
        params
            .iter()
            .map(|p| match self.get(p) {
                Some(g) => Ok(g.clone()),
                None => Tensor::zeros(p.dims().to_vec(), p.device()),
            })
            .collect()
    }
}

/// Back-propagates from a one-element `loss` (seeded with 1).
///
/// # Errors
/// [`Error::Shape`] when `loss` has more than one element; any error of an op's backward.
pub fn backward(loss: &Tensor) -> Result<Gradients> {
    if loss.numel() != 1 {
        return Err(Error::shape("backward", "a one-element loss", loss.dims()));
    }
    let seed = crate::backend::full(loss.shape(), 1.0, loss.device())?;
    backward_with(loss, seed)
}

/// Back-propagates `grad_out` from `out`: the gradients of `sum(out * grad_out)`.
pub fn backward_with(out: &Tensor, grad_out: Tensor) -> Result<Gradients> {
    if grad_out.dims() != out.dims() {
        return Err(Error::shape("backward", out.dims(), grad_out.dims()));
    }
    let order = topological_order(out);
    let mut pending: HashMap<TensorId, Tensor> = HashMap::new();
    pending.insert(out.id(), grad_out);
    let mut leaves = Gradients::default();
    no_grad(|| -> Result<()> {
        for t in order.iter().rev() {
            let Some(g) = pending.remove(&t.id()) else { continue };
            let Some(node) = t.node() else {
                leaves.0.insert(t.id(), g);
                continue;
            };
            let grads = (node.backward)(&g)?;
            if grads.len() != node.inputs.len() {
                return Err(Error::arg(node.op, "backward returned the wrong number of grads"));
            }
            for (input, grad) in node.inputs.iter().zip(grads) {
                let Some(grad) = grad else { continue };
                if !input.tracks_grad() {
                    continue;
                }
                if grad.dims() != input.dims() {
                    return Err(Error::shape(node.op, input.dims(), grad.dims()));
                }
                accumulate(&mut pending, input.id(), grad)?;
            }
        }
        Ok(())
    })?;
    Ok(leaves)
}

fn accumulate(map: &mut HashMap<TensorId, Tensor>, id: TensorId, grad: Tensor) -> Result<()> {
    let summed = match map.remove(&id) {
        // The storage-level sum (no node: accumulation runs under no_grad), so the tape does not
        // call back up into `ops`.
        Some(prev) => crate::backend::add(&prev, &grad)?,
        None => grad,
    };
    map.insert(id, summed);
    Ok(())
}

/// Every tensor that `root` depends on through recorded nodes, inputs before outputs.
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative DFS: networks are deep enough that recursion could overflow the stack.
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(node) = t.node() {
            for input in &node.inputs {
                if input.tracks_grad() && !seen.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}
