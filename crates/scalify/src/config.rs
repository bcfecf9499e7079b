//! Configuration, layered: command-line flags > `SCALIFY_*` environment variables > the
//! config file (`--config scalify.toml`) > defaults.
//!
//! Every setting is declared once, as a field of [`CommonArgs`] or [`ServeArgs`]: its flag,
//! its environment variable (clap does those two layers) and its config-file key (the field's
//! name, read by serde) come from that one declaration. [`Settings::load`] lays the flags over
//! the file and turns the result into [`Settings`], applying the defaults and checks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use scalify_fanout::redis::RedisConfig;
use scalify_kafka::ingest::IngestConfig;
use scalify_kafka::persister::PersisterConfig;
use scalify_kafka::KafkaConfig;
use scalify_server::TransportConfig;
use scalify_service::ChatConfig;
use scalify_store::postgres::PgConfig;
use scalify_store::sqlite::{Durability, SqliteConfig};
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(
    name = "scalify",
    version,
    about = "ScalifyChat: a realtime chat server (Socket.IO + REST) that runs as one binary",
    long_about = "ScalifyChat: a realtime chat server speaking the Socket.IO v4 protocol and a REST API.\n\n\
With no flags, `scalify serve` needs no other service: it keeps its data in SQLite under \
./scalify-data and listens on 127.0.0.1:3000.\n\n\
Every flag can also be set by an environment variable (shown as [env: ...]) or by a key of \
the same name, with '_' for '-', in the config file. Precedence: flag > env > file > default. \
The token signing secret is read from SCALIFY_TOKEN_SECRET or the file's `token_secret` only."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the chat server: embedded (SQLite, in-process fan-out) by default; a cluster node
    /// with --database-url and --redis-url.
    Serve(Box<ServeArgs>),
    /// Create or upgrade the database schema, then exit.
    Migrate(CommonArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Grant or revoke the admin role (the admin dashboard) in the store.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Check that every configured dependency is reachable and usable, and say plainly what
    /// is wrong if not (takes the same flags and environment as `serve`).
    Doctor(Box<ServeArgs>),
    /// Run a persister alone: consume the Kafka messages topic and write it to PostgreSQL
    /// (needs --kafka-brokers, --database-url, --redis-url; serves /metrics, /healthz and
    /// /readyz on --listen).
    Persister(Box<ServeArgs>),
    /// Load-test running nodes over the public wire contract (see docs/performance.md).
    Bench(scalify_bench::BenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the configuration (file, environment and flags, as `serve` would load them):
    /// unknown keys and invalid values are reported; exit status 1 if anything is wrong.
    Check(Box<ServeArgs>),
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Make a user an admin.
    Grant(AdminArgs),
    /// Take the admin role away from a user.
    Revoke(AdminArgs),
}

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The user's name.
    pub username: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Serialize, Deserialize, Debug, Clone, Default)]
pub struct CommonArgs {
    /// Config file (TOML); unknown keys are an error.
    #[arg(long, env = "SCALIFY_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Directory for the SQLite database and the generated token secret [default: ./scalify-data]
    #[arg(long, env = "SCALIFY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format: human-readable text or one JSON object per line [default: text]
    #[arg(long, env = "SCALIFY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// PostgreSQL store instead of SQLite (`postgres://user:pass@host:5432/db`); required when
    /// several nodes serve one cluster. Migrations are applied on start.
    #[arg(long, env = "SCALIFY_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
}

