//! # scalify-core — the domain, with no I/O
//!
//! Everything here is pure: validated newtypes for what arrives from the outside world
//! ([`Username`], [`RoomName`], [`ClientId`], [`MessageText`], …), the identifiers we hand out
//! ([`Id`]), the shapes that cross the wire ([`Message`], [`Room`]), the error vocabulary shared by
//! every transport ([`ErrorCode`], [`ChatError`]) and the small rules of the send/ack/recovery
//! loop ([`TokenBucket`], [`HistoryQuery`], [`SyncRequest`]), the throttling of repeated
//! attempts ([`Backoff`], [`TrustedProxies`]) and what nodes and persisters report
//! to the cluster ([`NodeStatus`], [`PersisterStatus`]).
//!
//! Storage engines, fan-out engines and transports depend on this crate; it depends on none of
//! them, so the rules can be unit-tested without a database or a socket.

mod attachment;
mod error;
mod events;
mod ids;
mod mentions;
mod message;
mod names;
mod net;
mod rate;
mod recovery;
mod search;
mod status;
mod throttle;

pub use attachment::{Attachment, FileName, MAX_FILE_NAME_BYTES};
pub use error::{ChatError, ErrorCode};
pub use events::{
    first_line, Emoji, MessageKind, ReactionCount, ReplyPreview, Timeline, MAX_EMOJI_BYTES,
    PREVIEW_BYTES,
};
pub use ids::Id;
pub use mentions::{mention_names, MentionNames, NotifyLevel, Settings, MAX_MENTION_NAMES};
pub use message::{now_ms, Message, NewMessage, Room, RoomKind, UserRef};
pub use names::{ClientId, MessageText, Password, RoomName, Username};
pub use net::is_public_ip;
pub use rate::TokenBucket;
pub use recovery::{
    HistoryQuery, SyncRequest, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT, SYNC_MAX_ROOMS,
};
pub use search::{fragment, SearchPage, SearchQuery};
pub use status::{NodeStatus, PersisterStatus, RoomActivity};
pub use throttle::{Attempts, Backoff, TrustedProxies};
