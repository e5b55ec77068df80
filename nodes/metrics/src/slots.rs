//! Lock-free handles into a labelled metric family. A family is a map behind a lock; each label
//! combination is looked up once, the first time it is used, and its handle (an `Arc` of
//! atomics) is kept in a fixed slot, so later recordings are atomic adds only.

use std::sync::OnceLock;

use prometheus_client::metrics::family::{Family, MetricConstructor};

/// Label pairs of one series.
pub type Labels = Vec<(&'static str, String)>;

/// A family whose series are addressed by a slot index the caller computes from bounded
/// label values (an enum, a configured upstream, a status code).
#[derive(Debug)]
pub struct Slots<M, C = fn() -> M> {
    family: Family<Labels, M, C>,
    slots: Box<[OnceLock<M>]>,
}

impl<M: Clone, C: MetricConstructor<M> + Clone> Slots<M, C> {
    pub fn new(family: Family<Labels, M, C>, len: usize) -> Self {
        Slots {
            family,
            slots: (0..len).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The series in `slot`; `labels` runs only the first time. An index past the end (a bug)
    /// is looked up in the family each time rather than lost.
    pub fn get(&self, slot: usize, labels: impl FnOnce() -> Labels) -> M {
        match self.slots.get(slot) {
            Some(cell) => cell
                .get_or_init(|| self.family.get_or_create(&labels()).clone())
                .clone(),
            None => self.family.get_or_create(&labels()).clone(),
        }
    }

    /// Run `record` on the series in `slot` without cloning its handle.
    pub fn with(&self, slot: usize, labels: impl FnOnce() -> Labels, record: impl FnOnce(&M)) {
        match self.slots.get(slot) {
            Some(cell) => record(cell.get_or_init(|| self.family.get_or_create(&labels()).clone())),
            None => record(&self.family.get_or_create(&labels())),
        }
    }
}

impl<M, C> Slots<M, C> {
    /// Visit the series used so far, by slot.
    pub fn for_each(&self, mut visit: impl FnMut(usize, &M)) {
        for (i, cell) in self.slots.iter().enumerate() {
            if let Some(m) = cell.get() {
                visit(i, m);
            }
        }
    }
}

/// Status codes 100–599 map to slots 0–499; anything else shares the last.
pub const CODES: usize = 501;

pub fn code_slot(code: u16) -> usize {
    usize::from(code.clamp(100, 600) - 100)
}
