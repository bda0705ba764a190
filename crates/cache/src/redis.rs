//! The Redis tier: [`RedisRemoteStore`] (L2 entries) and [`RedisInvalidationBus`] (pub/sub
//! invalidation channel), both on redis-rs.

use std::time::Duration;

use async_trait::async_trait;
use opsdeck_core::{SecretUrl, UserId};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, Script};
use tokio::sync::{broadcast, watch};

use crate::bus::{
    Backoff, BusEvent, Invalidation, InvalidationBus, ReaderTask, decode_message, encode_message,
};
use crate::error::{TierError, with_timeout};
use crate::key::CacheKey;
use crate::remote::{RemoteRead, RemoteStore};

// Layout: one hash per partition; field `g` holds the partition's generation
// and item fields are prefixed with `i:` so no item name can collide with it.

/// How long a partition's generation outlives its last invalidation. A load
/// that read the generation must finish within this window for the guard to
/// hold; loads take milliseconds, this is minutes.
const GENERATION_TTL: Duration = Duration::from_secs(600);

// Entries are `<13-digit expiry, ms since epoch, Redis clock><payload>` so
// every field expires on its own although Redis 7.0 expires whole keys only;
// the scripts read Redis's own clock so instance clocks do not matter.
const GET_SCRIPT: &str = r"
local r = redis.call('HMGET', KEYS[1], ARGV[1], 'g')
local g = r[2] or '0'
local v = r[1]
if v then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if tonumber(string.sub(v, 1, 13)) > now then
    return {g, string.sub(v, 14)}
  end
end
return {g}
";

const PUT_SCRIPT: &str = r"
if ARGV[4] ~= '' then
  local g = redis.call('HGET', KEYS[1], 'g') or '0'
  if g ~= ARGV[4] then return 0 end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%013.0f', now + ttl) .. ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
";

const INVALIDATE_KEY_SCRIPT: &str = r"
redis.call('HINCRBY', KEYS[1], 'g', 1)
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
";

const INVALIDATE_USER_SCRIPT: &str = r"
local g = redis.call('HINCRBY', KEYS[1], 'g', 1)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'g', g)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

/// Settings shared by [`RedisRemoteStore`] and [`RedisInvalidationBus`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`, or `rediss://…` for TLS. Its
    /// `Debug` hides the password.
    pub url: SecretUrl,
    /// First part of every key and of the channel name, so several
    /// applications can share one Redis (default `opsdeck`).
    pub key_prefix: String,
    /// Deadline of one operation (default 100 ms); a slower Redis counts as down.
    pub timeout: Duration,
}

impl RedisConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<SecretUrl>) -> Self {
        RedisConfig {
            url: url.into(),
            key_prefix: "opsdeck".to_string(),
            timeout: Duration::from_millis(100),
        }
    }

    /// Sets the key prefix.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets the per-operation timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn client(&self) -> Result<Client, TierError> {
        Client::open(self.url.expose()).map_err(TierError::backend)
    }

    /// A connection manager that connects lazily, so an application starts
    /// (and degrades to L1) while Redis is down.
    fn manager(&self) -> Result<ConnectionManager, TierError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        ConnectionManager::new_lazy_with_config(self.client()?, config).map_err(TierError::backend)
    }
}

/// L2 entries in Redis: one hash per (namespace, user) partition at
/// `{prefix}:{namespace}:{user}`, a field per item, plus the partition's
/// generation. See [`RemoteStore`] for the contract.
#[derive(Clone)]
pub struct RedisRemoteStore {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    get: Script,
    put: Script,
    invalidate_key: Script,
    invalidate_user: Script,
}

