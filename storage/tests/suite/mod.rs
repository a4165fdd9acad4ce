//! The contracts of `storage::Backend` (see `backend.rs`), checked the same way on every backend,
//! plus a few runs of the `Store` service over it. Each case takes a fresh, empty backend.

#![allow(unreachable_pub)] // The cases are `pub` so that other test binaries can run them too.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use storage::hash::digest_of;
use storage::{
    Algorithm, Backend, ByteStream, Digest, Error, Options, Reference, RepoName, Store, Tag,
};

/// Pushes `body` as an OCI image manifest (that Content-Type) under `reference`, no extra tags.
async fn put_oci_manifest(
    reg: &Store,
    repo: &RepoName,
    reference: Reference,
    body: &[u8],
) -> storage::PushedManifest {
    let content_type = Some("application/vnd.oci.image.manifest.v1+json");
    let pushed = reg.manifest_put(
        repo,
        &reference,
        content_type,
        Bytes::copy_from_slice(body),
        &[],
    );
    pushed.await.unwrap()
}

/// A backend under test.
pub type B = Arc<dyn Backend>;

/// Deterministic, position-dependent bytes, so that a shifted or repeated span shows.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(2654435761) >> 13) as u8 ^ seed)
        .collect()
}

/// A body of `data` cut into chunks of `chunk` bytes.
fn body(data: &[u8], chunk: usize) -> ByteStream {
    let chunks: Vec<io::Result<Bytes>> = data
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks).boxed()
}

/// A body that sends `data` and then fails, like a client that disconnects.
fn failing_body(data: &[u8], chunk: usize) -> ByteStream {
    let mut chunks: Vec<io::Result<Bytes>> = data
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    chunks.push(Err(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "client went away",
    )));
    futures::stream::iter(chunks).boxed()
}

async fn collect(s: ByteStream) -> Vec<u8> {
    let parts: Vec<Bytes> = s.try_collect().await.expect("stream reads");
    parts.concat()
}

async fn read(b: &B, key: &str) -> Vec<u8> {
    let o = b.get(key, None).await.expect("get");
    let size = o.size;
    let data = collect(o.stream).await;
    assert_eq!(data.len() as u64, size, "GetObject.size of {key}");
    data
}

async fn staged(b: &B, id: &str, len: u64) -> Vec<u8> {
    collect(b.stage_read(id, len).await.expect("stage_read")).await
}

/// A size that makes a staged upload use several parts on backends with a minimum chunk.
fn unit(b: &B) -> usize {
    (b.min_chunk() as usize).max(4096)
}

fn keys(metas: &[storage::ObjectMeta]) -> Vec<&str> {
    metas.iter().map(|m| m.key.as_str()).collect()
}

/// Object stores keep modification times in whole seconds.
const TICK: Duration = Duration::from_millis(1100);

fn recent(t: SystemTime) -> bool {
    let now = SystemTime::now();
    let slack = Duration::from_secs(120);
    t > now - slack && t < now + slack
}

pub async fn put_then_read(b: B) {
    let data = pattern(3000, 1);
    b.put("t/one", Bytes::from(data.clone())).await.unwrap();
    assert_eq!(read(&b, "t/one").await, data);
    assert_eq!(b.get_bytes("t/one").await.unwrap().as_ref(), &data[..]);
    let m = b.head("t/one").await.unwrap();
    assert_eq!((m.key.as_str(), m.size), ("t/one", 3000));
    assert!(recent(m.modified), "{:?}", m.modified);
    // An empty object is an object.
    b.put("t/empty", Bytes::new()).await.unwrap();
    assert_eq!(b.head("t/empty").await.unwrap().size, 0);
    assert!(read(&b, "t/empty").await.is_empty());
    // Absent keys are NotFound for every read.
    assert!(matches!(b.head("t/none").await, Err(Error::NotFound(_))));
    assert!(matches!(
        b.get("t/none", None).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        b.get_bytes("t/none").await,
        Err(Error::NotFound(_))
    ));
}

