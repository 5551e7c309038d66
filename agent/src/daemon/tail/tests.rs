//! Tests of the tailer against a real temporary directory: the rotation schemes one by one, then
//! a model-based property test over random sequences of writes, rotations, truncations,
//! deletions, polls and restarts.
#![allow(clippy::unwrap_used)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

type Delivered = Vec<(LogSource, PathBuf, u64, String)>;

fn options() -> TailOptions {
    TailOptions {
        max_line: 4096,
        rotate_grace: Duration::ZERO,
        max_read_per_poll: 1 << 20,
        start_at_end_without_checkpoint: false,
        max_files: 64,
    }
}

fn poll(tailer: &mut Tailer, out: &mut Delivered) -> PollStats {
    tailer
        .poll(&mut |source, path: &Path, line_no, line: &[u8]| {
            out.push((
                source,
                path.to_path_buf(),
                line_no,
                String::from_utf8_lossy(line).into_owned(),
            ))
        })
        .unwrap()
}

fn texts(out: &Delivered) -> Vec<String> {
    out.iter().map(|(_, _, _, t)| t.clone()).collect()
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn access(dir: &Path) -> Vec<TailSource> {
    vec![TailSource {
        source: LogSource::NginxAccess,
        pattern: dir.join("access.log").to_string_lossy().into_owned(),
    }]
}

#[test]
fn partial_lines_wait_for_their_newline_and_long_lines_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut opts = options();
    opts.max_line = 10;
    let mut t = Tailer::with_options(access(dir.path()), dir.path().join("ck.json"), opts);
    let mut out = Delivered::new();
    append(&log, "one\r\ntw");
    poll(&mut t, &mut out);
    assert_eq!(texts(&out), ["one"]);
    append(&log, "o\n");
    append(&log, &format!("{}\n{}", "x".repeat(25), "y".repeat(7)));
    let stats = poll(&mut t, &mut out);
    append(&log, &format!("{}\nend\n", "y".repeat(30)));
    let stats2 = poll(&mut t, &mut out);
    assert_eq!(
        texts(&out),
        ["one", "two", "xxxxxxxxxx", "yyyyyyyyyy", "end"]
    );
    assert_eq!(stats.long_lines + stats2.long_lines, 2);
    let numbers: Vec<u64> = out.iter().map(|d| d.2).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
    assert!(out
        .iter()
        .all(|d| d.0 == LogSource::NginxAccess && d.1 == log));
}

#[test]
fn rename_create_drains_the_old_file_while_the_writer_still_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut opts = options();
    opts.rotate_grace = Duration::from_secs(3600);
    let mut t = Tailer::with_options(access(dir.path()), dir.path().join("ck.json"), opts);
    let mut out = Delivered::new();
    append(&log, "a1\n");
    poll(&mut t, &mut out);
    // logrotate: rename, create; the writer has not reopened yet and keeps writing to the old file.
    let mut writer = OpenOptions::new().append(true).open(&log).unwrap();
    std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    File::create(&log).unwrap();
    writer.write_all(b"a2\n").unwrap();
    let stats = poll(&mut t, &mut out);
    assert_eq!(stats.rotations, 1);
    writer.write_all(b"a3\n").unwrap();
    poll(&mut t, &mut out);
    assert_eq!(stats.files, 2, "old and new file both open");
    // The writer reopens (nginx -s reopen): new lines go to the new file.
    drop(writer);
    append(&log, "b1\n");
    poll(&mut t, &mut out);
    let stats = poll(&mut t, &mut out);
    assert_eq!(
        stats.files, 1,
        "the drained old file is closed once the writer moved on"
    );
    assert_eq!(texts(&out), ["a1", "a2", "a3", "b1"]);
    let b1 = out.iter().find(|d| d.3 == "b1").unwrap();
    assert_eq!(b1.2, 1, "the new file's lines are numbered from 1");
}

