//! One suite of store-level tests, run against SQLite and PostgreSQL alike (SPEC §15): each
//! `conformance!` case becomes `case::sqlite` and `case::postgres`. What either database must
//! do the same: answer the seqs it stored, roll a failed batch back and refuse what was queued
//! behind it, read records through the log's tail and settle them at load, page rollouts and
//! logs, keep operators and sessions. PostgreSQL's fencing has cases of its own at the end.

use chrono::{Duration, Utc};
use engine::host::HostRecord;
use engine::rollout::Rollout;
use shared::api::LogEvent;
use shared::log::{LogEntry, LogKind, StoredPayload, WaveApproved};
use shared::{Channel, Closure, Hostname, RolloutId};

use super::auth::{self, Role};
use super::store::{self, Batch, LogRow, QuarantineChange, QuarantineRow, RecordRow, log_after};
use super::testing::TestDb;
use super::writer::{WriteError, Writer};
use super::{Store, on_pool};
use super::{chain, retention};

/// A database of the test's own, its pool, and a writer that may write (on PostgreSQL: the
/// leader row is at the writer's epoch).
struct Fixture {
    db: TestDb,
    store: Store,
    writer: Writer,
}

const EPOCH: i64 = 1;

impl Fixture {
    async fn new(db: TestDb) -> Fixture {
        let store = super::open(&db.target()).await.unwrap();
        on_pool!(&store, pool => {
            if store.dialect() == super::Dialect::Postgres {
                sqlx::query("UPDATE leader SET epoch = $1").bind(EPOCH).execute(pool).await.unwrap();
            }
        });
        let writer = Writer::open(&db.target(), super::BUSY_TIMEOUT, EPOCH).await.unwrap();
        Fixture { db, store, writer }
    }

    /// The store as a restarted process sees it.
    async fn reopen(&self) -> Store {
        super::open(&self.db.target()).await.unwrap()
    }
}

macro_rules! conformance {
    ($($(#[$doc:meta])* async fn $name:ident($f:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                $(#[$doc])*
                async fn case($f: Fixture) $body

                #[tokio::test]
                async fn sqlite() {
                    case(Fixture::new(TestDb::sqlite()).await).await
                }

                #[tokio::test]
                async fn postgres() {
                    case(Fixture::new(TestDb::postgres().await).await).await
                }
            }
        )*
    };
}

fn entry(i: usize) -> LogEntry {
    LogEntry::WaveApproved(WaveApproved { wave: i as u32 })
}

fn row(i: usize) -> LogRow {
    let entry = entry(i);
    LogRow {
        ts: Utc::now(),
        kind: entry.kind(),
        rollout_id: None,
        host: None,
        channel: None,
        payload: store::payload(&entry.payload()),
        record_state: None,
    }
}

fn id(s: &str) -> RolloutId {
    RolloutId::parse(s).unwrap()
}

fn host(s: &str) -> Hostname {
    Hostname::parse(s).unwrap()
}

fn closure() -> Closure {
    Closure::parse("/nix/store/00000000000000000000000000000000-x").unwrap()
}

fn rollout(rollout_id: &str, opened_seq: u64) -> Rollout {
    let channel = Channel::parse(rollout_id.split('@').next().unwrap()).unwrap();
    Rollout::open(id(rollout_id), channel, opened_seq, Utc::now())
}

fn record(rollout_id: &str, hostname: &str) -> HostRecord {
    let id = id(rollout_id);
    let channel = Channel::parse(rollout_id.split('@').next().unwrap()).unwrap();
    HostRecord::pending(id, host(hostname), channel, closure(), Utc::now())
}

async fn execute(store: &Store, sql: &str) {
    on_pool!(store, pool => { sqlx::query(sql).execute(pool).await.unwrap(); });
}

/// A log row that carries `record` whole, as a host event's row does.
fn carrying(record: &HostRecord) -> LogRow {
    let entry = entry(0);
    LogRow {
        ts: Utc::now(),
        kind: entry.kind(),
        rollout_id: Some(record.rollout_id.clone()),
        host: Some(record.hostname.clone()),
        channel: None,
        payload: store::payload(&StoredPayload::<HostRecord, Rollout> {
            entry: &entry,
            record: Some(record),
            rollout: None,
        }),
        record_state: Some(record.state),
    }
}

/// The row of the `LogSealed` entry that records `seal`.
fn sealed(seal: shared::log::LogSealed) -> LogRow {
    let entry = LogEntry::LogSealed(seal);
    LogRow { kind: entry.kind(), payload: store::payload(&entry.payload()), ..row(0) }
}

