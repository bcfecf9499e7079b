//! `scalify` — the ScalifyChat server binary. Parses the command line, loads the layered
//! configuration (flags > `SCALIFY_*` env > config file > defaults, see [`scalify::config`]),
//! sets up the process (allocator, logging, signals, open-files limit) and hands over to the
//! library: [`scalify::Node`] for `serve`. Nothing else lives here.

use anyhow::Context;
use clap::Parser;
use scalify::config::{AdminCommand, Cli, Command, ConfigCommand, LogFormat, Settings};
use scalify::{doctor, Node};
use scalify_store::postgres::PgStore;
use scalify_store::sqlite::SqliteStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The Rust side allocates from mimalloc (C libraries — librdkafka, SQLite — keep glibc's
/// malloc, tuned by [`tune_malloc`]). At 10,000 msgs/s in durable mode glibc's malloc/free
/// took ~13 % of the node's CPU samples; with mimalloc the embedded `durable` bench acked
/// 14–21 % more sends per server CPU-second (docs/performance.md) at the same
/// 7.1 KiB per idle connection. See `mimalloc_tuning` for the memory side.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scalify: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// mimalloc's defaults keep freed memory: arenas are committed eagerly and purged only after a
/// delay, when the allocator next runs its collection. Measured with the defaults: 36 MB RSS at
/// start instead of 12, and 69–90 MB instead of 13 after 16 concurrent registrations (each
/// password hash takes 19 MiB) — memory a mostly idle node never gave back. Committing arenas
/// on demand and purging (decommitting) freed memory at once keeps RSS where glibc kept it
/// (7.1 KiB per idle connection). Set here rather than by environment so every start gets
/// them; an explicit `MIMALLOC_*` variable wins.
///
/// It must run before the first allocation: the Rust runtime allocates before `main`, and the
/// arena that allocation reserves keeps the settings it was made with (set at the top of
/// `main`, the node started at 21 MB and kept 27 MB after the registrations). So it is a
/// constructor (`.init_array`), which the loader runs before the runtime starts; it reads the
/// environment with `getenv`, which does not allocate.
#[cfg(target_os = "linux")]
mod mimalloc_tuning {
    use std::ffi::{c_long, CStr};

    use libmimalloc_sys::{mi_option_set, mi_option_t};

    /// (environment variable that overrides it, mimalloc's `mi_option_t` — the same in
    /// mimalloc 2 and 3, libmimalloc-sys names only some — and our value). mimalloc's own
    /// defaults are 2, 1 and 10.
    pub(crate) const SETTINGS: [(&CStr, mi_option_t, c_long); 3] = [
        (c"MIMALLOC_ARENA_EAGER_COMMIT", 4, 0),
        (c"MIMALLOC_PURGE_DECOMMITS", 5, 1),
        (c"MIMALLOC_PURGE_DELAY", 15, 0),
    ];

    #[used]
    #[link_section = ".init_array"]
    static TUNE_MIMALLOC: extern "C" fn() = tune;

    extern "C" fn tune() {
        for (env, option, value) in SETTINGS {
            // SAFETY: getenv reads the environment (no thread can be changing it yet, as none
            // exists); mi_option_set only changes allocator tuning.
            unsafe {
                if libc::getenv(env.as_ptr()).is_null() {
                    mi_option_set(option, value);
                }
            }
        }
    }
}

/// glibc's malloc serves the C libraries (librdkafka, SQLite). Measured when it served the
/// whole process (before mimalloc): it gives each thread that allocates its own arena (up to
/// 8 per core), and with buffers allocated on one thread and freed on another the arenas
/// fragment — two arenas measured 16.5 KiB RSS per idle connection against 20.5 KiB with the
/// default. An explicit `MALLOC_ARENA_MAX` in the environment wins.
///
/// Allocations of 4 MiB and more are always mapped on their own, so freeing them gives the
/// memory back. Without a fixed threshold glibc raises it to the size of the last such block
/// freed (then ~19 MiB of RSS per concurrent password hash, never returned). An explicit
/// `MALLOC_MMAP_THRESHOLD_` in the environment wins.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (env, param, value) in [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 2),
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 4 << 20),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: mallopt only changes allocator tuning; called first thing in main,
            // before any other thread exists.
            unsafe {
                libc::mallopt(param, value);
            }
        }
    }
}