impl std::fmt::Debug for RedisRemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never print it.
        f.debug_struct("RedisRemoteStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisRemoteStore {
    /// A store for `config`. Fails only on an invalid URL: the connection
    /// is made on first use and re-made after failures.
    pub fn new(config: &RedisConfig) -> Result<Self, TierError> {
        Ok(RedisRemoteStore {
            connection: config.manager()?,
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            get: Script::new(GET_SCRIPT),
            put: Script::new(PUT_SCRIPT),
            invalidate_key: Script::new(INVALIDATE_KEY_SCRIPT),
            invalidate_user: Script::new(INVALIDATE_USER_SCRIPT),
        })
    }

    /// The Redis key of a partition.
    pub fn partition_key(&self, namespace: &str, user: UserId) -> String {
        format!("{}:{namespace}:{user}", self.prefix)
    }

    fn field(key: &CacheKey) -> String {
        format!("i:{}", key.item())
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, TierError> {
        let mut connection = self.connection.clone();
        with_timeout(self.timeout, async move {
            invocation
                .invoke_async(&mut connection)
                .await
                .map_err(TierError::backend)
        })
        .await
    }
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().clamp(1, u64::MAX as u128) as u64
}

#[async_trait]
impl RemoteStore for RedisRemoteStore {
    async fn get(&self, namespace: &str, key: &CacheKey) -> Result<RemoteRead, TierError> {
        let mut invocation = self.get.key(self.partition_key(namespace, key.user()));
        invocation.arg(Self::field(key));
        let mut parts: Vec<Vec<u8>> = self.run(invocation).await?;
        let value = (parts.len() > 1).then(|| parts.swap_remove(1));
        let generation = parts
            .first()
            .and_then(|g| std::str::from_utf8(g).ok())
            .and_then(|g| g.parse().ok())
            .unwrap_or(0);
        Ok(RemoteRead { value, generation })
    }

    async fn put_if_generation(
        &self,
        namespace: &str,
        key: &CacheKey,
        value: &[u8],
        ttl: Duration,
        generation: u64,
    ) -> Result<bool, TierError> {
        let mut invocation = self.put.key(self.partition_key(namespace, key.user()));
        invocation
            .arg(Self::field(key))
            .arg(value)
            .arg(millis(ttl))
            .arg(generation.to_string());
        let stored: i64 = self.run(invocation).await?;
        Ok(stored == 1)
    }

    async fn put(
        &self,
        namespace: &str,
        key: &CacheKey,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), TierError> {
        let mut invocation = self.put.key(self.partition_key(namespace, key.user()));
        invocation
            .arg(Self::field(key))
            .arg(value)
            .arg(millis(ttl))
            .arg("");
        let _: i64 = self.run(invocation).await?;
        Ok(())
    }

    async fn invalidate(&self, namespace: &str, key: &CacheKey) -> Result<(), TierError> {
        let mut invocation = self
            .invalidate_key
            .key(self.partition_key(namespace, key.user()));
        invocation.arg(Self::field(key)).arg(millis(GENERATION_TTL));
        let _: i64 = self.run(invocation).await?;
        Ok(())
    }

    async fn invalidate_user(&self, namespace: &str, user: UserId) -> Result<(), TierError> {
        let mut invocation = self
            .invalidate_user
            .key(self.partition_key(namespace, user));
        invocation.arg(millis(GENERATION_TTL));
        let _: i64 = self.run(invocation).await?;
        Ok(())
    }
}

/// Invalidations over Redis pub/sub on channel `{prefix}:invalidations`.
///
/// A background task keeps one subscription, reconnects with backoff, and
/// emits [`BusEvent::Resync`] after every (re)subscription, since pub/sub
/// drops what is published while a subscriber is away.
pub struct RedisInvalidationBus {
    publisher: ConnectionManager,
    channel: String,
    timeout: Duration,
    reader: ReaderTask,
}

impl std::fmt::Debug for RedisInvalidationBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection knows the URL, which may carry a password: never print it.
        f.debug_struct("RedisInvalidationBus")
            .field("channel", &self.channel)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisInvalidationBus {
    /// Starts the subscriber task (needs a tokio runtime). Fails only on an
    /// invalid URL; a down Redis is retried in the background.
    pub fn start(config: &RedisConfig) -> Result<Self, TierError> {
        let channel = format!("{}:invalidations", config.key_prefix);
        let reader = ReaderTask::spawn({
            let (client, channel, timeout) = (config.client()?, channel.clone(), config.timeout);
            move |events, connected| subscribe_forever(client, channel, timeout, events, connected)
        });
        Ok(RedisInvalidationBus {
            publisher: config.manager()?,
            channel,
            timeout: config.timeout,
            reader,
        })
    }
}

async fn subscribe_forever(
    client: Client,
    channel: String,
    timeout: Duration,
    sender: broadcast::Sender<BusEvent>,
    connected: watch::Sender<bool>,
) {
    use futures_util::StreamExt;
    let mut backoff = Backoff::new();
    loop {
        let subscribed = with_timeout(timeout.max(Duration::from_secs(1)), async {
            let mut pubsub = client
                .get_async_pubsub()
                .await
                .map_err(TierError::backend)?;
            pubsub
                .subscribe(channel.as_str())
                .await
                .map_err(TierError::backend)?;
            Ok(pubsub)
        })
        .await;
        match subscribed {
            Ok(pubsub) => {
                backoff.reset();
                // Anything published while we were away is lost.
                let _ = sender.send(BusEvent::Resync);
                let _ = connected.send(true);
                tracing::info!(%channel, "cache invalidation subscription live");
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    if let Some(invalidation) = decode_message(&payload) {
                        let _ = sender.send(BusEvent::Invalidated(invalidation));
                    }
                }
                let _ = connected.send(false);
                tracing::warn!(%channel, "cache invalidation subscription lost; reconnecting");
            }
            Err(error) => {
                tracing::debug!(%channel, %error, "cache invalidation subscription failed");
            }
        }
        backoff.wait().await;
    }
}

#[async_trait]
impl InvalidationBus for RedisInvalidationBus {
    async fn publish(&self, invalidation: &Invalidation) -> Result<(), TierError> {
        let payload = encode_message(invalidation)?;
        let mut connection = self.publisher.clone();
        with_timeout(self.timeout, async move {
            connection
                .publish::<_, _, i64>(self.channel.as_str(), payload)
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
