//! Attachments' lifecycle in the service, on SQLite and the data-directory file store: one
//! message per upload, the expiry of unsent uploads, and deletions cut short — finished, or
//! undone, by the sweep. The wire (sizes, types, headers, both transports) is the end-to-end
//! suite's (`tests/e2e/uploads.test.js`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use scalify_core::{ErrorCode, Id, Message, MessageKind, NewMessage, RoomName, UserRef};
use scalify_fanout::{LocalDelivery, LocalFanout, RoomEvent, Sequencer};
use scalify_files::Files;
use scalify_service::auth::Auth;
use scalify_service::{Change, Chat, ChatConfig, UploadConfig};
use scalify_store::sqlite::{SqliteConfig, SqliteStore};
use scalify_store::Store;

struct Nowhere;

impl LocalDelivery for Nowhere {
    fn deliver(&self, _: &RoomEvent) {}
}

struct Node {
    chat: Arc<Chat>,
    store: Arc<SqliteStore>,
    files: PathBuf,
    _dir: tempfile::TempDir,
}

fn node(ttl: Duration) -> Node {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(
        SqliteStore::open(SqliteConfig::new(dir.path().join("scalify.db"))).expect("store"),
    );
    let fanout = Arc::new(LocalFanout::new(Sequencer::new(Arc::new(Nowhere))));
    let auth = Auth::new(&[7u8; 32], Duration::from_secs(3600)).expect("auth");
    let chat = Chat::new(
        Id::new().to_string(),
        store.clone(),
        fanout,
        None,
        auth,
        ChatConfig::default(),
    );
    let files = dir.path().join("files");
    chat.enable_uploads(UploadConfig {
        unattached_ttl: ttl,
        ..UploadConfig::new(Files::local(&files).expect("files"))
    });
    Node {
        chat,
        store,
        files,
        _dir: dir,
    }
}

async fn user(chat: &Chat, name: &str) -> UserRef {
    chat.register(
        name,
        "correct horse battery staple",
        "127.0.0.1".parse().unwrap(),
    )
    .await
    .expect("registered")
    .user
}

async fn upload(chat: &Chat, who: &UserRef, room: &str, text: &'static str) -> Id {
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(text))]);
    chat.upload(who, room, "notes.txt", None, body)
        .await
        .expect("uploaded")
        .id
}

async fn served(chat: &Chat, who: &UserRef, room: &str, id: Id) -> Result<(), ErrorCode> {
    chat.download(who, room, &id.to_string(), false)
        .await
        .map(|_| ())
        .map_err(|e| e.code)
}

/// Writes the marker a deletion leaves while it runs, as if written `ago`.
fn trash_marker(files: &Path, room: Id, upload: Id, message: &Message, ago: Duration) {
    let path = files.join(format!("trash/{room}/{upload}"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let note =
        serde_json::json!({ "room": message.room.as_str(), "message": message.id.to_string() });
    std::fs::write(&path, note.to_string()).unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(SystemTime::now() - ago).unwrap();
}

fn on_disk(files: &Path, upload: Id) -> usize {
    walk(files)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&upload.to_string()))
        .count()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn an_upload_goes_in_one_message_and_a_retry_of_that_send_is_that_message() {
    let n = node(Duration::from_secs(3600));
    let ann = user(&n.chat, "ann").await;
    n.chat.join(&ann, "files").await.expect("joined");
    let id = upload(&n.chat, &ann, "files", "hello").await;
    let id_text = id.to_string();
    let send = |client_id: &'static str| {
        n.chat
            .send_full(&ann, "files", "", client_id, None, Some(&id_text))
    };
    let first = send("c1").await.expect("sent");
    assert_eq!(first.attachment.as_ref().map(|a| a.id), Some(id));
    assert_eq!(send("c1").await.expect("retried").id, first.id);
    let other = send("c2").await.expect_err("a second message");
    assert_eq!(other.code, ErrorCode::Conflict);
    // Taken, it is no longer waiting: the sweep leaves it.
    assert_eq!(on_disk(&n.files, id), 2, "the file and its description");
}

#[tokio::test]
async fn an_upload_no_message_takes_expires_and_is_swept() {
    // Two seconds to wait; a send may take it for the first second.
    let n = node(Duration::from_secs(2));
    let ann = user(&n.chat, "ann").await;
    n.chat.join(&ann, "files").await.expect("joined");
    let id = upload(&n.chat, &ann, "files", "hello").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let late = n
        .chat
        .send_full(&ann, "files", "", "c1", None, Some(&id.to_string()))
        .await
        .expect_err("expired");
    assert_eq!(late.code, ErrorCode::BadRequest);
    assert!(late.message.contains("expired"), "{}", late.message);
    assert_eq!(n.chat.sweep_uploads().await.expect("swept"), 0, "not yet");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(n.chat.sweep_uploads().await.expect("swept"), 1);
    assert_eq!(on_disk(&n.files, id), 0);
}

