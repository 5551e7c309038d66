//! The log tailer: follows every configured or discovered log file (paths and globs) and hands
//! each complete line to a callback exactly once, across logrotate and restarts.
//!
//! Polling is the truth (a file's device, inode, size, mtime and a fingerprint of its first bytes);
//! the daemon uses filesystem notifications only to wake up early. What it handles:
//!
//! - **rename + create** (logrotate's default): the old file is kept open and drained until it has
//!   stopped growing and the writer has reopened (new data at the path, or `rotate_grace` passed);
//!   the new file at the path is read from its start meanwhile.
//! - **copytruncate**: seen as the size dropping below the read offset, or the head fingerprint
//!   changing. What was written between the last read and the copy is recovered from the copy (a
//!   sibling file whose head has the same fingerprint); then the file is read from its start.
//! - files that vanish and come back, and new files matching a glob (read from their start).
//! - restarts: [`Tailer::checkpoint`] stores offsets and fingerprints ([`super::checkpoint`]); a
//!   new tailer resumes each file where the last delivered line ended, finds files rotated while
//!   it was down by their inode among the path's siblings, and recovers copytruncated content.
//! - long lines are cut at `max_line` bytes; a partial line is buffered until its newline (a
//!   rotated file's unterminated last line is delivered when the file is closed); NUL bytes at
//!   the start of a line (the hole a writer without `O_APPEND` leaves after copytruncate) are
//!   dropped.
//!
//! It reads real files with `std::fs` (the daemon is always live), reusing one read buffer.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::checkpoint::{self, Checkpoint, CheckpointError, FileCheckpoint};
use crate::event::LogSource;

/// How many bytes of a file's start the fingerprint covers (at most).
const HEAD_MAX: u64 = 256;
/// Files up to this size have their lines counted when reading starts at their end, so line
/// numbers stay true; beyond it numbering is relative to where reading started.
const COUNT_LINES_MAX: u64 = 256 << 20;
const COMPRESSED: &[&str] = &[".gz", ".xz", ".bz2", ".zst", ".lz4", ".zip"];

/// One log to follow: its kind and a path or glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailSource {
    pub source: LogSource,
    /// An absolute path, or a glob such as `/var/log/nginx/*access.log`.
    pub pattern: String,
}

/// Tuning knobs; the defaults suit the daemon.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Longer lines are cut to this many bytes.
    pub max_line: usize,
    /// How long a rotated file that stopped growing is kept open when nothing shows the writer
    /// reopened (no data in the new file yet).
    pub rotate_grace: Duration,
    /// At most this many bytes are read per file per poll, so one flooded log cannot starve
    /// the others; the rest is read on the next poll.
    pub max_read_per_poll: u64,
    /// On the very first start (no checkpoint), start existing files at their end instead of
    /// reading their whole history. Files created later are always read from their start.
    pub start_at_end_without_checkpoint: bool,
    /// At most this many files are open at once (a glob matching thousands of files must not
    /// exhaust the daemon's descriptors); files beyond it are reported in the poll's errors.
    pub max_files: usize,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            max_line: 16 * 1024,
            rotate_grace: Duration::from_secs(5),
            max_read_per_poll: 8 << 20,
            start_at_end_without_checkpoint: true,
            max_files: 512,
        }
    }
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Files open (followed or being drained) after the poll.
    pub files: usize,
    pub lines: u64,
    pub bytes: u64,
    /// Files seen renamed or deleted away from their path.
    pub rotations: u64,
    /// Files seen truncated in place.
    pub truncations: u64,
    /// Lines cut at `max_line`.
    pub long_lines: u64,
    /// Files that could not be read (kept and retried on the next poll).
    pub errors: Vec<(PathBuf, String)>,
}

/// What the tailer follows for one path (for tests and `/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedFile {
    pub path: PathBuf,
    pub source: LogSource,
    pub dev: u64,
    pub ino: u64,
    /// Bytes read (including a buffered partial line).
    pub consumed: u64,
    /// True for a rotated file still being drained.
    pub rotated: bool,
}