conformance! {
    async fn a_batch_answers_the_seqs_its_rows_were_stored_under(f) {
        let first = f.writer.commit(Batch { log: (0..3).map(row).collect(), ..Default::default() }).await.unwrap();
        let second = f.writer.commit(Batch { log: (3..600).map(row).collect(), ..Default::default() }).await.unwrap();
        let answered: Vec<LogEvent> = first.into_iter().chain(second).collect();
        assert_eq!(answered.len(), 600);
        let key = |e: &LogEvent| (e.seq, e.payload.get().to_owned());
        let stored: Vec<_> = log_after(&f.store, 0, 10_000).await.unwrap().iter().map(key).collect();
        assert!(answered.iter().map(key).eq(stored), "the answered seqs differ from the stored ones");
        let seqs: Vec<i64> = answered.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=600).collect::<Vec<_>>(), "seqs start at 1 and have no gap");
        for (i, event) in answered.iter().enumerate() {
            assert_eq!(event.entry().unwrap(), entry(i), "row {i} came back under seq {}", event.seq);
        }
        assert_eq!(store::last_seq(&f.store).await.unwrap(), 600);
    }

    /// Every appended entry chains to the one before it, across batches; a changed or
    /// removed entry is named; a log from before the chain is hashed once by the backfill.
    async fn the_log_is_hash_chained_and_a_changed_or_missing_entry_is_named(f) {
        f.writer.commit(Batch { log: (0..3).map(row).collect(), ..Default::default() }).await.unwrap();
        f.writer.commit(Batch { log: (3..40).map(row).collect(), ..Default::default() }).await.unwrap();
        let verified = chain::verify(&f.store, None).await.unwrap();
        assert_eq!((verified.entries, verified.range), (40, Some((1, 40))));
        let exec = |sql: &'static str| execute(&f.store, sql);
        let broken = |result: Result<chain::Verified, chain::VerifyError>| match result {
            Err(chain::VerifyError::Broken(b)) => b,
            other => panic!("not broken: {other:?}"),
        };

        // Rows from before the chain (no hash) are hashed in order, to the same chain.
        exec("UPDATE event_log SET hash = NULL WHERE seq > 10").await;
        assert_eq!(broken(chain::verify(&f.store, None).await), engine::chain::Break::Unhashed { seq: 11 });
        assert_eq!(chain::backfill(&f.store).await.unwrap(), 30);
        assert_eq!(chain::verify(&f.store, None).await.unwrap(), verified);
        assert_eq!(chain::backfill(&f.store).await.unwrap(), 0, "nothing left to hash");

        // One byte of one payload.
        exec("UPDATE event_log SET payload = replace(payload, '\"wave\":17', '\"wave\":18') WHERE seq = 18").await;
        assert_eq!(broken(chain::verify(&f.store, None).await), engine::chain::Break::Changed { seq: 18 });
        exec("UPDATE event_log SET payload = replace(payload, '\"wave\":18', '\"wave\":17') WHERE seq = 18").await;
        assert_eq!(chain::verify(&f.store, None).await.unwrap(), verified);
        // A row deleted.
        exec("DELETE FROM event_log WHERE seq = 25").await;
        assert_eq!(broken(chain::verify(&f.store, None).await), engine::chain::Break::Missing { seq: 25 });
    }

    /// Retention (SPEC §16): entries older than the retention, before every open rollout's
    /// first entry and at or before the newest checkpoint are sealed into a segment and
    /// deleted; archive and database verify as one chain, the database alone from the seal's
    /// head; a changed or a missing segment is named.
    async fn old_entries_are_sealed_into_the_archive_and_verify_as_one_chain(f) {
        let old = Utc::now() - Duration::days(400);
        // Entries 20–25 are rollout stable@a's.
        let of_a = |i: usize| (19..25).contains(&i).then(|| id("stable@a"));
        let aged = |i: usize| LogRow { ts: old + Duration::seconds(i as i64), rollout_id: of_a(i), ..row(i) };
        let through = |log: Vec<LogRow>| Batch { log, records_through: true, ..Default::default() };
        f.writer.commit(through((0..30).map(aged).collect())).await.unwrap();
        f.writer.commit(through((30..40).map(row).collect())).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let retention = retention::Retention {
            log: Duration::days(365),
            observations: Duration::days(365),
            dir: dir.path().join("archive"),
            every: std::time::Duration::from_secs(1),
        };
        let due = || async { retention::bounds(&f.store, &retention, Utc::now()).await.map(|b| b.seal(true)) };
        assert_eq!(due().await.unwrap(), None, "nothing is sealed before a checkpoint");
        crate::db::checkpoint::take(&f.store, Utc::now()).await.unwrap();
        assert_eq!(due().await.unwrap(), Some((1, 30)), "the old entries");
        // An open rollout's log is kept whole; once it ended, it may go.
        let mut open = rollout("stable@a", 1);
        f.writer.commit(Batch { rollouts: vec![open.clone()], ..Default::default() }).await.unwrap();
        assert_eq!(due().await.unwrap(), Some((1, 19)));
        open.state = shared::state::RolloutState::Completed;
        f.writer.commit(Batch { rollouts: vec![open], ..Default::default() }).await.unwrap();
        assert_eq!(due().await.unwrap(), Some((1, 30)));

        let seal = retention::write_segment(&f.store, &retention.dir, 1, 30).await.unwrap();
        assert_eq!((seal.from, seal.up_to, seal.entries, seal.file.as_str()), (1, 30, 30, "log-1-30.jsonl.zst"));
        f.writer.commit(Batch { log: vec![sealed(seal)], ..Default::default() }).await.unwrap();
        assert_eq!(retention::purge(&f.store, 30).await.unwrap(), 30);
        assert_eq!(retention::first_kept(&f.store).await.unwrap(), 31);
        assert_eq!(retention::log_begins(&f.store).await.unwrap(), 31);
        assert_eq!(retention::sealed_before(&f.store, 5).await.unwrap(), Some(31));
        assert_eq!(retention::sealed_before(&f.store, 31).await.unwrap(), None);

        let live = chain::verify(&f.store, None).await.unwrap();
        assert_eq!((live.entries, live.range, live.sealed_through), (11, Some((31, 41)), 30));
        let whole = chain::verify(&f.store, Some(&retention.dir)).await.unwrap();
        assert_eq!((whole.entries, whole.range, whole.segments, whole.head), (41, Some((1, 41)), 1, live.head));

        // A second seal chains on from the first one's head (entry 30 is gone).
        let later = Utc::now() + Duration::days(400);
        let bounds = retention::bounds(&f.store, &retention, later).await.unwrap();
        assert_eq!(bounds.seal(true), Some((31, 40)), "through the checkpoint");
        let seal = retention::write_segment(&f.store, &retention.dir, 31, 40).await.unwrap();
        f.writer.commit(Batch { log: vec![sealed(seal)], ..Default::default() }).await.unwrap();
        assert_eq!(retention::purge(&f.store, 40).await.unwrap(), 10);
        let whole = chain::verify(&f.store, Some(&retention.dir)).await.unwrap();
        assert_eq!((whole.entries, whole.range, whole.segments), (42, Some((1, 42)), 2));
        assert_eq!(chain::verify(&f.store, None).await.unwrap().range, Some((41, 42)));

        // One byte of a sealed entry.
        let first = retention.dir.join("log-1-30.jsonl.zst");
        let original = std::fs::read(&first).unwrap();
        let text = String::from_utf8(zstd::decode_all(original.as_slice()).unwrap()).unwrap();
        let changed = text.replacen("\"wave\":5}", "\"wave\":6}", 1);
        assert_ne!(changed, text);
        std::fs::write(&first, zstd::encode_all(changed.as_bytes(), 3).unwrap()).unwrap();
        match chain::verify(&f.store, Some(&retention.dir)).await {
            Err(chain::VerifyError::Broken(b)) => assert_eq!(b, engine::chain::Break::Changed { seq: 6 }),
            other => panic!("not broken: {other:?}"),
        }
        // A segment missing.
        std::fs::remove_file(&first).unwrap();
        match chain::verify(&f.store, Some(&retention.dir)).await {
            Err(chain::VerifyError::Broken(b)) => assert_eq!(b, engine::chain::Break::Missing { seq: 1 }),
            other => panic!("not broken: {other:?}"),
        }
    }

    /// Once every entry of an ended rollout was sealed, it is due for a tally (an open one
    /// and one not sealed whole are not); once its tally is stored, summaries and its page
    /// read the tally, and its records are deleted (the other rollouts' stay); records left
    /// by an interrupted delete are found.
    async fn ended_rollouts_sealed_whole_have_their_records_tallied(f) {
        use shared::state::{HostState, RolloutState};
        let mut ended = rollout("stable@1", 1);
        ended.state = RolloutState::Completed;
        let open = rollout("stable@2", 11);
        let mut records = Vec::new();
        for (name, state) in [("a", HostState::Converged), ("b", HostState::Converged), ("c", HostState::Failed)] {
            let mut r = record("stable@1", name);
            (r.state, r.stuck) = (state, name == "c");
            records.push(r);
        }
        records.push(record("stable@2", "a"));
        let of = |rollout: &str, i: usize| LogRow { rollout_id: Some(id(rollout)), ..row(i) };
        f.writer
            .commit(Batch {
                rollouts: vec![ended.clone(), open],
                records: records.iter().map(RecordRow::new).collect(),
                log: (0..10).map(|i| of("stable@1", i)).chain((10..15).map(|i| of("stable@2", i))).collect(),
                records_through: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(retention::tally_due(&f.store).await.unwrap().is_empty(), "nothing is sealed yet");
        let dir = tempfile::tempdir().unwrap();
        let seal = retention::write_segment(&f.store, dir.path(), 1, 9).await.unwrap();
        f.writer.commit(Batch { log: vec![sealed(seal)], ..Default::default() }).await.unwrap();
        retention::purge(&f.store, 9).await.unwrap();
        assert!(retention::tally_due(&f.store).await.unwrap().is_empty(), "its last entry is still here");
        let seal = retention::write_segment(&f.store, dir.path(), 10, 10).await.unwrap();
        f.writer.commit(Batch { log: vec![sealed(seal)], ..Default::default() }).await.unwrap();
        retention::purge(&f.store, 10).await.unwrap();
        assert_eq!(retention::tally_due(&f.store).await.unwrap(), vec![(id("stable@1"), ended.channel.clone())]);

        let tally = store::Tally {
            waves: vec![shared::api::WaveCounts {
                index: Some(0),
                counts: [(HostState::Converged, 2), (HostState::Failed, 1)].into(),
            }],
            stuck: vec![host("c")],
        };
        retention::write_tally(&f.store, &id("stable@1"), &tally).await.unwrap();
        assert!(retention::tally_due(&f.store).await.unwrap().is_empty(), "tallied once");
        // Read through the tally while the records are still there, and once they are gone.
        for purged in [false, true] {
            if purged {
                assert_eq!(retention::purge_records(&f.store, "stable@1").await.unwrap(), 3);
            }
            let (tallies, states) =
                store::rollout_hosts(&f.store, &[id("stable@1"), id("stable@2")]).await.unwrap();
            assert_eq!(tallies.into_iter().collect::<Vec<_>>(), vec![("stable@1".to_owned(), tally.clone())]);
            assert_eq!(states.iter().map(|s| s.rollout_id.as_str()).collect::<Vec<_>>(), ["stable@2"]);
            let rows = store::rollout_detail::<HostRecord>(&f.store, &id("stable@1")).await.unwrap().unwrap();
            assert_eq!((&rows.rollout, rows.records, rows.tally), (&ended, vec![], Some(tally.clone())));
        }
        let store = &f.store;
        let in_table = |rollout: &'static str| async move {
            let n: i64 = on_pool!(store, pool => {
                sqlx::query_scalar("SELECT COUNT(*) FROM host_records WHERE rollout_id = $1")
                    .bind(rollout)
                    .fetch_one(pool)
                    .await
                    .unwrap()
            });
            n
        };
        assert_eq!((in_table("stable@1").await, in_table("stable@2").await), (0, 1));
        assert!(store::records_of_host(&f.store, &host("c")).await.unwrap().is_empty());
        assert!(retention::tallied_with_records(&f.store).await.unwrap().is_empty());

        // Records left behind by an interrupted delete are found.
        f.writer.commit(Batch { records: vec![RecordRow::new(&records[0])], ..Default::default() }).await.unwrap();
        assert_eq!(retention::tallied_with_records(&f.store).await.unwrap(), ["stable@1"]);
        assert_eq!(retention::purge_records(&f.store, "stable@1").await.unwrap(), 1);
    }

    /// Observations (repeated probe results, presence changes) past their retention leave
    /// the database for an observations segment; the database alone verifies across their
    /// gaps (and counts them), with the archive every entry is checked; a later seal across
    /// the gaps chains on; a changed observation or a row deleted in a compacted range is
    /// caught.
    async fn observations_are_compacted_and_the_chain_verifies_across_their_gaps(f) {
        let old = Utc::now() - Duration::days(10);
        let observation = |i: usize| match i {
            0 | 4..=6 => Some((LogKind::HostOnline, r#"{"bootedClosure":null}"#.to_owned())),
            9 | 10 => Some((LogKind::HostEvent, format!(r#"{{"repeated":true,"n":{i}}}"#))),
            _ => None,
        };
        let aged = |i: usize| {
            let base = LogRow { ts: old + Duration::seconds(i as i64), ..row(i) };
            match observation(i) {
                Some((kind, payload)) => LogRow {
                    kind,
                    payload: serde_json::value::RawValue::from_string(payload).unwrap(),
                    ..base
                },
                None => base,
            }
        };
        f.writer
            .commit(Batch { log: (0..40).map(aged).collect(), records_through: true, ..Default::default() })
            .await
            .unwrap();
        crate::db::checkpoint::take(&f.store, Utc::now()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let retention = retention::Retention {
            log: Duration::days(365),
            observations: Duration::days(7),
            dir: archive.clone(),
            every: std::time::Duration::from_secs(1),
        };
        let bounds = retention::bounds(&f.store, &retention, Utc::now()).await.unwrap();
        assert_eq!((bounds.compact(true), bounds.seal(true)), (Some((1, 39)), None));
        let compacted = retention::write_observations(&f.store, &archive, 1, 39).await.unwrap();
        assert_eq!((compacted.entries, compacted.file.as_deref()), (6, Some("observations-1-39.jsonl.zst")));
        let logged = |entry: LogEntry| LogRow { kind: entry.kind(), payload: store::payload(&entry.payload()), ..row(0) };
        f.writer.commit(Batch { log: vec![logged(LogEntry::LogCompacted(compacted))], ..Default::default() }).await.unwrap();
        assert_eq!(retention::purge_observations(&f.store, &archive, "observations-1-39.jsonl.zst").await.unwrap(), 6);
        // Compaction leaves gaps, not a later beginning: nothing is "sealed before" a seq.
        assert_eq!(retention::sealed_before(&f.store, 1).await.unwrap(), None);
        let seqs: Vec<i64> = log_after(&f.store, 0, 100).await.unwrap().iter().map(|e| e.seq).collect();
        assert!(!seqs.contains(&1) && !seqs.contains(&11) && seqs.contains(&8) && seqs.len() == 35, "{seqs:?}");

        // The database alone: three gaps, each entry after one taken on its hash.
        let live = chain::verify(&f.store, None).await.unwrap();
        assert_eq!((live.entries, live.anchored, live.range), (32, 3, Some((2, 41))));
        // With the archive: every entry checked.
        let whole = chain::verify(&f.store, Some(&archive)).await.unwrap();
        assert_eq!((whole.entries, whole.anchored, whole.range, whole.head), (41, 0, Some((1, 41)), live.head));

        // A row gone inside the compacted range (moved out of the log's seqs, to be put back):
        // the database alone counts it missing, the archive names it.
        execute(&f.store, "UPDATE event_log SET seq = -30 WHERE seq = 30").await;
        match chain::verify(&f.store, None).await {
            Err(chain::VerifyError::Compacted(why)) => assert!(why.contains("1 missing"), "{why}"),
            other => panic!("not caught: {other:?}"),
        }
        match chain::verify(&f.store, Some(&archive)).await {
            Err(chain::VerifyError::Broken(b)) => assert_eq!(b, engine::chain::Break::Missing { seq: 30 }),
            other => panic!("not broken: {other:?}"),
        }
        execute(&f.store, "UPDATE event_log SET seq = 30 WHERE seq = -30").await;
        assert_eq!(chain::verify(&f.store, None).await.unwrap(), live);

        // A seal across the gaps chains on from them.
        let later = Utc::now() + Duration::days(400);
        let (first, due) = retention::bounds(&f.store, &retention, later).await.unwrap().seal(true).unwrap();
        assert_eq!((first, due), (1, 40), "through the checkpoint");
        let seal = retention::write_segment(&f.store, &archive, 1, 20).await.unwrap();
        assert_eq!(seal.entries, 14, "20 entries less 6 compacted");
        f.writer.commit(Batch { log: vec![logged(LogEntry::LogSealed(seal))], ..Default::default() }).await.unwrap();
        retention::purge(&f.store, 20).await.unwrap();
        let whole = chain::verify(&f.store, Some(&archive)).await.unwrap();
        assert_eq!((whole.entries, whole.range, whole.segments), (42, Some((1, 42)), 2));
        assert_eq!(chain::verify(&f.store, None).await.unwrap().range, Some((21, 42)));

        // One of them changed in the archive.
        let segment = archive.join("observations-1-39.jsonl.zst");
        let original = std::fs::read(&segment).unwrap();
        let text = String::from_utf8(zstd::decode_all(original.as_slice()).unwrap()).unwrap();
        let changed = text.replacen("\"n\":10", "\"n\":12", 1);
        assert_ne!(changed, text);
        std::fs::write(&segment, zstd::encode_all(changed.as_bytes(), 3).unwrap()).unwrap();
        match chain::verify(&f.store, Some(&archive)).await {
            Err(chain::VerifyError::Broken(b)) => assert_eq!(b, engine::chain::Break::Changed { seq: 11 }),
            other => panic!("not broken: {other:?}"),
        }
    }

    async fn a_failing_batch_writes_nothing_nor_anything_queued_behind_it_until_reset(f) {
        // A record of a rollout that does not exist breaks the foreign key after the log row
        // was queued: the whole transaction must roll back.
        let failing = f.writer.submit(Batch {
            log: vec![row(0)],
            records: vec![RecordRow::new(&record("nope@1", "h"))],
            ..Default::default()
        });
        // Queued behind the failing batch (built on its changes): refused, not written.
        let behind = f.writer.submit(Batch { log: vec![row(1)], ..Default::default() });
        let failed = failing.await.unwrap();
        assert!(matches!(failed, Err(WriteError::Sqlite(_) | WriteError::Postgres(_))), "{failed:?}");
        assert!(matches!(behind.await.unwrap(), Err(WriteError::AfterFailure)));
        assert!(log_after(&f.store, 0, 10).await.unwrap().is_empty());
        // After a reset (the reducer reloaded), batches are written again, and the seq the
        // failed batch would have taken is not skipped.
        f.writer.reset();
        let written = f.writer.commit(Batch { log: vec![row(2)], ..Default::default() }).await.unwrap();
        assert_eq!(written.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
        assert_eq!(log_after(&f.store, 0, 10).await.unwrap().len(), 1);
    }

    /// Records written behind the log: readers see the log's newer copy through the view,
    /// and a load writes the tail into the table first.
    async fn records_are_read_through_the_logs_tail_and_settled_at_load(f) {
        let mut rec = record("web@1", "a");
        let first = Batch {
            rollouts: vec![rollout("web@1", 1)],
            records: vec![RecordRow::new(&rec)],
            log: vec![row(0)],
            ..Default::default()
        };
        f.writer.commit(first).await.unwrap();
        // A change the log carries, not written to the table.
        rec.last_event_seq = 7;
        f.writer.commit(Batch { log: vec![carrying(&rec)], ..Default::default() }).await.unwrap();
        let table: Vec<(String,)> = on_pool!(&f.store, pool => sqlx::query_as("SELECT body FROM host_records").fetch_all(pool).await.unwrap());
        let in_table: HostRecord = serde_json::from_str(&table[0].0).unwrap();
        assert_eq!(in_table.last_event_seq, 0, "the table still holds the old record");
        let rows = store::rollout_detail::<HostRecord>(&f.store, &id("web@1")).await.unwrap().unwrap();
        assert_eq!(
            (rows.records.len(), rows.records[0].last_event_seq, rows.as_of),
            (1, 7, 2),
            "the view reads the log's copy"
        );
        assert_eq!(store::records_of_host(&f.store, &host("a")).await.unwrap()[0].last_event_seq, 7);
        let (tallies, states) = store::rollout_hosts(&f.store, &[id("web@1")]).await.unwrap();
        assert!(tallies.is_empty());
        assert_eq!((states.len(), states[0].stuck), (1, false));
        // A restart loads the newest copy and writes it into the table.
        let loaded = crate::db::startup::load(&f.reopen().await).await.unwrap();
        assert_eq!(loaded.records.iter().map(|r| r.last_event_seq).collect::<Vec<_>>(), vec![7]);
        assert_eq!(loaded.last_seq, 2);
        let table: Vec<(String,)> = on_pool!(&f.store, pool => sqlx::query_as("SELECT body FROM host_records").fetch_all(pool).await.unwrap());
        let settled: HostRecord = serde_json::from_str(&table[0].0).unwrap();
        assert_eq!(settled, rec, "the load wrote the tail's record into the table");
    }

    /// The tables' records of open rollouts are read a few hundred rollouts a statement, in
    /// rollout and host order across statements, the log's tail over the table.
    async fn open_rollouts_records_are_read_from_the_tables_in_order(f) {
        let ids: Vec<String> = (0..1_001).map(|i| format!("c@{i:04}")).collect();
        let rollouts = ids.iter().enumerate().map(|(i, id)| rollout(id, i as u64 + 1)).collect();
        let records = ids.iter().flat_map(|id| ["b", "a"].map(|h| RecordRow::new(&record(id, h)))).collect();
        f.writer.commit(Batch { rollouts, records, log: vec![row(0)], ..Default::default() }).await.unwrap();
        let mut newer = record(&ids[700], "b");
        newer.last_event_seq = 9;
        f.writer.commit(Batch { log: vec![carrying(&newer)], ..Default::default() }).await.unwrap();
        let mut read = Vec::new();
        crate::db::replay::read_tables(&f.store, &mut |_, r| read.push(r)).await.unwrap();
        let keys: Vec<(String, String)> =
            read.iter().map(|r| (r.rollout_id.as_str().to_owned(), r.hostname.as_str().to_owned())).collect();
        let expected: Vec<(String, String)> =
            ids.iter().flat_map(|id| ["a", "b"].map(|h| (id.clone(), h.to_owned()))).collect();
        assert_eq!(keys, expected);
        assert_eq!(read[1401].last_event_seq, 9, "the log's copy of {:?}", keys[1401]);
    }

    async fn rollouts_and_logs_page_newest_first_and_by_rollout(f) {
        let rollouts: Vec<Rollout> = (1..=5).map(|i| rollout(&format!("c{}@{i}", i % 2), i)).collect();
        let mut log = Vec::new();
        for r in &rollouts {
            for i in 0..3 {
                log.push(LogRow { rollout_id: Some(r.id.clone()), ..row(i) });
            }
        }
        f.writer.commit(Batch { rollouts: rollouts.clone(), log, ..Default::default() }).await.unwrap();
        let page = store::rollout_rows(&f.store, None, None, 2).await.unwrap().unwrap();
        assert_eq!(page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["c1@5", "c0@4"]);
        let next = store::rollout_rows(&f.store, None, Some(&page[1].id), 10).await.unwrap().unwrap();
        assert_eq!(next.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["c1@3", "c0@2", "c1@1"]);
        assert!(store::rollout_rows(&f.store, None, Some(&id("none@1")), 10).await.unwrap().is_none());
        // One channel's (a channel history's pages).
        let c1 = Channel::parse("c1").unwrap();
        let ids = |rows: Vec<Rollout>| rows.iter().map(|r| r.id.as_str().to_owned()).collect::<Vec<_>>();
        let all = store::rollout_rows(&f.store, Some(&c1), None, 10).await.unwrap().unwrap();
        assert_eq!(ids(all), ["c1@5", "c1@3", "c1@1"]);
        let after = store::rollout_rows(&f.store, Some(&c1), Some(&id("c1@3")), 10).await.unwrap().unwrap();
        assert_eq!(ids(after), ["c1@1"]);
        assert!(store::rollout_rows(&f.store, Some(&c1), Some(&id("c0@4")), 10).await.unwrap().is_none());
        let current = store::current_rollouts(&f.store).await.unwrap();
        assert_eq!(current.get("c0").map(RolloutId::as_str), Some("c0@4"));
        assert_eq!(current.get("c1").map(RolloutId::as_str), Some("c1@5"));
        assert!(store::rollout_exists(&f.store, &id("c0@2")).await.unwrap());
        assert!(!store::rollout_exists(&f.store, &id("c0@9")).await.unwrap());
        let forward = store::rollout_log(&f.store, &id("c0@2"), 0, 10).await.unwrap();
        assert_eq!(forward.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5, 6]);
        let back = store::rollout_log_before(&f.store, &id("c0@2"), 6, 1).await.unwrap();
        assert_eq!(back.iter().map(|e| e.seq).collect::<Vec<_>>(), [5]);
        assert_eq!(log_after(&f.store, 13, 100).await.unwrap().len(), 2);
    }

    /// The log's lookups by rollout and by host read the same whether a row's keys were copied
    /// behind the log yet (SQLite's `log_keys`) or it is still in the tail after them.
    async fn log_lookups_by_rollout_and_host_read_copied_keys_and_the_tail_alike(f) {
        let rows = |from: usize| -> Vec<LogRow> {
            (from..from + 6)
                .map(|seq| LogRow {
                    rollout_id: Some(id(if seq % 2 == 1 { "c@1" } else { "c@2" })),
                    host: (seq % 3 == 0).then(|| host("h1")),
                    ..row(seq)
                })
                .collect()
        };
        f.writer.commit(Batch { log: rows(1), ..Default::default() }).await.unwrap();
        f.writer.commit(Batch { log: rows(7), ..Default::default() }).await.unwrap();
        let seqs = |events: Vec<LogEvent>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
        let sqlite = f.store.dialect() == crate::db::Dialect::Sqlite;
        // SQLite: the first batch's keys copied, the second's not yet; then every key copied.
        let states: &[&str] = if sqlite {
            &[crate::db::sqlite::COPY_KEYS, "DELETE FROM log_keys WHERE seq > 6", crate::db::sqlite::COPY_KEYS]
        } else {
            &[]
        };
        for step in 0..=states.len() {
            if step > 0 {
                execute(&f.store, states[step - 1]).await;
            }
            if sqlite {
                let copied: i64 = on_pool!(&f.store, pool => {
                    sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM log_keys").fetch_one(pool).await.unwrap()
                });
                assert!([0, 6, 12].contains(&copied), "step {step}: {copied}");
            }
            let c1 = id("c@1");
            assert_eq!(seqs(store::rollout_log(&f.store, &c1, 3, 4).await.unwrap()), [5, 7, 9, 11], "step {step}");
            assert_eq!(seqs(store::rollout_log(&f.store, &c1, 0, 100).await.unwrap()), [1, 3, 5, 7, 9, 11]);
            assert_eq!(seqs(store::rollout_log_before(&f.store, &c1, 11, 3).await.unwrap()), [5, 7, 9], "step {step}");
            assert_eq!(store::rollout_start(&f.store, &id("c@2")).await.unwrap().map(|(seq, _)| seq), Some(2));
            assert_eq!(store::rollout_start(&f.store, &id("c@3")).await.unwrap(), None);
            assert_eq!(seqs(store::host_log(&f.store, &host("h1"), 3).await.unwrap()), [6, 9, 12], "step {step}");
            assert_eq!(seqs(store::host_log(&f.store, &host("h2"), 3).await.unwrap()), Vec::<i64>::new());
        }
    }

    /// SQLite's writer copies the keys of the rows it committed behind the log once enough are
    /// waiting; retention's deletes take the copied keys with them.
    async fn the_writer_copies_log_keys_behind_the_log(f) {
        if f.store.dialect() != crate::db::Dialect::Sqlite {
            return;
        }
        let rows = (0..crate::db::sqlite::KEYS_BATCH).map(|i| LogRow { host: Some(host("h1")), ..row(i) }).collect();
        f.writer.commit(Batch { log: rows, ..Default::default() }).await.unwrap();
        let store = &f.store;
        let count = |sql: &'static str| async move {
            on_pool!(store, pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap())
        };
        // The writer copies the keys a slice at a time while no commit waits, after answering
        // this one: nothing signals the end of a round, so the test watches the table.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while count("SELECT COUNT(*) FROM log_keys").await < crate::db::sqlite::KEYS_BATCH as i64 {
            assert!(std::time::Instant::now() < deadline, "the keys were not copied within 20 s");
            // A commit in between takes its turn before the remaining slices.
            f.writer.commit(Batch { log: vec![row(0)], ..Default::default() }).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        execute(&f.store, "DELETE FROM event_log WHERE seq <= 100").await;
        assert_eq!(count("SELECT COUNT(*) FROM log_keys WHERE seq <= 100").await, 0);
    }

    async fn quarantines_presence_and_host_logs_read_back(f) {
        let now = Utc::now();
        let q = |closure: &str, at| QuarantineRow {
            channel: Channel::parse("web").unwrap(),
            closure: Closure::parse(format!("/nix/store/{closure}-x")).unwrap(),
            reason: "bad".into(),
            by: "olive".into(),
            at,
            released_at: None,
            released_by: None,
            release_reason: None,
        };
        let a = "a".repeat(32);
        let b = "b".repeat(32);
        let batch = Batch {
            quarantines: vec![QuarantineChange::Add(q(&a, now)), QuarantineChange::Add(q(&b, now))],
            presence: vec![
                store::PresenceRow { host: host("h1"), at: now, closure: Some(closure()), booted: Some(closure()) },
                store::PresenceRow { host: host("h2"), at: now, closure: None, booted: None },
            ],
            log: vec![LogRow { host: Some(host("h1")), ..row(0) }, LogRow { host: Some(host("h1")), ..row(1) }],
            ..Default::default()
        };
        f.writer.commit(batch).await.unwrap();
        let release = QuarantineChange::Release {
            channel: Channel::parse("web").unwrap(),
            closure: q(&a, now).closure,
            by: "olive".into(),
            reason: "fixed".into(),
            at: now,
        };
        f.writer.commit(Batch { quarantines: vec![release], ..Default::default() }).await.unwrap();
        let all = store::quarantines(&f.store, 10).await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].closure, q(&b, now).closure, "active first");
        assert_eq!(all[1].release_reason.as_deref(), Some("fixed"));
        let mut presence = store::presence(&f.store).await.unwrap();
        presence.sort();
        assert_eq!(presence.iter().map(|p| (p.0.as_str(), p.2.is_some())).collect::<Vec<_>>(), [("h1", true), ("h2", false)]);
        let host_log = store::host_log(&f.store, &host("h1"), 1).await.unwrap();
        assert_eq!(host_log.iter().map(|e| e.seq).collect::<Vec<_>>(), [2], "the newest one");
        let loaded = crate::db::startup::load(&f.store).await.unwrap();
        assert_eq!((loaded.quarantines.len(), loaded.presence.len()), (1, 2));
    }

    /// One row per batch; a batch's keys live until the latest of them expires.
    async fn signatures_of_agent_writes_are_kept_until_they_expire(f) {
        let first = Batch { signatures: vec![(1, 1_060), (2, 1_030)], signatures_expire_before: None, ..Default::default() };
        f.writer.commit(first).await.unwrap();
        let second = Batch { signatures: vec![(u128::MAX, 1_090)], signatures_expire_before: None, ..Default::default() };
        f.writer.commit(second).await.unwrap();
        let mut live = store::signatures(&f.store, 1_040).await.unwrap();
        live.sort();
        assert_eq!(live, [(1, 1_060), (2, 1_060), (u128::MAX, 1_090)], "whole keys, with their batch's expiry");
        assert_eq!(store::signatures(&f.store, 1_070).await.unwrap(), [(u128::MAX, 1_090)], "expired batches are not read");
        // A later batch deletes what expired before it.
        let third = Batch { signatures: vec![(3, 1_100)], signatures_expire_before: Some(1_070), ..Default::default() };
        f.writer.commit(third).await.unwrap();
        let rows = on_pool!(&f.store, pool => sqlx::query_scalar::<_, i64>("SELECT count(*) FROM agent_signatures").fetch_one(pool).await.unwrap());
        assert_eq!(rows, 2);
        let mut all = store::signatures(&f.store, 0).await.unwrap();
        all.sort();
        assert_eq!(all, [(3, 1_100), (u128::MAX, 1_090)]);
    }

    async fn operators_and_sessions(f) {
        let now = Utc::now();
        let id = auth::add_operator(&f.store, "olive", Role::Operator, "hash-o", now).await.unwrap();
        auth::add_operator(&f.store, "vera", Role::Viewer, "hash-v", now).await.unwrap();
        assert!(auth::add_operator(&f.store, "olive", Role::Viewer, "hash-x", now).await.is_err(), "names are unique");
        let olive = auth::operator_by_token(&f.store, "hash-o").await.unwrap().unwrap();
        assert_eq!((olive.id, olive.name.as_str(), olive.role), (id, "olive", Role::Operator));
        assert!(auth::operator_by_token(&f.store, "nope").await.unwrap().is_none());
        auth::create_session(&f.store, "s1", id, now, now + Duration::hours(1)).await.unwrap();
        assert!(auth::operator_by_session(&f.store, "s1", now).await.unwrap().is_some());
        assert!(auth::operator_by_session(&f.store, "s1", now + Duration::hours(2)).await.unwrap().is_none(), "expired");
        let listed = auth::list_operators(&f.store, now).await.unwrap();
        assert_eq!(listed.iter().map(|o| (o.name.as_str(), o.live_sessions)).collect::<Vec<_>>(), [("olive", 1), ("vera", 0)]);
        auth::delete_session(&f.store, "s1").await.unwrap();
        assert!(auth::operator_by_session(&f.store, "s1", now).await.unwrap().is_none());
        auth::create_session(&f.store, "s2", id, now, now + Duration::hours(1)).await.unwrap();
        assert!(auth::revoke_operator(&f.store, "olive", now).await.unwrap());
        assert!(!auth::revoke_operator(&f.store, "olive", now).await.unwrap(), "once");
        assert!(auth::operator_by_token(&f.store, "hash-o").await.unwrap().is_none());
        assert!(auth::operator_by_session(&f.store, "s2", now).await.unwrap().is_none());
    }

    async fn replaying_the_log_rebuilds_the_rows(f) {
        let opened = rollout("web@1", 1);
        let entry = entry(0);
        let carrying_rollout = LogRow {
            rollout_id: Some(opened.id.clone()),
            payload: store::payload(&StoredPayload::<HostRecord, Rollout> { entry: &entry, record: None, rollout: Some(&opened) }),
            ..row(0)
        };
        let mut rec = record("web@1", "a");
        rec.last_event_seq = 3;
        let batch = Batch {
            rollouts: vec![opened.clone()],
            records: vec![RecordRow::new(&rec)],
            log: vec![carrying_rollout, carrying(&rec)],
            ..Default::default()
        };
        f.writer.commit(batch).await.unwrap();
        let replayed = crate::db::replay::rebuild(&f.store, &f.writer).await.unwrap();
        assert_eq!(replayed.rollouts.values().collect::<Vec<_>>(), [&opened]);
        assert_eq!(replayed.records.values().collect::<Vec<_>>(), [&rec]);
        let rows = store::rollout_detail(&f.store, &opened.id).await.unwrap().unwrap();
        assert_eq!((rows.rollout, rows.records), (opened, vec![rec]), "the tables hold what the log re-derived");
    }
}

mod fencing {
    use super::*;

    /// A writer whose epoch is no longer the leader row's commits nothing, and says so.
    #[tokio::test]
    async fn a_writer_of_an_older_epoch_commits_nothing() {
        let f = Fixture::new(TestDb::postgres().await).await;
        f.writer.commit(Batch { log: vec![row(0)], ..Default::default() }).await.unwrap();
        let Store::Postgres(pool) = &f.store else { unreachable!() };
        sqlx::query("UPDATE leader SET epoch = epoch + 1").execute(pool).await.unwrap();
        let fenced = f
            .writer
            .commit(Batch {
                log: vec![row(1)],
                presence: vec![store::PresenceRow { host: host("h"), at: Utc::now(), closure: None, booted: None }],
                ..Default::default()
            })
            .await;
        assert!(matches!(fenced, Err(WriteError::Fenced { ours: 1, current: 2 })), "{fenced:?}");
        assert!(fenced.unwrap_err().is_fenced());
        assert_eq!(store::last_seq(&f.store).await.unwrap(), 1);
        assert!(store::presence(&f.store).await.unwrap().is_empty());
        // A writer of the new epoch continues the seqs without a gap.
        let next = Writer::open(&f.db.target(), super::super::BUSY_TIMEOUT, 2).await.unwrap();
        let written = next.commit(Batch { log: vec![row(2)], ..Default::default() }).await.unwrap();
        assert_eq!(written[0].seq, 2);
        let epochs: Vec<(i64, i64)> =
            sqlx::query_as("SELECT seq, epoch FROM event_log ORDER BY seq").fetch_all(pool).await.unwrap();
        assert_eq!(epochs, [(1, 1), (2, 2)], "each row names the epoch it was committed in");
    }

    /// The epoch increment waits for a transaction of the old leader that holds the row; the
    /// old leader's transactions after it fail. (What a new leader's UPDATE does while the
    /// old one is committing.)
    #[tokio::test]
    async fn an_epoch_increment_waits_for_the_old_leaders_transaction_in_flight() {
        use sqlx::Connection as _;
        let f = Fixture::new(TestDb::postgres().await).await;
        let super::super::DbTarget::Postgres(url) = f.db.target() else { unreachable!() };
        let mut old = sqlx::PgConnection::connect(&url).await.unwrap();
        let mut tx = old.begin().await.unwrap();
        let epoch: i64 =
            sqlx::query_scalar("SELECT epoch FROM leader WHERE id = 1 FOR SHARE").fetch_one(&mut *tx).await.unwrap();
        assert_eq!(epoch, EPOCH);
        let mut new = sqlx::PgConnection::connect(&url).await.unwrap();
        let bump = tokio::spawn(async move {
            let epoch: i64 = sqlx::query_scalar("UPDATE leader SET epoch = epoch + 1 RETURNING epoch")
                .fetch_one(&mut new)
                .await
                .unwrap();
            epoch
        });
        // Wait until the server shows the increment waiting for the row lock.
        let mut watcher = sqlx::PgConnection::connect(&url).await.unwrap();
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE leader%'",
            )
            .fetch_one(&mut watcher)
            .await
            .unwrap();
            if waiting == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(!bump.is_finished(), "the increment waits for the old leader's transaction");
        tx.commit().await.unwrap();
        assert_eq!(bump.await.unwrap(), EPOCH + 1);
        let fenced = f.writer.commit(Batch { log: vec![row(0)], ..Default::default() }).await;
        assert!(matches!(fenced, Err(WriteError::Fenced { .. })), "{fenced:?}");
    }
}