#[test]
fn copytruncate_recovers_lines_written_after_the_last_poll_from_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut t = Tailer::with_options(access(dir.path()), dir.path().join("ck.json"), options());
    let mut out = Delivered::new();
    append(&log, "a1\na2\n");
    poll(&mut t, &mut out);
    append(&log, "a3\na4-part");
    std::fs::copy(&log, dir.path().join("access.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, "b1\nb2\nb3\nb4\nb5\n"); // longer than before: only the head shows the truncation
    let stats = poll(&mut t, &mut out);
    assert_eq!(stats.truncations, 1);
    assert_eq!(
        texts(&out),
        ["a1", "a2", "a3", "a4-part", "b1", "b2", "b3", "b4", "b5"]
    );
    let numbers: Vec<u64> = out.iter().map(|d| d.2).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 1, 2, 3, 4, 5]);
}

#[test]
fn copytruncate_never_reads_an_older_rotation_whose_first_lines_look_the_same() {
    // nginx lines of the same second are byte-identical: heads of two lifetimes can match.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut t = Tailer::with_options(access(dir.path()), dir.path().join("ck.json"), options());
    let mut out = Delivered::new();
    append(&log, "same\nsame\nold-3\nold-4\nold-5\n");
    poll(&mut t, &mut out);
    std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    append(&log, "same\nsame\n");
    poll(&mut t, &mut out);
    poll(&mut t, &mut out);
    // copytruncate with nothing new since the last poll, then new lines.
    std::fs::copy(&log, dir.path().join("access.log.2")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, "new-1\n");
    poll(&mut t, &mut out);
    assert_eq!(
        texts(&out),
        ["same", "same", "old-3", "old-4", "old-5", "same", "same", "new-1"]
    );
}

#[test]
fn copytruncate_with_a_writer_lacking_o_append_skips_the_hole() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut t = Tailer::with_options(access(dir.path()), dir.path().join("ck.json"), options());
    let mut out = Delivered::new();
    // A writer with its own offset (no O_APPEND).
    let writer = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&log)
        .unwrap();
    let mut pos = 0u64;
    let mut write = |text: &str| {
        std::os::unix::fs::FileExt::write_all_at(&writer, text.as_bytes(), pos).unwrap();
        pos += text.len() as u64;
    };
    write(&"x".repeat(70_000));
    write("\nw1\n");
    poll(&mut t, &mut out);
    std::fs::copy(&log, dir.path().join("access.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    write("w2\n"); // lands at offset 70004: the file is a 70 KB hole, then "w2"
    poll(&mut t, &mut out);
    let got: Vec<String> = texts(&out).into_iter().skip(1).collect();
    assert_eq!(got, ["w1", "w2"]);
}

#[test]
fn restart_resumes_after_the_last_line_and_finds_files_rotated_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let ck = dir.path().join("state/ck.json");
    let mut out = Delivered::new();
    {
        let mut t = Tailer::with_options(access(dir.path()), &ck, options());
        append(&log, "a1\na2\na3-par");
        poll(&mut t, &mut out);
        t.checkpoint().unwrap();
    }
    // While the agent is down: the line completes, more lines, a rotation, lines in the new file.
    append(&log, "t\na4\n");
    std::fs::rename(&log, dir.path().join("access.log-20261124")).unwrap();
    append(&log, "b1\n");
    let mut t = Tailer::with_options(access(dir.path()), &ck, options());
    assert!(t.load_error().is_none());
    poll(&mut t, &mut out);
    poll(&mut t, &mut out);
    // Order holds within each file (the old one drained, the new one read from its start).
    let (a, b): (Vec<_>, Vec<_>) = out.iter().partition(|d| d.3.starts_with('a'));
    let a: Vec<(&str, u64)> = a.iter().map(|d| (d.3.as_str(), d.2)).collect();
    let b: Vec<(&str, u64)> = b.iter().map(|d| (d.3.as_str(), d.2)).collect();
    assert_eq!(a, [("a1", 1), ("a2", 2), ("a3-part", 3), ("a4", 4)]);
    assert_eq!(b, [("b1", 1)]);
    // A second restart with nothing new delivers nothing.
    t.checkpoint().unwrap();
    drop(t);
    let mut t = Tailer::with_options(access(dir.path()), &ck, options());
    let before = out.len();
    poll(&mut t, &mut out);
    assert_eq!(out.len(), before);
}