pub async fn put_replaces(b: B) {
    b.put("r/k", Bytes::from_static(b"a much longer first value"))
        .await
        .unwrap();
    b.put("r/k", Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(read(&b, "r/k").await, b"second");
    assert_eq!(b.head("r/k").await.unwrap().size, 6);
    assert_eq!(keys(&b.list("r/").await.unwrap()), ["r/k"]);
}

pub async fn get_ranges(b: B) {
    let data = pattern(1000, 2);
    b.put("g/k", Bytes::from(data.clone())).await.unwrap();
    for r in [0..1, 10..20, 990..1000, 0..1000, 999..1000, 500..501] {
        let o = b.get("g/k", Some(r.clone())).await.unwrap();
        assert_eq!(o.size, 1000, "size is the whole object's for {r:?}");
        let got = collect(o.stream).await;
        assert_eq!(got, &data[r.start as usize..r.end as usize], "range {r:?}");
    }
    let o = b.get("g/k", Some(5..5)).await.unwrap();
    assert_eq!(o.size, 1000);
    assert!(collect(o.stream).await.is_empty());
    assert!(matches!(
        b.get("g/none", Some(0..1)).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn delete_is_idempotent(b: B) {
    b.delete("d/never").await.unwrap();
    b.put("d/k", Bytes::from_static(b"x")).await.unwrap();
    b.put("d/other", Bytes::from_static(b"y")).await.unwrap();
    b.delete("d/k").await.unwrap();
    assert!(matches!(b.head("d/k").await, Err(Error::NotFound(_))));
    b.delete("d/k").await.unwrap();
    assert_eq!(read(&b, "d/other").await, b"y");
    assert_eq!(keys(&b.list("d/").await.unwrap()), ["d/other"]);
    // A deleted, then re-created key reads the new bytes.
    b.put("d/k", Bytes::from_static(b"z")).await.unwrap();
    assert_eq!(read(&b, "d/k").await, b"z");
}

pub async fn list_by_key_prefix(b: B) {
    let all = [
        "a/b/1",
        "a/b/2",
        "a/b/x/deep",
        "a/bc/3",
        "a/c",
        "ab",
        "b/x",
        "abc/d",
    ];
    // Put in an order unrelated to the sorted one.
    for (i, k) in all.iter().rev().enumerate() {
        b.put(k, Bytes::from(vec![b'v'; i + 1])).await.unwrap();
    }
    let l = b.list("a/b").await.unwrap();
    assert_eq!(keys(&l), ["a/b/1", "a/b/2", "a/b/x/deep", "a/bc/3"]);
    assert_eq!(
        keys(&b.list("a/b/").await.unwrap()),
        ["a/b/1", "a/b/2", "a/b/x/deep"]
    );
    assert_eq!(
        keys(&b.list("a/").await.unwrap()),
        ["a/b/1", "a/b/2", "a/b/x/deep", "a/bc/3", "a/c"]
    );
    assert_eq!(keys(&b.list("ab").await.unwrap()), ["ab", "abc/d"]);
    let mut sorted = all.to_vec();
    sorted.sort();
    assert_eq!(keys(&b.list("").await.unwrap()), sorted);
    assert!(b.list("zz/").await.unwrap().is_empty());
    // A prefix that runs through an object, as if it were a folder, lists nothing.
    assert!(b.list("a/b/x/deep/more").await.unwrap().is_empty());
    assert!(b.list_dir("a/b/x/deep/").await.unwrap().is_empty());
    // Sizes and times are reported.
    for m in b.list("").await.unwrap() {
        let i = all.iter().rev().position(|k| *k == m.key).unwrap();
        assert_eq!(m.size, i as u64 + 1, "{}", m.key);
        assert!(recent(m.modified));
    }
}

pub async fn list_hides_staging_area(b: B) {
    b.put("k/v", Bytes::from_static(b"1")).await.unwrap();
    b.stage_append("hidden", 0, body(b"staged", 3))
        .await
        .unwrap();
    b.put("uploads/hidden/state", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(keys(&b.list("").await.unwrap()), ["k/v"]);
    assert!(b.list("uploads/").await.unwrap().is_empty());
    // ... while the state object itself reads back.
    assert_eq!(
        b.get_bytes("uploads/hidden/state").await.unwrap().as_ref(),
        b"{}"
    );
}

pub async fn list_dir_children(b: B) {
    for k in [
        "f/b/1",
        "f/b/2",
        "f/a",
        "f/c/d/e",
        "f/c/x",
        "fg/h",
        "f/b/sub/z",
    ] {
        b.put(k, Bytes::from_static(b"x")).await.unwrap();
    }
    assert_eq!(b.list_dir("f/").await.unwrap(), ["a", "b", "c"]);
    assert_eq!(b.list_dir("f/b/").await.unwrap(), ["1", "2", "sub"]);
    assert_eq!(b.list_dir("f/c/").await.unwrap(), ["d", "x"]);
    assert!(b.list_dir("f/missing/").await.unwrap().is_empty());
    assert!(b.list_dir("nothing/").await.unwrap().is_empty());
    // An object is not a folder.
    assert!(b.list_dir("f/a/").await.unwrap().is_empty());
    b.delete("f/a").await.unwrap();
    assert_eq!(b.list_dir("f/").await.unwrap(), ["b", "c"]);
}

pub async fn touch_refreshes(b: B) {
    let before = put_a_tick_ago(&b, "t/blob", b"content").await;
    b.touch("t/blob").await.unwrap();
    let after = b.head("t/blob").await.unwrap();
    assert!(
        after.modified > before,
        "{before:?} -> {:?}",
        after.modified
    );
    assert_eq!(after.size, 7);
    assert_eq!(read(&b, "t/blob").await, b"content");
    let listed = b.list("t/").await.unwrap();
    assert_eq!(keys(&listed), ["t/blob"]);
    assert!(listed[0].modified > before, "list shows the refreshed time");
    assert!(matches!(b.touch("t/none").await, Err(Error::NotFound(_))));
    assert!(matches!(b.head("t/none").await, Err(Error::NotFound(_))));
    // A touched object that is deleted is gone.
    b.delete("t/blob").await.unwrap();
    assert!(matches!(b.head("t/blob").await, Err(Error::NotFound(_))));
    assert!(b.list("t/").await.unwrap().is_empty());
}

pub async fn stage_append_at_offsets(b: B) {
    let u = unit(&b);
    let data = pattern(2 * u + 777, 3);
    let cuts = [0, 100, u + 50, u + 51, 2 * u + 1, data.len()];
    for w in cuts.windows(2) {
        let n = b
            .stage_append("s1", w[0] as u64, body(&data[w[0]..w[1]], 7000))
            .await
            .unwrap();
        assert_eq!(n, w[1] as u64);
    }
    assert_eq!(staged(&b, "s1", data.len() as u64).await, data);
    assert_eq!(staged(&b, "s1", 10).await, &data[..10]);
    // An empty append changes nothing.
    let n = b
        .stage_append("s1", data.len() as u64, body(b"", 1))
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    // More bytes after a read.
    let n = b
        .stage_append("s1", data.len() as u64, body(b"more", 2))
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64 + 4);
    let mut all = data.clone();
    all.extend_from_slice(b"more");
    assert_eq!(staged(&b, "s1", all.len() as u64).await, all);
    // A state that claims more bytes than are staged is an error, not a hole.
    assert!(b
        .stage_append("s1", all.len() as u64 + 5, body(b"x", 1))
        .await
        .is_err());
    // Separate uploads do not mix.
    b.stage_append("s2", 0, body(b"other", 2)).await.unwrap();
    assert_eq!(staged(&b, "s2", 5).await, b"other");
    assert_eq!(staged(&b, "s1", 3).await, &all[..3]);
}

pub async fn stage_append_discards_failed_bytes(b: B) {
    let u = unit(&b);
    let head = pattern(u / 2, 4);
    let n = b.stage_append("f", 0, body(&head, 999)).await.unwrap();
    assert_eq!(n, head.len() as u64);
    // A body that fails after more than two parts' worth of bytes.
    let junk = pattern(2 * u + 123, 5);
    let err = b
        .stage_append("f", n, failing_body(&junk, 4096))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Body(_)), "{err:?}");
    // A small failed append too.
    assert!(b
        .stage_append("f", n, failing_body(b"zz", 1))
        .await
        .is_err());
    let rest = pattern(u + 17, 6);
    let m = b.stage_append("f", n, body(&rest, 5000)).await.unwrap();
    assert_eq!(m, (head.len() + rest.len()) as u64);
    let want = [head.clone(), rest.clone()].concat();
    assert_eq!(staged(&b, "f", m).await, want);
    b.stage_commit("f", m, "blobs/f").await.unwrap();
    assert_eq!(read(&b, "blobs/f").await, want);
}

/// The registry retries from its recorded offset when the backend accepted an append the
/// registry did not record (length check failed, state not saved): the bytes past it go.
pub async fn stage_append_rewinds(b: B) {
    let u = unit(&b);
    // Within the tail.
    b.stage_append("w", 0, body(b"abcdef", 2)).await.unwrap();
    assert_eq!(b.stage_append("w", 3, body(b"XY", 1)).await.unwrap(), 5);
    assert_eq!(staged(&b, "w", 5).await, b"abcXY");
    // Across parts: the last append is undone.
    let first = pattern(u + 10, 7);
    let second = pattern(2 * u + 5, 8);
    let third = pattern(u / 3, 9);
    let a = b.stage_append("v", 0, body(&first, 8192)).await.unwrap();
    b.stage_append("v", a, body(&second, 8192)).await.unwrap();
    let c = b.stage_append("v", a, body(&third, 8192)).await.unwrap();
    assert_eq!(c, (first.len() + third.len()) as u64);
    let want = [first, third].concat();
    assert_eq!(staged(&b, "v", c).await, want);
    b.stage_commit("v", c, "blobs/v").await.unwrap();
    assert_eq!(read(&b, "blobs/v").await, want);
}

pub async fn stage_commit_publishes_len(b: B) {
    let u = unit(&b);
    for (id, len) in [("c0", 1usize), ("c1", u - 1), ("c2", u), ("c3", 2 * u + 3)] {
        let data = pattern(len, len as u8);
        let n = b.stage_append(id, 0, body(&data, 10_000)).await.unwrap();
        assert_eq!(n, len as u64);
        let key = format!("blobs/{id}");
        b.stage_commit(id, n, &key).await.unwrap();
        assert_eq!(read(&b, &key).await, data, "{id}");
        assert_eq!(b.head(&key).await.unwrap().size, len as u64);
        assert!(b.stage_list().await.unwrap().iter().all(|(s, _)| s != id));
        assert!(b.list(&format!("uploads/{id}/")).await.unwrap().is_empty());
    }
    // Exactly `len` bytes, also when more are staged.
    b.stage_append("c4", 0, body(b"abcdef", 4)).await.unwrap();
    b.stage_commit("c4", 4, "blobs/c4").await.unwrap();
    assert_eq!(read(&b, "blobs/c4").await, b"abcd");
    let data = pattern(u + 100, 11);
    b.stage_append("c5", 0, body(&data, 9000)).await.unwrap();
    b.stage_commit("c5", u as u64 + 50, "blobs/c5")
        .await
        .unwrap();
    assert_eq!(read(&b, "blobs/c5").await, &data[..u + 50]);
    // A commit after a read (which may have consolidated the parts).
    let data = pattern(u + 9, 12);
    b.stage_append("c6", 0, body(&data, 9000)).await.unwrap();
    assert_eq!(staged(&b, "c6", data.len() as u64).await, data);
    b.stage_commit("c6", data.len() as u64, "blobs/c6")
        .await
        .unwrap();
    assert_eq!(read(&b, "blobs/c6").await, data);
    // Nothing appended: an empty blob.
    b.stage_commit("c7", 0, "blobs/c7").await.unwrap();
    assert_eq!(b.head("blobs/c7").await.unwrap().size, 0);
    // More bytes than staged is an error, and publishes nothing.
    b.stage_append("c8", 0, body(b"abc", 4)).await.unwrap();
    assert!(b.stage_commit("c8", 4, "blobs/c8").await.is_err());
    assert!(matches!(b.head("blobs/c8").await, Err(Error::NotFound(_))));
}

/// `stage_adopt` takes a local file whole as a stage (and it commits like any other), or leaves
/// it untouched and says so; the scratch folder, where a backend has one, stays out of every
/// listing.
pub async fn stage_adopt_takes_or_leaves(b: B) {
    let elsewhere = tempfile::tempdir().unwrap();
    let folder = match b.scratch_dir() {
        Some(d) => d.join("suite"),
        None => elsewhere.path().to_owned(),
    };
    std::fs::create_dir_all(&folder).unwrap();
    let data = pattern(3 * unit(&b) / 2 + 7, 21);
    let path = folder.join("file");
    std::fs::write(&path, &data).unwrap();
    let adopted = b.stage_adopt("adopted", &path).await.unwrap();
    // Backends with a scratch folder take files from it; the others never take any.
    assert_eq!(adopted, b.scratch_dir().is_some(), "{}", b.kind());
    assert!(
        b.list("").await.unwrap().is_empty(),
        "scratch folder listed"
    );
    assert!(b
        .list_dir("")
        .await
        .unwrap()
        .iter()
        .all(|n| !n.starts_with('.')));
    if !adopted {
        assert_eq!(
            std::fs::read(&path).unwrap(),
            data,
            "a file not adopted is left as it was"
        );
        assert!(b.stage_list().await.unwrap().is_empty());
        return;
    }
    assert!(!path.exists(), "an adopted file moves");
    assert_eq!(staged_ids(&b).await, ["adopted"]);
    assert_eq!(staged(&b, "adopted", data.len() as u64).await, data);
    b.stage_commit("adopted", data.len() as u64, "blobs/adopted")
        .await
        .unwrap();
    assert_eq!(read(&b, "blobs/adopted").await, data);
    assert!(b.stage_list().await.unwrap().is_empty());
    // What is left in the scratch folder is the writer's: not listed, not purged, not deleted.
    std::fs::write(folder.join("left"), b"x").unwrap();
    assert_eq!(keys(&b.list("").await.unwrap()), ["blobs/adopted"]);
    assert!(b.stage_list().await.unwrap().is_empty());
    assert!(folder.join("left").exists());
}

pub async fn stage_commit_keeps_existing(b: B) {
    let before = put_a_tick_ago(&b, "blobs/same", b"same bytes").await;
    b.stage_append("e", 0, body(b"same bytes", 3))
        .await
        .unwrap();
    b.stage_commit("e", 10, "blobs/same").await.unwrap();
    let after = b.head("blobs/same").await.unwrap();
    assert_eq!(read(&b, "blobs/same").await, b"same bytes");
    assert!(after.modified > before, "refreshed for the GC");
    assert!(b.stage_list().await.unwrap().is_empty());
}

pub async fn stage_delete_is_idempotent(b: B) {
    b.stage_delete("nothing").await.unwrap();
    let u = unit(&b);
    b.stage_append("x", 0, body(&pattern(u + 1, 1), 9000))
        .await
        .unwrap();
    b.put("uploads/x/state", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    b.stage_append("y", 0, body(b"keep", 2)).await.unwrap();
    b.stage_delete("x").await.unwrap();
    assert!(matches!(
        b.get_bytes("uploads/x/state").await,
        Err(Error::NotFound(_))
    ));
    assert!(b.stage_read("x", 1).await.is_err());
    b.stage_delete("x").await.unwrap();
    let ids = staged_ids(&b).await;
    assert_eq!(ids, ["y"]);
    assert_eq!(staged(&b, "y", 4).await, b"keep");
    // The id can be used again from scratch.
    b.stage_append("x", 0, body(b"new", 1)).await.unwrap();
    assert_eq!(staged(&b, "x", 3).await, b"new");
}

pub async fn stage_list_ids(b: B) {
    assert!(b.stage_list().await.unwrap().is_empty());
    b.stage_append("id2", 0, body(b"2", 1)).await.unwrap();
    b.stage_append("id1", 0, body(b"1", 1)).await.unwrap();
    // An upload that has state but no bytes yet is listed too (so it can be purged).
    b.put("uploads/id3/state", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let l = b.stage_list().await.unwrap();
    let ids: Vec<&str> = l.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(ids, ["id1", "id2", "id3"]);
    assert!(l.iter().all(|(_, t)| recent(*t)));
    b.stage_delete("id2").await.unwrap();
    let ids = staged_ids(&b).await;
    assert_eq!(ids, ["id1", "id3"]);
}

/// Stores `data` at `key`, then waits a [`TICK`]; returns the object's modification time.
async fn put_a_tick_ago(b: &B, key: &str, data: &'static [u8]) -> SystemTime {
    b.put(key, Bytes::from_static(data)).await.unwrap();
    let modified = b.head(key).await.unwrap().modified;
    tokio::time::sleep(TICK).await;
    modified
}

/// The ids of the staged uploads, in the order `stage_list` gives them.
async fn staged_ids(b: &B) -> Vec<String> {
    let listed = b.stage_list().await.unwrap();
    listed.into_iter().map(|(id, _)| id).collect()
}

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

/// A chunked upload through the service, with the chunk size the backend asks for.
pub async fn registry_chunked_upload(b: B) {
    let reg = Store::new(b.clone(), Options::default());
    let r = repo("suite/chunked");
    let u = unit(&b);
    let data = pattern(2 * u + u / 2, 13);
    let digest = digest_of(Algorithm::Sha256, &data);
    let st = reg.upload_start(&r, Algorithm::Sha256).await.unwrap();
    assert_eq!(st.offset, 0);
    let mut off = 0usize;
    for end in [u, 2 * u] {
        let st2 = reg
            .upload_append(
                &r,
                &st.id,
                Some(off as u64),
                Some((end - off) as u64),
                &mut body(&data[off..end], 16 * 1024),
            )
            .await
            .unwrap();
        assert_eq!(st2.offset, end as u64);
        off = end;
    }
    assert_eq!(
        reg.upload_status(&r, &st.id).await.unwrap().offset,
        off as u64
    );
    // A chunk at the wrong offset is refused and changes nothing; its body is left unread for
    // the caller to drain.
    let mut rejected = body(b"x", 1);
    let bad = reg
        .upload_append(&r, &st.id, Some(1), Some(1), &mut rejected)
        .await;
    assert!(matches!(bad, Err(Error::RangeInvalid { .. })), "{bad:?}");
    assert_eq!(collect(rejected).await, b"x");
    // A chunk longer than declared is refused, and the upload continues from where it was.
    let bad = reg
        .upload_append(
            &r,
            &st.id,
            Some(off as u64),
            Some(3),
            &mut body(b"abcdef", 2),
        )
        .await;
    assert!(matches!(bad, Err(Error::SizeInvalid(_))), "{bad:?}");
    let size = reg
        .upload_finish(
            &r,
            &st.id,
            &digest,
            Some(off as u64),
            Some((data.len() - off) as u64),
            Some(&mut body(&data[off..], 10_000)),
        )
        .await
        .unwrap();
    assert_eq!(size, data.len() as u64);
    assert_eq!(reg.blob_size(&r, &digest).await.unwrap(), size);
    assert_eq!(
        collect(reg.blob_read(&digest, None).await.unwrap()).await,
        data
    );
    assert_eq!(
        collect(reg.blob_read(&digest, Some(5..1005)).await.unwrap()).await,
        &data[5..1005]
    );
    assert!(matches!(
        reg.upload_status(&r, &st.id).await,
        Err(Error::UploadUnknown)
    ));
    assert!(b.stage_list().await.unwrap().is_empty());
    // A wrong digest stores nothing.
    let st = reg.upload_start(&r, Algorithm::Sha256).await.unwrap();
    let wrong = digest_of(Algorithm::Sha256, b"something else");
    let res = reg
        .upload_finish(&r, &st.id, &wrong, None, None, Some(&mut body(b"abc", 1)))
        .await;
    assert!(matches!(res, Err(Error::DigestMismatch { .. })), "{res:?}");
    assert!(matches!(
        reg.blob_size(&r, &wrong).await,
        Err(Error::BlobUnknown(_))
    ));
    // A monolithic upload, and a mount into another repository.
    let small = b"small blob".to_vec();
    let sd = digest_of(Algorithm::Sha256, &small);
    reg.blob_put(&r, &sd, Some(small.len() as u64), body(&small, 3))
        .await
        .unwrap();
    let other = repo("suite/other");
    assert!(reg.blob_mount(&other, &sd, Some(&r)).await.unwrap());
    assert_eq!(
        reg.blob_size(&other, &sd).await.unwrap(),
        small.len() as u64
    );
}

fn manifest(config: &Digest, config_len: usize, layer: &Digest, layer_len: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config.to_string(), "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer.to_string(), "size": layer_len}],
    }))
    .unwrap()
}

/// Push of an image and of an artifact that refers to it, then the referrers API and deletes.
pub async fn registry_manifests_and_referrers(b: B) {
    let reg = Store::new(b.clone(), Options::default());
    let r = repo("suite/images");
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = pattern(5000, 14);
    let empty = b"{}".to_vec();
    let mut ds = Vec::new();
    for blob in [&config, &layer, &empty] {
        let d = digest_of(Algorithm::Sha256, blob);
        reg.blob_put(&r, &d, Some(blob.len() as u64), body(blob, 1000))
            .await
            .unwrap();
        ds.push(d);
    }
    let image = manifest(&ds[0], config.len(), &ds[1], layer.len());
    let tag: Tag = "v1".parse().unwrap();
    let pushed = put_oci_manifest(&reg, &r, Reference::Tag(tag.clone()), &image).await;
    assert_eq!(pushed.digest, digest_of(Algorithm::Sha256, &image));
    let (info, bytes) = reg
        .manifest_get(&r, &Reference::Tag(tag.clone()))
        .await
        .unwrap();
    assert_eq!(bytes.as_ref(), &image[..]);
    assert_eq!(info.size, image.len() as u64);

    let artifact = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": ds[2].to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json",
                    "digest": ds[2].to_string(), "size": 2}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": pushed.digest.to_string(), "size": image.len()},
        "annotations": {"org.example": "yes"},
    }))
    .unwrap();
    let ad = digest_of(Algorithm::Sha256, &artifact);
    let ap = put_oci_manifest(&reg, &r, Reference::Digest(ad.clone()), &artifact).await;
    assert_eq!(ap.subject.as_ref(), Some(&pushed.digest));
    let page = reg
        .referrers(&r, &pushed.digest, None, 10, None)
        .await
        .unwrap();
    assert!(!page.more);
    let refs = page.descriptors;
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].digest().to_string(), ad.to_string());
    assert_eq!(refs[0].size(), artifact.len() as u64);
    assert_eq!(
        refs[0]
            .artifact_type()
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("application/vnd.example.sbom")
    );
    assert_eq!(
        reg.referrers(&r, &pushed.digest, Some("application/other"), 10, None)
            .await
            .unwrap()
            .descriptors
            .len(),
        0
    );
    assert_eq!(reg.tags(&r, None, None).await.unwrap().items, ["v1"]);
    assert!(reg
        .catalog(None, None)
        .await
        .unwrap()
        .items
        .contains(&"suite/images".to_string()));
    // Re-pushing the same manifest refreshes, and deleting the artifact removes the referrer.
    reg.manifest_put(
        &r,
        &Reference::Tag("v2".parse().unwrap()),
        None,
        Bytes::from(image.clone()),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(reg.tags(&r, None, None).await.unwrap().items, ["v1", "v2"]);
    reg.manifest_delete(&r, &Reference::Digest(ad))
        .await
        .unwrap();
    assert!(reg
        .referrers(&r, &pushed.digest, None, 10, None)
        .await
        .unwrap()
        .descriptors
        .is_empty());
    reg.manifest_delete(&r, &Reference::Digest(pushed.digest.clone()))
        .await
        .unwrap();
    assert!(matches!(
        reg.manifest_get(&r, &Reference::Tag(tag)).await,
        Err(Error::ManifestUnknown(_))
    ));
    assert!(reg.tags(&r, None, None).await.unwrap().items.is_empty());
}
