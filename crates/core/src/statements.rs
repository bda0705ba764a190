use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Counts the SQL statements sqlx executes, by listening to sqlx's own
/// statement log (tracing events with target `sqlx::query`).
///
/// This is how opsdeck proves its "one statement for any N" promises: the
/// count comes from the driver, not from the code under test. Add the layer
/// to a subscriber (globally, or per thread with
/// [`tracing::subscriber::set_default`] on a current-thread runtime) and read
/// [`StatementCounter::count`].
///
/// ```
/// use opsdeck_core::StatementCounter;
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let counter = StatementCounter::new();
/// let subscriber = tracing_subscriber::registry().with(counter.layer());
/// let _guard = tracing::subscriber::set_default(subscriber);
/// assert_eq!(counter.count(), 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct StatementCounter {
    count: Arc<AtomicU64>,
}

impl StatementCounter {
    /// The tracing target sqlx logs every executed statement under.
    pub const SQLX_TARGET: &'static str = "sqlx::query";

    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A layer that increments this counter for each sqlx statement event.
    pub fn layer<S: Subscriber>(&self) -> impl Layer<S> + Send + Sync + 'static {
        CountingLayer {
            count: Arc::clone(&self.count),
        }
    }

    /// Statements counted so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Sets the counter back to zero and returns what it held.
    pub fn reset(&self) -> u64 {
        self.count.swap(0, Ordering::SeqCst)
    }
}

struct CountingLayer {
    count: Arc<AtomicU64>,
}

impl<S: Subscriber> Layer<S> for CountingLayer {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        // Counting here rather than in `on_event` keeps the count independent of
        // other layers' filters; returning true lets the event reach them.
        if event.metadata().target() == StatementCounter::SQLX_TARGET {
            self.count.fetch_add(1, Ordering::SeqCst);
        }
        true
    }
}
