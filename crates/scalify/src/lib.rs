//! # scalify — a ScalifyChat node, assembled
//!
//! The library behind the `scalify` binary, and what the in-process tests start:
//!
//! - [`config`]: the settings, declared once and layered (flags > environment > file >
//!   defaults) into [`config::Settings`];
//! - [`Node`]: the composition root — [`Node::build`] opens the engines the settings ask for,
//!   [`Node::run`] serves a listener until shutdown;
//! - [`supervisor`]: the node's background services under one owner and one shutdown path;
//! - [`run_persister`]: `scalify persister`, a persister alone;
//! - [`doctor`]: `scalify doctor`, what is wrong with the configured dependencies.

pub mod config;
pub mod doctor;
mod durable;
pub mod node;
mod startup;
pub mod supervisor;

pub use config::Settings;
pub use durable::run_persister;
pub use node::Node;