#[tokio::test]
async fn a_deletion_cut_short_hides_the_file_and_the_sweep_finishes_or_undoes_it() {
    let n = node(Duration::from_secs(3600));
    let ann = user(&n.chat, "ann").await;
    let room = n.chat.join(&ann, "files").await.expect("joined");
    let kept = upload(&n.chat, &ann, "files", "kept").await;
    let gone = upload(&n.chat, &ann, "files", "gone").await;
    let m1 = n
        .chat
        .send_full(&ann, "files", "", "c1", None, Some(&kept.to_string()))
        .await
        .expect("sent");
    let m2 = n
        .chat
        .send_full(&ann, "files", "", "c2", None, Some(&gone.to_string()))
        .await
        .expect("sent");

    // A deletion of m1 that never committed, and one of m2 that committed but whose file was
    // never deleted (the node died in between): both files are hidden meanwhile.
    let minutes = Duration::from_secs(120);
    trash_marker(&n.files, room.id, kept, &m1, minutes);
    trash_marker(&n.files, room.id, gone, &m2, minutes);
    let mut delete = NewMessage::plain(
        room.id,
        RoomName::parse("files").unwrap(),
        ann.clone(),
        scalify_core::MessageText::from_trusted(String::new()),
        scalify_core::ClientId::parse("d2").unwrap(),
    );
    delete.kind = MessageKind::Delete;
    delete.relates_to = Some((m2.id, m2.seq));
    n.store.append(delete).await.expect("deleted");
    assert_eq!(
        served(&n.chat, &ann, "files", kept).await,
        Err(ErrorCode::NotFound)
    );
    assert_eq!(
        served(&n.chat, &ann, "files", gone).await,
        Err(ErrorCode::NotFound)
    );

    assert_eq!(n.chat.sweep_uploads().await.expect("swept"), 1);
    assert_eq!(on_disk(&n.files, gone), 0, "its message is deleted");
    // A message still standing may only not show its deletion yet (durable mode): its file
    // stays hidden until the marker is as old as an upload may wait (an hour here).
    assert_eq!(
        served(&n.chat, &ann, "files", kept).await,
        Err(ErrorCode::NotFound)
    );
    trash_marker(&n.files, room.id, kept, &m1, Duration::from_secs(3700));
    assert_eq!(n.chat.sweep_uploads().await.expect("swept"), 0);
    assert_eq!(
        served(&n.chat, &ann, "files", kept).await,
        Ok(()),
        "its message lives"
    );
    assert_eq!(on_disk(&n.files, kept), 2);

    // A deletion whose client_id names an earlier entry of this user's is that entry: the
    // message is not deleted, and its file stays.
    let other = n
        .chat
        .send_full(&ann, "files", "an earlier message", "e1", None, None)
        .await
        .expect("sent");
    let reused = n
        .chat
        .change(&ann, "files", &m1.id.to_string(), Change::Delete, "e1")
        .await
        .expect("answered");
    assert_eq!(reused.id, other.id);
    assert_eq!(served(&n.chat, &ann, "files", kept).await, Ok(()));

    // A deletion through the service deletes the file at once.
    n.chat
        .change(&ann, "files", &m1.id.to_string(), Change::Delete, "d1")
        .await
        .expect("deleted");
    assert_eq!(on_disk(&n.files, kept), 0);
}

#[tokio::test]
async fn a_send_retried_after_its_marker_stayed_does_not_lose_the_file_to_the_sweep() {
    let n = node(Duration::from_secs(2));
    let ann = user(&n.chat, "ann").await;
    let room = n.chat.join(&ann, "files").await.expect("joined");
    let id = upload(&n.chat, &ann, "files", "hello").await;
    let sent = n
        .chat
        .send_full(&ann, "files", "", "c1", None, Some(&id.to_string()))
        .await
        .expect("sent");
    // As if the first attempt had failed to take the marker away.
    let marker = n.files.join(format!("pending/{}/{id}", room.id));
    std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
    std::fs::write(&marker, b"").unwrap();
    let again = n
        .chat
        .send_full(&ann, "files", "", "c1", None, Some(&id.to_string()))
        .await
        .expect("retried");
    assert_eq!(again.id, sent.id);
    assert!(!marker.exists(), "the retry takes the marker away");
    // And a marker left anyway does not take a file a message holds.
    std::fs::write(&marker, b"").unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(n.chat.sweep_uploads().await.expect("swept"), 0);
    assert!(!marker.exists());
    assert_eq!(served(&n.chat, &ann, "files", id).await, Ok(()));
}
