//! The `Store` contract, shared by every engine's test file: each engine calls these on a
//! fresh, empty store of its own.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;

use scalify_core::{
    ClientId, MessageText, NewMessage, Room, RoomKind, RoomName, UserRef, Username,
};
use scalify_store::notify::{
    NotifyStore, Outgoing, PushSubscription, PUSH_SUBSCRIPTIONS_PER_USER, WEBHOOK_TARGET,
};
use scalify_store::{Store, StoreError, User};

pub async fn user(store: &dyn Store, name: &str) -> User {
    store
        .create_user(&Username::parse(name).unwrap(), "hash")
        .await
        .unwrap()
}

/// A public room with `owner` as its member (created if absent).
pub async fn public_room(store: &dyn Store, name: &str, owner: &User) -> Room {
    store
        .ensure_room(
            &RoomName::parse(name).unwrap(),
            RoomKind::Public,
            &[owner.id],
        )
        .await
        .unwrap()
}

pub fn msg(room: &Room, sender: &User, client_id: &str, text: &str) -> NewMessage {
    NewMessage {
        room_id: room.id,
        room: room.name.clone(),
        sender: UserRef {
            id: sender.id,
            username: sender.username.to_string(),
        },
        text: MessageText::parse(text, 4096).unwrap(),
        client_id: ClientId::parse(client_id).unwrap(),
        mentions: Vec::new(),
        mention_room: false,
        kind: scalify_core::MessageKind::Message,
        relates_to: None,
        reply_to: None,
        attachment: None,
    }
}

pub async fn usernames_and_room_names_are_unique(store: Arc<dyn Store>) {
    user(&*store, "alice").await;
    let again = store
        .create_user(&Username::parse("ALICE").unwrap(), "h")
        .await;
    assert!(matches!(again, Err(StoreError::Conflict)));
    let name = RoomName::parse("general").unwrap();
    store
        .create_room(&name, RoomKind::Public, &[])
        .await
        .unwrap();
    assert!(matches!(
        store.create_room(&name, RoomKind::Private, &[]).await,
        Err(StoreError::Conflict)
    ));
}

pub async fn concurrent_appends_get_gap_free_seqs_and_idempotency_holds(store: Arc<dyn Store>) {
    let alice = user(&*store, "alice").await;
    let room = public_room(&*store, "general", &alice).await;
    // 400 sends from 200 tasks, each client_id sent twice concurrently.
    let mut tasks = Vec::new();
    for i in 0..200 {
        for _ in 0..2 {
            let (store, m) = (store.clone(), msg(&room, &alice, &format!("c{i}"), "hi"));
            tasks.push(tokio::spawn(async move { store.append(m).await.unwrap() }));
        }
    }
    let mut seqs = Vec::new();
    let mut dups = 0;
    for t in tasks {
        let a = t.await.unwrap();
        if a.duplicate {
            dups += 1
        } else {
            seqs.push(a.message.seq)
        }
    }
    assert_eq!(dups, 200);
    seqs.sort();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    let stored = store.after(&room, 0, 1000).await.unwrap();
    assert_eq!(stored.len(), 200);
    let ids: HashSet<_> = stored
        .iter()
        .map(|m| m.client_id.as_str().to_owned())
        .collect();
    assert_eq!(ids.len(), 200);
    assert_eq!(store.room(&room.name).await.unwrap().unwrap().last_seq, 200);
}

pub async fn history_pages_backwards_in_ascending_order(store: Arc<dyn Store>) {
    let alice = user(&*store, "alice").await;
    let room = public_room(&*store, "r", &alice).await;
    for i in 0..25 {
        store
            .append(msg(&room, &alice, &format!("c{i}"), &format!("m{i}")))
            .await
            .unwrap();
    }
    let newest = store.history(&room, None, 10).await.unwrap();
    assert_eq!(
        newest.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (16..=25).collect::<Vec<_>>()
    );
    let older = store.history(&room, Some(16), 10).await.unwrap();
    assert_eq!(older.first().unwrap().seq, 6);
    let oldest = store.history(&room, Some(6), 10).await.unwrap();
    assert_eq!(
        oldest.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=5).collect::<Vec<_>>()
    );
    let after = store.after(&room, 20, 3).await.unwrap();
    assert_eq!(
        after.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![21, 22, 23]
    );
}

pub async fn admin_role(store: Arc<dyn Store>) {
    let alice = user(&*store, "alice").await;
    assert!(!store.is_admin(alice.id).await.unwrap());
    let name = Username::parse("alice").unwrap();
    assert!(store.set_admin(&name, true).await.unwrap());
    assert!(store.is_admin(alice.id).await.unwrap());
    assert!(store.set_admin(&name, false).await.unwrap());
    assert!(!store.is_admin(alice.id).await.unwrap());
    let ghost = Username::parse("nobody").unwrap();
    assert!(!store.set_admin(&ghost, true).await.unwrap());
}

