//! Search in PostgreSQL.
//!
//! The GIN index (`messages_search`) answers a rare word at once, but a common word matches a
//! large share of the log, and taking every match from the index to sort them by time costs in
//! proportion to the log. So a search first asks the index how common its words are (counting
//! matches up to `PgConfig::search_common`, 5,000 by default). A rare query is answered by
//! the index alone. A common one looks through the newest messages below the page's start
//! first (`PgConfig::search_window` of them, 20,000 by default: of all the user's rooms by
//! the id index, or of the one room by its key), where a common word fills the page, and asks
//! the index about what lies below that window only when the window leaves the page short.
//!
//! A search over all rooms pages by id; a search in one room by seq, the room's own order.

use super::*;

/// Where a search looks.
#[derive(Clone, Copy)]
enum Scope {
    /// Every match of a rare query, taken from the index whole and then filtered and sorted:
    /// few enough by definition, and the planner, which cannot know how few, would otherwise
    /// walk the reader's rooms one by one.
    Matches,
    /// The newest `search_window` messages below the bound.
    Recent,
    /// Every message below the bound, by the index or by id, as the planner sees fit.
    Index,
}

/// Where a page starts: below a message id (all rooms), or below a seq of one room.
#[derive(Clone, Copy)]
enum Below<'a> {
    Id(&'a str),
    Seq(Id, i64),
}

