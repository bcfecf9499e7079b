//! Configuration, layered: command-line flags > `SCALIFY_*` environment variables > the
//! config file (`--config scalify.toml`) > defaults.
//!
//! Every setting is declared once, as a field of [`CommonArgs`] or [`ServeArgs`]: its flag,
//! its environment variable (clap does those two layers) and its config-file key (the field's
//! name, read by serde) come from that one declaration. [`Settings::load`] lays the flags over
//! the file and turns the result into [`Settings`], applying the defaults and checks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use scalify_core::TrustedProxies;
use scalify_fanout::redis::RedisConfig;
use scalify_kafka::ingest::IngestConfig;
use scalify_kafka::persister::PersisterConfig;
use scalify_kafka::KafkaConfig;
use scalify_notify::{Vapid, Webhook};
use scalify_server::TransportConfig;
use scalify_service::{ChatConfig, ThrottleConfig};
use scalify_store::postgres::PgConfig;
use scalify_store::sqlite::{Durability, SqliteConfig};
use serde::{Deserialize, Serialize};

mod cli;
mod file;

pub use cli::{
    AdminArgs, AdminCommand, Cli, Command, CommonArgs, ConfigCommand, LogFormat, ServeArgs,
    SqliteSync,
};
pub use file::FileConfig;
use file::*;

/// Durable mode's settings (`--kafka-brokers`).
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub config: KafkaConfig,
    pub ingest: IngestConfig,
    pub persister: PersisterConfig,
    /// Run a persister inside `serve`.
    pub embedded_persister: bool,
    /// How long a send's idempotency key lives in Redis.
    pub idempotency_window: Duration,
}

/// Missed-message notifications: the delay, the webhook, Web Push.
#[derive(Clone)]
pub struct NotifySettings {
    pub delay: Duration,
    pub webhook: Option<Arc<Webhook>>,
    /// `SCALIFY_VAPID_PRIVATE_KEY`; unset, an embedded node generates one into its data
    /// directory.
    vapid_private_key: Option<String>,
    pub vapid_subject: String,
    pub allow_private_endpoints: bool,
}

impl std::fmt::Debug for NotifySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifySettings")
            .field("delay", &self.delay)
            .field("webhook", &self.webhook.is_some())
            .field("vapid_private_key", &self.vapid_private_key.is_some())
            .field("vapid_subject", &self.vapid_subject)
            .finish_non_exhaustive()
    }
}

/// The merged configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Where the operator's endpoints are served apart from clients, if anywhere.
    pub internal_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    token_secret: Option<String>,
    pub token_ttl: Duration,
    pub chat: ChatConfig,
    pub transport: TransportConfig,
    pub durability: Durability,
    /// PostgreSQL instead of SQLite, when set.
    pub postgres: Option<PgConfig>,
    /// A cluster over Redis, when set.
    pub redis: Option<RedisConfig>,
    /// Durable mode through Kafka, when set.
    pub kafka: Option<KafkaSettings>,
    pub notify: NotifySettings,
    pub uploads: UploadSettings,
}

/// Where attachments are kept, and their limits.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// S3-compatible storage, when set; else `<data dir>/files`.
    pub s3: Option<scalify_files::S3Config>,
    pub max_bytes: u64,
    pub max_pixels: u64,
    pub expiry: Duration,
}