/// Sessions: a token is good while its session lives; sign-out ends one, a password change
/// all but one, sign-out-everywhere and account deletion all; expired ones do not count.
pub async fn sessions_and_account_deletion(store: Arc<dyn Store>) {
    use scalify_store::EndSessions;
    let alice = user(&*store, "alice").await;
    let bob = user(&*store, "bob").await;
    let now = scalify_core::now_ms();
    let later = now + 3_600_000;
    for s in ["a1", "a2", "a3"] {
        store.create_session(alice.id, s, later).await.unwrap();
    }
    store.create_session(bob.id, "b1", later).await.unwrap();
    store
        .create_session(alice.id, "old", now - 1)
        .await
        .unwrap();
    assert_eq!(store.session_user("a1", now).await.unwrap(), Some(alice.id));
    assert_eq!(store.session_user("b1", now).await.unwrap(), Some(bob.id));
    assert_eq!(
        store.session_user("old", now).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        store.session_user("a1", later).await.unwrap(),
        None,
        "at expiry"
    );
    assert_eq!(store.session_user("nope", now).await.unwrap(), None);

    // Another user's session is not this user's to end.
    let ended = store
        .end_sessions(alice.id, EndSessions::One("b1".into()))
        .await
        .unwrap();
    assert!(ended.is_empty());
    assert_eq!(store.session_user("b1", now).await.unwrap(), Some(bob.id));

    let ended = store
        .end_sessions(alice.id, EndSessions::One("a1".into()))
        .await
        .unwrap();
    assert_eq!(ended, ["a1"]);
    assert_eq!(store.session_user("a1", now).await.unwrap(), None);
    let mut ended = store
        .end_sessions(alice.id, EndSessions::AllBut("a2".into()))
        .await
        .unwrap();
    ended.sort();
    assert!(ended.contains(&"a3".to_owned()), "{ended:?}");
    assert!(!ended.contains(&"a2".to_owned()), "{ended:?}");
    assert_eq!(store.session_user("a2", now).await.unwrap(), Some(alice.id));
    assert_eq!(store.session_user("a3", now).await.unwrap(), None);
    let ended = store
        .end_sessions(alice.id, EndSessions::All)
        .await
        .unwrap();
    assert_eq!(ended, ["a2"]);

    // A password change is seen by the next sign-in.
    assert!(store.set_password(alice.id, "new-hash").await.unwrap());
    let name = Username::parse("alice").unwrap();
    let creds = store.credentials(&name).await.unwrap().expect("alice");
    assert_eq!(creds.password_hash, "new-hash");

    // Deletion: sessions end, sign-in finds nothing, the name stays taken.
    store.create_session(alice.id, "a4", later).await.unwrap();
    let ended = store.delete_user(alice.id).await.unwrap();
    assert_eq!(ended, ["a4"]);
    assert!(store.credentials(&name).await.unwrap().is_none());
    assert!(!store.set_password(alice.id, "again").await.unwrap());
    assert!(matches!(
        store.create_user(&name, "x").await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.session_user("b1", now).await.unwrap(), Some(bob.id));

    // Signing in in a loop keeps at most SESSIONS_PER_USER sessions, the newest.
    for i in 0..(scalify_store::SESSIONS_PER_USER + 5) {
        store
            .create_session(bob.id, &format!("loop{i:04}"), later)
            .await
            .unwrap();
    }
    let all = store.end_sessions(bob.id, EndSessions::All).await.unwrap();
    assert_eq!(all.len(), scalify_store::SESSIONS_PER_USER as usize);
    assert!(all.contains(&format!("loop{:04}", scalify_store::SESSIONS_PER_USER + 4)));
}

/// Owners, removal and blocks: the first claim of a new room's owner wins, a removed member is
/// no longer one, and blocks are one-way.
pub async fn owners_removal_and_blocks(store: Arc<dyn Store>) {
    let alice = user(&*store, "alice").await;
    let bob = user(&*store, "bob").await;
    let room = store
        .create_room(
            &RoomName::parse("owned").unwrap(),
            RoomKind::Private,
            &[alice.id, bob.id],
        )
        .await
        .unwrap();
    assert_eq!(store.room_owner(room.id).await.unwrap(), None);
    assert!(store.claim_owner(room.id, alice.id).await.unwrap());
    assert!(
        !store.claim_owner(room.id, bob.id).await.unwrap(),
        "the first claim wins"
    );
    assert_eq!(store.room_owner(room.id).await.unwrap(), Some(alice.id));

    assert!(store.remove_member(room.id, bob.id).await.unwrap());
    assert!(!store.is_member(room.id, bob.id).await.unwrap());
    assert!(!store.remove_member(room.id, bob.id).await.unwrap());
    assert!(store.is_member(room.id, alice.id).await.unwrap());

    assert!(store.set_block(alice.id, bob.id, true).await.unwrap());
    assert!(
        !store.set_block(alice.id, bob.id, true).await.unwrap(),
        "already"
    );
    assert!(store.has_blocked(alice.id, bob.id).await.unwrap());
    assert!(
        !store.has_blocked(bob.id, alice.id).await.unwrap(),
        "one-way"
    );
    assert_eq!(
        store.blocks(alice.id).await.unwrap(),
        std::slice::from_ref(&bob)
    );
    assert!(store.blocks(bob.id).await.unwrap().is_empty());
    assert!(store.set_block(alice.id, bob.id, false).await.unwrap());
    assert!(!store.has_blocked(alice.id, bob.id).await.unwrap());
    assert!(!store.set_block(alice.id, bob.id, false).await.unwrap());
}

pub async fn membership_and_listing(store: Arc<dyn Store>) {
    let alice = user(&*store, "alice").await;
    let bob = user(&*store, "bob").await;
    let secret = store
        .create_room(
            &RoomName::parse("secret").unwrap(),
            RoomKind::Private,
            &[alice.id],
        )
        .await
        .unwrap();
    store
        .create_room(&RoomName::parse("lobby").unwrap(), RoomKind::Public, &[])
        .await
        .unwrap();
    assert!(store.is_member(secret.id, alice.id).await.unwrap());
    assert!(!store.is_member(secret.id, bob.id).await.unwrap());
    let bobs: Vec<_> = store
        .list_rooms(bob.id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.room.name.to_string())
        .collect();
    assert_eq!(bobs, vec!["lobby"]);
    let names = |us: Vec<User>| {
        us.into_iter()
            .map(|u| u.username.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.members(secret.id, 10).await.unwrap()),
        vec!["alice"]
    );
    assert!(store.add_member(secret.id, bob.id).await.unwrap());
    assert_eq!(
        names(store.members(secret.id, 10).await.unwrap()),
        vec!["alice", "bob"]
    );
    assert_eq!(
        names(store.members(secret.id, 1).await.unwrap()),
        vec!["alice"]
    );
    assert!(!store.add_member(secret.id, bob.id).await.unwrap());
    assert_eq!(store.list_rooms(bob.id).await.unwrap().len(), 2);
    // A DM's listing names its other user, for each of its two members; other rooms name none.
    let dm = store
        .create_room(
            &RoomName::for_dm(alice.id, bob.id),
            RoomKind::Dm,
            &[alice.id, bob.id],
        )
        .await
        .unwrap();
    for (me, other) in [(&alice, &bob), (&bob, &alice)] {
        let listed = store.list_rooms(me.id).await.unwrap();
        for l in &listed {
            let want = (l.room.id == dm.id).then(|| scalify_core::UserRef::from(other.clone()));
            assert_eq!(l.peer, want, "{} in {}'s listing", l.room.name, me.username);
        }
        assert_eq!(listed.len(), 3);
    }
    // Unknown user: not found, and the batch neighbours are unaffected.
    let ghost = scalify_core::Id::new();
    assert!(matches!(
        store.add_member(secret.id, ghost).await,
        Err(StoreError::NotFound)
    ));
}

/// A join racing the owner's creation of a private room of the same name: whichever lands
/// first, the joiner never ends up a member of the private room.
pub async fn ensure_room_adds_members_only_to_a_room_of_its_kind(store: Arc<dyn Store>) {
    let owner = user(&*store, "owner").await;
    let joiner = user(&*store, "joiner").await;
    let name = RoomName::parse("plans").unwrap();
    let private = store
        .create_room(&name, RoomKind::Private, &[owner.id])
        .await
        .unwrap();
    let got = store
        .ensure_room(&name, RoomKind::Public, &[joiner.id])
        .await
        .unwrap();
    assert_eq!(got.id, private.id);
    assert_eq!(got.kind, RoomKind::Private);
    assert!(!store.is_member(private.id, joiner.id).await.unwrap());
    // A room of the asked kind still gets its members.
    let lobby = RoomName::parse("lobby2").unwrap();
    let first = store
        .ensure_room(&lobby, RoomKind::Public, &[owner.id])
        .await
        .unwrap();
    store
        .ensure_room(&lobby, RoomKind::Public, &[joiner.id])
        .await
        .unwrap();
    assert!(store.is_member(first.id, joiner.id).await.unwrap());
}

/// Read markers: they start at the room's last message when a member joins, only move
/// forward, belong to members only, and the unread count covers others' messages after the
/// marker, up to the cap.
pub async fn read_markers_and_unread_counts(store: Arc<dyn Store>) {
    use scalify_store::{ReadMark, ReadState, UNREAD_CAP};
    let alice = user(&*store, "alice").await;
    let bob = user(&*store, "bob").await;
    let carol = user(&*store, "carol").await;
    let room = public_room(&*store, "reading", &alice).await;
    for i in 0..3 {
        store
            .append(msg(&room, &alice, &format!("a{i}"), "before bob"))
            .await
            .unwrap();
    }
    // Bob joins after three messages: they are history to him, not unread.
    assert!(store.add_member(room.id, bob.id).await.unwrap());
    let fresh = |s: Option<(ReadState, u64)>| s.expect("a member has a read state").0;
    assert_eq!(
        fresh(store.read_state(&room, bob.id).await.unwrap()),
        ReadState {
            last_read: 3,
            unread: 0,
            ..Default::default()
        }
    );
    // Alice read nothing: her own messages are not unread to her.
    assert_eq!(
        fresh(store.read_state(&room, alice.id).await.unwrap()),
        ReadState {
            last_read: 0,
            unread: 0,
            ..Default::default()
        }
    );
    for i in 0..4 {
        store
            .append(msg(&room, &alice, &format!("b{i}"), "to bob"))
            .await
            .unwrap();
    }
    store
        .append(msg(&room, &bob, "mine", "bob's own"))
        .await
        .unwrap();
    assert_eq!(
        fresh(store.read_state(&room, bob.id).await.unwrap()),
        ReadState {
            last_read: 3,
            unread: 4,
            ..Default::default()
        }
    );
    let mark = |last_read, moved| Some(ReadMark { last_read, moved });
    assert_eq!(
        store.set_read(room.id, bob.id, 5).await.unwrap(),
        mark(5, true)
    );
    // A lower or equal mark is a no-op that answers the marker.
    assert_eq!(
        store.set_read(room.id, bob.id, 4).await.unwrap(),
        mark(5, false)
    );
    assert_eq!(
        store.set_read(room.id, bob.id, 5).await.unwrap(),
        mark(5, false)
    );
    // The room's last seq comes with the count.
    assert_eq!(store.read_state(&room, bob.id).await.unwrap().unwrap().1, 8);
    assert_eq!(
        fresh(store.read_state(&room, bob.id).await.unwrap()),
        ReadState {
            last_read: 5,
            unread: 2,
            ..Default::default()
        }
    );
    // Not a member: no marker, nothing stored.
    assert_eq!(store.set_read(room.id, carol.id, 5).await.unwrap(), None);
    assert!(store.read_state(&room, carol.id).await.unwrap().is_none());
    // The listing gives each member room its read state; a public room one is not in, none.
    let listed = store.list_rooms(bob.id).await.unwrap();
    let mine = listed.iter().find(|l| l.room.id == room.id).unwrap();
    assert_eq!(
        mine.read,
        Some(ReadState {
            last_read: 5,
            unread: 2,
            ..Default::default()
        })
    );
    let carols = store.list_rooms(carol.id).await.unwrap();
    assert_eq!(
        carols.iter().find(|l| l.room.id == room.id).unwrap().read,
        None
    );
    // Counting stops at the cap, however many follow.
    for i in 0..UNREAD_CAP + 20 {
        store
            .append(msg(&room, &alice, &format!("c{i}"), "flood"))
            .await
            .unwrap();
    }
    assert_eq!(
        fresh(store.read_state(&room, bob.id).await.unwrap()).unread,
        UNREAD_CAP
    );
    let listed = store.list_rooms(bob.id).await.unwrap();
    let mine = listed.iter().find(|l| l.room.id == room.id).unwrap();
    assert_eq!(mine.read.unwrap().unread, UNREAD_CAP);
    // Leaving forgets the marker.
    assert!(store.remove_member(room.id, bob.id).await.unwrap());
    assert!(store.read_state(&room, bob.id).await.unwrap().is_none());
}

/// Mentions are stored with the message and counted after the marker (every unread message
/// of a DM counts); notification levels belong to the membership; receipts list the other
/// members who read something and did not turn receipts off; settings round-trip.
pub async fn mentions_levels_receipts_and_settings(store: Arc<dyn Store>) {
    use scalify_core::{NotifyLevel, Settings, Username};
    use scalify_store::ReadState;
    let alice = user(&*store, "alice").await;
    let bob = user(&*store, "bob").await;
    let carol = user(&*store, "carol").await;
    let room = public_room(&*store, "talk", &alice).await;
    assert!(store.add_member(room.id, bob.id).await.unwrap());
    assert!(store.add_member(room.id, carol.id).await.unwrap());

    let names = [
        Username::parse("bob").unwrap(),
        Username::parse("dave").unwrap(),
        Username::parse("carol").unwrap(),
    ];
    let mut found: Vec<String> = store
        .members_named(room.id, &names)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username.to_string())
        .collect();
    found.sort();
    assert_eq!(found, ["bob", "carol"]);

    let mut to_bob = msg(&room, &alice, "m1", "hi @bob");
    to_bob.mentions = vec![bob.id];
    let stored = store.append(to_bob).await.unwrap().message;
    assert_eq!(stored.mentions, vec![bob.id]);
    let mut everyone = msg(&room, &alice, "m2", "@room lunch");
    everyone.mention_room = true;
    store.append(everyone).await.unwrap();
    store
        .append(msg(&room, &alice, "m3", "plain"))
        .await
        .unwrap();
    let mut own = msg(&room, &bob, "m4", "@room from bob");
    own.mention_room = true;
    store.append(own).await.unwrap();
    // Both the room and Bob by name: one mention of Bob, not two.
    let mut both = msg(&room, &alice, "m5", "@room and @bob");
    both.mention_room = true;
    both.mentions = vec![bob.id];
    let both = store.append(both).await.unwrap().message;
    assert!(both.mention_room);
    assert_eq!(both.mentions, vec![bob.id]);

    // What was stored is what is read back, by history and by sync alike.
    let history = store.history(&room, None, 10).await.unwrap();
    assert_eq!(history[0].mentions, vec![bob.id]);
    assert!(!history[0].mention_room);
    assert!(history[1].mention_room && history[1].mentions.is_empty());
    assert!(!history[2].mention_room && history[2].mentions.is_empty());
    assert_eq!(store.after(&room, 0, 10).await.unwrap(), history);

    let state = |s: Option<(ReadState, u64)>| s.expect("a member").0;
    // Bob: four unread of alice, three mention him (by name, by @room, by both); his own
    // @room is not his mention.
    let bobs = state(store.read_state(&room, bob.id).await.unwrap());
    assert_eq!((bobs.unread, bobs.mentions), (4, 3));
    assert_eq!(bobs.level, NotifyLevel::All);
    // Carol: mentioned by the three @rooms of others.
    let carols = state(store.read_state(&room, carol.id).await.unwrap());
    assert_eq!((carols.unread, carols.mentions), (5, 3));
    let listed = store.list_rooms(carol.id).await.unwrap();
    let listed = listed.iter().find(|l| l.room.id == room.id).unwrap();
    assert_eq!(listed.read, Some(carols));

    // Levels are per member.
    assert!(store
        .set_notify_level(room.id, bob.id, NotifyLevel::Mentions)
        .await
        .unwrap());
    assert_eq!(
        state(store.read_state(&room, bob.id).await.unwrap()).level,
        NotifyLevel::Mentions
    );
    assert_eq!(
        state(store.read_state(&room, carol.id).await.unwrap()).level,
        NotifyLevel::All
    );
    let outsider = user(&*store, "dave").await;
    assert!(!store
        .set_notify_level(room.id, outsider.id, NotifyLevel::None)
        .await
        .unwrap());

    // A DM: every unread message is a mention.
    let dm_name = RoomName::for_dm(alice.id, bob.id);
    let dm = store
        .create_room(&dm_name, RoomKind::Dm, &[alice.id, bob.id])
        .await
        .unwrap();
    store.append(msg(&dm, &alice, "d1", "hey")).await.unwrap();
    store.append(msg(&dm, &alice, "d2", "you?")).await.unwrap();
    let in_dm = state(store.read_state(&dm, bob.id).await.unwrap());
    assert_eq!((in_dm.unread, in_dm.mentions), (2, 2));
    let listed = store.list_rooms(bob.id).await.unwrap();
    assert_eq!(
        listed.iter().find(|l| l.room.id == dm.id).unwrap().read,
        Some(in_dm)
    );

    // Receipts: the others who read something, furthest first; not oneself, not those who
    // read nothing, not those who turned receipts off.
    store.set_read(room.id, bob.id, 2).await.unwrap();
    store.set_read(room.id, carol.id, 4).await.unwrap();
    let seen = |r: Vec<(scalify_core::UserRef, u64)>| -> Vec<(String, u64)> {
        r.into_iter().map(|(u, s)| (u.username, s)).collect()
    };
    assert_eq!(
        seen(store.receipts(room.id, alice.id, 10).await.unwrap()),
        [("carol".to_owned(), 4), ("bob".to_owned(), 2)]
    );
    assert_eq!(
        seen(store.receipts(room.id, alice.id, 1).await.unwrap()),
        [("carol".to_owned(), 4)]
    );
    assert_eq!(
        seen(store.receipts(room.id, carol.id, 10).await.unwrap()),
        [("bob".to_owned(), 2)]
    );

    // Settings: on by default, changed, read back; receipts off leaves the list.
    assert_eq!(store.settings(carol.id).await.unwrap(), Settings::default());
    let off = Settings {
        read_receipts: false,
        previews: false,
    };
    // Each change touches only what it names.
    assert_eq!(
        store
            .update_settings(carol.id, Some(false), None)
            .await
            .unwrap(),
        Some(Settings {
            read_receipts: false,
            previews: true
        })
    );
    assert_eq!(
        store
            .update_settings(carol.id, None, Some(false))
            .await
            .unwrap(),
        Some(off)
    );
    assert_eq!(store.settings(carol.id).await.unwrap(), off);
    assert_eq!(
        seen(store.receipts(room.id, alice.id, 10).await.unwrap()),
        [("bob".to_owned(), 2)]
    );
    assert_eq!(
        store
            .update_settings(scalify_core::Id::new(), Some(true), None)
            .await
            .unwrap(),
        None
    );
}

