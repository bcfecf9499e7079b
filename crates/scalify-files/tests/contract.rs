//! The file store's contract, run on both engines: the data directory and a real
//! S3-compatible server (`SCALIFY_TEST_S3_ENDPOINT`, started by `scripts/test.sh`).

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use scalify_files::{Files, FilesError, S3Config};

type Chunk = Result<Bytes, std::io::Error>;

fn chunks(data: &[u8], size: usize) -> Vec<Chunk> {
    data.chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

async fn read_all(files: &Files, key: &str) -> Option<Vec<u8>> {
    let download = files.get(key).await.unwrap()?;
    let mut out = Vec::new();
    let mut body = download.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(out.len() as u64, download.size, "size as stored");
    Some(out)
}

async fn contract(files: Files) {
    // A file written in many chunks, across several 5 MiB parts, reads back whole.
    let big = pattern(12 * 1024 * 1024 + 17);
    let stored = files
        .put_stream(
            "rooms/r1/big",
            stream::iter(chunks(&big, 64 * 1024)),
            20 << 20,
        )
        .await
        .unwrap();
    assert_eq!(stored.size, big.len() as u64);
    assert_eq!(stored.head, big[..scalify_files::SNIFF_BYTES]);
    assert_eq!(read_all(&files, "rooms/r1/big").await.unwrap(), big);

    // A small file; its head is all of it.
    let small = b"hello".to_vec();
    let stored = files
        .put_stream("rooms/r1/small", stream::iter(chunks(&small, 2)), 5)
        .await
        .unwrap();
    assert_eq!((stored.size, stored.head.as_slice()), (5, &small[..]));
    assert_eq!(
        files.get_bytes("rooms/r1/small", 5).await.unwrap().unwrap(),
        Bytes::from(small)
    );
    assert!(matches!(
        files.get_bytes("rooms/r1/small", 4).await,
        Err(FilesError::TooLarge { limit: 4 })
    ));

    // One byte over the limit: refused, and nothing is left under the key.
    let over = pattern(6 * 1024 * 1024 + 1);
    let refused = files
        .put_stream(
            "rooms/r1/over",
            stream::iter(chunks(&over, 1 << 20)),
            6 << 20,
        )
        .await;
    assert!(matches!(refused, Err(FilesError::TooLarge { limit }) if limit == 6 << 20));
    assert!(files.get("rooms/r1/over").await.unwrap().is_none());

    // A body that fails half-way (the client hung up) leaves nothing either, even where an
    // earlier file had the key.
    files
        .put_stream("rooms/r1/cut", stream::iter(chunks(b"old", 3)), 100)
        .await
        .unwrap();
    let mut cut = chunks(&pattern(6 << 20), 1 << 20);
    cut.push(Err(std::io::Error::other("connection reset")));
    let failed = files
        .put_stream("rooms/r1/cut", stream::iter(cut), 20 << 20)
        .await;
    assert!(matches!(failed, Err(FilesError::Body(_))), "{failed:?}");
    assert_eq!(read_all(&files, "rooms/r1/cut").await.unwrap(), b"old");

    // Small writes, deletion, and deleting what is not there.
    files
        .put("rooms/r1/meta.json", b"{}".to_vec())
        .await
        .unwrap();
    assert_eq!(read_all(&files, "rooms/r1/meta.json").await.unwrap(), b"{}");
    assert!(files.exists("rooms/r1/meta.json").await.unwrap());
    assert!(!files.exists("rooms/r1/absent").await.unwrap());
    files.delete("rooms/r1/meta.json").await.unwrap();
    files.delete("rooms/r1/big").await.unwrap();
    assert!(files.get("rooms/r1/meta.json").await.unwrap().is_none());
    assert!(files.get("rooms/r1/big").await.unwrap().is_none());
    files.delete("rooms/r1/never").await.unwrap();
    assert!(files
        .get_bytes("rooms/r1/never", 10)
        .await
        .unwrap()
        .is_none());
    // Listing a folder: every key under it, with when it was written.
    files.put("pending/r1/a", Vec::new()).await.unwrap();
    files.put("pending/r2/b", Vec::new()).await.unwrap();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut listed: Vec<(String, i64)> = files
        .list("pending")
        .map(|r| r.unwrap())
        .collect::<Vec<_>>()
        .await;
    listed.sort();
    assert_eq!(
        listed.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["pending/r1/a", "pending/r2/b"]
    );
    for (_, at) in &listed {
        assert!((started - at).abs() < 60_000, "written {at}, now {started}");
    }
    assert_eq!(files.list("nothing-here").count().await, 0);
    files.check().await.unwrap();
}

#[tokio::test]
async fn the_data_directory_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(Files::local(&dir.path().join("files")).unwrap()).await;
}

/// The test server takes any credentials, but the client needs some: without them it would
/// ask the cloud's instance metadata service.
fn test_credentials() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "scalify-test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "scalify-test");
}

#[tokio::test]
async fn s3_keeps_the_contract() {
    test_credentials();
    let files = Files::s3(&S3Config {
        endpoint: scalify_testkit::s3_endpoint(),
        bucket: scalify_testkit::s3_bucket().await,
        region: "us-east-1".into(),
    })
    .unwrap();
    contract(files).await;
}

#[tokio::test]
async fn an_unreachable_s3_fails_its_check() {
    test_credentials();
    let files = Files::s3(&S3Config {
        endpoint: "http://127.0.0.1:9".into(),
        bucket: "none".into(),
        region: "us-east-1".into(),
    })
    .unwrap();
    assert!(files.check().await.is_err());
}
