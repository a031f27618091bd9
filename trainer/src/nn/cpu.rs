//! Direct access to tensors on the CPU backend (burn-flex), for the hand-written kernels of the
//! layers where burn's generic ops cost most (`docs/engine.md`, "Kernels of our own").
//!
//! A kernel runs only when its inputs live on the CPU backend *without* autodiff: there a
//! tensor is a reference-counted buffer, read here without a copy, and a result is wrapped
//! without one. Anywhere else (a GPU backend, or an autodiff device where burn must see every
//! op) [`CpuValues::of`] answers `None` and the layer uses burn's ops, so both routes compute
//! the same thing and the tests compare them.

use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::{Flex, FlexTensor};

/// Below this many elements a kernel runs on one thread: waking rayon's workers costs more than
/// the loop (measured in `docs/engine.md`).
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// A float tensor's f32 values in row-major order, borrowed from the CPU backend.
pub struct CpuValues {
    tensor: FlexTensor,
    offset: usize,
    len: usize,
}

impl CpuValues {
    /// The values of `t`, when it is a non-empty contiguous f32 tensor on the CPU backend
    /// without autodiff; `None` otherwise (empty tensors too: the kernels cut their inputs into
    /// planes, and burn handles the degenerate shapes).
    pub fn of<const D: usize>(t: &Tensor<D>) -> Option<Self> {
        let tensor = t.clone().try_into_primitive::<Flex>().ok()?;
        let offset = tensor.layout().start_offset();
        let len = tensor.layout().num_elements();
        if tensor.dtype() != DType::F32 || !tensor.is_contiguous() || len == 0 {
            return None;
        }
        Some(Self {
            tensor,
            offset,
            len,
        })
    }

    pub fn values(&self) -> &[f32] {
        &self.tensor.storage::<f32>()[self.offset..self.offset + self.len]
    }
}

/// The values of all of `tensors`, or `None` if any of them is not on the CPU backend.
pub fn all_of<const D: usize, const N: usize>(tensors: [&Tensor<D>; N]) -> Option<[CpuValues; N]> {
    let mut views = Vec::with_capacity(N);
    for t in tensors {
        views.push(CpuValues::of(t)?);
    }
    views.try_into().ok()
}

/// A CPU-backend tensor of `shape` holding `values` (no copy).
pub fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    debug_assert_eq!(values.len(), shape.iter().product::<usize>());
    Tensor::from_primitive::<Flex>(FlexTensor::from_data(TensorData::new(values, shape)))
}

/// Runs `kernel` on each `chunk`-long piece of `out` with its index, on rayon's pool when `out`
/// is large enough to pay for it.
pub fn for_each_chunk<T: Send>(
    out: &mut [T],
    chunk: usize,
    kernel: impl Fn(usize, &mut [T]) + Send + Sync,
) {
    use rayon::prelude::*;
    if out.len() < PARALLEL_MIN_ELEMENTS {
        out.chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, piece)| kernel(i, piece));
    } else {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, piece)| kernel(i, piece));
    }
}

/// [`for_each_chunk`] over two outputs cut into the same number of pieces (`a_chunk` and
/// `b_chunk` long), as one kernel writes both.
pub fn for_each_chunk_pair<A: Send, B: Send>(
    (a, a_chunk): (&mut [A], usize),
    (b, b_chunk): (&mut [B], usize),
    kernel: impl Fn(usize, &mut [A], &mut [B]) + Send + Sync,
) {
    use rayon::prelude::*;
    if a.len() < PARALLEL_MIN_ELEMENTS {
        a.chunks_mut(a_chunk)
            .zip(b.chunks_mut(b_chunk))
            .enumerate()
            .for_each(|(i, (a, b))| kernel(i, a, b));
    } else {
        a.par_chunks_mut(a_chunk)
            .zip(b.par_chunks_mut(b_chunk))
            .enumerate()
            .for_each(|(i, (a, b))| kernel(i, a, b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_on_the_cpu_backend_only() {
        let device = burn::tensor::Device::flex();
        let t = Tensor::<2>::from_data([[1.0f32, 2.0], [3.0, 4.0]], &device);
        assert_eq!(
            CpuValues::of(&t).expect("cpu").values(),
            &[1.0, 2.0, 3.0, 4.0]
        );
        // A transposed view is not row-major: no kernel may read it as such.
        assert!(CpuValues::of(&t.clone().transpose()).is_none());
        // Autodiff must see every op, so its tensors go to burn.
        let tracked = Tensor::<2>::from_data([[1.0f32, 2.0]], &device.autodiff());
        assert!(CpuValues::of(&tracked).is_none());
        // A slice starting inside the buffer is read from its start.
        let tail = t.slice([1..2, 0..2]);
        if let Some(view) = CpuValues::of(&tail) {
            assert_eq!(view.values(), &[3.0, 4.0]);
        }
    }

    #[test]
    fn results_wrap_without_changing_values() {
        let t = tensor(vec![1.0, 2.0, 3.0], [3]);
        assert_eq!(
            t.to_data().try_to_vec::<f32>().expect("f32"),
            vec![1.0, 2.0, 3.0]
        );
    }
}