/// Missed-message notifications: a room with messages not yet looked at is claimed once (a
/// lease), given back when the lease runs out, and moved on only by the holder of its lease;
/// queued notifications are leased, retried and settled; push subscriptions belong to one
/// user, are capped, and go with the account.
pub async fn notifications_claims_outbox_and_push_subscriptions(
    store: Arc<dyn Store>,
    notify: Arc<dyn NotifyStore>,
) {
    let (a, b) = (user(&*store, "ann").await, user(&*store, "bob").await);
    let room = public_room(&*store, "news", &a).await;
    store.add_member(room.id, b.id).await.unwrap();
    // Nothing written: nothing to look at.
    assert!(notify
        .claim_due_rooms(0, 10_000, 10)
        .await
        .unwrap()
        .is_empty());
    for i in 0..2 {
        store
            .append(msg(&room, &a, &format!("c{i}"), "hi"))
            .await
            .unwrap();
    }
    // Not old enough yet for a minute's delay; at once for none.
    assert!(notify
        .claim_due_rooms(60_000, 10_000, 10)
        .await
        .unwrap()
        .is_empty());
    let due = notify.claim_due_rooms(0, 10_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let claim = due[0].clone();
    assert_eq!(
        (claim.room.id, claim.seen, claim.room.last_seq),
        (room.id, 0, 2)
    );
    // Held: no other notifier gets it.
    assert!(notify
        .claim_due_rooms(0, 10_000, 10)
        .await
        .unwrap()
        .is_empty());

    // Recipients: members not muted who have not read that far.
    store
        .set_notify_level(room.id, b.id, scalify_core::NotifyLevel::None)
        .await
        .unwrap();
    let r = notify.recipients(room.id, 2, None, 100).await.unwrap();
    assert_eq!(r.iter().map(|r| r.user.id).collect::<Vec<_>>(), vec![a.id]);
    assert!(r[0].previews);
    store.set_read(room.id, a.id, 2).await.unwrap();
    assert!(notify
        .recipients(room.id, 2, None, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(notify.last_read(room.id, a.id).await.unwrap(), Some(2));
    let outsider = user(&*store, "cat").await;
    assert_eq!(notify.last_read(room.id, outsider.id).await.unwrap(), None);

    // Only the lease holder moves the room on, with what it queued.
    let out = Outgoing {
        id: "n1".into(),
        target: WEBHOOK_TARGET.into(),
        user: b.id,
        room: room.id,
        first_seq: 1,
        body: "{}".into(),
    };
    let mut stale = claim.clone();
    stale.lease -= 1;
    assert!(!notify
        .finish_room(&stale, 2, None, std::slice::from_ref(&out))
        .await
        .unwrap());
    assert!(notify
        .claim_deliveries(10_000, 10)
        .await
        .unwrap()
        .is_empty());
    // Seen up to 1, the rest due at once: claimed again from there.
    assert!(notify
        .finish_room(&claim, 1, Some(0), std::slice::from_ref(&out))
        .await
        .unwrap());
    let again = notify.claim_due_rooms(0, 10_000, 10).await.unwrap();
    assert_eq!(again.iter().map(|d| d.seen).collect::<Vec<_>>(), vec![1]);
    assert!(notify.finish_room(&again[0], 2, None, &[]).await.unwrap());
    assert!(notify
        .claim_due_rooms(0, 10_000, 10)
        .await
        .unwrap()
        .is_empty());
    // A new message marks the room again.
    store.append(msg(&room, &a, "c9", "more")).await.unwrap();
    let third = notify.claim_due_rooms(0, 1, 10).await.unwrap();
    assert_eq!(third.iter().map(|d| d.seen).collect::<Vec<_>>(), vec![2]);
    // Its lease of 1 ms runs out: another notifier takes it.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(
        notify.claim_due_rooms(0, 10_000, 10).await.unwrap().len(),
        1
    );

    // The outbox: leased, retried, settled.
    let taken = notify.claim_deliveries(10_000, 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!((&taken[0].outgoing, taken[0].attempts), (&out, 1));
    assert!(notify
        .claim_deliveries(10_000, 10)
        .await
        .unwrap()
        .is_empty());
    notify
        .retry_delivery("n1", WEBHOOK_TARGET, 1, 0)
        .await
        .unwrap();
    let retried = notify.claim_deliveries(10_000, 10).await.unwrap();
    assert_eq!(
        retried.iter().map(|d| d.attempts).collect::<Vec<_>>(),
        vec![2]
    );
    // A taker whose lease ran out (it took the row at attempt 1) changes nothing.
    notify
        .retry_delivery("n1", WEBHOOK_TARGET, 1, 0)
        .await
        .unwrap();
    notify.delivered("n1", WEBHOOK_TARGET, 1).await.unwrap();
    assert!(notify
        .claim_deliveries(10_000, 10)
        .await
        .unwrap()
        .is_empty());
    notify
        .retry_delivery("n1", WEBHOOK_TARGET, 2, 0)
        .await
        .unwrap();
    assert_eq!(notify.claim_deliveries(10_000, 10).await.unwrap().len(), 1);
    notify.delivered("n1", WEBHOOK_TARGET, 3).await.unwrap();
    notify
        .retry_delivery("n1", WEBHOOK_TARGET, 3, 0)
        .await
        .unwrap();
    assert!(notify
        .claim_deliveries(10_000, 10)
        .await
        .unwrap()
        .is_empty());

    // Recipients page by user id.
    for name in ["dan", "eve"] {
        let u = user(&*store, name).await;
        store.add_member(room.id, u.id).await.unwrap();
    }
    let all: Vec<_> = notify
        .recipients(room.id, 4, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.user.id)
        .collect();
    let first = notify.recipients(room.id, 4, None, 1).await.unwrap();
    let second = notify
        .recipients(room.id, 4, Some(first[0].user.id), 10)
        .await
        .unwrap();
    let paged: Vec<_> = first.iter().chain(&second).map(|r| r.user.id).collect();
    assert!(all.len() >= 2, "{all:?}");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "by user id");
    assert_eq!(paged, all);

    // Push subscriptions.
    let sub = |e: &str| PushSubscription {
        endpoint: format!("https://push.example.com/{e}"),
        p256dh: "key".into(),
        auth: "auth".into(),
    };
    notify.subscribe_push(a.id, &sub("1")).await.unwrap();
    notify.subscribe_push(b.id, &sub("1")).await.unwrap();
    assert!(notify.push_subscriptions(&[a.id]).await.unwrap().is_empty());
    assert_eq!(
        notify.push_subscriptions(&[a.id, b.id]).await.unwrap(),
        vec![(b.id, sub("1"))]
    );
    assert!(!notify
        .unsubscribe_push(Some(a.id), &sub("1").endpoint)
        .await
        .unwrap());
    // Moved to Bob: no longer Ann's to be pushed to.
    let at = |u: scalify_core::Id| {
        let notify = notify.clone();
        async move {
            notify
                .push_subscription(u, &sub("1").endpoint)
                .await
                .unwrap()
        }
    };
    assert_eq!(at(a.id).await, None);
    assert_eq!(at(b.id).await, Some(sub("1")));
    assert!(notify
        .unsubscribe_push(None, &sub("1").endpoint)
        .await
        .unwrap());
    assert_eq!(at(b.id).await, None);
    for i in 0..PUSH_SUBSCRIPTIONS_PER_USER + 2 {
        notify
            .subscribe_push(a.id, &sub(&format!("a{i}")))
            .await
            .unwrap();
    }
    assert_eq!(
        notify.push_subscriptions(&[a.id]).await.unwrap().len(),
        PUSH_SUBSCRIPTIONS_PER_USER as usize
    );
    store.delete_user(a.id).await.unwrap();
    assert!(notify.push_subscriptions(&[a.id]).await.unwrap().is_empty());
}

/// A change of `kind` to `target` by `sender`, as the service builds it.
pub fn change(
    room: &Room,
    sender: &User,
    client_id: &str,
    kind: scalify_core::MessageKind,
    text: &str,
    target: &scalify_core::Message,
) -> NewMessage {
    let mut m = msg(room, sender, client_id, "x");
    m.text = MessageText::from_trusted(text.to_owned());
    m.kind = kind;
    m.relates_to = Some((target.id, target.seq));
    m
}

/// Edits, deletions, reactions and replies are log entries; the store applies each to the
/// message it names as it writes it, by the rules of `scalify_core::Timeline`: history bundles
/// what a replay of the log reaches, a deletion erases the text of the message and of its
/// edits, a change is idempotent like a send, and changes are not counted as unread.
pub async fn changes_are_log_entries_applied_to_their_message(store: Arc<dyn Store>) {
    use scalify_core::{MessageKind as K, ReplyPreview, Timeline};
    let ann = user(&*store, "ann").await;
    let bob = user(&*store, "bob").await;
    let room = public_room(&*store, "changes", &ann).await;
    store.add_member(room.id, bob.id).await.unwrap();
    let first = store
        .append(msg(&room, &ann, "m1", "first draft\nsecond line"))
        .await
        .unwrap()
        .message;
    let mut reply = msg(&room, &bob, "m2", "answer");
    reply.reply_to = Some(Box::new(ReplyPreview::of(
        first.id,
        first.seq,
        UserRef {
            id: ann.id,
            username: "ann".into(),
        },
        first.text.as_str(),
        false,
    )));
    let reply = store.append(reply).await.unwrap().message;
    assert_eq!(reply.kind, K::Message);
    let entries = [
        change(&room, &ann, "e1", K::Edit, "final text", &first),
        change(&room, &bob, "e2", K::Edit, "bob may not", &first),
        change(&room, &bob, "r1", K::Reaction, "👍", &first),
        change(&room, &ann, "r2", K::Reaction, "👍", &first),
        change(&room, &ann, "r3", K::Reaction, "🎉", &first),
        change(&room, &bob, "r4", K::Reaction, "👍", &reply),
        change(&room, &ann, "u1", K::Unreaction, "🎉", &first),
    ];
    for e in entries {
        let stored = store.append(e).await.unwrap();
        assert!(!stored.duplicate);
        assert!(stored.message.relates_to.is_some());
    }
    // A retry of a change is a duplicate, like a send's.
    let again = store
        .append(change(&room, &ann, "e1", K::Edit, "final text", &first))
        .await
        .unwrap();
    assert!(again.duplicate);

    let page = store.history(&room, None, 50).await.unwrap();
    assert_eq!(page.len(), 9, "every change is an entry of the log");
    let mut replay = Timeline::default();
    for m in store.after(&room, 0, 50).await.unwrap() {
        replay.apply(&m);
    }
    let mut bundled = page.clone();
    let rows = store
        .reactions(room.id, 1..=page.last().unwrap().seq, bob.id)
        .await
        .unwrap();
    scalify_store::bundle_reactions(&mut bundled, rows);
    let now = &bundled[0];
    assert_eq!(now.text.as_str(), "final text");
    assert!(now.edited_at.is_some());
    let by_replay = replay.get(first.seq, bob.id).unwrap();
    assert_eq!(now.text, by_replay.text);
    assert_eq!(now.reactions, by_replay.reactions);
    assert_eq!(now.reactions.len(), 1, "🎉 was taken back");
    assert_eq!(now.reactions["👍"].count, 2);
    assert!(now.reactions["👍"].me);
    let answered = bundled[1].reply_to.as_ref().unwrap();
    assert_eq!(
        (answered.id, answered.text.as_str(), answered.sender.id),
        (first.id, "final text", ann.id),
        "a reply's preview follows the edit"
    );
    assert_eq!(bundled[1].reactions["👍"].count, 1);
    let looked_up = store.message(&room, first.id).await.unwrap().unwrap();
    assert_eq!(looked_up.text.as_str(), "final text");
    assert!(store
        .message(&room, scalify_core::Id::new())
        .await
        .unwrap()
        .is_none());

    // Changes are not unread messages: bob read up to his reply, and after it come only
    // changes and one of ann's messages.
    store.set_read(room.id, bob.id, reply.seq).await.unwrap();
    store.append(msg(&room, &ann, "m3", "news")).await.unwrap();
    let (state, _) = store
        .read_state(&store.room(&room.name).await.unwrap().unwrap(), bob.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.unread, 1);

    // A deletion erases the text of the message and of its edits, and its reactions.
    store
        .append(change(&room, &ann, "d1", K::Delete, "", &first))
        .await
        .unwrap();
    let late_edit = store
        .append(change(
            &room,
            &ann,
            "e3",
            K::Edit,
            "after the deletion",
            &first,
        ))
        .await
        .unwrap()
        .message;
    let all = store.after(&room, 0, 50).await.unwrap();
    let gone = &all[0];
    assert!(gone.deleted);
    assert_eq!(gone.text.as_str(), "");
    for m in &all {
        let related = m.relates_seq == Some(first.seq) && m.kind == K::Edit;
        if related {
            assert_eq!(m.text.as_str(), "", "edit {} keeps no text", m.seq);
        }
        for secret in ["first draft", "final text", "after the deletion"] {
            assert!(
                !m.text.as_str().contains(secret),
                "{secret} is still in seq {}",
                m.seq
            );
        }
    }
    assert!(all.iter().any(|m| m.id == late_edit.id));
    let preview = all[1].reply_to.as_ref().unwrap();
    assert!(preview.deleted && preview.text.is_empty());
    let rows = store
        .reactions(room.id, first.seq..=first.seq, bob.id)
        .await
        .unwrap();
    assert!(rows.is_empty(), "a deleted message has no reactions");
}

/// A file for [`attachments_stay_until_their_message_is_deleted`].
pub fn attachment(name: &str) -> Box<scalify_core::Attachment> {
    Box::new(scalify_core::Attachment {
        id: scalify_core::Id::new(),
        name: scalify_core::FileName::parse(name).unwrap(),
        size: 1234,
        content_type: "image/png".into(),
        width: Some(640),
        height: Some(480),
    })
}

/// A message may carry a file, with or without a caption; every read returns it, an edit
/// keeps it, a deletion erases it with the text.
pub async fn attachments_stay_until_their_message_is_deleted(store: Arc<dyn Store>) {
    use scalify_core::MessageKind as K;
    let ann = user(&*store, "ann").await;
    let room = public_room(&*store, "files", &ann).await;
    let mut bare = msg(&room, &ann, "f1", "x");
    bare.text = MessageText::from_trusted(String::new());
    bare.attachment = Some(attachment("cat.png"));
    let bare = store.append(bare).await.unwrap().message;
    let mut captioned = msg(&room, &ann, "f2", "the report");
    captioned.attachment = Some(attachment("report.pdf"));
    let captioned = store.append(captioned).await.unwrap().message;
    // A retry returns the stored message, file and all.
    let mut again = msg(&room, &ann, "f1", "x");
    again.text = MessageText::from_trusted(String::new());
    again.attachment = Some(attachment("other.png"));
    let again = store.append(again).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message.attachment, bare.attachment);

    let read = store.after(&room, 0, 10).await.unwrap();
    assert_eq!(read[0].attachment, bare.attachment);
    assert_eq!(read[0].text.as_str(), "");
    assert_eq!(read[1].attachment, captioned.attachment);
    assert_eq!(store.history(&room, None, 10).await.unwrap(), read);
    assert_eq!(
        store
            .message(&room, bare.id)
            .await
            .unwrap()
            .unwrap()
            .attachment,
        bare.attachment
    );

    store
        .append(change(&room, &ann, "e1", K::Edit, "a cat", &bare))
        .await
        .unwrap();
    store
        .append(change(&room, &ann, "d1", K::Delete, "", &captioned))
        .await
        .unwrap();
    let read = store.after(&room, 0, 10).await.unwrap();
    assert_eq!(read[0].text.as_str(), "a cat");
    assert_eq!(
        read[0].attachment, bare.attachment,
        "an edit keeps the file"
    );
    assert!(read[1].deleted);
    assert_eq!(read[1].attachment, None, "a deletion erases the file");
}

/// Full-text search: over the rooms the searcher is a member of only, newest first, paged,
/// in the query language of `scalify_core::SearchQuery`, and in step with the log: an edit is
/// found by its new words only, a deleted message not at all, a change never.
pub async fn search_finds_current_text_in_readable_rooms(store: Arc<dyn Store>) {
    use scalify_core::{MessageKind as K, SearchPage, SearchQuery};
    let ann = user(&*store, "ann").await;
    let bob = user(&*store, "bob").await;
    let open = public_room(&*store, "open", &ann).await;
    store.add_member(open.id, bob.id).await.unwrap();
    let closed = store
        .create_room(
            &RoomName::parse("closed").unwrap(),
            RoomKind::Private,
            &[ann.id],
        )
        .await
        .unwrap();
    let mut sent = Vec::new();
    for (room, text) in [
        (&open, "Deploy the rocket on Friday"),
        (&open, "friday lunch plans"),
        (&open, "Rocket science is HARD"),
        (&closed, "secret rocket plans"),
    ] {
        let n = sent.len();
        let m = store
            .append(msg(room, &ann, &format!("s{n}"), text))
            .await
            .unwrap();
        sent.push(m.message);
    }
    let (deploy, lunch, science, secret) = (&sent[0], &sent[1], &sent[2], &sent[3]);
    let page = |limit| SearchPage {
        before: None,
        limit,
    };
    // A hit as the assertions compare it: its room and current text.
    fn seen(m: &scalify_core::Message) -> (String, String) {
        (m.room.to_string(), m.text.as_str().to_owned())
    }
    let find = |who: &User, q: &str, room: Option<&Room>, page: SearchPage| {
        let (store, who, q, room) = (store.clone(), who.id, q.to_owned(), room.map(|r| r.id));
        async move {
            let found = store
                .search(who, &SearchQuery::parse(&q).unwrap(), room, page)
                .await
                .unwrap();
            found.iter().map(seen).collect::<Vec<_>>()
        }
    };
    let texts = |ms: &[&scalify_core::Message]| ms.iter().map(|m| seen(m)).collect::<Vec<_>>();
    assert_eq!(
        find(&ann, "ROCKET", None, page(10)).await,
        texts(&[secret, science, deploy]),
        "newest first, case-folded, across the searcher's rooms"
    );
    assert_eq!(
        find(&bob, "rocket", None, page(10)).await,
        texts(&[science, deploy]),
        "never a room the searcher is not in"
    );
    assert_eq!(
        find(&ann, "rocket", Some(&open), page(10)).await,
        texts(&[science, deploy])
    );
    assert_eq!(find(&bob, "rocket", Some(&closed), page(10)).await, vec![]);
    assert_eq!(
        find(&ann, "rocket friday", None, page(10)).await,
        texts(&[deploy])
    );
    assert_eq!(
        find(&ann, "science or lunch", None, page(10)).await,
        texts(&[science, lunch])
    );
    assert_eq!(
        find(&ann, "\"rocket science\"", None, page(10)).await,
        texts(&[science])
    );
    assert_eq!(
        find(&ann, "\"science rocket\"", None, page(10)).await,
        vec![]
    );
    assert_eq!(
        find(&ann, "rocket -friday -\"science is\"", None, page(10)).await,
        texts(&[secret])
    );
    assert_eq!(
        find(&ann, "rock", None, page(10)).await,
        vec![],
        "whole words"
    );

    // Pages: older than the last hit of the page before.
    assert_eq!(
        find(&ann, "rocket", None, page(2)).await,
        texts(&[secret, science])
    );
    let next = SearchPage {
        before: Some(science.id),
        limit: 2,
    };
    assert_eq!(find(&ann, "rocket", None, next).await, texts(&[deploy]));
    assert_eq!(
        find(&ann, "rocket", Some(&open), next).await,
        texts(&[deploy])
    );
    // A page below a message that does not exist is empty.
    let unknown = SearchPage {
        before: Some(scalify_core::Id::new()),
        limit: 5,
    };
    assert_eq!(find(&ann, "rocket", None, unknown).await, vec![]);
    assert_eq!(find(&ann, "rocket", Some(&open), unknown).await, vec![]);
    let first = SearchPage {
        before: None,
        limit: 1,
    };
    assert_eq!(
        find(&ann, "rocket", Some(&open), first).await,
        texts(&[science])
    );

    // An edit replaces the words; its own entry is not a hit.
    store
        .append(change(
            &open,
            &ann,
            "e1",
            K::Edit,
            "launch postponed",
            deploy,
        ))
        .await
        .unwrap();
    assert_eq!(
        find(&ann, "rocket", None, page(10)).await,
        texts(&[secret, science])
    );
    let edited = find(&ann, "postponed", None, page(10)).await;
    assert_eq!(edited, vec![("open".into(), "launch postponed".into())]);
    // A deletion removes the message from search.
    store
        .append(change(&open, &ann, "d1", K::Delete, "", science))
        .await
        .unwrap();
    assert_eq!(find(&ann, "science", None, page(10)).await, vec![]);
    assert_eq!(find(&bob, "rocket", None, page(10)).await, vec![]);
    // Reactions are no text to find.
    store
        .append(change(&open, &bob, "r1", K::Reaction, "👍", lunch))
        .await
        .unwrap();
    assert_eq!(find(&bob, "lunch", None, page(10)).await, texts(&[lunch]));
    // A member who leaves finds nothing more of the room.
    store.remove_member(open.id, bob.id).await.unwrap();
    assert_eq!(find(&bob, "lunch", None, page(10)).await, vec![]);
}

/// Paging through every hit: each matching message comes exactly once, none is lost between
/// pages, and pages run newest first — over all rooms and in one room, while messages that do
/// not match lie between the hits.
pub async fn search_pages_give_every_hit_once(store: Arc<dyn Store>) {
    use scalify_core::{SearchPage, SearchQuery};
    let ann = user(&*store, "ann").await;
    let rooms = [
        public_room(&*store, "one", &ann).await,
        public_room(&*store, "two", &ann).await,
    ];
    let mut hits = Vec::new();
    for i in 0..40 {
        let room = &rooms[i % 2];
        let text = if i % 3 == 0 { "noise" } else { "needle here" };
        let m = store
            .append(msg(room, &ann, &format!("p{i}"), text))
            .await
            .unwrap()
            .message;
        if text != "noise" {
            hits.push(m);
        }
    }
    let query = SearchQuery::parse("needle").unwrap();
    for room in [None, Some(&rooms[0])] {
        let mut seen: Vec<scalify_core::Message> = Vec::new();
        loop {
            let page = SearchPage {
                before: seen.last().map(|m| m.id),
                limit: 7,
            };
            let got = store
                .search(ann.id, &query, room.map(|r| r.id), page)
                .await
                .unwrap();
            let last = got.len() < 7;
            seen.extend(got);
            if last {
                break;
            }
        }
        let mut want: Vec<_> = hits
            .iter()
            .filter(|m| room.is_none_or(|r| m.room == r.name))
            .map(|m| m.id)
            .collect();
        let mut got: Vec<_> = seen.iter().map(|m| m.id).collect();
        assert_eq!(got.len(), want.len(), "every hit once ({room:?})");
        got.sort();
        want.sort();
        assert_eq!(got, want, "the hits, none lost, none twice");
        assert!(seen.windows(2).all(|w| w[0].ts >= w[1].ts), "newest first");
        if room.is_some() {
            assert!(seen.windows(2).all(|w| w[0].seq > w[1].seq), "in seq order");
        }
    }
}
