//! The one error type of the workspace: every rejected input names what was expected and
//! what was given.

/// Why a configuration or an input was rejected.
///
/// Every variant carries the data a caller needs to find the offending value: which
/// argument, what was expected and what was given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A hyperparameter is outside its domain.
    #[error("invalid {name}: expected {expected}, got {got:?}")]
    Hyperparameter {
        /// The hyperparameter, as the builder names it (`scale`, `t`, `margin m`, ...).
        name: &'static str,
        /// The domain it must lie in.
        expected: &'static str,
        /// The value that was given.
        got: f64,
    },

    /// The loss needs at least two classes: with one, every row is trivially right.
    #[error("too few classes: expected at least 2, got {n_classes}")]
    TooFewClasses {
        /// The number of columns given.
        n_classes: usize,
    },

    /// A flat buffer does not hold `n_rows * n_classes` values.
    #[error(
        "cosines buffer length mismatch: expected {n_rows} x {n_classes} = {expected} values, \
         got {got}"
    )]
    BufferLength {
        /// The number of rows declared.
        n_rows: usize,
        /// The number of classes declared.
        n_classes: usize,
        /// `n_rows * n_classes`.
        expected: usize,
        /// The buffer's length.
        got: usize,
    },

    /// The targets do not have one entry per row of cosines.
    #[error("targets length mismatch: expected one target per row ({n_rows}), got {n_targets}")]
    TargetsLength {
        /// The number of rows of cosines.
        n_rows: usize,
        /// The number of targets.
        n_targets: usize,
    },

    /// A target class index is not a column of the cosines.
    #[error(
        "target out of range at row {row}: expected a class index below {n_classes}, got {target}"
    )]
    TargetOutOfRange {
        /// The row whose target is wrong.
        row: usize,
        /// The target that was given.
        target: u64,
        /// The number of classes.
        n_classes: usize,
    },

    /// A signed target is negative and is not the ignore index.
    #[error(
        "negative target at row {row}: expected a class index >= 0 or the ignore index \
         {ignore_index}, got {target}"
    )]
    NegativeTarget {
        /// The row whose target is wrong.
        row: usize,
        /// The target that was given.
        target: i64,
        /// The index that marks an ignored row.
        ignore_index: i64,
    },

    /// A one-hot buffer does not hold whole rows.
    #[error("one-hot buffer length mismatch: expected a multiple of {n_classes}, got {got}")]
    OneHotLength {
        /// The number of classes declared.
        n_classes: usize,
        /// The buffer's length.
        got: usize,
    },

    /// A row of a one-hot matrix is not a one-hot vector.
    #[error("invalid one-hot row {row}: expected exactly one 1 and every other entry 0, {found}")]
    OneHot {
        /// The offending row.
        row: usize,
        /// What the row holds instead.
        found: String,
    },

    /// A cosine is NaN or infinite.
    #[error("non-finite cosine at row {row}, column {col}: expected a finite value, got {value}")]
    NonFiniteCosine {
        /// Row of the value.
        row: usize,
        /// Column of the value.
        col: usize,
        /// The value, widened to `f64`.
        value: f64,
    },

    /// A cosine lies outside `[-1, 1]` by more than rounding, for a margin that takes its
    /// arccos.
    #[error(
        "cosine out of range at row {row}, column {col}: the {margin} margin takes an arccos, \
         so expected a value in [-1, 1] (up to {tolerance:e} of rounding), got {value}"
    )]
    CosineOutOfRange {
        /// Row of the value.
        row: usize,
        /// Column of the value.
        col: usize,
        /// The value, widened to `f64`.
        value: f64,
        /// The margin kind that needs the arccos.
        margin: &'static str,
        /// How far past ±1 a value may lie and still be clamped.
        tolerance: f64,
    },

    /// A finite input produced a logit that does not fit the float type.
    #[error(
        "logit overflow at row {row}, column {col}: expected a finite logit in {dtype}, got one \
         from cosine {cosine:e} with scale {scale:e} and t {t:e}"
    )]
    LogitOverflow {
        /// Row of the value.
        row: usize,
        /// Column of the value.
        col: usize,
        /// The cosine that overflowed, widened to `f64`.
        cosine: f64,
        /// The configured scale.
        scale: f64,
        /// The configured `t`.
        t: f64,
        /// The float type the engine computed in.
        dtype: &'static str,
    },

    /// A loss or gradient is not finite although every input and logit was: the scale,
    /// `t`, the margin or the upstream gradient is too large for these cosines.
    #[error(
        "overflow{}: expected a finite {quantity} in {dtype}, got {value}; the scale, t, margin \
         or upstream gradient is too large for these inputs",
        at_row(*.row)
    )]
    Overflow {
        /// The row, or `None` for the reduced loss.
        row: Option<usize>,
        /// What overflowed: `row loss`, `gradient` or `reduced loss`.
        quantity: &'static str,
        /// The value.
        value: f64,
        /// The float type the engine computed in.
        dtype: &'static str,
    },

    /// A finite f64 input does not fit the engine's float type.
    #[error(
        "cosine at row {row}, column {col} does not fit {dtype}: expected a magnitude the type \
         can hold, got {value:e}"
    )]
    Unrepresentable {
        /// Row of the value.
        row: usize,
        /// Column of the value.
        col: usize,
        /// The value as given.
        value: f64,
        /// The float type of the engine.
        dtype: &'static str,
    },

    /// A gradient buffer does not have the shape of the cosines.
    #[error(
        "gradient buffer shape mismatch: expected the shape of the cosines {expected:?}, \
         got {got:?}"
    )]
    GradShape {
        /// `[n_rows, n_classes]` of the cosines.
        expected: [usize; 2],
        /// The buffer's shape.
        got: [usize; 2],
    },

    /// The upstream gradient has the wrong length.
    #[error("upstream gradient length mismatch: expected one value per row ({n_rows}), got {got}")]
    UpstreamLength {
        /// The number of rows.
        n_rows: usize,
        /// The number of upstream values.
        got: usize,
    },

    /// A per-row upstream gradient was given for a reduced loss.
    #[error(
        "per-row upstream gradient: expected reduction none to take one value per row, got \
         reduction {reduction}"
    )]
    UpstreamForReduction {
        /// The configured reduction.
        reduction: &'static str,
    },

    /// A tensor device (an engine's backend, such as a GPU) failed an operation, for
    /// example an allocation.
    #[error("device failure in {operation}: expected it to complete, got {message}")]
    Device {
        /// What the engine was doing.
        operation: &'static str,
        /// The device's own report.
        message: String,
    },

    /// An engine was asked for an implementation its device does not have.
    #[error(
        "unsupported implementation: expected one of {available} on {device}, got {requested}"
    )]
    Unsupported {
        /// The implementation asked for.
        requested: &'static str,
        /// The device it was asked on.
        device: &'static str,
        /// What the device offers.
        available: &'static str,
    },

    /// An upstream gradient value is NaN or infinite.
    #[error("non-finite upstream gradient{}: expected a finite value, got {value}", at_row(*.row))]
    NonFiniteUpstream {
        /// The row, or `None` for a scalar upstream gradient.
        row: Option<usize>,
        /// The value.
        value: f64,
    },

    /// The column ranges of the shards do not tile the classes: each rank's range must
    /// start where the previous rank's ends (rank 0's at 0) and must not run backwards.
    #[error(
        "column shards do not tile the classes at rank {rank}: expected a range starting at \
         {expected_start}, got {start}..{end}"
    )]
    ShardColumns {
        /// The rank whose range is wrong.
        rank: usize,
        /// Where its range must start: the end of the previous rank's range.
        expected_start: usize,
        /// The start it gave.
        start: usize,
        /// The end it gave.
        end: usize,
    },

    /// A rank's cosines do not have one column per class of its range.
    #[error(
        "shard width mismatch at rank {rank}: expected {} columns for classes {start}..{end}, \
         got {got}",
        .end - .start
    )]
    ShardWidth {
        /// The rank whose cosines are wrong.
        rank: usize,
        /// The start of its range.
        start: usize,
        /// The end of its range.
        end: usize,
        /// The number of columns its cosines have.
        got: usize,
    },

    /// An input that every rank must pass alike differs between ranks.
    #[error(
        "inputs differ across ranks: expected rank {rank} to pass rank 0's {what}, got others"
    )]
    ShardMismatch {
        /// The first rank whose input differs from rank 0's.
        rank: usize,
        /// Which input: `configuration`, `targets`, `upstream gradient`, `element type` or
        /// `call` (forward or forward and backward).
        what: &'static str,
    },
}

impl Error {
    /// The error of an engine that rounded the f64 `cosines` to `dtype` before computing:
    /// a finite input that rounding made infinite is the input's fault, not a non-finite
    /// cosine, so it becomes [`Error::Unrepresentable`] with the value as given. Other
    /// errors are unchanged.
    pub fn after_narrowing(self, cosines: crate::CosineMatrix<'_>, dtype: &'static str) -> Self {
        match self {
            Self::NonFiniteCosine { row, col, .. } if cosines.row(row)[col].is_finite() => {
                Self::Unrepresentable {
                    row,
                    col,
                    value: cosines.row(row)[col],
                    dtype,
                }
            }
            other => other,
        }
    }
}

fn at_row(row: Option<usize>) -> String {
    row.map(|row| format!(" at row {row}")).unwrap_or_default()
}

/// The result type of this workspace.
pub type Result<T, E = Error> = std::result::Result<T, E>;
