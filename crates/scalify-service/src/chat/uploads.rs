//! Attachments: a member uploads a file to a room ([`Chat::upload`]), then sends a message
//! that carries it (`attachment` on `send`); members download it ([`Chat::download`]).
//! Deleting the message deletes the file.
//!
//! A room's files live in the [`Files`] store under `rooms/<room id>/`: `<id>` (the bytes),
//! `<id>.preview.png` (an image's preview) and `<id>.json` (who uploaded it and what it is),
//! written last, so an upload that failed half-way is never found.
//!
//! An upload not (yet) in a message is marked by `pending/<room id>/<id>`, written before its
//! bytes and removed when a message takes the file (before that message commits: a file is
//! never swept from under a message, at worst a failed send leaves one unswept).
//! [`Chat::sweep_uploads`] deletes what stays pending past
//! [`UploadConfig::unattached_ttl`], whatever it got to: an upload cut short by a crash too.
//! A message may take the file until shortly before that ([`EXPIRY_MARGIN`]), so a send and a
//! sweep never race for it.

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
    /// Each holds at most two 5 MiB parts in memory.
    pub max_concurrent: usize,
    /// A client that sends nothing for this long has its upload refused.
    pub stall_timeout: Duration,
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
            stall_timeout: Duration::from_secs(30),
            unattached_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

pub(super) struct Uploads {
    config: UploadConfig,
    running: Semaphore,
    /// Image decoding is CPU-bound and takes up to `max_pixels` × 8 bytes: one at a time.
    decoding: Semaphore,
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

/// The part of [`UploadConfig::unattached_ttl`] before its end in which a message may no
/// longer take an upload: a sweep that is deleting it cannot meet a send that is taking it.
pub const EXPIRY_MARGIN: u32 = 24;

/// What the store keeps beside each file.
#[derive(Debug, Serialize, Deserialize)]
struct UploadMeta {
    uploader: Id,
    /// When it was uploaded (ms since the Unix epoch).
    uploaded_at: i64,
    attachment: Attachment,
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

/// `body`, failing once no chunk comes for `timeout`.
fn stalling<S, E>(body: S, timeout: Duration) -> impl Stream<Item = Result<Bytes, String>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    futures_util::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(timeout, body.next()).await {
            Err(_) => Some((
                Err(format!("nothing received for {}s", timeout.as_secs())),
                None,
            )),
            Ok(None) => None,
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
            Ok(Some(Err(e))) => Some((Err(e.to_string()), None)),
        }
    })
}

