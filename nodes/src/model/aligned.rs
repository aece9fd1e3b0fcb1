//! Heap buffers whose first element sits on a cache-line (64-byte) boundary, for the operands the packed kernels
//! read in whole lines: the weight panels (`zmm` loads of 64 bytes, AMX tile rows of 64 bytes), AMX's packed
//! activations, and attention's per-head buffers.
//!
//! Why not `Vec`: a `Vec<f32>` is only 4-byte aligned, and glibc hands out large allocations 16 bytes into a
//! page, so every 64-byte load from such a buffer straddles two lines. On the development Xeon (2026-12-03,
//! docs/benchmarks.md) a 1 KB `tileloadd` took 15.4-15.7 ns from such an address and 2.2-2.5 ns from an aligned
//! one (`amx::loads`), which made the bf16 DiT-B forward 7-19 % faster; the f32 tile ran 4-10 % faster on aligned
//! panels in a probe, the f32 forward 0-7 %.

use std::ops::{Deref, DerefMut};

/// Line size the buffers are aligned to.
const LINE: usize = 64;

/// `len` values of `T`, the first at a 64-byte boundary (a `Vec` over-allocated by a line, viewed from its first
/// aligned element; never reallocated, so the view stays aligned).
pub struct Aligned<T> {
    buf: Vec<T>,
    off: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    /// `len` default (zero) values.
    pub fn zeroed(len: usize) -> Self {
        let size = std::mem::size_of::<T>().max(1);
        let spare = LINE.div_ceil(size);
        let buf = vec![T::default(); len + spare];
        let misaligned = buf.as_ptr() as usize % LINE;
        // Elements to skip to reach the next line; `T`'s size divides 64 for the types used here (1, 2, 4 bytes),
        // otherwise the view starts unaligned but correct.
        let off = if misaligned == 0 || !(LINE - misaligned).is_multiple_of(size) {
            0
        } else {
            (LINE - misaligned) / size
        };
        Aligned { buf, off, len }
    }
}

impl<T> Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl<T> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

impl<T> std::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Aligned({} values)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_start_on_a_line_and_hold_len_zeros() {
        for len in [0usize, 1, 15, 16, 1000, 1 << 20] {
            let a = Aligned::<f32>::zeroed(len);
            assert_eq!(a.len(), len);
            assert!(a.iter().all(|&v| v == 0.0));
            if len > 0 {
                assert_eq!(a.as_ptr() as usize % LINE, 0, "f32 x {len}");
            }
            let b = Aligned::<u16>::zeroed(len);
            assert_eq!(b.len(), len);
            if len > 0 {
                assert_eq!(b.as_ptr() as usize % LINE, 0, "u16 x {len}");
            }
        }
        let mut c = Aligned::<u32>::zeroed(10);
        c[9] = 7;
        assert_eq!(c[9], 7);
    }
}
