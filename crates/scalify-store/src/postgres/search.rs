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

/// Where a page starts, or where the index continues below a window: below a message id
/// (all rooms), or below a seq of one room.
#[derive(Clone)]
enum Below {
    Id(String),
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
        let below = match (page.before, room) {
            // Above every id (ids are Crockford base32: digits and capitals).
            (None, None) => Below::Id("~".to_owned()),
            (None, Some(room)) => Below::Seq(room, i64::MAX),
            // A page starts below a hit: an id that is no message's (or another room's) has
            // nothing below it.
            (Some(id), room) => {
                let at: Option<(String, i64)> = sqlx::query_as(
                    "SELECT room_id, seq FROM messages WHERE id = $1 COLLATE \"C\" AND kind IS NULL",
                )
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                match (at, room) {
                    (None, _) => return Ok(Vec::new()),
                    (Some(_), None) => Below::Id(id.to_string()),
                    (Some((at, seq)), Some(room)) if at == room.to_string() => {
                        Below::Seq(room, seq)
                    }
                    (Some(_), Some(_)) => return Ok(Vec::new()),
                }
            }
        };
        if !self.is_common(query).await? {
            return self
                .search_below(Scope::Matches, user, query, &below, None, page.limit)
                .await;
        }
        // The oldest message of the window, read before the window: the window holds what
        // lies from it up, the index what lies below it, so a message that arrives meanwhile
        // is in one of them only.
        let floor = match &below {
            Below::Id(before) => sqlx::query_scalar::<_, String>(
                "SELECT id FROM messages WHERE id < $1 COLLATE \"C\"
                 ORDER BY id COLLATE \"C\" DESC OFFSET $2 LIMIT 1",
            )
            .bind(before)
            .bind(self.search_window - 1)
            .fetch_optional(&self.pool)
            .await?
            .map(Below::Id),
            Below::Seq(room, before) => sqlx::query_scalar::<_, i64>(
                "SELECT seq FROM messages WHERE room_id = $1 AND seq < $2
                 ORDER BY seq DESC OFFSET $3 LIMIT 1",
            )
            .bind(room.to_string())
            .bind(before)
            .bind(self.search_window - 1)
            .fetch_optional(&self.pool)
            .await?
            .map(|seq| Below::Seq(*room, seq)),
        };
        let mut hits = self
            .search_below(
                Scope::Recent,
                user,
                query,
                &below,
                floor.as_ref(),
                page.limit,
            )
            .await?;
        if let (Some(floor), true) = (&floor, hits.len() < page.limit as usize) {
            let rest = page.limit - hits.len() as u32;
            hits.extend(
                self.search_below(Scope::Index, user, query, floor, None, rest)
                    .await?,
            );
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
        below: &Below,
        floor: Option<&Below>,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let (tsquery, excluded) = tsquery(query);
        let (bound, order, down_to) = match below {
            Below::Id(_) => (
                "m.id < $4 COLLATE \"C\"",
                "m.id COLLATE \"C\" DESC",
                "AND m.id >= $5 COLLATE \"C\"",
            ),
            Below::Seq(..) => (
                "m.room_id = $4 AND m.seq < $5",
                "m.seq DESC",
                "AND m.seq >= $6",
            ),
        };
        // What `m` is read from. OFFSET 0 keeps a subquery apart, planned on its own.
        let source = match scope {
            Scope::Index => "messages".to_owned(),
            // Read from the index whole.
            Scope::Matches => format!(
                "(SELECT * FROM messages
                  WHERE to_tsvector('simple', text) @@ {tsquery} AND kind IS NULL OFFSET 0)"
            ),
            // Newest first, stopped by the page: down to the floor (messages that arrive
            // meanwhile make it more than `search_window`, and none may fall out), or, below
            // fewer than that, all of them.
            Scope::Recent => format!(
                "(SELECT * FROM messages m WHERE {bound} {} ORDER BY {order} OFFSET 0)",
                if floor.is_some() { down_to } else { "" }
            ),
        };
        // The same expression as the `messages_search` index, and its predicate.
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS}, r.name
             FROM {source} m LEFT JOIN messages p ON p.room_id = m.room_id AND p.seq = m.ref_seq
             JOIN rooms r ON r.id = m.room_id
             WHERE to_tsvector('simple', m.text) @@ {tsquery} AND m.kind IS NULL
               AND m.room_id IN (SELECT room_id FROM members WHERE user_id = $3)
               AND {bound}
             ORDER BY {order} LIMIT {limit}"
        );
        let mut q = sqlx::query(&sql)
            .bind(query.websearch())
            .bind(excluded.unwrap_or_default())
            .bind(user.to_string());
        q = match below {
            Below::Id(id) => q.bind(id),
            Below::Seq(room, seq) => q.bind(room.to_string()).bind(seq),
        };
        q = match (scope, floor) {
            (Scope::Recent, Some(Below::Id(id))) => q.bind(id),
            (Scope::Recent, Some(Below::Seq(_, seq))) => q.bind(seq),
            _ => q,
        };
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| read_message(r, 0, &RoomName::from_trusted(r.try_get(18)?)))
            .collect::<Result<Vec<_>, _>>()?)
    }
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