#[test]
fn first_start_begins_at_the_end_but_later_files_are_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, "old1\nold2\n");
    let sources = vec![
        access(dir.path()).remove(0),
        TailSource {
            source: LogSource::NginxError,
            pattern: dir.path().join("*error.log").to_string_lossy().into_owned(),
        },
    ];
    let mut opts = options();
    opts.start_at_end_without_checkpoint = true;
    let mut t = Tailer::with_options(sources, dir.path().join("ck.json"), opts);
    let mut out = Delivered::new();
    poll(&mut t, &mut out);
    assert!(out.is_empty());
    append(&log, "new1\n");
    append(&dir.path().join("site-error.log"), "e1\n");
    append(&dir.path().join("site-error.log.gz"), "binary\n");
    poll(&mut t, &mut out);
    let mut got: Vec<(LogSource, String, u64)> =
        out.iter().map(|d| (d.0, d.3.clone(), d.2)).collect();
    got.sort();
    assert_eq!(
        got,
        [
            (LogSource::NginxAccess, "new1".to_string(), 3),
            (LogSource::NginxError, "e1".to_string(), 1)
        ]
    );
}

#[test]
fn vanished_and_unreadable_files_are_not_errors_of_the_poll() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut t = Tailer::with_options(access(dir.path()), dir.path().join("ck.json"), options());
    let mut out = Delivered::new();
    poll(&mut t, &mut out);
    append(&log, "x1\n");
    poll(&mut t, &mut out);
    std::fs::remove_file(&log).unwrap();
    poll(&mut t, &mut out);
    poll(&mut t, &mut out);
    std::fs::create_dir(&log).unwrap(); // a directory where the log was
    let stats = poll(&mut t, &mut out);
    assert_eq!(stats.files, 0);
    std::fs::remove_dir(&log).unwrap();
    append(&log, "x2\n");
    poll(&mut t, &mut out);
    assert_eq!(texts(&out), ["x1", "x2"]);
    // A corrupt checkpoint is reported, and the tailer still works.
    let ck = dir.path().join("bad.json");
    std::fs::write(&ck, b"{not json").unwrap();
    let t = Tailer::with_options(access(dir.path()), &ck, options());
    assert!(t.load_error().is_some());
}

#[test]
fn a_glob_matching_too_many_files_opens_only_up_to_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..10 {
        append(&dir.path().join(format!("site{i}.log")), &format!("s{i}\n"));
    }
    let mut opts = options();
    opts.max_files = 4;
    let sources = vec![TailSource {
        source: LogSource::NginxAccess,
        pattern: dir.path().join("*.log").to_string_lossy().into_owned(),
    }];
    let mut t = Tailer::with_options(sources, dir.path().join("ck.json"), opts);
    let mut out = Delivered::new();
    let stats = poll(&mut t, &mut out);
    assert_eq!(stats.files, 4);
    assert_eq!(out.len(), 4);
    assert_eq!(stats.errors.len(), 6);
    assert!(stats.errors[0].1.contains("limit"));
}

// ---------------------------------------------------------------------------------------------
// Model-based test.

#[derive(Debug, Clone)]
enum Op {
    Write {
        file: usize,
        lines: usize,
        partial: bool,
    },
    RotateCreate(usize),
    CopyTruncate(usize),
    Delete(usize),
    Poll,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..3usize, 0..4usize, any::<bool>())
            .prop_map(|(file, lines, partial)| Op::Write { file, lines, partial }),
        2 => (0..3usize).prop_map(Op::RotateCreate),
        2 => (0..3usize).prop_map(Op::CopyTruncate),
        1 => (0..3usize).prop_map(Op::Delete),
        5 => Just(Op::Poll),
        2 => Just(Op::Restart),
    ]
}

