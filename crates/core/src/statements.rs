use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Counts the SQL statements sqlx executes, by listening to sqlx's own
/// statement log (tracing events with target `sqlx::query`).
///
/// This is how opsdeck proves its "one statement for any N" promises: the
/// count comes from the driver, not from the code under test. Either add
/// [`StatementCounter::layer`] to your global subscriber (as the quickstart
/// does), or, in tests, use [`StatementCounter::for_current_thread`].
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

    /// A counter of the statements executed on the calling thread, for tests
    /// on current-thread runtimes (`#[sqlx::test]`, `#[tokio::test]`), where
    /// each test runs on its own thread.
    ///
    /// The first call installs a process-wide subscriber that counts per
    /// thread. One global subscriber is used because per-thread
    /// (`set_default`) subscribers in concurrently running tests race on
    /// tracing's cached callsite interest and can miss events.
    ///
    /// # Panics
    /// If another global tracing subscriber is already installed: the count
    /// would silently be zero otherwise.
    pub fn for_current_thread() -> Self {
        static INSTALLED: OnceLock<()> = OnceLock::new();
        INSTALLED.get_or_init(|| {
            use tracing_subscriber::layer::SubscriberExt;
            let subscriber = tracing_subscriber::registry().with(PerThreadLayer);
            tracing::subscriber::set_global_default(subscriber).expect(
                "StatementCounter::for_current_thread needs to install the global tracing subscriber",
            );
        });
        let counter = Self::new();
        THREAD_COUNTER.with(|slot| *slot.borrow_mut() = Some(Arc::clone(&counter.count)));
        counter
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

thread_local! {
    /// The counter of this thread's statements, set by `for_current_thread`.
    static THREAD_COUNTER: RefCell<Option<Arc<AtomicU64>>> = const { RefCell::new(None) };
}

struct PerThreadLayer;

impl<S: Subscriber> Layer<S> for PerThreadLayer {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        if event.metadata().target() == StatementCounter::SQLX_TARGET {
            THREAD_COUNTER.with(|slot| {
                if let Some(count) = &*slot.borrow() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        true
    }
}
