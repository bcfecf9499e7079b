//! # scalify-service — the chat application, independent of transport
//!
//! [`Chat`] is what REST and Socket.IO handlers call: it validates input into domain types,
//! enforces membership, runs the send pipeline (validate → commit in the [`Store`] → publish
//! through the [`Fanout`]) and tracks presence. It knows nothing of HTTP or Socket.IO, so both
//! transports share one set of rules, and it knows nothing of SQLite or Redis, so engines can be
//! swapped behind their traits.
//!
//! [`Store`]: scalify_store::Store
//! [`Fanout`]: scalify_fanout::Fanout

pub mod activity;
pub mod auth;
mod chat;
pub mod presence;

pub use chat::{
    Authenticated, Change, Chat, ChatConfig, ClusterLinks, Cost, Dependency, Download, InFlight,
    NodeStatus, NotifyChoice, Overview, PersisterStatus, PushConfig, PushKeys, ReadMarker, Receipt,
    SearchHit, SearchResults, Session, SettingsPatch, SyncedRoom, ThrottleConfig, UploadConfig,
    RECEIPTS_LIMIT, RECEIPT_EVERY, SHARE_EVERY,
};