/// One lifetime of a file at one path, as the model knows it.
#[derive(Debug)]
struct Life {
    file: usize,
    complete: Vec<String>,
    /// The written part of an unterminated line, and the whole line it will become.
    partial: Option<(String, String)>,
    ended: bool,
    /// False when the agent may legitimately lose lines of it (then a prefix must arrive).
    exact: bool,
    /// The tailer had the file open (rename keeps it readable) / had read bytes of it
    /// (copytruncate is recognisable).
    opened: bool,
    seen: bool,
}

struct Harness {
    dir: tempfile::TempDir,
    /// The tailer's line cap (small caps exercise cutting across partial reads).
    max_line: usize,
    lives: Vec<Life>,
    current: [Option<usize>; 3],
    tailer: Option<Tailer>,
    delivered: Delivered,
    rotations: u32,
}

impl Harness {
    fn new(max_line: usize) -> Harness {
        Harness {
            dir: tempfile::tempdir().unwrap(),
            max_line,
            lives: Vec::new(),
            current: [None; 3],
            tailer: None,
            delivered: Vec::new(),
            rotations: 0,
        }
    }

    fn path(&self, file: usize) -> PathBuf {
        match file {
            0 => self.dir.path().join("a.log"),
            n => self.dir.path().join(format!("g-{n}.log")),
        }
    }

    fn source(file: usize) -> LogSource {
        if file == 0 {
            LogSource::NginxAccess
        } else {
            LogSource::NginxError
        }
    }

    fn sources(&self) -> Vec<TailSource> {
        vec![
            TailSource {
                source: LogSource::NginxAccess,
                pattern: self.path(0).to_string_lossy().into_owned(),
            },
            TailSource {
                source: LogSource::NginxError,
                pattern: self
                    .dir
                    .path()
                    .join("g-*.log")
                    .to_string_lossy()
                    .into_owned(),
            },
        ]
    }

    fn text(id: usize, seq: usize) -> String {
        format!("L{id}:{seq}:{}", "x".repeat(20 + seq * 7 % 30))
    }

    fn new_life(&mut self, file: usize) -> usize {
        self.lives.push(Life {
            file,
            complete: Vec::new(),
            partial: None,
            ended: false,
            exact: true,
            opened: false,
            seen: false,
        });
        let id = self.lives.len() - 1;
        self.current[file] = Some(id);
        id
    }

    fn end_life(&mut self, file: usize, exact: bool) {
        if let Some(id) = self.current[file].take() {
            let life = &mut self.lives[id];
            life.ended = true;
            life.exact &= exact;
        }
    }

    fn write(&mut self, file: usize, lines: usize, partial: bool) {
        let path = self.path(file);
        let id = match self.current[file] {
            Some(id) if path.exists() => id,
            _ => {
                self.end_life(file, false);
                File::create(&path).unwrap();
                self.new_life(file)
            }
        };
        let mut text = String::new();
        let life = &mut self.lives[id];
        if let Some((written, whole)) = life.partial.take() {
            text.push_str(&whole[written.len()..]);
            text.push('\n');
            life.complete.push(whole);
        }
        for _ in 0..lines {
            let line = Self::text(id, life.complete.len());
            text.push_str(&line);
            text.push('\n');
            life.complete.push(line);
        }
        if partial {
            let whole = Self::text(id, life.complete.len());
            let written = whole[..whole.len() / 2].to_string();
            text.push_str(&written);
            life.partial = Some((written, whole));
        }
        append(&path, &text);
    }

