//! The read side of the send/ack/recovery loop: `history` pages backwards, `sync` returns what
//! came after a client's last seen `seq`, capped so one request stays bounded.

use std::collections::BTreeMap;

use crate::{ChatError, RoomName};

pub const HISTORY_DEFAULT_LIMIT: u32 = 50;
pub const HISTORY_MAX_LIMIT: u32 = 100;
/// A client may sync at most this many rooms in one request (bounded work per event).
pub const SYNC_MAX_ROOMS: usize = 500;

/// A validated `history` request: messages with `seq < before_seq` (or the newest), ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub before_seq: Option<u64>,
    pub limit: u32,
}

impl HistoryQuery {
    pub fn new(before_seq: Option<i64>, limit: Option<i64>) -> Result<Self, ChatError> {
        let before_seq = match before_seq {
            None => None,
            Some(n) if n >= 1 => Some(n as u64),
            Some(_) => return Err(ChatError::bad_request("before_seq must be >= 1")),
        };
        let limit = page_limit(limit, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT)?;
        Ok(HistoryQuery { before_seq, limit })
    }
}

/// A page's `limit` as a client gave it: `default` when absent, else 1 to `max`.
pub(crate) fn page_limit(limit: Option<i64>, default: u32, max: u32) -> Result<u32, ChatError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=i64::from(max)).contains(&n) => Ok(n as u32),
        Some(_) => Err(ChatError::bad_request(format!(
            "limit must be between 1 and {max}"
        ))),
    }
}

/// A validated `sync` request: for each room, the last `seq` the client has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub rooms: BTreeMap<RoomName, u64>,
}

impl SyncRequest {
    pub fn new(rooms: impl IntoIterator<Item = (String, i64)>) -> Result<Self, ChatError> {
        let mut out = BTreeMap::new();
        for (name, last_seq) in rooms {
            if out.len() >= SYNC_MAX_ROOMS {
                return Err(ChatError::bad_request(format!(
                    "at most {SYNC_MAX_ROOMS} rooms per sync"
                )));
            }
            if last_seq < 0 {
                return Err(ChatError::bad_request("last_seq must be >= 0"));
            }
            out.insert(RoomName::parse(&name)?, last_seq as u64);
        }
        Ok(SyncRequest { rooms: out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_defaults_and_bounds() {
        assert_eq!(
            HistoryQuery::new(None, None).unwrap(),
            HistoryQuery {
                before_seq: None,
                limit: 50
            }
        );
        assert_eq!(HistoryQuery::new(Some(10), Some(100)).unwrap().limit, 100);
        assert!(HistoryQuery::new(None, Some(101)).is_err());
        assert!(HistoryQuery::new(None, Some(0)).is_err());
        assert!(HistoryQuery::new(Some(0), None).is_err());
    }

    #[test]
    fn sync_validates_names_and_seqs() {
        let s = SyncRequest::new([("general".to_string(), 3)]).unwrap();
        assert_eq!(s.rooms.len(), 1);
        assert!(SyncRequest::new([("Bad Name".to_string(), 0)]).is_err());
        assert!(SyncRequest::new([("general".to_string(), -1)]).is_err());
        let many = (0..501).map(|i| (format!("r{i}"), 0));
        assert!(SyncRequest::new(many).is_err());
    }
}
