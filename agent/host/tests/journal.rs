#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! The state journal against a real file system: replay, the writer's lock (seen by other
//! processes through flock(1)), torn tails, corruption, versions, compaction, crash leftovers.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipvsmig_host::journal::{
    self, COMPACT_FILE, JOURNAL_FILE, Journal, JournalError, LOCK_FILE, Opened,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

const BOOT_A: &str = "0f4c3a8e-6a1b-4c1d-9e2f-2b7c1d0e9a11";
const BOOT_B: &str = "7d2e9b10-3c4f-4a5b-8c6d-1e2f3a4b5c6d";

/// Stands in for the engine's op records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Rec {
    Intent { id: u32, what: String },
    Done { id: u32, ok: bool },
    State(Vec<u32>),
}

fn intent(id: u32) -> Rec {
    Rec::Intent {
        id,
        what: format!("add virtual server {id}"),
    }
}

/// A state directory below a fresh temp dir (so `open` has to create it).
fn state_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    (tmp, dir)
}

fn open(dir: &Path, boot: &str) -> (Journal<Rec>, Opened<Rec>) {
    Journal::<Rec>::open(dir, boot).unwrap()
}

fn write_journal(dir: &Path, recs: &[Rec]) {
    let (mut j, _) = open(dir, BOOT_A);
    for r in recs {
        j.append(r).unwrap();
    }
}

fn journal_text(dir: &Path) -> String {
    fs::read_to_string(dir.join(JOURNAL_FILE)).unwrap()
}

/// Whether flock(1) (util-linux) is here; says SKIP when it is not.
fn has_flock() -> bool {
    let found = Command::new("flock").arg("--version").output().is_ok();
    if !found {
        // The full suite (scripts/test.sh sets IPVSMIG_REQUIRE_ALL=1) must not skip.
        assert!(
            std::env::var("IPVSMIG_REQUIRE_ALL").as_deref() != Ok("1"),
            "flock(1) from util-linux is not installed, and IPVSMIG_REQUIRE_ALL=1"
        );
        eprintln!("SKIP: flock(1) from util-linux is not installed");
    }
    found
}

/// `flock -n FILE true`: can another process take the lock right now?
fn flock_free(lock: &Path) -> bool {
    Command::new("flock")
        .arg("-n")
        .arg(lock)
        .arg("true")
        .status()
        .unwrap()
        .success()
}

#[test]
fn appended_records_replay_in_order_after_the_journal_is_dropped_and_reopened() {
    let (_tmp, dir) = state_dir();
    let recs = vec![intent(1), Rec::Done { id: 1, ok: true }, intent(2)];
    let (mut j, opened) = open(&dir, BOOT_A);
    assert_eq!(opened.records, vec![]);
    assert_eq!(opened.snapshot, None);
    assert!(!opened.boot_changed);
    assert_eq!(opened.torn_tail, None);
    let seqs: Vec<u64> = recs.iter().map(|r| j.append(r).unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3], "the header is seq 0");
    assert_eq!(j.records_since_snapshot(), 3);
    drop(j);

    let (mut j, opened) = open(&dir, BOOT_A);
    assert_eq!(opened.records, recs);
    assert_eq!(opened.recorded_boot.as_deref(), Some(BOOT_A));
    assert_eq!(j.records_since_snapshot(), 3);
    assert_eq!(j.append(&intent(3)).unwrap(), 4);
}

#[test]
fn a_new_journal_starts_with_a_header_in_a_private_state_dir() {
    let (_tmp, dir) = state_dir();
    let (mut j, _) = open(&dir, BOOT_A);
    j.append(&intent(1)).unwrap();
    let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let text = journal_text(&dir);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with(&format!(
            r#"{{"v":1,"kind":"ipvs-migrate-journal","seq":0,"boot":"{BOOT_A}","crc":""#
        )),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(&format!(
            r#"{{"v":1,"seq":1,"boot":"{BOOT_A}","rec":{{"Intent":{{"id":1,"what":"add virtual server 1"}}}},"crc":""#
        )),
        "{}",
        lines[1]
    );
    assert!(text.ends_with("\"}\n"));
}