/// One open file and where reading stands in it.
#[derive(Debug)]
struct Reader {
    file: File,
    dev: u64,
    ino: u64,
    /// Bytes consumed (delivered lines plus the buffered partial line).
    offset: u64,
    /// The byte after the last delivered line.
    committed: u64,
    /// Lines delivered (the next line's number is `line + 1`).
    line: u64,
    partial: Vec<u8>,
    /// The buffered partial line was cut at `max_line`.
    cut: bool,
    head_len: u64,
    head_hash: u64,
    /// Size and mtime when last looked at: unchanged means nothing to do.
    seen_size: u64,
    seen_mtime: (i64, i64),
    /// When the file last grew (for closing drained rotated files).
    last_growth: Instant,
}

impl Reader {
    fn open(path: &Path) -> io::Result<(Reader, Metadata)> {
        // Non-blocking open and fstat first: a FIFO in a log's place cannot hang the work loop.
        let file = crate::host::live::open_regular_io(path)?;
        let meta = file.metadata()?;
        let reader = Reader {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            offset: 0,
            committed: 0,
            line: 0,
            partial: Vec::new(),
            cut: false,
            head_len: 0,
            head_hash: FNV_OFFSET,
            seen_size: u64::MAX,
            seen_mtime: (0, 0),
            last_growth: Instant::now(),
        };
        Ok((reader, meta))
    }

    fn from_checkpoint(path: &Path, entry: &FileCheckpoint) -> io::Result<Reader> {
        let (mut reader, _) = Reader::open(path)?;
        reader.offset = entry.offset;
        reader.committed = entry.offset;
        reader.line = entry.line;
        reader.head_len = entry.head_len;
        reader.head_hash = entry.head_hash;
        Ok(reader)
    }

    /// Starts over at the beginning of the file (after a truncation).
    fn reset(&mut self) {
        self.offset = 0;
        self.committed = 0;
        self.line = 0;
        self.partial.clear();
        self.cut = false;
        self.head_len = 0;
        self.head_hash = FNV_OFFSET;
        self.seen_size = u64::MAX;
    }

    /// Does the file still start with the bytes the fingerprint was taken from?
    fn head_matches(&self) -> bool {
        self.head_len == 0
            || head_hash(&self.file, self.head_len).is_ok_and(|hash| hash == self.head_hash)
    }

    /// Extends the fingerprint over what has been consumed, up to [`HEAD_MAX`] bytes.
    fn update_head(&mut self) {
        let want = self.offset.min(HEAD_MAX);
        if want > self.head_len {
            if let Ok(hash) = head_hash(&self.file, want) {
                self.head_len = want;
                self.head_hash = hash;
            }
        }
    }

    fn tracked(&self, path: &Path, source: LogSource, rotated: bool) -> TrackedFile {
        TrackedFile {
            path: path.to_path_buf(),
            source,
            dev: self.dev,
            ino: self.ino,
            consumed: self.offset,
            rotated,
        }
    }

    fn checkpoint(&self, path: &Path, source: LogSource, rotated: bool) -> FileCheckpoint {
        FileCheckpoint {
            path: path.to_path_buf(),
            source,
            dev: self.dev,
            ino: self.ino,
            offset: self.committed,
            line: self.line,
            head_len: self.head_len,
            head_hash: self.head_hash,
            rotated,
        }
    }
}

/// Per-poll context shared by the read helpers.
struct Ctx<'a, F> {
    /// Files open now (kept up to date as files are opened and closed).
    open: usize,
    buf: &'a mut Vec<u8>,
    options: &'a TailOptions,
    stats: &'a mut PollStats,
    deliver: &'a mut F,
}

