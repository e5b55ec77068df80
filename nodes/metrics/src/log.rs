//! Log lines a node dropped because its log writer fell behind: lines are written by a thread
//! of their own through a bounded queue, so a request never waits for stdout (a slow terminal,
//! a full pipe to a log shipper), and a full queue drops lines instead. Logging is
//! process-wide, and so is the source of this count.

use std::sync::OnceLock;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

type Source = Box<dyn Fn() -> u64 + Send + Sync>;

static DROPPED: OnceLock<Source> = OnceLock::new();

/// Where `wharf_log_lines_dropped_total` reads its count (the log writer's); set once, by the
/// binary that installs the writer.
pub fn count_dropped_log_lines(source: impl Fn() -> u64 + Send + Sync + 'static) {
    let _ = DROPPED.set(Box::new(source));
}

/// The counter, read from the source when scraped (0 without one).
#[derive(Debug, Clone, Default)]
pub(crate) struct DroppedLogLines;

impl TypedMetric for DroppedLogLines {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for DroppedLogLines {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let dropped = DROPPED.get().map_or(0, |source| source());
        encoder.encode_counter::<NoLabelSet, _, u64>(&dropped, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}