/// The settings of a node, as flags and as config-file keys (a field's name is its key).
#[derive(Args, Serialize, Deserialize, Debug, Clone, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
    /// Address to listen on [default: 127.0.0.1:3000]
    #[arg(long, env = "SCALIFY_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Largest message text in bytes [default: 4096]
    #[arg(long, env = "SCALIFY_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Largest Socket.IO payload or REST body in bytes, both transports [default: 65536]
    #[arg(long, env = "SCALIFY_MAX_PAYLOAD_BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// Sends + typing events per second per connection; 0 disables [default: 20]
    #[arg(long, env = "SCALIFY_RATE_LIMIT_PER_SEC")]
    pub rate_limit_per_sec: Option<u32>,
    /// Burst allowed above the rate [default: 40]
    #[arg(long, env = "SCALIFY_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,
    /// Most messages `sync` returns per room before `truncated: true` [default: 500]
    #[arg(long, env = "SCALIFY_SYNC_LIMIT")]
    pub sync_limit: Option<u32>,
    /// Lifetime of issued tokens, in seconds [default: 604800 (7 days)]
    #[arg(long, env = "SCALIFY_TOKEN_TTL_SECS")]
    pub token_ttl_secs: Option<u64>,
    /// Browser origins allowed to connect, comma-separated; same-origin is always allowed
    #[arg(long, env = "SCALIFY_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Seconds between heartbeats; a client whose heartbeat fails is disconnected [default: 25]
    #[arg(long, env = "SCALIFY_PING_INTERVAL_SECS")]
    pub ping_interval_secs: Option<u64>,
    /// Seconds to wait for a heartbeat's answer [default: 20]
    #[arg(long, env = "SCALIFY_PING_TIMEOUT_SECS")]
    pub ping_timeout_secs: Option<u64>,
    /// SQLite commit durability: `full` survives power loss, `normal` survives process crashes
    /// [default: full]
    #[arg(long, env = "SCALIFY_SQLITE_SYNCHRONOUS", value_enum)]
    pub sqlite_synchronous: Option<SqliteSync>,
    /// Connections this node opens to PostgreSQL [default: 16]
    #[arg(long, env = "SCALIFY_DATABASE_MAX_CONNECTIONS")]
    pub database_max_connections: Option<u32>,
    /// Redis for a cluster (`redis://host:6379`): messages, typing and presence cross nodes
    /// over it. Needs a shared `token_secret` and, for history, `--database-url`.
    #[arg(long, env = "SCALIFY_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel, so clusters can share one Redis [default: scalify]
    #[arg(long, env = "SCALIFY_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// Usernames with the admin role (the admin dashboard), comma-separated; more can be
    /// granted with `scalify admin grant <user>`
    #[arg(long, env = "SCALIFY_ADMINS", value_delimiter = ',')]
    pub admins: Option<Vec<String>>,
    /// Seconds a node's presence entries outlive its last refresh: users of a node that dies
    /// go offline within this time plus a third of it [default: 15]
    #[arg(long, env = "SCALIFY_PRESENCE_TTL_SECS")]
    pub presence_ttl_secs: Option<u64>,
    /// Kafka bootstrap brokers (`host:9092,host2:9092`): durable mode. Every accepted message
    /// is produced to Kafka (idempotent, acks=all) before its ack; persisters write it to
    /// PostgreSQL. Needs --database-url and --redis-url.
    #[arg(long, env = "SCALIFY_KAFKA_BROKERS", value_name = "HOSTS")]
    pub kafka_brokers: Option<String>,
    /// The messages topic [default: scalify.messages]
    #[arg(long, env = "SCALIFY_KAFKA_TOPIC")]
    pub kafka_topic: Option<String>,
    /// Where undecodable records go [default: the messages topic + ".dlq"]
    #[arg(long, env = "SCALIFY_KAFKA_DEAD_LETTER_TOPIC")]
    pub kafka_dead_letter_topic: Option<String>,
    /// Partitions of the messages topic when it is created [default: 6]
    #[arg(long, env = "SCALIFY_KAFKA_PARTITIONS")]
    pub kafka_partitions: Option<i32>,
    /// Replication factor of created topics (3 on a production cluster) [default: 1]
    #[arg(long, env = "SCALIFY_KAFKA_REPLICATION")]
    pub kafka_replication: Option<i32>,
    /// Kafka `client.id` prefix [default: scalify]
    #[arg(long, env = "SCALIFY_KAFKA_CLIENT_ID")]
    pub kafka_client_id: Option<String>,
    /// Consumer group of the persisters [default: scalify-persister]
    #[arg(long, env = "SCALIFY_KAFKA_GROUP")]
    pub kafka_group: Option<String>,
    /// Extra librdkafka settings, `key=value`, repeatable or comma-separated — SASL/TLS:
    /// `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`, `sasl.username=…`,
    /// `sasl.password=…`, `ssl.ca.location=/path/ca.pem`
    #[arg(
        long = "kafka-option",
        env = "SCALIFY_KAFKA_OPTIONS",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    pub kafka_options: Option<Vec<String>>,
    /// Milliseconds a sender waits for the broker's confirmation before an error ack (the
    /// message is still produced; retry with the same client_id) [default: 10000]
    #[arg(long, env = "SCALIFY_KAFKA_ACK_TIMEOUT_MS")]
    pub kafka_ack_timeout_ms: Option<u64>,
    /// Also run a persister in this process (`serve` only; `scalify persister` runs one alone)
    #[arg(long, env = "SCALIFY_PERSISTER")]
    #[serde(default)]
    pub persister: bool,
    /// Most messages a persister writes in one transaction [default: 2000]
    #[arg(long, env = "SCALIFY_PERSISTER_BATCH")]
    pub persister_batch: Option<usize>,
    /// Milliseconds a persister batch waits to fill [default: 20]
    #[arg(long, env = "SCALIFY_PERSISTER_BATCH_MS")]
    pub persister_batch_ms: Option<u64>,
    /// Batches a persister writes at once, each on its own database connection and for its
    /// own partitions (a partition's batches are written one after another); 1 to 8
    /// [default: 2]
    #[arg(long, env = "SCALIFY_PERSISTER_WRITERS")]
    pub persister_writers: Option<usize>,
    /// Seconds with lag and no progress before the persister re-creates its consumer
    /// [default: 30]
    #[arg(long, env = "SCALIFY_PERSISTER_STUCK_SECS")]
    pub persister_stuck_secs: Option<u64>,
    /// Records a persister reads again before where it resumes a partition, to close the hole
    /// a broker that skips records inside a batch leaves (docs/durable-mode.md); 0 turns this
    /// off, for Apache Kafka and Redpanda; at most 65536 [default: 1024]
    #[arg(long, env = "SCALIFY_PERSISTER_LOOKBACK")]
    pub persister_lookback: Option<i64>,
}