impl<F: FnMut(LogSource, &Path, u64, &[u8])> Ctx<'_, F> {
    /// Reads new bytes of `reader` (up to `limit`), delivering every complete line. Returns the
    /// number of bytes read.
    fn read(
        &mut self,
        reader: &mut Reader,
        source: LogSource,
        path: &Path,
        limit: u64,
    ) -> io::Result<u64> {
        let mut total = 0u64;
        while total < limit {
            let n = match reader.file.read_at(self.buf, reader.offset) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            let chunk_start = reader.offset;
            reader.offset += n as u64;
            total += n as u64;
            let chunk = &self.buf[..n];
            let mut start = 0usize;
            for nl in memchr::memchr_iter(b'\n', chunk) {
                let mut piece = &chunk[start..nl];
                if reader.partial.is_empty() && !reader.cut {
                    piece = trim_nul(piece);
                }
                reader.line += 1;
                reader.committed = chunk_start + nl as u64 + 1;
                if reader.partial.is_empty() && !reader.cut {
                    let line = cap(piece, self.options.max_line, &mut self.stats.long_lines);
                    (self.deliver)(source, path, reader.line, strip_cr(line));
                } else {
                    push_capped(
                        &mut reader.partial,
                        piece,
                        self.options.max_line,
                        &mut reader.cut,
                    );
                    if reader.cut {
                        self.stats.long_lines += 1;
                    }
                    (self.deliver)(source, path, reader.line, strip_cr(&reader.partial));
                    reader.partial.clear();
                    reader.cut = false;
                }
                self.stats.lines += 1;
                start = nl + 1;
            }
            if start < n {
                let mut rest = &chunk[start..];
                if reader.partial.is_empty() && !reader.cut {
                    rest = trim_nul(rest);
                }
                push_capped(
                    &mut reader.partial,
                    rest,
                    self.options.max_line,
                    &mut reader.cut,
                );
            }
        }
        self.stats.bytes += total;
        if total > 0 {
            reader.last_growth = Instant::now();
            reader.update_head();
        }
        Ok(total)
    }

    /// Reads what is new in `reader`'s file when its size or mtime changed, first noticing a
    /// truncation (size below the offset, or a different head). Returns the bytes read.
    fn service(
        &mut self,
        reader: &mut Reader,
        source: LogSource,
        path: &Path,
        limit: u64,
        others: &[(u64, u64)],
    ) -> io::Result<u64> {
        let m = reader.file.metadata()?;
        let size = m.len();
        let mtime = (m.mtime(), m.mtime_nsec());
        if size == reader.seen_size && mtime == reader.seen_mtime {
            return Ok(0);
        }
        if size < reader.offset || (reader.offset > 0 && !reader.head_matches()) {
            self.stats.truncations += 1;
            self.recover_from_copy(reader, source, path, others);
            reader.reset();
        }
        let n = self.read(reader, source, path, limit)?;
        if n < limit {
            // All read: nothing to do until the file changes. (Otherwise stay stale: more next poll.)
            reader.seen_size = size;
            reader.seen_mtime = mtime;
        }
        Ok(n)
    }

    /// Delivers a buffered unterminated last line (the file is being closed).
    fn flush(&mut self, reader: &mut Reader, source: LogSource, path: &Path) {
        if reader.offset > reader.committed {
            reader.line += 1;
            if reader.cut {
                self.stats.long_lines += 1;
            }
            (self.deliver)(source, path, reader.line, strip_cr(&reader.partial));
            self.stats.lines += 1;
            reader.partial.clear();
            reader.cut = false;
            reader.committed = reader.offset;
        }
    }

    /// After a truncation: reads what `reader` had not read yet from the copy logrotate made
    /// (a sibling with the same head), then delivers the unterminated last line, if any.
    fn recover_from_copy(
        &mut self,
        reader: &mut Reader,
        source: LogSource,
        path: &Path,
        others: &[(u64, u64)],
    ) {
        if reader.head_len > 0 {
            if let Some(copy) = find_sibling(path, |meta, file| {
                let id = (meta.dev(), meta.ino());
                // `>=`: the newest copy wins even with nothing new in it, so an older
                // rotation whose first lines look the same is never read from our offset.
                meta.len() >= reader.offset
                    && id != (reader.dev, reader.ino)
                    && !others.contains(&id)
                    && head_hash(file, reader.head_len).is_ok_and(|h| h == reader.head_hash)
            }) {
                // Read from the copy with the same position, line count and partial line.
                let original = std::mem::replace(&mut reader.file, copy);
                if let Err(err) = self.read(reader, source, path, u64::MAX) {
                    self.stats
                        .errors
                        .push((path.to_path_buf(), err.to_string()));
                }
                reader.file = original;
            }
        }
        self.flush(reader, source, path);
    }
}