    fn rotated_name(&mut self, file: usize) -> PathBuf {
        self.rotations += 1;
        let mut name = self.path(file).into_os_string();
        name.push(format!(".{}", self.rotations));
        PathBuf::from(name)
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write {
                file,
                lines,
                partial,
            } => self.write(file, lines, partial),
            Op::RotateCreate(file) => {
                let path = self.path(file);
                if let Some(id) = self.current[file].filter(|_| path.exists()) {
                    let to = self.rotated_name(file);
                    std::fs::rename(&path, to).unwrap();
                    File::create(&path).unwrap();
                    let opened = self.lives[id].opened;
                    self.end_life(file, opened);
                    self.new_life(file);
                }
            }
            Op::CopyTruncate(file) => {
                let path = self.path(file);
                if let Some(id) = self.current[file].filter(|_| path.exists()) {
                    let to = self.rotated_name(file);
                    std::fs::copy(&path, to).unwrap();
                    OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                    let seen = self.lives[id].seen;
                    self.end_life(file, seen);
                    self.new_life(file);
                }
            }
            Op::Delete(file) => {
                let path = self.path(file);
                if path.exists() {
                    std::fs::remove_file(&path).unwrap();
                }
                self.end_life(file, false);
            }
            Op::Poll => self.poll(),
            Op::Restart => {
                if let Some(t) = self.tailer.take() {
                    t.checkpoint().unwrap();
                }
            }
        }
    }

    fn poll(&mut self) {
        let ck = self.dir.path().join("state").join("tail.json");
        if self.tailer.is_none() {
            let mut opts = options();
            opts.max_line = self.max_line;
            self.tailer = Some(Tailer::with_options(self.sources(), ck, opts));
        }
        let Some(t) = self.tailer.as_mut() else {
            return;
        };
        poll(t, &mut self.delivered);
        let tracked = t.tracked();
        for file in 0..3 {
            let Some(id) = self.current[file] else {
                continue;
            };
            let path = self.path(file);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if let Some(tf) = tracked
                .iter()
                .find(|tf| tf.path == path && !tf.rotated && tf.ino == meta.ino())
            {
                self.lives[id].opened = true;
                if tf.consumed > 0 {
                    self.lives[id].seen = true;
                }
            }
        }
    }

    /// Completes open lines, lets the tailer catch up, and compares with the model.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        for file in 0..3 {
            if let Some(id) = self.current[file] {
                if self.lives[id].partial.is_some() && self.path(file).exists() {
                    self.write(file, 0, false);
                }
            }
        }
        for _ in 0..3 {
            self.poll();
        }
        let mut by_life: Vec<Vec<&(LogSource, PathBuf, u64, String)>> =
            (0..self.lives.len()).map(|_| Vec::new()).collect();
        for d in &self.delivered {
            let id: usize =
                d.3.strip_prefix('L')
                    .and_then(|rest| rest.split(':').next())
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| TestCaseError::fail(format!("unknown line {:?}", d.3)))?;
            prop_assert!(id < self.lives.len(), "line of no lifetime: {:?}", d.3);
            by_life[id].push(d);
        }
        for (id, life) in self.lives.iter().enumerate() {
            let mut expected = life.complete.clone();
            if let Some((written, _)) = &life.partial {
                prop_assert!(life.ended, "open line left in a live file");
                expected.push(written.clone());
            }
            let cap = self.max_line;
            let expected: Vec<String> = expected
                .into_iter()
                .map(|l| l[..l.len().min(cap)].to_string())
                .collect();
            let got: Vec<String> = by_life[id].iter().map(|d| d.3.clone()).collect();
            if life.exact {
                prop_assert_eq!(&got, &expected, "lifetime {} (file {})", id, life.file);
            } else {
                prop_assert!(
                    expected.starts_with(&got),
                    "lifetime {} may lose lines but must deliver a prefix: got {:?}, expected {:?}",
                    id,
                    got,
                    expected
                );
            }
            for (i, d) in by_life[id].iter().enumerate() {
                prop_assert_eq!(d.2, i as u64 + 1, "line number in lifetime {}", id);
                prop_assert_eq!(d.0, Self::source(life.file));
                prop_assert_eq!(&d.1, &self.path(life.file));
            }
        }
        Ok(())
    }
}

proptest! {
    // TAIL_MODEL_CASES=5000 for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("TAIL_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128),
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn every_complete_line_arrives_exactly_once_in_order(
        ops in proptest::collection::vec(op(), 1..40),
        max_line in prop_oneof![Just(4096usize), 12usize..40],
    ) {
        let mut h = Harness::new(max_line);
        for op in &ops {
            h.apply(op);
        }
        h.finish()?;
    }
}
