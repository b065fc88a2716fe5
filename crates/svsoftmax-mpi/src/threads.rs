//! An in-process stand-in for MPI: shards on threads, meeting at a barrier for each
//! collective, so that the unit tests run the whole protocol without `mpirun`.

use std::any::Any;
use std::sync::{Barrier, Mutex};

use crate::wire::{Transport, WirePartial};

/// What the threads of one group share.
pub struct Group {
    barrier: Barrier,
    slots: Mutex<Vec<Option<Box<dyn Any + Send>>>>,
}

impl Group {
    pub fn new(size: usize) -> Self {
        Self {
            barrier: Barrier::new(size),
            slots: Mutex::new((0..size).map(|_| None).collect()),
        }
    }
}

/// One shard's end of a [`Group`].
pub struct Member<'g> {
    pub group: &'g Group,
    pub rank: usize,
}

impl Member<'_> {
    /// Every member's `mine`, in rank order, once all have arrived.
    fn exchange<T: Clone + Send + 'static>(&self, mine: &[T]) -> Vec<Vec<T>> {
        self.group.slots.lock().unwrap()[self.rank] = Some(Box::new(mine.to_vec()));
        self.group.barrier.wait();
        let all = self
            .group
            .slots
            .lock()
            .unwrap()
            .iter()
            .map(|slot| {
                let slot = slot.as_ref().expect("every member has arrived");
                slot.downcast_ref::<Vec<T>>()
                    .expect("members agree on the type")
                    .clone()
            })
            .collect();
        // Nobody may overwrite a slot before everyone has read them all.
        self.group.barrier.wait();
        all
    }
}

impl Transport for Member<'_> {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.group.slots.lock().unwrap().len()
    }

    fn all_gather(&self, mine: &[u64], all: &mut [u64]) {
        all.copy_from_slice(&self.exchange(mine).concat());
    }

    fn all_max(&self, mine: &[f64], all: &mut [f64]) {
        let parts = self.exchange(mine);
        for (i, slot) in all.iter_mut().enumerate() {
            *slot = parts
                .iter()
                .map(|part| part[i])
                .fold(f64::NEG_INFINITY, f64::max);
        }
    }

    fn all_merge(&self, mine: &[WirePartial], all: &mut [WirePartial]) {
        let parts = self.exchange(mine);
        // From the last rank down, unlike the gather order, to lean on associativity.
        for (i, slot) in all.iter_mut().enumerate() {
            *slot = parts
                .iter()
                .rev()
                .map(|part| part[i])
                .fold(WirePartial::EMPTY, WirePartial::merge);
        }
    }

    fn broadcast(&self, root: usize, value: &mut f64) {
        *value = self.exchange(&[*value])[root][0];
    }
}