impl Chat {
    /// Takes attachments on this node; set once, when the node is assembled.
    pub fn enable_uploads(&self, config: UploadConfig) {
        let _ = self.uploads.set(Uploads {
            running: Semaphore::new(config.max_concurrent),
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
        let _running = uploads.running.try_acquire().map_err(|_| {
            ChatError::new(
                ErrorCode::RateLimited,
                "too many uploads at once; try again",
            )
            .retry_after_ms(1000)
        })?;
        let id = Id::new();
        let files = &limits.files;
        let pending = pending_key(room.id, id);
        files.put(&pending, Vec::new()).await.map_err(files_error)?;
        let kept = async {
            let stored = files
                .put_stream(
                    &key(room.id, id),
                    stalling(body, limits.stall_timeout),
                    limits.max_bytes,
                )
                .await
                .map_err(files_error)?;
            let attachment = self.describe(uploads, room.id, id, name, stored).await?;
            let meta = UploadMeta {
                uploader: user.id,
                uploaded_at: scalify_core::now_ms(),
                attachment,
            };
            let json = serde_json::to_vec(&meta).map_err(|_| ChatError::internal())?;
            files
                .put(&meta_key(room.id, id), json)
                .await
                .map_err(files_error)?;
            Ok::<_, ChatError>(meta.attachment)
        }
        .await;
        let attachment = match kept {
            Ok(attachment) => attachment,
            Err(e) => {
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
            let bytes = limits
                .files
                .get_bytes(&key(room, id), limits.max_bytes)
                .await
                .map_err(files_error)?
                .ok_or_else(ChatError::internal)?;
            let _decoding = uploads
                .decoding
                .acquire()
                .await
                .map_err(|_| ChatError::shutting_down())?;
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

    /// The upload `id` of `room`, which `sender` uploaded, to attach to a message: no longer
    /// pending from here on (see the module's docs).
    pub(super) async fn attachable(
        &self,
        sender: &UserRef,
        room: &Room,
        id: &str,
    ) -> Result<Attachment, ChatError> {
        let meta = self.upload_meta(room.id, id).await?;
        if meta.uploader != sender.id {
            return Err(no_such_upload());
        }
        let uploads = self.uploads()?;
        let ttl = uploads.config.unattached_ttl;
        let usable = ttl - ttl / EXPIRY_MARGIN;
        let age = scalify_core::now_ms().saturating_sub(meta.uploaded_at);
        if age > usable.as_millis() as i64 {
            return Err(ChatError::bad_request(format!(
                "the upload expired (an upload waits {}s for its message); upload the file again",
                usable.as_secs()
            )));
        }
        uploads
            .config
            .files
            .delete(&pending_key(room.id, meta.attachment.id))
            .await
            .map_err(files_error)?;
        Ok(meta.attachment)
    }

    /// Deletes the uploads that no message took within [`UploadConfig::unattached_ttl`]
    /// (and what is left of uploads cut short); returns how many.
    pub async fn sweep_uploads(&self) -> Result<usize, ChatError> {
        let uploads = self.uploads()?;
        let files = &uploads.config.files;
        let cutoff = scalify_core::now_ms() - uploads.config.unattached_ttl.as_millis() as i64;
        let mut pending = files.list("pending");
        let mut swept = 0;
        while let Some(entry) = pending.next().await {
            let (marker, written) = entry.map_err(files_error)?;
            if written > cutoff {
                continue;
            }
            let mut parts = marker.split('/').skip(1);
            let (Some(Ok(room)), Some(Ok(id))) = (
                parts.next().map(str::parse::<Id>),
                parts.next().map(str::parse::<Id>),
            ) else {
                tracing::warn!(marker, "not an upload's marker; left as is");
                continue;
            };
            for gone in [
                meta_key(room, id),
                preview_key(room, id),
                key(room, id),
                marker.clone(),
            ] {
                files.delete(&gone).await.map_err(files_error)?;
            }
            swept += 1;
        }
        if swept > 0 {
            metrics::counter!("scalify_uploads_expired_total").increment(swept as u64);
            tracing::info!(swept, "deleted uploads no message took");
        }
        Ok(swept)
    }

    /// How often [`Chat::sweep_uploads`] should run: a quarter of the time an upload may wait,
    /// between a second and an hour.
    pub fn sweep_every(&self) -> Option<Duration> {
        let ttl = self.uploads.get()?.config.unattached_ttl;
        Some((ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600)))
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

    /// The file `id` of `room` (its preview, with `preview`), for a member of the room.
    pub async fn download(
        &self,
        user: &UserRef,
        room: &str,
        id: &str,
        preview: bool,
    ) -> Result<Download, ChatError> {
        self.charge(user, Cost::Read)?;
        let room = self.member_room(user, room).await?;
        let attachment = self.upload_meta(room.id, id).await?.attachment;
        if preview && !attachment.has_preview() {
            return Err(ChatError::not_found("the file has no preview"));
        }
        let key = if preview {
            preview_key(room.id, attachment.id)
        } else {
            key(room.id, attachment.id)
        };
        let file = self
            .uploads()?
            .config
            .files
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

    /// Deletes the file of a deleted message: its description first (so it is no longer
    /// found), then its preview and bytes. A failure is logged; the message is deleted anyway.
    pub(super) async fn delete_upload(&self, room: Id, attachment: &Attachment) {
        let Ok(uploads) = self.uploads() else {
            return;
        };
        let files = &uploads.config.files;
        for key in [
            meta_key(room, attachment.id),
            preview_key(room, attachment.id),
            key(room, attachment.id),
        ] {
            if let Err(e) = files.delete(&key).await {
                metrics::counter!("scalify_upload_deletes_failed_total").increment(1);
                tracing::warn!(error = %e, key, "cannot delete a deleted message's file");
            }
        }
    }
}