/// Durable mode's settings (`--kafka-brokers`).
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub config: KafkaConfig,
    pub ingest: IngestConfig,
    pub persister: PersisterConfig,
    /// Run a persister inside `serve`.
    pub embedded_persister: bool,
}

#[derive(ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    Full,
    Normal,
}

/// The config file: the keys of [`ServeArgs`] (each field's name), plus `token_secret`.
#[derive(Debug, Default)]
pub struct FileConfig {
    pub settings: ServeArgs,
    /// The token signing secret (at least 32 bytes). Without one, embedded mode generates one
    /// into the data directory.
    pub token_secret: Option<String>,
}

/// Keys the file may hold that are not settings of [`ServeArgs`].
const FILE_ONLY_KEYS: [&str; 1] = ["token_secret"];
/// Settings that only a flag or the environment can give.
const NOT_IN_FILE: [&str; 1] = ["config"];

impl FileConfig {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut table: toml::Table = toml::from_str(text)?;
        // `ServeArgs` flattens `CommonArgs`, which rules out serde's `deny_unknown_fields`:
        // the known keys are the settings clap knows, by field name.
        let known = known_keys();
        if let Some(key) = table
            .keys()
            .find(|k| !known.contains(k.as_str()) && !FILE_ONLY_KEYS.contains(&k.as_str()))
        {
            bail!("unknown field `{key}`, expected one of the settings `scalify serve --help` lists (with '_' for '-') or `token_secret`");
        }
        let token_secret = match table.remove("token_secret") {
            None => None,
            Some(toml::Value::String(s)) => Some(s),
            Some(_) => bail!("token_secret must be a string"),
        };
        Ok(FileConfig {
            settings: table.try_into()?,
            token_secret,
        })
    }
}

