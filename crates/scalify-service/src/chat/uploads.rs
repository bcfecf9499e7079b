//! Attachments: a member uploads a file to a room ([`Chat::upload`]), then sends a message
//! that carries it (`attachment` on `send`); members download it ([`Chat::download`]).
//! Deleting the message deletes the file.
//!
//! A room's files live in the [`Files`] store under `rooms/<room id>/`: `<id>` (the bytes),
//! `<id>.preview.png` (an image's preview) and `<id>.json` (who uploaded it, when, what it is,
//! and which send took it), written last, so an upload that failed half-way is never found.
//!
//! Two kinds of marker keep the store in step with the messages, each handled by
//! [`Chat::sweep_uploads`]:
//! - `pending/<room id>/<id>`: an upload no message has taken yet. Written before its bytes,
//!   removed when a send takes the file (before that send commits). What stays pending past
//!   [`UploadConfig::unattached_ttl`] is deleted — an upload cut short by a crash too. A send
//!   may take an upload only until [`expiry_margin`] before that, counted from before its
//!   marker was written, so a send and a sweep never meet over one file.
//! - `trash/<room id>/<id>`: the file of a message being deleted. Written before the deletion
//!   commits; the file is no longer served from then on. The file and the marker are deleted
//!   once the deletion has committed; if that is cut short (a crash, a store that failed, a
//!   deletion whose outcome is unknown), the sweep looks at the message a minute later and
//!   deletes the file if the message is deleted. A message still standing is not enough to
//!   give the file back — in durable mode the database may not have the deletion yet — so the
//!   file stays hidden until the marker is as old as an upload may wait, and only then is it
//!   served again.
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use scalify_core::{Attachment, ErrorCode, FileName};
use scalify_files::{Files, FilesError, PreviewError};
use tokio::sync::Semaphore;

use super::*;

/// How a node keeps attachments. Field docs are the user-facing documentation.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    pub files: Files,
    /// Largest file accepted, in bytes.
    pub max_bytes: u64,
    /// Largest image a preview is made of, in pixels (width × height); a larger image, or a
    /// decompression bomb that claims to be one, is refused.
    pub max_pixels: u64,
    /// Uploads this node takes at once; more are refused (`rate_limited`) until one ends.
    /// Each holds at most three 5 MiB parts in memory.
    pub max_concurrent: usize,
    /// Uploads one user may have in progress on this node at once.
    pub max_per_user: usize,
    /// A client that sends nothing for this long has its upload refused.
    pub stall_timeout: Duration,
    /// An upload that takes longer than this in all (or than a quarter of `unattached_ttl`) is
    /// refused: a trickle cannot hold a slot.
    pub max_duration: Duration,
    /// How long an upload may wait to be sent in a message; after it, it is deleted.
    pub unattached_ttl: Duration,
}

impl UploadConfig {
    /// The defaults, over `files`.
    pub fn new(files: Files) -> Self {
        UploadConfig {
            files,
            max_bytes: 10 * 1024 * 1024,
            max_pixels: 40_000_000,
            max_concurrent: 32,
            max_per_user: 4,
            stall_timeout: Duration::from_secs(30),
            max_duration: Duration::from_secs(600),
            unattached_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

pub(super) struct Uploads {
    config: UploadConfig,
    running: Semaphore,
    /// Uploads in progress per user.
    per_user: Mutex<HashMap<Id, usize>>,
    /// Making a preview reads the image whole (up to `max_bytes`) and decodes it (up to
    /// `max_pixels` × 8 bytes): one at a time.
    decoding: Semaphore,
}

/// One upload of a user's in progress, until dropped.
struct UserSlot<'a> {
    uploads: &'a Uploads,
    user: Id,
}

impl Drop for UserSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.uploads.per_user.lock() {
            if let Some(n) = map.get_mut(&self.user) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.user);
                }
            }
        }
    }
}

/// A file being downloaded.
pub struct Download {
    /// The type to serve it with, from its bytes (never what the uploader said).
    pub content_type: String,
    /// The name to offer it under.
    pub name: String,
    /// Whether a browser may show it in place (images); else it is offered for saving.
    pub inline: bool,
    pub size: u64,
    pub body: BoxStream<'static, Result<Bytes, FilesError>>,
}