impl Settings {
    /// Lays `serve`'s flags (or, for a command without them, `common`'s) over the config
    /// file that `common` names, then applies the defaults and checks the result.
    pub fn load(common: &CommonArgs, serve: Option<&ServeArgs>) -> anyhow::Result<Self> {
        let file = match &common.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        let flags = match serve {
            Some(s) => s.clone(),
            None => ServeArgs {
                common: common.clone(),
                ..ServeArgs::default()
            },
        };
        let o = flags.over(&file.settings)?;
        let chat_defaults = ChatConfig::default();
        let transport_defaults = TransportConfig::default();
        let throttle_defaults = chat_defaults.throttle.clone();
        let max_message_bytes = o.max_message_bytes.unwrap_or(chat_defaults.max_text_bytes);
        let max_payload_bytes = o
            .max_payload_bytes
            .unwrap_or(transport_defaults.max_payload_bytes);
        if max_message_bytes == 0 || max_message_bytes + 1024 > max_payload_bytes {
            bail!(
                "max_message_bytes ({max_message_bytes}) must be positive and at least 1 KiB below max_payload_bytes ({max_payload_bytes})"
            );
        }
        let sync_limit = o.sync_limit.unwrap_or(chat_defaults.sync_per_room);
        if sync_limit == 0 {
            bail!("sync_limit must be at least 1");
        }
        let token_secret = std::env::var("SCALIFY_TOKEN_SECRET")
            .ok()
            .filter(|s| !s.is_empty())
            .or(file.token_secret);
        let postgres = o
            .common
            .database_url
            .clone()
            .map(|url| -> anyhow::Result<PgConfig> {
                let mut c = PgConfig::new(url);
                if let Some(n) = o.database_max_connections {
                    c.max_connections = at_least("database_max_connections", n, 2)?;
                }
                Ok(c)
            })
            .transpose()?;
        let redis = o
            .redis_url
            .clone()
            .map(|url| -> anyhow::Result<RedisConfig> {
                let mut c = RedisConfig::new(url);
                if let Some(p) = o.redis_prefix.clone() {
                    c.prefix = p;
                }
                if let Some(t) = o.presence_ttl_secs {
                    c.presence_ttl = Duration::from_secs(at_least("presence_ttl_secs", t, 1)?);
                }
                Ok(c)
            })
            .transpose()?;
        let kafka = match o.kafka_brokers.clone() {
            None => None,
            Some(brokers) => {
                if postgres.is_none() || redis.is_none() {
                    bail!("durable mode (--kafka-brokers) needs --database-url (the persisters' PostgreSQL) and --redis-url (seq counters and the recent window)");
                }
                Some(kafka_settings(&o, brokers)?)
            }
        };
        if redis.is_some() && token_secret.is_none() {
            bail!(
                "a cluster (--redis-url) needs a token secret shared by every node: set SCALIFY_TOKEN_SECRET or token_secret in the config file"
            );
        }
        let secret_env = |name: &str| std::env::var(name).ok().filter(|s| !s.is_empty());
        let notify = NotifySettings {
            delay: Duration::from_secs(o.notify_after_secs.unwrap_or(60)),
            webhook: o
                .notify_webhook_url
                .as_deref()
                .filter(|u| !u.is_empty())
                .map(|url| {
                    Webhook::new(
                        url,
                        &secret_env("SCALIFY_NOTIFY_WEBHOOK_SECRET").unwrap_or_default(),
                    )
                    .map(Arc::new)
                })
                .transpose()?,
            vapid_private_key: secret_env("SCALIFY_VAPID_PRIVATE_KEY"),
            vapid_subject: o
                .vapid_subject
                .clone()
                .unwrap_or_else(|| "mailto:admin@localhost".into()),
            allow_private_endpoints: o.push_allow_private_endpoints,
        };
        let uploads = UploadSettings {
            s3: match (&o.s3_endpoint, &o.s3_bucket) {
                (None, None) => None,
                (Some(endpoint), Some(bucket)) => Some(scalify_files::S3Config {
                    endpoint: endpoint.clone(),
                    bucket: bucket.clone(),
                    region: o.s3_region.clone().unwrap_or_else(|| "us-east-1".into()),
                }),
                _ => bail!("s3_endpoint and s3_bucket go together"),
            },
            max_bytes: at_least(
                "upload_max_bytes",
                o.upload_max_bytes.unwrap_or(10 << 20),
                1,
            )?,
            max_pixels: at_least(
                "upload_max_pixels",
                o.upload_max_pixels.unwrap_or(40_000_000),
                1,
            )?,
            expiry: Duration::from_secs(at_least(
                "upload_expiry_secs",
                o.upload_expiry_secs.unwrap_or(24 * 3600),
                1,
            )?),
        };
        Ok(Settings {
            notify,
            uploads,
            postgres,
            redis,
            kafka,
            listen: o.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 3000))),
            internal_listen: o.internal_listen,
            data_dir: o
                .common
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("scalify-data")),
            log_format: o.common.log_format.unwrap_or(LogFormat::Text),
            token_secret,
            token_ttl: Duration::from_secs(o.token_ttl_secs.unwrap_or(7 * 24 * 3600)),
            chat: ChatConfig {
                max_text_bytes: max_message_bytes,
                sync_per_room: sync_limit,
                sync_total: chat_defaults.sync_total.max(sync_limit),
                admins: o
                    .admins
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|a| a.trim().to_lowercase())
                    .filter(|a| !a.is_empty())
                    .collect(),
                rate_limit_per_sec: o
                    .rate_limit_per_sec
                    .unwrap_or(chat_defaults.rate_limit_per_sec),
                rate_limit_burst: o.rate_limit_burst.unwrap_or(chat_defaults.rate_limit_burst),
                max_connections_per_user: at_least(
                    "max_connections_per_user",
                    o.max_connections_per_user
                        .unwrap_or(chat_defaults.max_connections_per_user),
                    1,
                )?,
                throttle: ThrottleConfig {
                    login_per_account: ThrottleConfig::login(
                        o.login_attempts_per_account
                            .unwrap_or(throttle_defaults.login_per_account.free),
                    ),
                    login_per_address: ThrottleConfig::login(
                        o.login_attempts_per_address
                            .unwrap_or(throttle_defaults.login_per_address.free),
                    ),
                    registrations_per_address: ThrottleConfig::registrations(
                        o.registrations_per_address
                            .unwrap_or(throttle_defaults.registrations_per_address.free),
                    ),
                    ..throttle_defaults
                },
            },
            transport: TransportConfig {
                max_payload_bytes,
                allowed_origins: o.allowed_origins.clone().unwrap_or_default(),
                trusted_proxies: TrustedProxies::parse(
                    o.trusted_proxies.as_deref().unwrap_or_default(),
                )
                .map_err(|e| anyhow::anyhow!("trusted_proxies (--trusted-proxies): {e}"))?,
                metrics_on_main: o.internal_listen.is_none(),
                ping_interval: Duration::from_secs(at_least(
                    "ping_interval_secs",
                    o.ping_interval_secs
                        .unwrap_or(transport_defaults.ping_interval.as_secs()),
                    1,
                )?),
                ping_timeout: Duration::from_secs(at_least(
                    "ping_timeout_secs",
                    o.ping_timeout_secs
                        .unwrap_or(transport_defaults.ping_timeout.as_secs()),
                    1,
                )?),
                ..transport_defaults
            },
            durability: match o.sqlite_synchronous.unwrap_or(SqliteSync::Full) {
                SqliteSync::Full => Durability::Full,
                SqliteSync::Normal => Durability::Normal,
            },
        })
    }

    /// Checks what `load` cannot without side effects: the secret's length when one is set.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(secret) = &self.token_secret {
            if secret.len() < 32 {
                bail!("token_secret must be at least 32 bytes");
            }
        }
        if let Some(kafka) = &self.kafka {
            scalify_kafka::topics::validate(&kafka.config).map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    /// Whether a token secret is configured (else embedded mode generates one).
    pub fn has_token_secret(&self) -> bool {
        self.token_secret.is_some()
    }

    /// The data directory, created if absent; it holds the database and the generated token
    /// secret, so only its owner may enter it (0700).
    fn ensure_data_dir(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating data directory {}", self.data_dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("securing data directory {}", self.data_dir.display()))?;
        }
        Ok(())
    }

    /// Takes the data directory for this process: two nodes writing one SQLite file (or one
    /// generated secret) would each believe they own it. The lock is the kernel's (`flock`),
    /// so it ends with the process, however it ends; it is held while the file lives.
    pub fn lock_data_dir(&self) -> anyhow::Result<std::fs::File> {
        use std::io::{Read, Seek, Write};
        self.ensure_data_dir()?;
        let path = self.data_dir.join("lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                bail!(
                    "another scalify process{} is using the data directory {}: stop it, or give this one its own --data-dir",
                    if holder.is_empty() { String::new() } else { format!(" (pid {holder})") },
                    self.data_dir.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
        // The holder's pid, for the message above (a courtesy: the lock is what counts).
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(file, "{}", std::process::id());
        Ok(file)
    }

    /// The node's VAPID key for Web Push: `SCALIFY_VAPID_PRIVATE_KEY`, else (one node) the one
    /// generated into the data directory. A cluster without the variable offers no Web Push:
    /// its nodes would each sign with a key of their own, and a browser subscribed through one
    /// would refuse the others'.
    pub fn vapid(&self) -> anyhow::Result<Option<Vapid>> {
        let subject = &self.notify.vapid_subject;
        if let Some(key) = &self.notify.vapid_private_key {
            return Vapid::from_private_key(key, subject)
                .map(Some)
                .context("SCALIFY_VAPID_PRIVATE_KEY");
        }
        if self.redis.is_some() {
            tracing::warn!("Web Push is off: a cluster needs SCALIFY_VAPID_PRIVATE_KEY, the same on every node (docs/notifications.md)");
            return Ok(None);
        }
        self.ensure_data_dir()?;
        Vapid::load_or_generate(&self.data_dir.join("vapid-private-key"), subject).map(Some)
    }

    pub fn sqlite_config(&self) -> anyhow::Result<SqliteConfig> {
        self.ensure_data_dir()?;
        Ok(SqliteConfig {
            path: self.data_dir.join("scalify.db"),
            durability: self.durability,
        })
    }

    /// The configured secret; or, in embedded mode without one, the secret generated into
    /// the data directory on first start (created with mode 0600).
    pub fn token_secret(&self) -> anyhow::Result<Vec<u8>> {
        if let Some(secret) = &self.token_secret {
            if secret.len() < 32 {
                bail!("token_secret must be at least 32 bytes");
            }
            return Ok(secret.as_bytes().to_vec());
        }
        self.ensure_data_dir()?;
        let path = self.data_dir.join("token-secret");
        match std::fs::read_to_string(&path) {
            Ok(s) if s.trim().len() >= 32 => {
                tracing::info!(path = %path.display(), "using the token secret generated earlier");
                Ok(s.trim().as_bytes().to_vec())
            }
            Ok(_) => bail!(
                "{} is too short; delete it to generate a new one",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use rand::RngCore;
                let mut bytes = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut bytes);
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                write_private(&path, &hex)?;
                tracing::warn!(
                    path = %path.display(),
                    "no token_secret configured: generated one into the data directory"
                );
                Ok(hex.into_bytes())
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// Durable mode's settings from the merged options, `brokers` given.
fn kafka_settings(o: &ServeArgs, brokers: String) -> anyhow::Result<KafkaSettings> {
    let mut config = KafkaConfig::new(brokers);
    if let Some(t) = o.kafka_topic.clone() {
        config.dead_letter_topic = format!("{t}.dlq");
        config.topic = t;
    }
    if let Some(t) = o.kafka_dead_letter_topic.clone() {
        config.dead_letter_topic = t;
    }
    if let Some(p) = o.kafka_partitions {
        if p < 1 {
            bail!("kafka_partitions must be at least 1");
        }
        config.partitions = p;
    }
    if let Some(r) = o.kafka_replication {
        if r < 1 {
            bail!("kafka_replication must be at least 1");
        }
        config.replication = r;
    }
    if let Some(c) = o.kafka_client_id.clone() {
        config.client_id = c;
    }
    if let Some(g) = o.kafka_group.clone() {
        config.group = g;
    }
    for kv in o.kafka_options.clone().unwrap_or_default() {
        config.add_option(&kv).map_err(anyhow::Error::msg)?;
    }
    let mut ingest = IngestConfig::default();
    if let Some(ms) = o.kafka_ack_timeout_ms {
        ingest.ack_timeout = Duration::from_millis(at_least("kafka_ack_timeout_ms", ms, 100)?);
    }
    let idempotency_window = Duration::from_secs(within(
        "idempotency_window_secs",
        o.idempotency_window_secs.unwrap_or(24 * 3600),
        1..=30 * 24 * 3600,
    )?);
    let mut persister = PersisterConfig::new(format!("{}-{}", hostname(), std::process::id()));
    if let Some(n) = o.persister_batch {
        persister.batch_max = within("persister_batch", n, 1..=50_000)?;
    }
    if let Some(ms) = o.persister_batch_ms {
        persister.batch_wait = Duration::from_millis(at_least("persister_batch_ms", ms, 1)?);
    }
    if let Some(n) = o.persister_writers {
        if !(1..=8).contains(&n) {
            bail!("persister_writers must be 1 to 8 (got {n})");
        }
        persister.writers = n;
    }
    if let Some(secs) = o.persister_stuck_secs {
        persister.stuck_after = Duration::from_secs(at_least("persister_stuck_secs", secs, 1)?);
    }
    if let Some(n) = o.persister_lookback {
        if !(0..=scalify_kafka::continuity::MAX_LOOKBACK).contains(&n) {
            bail!(
                "persister_lookback must be 0 to {} (got {n})",
                scalify_kafka::continuity::MAX_LOOKBACK
            );
        }
        persister.lookback = n;
    }
    Ok(KafkaSettings {
        config,
        ingest,
        persister,
        embedded_persister: o.persister,
        idempotency_window,
    })
}

/// `value` of setting `key` if it is at least `min`: a value out of range is an error that names
/// the setting, never quietly replaced by one the user did not ask for.
fn at_least<T: PartialOrd + std::fmt::Display>(key: &str, value: T, min: T) -> anyhow::Result<T> {
    if value < min {
        bail!(
            "{key} (--{}) must be at least {min} (got {value})",
            key.replace('_', "-")
        );
    }
    Ok(value)
}

/// `value` of setting `key` if it lies in `range` (see [`at_least`]).
fn within<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> anyhow::Result<T> {
    if !range.contains(&value) {
        bail!(
            "{key} (--{}) must be {} to {} (got {value})",
            key.replace('_', "-"),
            range.start(),
            range.end()
        );
    }
    Ok(value)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "persister".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(argv: &[&str]) -> ServeArgs {
        let mut full = vec!["scalify", "serve"];
        full.extend_from_slice(argv);
        match Cli::parse_from(full).command {
            Command::Serve(a) => *a,
            _ => unreachable!(),
        }
    }

    /// A `scalify.toml` holding `contents`, in a directory that lives as long as the guard.
    fn config_file(contents: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("scalify.toml");
        std::fs::write(&file, contents).unwrap();
        (dir, file)
    }

    #[test]
    fn flags_beat_file_beats_defaults() {
        let (_dir, file) = config_file("listen = \"127.0.0.1:4000\"\nrate_limit_per_sec = 5\n");
        let cfg = file.to_str().unwrap();
        let a = serve_args(&["--config", cfg, "--rate-limit-per-sec", "7"]);
        let s = Settings::load(&a.common, Some(&a)).unwrap();
        assert_eq!(s.listen.port(), 4000, "file beats default");
        assert_eq!(s.chat.rate_limit_per_sec, 7, "flag beats file");
        assert_eq!(s.chat.rate_limit_burst, 40, "default");
        assert_eq!(s.chat.max_text_bytes, 4096);
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let (_dir, file) = config_file("listne = \"127.0.0.1:4000\"\n");
        let err = FileConfig::read(&file).unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
        // The file cannot name another file.
        let (_dir, file) = config_file("config = \"other.toml\"\n");
        let err = FileConfig::read(&file).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `config`"),
            "{err:#}"
        );
    }

    #[test]
    fn every_flag_is_a_file_key_of_the_same_name() {
        let (_dir, file) = config_file(
            "data_dir = \"/tmp/x\"\nlog_format = \"json\"\nsqlite_synchronous = \"normal\"\n\
             allowed_origins = [\"https://a\"]\nadmins = [\"Boss\"]\nping_timeout_secs = 9\n\
             token_secret = \"0123456789abcdef0123456789abcdef\"\n",
        );
        let a = serve_args(&["--config", file.to_str().unwrap()]);
        let s = Settings::load(&a.common, Some(&a)).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.durability, Durability::Normal);
        assert_eq!(s.transport.allowed_origins, vec!["https://a".to_owned()]);
        assert_eq!(s.chat.admins, vec!["boss".to_owned()]);
        assert_eq!(s.transport.ping_timeout, Duration::from_secs(9));
        assert!(s.has_token_secret());
        let keys = known_keys();
        for key in [
            "listen",
            "database_url",
            "kafka_options",
            "persister_lookback",
        ] {
            assert!(keys.contains(key), "{key}");
        }
        // A command without the serve flags still reads the file's settings.
        let common = CommonArgs {
            config: Some(file.clone()),
            ..CommonArgs::default()
        };
        let s = Settings::load(&common, None).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn durable_mode_settings_are_layered_and_checked() {
        let (_dir, file) = config_file(
            "token_secret = \"0123456789abcdef0123456789abcdef\"\n\
             database_url = \"postgres://db/x\"\nredis_url = \"redis://r\"\n\
             kafka_brokers = \"k1:9092\"\nkafka_topic = \"chat\"\nkafka_partitions = 12\n\
             kafka_options = [\"security.protocol=SASL_SSL\"]\npersister = true\n\
             persister_writers = 2\n",
        );
        let cfg = file.to_str().unwrap();
        let a = serve_args(&[
            "--config",
            cfg,
            "--kafka-partitions",
            "3",
            "--kafka-ack-timeout-ms",
            "500",
        ]);
        let s = Settings::load(&a.common, Some(&a)).unwrap();
        let k = s.kafka.as_ref().unwrap();
        assert_eq!(k.config.brokers, "k1:9092");
        assert_eq!(
            (k.config.topic.as_str(), k.config.dead_letter_topic.as_str()),
            ("chat", "chat.dlq")
        );
        assert_eq!(k.config.partitions, 3, "flag beats file");
        assert_eq!(k.config.options["security.protocol"], "SASL_SSL");
        assert_eq!(k.ingest.ack_timeout, Duration::from_millis(500));
        assert!(k.embedded_persister);
        assert_eq!(k.persister.writers, 2, "from the file");
        assert_eq!(k.persister.lookback, 1024, "the look-back is on by default");
        let a = serve_args(&["--config", cfg, "--persister-writers", "3"]);
        let s = Settings::load(&a.common, Some(&a)).unwrap();
        assert_eq!(s.kafka.unwrap().persister.writers, 3, "flag beats file");
        let a = serve_args(&["--config", cfg, "--persister-lookback", "0"]);
        let s = Settings::load(&a.common, Some(&a)).unwrap();
        assert_eq!(
            s.kafka.unwrap().persister.lookback,
            0,
            "off for a real Kafka"
        );
        let a = serve_args(&["--config", cfg, "--persister-lookback", "70000"]);
        assert!(Settings::load(&a.common, Some(&a)).is_err());
        for bad in ["0", "9"] {
            let a = serve_args(&["--config", cfg, "--persister-writers", bad]);
            let err = Settings::load(&a.common, Some(&a))
                .err()
                .map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains("persister_writers")),
                "{bad}: {err:?}"
            );
        }
        // An unknown librdkafka property is caught by `config check`, before any connection.
        let a = serve_args(&["--config", cfg, "--kafka-option", "no.such.property=1"]);
        let s = Settings::load(&a.common, Some(&a)).unwrap();
        let err = s.check().unwrap_err().to_string();
        assert!(err.contains("no.such.property"), "{err}");
        // Durable mode needs the database and Redis.
        let a = serve_args(&["--kafka-brokers", "k1:9092"]);
        assert!(Settings::load(&a.common, Some(&a)).is_err());
    }

    #[test]
    fn generated_secret_is_kept_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = serve_args(&["--data-dir", dir.path().to_str().unwrap()]);
        let s = Settings::load(&a.common, Some(&a)).unwrap();
        let first = s.token_secret().unwrap();
        assert_eq!(first, s.token_secret().unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("token-secret"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_value_out_of_range_is_an_error_naming_its_setting_never_clamped() {
        let durable = [
            "--database-url",
            "postgres://localhost/x",
            "--redis-url",
            "redis://localhost",
            "--kafka-brokers",
            "localhost:9092",
        ];
        let cases: &[(&[&str], &str)] = &[
            (
                &["--ping-interval-secs", "0"],
                "ping_interval_secs (--ping-interval-secs)",
            ),
            (&["--ping-timeout-secs", "0"], "ping_timeout_secs"),
            (
                &[
                    "--database-url",
                    "postgres://localhost/x",
                    "--database-max-connections",
                    "1",
                ],
                "database_max_connections",
            ),
            (
                &[
                    "--redis-url",
                    "redis://localhost",
                    "--presence-ttl-secs",
                    "0",
                ],
                "presence_ttl_secs",
            ),
            (&["--kafka-ack-timeout-ms", "50"], "kafka_ack_timeout_ms"),
            (&["--persister-batch", "0"], "persister_batch"),
            (
                &["--persister-batch", "50001"],
                "persister_batch (--persister-batch) must be 1 to 50000",
            ),
            (&["--persister-batch-ms", "0"], "persister_batch_ms"),
            (&["--persister-stuck-secs", "0"], "persister_stuck_secs"),
        ];
        for (flags, key) in cases {
            let mut argv: Vec<&str> = flags.to_vec();
            if flags[0].starts_with("--kafka") || flags[0].starts_with("--persister") {
                argv.extend_from_slice(&durable);
            }
            let a = serve_args(&argv);
            match Settings::load(&a.common, Some(&a)) {
                Ok(_) => panic!("{flags:?} was accepted"),
                Err(e) => assert!(e.to_string().contains(key), "{flags:?}: {e}"),
            }
        }
    }
}
