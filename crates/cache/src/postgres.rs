//! [`PgInvalidationBus`]: invalidations over PostgreSQL LISTEN/NOTIFY, for
//! deployments without Redis.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, watch};

use crate::bus::{
    Backoff, BusEvent, Invalidation, InvalidationBus, ReaderTask, decode_message, encode_message,
};
use crate::error::{TierError, with_timeout};

/// Invalidations over `NOTIFY` on a channel (default `opsdeck_cache`).
///
/// One listener connection per bus (outside the pool's count). NOTIFY is
/// delivered only to sessions listening at commit time, so after every
/// reconnect the bus emits [`BusEvent::Resync`].
#[derive(Debug)]
pub struct PgInvalidationBus {
    pool: PgPool,
    channel: String,
    timeout: Duration,
    reader: ReaderTask,
}

impl PgInvalidationBus {
    /// The default channel name.
    pub const DEFAULT_CHANNEL: &'static str = "opsdeck_cache";

    /// Starts listening on `channel` (needs a tokio runtime). Connection
    /// failures are retried in the background.
    pub fn start(pool: PgPool, channel: impl Into<String>) -> Self {
        let channel = channel.into();
        let reader = ReaderTask::spawn({
            let (pool, channel) = (pool.clone(), channel.clone());
            move |events, connected| listen_forever(pool, channel, events, connected)
        });
        PgInvalidationBus {
            pool,
            channel,
            timeout: Duration::from_secs(2),
            reader,
        }
    }
}

async fn listen_forever(
    pool: PgPool,
    channel: String,
    sender: broadcast::Sender<BusEvent>,
    connected: watch::Sender<bool>,
) {
    let mut backoff = Backoff::new();
    while !pool.is_closed() {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        match listener {
            Ok(mut listener) => {
                backoff.reset();
                let _ = sender.send(BusEvent::Resync);
                let _ = connected.send(true);
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            if let Some(invalidation) = decode_message(notification.payload()) {
                                let _ = sender.send(BusEvent::Invalidated(invalidation));
                            }
                        }
                        // The connection dropped and the listener reconnected
                        // (eager reconnect): notifications in between are lost.
                        Ok(None) => {
                            tracing::warn!(%channel, "cache NOTIFY listener reconnected");
                            let _ = sender.send(BusEvent::Resync);
                        }
                        Err(error) => {
                            tracing::warn!(%channel, %error, "cache NOTIFY listener failed");
                            break;
                        }
                    }
                }
                let _ = connected.send(false);
            }
            Err(error) => {
                tracing::debug!(%channel, %error, "cache NOTIFY listener could not connect");
            }
        }
        backoff.wait().await;
    }
}

#[async_trait]
impl InvalidationBus for PgInvalidationBus {
    async fn publish(&self, invalidation: &Invalidation) -> Result<(), TierError> {
        let payload = encode_message(invalidation)?;
        with_timeout(self.timeout, async {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&self.channel)
                .bind(payload)
                .execute(&self.pool)
                .await
                .map(drop)
                .map_err(TierError::backend)
        })
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.reader.subscribe()
    }

    async fn wait_until_subscribed(&self, timeout: Duration) -> bool {
        self.reader.wait_until_subscribed(timeout).await
    }
}