/// How long before its expiry a message may no longer take an upload: a twenty-fourth of
/// the time an upload may wait, but at least five minutes (or half of it, if that is less),
/// so that a send taking an upload is long over when the sweep may delete it.
pub fn expiry_margin(ttl: Duration) -> Duration {
    (ttl / 24).max(Duration::from_secs(300).min(ttl / 2))
}

/// How long a deletion may take before the sweep looks at its message.
const TRASH_GRACE: Duration = Duration::from_secs(60);

/// What the store keeps beside each file.
#[derive(Debug, Serialize, Deserialize)]
struct UploadMeta {
    uploader: Id,
    /// When its upload began (ms since the Unix epoch): before its pending marker was written.
    uploaded_at: i64,
    attachment: Attachment,
    /// The `client_id` of the send that took it: a retry of that send takes it again, any
    /// other send is refused.
    #[serde(default)]
    taken_by: Option<String>,
}

/// What one pass of a sweep did: files deleted, and entries that failed (logged, and left for
/// the next sweep; the pass goes on past them).
#[derive(Default)]
struct Tally {
    deleted: usize,
    failed: usize,
}

impl Tally {
    fn add(&mut self, done: Result<bool, ChatError>, what: &str) {
        match done {
            Ok(deleted) => self.deleted += usize::from(deleted),
            Err(e) => {
                self.failed += 1;
                tracing::warn!(error = %e, "{what} failed; tried again next time");
            }
        }
    }
}

/// What a trash marker says: the message whose deletion deletes the file.
#[derive(Debug, Serialize, Deserialize)]
struct TrashNote {
    room: String,
    message: Id,
}

fn key(room: Id, id: Id) -> String {
    format!("rooms/{room}/{id}")
}
fn meta_key(room: Id, id: Id) -> String {
    format!("rooms/{room}/{id}.json")
}
fn preview_key(room: Id, id: Id) -> String {
    format!("rooms/{room}/{id}.preview.png")
}
fn pending_key(room: Id, id: Id) -> String {
    format!("pending/{room}/{id}")
}
fn trash_key(room: Id, id: Id) -> String {
    format!("trash/{room}/{id}")
}
/// The room and upload ids of a marker's key (`pending/<room>/<id>`, `trash/<room>/<id>`).
fn marker_ids(marker: &str) -> Option<(Id, Id)> {
    let mut parts = marker.split('/').skip(1);
    let room = parts.next()?.parse().ok()?;
    let id = parts.next()?.parse().ok()?;
    Some((room, id))
}

fn no_such_upload() -> ChatError {
    ChatError::not_found("no such upload")
}

fn files_error(e: FilesError) -> ChatError {
    match e {
        FilesError::TooLarge { limit } => ChatError::too_large(format!(
            "the file is larger than the limit of {limit} bytes"
        )),
        FilesError::Body(why) => ChatError::bad_request(format!("the upload failed: {why}")),
        other => {
            tracing::error!(error = %other, "file store failure");
            ChatError::internal()
        }
    }
}

/// `body`, failing once no chunk comes for `timeout`, once it has taken `deadline` in all, or
/// once the node begins to shut down (`stop`): graceful shutdown does not wait for a slow
/// client, and the upload is removed, not left half-written.
fn stalling<S, E>(
    body: S,
    timeout: Duration,
    deadline: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<Bytes, String>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    let end = tokio::time::Instant::now() + deadline;
    futures_util::stream::unfold(Some(body), move |body| {
        let stop = stop.clone();
        async move {
            let mut body = body?;
            let wait = timeout.min(end.saturating_duration_since(tokio::time::Instant::now()));
            let next = tokio::select! {
                () = stop.cancelled() => {
                    return Some((Err("the server is shutting down".to_owned()), None));
                }
                next = tokio::time::timeout(wait, body.next()) => next,
            };
            match next {
                Err(_) if tokio::time::Instant::now() >= end => Some((
                    Err(format!("it took longer than {}s", deadline.as_secs())),
                    None,
                )),
                Err(_) => Some((
                    Err(format!("nothing received for {}s", timeout.as_secs())),
                    None,
                )),
                Ok(None) => None,
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
                Ok(Some(Err(e))) => Some((Err(e.to_string()), None)),
            }
        }
    })
}

