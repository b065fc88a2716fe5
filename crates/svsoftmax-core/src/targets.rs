//! Targets: one class index per row, or an ignored row.

use crate::error::{Error, Result};
use crate::real::Real;

/// One target per row: a class index, or `None` for a row that is ignored.
///
/// An ignored row adds nothing to the loss nor to the mean's count, and its gradient is
/// zero. A batch whose rows are all ignored has loss 0 and a zero gradient under every
/// reduction.
///
/// ```
/// use svsoftmax_core::Targets;
///
/// let targets = Targets::from_signed(&[2, -100, 0], -100)?;
/// assert_eq!(targets.get(0), Some(2));
/// assert_eq!(targets.get(1), None);
/// assert_eq!(targets.n_active(), 2);
/// # Ok::<(), svsoftmax_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Targets {
    classes: Vec<Option<usize>>,
}

impl Targets {
    /// Targets with every row active.
    pub fn new(classes: &[usize]) -> Self {
        Self {
            classes: classes.iter().copied().map(Some).collect(),
        }
    }

    /// Targets where `None` marks an ignored row.
    pub fn with_ignored(classes: Vec<Option<usize>>) -> Self {
        Self { classes }
    }

    /// Targets from signed indices, PyTorch style: `ignore_index` (often -100) marks an
    /// ignored row.
    ///
    /// # Errors
    /// [`Error::NegativeTarget`] for a negative index other than `ignore_index`.
    pub fn from_signed(classes: &[i64], ignore_index: i64) -> Result<Self> {
        let classes = classes
            .iter()
            .enumerate()
            .map(|(row, &class)| match class {
                _ if class == ignore_index => Ok(None),
                _ => usize::try_from(class)
                    .map(Some)
                    .map_err(|_| Error::NegativeTarget {
                        row,
                        target: class,
                        ignore_index,
                    }),
            })
            .collect::<Result<_>>()?;
        Ok(Self { classes })
    }

    /// Targets from one-hot rows, row-major with `n_classes` columns.
    ///
    /// # Errors
    /// [`Error::OneHotLength`] when the buffer is not whole rows, [`Error::TooFewClasses`]
    /// below two columns, and [`Error::OneHot`] naming the first row that does not hold
    /// exactly one 1 with every other entry 0.
    pub fn from_one_hot<F: Real>(one_hot: &[F], n_classes: usize) -> Result<Self> {
        if n_classes < 2 {
            return Err(Error::TooFewClasses { n_classes });
        }
        if !one_hot.len().is_multiple_of(n_classes) {
            return Err(Error::OneHotLength {
                n_classes,
                got: one_hot.len(),
            });
        }
        let classes = one_hot
            .chunks_exact(n_classes)
            .enumerate()
            .map(|(row, values)| one_hot_class(row, values).map(Some))
            .collect::<Result<_>>()?;
        Ok(Self { classes })
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// The target of `row`, or `None` if the row is ignored.
    ///
    /// # Panics
    /// When `row` is not below [`Targets::len`].
    pub fn get(&self, row: usize) -> Option<usize> {
        self.classes[row]
    }

    /// The targets, row by row.
    pub fn as_slice(&self) -> &[Option<usize>] {
        &self.classes
    }

    /// The number of rows that are not ignored.
    pub fn n_active(&self) -> usize {
        self.classes.iter().filter(|class| class.is_some()).count()
    }

    /// Checks the targets against cosines of `n_rows` x `n_classes`.
    ///
    /// # Errors
    /// [`Error::TooFewClasses`], [`Error::TargetsLength`] or [`Error::TargetOutOfRange`].
    pub fn check(&self, n_rows: usize, n_classes: usize) -> Result<()> {
        if n_classes < 2 {
            return Err(Error::TooFewClasses { n_classes });
        }
        if self.len() != n_rows {
            return Err(Error::TargetsLength {
                n_rows,
                n_targets: self.len(),
            });
        }
        let out_of_range = self.classes.iter().enumerate().find_map(|(row, class)| {
            class
                .filter(|&class| class >= n_classes)
                .map(|class| (row, class))
        });
        match out_of_range {
            Some((row, class)) => Err(Error::TargetOutOfRange {
                row,
                target: class as u64,
                n_classes,
            }),
            None => Ok(()),
        }
    }
}

fn one_hot_class<F: Real>(row: usize, values: &[F]) -> Result<usize> {
    let ones: Vec<usize> = (0..values.len())
        .filter(|&k| values[k] == F::one())
        .collect();
    let stray = values.iter().position(|&v| v != F::one() && v != F::zero());
    match (ones.as_slice(), stray) {
        (_, Some(col)) => Err(Error::OneHot {
            row,
            found: format!("got {} at column {col}", values[col]),
        }),
        ([class], None) => Ok(*class),
        ([], None) => Err(Error::OneHot {
            row,
            found: "got no 1".to_owned(),
        }),
        (many, None) => Err(Error::OneHot {
            row,
            found: format!("got {} ones", many.len()),
        }),
    }
}
