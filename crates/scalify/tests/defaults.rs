//! A setting's default is stated in three places a reader relies on: `--help` (the
//! `[default: …]` of its doc comment), the code that applies it ([`Settings::load`]) and the
//! tables of docs/operations.md and docs/durable-mode.md. These tests hold the three together.

use std::collections::BTreeMap;
use std::path::Path;

use clap::{CommandFactory, Parser};
use scalify::config::{Cli, Command, Settings};

/// `serve`'s flags: long name → `[default: …]` of its help, if any.
fn help_defaults() -> BTreeMap<String, Option<String>> {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("the serve subcommand");
    serve
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            let default = help.split("[default: ").nth(1).map(|rest| {
                let end = rest.find(']').unwrap_or(rest.len());
                // "604800 (7 days)" → "604800": the value, not its gloss.
                rest[..end].split(" (").next().unwrap_or("").to_owned()
            });
            Some((format!("--{long}"), default))
        })
        .collect()
}

/// The rows of a docs table of flags: (flag, default as written).
fn doc_rows(file: &str) -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("the docs file");
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (flags, defaults) = (cells[1], cells[2]);
        // "`--a` / `--b`" with "`20` / `40`": one default each.
        let flags: Vec<&str> = flags.split(" / ").collect();
        let defaults: Vec<&str> = defaults.split(" / ").collect();
        for (i, flag) in flags.iter().enumerate() {
            let flag = flag.trim_matches('`').split(' ').next().unwrap_or("");
            let default = defaults.get(i).or(defaults.first()).copied().unwrap_or("");
            rows.push((flag.to_owned(), default.to_owned()));
        }
    }
    assert!(!rows.is_empty(), "{file} has no table of flags");
    rows
}

#[test]
fn the_docs_tables_state_the_help_defaults() {
    let help = help_defaults();
    for file in ["docs/operations.md", "docs/durable-mode.md"] {
        for (flag, doc) in doc_rows(file) {
            let Some(in_help) = help.get(&flag) else {
                panic!("{file} documents {flag}, which `scalify serve` does not have");
            };
            match (
                doc.strip_prefix('`').and_then(|d| d.strip_suffix('`')),
                in_help,
            ) {
                (Some(doc), Some(in_help)) => {
                    assert_eq!(
                        doc, in_help,
                        "{flag}: {file} says `{doc}`, --help says {in_help}"
                    )
                }
                (Some(doc), None) => panic!("{flag}: {file} says `{doc}`, --help states none"),
                // "—", "off", "same-origin": no value of its own; --help must not state one.
                (None, Some(in_help)) => panic!("{flag}: --help says {in_help}, {file} says {doc}"),
                (None, None) => {}
            }
        }
    }
}

/// Settings loaded from no flag at all (durable mode and S3 storage on, so that their defaults
/// apply too).
fn loaded() -> Settings {
    // A cluster needs a shared token secret, which only the environment or the file gives.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("scalify.toml");
    std::fs::write(&file, format!("token_secret = \"{}\"\n", "s".repeat(32))).expect("the file");
    let argv = [
        "scalify",
        "serve",
        "--config",
        file.to_str().expect("a UTF-8 path"),
        "--database-url",
        "postgres://localhost/x",
        "--redis-url",
        "redis://localhost",
        "--kafka-brokers",
        "localhost:9092",
        "--s3-endpoint",
        "http://localhost:9000",
        "--s3-bucket",
        "files",
    ];
    let Command::Serve(args) = Cli::try_parse_from(argv).expect("flags parse").command else {
        panic!("not serve");
    };
    Settings::load(&args.common, Some(&args)).expect("settings load")
}