#[test]
fn a_second_open_in_the_same_process_is_locked_and_names_the_holder() {
    let (_tmp, dir) = state_dir();
    let (_j, _) = open(&dir, BOOT_A);
    match Journal::<Rec>::open(&dir, BOOT_A) {
        Err(JournalError::Locked { path, holder }) => {
            assert_eq!(path, dir.join(LOCK_FILE));
            assert!(
                holder.starts_with(&format!("pid={} cmd=", std::process::id())),
                "{holder}"
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn the_lock_is_seen_by_flock_while_held_and_released_on_drop() {
    if !has_flock() {
        return;
    }
    let (_tmp, dir) = state_dir();
    let (j, _) = open(&dir, BOOT_A);
    assert!(!flock_free(&dir.join(LOCK_FILE)));
    drop(j);
    assert!(flock_free(&dir.join(LOCK_FILE)));
    open(&dir, BOOT_A);
}

#[test]
fn a_lock_held_by_another_process_is_locked_and_names_that_holder() {
    if !has_flock() {
        return;
    }
    let (_tmp, dir) = state_dir();
    open(&dir, BOOT_A); // creates the state dir, then lets go
    let lock = dir.join(LOCK_FILE);
    // The child takes the lock, writes a holder line as the agent would, and holds the lock
    // until its stdin closes.
    let mut child = Command::new("flock")
        .arg("-n")
        .arg(&lock)
        .args([
            "sh",
            "-c",
            r#"echo "pid=$$ cmd=flock-holder" > "$0"; cat >/dev/null"#,
        ])
        .arg(&lock)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&lock).unwrap().contains("flock-holder") {
        assert!(
            Instant::now() < deadline,
            "the child never wrote the lock file"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    match Journal::<Rec>::open(&dir, BOOT_A) {
        Err(JournalError::Locked { holder, .. }) => {
            assert!(holder.ends_with("cmd=flock-holder"), "{holder}");
            assert!(holder.starts_with("pid="), "{holder}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let (_j, opened) = open(&dir, BOOT_A);
    assert_eq!(opened.records, vec![]);
}

#[test]
fn a_torn_last_line_is_cut_off_and_reported() {
    let (_tmp, dir) = state_dir();
    let recs = vec![intent(1), intent(2)];
    write_journal(&dir, &recs);
    let good = journal_text(&dir);
    // A crash halfway through writing a third line.
    let line = r#"{"v":1,"seq":3,"boot":"0f4c3a8e-6a1b-4c1d-9e2f-2b7c1d0e9a11","rec":{"Inte"#;
    fs::write(dir.join(JOURNAL_FILE), format!("{good}{line}")).unwrap();

    let ro = Journal::<Rec>::read_only(&dir, BOOT_A).unwrap().unwrap();
    assert_eq!(ro.torn_tail, Some(4));
    assert_eq!(ro.records, recs);
    assert!(
        journal_text(&dir).ends_with(line),
        "read_only never truncates"
    );

    let (mut j, opened) = open(&dir, BOOT_A);
    assert_eq!(opened.torn_tail, Some(4));
    assert_eq!(opened.records, recs);
    assert_eq!(journal_text(&dir), good);
    assert_eq!(j.append(&intent(3)).unwrap(), 3, "the torn seq is reused");
    drop(j);
    let (_j, opened) = open(&dir, BOOT_A);
    assert_eq!(opened.torn_tail, None);
    assert_eq!(opened.records, vec![intent(1), intent(2), intent(3)]);
}

#[test]
fn a_whole_last_line_with_a_bad_checksum_is_a_torn_tail() {
    let (_tmp, dir) = state_dir();
    write_journal(&dir, &[intent(1), intent(2)]);
    let text = journal_text(&dir).replace("server 2", "server 9");
    fs::write(dir.join(JOURNAL_FILE), text).unwrap();
    let (_j, opened) = open(&dir, BOOT_A);
    assert_eq!(opened.torn_tail, Some(3));
    assert_eq!(opened.records, vec![intent(1)]);
}

#[test]
fn a_bad_checksum_in_the_middle_is_corrupt_with_its_line_number() {
    let (_tmp, dir) = state_dir();
    write_journal(&dir, &[intent(1), intent(2), intent(3)]);
    let text = journal_text(&dir).replace("server 2", "server 9");
    fs::write(dir.join(JOURNAL_FILE), &text).unwrap();
    for result in [
        Journal::<Rec>::open(&dir, BOOT_A).map(|(_, o)| o),
        Journal::<Rec>::read_only(&dir, BOOT_A).map(|o| o.unwrap()),
    ] {
        match result {
            Err(JournalError::Corrupt { path, line, reason }) => {
                assert_eq!(path, dir.join(JOURNAL_FILE));
                assert_eq!(line, 3);
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    assert_eq!(
        journal_text(&dir),
        text,
        "a corrupt journal is left as it is"
    );
}

#[test]
fn a_missing_line_in_the_middle_is_corrupt() {
    let (_tmp, dir) = state_dir();
    write_journal(&dir, &[intent(1), intent(2), intent(3)]);
    let text = journal_text(&dir);
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, l)| l)
        .collect();
    fs::write(dir.join(JOURNAL_FILE), kept.join("\n") + "\n").unwrap();
    match Journal::<Rec>::open(&dir, BOOT_A) {
        Err(JournalError::Corrupt { line, reason, .. }) => {
            assert_eq!(line, 3);
            assert!(
                reason.contains("sequence number 3 where 2 was due"),
                "{reason}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn an_unknown_format_version_is_an_error_not_a_guess() {
    let (_tmp, dir) = state_dir();
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join(JOURNAL_FILE),
        "{\"v\":2,\"kind\":\"ipvs-migrate-journal\",\"whatever\":true}\n",
    )
    .unwrap();
    match Journal::<Rec>::open(&dir, BOOT_A) {
        Err(e @ JournalError::UnsupportedVersion { .. }) => {
            let JournalError::UnsupportedVersion { line, found, .. } = &e else {
                unreachable!()
            };
            assert_eq!((*line, found.as_str()), (1, "2"));
            assert!(e.to_string().contains("version 2 is not supported"), "{e}");
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }

    // A later line from a newer release, even the last one, is not taken for a torn tail.
    write_journal(&dir.join("b"), &[intent(1), intent(2)]);
    let path = dir.join("b").join(JOURNAL_FILE);
    let text = fs::read_to_string(&path).unwrap();
    let (head, last) = text.trim_end().rsplit_once('\n').unwrap();
    fs::write(
        &path,
        format!("{head}\n{}\n", last.replacen("\"v\":1", "\"v\":\"1.1\"", 1)),
    )
    .unwrap();
    match Journal::<Rec>::read_only(&dir.join("b"), BOOT_A) {
        Err(JournalError::UnsupportedVersion { line, found, .. }) => {
            assert_eq!((line, found.as_str()), (3, "\"1.1\""));
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn a_record_this_build_cannot_decode_is_an_error_naming_its_line() {
    #[derive(Debug, Serialize, Deserialize)]
    struct Other {
        id: u32,
    }
    let (_tmp, dir) = state_dir();
    write_journal(&dir, &[intent(1)]);
    match Journal::<Other>::open(&dir, BOOT_A) {
        Err(JournalError::Record { line, .. }) => assert_eq!(line, 2),
        other => panic!("expected Record, got {other:?}"),
    }
}

#[test]
fn compaction_keeps_the_snapshot_and_later_appends_and_leaves_no_tmp_file() {
    let (_tmp, dir) = state_dir();
    let (mut j, _) = open(&dir, BOOT_A);
    for id in 1..=5 {
        j.append(&intent(id)).unwrap();
    }
    assert_eq!(j.records_since_snapshot(), 5);
    let snapshot = Rec::State(vec![1, 2, 3, 4, 5]);
    j.compact(&snapshot).unwrap();
    assert_eq!(j.records_since_snapshot(), 0);
    assert!(!dir.join(COMPACT_FILE).exists());
    assert_eq!(journal_text(&dir).lines().count(), 2);
    assert_eq!(
        j.append(&intent(6)).unwrap(),
        8,
        "seq goes on: header 6, snapshot 7"
    );
    assert_eq!(j.records_since_snapshot(), 1);
    drop(j);

    let (mut j, opened) = open(&dir, BOOT_A);
    assert_eq!(opened.snapshot, Some(snapshot.clone()));
    assert_eq!(opened.records, vec![intent(6)]);
    assert_eq!(j.records_since_snapshot(), 1);
    // A second compaction replaces the first snapshot.
    let second = Rec::State(vec![6]);
    j.compact(&second).unwrap();
    drop(j);
    let opened = Journal::<Rec>::read_only(&dir, BOOT_A).unwrap().unwrap();
    assert_eq!((opened.snapshot, opened.records), (Some(second), vec![]));
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.contains(&COMPACT_FILE.to_owned()), "{names:?}");
}

#[test]
fn a_changed_boot_id_is_reported() {
    let (_tmp, dir) = state_dir();
    write_journal(&dir, &[intent(1)]);
    let opened = Journal::<Rec>::read_only(&dir, BOOT_A).unwrap().unwrap();
    assert!(!opened.boot_changed);
    let (mut j, opened) = open(&dir, BOOT_B);
    assert!(opened.boot_changed);
    assert_eq!(opened.recorded_boot.as_deref(), Some(BOOT_A));
    assert_eq!(opened.records, vec![intent(1)]);
    // Once something is written under the new boot, the journal is of this boot.
    j.append(&intent(2)).unwrap();
    drop(j);
    let (_j, opened) = open(&dir, BOOT_B);
    assert!(!opened.boot_changed);
}

#[test]
fn a_compaction_file_left_by_a_crash_before_the_rename_is_removed_and_the_journal_is_intact() {
    let (_tmp, dir) = state_dir();
    let recs = vec![intent(1), intent(2)];
    write_journal(&dir, &recs);
    let before = journal_text(&dir);
    // What a crash after writing the new file but before the rename leaves behind.
    let mut tmp = fs::File::create(dir.join(COMPACT_FILE)).unwrap();
    tmp.write_all(b"{\"v\":1,\"kind\":\"ipvs-migrate-journal\",\"seq\":3,\"bo")
        .unwrap();
    drop(tmp);

    let ro = Journal::<Rec>::read_only(&dir, BOOT_A).unwrap().unwrap();
    assert_eq!(ro.records, recs);
    assert!(dir.join(COMPACT_FILE).exists(), "readers change nothing");

    let (_j, opened) = open(&dir, BOOT_A);
    assert_eq!(opened.records, recs);
    assert_eq!(opened.torn_tail, None);
    assert!(!dir.join(COMPACT_FILE).exists());
    assert_eq!(journal_text(&dir), before);
}

#[test]
fn read_only_takes_no_lock_and_finds_nothing_where_there_is_no_journal() {
    let (_tmp, dir) = state_dir();
    assert_eq!(Journal::<Rec>::read_only(&dir, BOOT_A).unwrap(), None);
    let (mut j, _) = open(&dir, BOOT_A);
    j.append(&intent(1)).unwrap();
    let ro = Journal::<Rec>::read_only(&dir, BOOT_A).unwrap().unwrap();
    assert_eq!(ro.records, vec![intent(1)]);
}

#[test]
fn a_null_record_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::<Option<u32>>::open(tmp.path(), BOOT_A).unwrap();
    j.append(&None).unwrap();
    j.append(&Some(7)).unwrap();
    drop(j);
    let (_j, opened) = Journal::<Option<u32>>::open(tmp.path(), BOOT_A).unwrap();
    assert_eq!(opened.records, vec![None, Some(7)]);
}

#[test]
fn the_boot_id_is_read_below_the_host_root() {
    let tmp = tempfile::tempdir().unwrap();
    let err = journal::boot_id(tmp.path()).unwrap_err();
    assert!(
        err.to_string().contains("proc/sys/kernel/random/boot_id"),
        "{err}"
    );
    let file = tmp.path().join("proc/sys/kernel/random/boot_id");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, format!("{BOOT_A}\n")).unwrap();
    assert_eq!(journal::boot_id(tmp.path()).unwrap(), BOOT_A);
    fs::write(&file, "not-a-uuid\n").unwrap();
    let err = journal::boot_id(tmp.path()).unwrap_err();
    assert!(
        err.to_string().contains("\"not-a-uuid\" is not a boot id"),
        "{err}"
    );
    // The machine's own, where there is one.
    if Path::new("/proc/sys/kernel/random/boot_id").exists() {
        assert_eq!(journal::boot_id(Path::new("/")).unwrap().len(), 36);
    }
}

fn rec_strategy() -> impl Strategy<Value = Rec> {
    prop_oneof![
        (any::<u32>(), "[a-z \"\\\\\né→]{0,12}").prop_map(|(id, what)| Rec::Intent { id, what }),
        (any::<u32>(), any::<bool>()).prop_map(|(id, ok)| Rec::Done { id, ok }),
        prop::collection::vec(any::<u32>(), 0..4).prop_map(Rec::State),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Cutting a valid journal anywhere (what a crash can leave of the last write) replays to
    /// exactly the lines before the cut, reports a torn tail iff the cut is inside a line, and
    /// the writer's open leaves a journal that replays cleanly.
    #[test]
    fn any_prefix_of_a_valid_journal_replays_to_a_prefix_or_reports_the_torn_tail(
        before in prop::collection::vec(rec_strategy(), 0..4),
        snapshot in prop::option::of(rec_strategy()),
        after in prop::collection::vec(rec_strategy(), 0..5),
        cut in any::<prop::sample::Index>(),
    ) {
        let (_tmp, dir) = state_dir();
        let (mut j, _) = open(&dir, BOOT_A);
        let mut recs = before.clone();
        for r in &before {
            j.append(r).unwrap();
        }
        if let Some(s) = &snapshot {
            j.compact(s).unwrap();
            recs.clear();
        }
        for r in &after {
            j.append(r).unwrap();
        }
        recs.extend(after.iter().cloned());
        drop(j);
        let full = fs::read(dir.join(JOURNAL_FILE)).unwrap();
        let cut = cut.index(full.len() + 1);
        let prefix = &full[..cut];

        let (_tmp2, cut_dir) = state_dir();
        fs::create_dir_all(&cut_dir).unwrap();
        fs::write(cut_dir.join(JOURNAL_FILE), prefix).unwrap();

        let whole = prefix.iter().filter(|&&b| b == b'\n').count();
        let torn = (!prefix.is_empty() && !prefix.ends_with(b"\n")).then_some(whole as u64 + 1);
        let snap_lines = usize::from(snapshot.is_some());
        let got_snapshot = if whole > snap_lines { snapshot.clone() } else { None };
        let got_recs = recs[..whole.saturating_sub(1 + snap_lines)].to_vec();

        let ro = Journal::<Rec>::read_only(&cut_dir, BOOT_A).unwrap().unwrap();
        prop_assert_eq!(ro.torn_tail, torn);
        prop_assert_eq!(&ro.snapshot, &got_snapshot);
        prop_assert_eq!(&ro.records, &got_recs);

        let (_j, opened) = open(&cut_dir, BOOT_A);
        prop_assert_eq!(opened.torn_tail, torn);
        prop_assert_eq!(&opened.records, &got_recs);
        drop(_j);
        let again = Journal::<Rec>::read_only(&cut_dir, BOOT_A).unwrap().unwrap();
        prop_assert_eq!(again.torn_tail, None);
        prop_assert_eq!(&again.snapshot, &got_snapshot);
        prop_assert_eq!(&again.records, &got_recs);
    }
}
