//! What crosses between the ranks: the header every rank shares before the math, the row
//! partials and their reduction operator, and the collectives a step uses, behind a trait
//! so that the protocol also runs over an in-process stand-in in the unit tests.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::os::raw::{c_int, c_void};

use mpi::collective::{SystemOperation, UnsafeUserOperation};
use mpi::ffi::MPI_Datatype;
use mpi::traits::{Communicator, CommunicatorCollectives, Equivalence, Root};
use svsoftmax_core::shard::RowPartial;
use svsoftmax_core::{SvSoftmax, Targets, Upstream};

/// One row's partial on the wire: [`RowPartial`] in f64s, and the row's first rejected
/// input as a key (`+∞` for none) so that the error travels with the math.
#[derive(Debug, Clone, Copy, PartialEq, Equivalence)]
#[repr(C)]
pub(crate) struct WirePartial {
    /// The reference point of `sum`: the shard's maximum logit, or a bound above it.
    pub max: f64,
    /// `Σ exp(z_k - max)`.
    pub sum: f64,
    /// Support vectors, as an f64 (exact below 2^53).
    pub support_vectors: f64,
    /// `phase · n_classes + col` of the row's first rejected input: phase 0 for a
    /// rejected cosine, 1 for an overflowing target logit, so that the smallest key is the
    /// error the single-process engines report for the row (every cosine is checked
    /// before any logit).
    pub first_error: f64,
}

impl WirePartial {
    pub const EMPTY: Self = Self {
        max: f64::NEG_INFINITY,
        sum: 0.0,
        support_vectors: 0.0,
        first_error: f64::INFINITY,
    };

    pub fn row_partial(&self) -> RowPartial {
        RowPartial {
            max: self.max,
            sum: self.sum,
            support_vectors: self.support_vectors as usize,
        }
    }

    /// The core's associative merge, and the smaller error key.
    pub fn merge(self, other: Self) -> Self {
        let merged = self.row_partial().merge(other.row_partial());
        Self {
            max: merged.max,
            sum: merged.sum,
            support_vectors: merged.support_vectors as f64,
            first_error: self.first_error.min(other.first_error),
        }
    }
}

/// The reduction operator over [`WirePartial`]s, in the C signature MPI calls.
///
/// # Safety
/// MPI calls it only from the reduction in [`Transport::all_merge`] below, whose buffers
/// hold `len` [`WirePartial`]s each and whose datatype is theirs; `invec` and `inoutvec`
/// are distinct buffers.
unsafe extern "C" fn merge_partials(
    invec: *mut c_void,
    inoutvec: *mut c_void,
    len: *mut c_int,
    _datatype: *mut MPI_Datatype,
) {
    let len = usize::try_from(*len).unwrap_or(0);
    let incoming = std::slice::from_raw_parts(invec.cast::<WirePartial>(), len);
    let accumulated = std::slice::from_raw_parts_mut(inoutvec.cast::<WirePartial>(), len);
    for (into, &from) in accumulated.iter_mut().zip(incoming) {
        *into = into.merge(from);
    }
}

/// The collectives of one step. Every rank calls them in the same order with buffers of
/// the same length; that the lengths agree is what the header exchange establishes.
pub(crate) trait Transport {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Every rank's `mine`, in rank order, into `all`.
    fn all_gather(&self, mine: &[u64], all: &mut [u64]);
    /// The element-wise maximum of every rank's `mine`.
    fn all_max(&self, mine: &[f64], all: &mut [f64]);
    /// The element-wise [`WirePartial::merge`] of every rank's `mine`.
    fn all_merge(&self, mine: &[WirePartial], all: &mut [WirePartial]);
    /// `root`'s `value` on every rank.
    fn broadcast(&self, root: usize, value: &mut f64);
}

impl<C: Communicator> Transport for C {
    fn rank(&self) -> usize {
        usize::try_from(Communicator::rank(self)).expect("MPI ranks are non-negative")
    }

    fn size(&self) -> usize {
        usize::try_from(Communicator::size(self)).expect("MPI sizes are positive")
    }

    fn all_gather(&self, mine: &[u64], all: &mut [u64]) {
        self.all_gather_into(mine, all);
    }