#[test]
fn every_help_default_is_the_value_the_code_applies() {
    let s = loaded();
    let kafka = s.kafka.as_ref().expect("durable mode");
    let secs = |d: std::time::Duration| d.as_secs().to_string();
    let millis = |d: std::time::Duration| d.as_millis().to_string();
    let applied: BTreeMap<&str, String> = [
        ("--data-dir", s.data_dir.display().to_string()),
        ("--log-format", format!("{:?}", s.log_format).to_lowercase()),
        ("--listen", s.listen.to_string()),
        ("--max-message-bytes", s.chat.max_text_bytes.to_string()),
        (
            "--max-payload-bytes",
            s.transport.max_payload_bytes.to_string(),
        ),
        (
            "--rate-limit-per-sec",
            s.chat.rate_limit_per_sec.to_string(),
        ),
        ("--rate-limit-burst", s.chat.rate_limit_burst.to_string()),
        ("--sync-limit", s.chat.sync_per_room.to_string()),
        (
            "--max-connections-per-user",
            s.chat.max_connections_per_user.to_string(),
        ),
        (
            "--login-attempts-per-account",
            s.chat.throttle.login_per_account.free.to_string(),
        ),
        (
            "--login-attempts-per-address",
            s.chat.throttle.login_per_address.free.to_string(),
        ),
        (
            "--registrations-per-address",
            s.chat.throttle.registrations_per_address.free.to_string(),
        ),
        ("--token-ttl-secs", secs(s.token_ttl)),
        ("--ping-interval-secs", secs(s.transport.ping_interval)),
        ("--ping-timeout-secs", secs(s.transport.ping_timeout)),
        (
            "--sqlite-synchronous",
            format!("{:?}", s.durability).to_lowercase(),
        ),
        (
            "--database-max-connections",
            s.postgres
                .as_ref()
                .map(|p| p.max_connections)
                .unwrap_or(0)
                .to_string(),
        ),
        (
            "--redis-prefix",
            s.redis
                .as_ref()
                .map(|r| r.prefix.clone())
                .unwrap_or_default(),
        ),
        (
            "--presence-ttl-secs",
            s.redis
                .as_ref()
                .map(|r| secs(r.presence_ttl))
                .unwrap_or_default(),
        ),
        ("--notify-after-secs", secs(s.notify.delay)),
        ("--vapid-subject", s.notify.vapid_subject.clone()),
        ("--kafka-topic", kafka.config.topic.clone()),
        (
            "--kafka-dead-letter-topic",
            kafka.config.dead_letter_topic.clone(),
        ),
        ("--kafka-partitions", kafka.config.partitions.to_string()),
        ("--kafka-replication", kafka.config.replication.to_string()),
        ("--kafka-client-id", kafka.config.client_id.clone()),
        ("--kafka-group", kafka.config.group.clone()),
        ("--kafka-ack-timeout-ms", millis(kafka.ingest.ack_timeout)),
        ("--idempotency-window-secs", secs(kafka.idempotency_window)),
        ("--persister-batch", kafka.persister.batch_max.to_string()),
        ("--persister-batch-ms", millis(kafka.persister.batch_wait)),
        ("--persister-writers", kafka.persister.writers.to_string()),
        ("--persister-stuck-secs", secs(kafka.persister.stuck_after)),
        ("--persister-lookback", kafka.persister.lookback.to_string()),
        ("--upload-max-bytes", s.uploads.max_bytes.to_string()),
        ("--upload-max-pixels", s.uploads.max_pixels.to_string()),
        ("--upload-expiry-secs", secs(s.uploads.expiry)),
        (
            "--s3-region",
            s.uploads
                .s3
                .as_ref()
                .map(|s3| s3.region.clone())
                .unwrap_or_default(),
        ),
    ]
    .into_iter()
    .collect();
    for (flag, default) in help_defaults() {
        let Some(default) = default else { continue };
        let Some(value) = applied.get(flag.as_str()) else {
            panic!("{flag} states a default ({default}) that this test does not check yet");
        };
        let value = value.trim_start_matches("./");
        assert_eq!(
            default.trim_start_matches("./"),
            value,
            "{flag}: --help says {default}, the code applies {value}"
        );
    }
}