impl PgStore {
    pub(super) async fn search_messages(
        &self,
        user: Id,
        query: &SearchQuery,
        room: Option<Id>,
        page: SearchPage,
    ) -> StoreResult<Vec<Message>> {
        // Above every id (ids are Crockford base32: digits and capitals).
        let before_id = page
            .before
            .map_or_else(|| "~".to_owned(), |id| id.to_string());
        let below = match (room, page.before) {
            (None, None) => Below::Id(&before_id),
            (None, Some(id)) => {
                // A page starts below a hit, as in SQLite: an unknown id has nothing below.
                let known: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM messages WHERE id = $1 COLLATE \"C\" AND kind IS NULL",
                )
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                if known.is_none() {
                    return Ok(Vec::new());
                }
                Below::Id(&before_id)
            }
            (Some(room), None) => Below::Seq(room, i64::MAX),
            (Some(room), Some(id)) => {
                let seq: Option<i64> = sqlx::query_scalar(
                    "SELECT seq FROM messages
                     WHERE id = $2 COLLATE \"C\" AND room_id = $1 AND kind IS NULL",
                )
                .bind(room.to_string())
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                match seq {
                    Some(seq) => Below::Seq(room, seq),
                    None => return Ok(Vec::new()),
                }
            }
        };
        if !self.is_common(query).await? {
            return self
                .search_below(Scope::Matches, user, query, below, None, page.limit)
                .await;
        }
        // The oldest message of the window, read before the window: the window holds what
        // lies from it up, the index what lies below it, so a message that arrives meanwhile
        // is in one of them only.
        let floor = match below {
            Below::Id(before) => sqlx::query_scalar::<_, String>(
                "SELECT id FROM messages WHERE id < $1 COLLATE \"C\"
                 ORDER BY id COLLATE \"C\" DESC OFFSET $2 LIMIT 1",
            )
            .bind(before)
            .bind(self.search_window - 1)
            .fetch_optional(&self.pool)
            .await?
            .map(Floor::Id),
            Below::Seq(room, before) => sqlx::query_scalar::<_, i64>(
                "SELECT seq FROM messages WHERE room_id = $1 AND seq < $2
                 ORDER BY seq DESC OFFSET $3 LIMIT 1",
            )
            .bind(room.to_string())
            .bind(before)
            .bind(self.search_window - 1)
            .fetch_optional(&self.pool)
            .await?
            .map(|seq| Floor::Seq(room, seq)),
        };
        let mut hits = self
            .search_below(
                Scope::Recent,
                user,
                query,
                below,
                floor.as_ref(),
                page.limit,
            )
            .await?;
        if hits.len() < page.limit as usize {
            let rest = page.limit - hits.len() as u32;
            let more = match &floor {
                None => Vec::new(),
                Some(Floor::Id(id)) => {
                    self.search_below(Scope::Index, user, query, Below::Id(id), None, rest)
                        .await?
                }
                Some(Floor::Seq(room, seq)) => {
                    self.search_below(
                        Scope::Index,
                        user,
                        query,
                        Below::Seq(*room, *seq),
                        None,
                        rest,
                    )
                    .await?
                }
            };
            hits.extend(more);
        }
        Ok(hits)
    }

    /// Whether the index holds at least `search_common` matches of `query` (a bounded
    /// count).
    async fn is_common(&self, query: &SearchQuery) -> StoreResult<bool> {
        let (tsquery, excluded) = tsquery(query);
        let common = self.search_common;
        let sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM messages
               WHERE to_tsvector('simple', text) @@ {tsquery} AND kind IS NULL LIMIT {common}) s"
        );
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(query.websearch())
            .bind(excluded.unwrap_or_default())
            .fetch_one(&self.pool)
            .await?;
        Ok(n >= common)
    }

    /// Up to `limit` hits below `below`, newest first, looking where `scope` says (a window
    /// down to `floor`, if given).
    async fn search_below(
        &self,
        scope: Scope,
        user: Id,
        query: &SearchQuery,
        below: Below<'_>,
        floor: Option<&Floor>,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let (tsquery, excluded) = tsquery(query);
        let (bound, order) = match below {
            Below::Id(_) => ("m.id < $4 COLLATE \"C\"", "m.id COLLATE \"C\" DESC"),
            Below::Seq(..) => ("m.room_id = $4 AND m.seq < $5", "m.seq DESC"),
        };
        let from = match (scope, below) {
            (Scope::Index, _) => MESSAGES_FROM.to_owned(),
            // OFFSET 0 keeps the subquery apart: planned alone, it reads the index.
            (Scope::Matches, _) => format!(
                "(SELECT * FROM messages
                  WHERE to_tsvector('simple', text) @@ {tsquery} AND kind IS NULL OFFSET 0) m
                 LEFT JOIN messages p ON p.room_id = m.room_id AND p.seq = m.ref_seq"
            ),
            // Down to the floor (messages that arrive meanwhile make it more than `search_window`,
            // and none may fall out), or, below fewer than that, all of them. OFFSET 0 keeps
            // the window a subquery of its own, read newest first and stopped by the page.
            (Scope::Recent, Below::Id(_)) => format!(
                "(SELECT * FROM messages WHERE id < $4 COLLATE \"C\" {}
                  ORDER BY id COLLATE \"C\" DESC OFFSET 0) m
                 LEFT JOIN messages p ON p.room_id = m.room_id AND p.seq = m.ref_seq",
                if floor.is_some() {
                    "AND id >= $5 COLLATE \"C\""
                } else {
                    ""
                }
            ),
            (Scope::Recent, Below::Seq(..)) => format!(
                "(SELECT * FROM messages WHERE room_id = $4 AND seq < $5 {}
                  ORDER BY seq DESC OFFSET 0) m
                 LEFT JOIN messages p ON p.room_id = m.room_id AND p.seq = m.ref_seq",
                if floor.is_some() { "AND seq >= $6" } else { "" }
            ),
        };
        // The same expression as the `messages_search` index, and its predicate.
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS}, r.name FROM {from} JOIN rooms r ON r.id = m.room_id
             WHERE to_tsvector('simple', m.text) @@ {tsquery} AND m.kind IS NULL
               AND m.room_id IN (SELECT room_id FROM members WHERE user_id = $3)
               AND {bound}
             ORDER BY {order} LIMIT {limit}"
        );
        let q = sqlx::query(&sql)
            .bind(query.websearch())
            .bind(excluded.unwrap_or_default())
            .bind(user.to_string());
        let q = match below {
            Below::Id(id) => q.bind(id),
            Below::Seq(room, seq) => q.bind(room.to_string()).bind(seq),
        };
        let q = match (scope, floor) {
            (Scope::Recent, Some(Floor::Id(id))) => q.bind(id.as_str()),
            (Scope::Recent, Some(Floor::Seq(_, seq))) => q.bind(*seq),
            _ => q,
        };
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| read_message(r, 0, &RoomName::from_trusted(r.try_get(17)?)))
            .collect::<Result<Vec<_>, _>>()?)
    }
}

/// Below which message the index continues after the window.
enum Floor {
    Id(String),
    Seq(Id, i64),
}

/// The tsquery of `query` as SQL over `$1` (its terms) and, when it excludes any, `$2` (the
/// excluded terms), and the value of `$2`.
fn tsquery(query: &SearchQuery) -> (&'static str, Option<String>) {
    match query.websearch_excluded() {
        Some(excluded) => (
            "(websearch_to_tsquery('simple', $1) && !!websearch_to_tsquery('simple', $2))",
            Some(excluded),
        ),
        None => ("websearch_to_tsquery('simple', $1)", None),
    }
}