/// Logs go to stderr (text or JSON lines, level from `SCALIFY_LOG`); warnings and errors are
/// also kept for the admin dashboard.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let spec = std::env::var("SCALIFY_LOG").unwrap_or_else(|_| "info".into());
    let mut filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The Socket.IO engine's debug logs print raw packets — handshake tokens and message text.
    // Keep them at info unless the operator names them explicitly.
    for engine in ["socketioxide", "engineioxide"] {
        if !spec.contains(engine) {
            if let Ok(directive) = format!("{engine}=info").parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    // Colours only for a terminal: log files and journald get plain text.
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let registry = tracing_subscriber::registry()
        .with(scalify_server::recent::layer())
        .with(filter);
    match format {
        LogFormat::Json => registry.with(output.json()).init(),
        LogFormat::Text => registry.with(output).init(),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let settings = Settings::load(&args.common, Some(&args))?;
            init_logging(settings.log_format);
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(serve(settings))
        }
        Command::Persister(args) => {
            let settings = Settings::load(&args.common, Some(&args))?;
            init_logging(settings.log_format);
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async { scalify::run_persister(settings, on_shutdown_signal()).await })
        }
        Command::Bench(args) => {
            let json = args.json;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let report = runtime.block_on(scalify_bench::run(args))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(())
        }
        Command::Config(ConfigCommand::Check(args)) => {
            let settings = Settings::load(&args.common, Some(&args))?;
            settings.check()?;
            match &args.common.config {
                Some(path) => println!("{}: configuration is valid", path.display()),
                None => {
                    println!("configuration is valid (no config file; environment and flags only)")
                }
            }
            Ok(())
        }
        Command::Admin(cmd) => {
            let (args, grant) = match cmd {
                AdminCommand::Grant(a) => (a, true),
                AdminCommand::Revoke(a) => (a, false),
            };
            let settings = Settings::load(&args.common, None)?;
            init_logging(settings.log_format);
            let username = scalify_core::Username::parse(&args.username)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let found = runtime.block_on(async {
                let store = scalify::node::open_store(&settings).await?;
                let found = store.set_admin(&username, grant).await?;
                store.flush().await?;
                anyhow::Ok(found)
            })?;
            if !found {
                anyhow::bail!("no user named '{username}'");
            }
            println!(
                "{username} {}",
                if grant {
                    "is now an admin"
                } else {
                    "is no longer an admin"
                }
            );
            Ok(())
        }
        Command::Doctor(args) => {
            let settings = Settings::load(&args.common, Some(&args))?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let failed = runtime.block_on(doctor::run(&settings));
            if failed > 0 {
                anyhow::bail!("{failed} check(s) failed");
            }
            Ok(())
        }
        Command::Migrate(common) => {
            let settings = Settings::load(&common, None)?;
            init_logging(settings.log_format);
            if let Some(pg) = &settings.postgres {
                let runtime =
                    tokio::runtime::Runtime::new().context("starting the async runtime")?;
                let applied = runtime
                    .block_on(PgStore::migrate_only(pg))
                    .context("migrating the PostgreSQL database")?;
                println!("PostgreSQL: {applied} migration(s) applied; schema is current");
                return Ok(());
            }
            let config = settings.sqlite_config()?;
            let applied = SqliteStore::migrate_only(&config)
                .with_context(|| format!("migrating {}", config.path.display()))?;
            println!(
                "{}: {applied} migration(s) applied; schema is current",
                config.path.display()
            );
            Ok(())
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    // Every connection is a descriptor: allow as many as the hard limit does.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-files limit");
    }
    // One shutdown trigger for the whole life of the node, start-up included: a SIGTERM while
    // it waits for Redis, PostgreSQL or the Kafka brokers stops it, as one while it serves
    // does.
    let shutdown = on_shutdown_signal();
    let Some(node) = Node::build(&settings, &shutdown).await? else {
        return Ok(());
    };
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    println!("ScalifyChat is running at http://{addr}/");
    if let Some(internal) = node.internal_addr() {
        println!("Operator endpoints (/metrics, /healthz, /readyz) at http://{internal}/");
    }
    node.run(listener, shutdown).await
}

/// A token cancelled on SIGINT or SIGTERM.
fn on_shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        cancel.cancel();
    });
    token
}

/// Resolves on SIGINT or SIGTERM: the one trigger of the one graceful-shutdown path.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The constructor ran (in this test binary too) and set what it is meant to.
    #[test]
    fn mimalloc_is_tuned_before_main() {
        for (env, option, expected) in crate::mimalloc_tuning::SETTINGS {
            if std::env::var_os(env.to_str().unwrap_or_default()).is_none() {
                // SAFETY: reads an allocator option.
                let value = unsafe { libmimalloc_sys::mi_option_get(option) };
                assert_eq!(value, expected, "{env:?}");
            }
        }
    }
}
