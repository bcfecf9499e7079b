//! # scalify-files — where attachments live
//!
//! [`Files`] is the narrow store the service keeps uploads in: write a stream under a key
//! (bounded, never held whole in memory), read it back as a stream, delete it. Two engines sit
//! behind it, both through the `object_store` crate: the data directory (embedded mode, or a
//! volume every node mounts) and S3-compatible object storage (clusters). One contract suite
//! (`tests/contract.rs`) runs on both.
//!
//! [`sniff`] names a file's type from its first bytes (never from what the client says), and
//! [`preview`] makes a small PNG of an image after checking its pixel count, so a
//! decompression bomb is refused before it is decoded.

mod preview;
mod sniff;
mod store;

pub use preview::{preview, Preview, PreviewError, PREVIEW_EDGE};
pub use sniff::{sniff, Sniffed, SNIFF_BYTES};
pub use store::{Download, Files, FilesError, S3Config, Stored};