/// Follows log files; see the module docs.
#[derive(Debug)]
pub struct Tailer {
    sources: Vec<TailSource>,
    globs: Vec<Option<glob::Pattern>>,
    checkpoint_path: PathBuf,
    options: TailOptions,
    watched: BTreeMap<PathBuf, Watched>,
    /// Entries of the loaded checkpoint, applied at the first poll.
    pending: Vec<FileCheckpoint>,
    /// Paths the checkpoint knew: a file found there is new, read from its start.
    known: BTreeSet<PathBuf>,
    /// When the loaded checkpoint was written (Unix ms); `None` on a first start.
    saved_at: Option<i64>,
    load_error: Option<CheckpointError>,
    polled: bool,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Watched {
    source: LogSource,
    current: Option<Reader>,
    draining: Vec<Reader>,
}

impl Tailer {
    /// A tailer over `sources` that keeps its checkpoint at `checkpoint_path`, with the default
    /// options. A checkpoint that cannot be read is reported by [`Tailer::load_error`] and the
    /// tailer starts as on a first start.
    pub fn new(sources: Vec<TailSource>, checkpoint_path: impl Into<PathBuf>) -> Tailer {
        Tailer::with_options(sources, checkpoint_path, TailOptions::default())
    }

    pub fn with_options(
        sources: Vec<TailSource>,
        checkpoint_path: impl Into<PathBuf>,
        options: TailOptions,
    ) -> Tailer {
        let checkpoint_path = checkpoint_path.into();
        let globs = sources
            .iter()
            .map(|s| {
                if is_glob(&s.pattern) {
                    glob::Pattern::new(&s.pattern).ok()
                } else {
                    None
                }
            })
            .collect();
        let (loaded, load_error) = match checkpoint::load(&checkpoint_path) {
            Ok(loaded) => (loaded, None),
            Err(err) => (None, Some(err)),
        };
        let mut tailer = Tailer {
            sources,
            globs,
            checkpoint_path,
            options,
            watched: BTreeMap::new(),
            pending: Vec::new(),
            known: BTreeSet::new(),
            saved_at: None,
            load_error,
            polled: false,
            buf: Vec::new(),
        };
        if let Some(loaded) = loaded {
            tailer.saved_at = Some(loaded.saved_at_ms);
            // Followed files first, so a path's current file wins over rotated ones.
            let mut files: Vec<FileCheckpoint> = loaded
                .files
                .into_iter()
                .filter(|f| tailer.source_of(&f.path).is_some())
                .collect();
            files.sort_by_key(|f| f.rotated);
            tailer.known = files.iter().map(|f| f.path.clone()).collect();
            tailer.pending = files;
        }
        let read_size = tailer.options.max_line.clamp(64 * 1024, 1 << 20);
        tailer.buf = vec![0; read_size];
        tailer
    }

    /// Why the checkpoint could not be loaded, if it could not.
    pub fn load_error(&self) -> Option<&CheckpointError> {
        self.load_error.as_ref()
    }

    /// The patterns followed.
    pub fn sources(&self) -> &[TailSource] {
        &self.sources
    }

    /// Every open file (for tests and the status page).
    pub fn tracked(&self) -> Vec<TrackedFile> {
        let mut out = Vec::new();
        for (path, w) in &self.watched {
            if let Some(r) = &w.current {
                out.push(r.tracked(path, w.source, false));
            }
            for r in &w.draining {
                out.push(r.tracked(path, w.source, true));
            }
        }
        for entry in &self.pending {
            out.push(TrackedFile {
                path: entry.path.clone(),
                source: entry.source,
                dev: entry.dev,
                ino: entry.ino,
                consumed: entry.offset,
                rotated: entry.rotated,
            });
        }
        out
    }

