//! A row-major matrix of cosines borrowed from a flat buffer.

use crate::error::{Error, Result};

/// Cosines of `n_rows` x `n_classes`, row-major in a borrowed slice.
///
/// This is the layout the reference and the engine contract exchange; engines with their
/// own array types (ndarray, dfdx) take those directly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineMatrix<'a, F = f64> {
    data: &'a [F],
    n_rows: usize,
    n_classes: usize,
}

impl<'a, F> CosineMatrix<'a, F> {
    /// Wraps `data` as `n_rows` rows of `n_classes` cosines.
    ///
    /// # Errors
    /// [`Error::BufferLength`] when `data.len() != n_rows * n_classes`.
    pub fn new(data: &'a [F], n_rows: usize, n_classes: usize) -> Result<Self> {
        match n_rows.checked_mul(n_classes) {
            Some(expected) if expected == data.len() => Ok(Self {
                data,
                n_rows,
                n_classes,
            }),
            expected => Err(Error::BufferLength {
                n_rows,
                n_classes,
                expected: expected.unwrap_or(usize::MAX),
                got: data.len(),
            }),
        }
    }

    /// The number of rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// The number of classes (columns).
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// `[n_rows, n_classes]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.n_rows, self.n_classes]
    }

    /// The flat row-major buffer.
    pub fn as_slice(&self) -> &'a [F] {
        self.data
    }

    /// Row `row`.
    ///
    /// # Panics
    /// When `row` is not below [`CosineMatrix::n_rows`].
    pub fn row(&self, row: usize) -> &'a [F] {
        &self.data[row * self.n_classes..(row + 1) * self.n_classes]
    }

    /// The rows in order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &'a [F]> + 'a {
        // `max(1)` keeps `chunks_exact` legal for an empty matrix with zero columns, whose
        // buffer is empty so the iterator is empty either way.
        self.data.chunks_exact(self.n_classes.max(1))
    }
}
