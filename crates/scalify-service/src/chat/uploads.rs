//! Attachments: a member uploads a file to a room ([`Chat::upload`]), then sends a message
//! that carries it (`attachment` on `send`); members download it ([`Chat::download`]).
//! Deleting the message deletes the file.
//!
//! A room's files live in the [`Files`] store under `rooms/<room id>/`: `<id>` (the bytes),
//! `<id>.preview.png` (an image's preview) and `<id>.json` (who uploaded it and what it is),
//! written last, so an upload that failed half-way is never found.

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

/// What the store keeps beside each file.
#[derive(Debug, Serialize, Deserialize)]
struct UploadMeta {
    uploader: Id,
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
        let key = key(room.id, id);
        let files = &limits.files;
        let stored = files
            .put_stream(&key, stalling(body, limits.stall_timeout), limits.max_bytes)
            .await
            .map_err(files_error)?;
        let kept = self
            .describe(uploads, &key, room.id, id, name, stored)
            .await;
        let attachment = match kept {
            Ok(attachment) => attachment,
            Err(e) => {
                if let Err(gone) = files.delete(&key).await {
                    tracing::warn!(error = %gone, key, "cannot delete a refused upload");
                }
                return Err(e);
            }
        };
        let meta = UploadMeta {
            uploader: user.id,
            attachment: attachment.clone(),
        };
        let json = serde_json::to_vec(&meta).map_err(|_| ChatError::internal())?;
        files
            .put(&meta_key(room.id, id), json)
            .await
            .map_err(files_error)?;
        metrics::counter!("scalify_uploads_total").increment(1);
        metrics::counter!("scalify_upload_bytes_total").increment(attachment.size);
        Ok(attachment)
    }

    /// What a stored upload is: its type from its bytes, and for an image its dimensions and
    /// a preview (stored beside it).
    async fn describe(
        &self,
        uploads: &Uploads,
        key: &str,
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
                .get_bytes(key, limits.max_bytes)
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

    /// The upload `id` of `room`, which `sender` uploaded, to attach to a message.
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
