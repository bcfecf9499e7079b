//! Builds the web UI (`web/`, Vite) into `$OUT_DIR/web`, which `src/web.rs` embeds in the
//! binary — so `cargo run` / `cargo build` from a fresh clone gives a working chat page.
//!
//! Needs Node.js and npm (`npm ci` runs when `web/node_modules` is missing or older than
//! `web/package-lock.json`). Without them the build still succeeds, with a warning, and the
//! binary serves a page saying how to build the UI. `SCALIFY_WEB_DIST=<dir>` embeds a UI built
//! elsewhere instead (packaging pipelines).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let web = manifest.join("../../web");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("web");
    for input in [
        "src",
        "public",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
    ] {
        println!("cargo:rerun-if-changed={}", web.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=SCALIFY_WEB_DIST");

    let result = match std::env::var_os("SCALIFY_WEB_DIST") {
        Some(dist) => {
            copy_dir(Path::new(&dist), &out).map_err(|e| format!("copying SCALIFY_WEB_DIST: {e}"))
        }
        None => build(&web, &out),
    };
    if let Err(e) = result {
        println!("cargo:warning=web UI not built: {e}. The binary will serve a placeholder page.");
        if let Err(e) = placeholder(&out) {
            println!("cargo:warning=cannot write the placeholder page: {e}");
        }
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}

fn modified(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn build(web: &Path, out: &Path) -> Result<(), String> {
    let installed = web.join("node_modules/.package-lock.json");
    let stale = match (
        modified(&installed),
        modified(&web.join("package-lock.json")),
    ) {
        (Some(i), Some(lock)) => i < lock,
        _ => true,
    };
    if stale {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(web))?;
    }
    run(Command::new("node")
        .args([
            "node_modules/vite/bin/vite.js",
            "build",
            "--logLevel",
            "warn",
        ])
        .env("SCALIFY_WEB_OUT", out)
        .current_dir(web))?;
    if out.join("index.html").is_file() {
        Ok(())
    } else {
        Err("vite produced no index.html".into())
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn placeholder(out: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join("index.html"),
        "<!doctype html><meta charset=utf-8><title>ScalifyChat</title>\
         <p>The web UI was not built into this binary: install Node.js and npm, then rebuild \
         (<code>cargo build --release</code>). The Socket.IO and REST APIs work regardless.</p>",
    )
}