impl Chat {
    /// Takes attachments on this node; set once, when the node is assembled.
    pub fn enable_uploads(&self, config: UploadConfig) {
        let _ = self.uploads.set(Uploads {
            running: Semaphore::new(config.max_concurrent),
            per_user: Mutex::new(HashMap::new()),
            decoding: Semaphore::new(1),
            config,
        });
    }

    fn uploads(&self) -> Result<&Uploads, ChatError> {
        self.uploads
            .get()
            .ok_or_else(|| ChatError::not_found("uploads are not enabled on this server"))
    }

    /// Largest file [`Chat::upload`] takes, if uploads are enabled.
    pub fn upload_limit(&self) -> Option<u64> {
        self.uploads.get().map(|u| u.config.max_bytes)
    }

    /// Stores `body` as a file of `room` named `name`, for `user` to attach to a message.
    /// `length` is what the client announced, if it did: a file announced too large is refused
    /// before a byte is read. The body is streamed to the store, never held whole.
    pub async fn upload<S, E>(
        &self,
        user: &UserRef,
        room: &str,
        name: &str,
        length: Option<u64>,
        body: S,
    ) -> Result<Attachment, ChatError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        if self.is_closing() {
            return Err(ChatError::shutting_down());
        }
        let uploads = self.uploads()?;
        let limits = &uploads.config;
        self.charge(user, Cost::Sync)?;
        let name = FileName::parse(name)?;
        if let Some(length) = length.filter(|&n| n > limits.max_bytes) {
            return Err(ChatError::too_large(format!(
                "the file is {length} bytes; the limit is {}",
                limits.max_bytes
            )));
        }
        let room = self.writable_room(user, room).await?;
        let busy = || {
            ChatError::new(
                ErrorCode::RateLimited,
                "too many uploads at once; try again",
            )
            .retry_after_ms(1000)
        };
        let _slot = {
            let mut map = uploads.per_user.lock().map_err(|_| ChatError::internal())?;
            let n = map.entry(user.id).or_insert(0);
            if *n >= limits.max_per_user {
                return Err(busy());
            }
            *n += 1;
            UserSlot {
                uploads,
                user: user.id,
            }
        };
        let _running = uploads.running.try_acquire().map_err(|_| busy())?;
        let started = scalify_core::now_ms();
        let id = Id::new();
        let files = &limits.files;
        let pending = pending_key(room.id, id);
        files.put(&pending, Vec::new()).await.map_err(files_error)?;
        let kept = async {
            // An upload ends well before the sweep may take its marker for abandoned.
            let deadline = limits.max_duration.min(limits.unattached_ttl / 4);
            let body = stalling(body, limits.stall_timeout, deadline, self.stop.clone());
            let stored = files
                .put_stream(&key(room.id, id), body, limits.max_bytes)
                .await
                .map_err(files_error)?;
            let attachment = self.describe(uploads, room.id, id, name, stored).await?;
            let meta = UploadMeta {
                uploader: user.id,
                uploaded_at: started,
                attachment,
                taken_by: None,
            };
            self.write_meta(room.id, &meta).await?;
            Ok::<_, ChatError>(meta.attachment)
        }
        .await;
        let attachment = match kept {
            Ok(attachment) => attachment,
            Err(e) => {
                let e = if self.is_closing() {
                    ChatError::shutting_down()
                } else {
                    e
                };
                // Nothing of a refused upload stays; what cannot be deleted now, the sweep
                // deletes later (its marker is deleted last).
                for gone in [preview_key(room.id, id), key(room.id, id), pending] {
                    if let Err(why) = files.delete(&gone).await {
                        tracing::warn!(error = %why, key = gone, "cannot delete a refused upload");
                        break;
                    }
                }
                return Err(e);
            }
        };
        metrics::counter!("scalify_uploads_total").increment(1);
        metrics::counter!("scalify_upload_bytes_total").increment(attachment.size);
        Ok(attachment)
    }

    /// What a stored upload is: its type from its bytes, and for an image its dimensions and
    /// a preview (stored beside it).
    async fn describe(
        &self,
        uploads: &Uploads,
        room: Id,
        id: Id,
        name: FileName,
        stored: scalify_files::Stored,
    ) -> Result<Attachment, ChatError> {
        if stored.size == 0 {
            return Err(ChatError::bad_request("the file is empty"));
        }
        let sniffed = scalify_files::sniff(&stored.head);
        let mut attachment = Attachment {
            id,
            name,
            size: stored.size,
            content_type: sniffed.content_type.to_owned(),
            width: None,
            height: None,
        };
        if sniffed.image {
            let limits = &uploads.config;
            // Taken before the image is read: one image in memory at a time, not one per
            // upload in progress.
            let _decoding = uploads
                .decoding
                .acquire()
                .await
                .map_err(|_| ChatError::shutting_down())?;
            let bytes = limits
                .files
                .get_bytes(&key(room, id), limits.max_bytes)
                .await
                .map_err(files_error)?
                .ok_or_else(ChatError::internal)?;
            let max_pixels = limits.max_pixels;
            let preview =
                tokio::task::spawn_blocking(move || scalify_files::preview(&bytes, max_pixels))
                    .await
                    .map_err(|_| ChatError::internal())?
                    .map_err(|e| match e {
                        PreviewError::TooManyPixels { .. } => ChatError::too_large(e.to_string()),
                        PreviewError::Undecodable => ChatError::bad_request(format!(
                            "the file looks like {} but {e}",
                            sniffed.content_type
                        )),
                    })?;
            limits
                .files
                .put(&preview_key(room, id), preview.png)
                .await
                .map_err(files_error)?;
            attachment.width = Some(preview.width);
            attachment.height = Some(preview.height);
        }
        Ok(attachment)
    }

    async fn write_meta(&self, room: Id, meta: &UploadMeta) -> Result<(), ChatError> {
        let json = serde_json::to_vec(meta).map_err(|_| ChatError::internal())?;
        self.uploads()?
            .config
            .files
            .put(&meta_key(room, meta.attachment.id), json)
            .await
            .map_err(files_error)
    }

    /// The upload `id` of `room`, which `sender` uploaded, taken for the send `client_id`:
    /// no longer pending from here on (see the module's docs). A retry of that send takes it
    /// again; another send gets `conflict`.
    pub(super) async fn take_upload(
        &self,
        sender: &UserRef,
        room: &Room,
        id: &str,
        client_id: &ClientId,
    ) -> Result<Attachment, ChatError> {
        let mut meta = self.upload_meta(room.id, id).await?;
        if meta.uploader != sender.id {
            return Err(no_such_upload());
        }
        let pending = pending_key(room.id, meta.attachment.id);
        match &meta.taken_by {
            // A retry of the send that took it: it may have failed before the marker went.
            Some(taker) if taker == client_id.as_str() => {
                self.uploads()?
                    .config
                    .files
                    .delete(&pending)
                    .await
                    .map_err(files_error)?;
                return Ok(meta.attachment);
            }
            Some(_) => {
                return Err(ChatError::conflict(
                    "the upload is in another message already; upload the file again",
                ))
            }
            None => {}
        }
        let ttl = self.uploads()?.config.unattached_ttl;
        let usable = ttl - expiry_margin(ttl);
        let age = scalify_core::now_ms().saturating_sub(meta.uploaded_at);
        if age > usable.as_millis() as i64 {
            return Err(ChatError::bad_request(format!(
                "the upload expired (an upload waits {}s for its message); upload the file again",
                usable.as_secs()
            )));
        }
        meta.taken_by = Some(client_id.as_str().to_owned());
        self.write_meta(room.id, &meta).await?;
        self.uploads()?
            .config
            .files
            .delete(&pending)
            .await
            .map_err(files_error)?;
        Ok(meta.attachment)
    }

    async fn upload_meta(&self, room: Id, id: &str) -> Result<UploadMeta, ChatError> {
        let uploads = self.uploads()?;
        let id: Id = id
            .parse()
            .map_err(|_| ChatError::bad_request("attachment must be an upload id"))?;
        let json = uploads
            .config
            .files
            .get_bytes(&meta_key(room, id), 64 * 1024)
            .await
            .map_err(files_error)?
            .ok_or_else(no_such_upload)?;
        serde_json::from_slice(&json).map_err(|e| {
            tracing::error!(error = %e, %room, %id, "unreadable upload metadata");
            ChatError::internal()
        })
    }

    /// The file `id` of `room` (its preview, with `preview`), for a member of the room. The
    /// file of a message being deleted is no longer served.
    pub async fn download(
        &self,
        user: &UserRef,
        room: &str,
        id: &str,
        preview: bool,
    ) -> Result<Download, ChatError> {
        self.charge(user, if preview { Cost::One } else { Cost::Read })?;
        let room = self.member_room(user, room).await?;
        let attachment = self.upload_meta(room.id, id).await?.attachment;
        if preview && !attachment.has_preview() {
            return Err(ChatError::not_found("the file has no preview"));
        }
        let files = &self.uploads()?.config.files;
        if files
            .exists(&trash_key(room.id, attachment.id))
            .await
            .map_err(files_error)?
        {
            return Err(no_such_upload());
        }
        let key = if preview {
            preview_key(room.id, attachment.id)
        } else {
            key(room.id, attachment.id)
        };
        let file = files
            .get(&key)
            .await
            .map_err(files_error)?
            .ok_or_else(no_such_upload)?;
        let image = attachment.has_preview();
        Ok(Download {
            content_type: if preview {
                "image/png".to_owned()
            } else {
                attachment.content_type
            },
            name: if preview {
                format!("{}.preview.png", attachment.name.as_str())
            } else {
                attachment.name.as_str().to_owned()
            },
            inline: image,
            size: file.size,
            body: file.body,
        })
    }

    /// Marks the file of `message`, which is about to be deleted, as trash: it is no longer
    /// served, and the sweep deletes it if the deletion is cut short.
    pub(super) async fn trash_upload(
        &self,
        room: &Room,
        message: Id,
        attachment: &Attachment,
    ) -> Result<(), ChatError> {
        let Ok(uploads) = self.uploads() else {
            return Ok(());
        };
        let note = TrashNote {
            room: room.name.to_string(),
            message,
        };
        let json = serde_json::to_vec(&note).map_err(|_| ChatError::internal())?;
        uploads
            .config
            .files
            .put(&trash_key(room.id, attachment.id), json)
            .await
            .map_err(files_error)
    }

    /// Deletes the file of a deleted message: its description first (so it is no longer
    /// found), then its preview and bytes, then its trash marker. A failure is logged and
    /// counted; the marker stays, and the sweep finishes the work. Whether all went.
    pub(super) async fn delete_upload(&self, room: Id, upload: Id) -> bool {
        let Ok(uploads) = self.uploads() else {
            return false;
        };
        let files = &uploads.config.files;
        for gone in [
            meta_key(room, upload),
            preview_key(room, upload),
            key(room, upload),
            pending_key(room, upload),
            trash_key(room, upload),
        ] {
            if let Err(e) = files.delete(&gone).await {
                metrics::counter!("scalify_upload_deletes_failed_total").increment(1);
                tracing::warn!(error = %e, key = gone, "cannot delete a deleted message's file; the sweep tries again");
                return false;
            }
        }
        true
    }

    /// Takes a trash marker away: the message was not deleted after all.
    pub(super) async fn untrash_upload(&self, room: Id, upload: Id) {
        if let Ok(uploads) = self.uploads() {
            if let Err(e) = uploads.config.files.delete(&trash_key(room, upload)).await {
                tracing::warn!(error = %e, "cannot take a trash marker away; the sweep does");
            }
        }
    }

    /// Deletes the uploads that no message took within [`UploadConfig::unattached_ttl`]
    /// (and what is left of uploads cut short), and finishes deletions cut short (see the
    /// module's docs); returns how many files it deleted. An entry that fails is logged and
    /// left for the next sweep; the others go on.
    pub async fn sweep_uploads(&self) -> Result<usize, ChatError> {
        let uploads = self.uploads()?;
        let files = &uploads.config.files;
        let ttl = uploads.config.unattached_ttl;
        let now = scalify_core::now_ms();
        // A marker's age, from when it was written (ms since the Unix epoch).
        let age = |written: i64| Duration::from_millis(now.saturating_sub(written).max(0) as u64);
        let mut expired = Tally::default();
        let mut pending = files.list("pending");
        while let Some(entry) = pending.next().await {
            let done = match entry.map_err(files_error) {
                Ok((marker, written)) if age(written) >= ttl => self.sweep_pending(&marker).await,
                other => other.map(|_| false),
            };
            expired.add(done, "sweeping an expired upload");
        }
        if expired.deleted > 0 {
            metrics::counter!("scalify_uploads_expired_total").increment(expired.deleted as u64);
            tracing::info!(swept = expired.deleted, "deleted uploads no message took");
        }
        let mut trashed = Tally::default();
        let mut trash = files.list("trash");
        while let Some(entry) = trash.next().await {
            let done = match entry.map_err(files_error) {
                Ok((marker, written)) if age(written) >= TRASH_GRACE => {
                    self.sweep_trash(&marker, age(written) >= ttl).await
                }
                other => other.map(|_| false),
            };
            trashed.add(done, "finishing a deleted message's file");
        }
        let failed = expired.failed + trashed.failed;
        if failed > 0 {
            return Err(ChatError::new(
                ErrorCode::Internal,
                format!("{failed} entries could not be swept"),
            ));
        }
        Ok(expired.deleted + trashed.deleted)
    }

    /// An expired pending marker: the upload it marks is deleted — unless a send took it since
    /// (its description names the send), when only the marker goes.
    async fn sweep_pending(&self, marker: &str) -> Result<bool, ChatError> {
        let files = &self.uploads()?.config.files;
        let Some((room, id)) = marker_ids(marker) else {
            tracing::warn!(marker, "not an upload's marker; left as is");
            return Ok(false);
        };
        // Taken since the listing, or by a send whose marker deletion failed.
        if !files.exists(marker).await.map_err(files_error)? {
            return Ok(false);
        }
        if let Ok(meta) = self.upload_meta(room, &id.to_string()).await {
            if meta.taken_by.is_some() {
                files.delete(marker).await.map_err(files_error)?;
                return Ok(false);
            }
        }
        for gone in [meta_key(room, id), preview_key(room, id), key(room, id)] {
            files.delete(&gone).await.map_err(files_error)?;
        }
        files.delete(marker).await.map_err(files_error)?;
        Ok(true)
    }

    /// A trash marker past its grace: the file goes if its message is deleted. A message the
    /// store still shows may only not be written yet (durable mode), so the file stays hidden
    /// until the marker is `old` (as old as an upload may wait): then a message still shown
    /// was not deleted, and gets its file back; one the store does not know has none to keep.
    async fn sweep_trash(&self, marker: &str, old: bool) -> Result<bool, ChatError> {
        let files = &self.uploads()?.config.files;
        let note = files
            .get_bytes(marker, 64 * 1024)
            .await
            .map_err(files_error)?
            .and_then(|json| serde_json::from_slice::<TrashNote>(&json).ok());
        let (Some((room_id, id)), Some(note)) = (marker_ids(marker), note) else {
            tracing::warn!(marker, "an unreadable trash marker; its file stays hidden");
            return Ok(false);
        };
        let Ok(name) = RoomName::parse_internal(&note.room) else {
            tracing::warn!(
                marker,
                "a trash marker naming no room; its file stays hidden"
            );
            return Ok(false);
        };
        let message = match self.store.room(&name).await.map_err(store_error)? {
            Some(room) => self
                .store
                .message(&room, note.message)
                .await
                .map_err(store_error)?,
            None => None,
        };
        match message {
            Some(m) if m.deleted => {}
            None if old => {}
            Some(_) if old => {
                files.delete(marker).await.map_err(files_error)?;
                return Ok(false);
            }
            _ => return Ok(false),
        }
        Ok(self.delete_upload(room_id, id).await)
    }

    /// How often [`Chat::sweep_uploads`] should run: a quarter of the time an upload may wait,
    /// between a second and a minute (deletions cut short are finished within two minutes).
    pub fn sweep_every(&self) -> Option<Duration> {
        let ttl = self.uploads.get()?.config.unattached_ttl;
        Some((ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60)))
    }
}