    /// Reads every followed file's new lines and hands each to `deliver(source, path, line_no,
    /// line)`: `line_no` is 1-based within the file's lifetime, `line` has no newline. Problems
    /// with single files are counted in [`PollStats::errors`], never fatal.
    pub fn poll<F>(&mut self, deliver: &mut F) -> io::Result<PollStats>
    where
        F: FnMut(LogSource, &Path, u64, &[u8]),
    {
        let mut stats = PollStats::default();
        let mut buf = std::mem::take(&mut self.buf);
        {
            let open = self
                .watched
                .values()
                .map(|w| usize::from(w.current.is_some()) + w.draining.len())
                .sum();
            let mut ctx = Ctx {
                open,
                buf: &mut buf,
                options: &self.options,
                stats: &mut stats,
                deliver,
            };
            let pending = std::mem::take(&mut self.pending);
            for entry in pending {
                restore(&mut self.watched, &mut ctx, entry);
            }
            let paths = expand(&self.sources);
            for (path, source) in paths {
                self.watched.entry(path).or_insert(Watched {
                    source,
                    current: None,
                    draining: Vec::new(),
                });
            }
            let first = !self.polled;
            for (path, w) in &mut self.watched {
                let start_at_end = first
                    && self.options.start_at_end_without_checkpoint
                    && !self.known.contains(path);
                poll_path(path, w, &mut ctx, start_at_end, self.saved_at);
            }
        }
        self.buf = buf;
        self.polled = true;
        // Forget paths that no longer exist, match nothing and have nothing left to drain.
        let keep: Vec<bool> = self
            .watched
            .iter()
            .map(|(path, w)| {
                w.current.is_some() || !w.draining.is_empty() || self.is_plain_source(path)
            })
            .collect();
        let mut keep = keep.into_iter();
        self.watched.retain(|_, _| keep.next().unwrap_or(true));
        stats.files = self
            .watched
            .values()
            .map(|w| usize::from(w.current.is_some()) + w.draining.len())
            .sum();
        Ok(stats)
    }

    /// Writes the checkpoint (atomically).
    pub fn checkpoint(&self) -> Result<(), CheckpointError> {
        let mut files = Vec::new();
        for (path, w) in &self.watched {
            if let Some(r) = &w.current {
                files.push(r.checkpoint(path, w.source, false));
            }
            for r in &w.draining {
                files.push(r.checkpoint(path, w.source, true));
            }
        }
        // Entries not restored yet (no poll since the start) are kept as they were.
        files.extend(self.pending.iter().cloned());
        let saved_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        checkpoint::store(
            &self.checkpoint_path,
            &Checkpoint {
                version: checkpoint::VERSION,
                saved_at_ms,
                files,
            },
        )
    }

    fn source_of(&self, path: &Path) -> Option<LogSource> {
        self.sources
            .iter()
            .zip(&self.globs)
            .find(|(s, g)| match g {
                Some(g) => g.matches_path(path),
                None => Path::new(&s.pattern) == path,
            })
            .map(|(s, _)| s.source)
    }