    fn all_max(&self, mine: &[f64], all: &mut [f64]) {
        self.all_reduce_into(mine, all, SystemOperation::max());
    }

    fn all_merge(&self, mine: &[WirePartial], all: &mut [WirePartial]) {
        // SAFETY: `merge_partials` reads and writes `WirePartial`s, the type of both buffers
        // here and of the datatype rsmpi passes with them, and never panics (the merge is
        // float arithmetic). The operator is created per call and freed on drop, so it
        // never outlives MPI.
        let merge = unsafe { UnsafeUserOperation::commutative(merge_partials) };
        self.all_reduce_into(mine, all, &merge);
    }

    fn broadcast(&self, root: usize, value: &mut f64) {
        let root = i32::try_from(root).expect("ranks fit MPI's int");
        self.process_at_rank(root).broadcast_into(value);
    }
}

/// The header's fields, one u64 each.
pub(crate) mod field {
    pub const START: usize = 0;
    pub const END: usize = 1;
    pub const ROWS: usize = 2;
    pub const COLS: usize = 3;
    pub const GRAD_ROWS: usize = 4;
    pub const GRAD_COLS: usize = 5;
    pub const TARGETS: usize = 6;
    /// The first of the five fingerprints, named in order by [`super::FINGERPRINTS`].
    pub const FINGERPRINTS: usize = 7;
    pub const LEN: usize = 12;
}

/// What each fingerprint covers, in the header's order, as the mismatch error names it.
/// The call comes before the upstream gradient, which a forward pass does not have.
pub(crate) const FINGERPRINTS: [&str; 5] = [
    "configuration",
    "targets",
    "element type",
    "call",
    "upstream gradient",
];

/// `u64::MAX` in the gradient's shape fields: a forward pass has no gradient buffer.
pub(crate) const NO_GRADIENT: u64 = u64::MAX;

/// A rank's local facts, which every rank checks for every rank before any math.
pub(crate) struct Header {
    pub columns: std::ops::Range<usize>,
    pub shape: [usize; 2],
    pub grad_shape: Option<[usize; 2]>,
    pub n_targets: usize,
}

impl Header {
    /// The header as u64s, with fingerprints of the inputs that every rank must pass alike.
    ///
    /// The fingerprints are std's SipHash with its fixed keys: the same on every rank as
    /// long as every rank runs the same build, which an MPI job does.
    pub fn encode(
        &self,
        config: &SvSoftmax,
        targets: &Targets,
        upstream: Option<Upstream<'_>>,
        element: &str,
    ) -> [u64; field::LEN] {
        let hash = |value: &dyn Fn(&mut DefaultHasher)| {
            let mut hasher = DefaultHasher::new();
            value(&mut hasher);
            hasher.finish()
        };
        let grad = self
            .grad_shape
            .map(|[rows, cols]| [rows as u64, cols as u64]);
        let [grad_rows, grad_cols] = grad.unwrap_or([NO_GRADIENT; 2]);
        [
            self.columns.start as u64,
            self.columns.end as u64,
            self.shape[0] as u64,
            self.shape[1] as u64,
            grad_rows,
            grad_cols,
            self.n_targets as u64,
            // The configuration's Debug form spells every field, f64s in full precision.
            hash(&|hasher| format!("{config:?}").hash(hasher)),
            hash(&|hasher| targets.as_slice().hash(hasher)),
            hash(&|hasher| element.hash(hasher)),
            u64::from(upstream.is_some()),
            hash(&|hasher| hash_upstream(upstream, hasher)),
        ]
    }
}

fn hash_upstream(upstream: Option<Upstream<'_>>, hasher: &mut DefaultHasher) {
    // `-0.0 + 0.0` is `+0.0`: the two zeros give the same gradient, so they must agree.
    let bits = |value: f64| (value + 0.0).to_bits();
    match upstream {
        None => 0u8.hash(hasher),
        Some(Upstream::Scalar(value)) => (1u8, bits(value)).hash(hasher),
        Some(Upstream::Rows(rows)) => {
            2u8.hash(hasher);
            rows.iter().for_each(|&value| bits(value).hash(hasher));
        }
    }
}
