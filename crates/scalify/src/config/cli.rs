//! The command line: the subcommands and every setting's flag, environment variable and file key,
//! declared once as a field (its doc comment is its `--help` text).

use super::*;

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
    /// A second address for the operator's endpoints (/metrics, /healthz, /readyz), e.g. on a
    /// private network; /metrics then leaves the client-facing listener
    #[arg(long, env = "SCALIFY_INTERNAL_LISTEN", value_name = "ADDR")]
    pub internal_listen: Option<SocketAddr>,
    /// Largest message text in bytes [default: 4096]
    #[arg(long, env = "SCALIFY_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Largest Socket.IO payload or REST body in bytes, both transports [default: 65536]
    #[arg(long, env = "SCALIFY_MAX_PAYLOAD_BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// Each user's request budget, in sends per second, whatever the transport (a sync, a
    /// room creation cost more; docs/security.md); 0 disables [default: 20]
    #[arg(long, env = "SCALIFY_RATE_LIMIT_PER_SEC")]
    pub rate_limit_per_sec: Option<u32>,
    /// Burst allowed above the rate [default: 40]
    #[arg(long, env = "SCALIFY_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,
    /// Most Socket.IO connections one user may hold open on a node [default: 20]
    #[arg(long, env = "SCALIFY_MAX_CONNECTIONS_PER_USER")]
    pub max_connections_per_user: Option<usize>,
    /// Most messages `sync` returns per room before `truncated: true` [default: 500]
    #[arg(long, env = "SCALIFY_SYNC_LIMIT")]
    pub sync_limit: Option<u32>,
    /// Lifetime of issued tokens, in seconds [default: 604800 (7 days)]
    #[arg(long, env = "SCALIFY_TOKEN_TTL_SECS")]
    pub token_ttl_secs: Option<u64>,
    /// Browser origins allowed to connect, comma-separated; same-origin is always allowed
    #[arg(long, env = "SCALIFY_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Logins per account before each further one waits 1 s, 2 s, 4 s, … up to 15 min after
    /// the last (a success starts over); 0 disables [default: 5]
    #[arg(long, env = "SCALIFY_LOGIN_ATTEMPTS_PER_ACCOUNT")]
    pub login_attempts_per_account: Option<u32>,
    /// Failed logins per client address, whatever the accounts, before the same backoff;
    /// 0 disables [default: 20]
    #[arg(long, env = "SCALIFY_LOGIN_ATTEMPTS_PER_ADDRESS")]
    pub login_attempts_per_address: Option<u32>,
    /// Registrations per client address, then one an hour (an hour without one starts over);
    /// 0 disables [default: 20]
    #[arg(long, env = "SCALIFY_REGISTRATIONS_PER_ADDRESS")]
    pub registrations_per_address: Option<u32>,
    /// Proxies (load balancers) whose X-Forwarded-For names the client's address: IP
    /// addresses or CIDR blocks, comma-separated. Unset: the TCP peer is the client
    #[arg(long, env = "SCALIFY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
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
    /// Seconds a message that notifies a member (their room's level) stays unread, with the
    /// member connected nowhere, before they are notified by Web Push and the webhook
    /// [default: 60]
    #[arg(long, env = "SCALIFY_NOTIFY_AFTER_SECS")]
    pub notify_after_secs: Option<u64>,
    /// Also POST each notification, as JSON signed with SCALIFY_NOTIFY_WEBHOOK_SECRET, here
    /// (email, mobile push, chat ops: docs/notifications.md)
    #[arg(long, env = "SCALIFY_NOTIFY_WEBHOOK_URL", value_name = "URL")]
    pub notify_webhook_url: Option<String>,
    /// How push services can reach the operator (VAPID `sub`): a mailto: or https: URL. The
    /// help is given as an attribute: its default, in the brackets every flag's help uses,
    /// would read to rustdoc as a link.
    #[arg(
        long,
        env = "SCALIFY_VAPID_SUBJECT",
        value_name = "URL",
        help = "How push services can reach the operator (VAPID `sub`): a mailto: or https: URL [default: mailto:admin@localhost]"
    )]
    pub vapid_subject: Option<String>,
    /// Accept Web Push endpoints over plain http:// and on private or loopback hosts (a push
    /// service inside the operator's network, or a test's); off, users cannot make the node
    /// post into its own network
    #[arg(long, env = "SCALIFY_PUSH_ALLOW_PRIVATE_ENDPOINTS")]
    #[serde(default)]
    pub push_allow_private_endpoints: bool,
    /// Largest file a member may upload, in bytes [default: 10485760]
    #[arg(long, env = "SCALIFY_UPLOAD_MAX_BYTES")]
    pub upload_max_bytes: Option<u64>,
    /// Largest image a preview is made of, in pixels; larger images are refused
    /// [default: 40000000]
    #[arg(long, env = "SCALIFY_UPLOAD_MAX_PIXELS")]
    pub upload_max_pixels: Option<u64>,
    /// Seconds an upload may wait to be sent in a message; after it, the file is deleted
    /// [default: 86400]
    #[arg(long, env = "SCALIFY_UPLOAD_EXPIRY_SECS")]
    pub upload_expiry_secs: Option<u64>,
    /// S3-compatible object storage for uploads (`https://s3.eu-west-1.amazonaws.com`,
    /// `http://minio:9000`), which every node of a cluster must share; credentials from
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. Unset, files are kept in the data directory
    #[arg(long, env = "SCALIFY_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// The bucket uploads go to (with --s3-endpoint)
    #[arg(long, env = "SCALIFY_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// The bucket's region [default: us-east-1]
    #[arg(long, env = "SCALIFY_S3_REGION")]
    pub s3_region: Option<String>,
    /// Kafka bootstrap brokers (`host:9092,host2:9092`): durable mode. Every accepted message
    /// is produced to Kafka (idempotent, acks=all) before its ack; persisters write it to
    /// PostgreSQL. Needs --database-url and --redis-url.
    #[arg(long, env = "SCALIFY_KAFKA_BROKERS", value_name = "HOSTS")]
    pub kafka_brokers: Option<String>,
    /// The messages topic [default: scalify.messages]
    #[arg(long, env = "SCALIFY_KAFKA_TOPIC")]
    pub kafka_topic: Option<String>,
    /// Where undecodable records go: the messages topic + ".dlq" unless set
    /// [default: scalify.messages.dlq]
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
    /// Seconds a durable-mode send's client_id is remembered: a resend within it returns the
    /// original message; after it, a resend is stored as a new message. Each message costs
    /// Redis one key for this long (about 210 bytes) [default: 86400]
    #[arg(long, env = "SCALIFY_IDEMPOTENCY_WINDOW_SECS")]
    pub idempotency_window_secs: Option<u64>,
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