/// The config-file keys: the field names of [`ServeArgs`] (clap's argument ids).
fn known_keys() -> std::collections::HashSet<String> {
    use clap::CommandFactory;
    Cli::command()
        .find_subcommand("serve")
        .map(|serve| {
            serve
                .get_arguments()
                .map(|a| a.get_id().to_string())
                .filter(|id| !NOT_IN_FILE.contains(&id.as_str()))
                .collect()
        })
        .unwrap_or_default()
}

impl ServeArgs {
    /// These settings laid over `below`: a setting given here wins, any other comes from
    /// `below`. (`persister` is a switch: given here means on.)
    fn over(&self, below: &ServeArgs) -> anyhow::Result<ServeArgs> {
        let mut merged = to_map(below)?;
        for (key, value) in to_map(self)? {
            if !(value.is_null() || value == serde_json::Value::Bool(false)) {
                merged.insert(key, value);
            }
        }
        Ok(serde_json::from_value(serde_json::Value::Object(merged))?)
    }
}

fn to_map(args: &ServeArgs) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::to_value(args)? {
        serde_json::Value::Object(map) => {
            Ok(map.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        _ => bail!("settings are not a map"),
    }
}

/// The merged configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
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
        let postgres = o.common.database_url.clone().map(|url| {
            let mut c = PgConfig::new(url);
            if let Some(n) = o.database_max_connections {
                c.max_connections = n.max(2);
            }
            c
        });
        let redis = o.redis_url.clone().map(|url| {
            let mut c = RedisConfig::new(url);
            if let Some(p) = o.redis_prefix.clone() {
                c.prefix = p;
            }
            if let Some(t) = o.presence_ttl_secs {
                c.presence_ttl = Duration::from_secs(t.max(1));
            }
            c
        });
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
        Ok(Settings {
            postgres,
            redis,
            kafka,
            listen: o.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 3000))),
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
            },
            transport: TransportConfig {
                max_payload_bytes,
                rate_limit_per_sec: o
                    .rate_limit_per_sec
                    .unwrap_or(transport_defaults.rate_limit_per_sec),
                rate_limit_burst: o
                    .rate_limit_burst
                    .unwrap_or(transport_defaults.rate_limit_burst),
                allowed_origins: o.allowed_origins.clone().unwrap_or_default(),
                ping_interval: Duration::from_secs(
                    o.ping_interval_secs
                        .unwrap_or(transport_defaults.ping_interval.as_secs())
                        .max(1),
                ),
                ping_timeout: Duration::from_secs(
                    o.ping_timeout_secs
                        .unwrap_or(transport_defaults.ping_timeout.as_secs())
                        .max(1),
                ),
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

    fn ensure_data_dir(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating data directory {}", self.data_dir.display()))
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
        ingest.ack_timeout = Duration::from_millis(ms.max(100));
    }
    let mut persister = PersisterConfig::new(format!("{}-{}", hostname(), std::process::id()));
    if let Some(n) = o.persister_batch {
        persister.batch_max = n.clamp(1, 50_000);
    }
    if let Some(ms) = o.persister_batch_ms {
        persister.batch_wait = Duration::from_millis(ms.max(1));
    }
    if let Some(n) = o.persister_writers {
        if !(1..=8).contains(&n) {
            bail!("persister_writers must be 1 to 8 (got {n})");
        }
        persister.writers = n;
    }
    if let Some(secs) = o.persister_stuck_secs {
        persister.stuck_after = Duration::from_secs(secs.max(1));
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
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "persister".into())
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
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
        assert_eq!(s.transport.rate_limit_per_sec, 7, "flag beats file");
        assert_eq!(s.transport.rate_limit_burst, 40, "default");
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
}