    fn is_plain_source(&self, path: &Path) -> bool {
        self.sources
            .iter()
            .any(|s| !is_glob(&s.pattern) && Path::new(&s.pattern) == path)
    }
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// The paths the patterns name now: plain paths always (their file may come back), globs by
/// what matches (compressed files never).
fn expand(sources: &[TailSource]) -> Vec<(PathBuf, LogSource)> {
    let mut out = Vec::new();
    for s in sources {
        if is_glob(&s.pattern) {
            if let Ok(paths) = glob::glob(&s.pattern) {
                for path in paths.flatten() {
                    let name = path.to_string_lossy();
                    if !COMPRESSED.iter().any(|ext| name.ends_with(ext)) && path.is_file() {
                        out.push((path, s.source));
                    }
                }
            }
        } else {
            out.push((PathBuf::from(&s.pattern), s.source));
        }
    }
    out
}

/// Applies one checkpoint entry: resumes the file at its path, or finds it among the path's
/// siblings when it was rotated while the agent was down.
fn restore<F: FnMut(LogSource, &Path, u64, &[u8])>(
    watched: &mut BTreeMap<PathBuf, Watched>,
    ctx: &mut Ctx<'_, F>,
    entry: FileCheckpoint,
) {
    let path = entry.path.clone();
    let w = watched.entry(path.clone()).or_insert(Watched {
        source: entry.source,
        current: None,
        draining: Vec::new(),
    });
    let same = |meta: &Metadata| meta.dev() == entry.dev && meta.ino() == entry.ino;
    match std::fs::metadata(&path) {
        Ok(meta) if same(&meta) && w.current.is_none() => {
            let Ok(mut reader) = Reader::from_checkpoint(&path, &entry) else {
                return;
            };
            if meta.len() < reader.offset || !reader.head_matches() {
                // Truncated while the agent was down.
                ctx.stats.truncations += 1;
                let ids: Vec<(u64, u64)> = w.draining.iter().map(|r| (r.dev, r.ino)).collect();
                ctx.recover_from_copy(&mut reader, w.source, &path, &ids);
                reader.reset();
            }
            w.current = Some(reader);
        }
        _ => {
            // Rotated away (renamed, maybe compressed or deleted since): look for the same
            // inode among the path's siblings, or else (truncated, then rotated) for a copy
            // with the same head.
            let head = |file: &File| {
                entry.head_len > 0
                    && head_hash(file, entry.head_len).is_ok_and(|h| h == entry.head_hash)
            };
            let found = find_sibling(&path, |meta, file| {
                same(meta) && meta.len() >= entry.offset && (entry.head_len == 0 || head(file))
            })
            .or_else(|| find_sibling(&path, |meta, file| meta.len() >= entry.offset && head(file)));
            if let Some(file) = found {
                let Ok(meta) = file.metadata() else { return };
                let reader = Reader {
                    file,
                    dev: meta.dev(),
                    ino: meta.ino(),
                    offset: entry.offset,
                    committed: entry.offset,
                    line: entry.line,
                    partial: Vec::new(),
                    cut: false,
                    head_len: entry.head_len,
                    head_hash: entry.head_hash,
                    seen_size: u64::MAX,
                    seen_mtime: (0, 0),
                    last_growth: Instant::now(),
                };
                w.draining.push(reader);
            }
        }
    }
}

/// One poll of one path: notices rotation and truncation, reads new lines, drains and closes
/// rotated files.
fn poll_path<F: FnMut(LogSource, &Path, u64, &[u8])>(
    path: &Path,
    w: &mut Watched,
    ctx: &mut Ctx<'_, F>,
    start_at_end: bool,
    saved_at: Option<i64>,
) {
    let limit = ctx.options.max_read_per_poll;
    let meta = std::fs::metadata(path).ok().filter(Metadata::is_file);
    // A current file that is no longer at the path was renamed or deleted: drain it.
    if let Some(reader) = &w.current {
        let moved = match &meta {
            Some(m) => m.dev() != reader.dev || m.ino() != reader.ino,
            None => true,
        };
        if moved {
            if let Some(mut reader) = w.current.take() {
                reader.last_growth = Instant::now();
                w.draining.push(reader);
                ctx.stats.rotations += 1;
            }
        }
    }
    if w.current.is_none() && meta.is_some() && ctx.open >= ctx.options.max_files {
        ctx.stats.errors.push((
            path.to_path_buf(),
            format!(
                "not followed: already {} files open (the limit)",
                ctx.options.max_files
            ),
        ));
    } else if w.current.is_none() {
        if let Some(meta) = &meta {
            match Reader::open(path) {
                Ok((mut reader, opened)) if opened.ino() == meta.ino() => {
                    let born_after = saved_at.is_some_and(|saved| {
                        opened
                            .created()
                            .ok()
                            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                            .is_some_and(|t| t.as_millis() as i64 > saved)
                    });
                    if start_at_end && !born_after {
                        let size = opened.len();
                        // Start after the last complete line; count lines for true numbers.
                        let (lines, end) = count_lines(&reader.file, size);
                        reader.offset = end;
                        reader.committed = end;
                        reader.line = lines;
                        reader.update_head();
                    }
                    w.current = Some(reader);
                    ctx.open += 1;
                }
                Ok(_) => {} // replaced between stat and open: next poll
                Err(err) => ctx.stats.errors.push((path.to_path_buf(), err.to_string())),
            }
        }
    }
    // Files of this path's other lifetimes are never the copy of a truncated one.
    let ids: Vec<(u64, u64)> = w
        .current
        .iter()
        .chain(&w.draining)
        .map(|r| (r.dev, r.ino))
        .collect();
    if let Some(reader) = &mut w.current {
        if let Err(err) = ctx.service(reader, w.source, path, limit, &ids) {
            ctx.stats.errors.push((path.to_path_buf(), err.to_string()));
        }
    }
    // Drain rotated files; close one once it stopped growing and the writer moved on.
    let writer_moved = w.current.as_ref().is_some_and(|r| r.offset > 0);
    let grace = ctx.options.rotate_grace;
    let mut i = 0;
    while i < w.draining.len() {
        let reader = &mut w.draining[i];
        let read = match ctx.service(reader, w.source, path, limit, &ids) {
            Ok(n) => n,
            Err(err) => {
                ctx.stats.errors.push((path.to_path_buf(), err.to_string()));
                0
            }
        };
        if read == 0 && (writer_moved || reader.last_growth.elapsed() >= grace) {
            let mut reader = w.draining.remove(i);
            ctx.flush(&mut reader, w.source, path);
            ctx.open = ctx.open.saturating_sub(1);
        } else {
            i += 1;
        }
    }
}

/// Counts the complete lines in the first `size` bytes; returns the count and the offset after
/// the last newline. Past [`COUNT_LINES_MAX`] it only finds the last newline.
fn count_lines(file: &File, size: u64) -> (u64, u64) {
    let mut buf = vec![0u8; 64 * 1024];
    if size > COUNT_LINES_MAX {
        // Find the last newline near the end.
        let start = size.saturating_sub(buf.len() as u64);
        let want = (size - start) as usize;
        let n = file.read_at(&mut buf[..want], start).unwrap_or(0);
        let end = memchr::memrchr(b'\n', &buf[..n]).map_or(start, |i| start + i as u64 + 1);
        return (0, end);
    }
    let (mut lines, mut end, mut pos) = (0u64, 0u64, 0u64);
    while pos < size {
        let want = ((size - pos) as usize).min(buf.len());
        let n = match file.read_at(&mut buf[..want], pos) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for i in memchr::memchr_iter(b'\n', &buf[..n]) {
            lines += 1;
            end = pos + i as u64 + 1;
        }
        pos += n as u64;
    }
    (lines, end)
}

/// The sibling of `path` (same directory, name starting with the file name: `x.log.1`,
/// `x.log-20261124`) that is not compressed and satisfies `pick`, opened; when several do, the
/// most recently modified (a copy logrotate just made is newer than older rotations, whose
/// first lines can look the same).
fn find_sibling(path: &Path, mut pick: impl FnMut(&Metadata, &File) -> bool) -> Option<File> {
    let dir = path.parent()?;
    let base = path.file_name()?.to_str()?;
    let entries = std::fs::read_dir(dir).ok()?;
    let mut best: Option<(File, (i64, i64))> = None;
    for entry in entries.flatten().take(10_000) {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == base
            || !name.starts_with(base)
            || COMPRESSED.iter().any(|ext| name.ends_with(ext))
        {
            continue;
        }
        let Ok(file) = crate::host::live::open_regular_io(&entry.path()) else {
            continue;
        };
        let Ok(meta) = file.metadata() else { continue };
        let mtime = (meta.mtime(), meta.mtime_nsec());
        if meta.is_file()
            && best.as_ref().is_none_or(|(_, best)| mtime > *best)
            && pick(&meta, &file)
        {
            best = Some((file, mtime));
        }
    }
    best.map(|(file, _)| file)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over the first `len` bytes of the file (stable across versions, unlike std's hasher).
fn head_hash(file: &File, len: u64) -> io::Result<u64> {
    let mut buf = [0u8; HEAD_MAX as usize];
    let len = len.min(HEAD_MAX) as usize;
    file.read_exact_at(&mut buf[..len], 0)?;
    Ok(buf[..len].iter().fold(FNV_OFFSET, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
    }))
}

fn cap<'a>(line: &'a [u8], max: usize, long_lines: &mut u64) -> &'a [u8] {
    if line.len() > max {
        *long_lines += 1;
        &line[..max]
    } else {
        line
    }
}

fn push_capped(partial: &mut Vec<u8>, bytes: &[u8], max: usize, cut: &mut bool) {
    let room = max.saturating_sub(partial.len());
    if bytes.len() > room {
        *cut = true;
    }
    partial.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// Drops the NUL bytes a writer without `O_APPEND` leaves at the start of a copytruncated file
/// (it keeps writing at its old offset, so the file starts with a hole).
fn trim_nul(bytes: &[u8]) -> &[u8] {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    &bytes[zeros..]
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests;
