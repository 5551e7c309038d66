//! Reading log files through the host seam: plain or gzip (by magic bytes), rotated siblings
//! picked by modification time, big newline- and entry-aligned chunks parsed in parallel (one
//! worker thread per core), merged in file order. Memory is bounded by the chunk size times the
//! buffers in flight (`2 × cores + 2`), and by [`LINE_CAP`] per line: a 20 MB line is cut, never
//! buffered whole.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::Arc;

use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::access::{cap_clients, clients_text, merge_clients, AccessAcc, AccessFormat, ClientMap};
use super::{
    detect_source, starts_entry, Class, LineParser, LogFile, Window, LINE_CAP, MAX_KEEP_ERRORS,
    MAX_KEEP_EVENTS, MAX_KEEP_PER_RULE,
};
use crate::event::{Event, Evidence, FileSummary, LogSource, Response, ResponseStats, RuleTally};
use crate::rules::{CaptureMemo, MatchCache, RuleSet};
use origin_host::Host;

/// Bytes per chunk handed to one parsing task.
const CHUNK: usize = 2 << 20;
/// Events built per rule and chunk (the newest); the others are tallied only. Spreads the kept
/// samples over time and keeps the cost of a flood of one rule low. A big file builds fewer per
/// chunk, down to [`MIN_KEEP_PER_RULE_CHUNK`], so that its chunks together build about
/// [`MAX_KEEP_PER_RULE`] per rule, the most that is kept in the end.
const KEEP_PER_RULE_CHUNK: usize = 50;
const MIN_KEEP_PER_RULE_CHUNK: usize = 20;

/// Calls `f(line_no, line)` for every line of `r` (without `\n` and a trailing `\r`), each cut
/// at [`LINE_CAP`] bytes.
pub(crate) fn for_each_line<R: BufRead>(
    mut r: R,
    mut f: impl FnMut(u64, &[u8]),
) -> std::io::Result<()> {
    let mut line: Vec<u8> = Vec::new();
    let mut n = 0u64;
    let mut pending = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            if pending {
                n += 1;
                f(n, strip_cr(&line));
            }
            return Ok(());
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        let room = LINE_CAP.saturating_sub(line.len());
        line.extend_from_slice(&buf[..take.min(room)]);
        pending = true;
        r.consume(if done { take + 1 } else { take });
        if done {
            n += 1;
            f(n, strip_cr(&line));
            line.clear();
            pending = false;
        }
    }
}

fn strip_cr(l: &[u8]) -> &[u8] {
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// One read buffer of [`CHUNK`] bytes, in anonymous memory advised for huge pages: where the
/// kernel has them (transparent huge pages on `madvise`, the Debian default), a buffer is one
/// 2 MiB page, one page fault instead of 512. On a VM a fault costs 2-3 µs: the read buffers'
/// faults were a tenth of an error-log scan's CPU. Elsewhere it is small pages, as a `Vec` would
/// be; a heap buffer when the mapping fails, and for the one-byte-longer last chunk of a file
/// whose final line has no newline.
enum Buffer {
    Mapped(memmap2::MmapMut),
    Heap(Vec<u8>),
}

impl Buffer {
    /// A zeroed buffer of `CHUNK` bytes.
    fn new() -> Self {
        match memmap2::MmapMut::map_anon(CHUNK) {
            Ok(map) => {
                // Only advice: where it is refused, the buffer is small pages.
                let _ = map.advise(memmap2::Advice::HugePage);
                Buffer::Mapped(map)
            }
            Err(_) => Buffer::Heap(vec![0; CHUNK]),
        }
    }
}

impl std::ops::Deref for Buffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Buffer::Mapped(m) => m,
            Buffer::Heap(v) => v,
        }
    }
}

impl std::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Buffer::Mapped(m) => m,
            Buffer::Heap(v) => v,
        }
    }
}

/// A chunk of whole lines: `data[..len]`.
struct Chunk {
    data: Buffer,
    len: usize,
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// Splits a stream into newline-aligned chunks (entry-aligned for multi-line formats). Buffers
/// are initialized once and recycled, so reading costs no allocation or page faults per chunk.
struct Chunker<'a> {
    r: Box<dyn Read + Send + 'a>,
    /// Always `CHUNK` bytes long; `filled` of them hold data.
    buf: Buffer,
    filled: usize,
    pool: Vec<Buffer>,
    /// Buffers made so far (`buf` included): the reader waits for one back at its limit.
    buffers: usize,
    eof: bool,
    skipping: bool,
    truncated: u64,
    error: Option<String>,
    source: Option<LogSource>,
}

impl<'a> Chunker<'a> {
    fn new(r: Box<dyn Read + Send + 'a>) -> Self {
        Chunker {
            r,
            buf: Buffer::new(),
            filled: 0,
            pool: Vec::new(),
            buffers: 1,
            eof: false,
            skipping: false,
            truncated: 0,
            error: None,
            source: None,
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[..self.filled]
    }

    fn spare(&mut self) -> Buffer {
        self.pool.pop().unwrap_or_else(|| {
            self.buffers += 1;
            Buffer::new()
        })
    }

    /// Gives a merged chunk's buffer back for reuse.
    fn recycle(&mut self, chunk: Chunk) {
        if chunk.data.len() == CHUNK {
            self.pool.push(chunk.data);
        } else {
            // Grown by the final newline: a buffer of another size is not reused.
            self.buffers -= 1;
        }
    }

    /// Reads until the buffer is full or the stream ends.
    fn fill(&mut self) {
        while !self.eof && self.filled < CHUNK {
            match self.r.read(&mut self.buf[self.filled..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error = Some(e.to_string());
                    self.eof = true;
                }
            }
            if self.skipping {
                // Dropping the rest of an over-long line.
                match memchr::memchr(b'\n', &self.buf[..self.filled]) {
                    Some(i) => {
                        self.buf.copy_within(i + 1..self.filled, 0);
                        self.filled -= i + 1;
                        self.skipping = false;
                    }
                    None => self.filled = 0,
                }
            }
        }
    }

    fn next_chunk(&mut self) -> Option<Chunk> {
        self.fill();
        if self.filled == 0 {
            return None;
        }
        if self.eof {
            let spare = self.spare();
            let mut data = std::mem::replace(&mut self.buf, spare);
            let mut len = std::mem::take(&mut self.filled);
            if data[len - 1] != b'\n' {
                if len < data.len() {
                    data[len] = b'\n';
                } else {
                    // A full buffer: this last chunk goes in a heap buffer one byte longer.
                    let mut longer = Vec::with_capacity(len + 1);
                    longer.extend_from_slice(&data[..len]);
                    longer.push(b'\n');
                    // (It still counts as a buffer until `recycle` lets it go.)
                    data = Buffer::Heap(longer);
                }
                len += 1;
            }
            return Some(Chunk { data, len });
        }
        let Some(last_nl) = memchr::memrchr(b'\n', self.data()) else {
            // One line longer than a whole chunk: keep its head, drop the rest.
            let mut data = self.spare();
            data[..LINE_CAP].copy_from_slice(&self.buf[..LINE_CAP]);
            data[LINE_CAP] = b'\n';
            self.truncated += 1;
            self.skipping = true;
            self.filled = 0;
            return Some(Chunk {
                data,
                len: LINE_CAP + 1,
            });
        };
        let cut = self.entry_cut(last_nl);
        let mut next = self.spare();
        let rest = self.filled - cut;
        next[..rest].copy_from_slice(&self.buf[cut..self.filled]);
        let data = std::mem::replace(&mut self.buf, next);
        self.filled = rest;
        Some(Chunk { data, len: cut })
    }

    /// Where to cut so that the next chunk starts with an entry (not a continuation line).
    fn entry_cut(&self, last_nl: usize) -> usize {
        let Some(source) = self.source else {
            return last_nl + 1;
        };
        if matches!(source, LogSource::NginxAccess | LogSource::Kernel) {
            return last_nl + 1;
        }
        let data = self.data();
        let mut end = data.len();
        for _ in 0..4096 {
            let Some(p) = memchr::memrchr(b'\n', &data[..end]) else {
                break;
            };
            let s = p + 1;
            let complete = memchr::memchr(b'\n', &data[s..]).is_some();
            if s < data.len()
                && s > 0
                && (complete || data.len() - s >= 32)
                && starts_entry(source, &data[s..])
            {
                return s;
            }
            end = p;
        }
        last_nl + 1
    }
}

/// Peeks at the first bytes: gzip streams are decompressed (all members).
pub(crate) fn maybe_gunzip<'a>(mut r: Box<dyn Read + Send + 'a>) -> Box<dyn Read + Send + 'a> {
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match r.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let head = std::io::Cursor::new(magic[..got].to_vec());
    let joined = head.chain(r);
    if got == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(joined))
    } else {
        Box::new(joined)
    }
}

/// What one chunk yielded (line numbers local to the chunk).
#[derive(Debug, Default)]
struct ChunkOut {
    lines: u64,
    bad: u64,
    outside: u64,
    truncated: u64,
    events: Vec<Event>,
    /// Tallies by rule index.
    tally: Vec<RuleTally>,
    events_dropped: u64,
    access: Option<(ResponseStats, ClientMap, Vec<Response>, u64)>,
    /// The parser panicked on this chunk (a bug): its lines are missing from the results.
    failed: bool,
}

struct Ctx<'a> {
    source: LogSource,
    format: Option<&'a AccessFormat>,
    format_text: Option<&'a str>,
    rules: Arc<RuleSet>,
    tz: &'a TimeZone,
    now: Timestamp,
    window: &'a Window,
    path: &'a Path,
    /// Events built per rule and chunk.
    keep_per_rule: usize,
}

fn lines_of(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', chunk).map(move |i| {
        let l = &chunk[start..i];
        start = i + 1;
        l.strip_suffix(b"\r").unwrap_or(l)
    })
}

/// What a worker keeps from chunk to chunk: the automaton's scratch space (the lazy DFA's
/// states are built once per worker, not once per chunk), the rules' last captures, and the
/// list of a chunk's matching entries (its memory reused, not faulted in again per chunk).
#[derive(Debug, Default)]
struct WorkerCache {
    matching: MatchCache,
    captures: CaptureMemo,
    hits: Vec<Hit>,
}

/// A matching entry of a chunk: (start, end, first line number, rule index, time).
type Hit = (usize, usize, u64, usize, Option<Timestamp>);

fn process_chunk(chunk: &[u8], ctx: &Ctx<'_>, cache: &mut WorkerCache) -> ChunkOut {
    let mut out = ChunkOut::default();
    if let Some(fmt) = ctx.format {
        let mut acc = AccessAcc::new();
        for (i, line) in lines_of(chunk).enumerate() {
            let line = if line.len() > LINE_CAP {
                out.truncated += 1;
                &line[..LINE_CAP]
            } else {
                line
            };
            acc.line(
                fmt,
                ctx.window,
                ctx.path,
                i as u64 + 1,
                line,
                MAX_KEEP_ERRORS,
            );
        }
        out.lines = acc.lines;
        out.bad = acc.bad;
        out.outside = acc.outside;
        out.access = Some(acc.into_parts());
        return out;
    }
    let Ok(mut parser) = LineParser::new(
        ctx.source,
        ctx.format_text,
        ctx.tz.clone(),
        ctx.rules.clone(),
    ) else {
        return out;
    };
    parser.set_now(ctx.now);
    parser.match_cache = std::mem::take(&mut cache.matching);
    parser.capture_memo = std::mem::take(&mut cache.captures);
    out.tally = vec![RuleTally::default(); ctx.rules.rules().len()];
    // Pass 1: classify every entry (no allocation), tally matches, remember where they are.
    let mut hits = std::mem::take(&mut cache.hits);
    hits.clear();
    let mut classify = |out: &mut ChunkOut, s: usize, e: usize, line_no: u64| {
        let entry = &chunk[s..e];
        if entry.len() > LINE_CAP {
            out.truncated += 1;
        }
        match parser.classify(entry) {
            Class::Match { rule, time } => {
                if time.is_some_and(|t| !ctx.window.contains(t)) {
                    out.outside += 1;
                    return;
                }
                if let Some(t) = out.tally.get_mut(rule) {
                    t.add(time);
                }
                hits.push((s, e, line_no, rule, time));
            }
            Class::Bad => out.bad += 1,
            Class::Other => {}
        }
    };
    // Group continuation lines with their entry: the entry is a contiguous slice of the chunk.
    let mut entry: Option<(usize, u64)> = None; // (start offset, first line number)
    let mut prev_end = 0usize;
    let mut start = 0usize;
    let mut line_no = 0u64;
    for i in memchr::memchr_iter(b'\n', chunk) {
        let line = &chunk[start..i];
        line_no += 1;
        let is_start = starts_entry(ctx.source, line);
        if is_start || line.is_empty() {
            if let Some((s, n)) = entry.take() {
                classify(&mut out, s, prev_end, n);
            }
            if is_start {
                entry = Some((start, line_no));
            }
        }
        // Else a continuation line: part of the open entry, or (when none is open) the tail of
        // an entry that began before this file: skipped.
        prev_end = i;
        start = i + 1;
    }
    if let Some((s, n)) = entry.take() {
        classify(&mut out, s, prev_end, n);
    }
    out.lines = line_no;
    // Pass 2: build the newest few events of each rule.
    let mut per_rule = vec![0usize; ctx.rules.rules().len()];
    let mut keep = vec![false; hits.len()];
    for (k, h) in hits.iter().enumerate().rev() {
        if let Some(n) = per_rule.get_mut(h.3) {
            if *n < ctx.keep_per_rule {
                *n += 1;
                keep[k] = true;
            }
        }
    }
    for (k, &(s, e, line_no, rule, time)) in hits.iter().enumerate() {
        if !keep[k] {
            out.events_dropped += 1;
            continue;
        }
        match parser.build(ctx.path, line_no, &chunk[s..e], rule, time) {
            Some(ev) => out.events.push(ev),
            None => out.events_dropped += 1,
        }
    }
    cache.hits = hits;
    cache.matching = std::mem::take(&mut parser.match_cache);
    cache.captures = std::mem::take(&mut parser.capture_memo);
    out
}

/// Keeps the newest events, at most `MAX_KEEP_PER_RULE` per rule and `MAX_KEEP_EVENTS` in all;
/// returns how many were dropped.
fn prune_events(events: &mut Vec<Event>) -> u64 {
    if events.len() <= MAX_KEEP_EVENTS {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        if events.iter().all(|e| {
            let n = counts.entry(e.rule.as_str()).or_default();
            *n += 1;
            *n <= MAX_KEEP_PER_RULE
        }) {
            return 0;
        }
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut keep = vec![false; events.len()];
    let mut total = 0;
    for (k, e) in events.iter().enumerate().rev() {
        let n = counts.entry(e.rule.clone()).or_default();
        if *n < MAX_KEEP_PER_RULE && total < MAX_KEEP_EVENTS {
            *n += 1;
            total += 1;
            keep[k] = true;
        }
    }
    let before = events.len();
    let mut k = 0;
    events.retain(|_| {
        k += 1;
        keep[k - 1]
    });
    (before - events.len()) as u64
}

/// Reads one file (plain or gzip) and returns its evidence.
fn read_one(
    host: &dyn Host,
    path: &Path,
    file: &LogFile,
    window: &Window,
    tz: &TimeZone,
    rules: &Arc<RuleSet>,
) -> Evidence {
    let mut ev = Evidence::default();
    let mut summary = FileSummary {
        path: path.to_path_buf(),
        source: file.source,
        ..Default::default()
    };
    let reader = match host.open(path) {
        Ok(r) => r,
        Err(e) => {
            summary.error = Some(e.to_string());
            ev.files.push(summary);
            return ev;
        }
    };
    let mut chunker = Chunker::new(super::envelope::unwrap(maybe_gunzip(reader), file.source));
    chunker.fill();
    let mut inferred: Option<AccessFormat> = None;
    let source = match file.source {
        Some(s) => s,
        None => match detect_source(&chunker.data()[..chunker.filled.min(LINE_CAP)]) {
            Some(s) => s,
            None => match chunker
                .data()
                .split(|&b| b == b'\n')
                .find(|l| !l.is_empty())
                .and_then(AccessFormat::infer)
            {
                Some(f) => {
                    inferred = Some(f);
                    LogSource::NginxAccess
                }
                None => {
                    summary.error = Some(match &chunker.error {
                        Some(e) => e.clone(),
                        None if chunker.filled == 0 => "empty file".into(),
                        None => "unknown log format".into(),
                    });
                    ev.files.push(summary);
                    return ev;
                }
            },
        },
    };
    summary.source = Some(source);
    if source == LogSource::NginxAccess && file.access_format.is_none() && inferred.is_none() {
        // `combined` with leading fields (`$host $remote_addr - …`): read the client right.
        inferred = chunker
            .data()
            .split(|&b| b == b'\n')
            .find(|l| !l.is_empty())
            .and_then(AccessFormat::infer);
    }
    chunker.source = Some(source);
    let mut format_text = file.access_format.as_deref();
    let format = if source == LogSource::NginxAccess {
        match file.access_format.as_deref().map(AccessFormat::compile) {
            Some(Ok(f)) => Some(f),
            Some(Err(e)) => {
                summary.error = Some(format!("log_format: {e}; read as combined"));
                format_text = None;
                Some(AccessFormat::combined())
            }
            None => Some(inferred.take().unwrap_or_else(AccessFormat::combined)),
        }
    } else {
        None
    };
    summary.format = match &format {
        Some(f) => f.name().to_string(),
        None => source.as_str().to_string(),
    };
    let rules = if format.is_some() {
        // The access log yields responses only; no rule runs on it.
        &Arc::new(RuleSet::empty())
    } else {
        rules
    };
    // A time-ordered log read for a window: start where the window starts (see `seek`).
    let skipped = skip_to_window(
        host,
        path,
        source,
        format.as_ref(),
        window,
        tz,
        &mut chunker,
    );
    summary.skipped_bytes = skipped;
    let ctx = Ctx {
        source,
        format: format.as_ref(),
        format_text,
        rules: rules.clone(),
        tz,
        now: super::year_anchor(host, path),
        window,
        path,
        keep_per_rule: keep_per_rule_chunk(host, path),
    };
    let mut line_base = 0u64;
    let mut stats_acc: Option<(ResponseStats, Vec<Response>, u64)> = None;
    let mut clients = ClientMap::default();
    // A pipeline with no batch barrier: one reader thread cuts chunks, `workers` threads parse
    // whichever chunk comes next, this thread merges the results in file order. A chunk's buffer
    // goes back to the reader only once its result is merged, and the reader owns at most
    // `max_buffers` of them: that bounds both the memory and how far parsing runs ahead.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
    // One per worker, one being filled, one waiting to be merged: more only adds fresh pages
    // to fault in (2 MiB each) without keeping the workers any busier.
    let max_buffers = workers + 2;
    let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<(u64, Chunk)>(workers);
    let work_rx = std::sync::Mutex::new(work_rx);
    let (reader_truncated, reader_error) = std::thread::scope(|scope| {
        let (done_tx, done_rx) = std::sync::mpsc::channel::<(u64, ChunkOut, Chunk)>();
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Chunk>();
        let reader = scope.spawn(move || {
            let mut seq = 0u64;
            loop {
                while let Ok(done) = back_rx.try_recv() {
                    chunker.recycle(done);
                }
                if chunker.pool.is_empty() && chunker.buffers >= max_buffers {
                    match back_rx.recv() {
                        Ok(done) => chunker.recycle(done),
                        Err(_) => break,
                    }
                }
                let Some(chunk) = chunker.next_chunk() else {
                    break;
                };
                if work_tx.send((seq, chunk)).is_err() {
                    break;
                }
                seq += 1;
            }
            (chunker.truncated, chunker.error.take())
        });
        for _ in 0..workers {
            let (work_rx, done_tx, ctx) = (&work_rx, done_tx.clone(), &ctx);
            scope.spawn(move || {
                let mut cache = WorkerCache::default();
                loop {
                    // One worker at a time waits for the next chunk; the others are parsing.
                    let next = match work_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => break,
                    };
                    let Ok((seq, chunk)) = next else { break };
                    // A bug in a parser must not take the file's other chunks (or the audit) down.
                    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        process_chunk(chunk.bytes(), ctx, &mut cache)
                    }))
                    .unwrap_or_else(|_| ChunkOut {
                        failed: true,
                        ..ChunkOut::default()
                    });
                    if done_tx.send((seq, out, chunk)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let mut waiting: BTreeMap<u64, (ChunkOut, Chunk)> = BTreeMap::new();
        let mut next_seq = 0u64;
        for (seq, out, chunk) in done_rx {
            waiting.insert(seq, (out, chunk));
            while let Some((mut out, chunk)) = waiting.remove(&next_seq) {
                next_seq += 1;
                let _ = back_tx.send(chunk);
                if out.failed {
                    summary.error =
                        Some("part of the file could not be parsed (internal error)".into());
                }
                summary.lines += out.lines;
                summary.bad_lines += out.bad;
                summary.outside_window += out.outside;
                summary.truncated_lines += out.truncated;
                for e in &mut out.events {
                    // After a skip the lines' numbers are not known: the file alone is named.
                    e.line = if skipped > 0 { 0 } else { e.line + line_base };
                }
                for (i, t) in out.tally.iter().enumerate() {
                    if t.count == 0 {
                        continue;
                    }
                    summary.events += t.count;
                    if let Some(rule) = rules.rules().get(i) {
                        ev.events_by_rule
                            .entry(rule.id.clone())
                            .or_default()
                            .absorb(t);
                        if !ev.rule_fixes.contains_key(&rule.id) {
                            ev.rule_fixes.insert(rule.id.clone(), rule.fix.clone());
                        }
                    }
                }
                ev.events_dropped += out.events_dropped;
                ev.events.append(&mut out.events);
                if ev.events.len() > MAX_KEEP_EVENTS + MAX_KEEP_EVENTS / 2 {
                    ev.events_dropped += prune_events(&mut ev.events);
                }
                if let Some((stats, chunk_clients, mut errors, dropped)) = out.access {
                    for r in &mut errors {
                        r.line = if skipped > 0 { 0 } else { r.line + line_base };
                    }
                    merge_clients(&mut clients, chunk_clients);
                    let acc = stats_acc.get_or_insert_with(Default::default);
                    merge_stats(&mut acc.0, stats);
                    acc.1.append(&mut errors);
                    acc.2 += dropped;
                    if acc.1.len() > MAX_KEEP_ERRORS {
                        let over = acc.1.len() - MAX_KEEP_ERRORS;
                        acc.1.drain(..over);
                        acc.2 += over as u64;
                    }
                }
                line_base += out.lines;
            }
        }
        reader
            .join()
            .unwrap_or_else(|_| (0, Some("the reader thread failed".to_string())))
    });
    ev.events_dropped += prune_events(&mut ev.events);
    summary.truncated_lines += reader_truncated;
    if let Some(e) = reader_error {
        summary.error = Some(e);
    }
    if let Some((mut stats, errors, dropped)) = stats_acc {
        stats.clients = clients_text(clients);
        ev.responses = stats;
        ev.errors = errors;
        ev.errors_dropped = dropped;
    }
    ev.files.push(summary);
    ev
}

/// When `window` has a start and `path` is a big, plain, time-ordered file on a host that seeks,
/// points `chunker` at the entry where the window starts; returns the bytes skipped (0: the
/// whole file is read).
fn skip_to_window(
    host: &dyn Host,
    path: &Path,
    source: LogSource,
    format: Option<&AccessFormat>,
    window: &Window,
    tz: &TimeZone,
    chunker: &mut Chunker<'_>,
) -> u64 {
    let Some(since) = window.since else {
        return 0;
    };
    if path.extension().is_some_and(|e| e == "gz") {
        return 0;
    }
    let Ok(meta) = host.metadata(path) else {
        return 0;
    };
    let mut stamper =
        LineParser::stamper(source, format, tz.clone(), super::year_anchor(host, path));
    let start = super::seek::window_start(host, path, source, meta.size, since, &mut stamper);
    if start == 0 {
        return 0;
    }
    match host.open_at(path, start) {
        Some(Ok(reader)) => {
            let mut seeked = Chunker::new(reader);
            seeked.source = chunker.source;
            *chunker = seeked;
            start
        }
        _ => 0,
    }
}

/// How many events per rule each chunk of `path` builds (see [`KEEP_PER_RULE_CHUNK`]); a
/// compressed file's size says little about its chunks: the default.
fn keep_per_rule_chunk(host: &dyn Host, path: &Path) -> usize {
    let gz = path.extension().is_some_and(|e| e == "gz");
    match host.metadata(path) {
        Ok(meta) if !gz => {
            let chunks = usize::try_from(meta.size.div_ceil(CHUNK as u64)).unwrap_or(usize::MAX);
            MAX_KEEP_PER_RULE
                .div_ceil(chunks.max(1))
                .clamp(MIN_KEEP_PER_RULE_CHUNK, KEEP_PER_RULE_CHUNK)
        }
        _ => KEEP_PER_RULE_CHUNK,
    }
}

fn merge_stats(into: &mut ResponseStats, other: ResponseStats) {
    let mut tmp = Evidence {
        responses: std::mem::take(into),
        ..Default::default()
    };
    tmp.merge(Evidence {
        responses: other,
        ..Default::default()
    });
    *into = tmp.responses;
}

/// Files read at the same time: while one file's last chunks are parsed (or a small file's
/// few), the next one is already being read. Two keep both cores busy across file boundaries
/// while memory stays bounded by two files' buffers.
const FILES_IN_FLIGHT: usize = 2;

pub(crate) fn read_files(
    host: &dyn Host,
    files: &[LogFile],
    window: &Window,
    tz: &TimeZone,
    rules: &Arc<RuleSet>,
    siblings: bool,
) -> Evidence {
    // Every file to read (rotated siblings first, oldest first), in the order they are merged.
    let mut jobs: Vec<(&LogFile, std::path::PathBuf)> = Vec::new();
    for file in files {
        if siblings {
            let mut older = super::rotation::rotated_siblings(host, &file.path, window);
            older.retain(|p| super::seek::sibling_in_window(host, p, window, tz));
            jobs.extend(older.into_iter().map(|p| (file, p)));
        }
        jobs.push((file, file.path.clone()));
    }
    // Read biggest first (the small ones fill the gaps), merged in the order above.
    let sizes: Vec<u64> = jobs
        .iter()
        .map(|(_, p)| host.metadata(p).map_or(0, |m| m.size))
        .collect();
    let mut by_size: Vec<usize> = (0..jobs.len()).collect();
    by_size.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Evidence>>> =
        jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let run = || loop {
        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(&i) = by_size.get(k) else { break };
        let (file, path) = &jobs[i];
        // A bug in one file's reader must not take the others (or the audit) down.
        let ev = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            read_one(host, path, file, window, tz, rules)
        }));
        if let (Ok(ev), Ok(mut slot)) = (ev, results[i].lock()) {
            *slot = Some(ev);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..FILES_IN_FLIGHT.min(jobs.len()) {
            scope.spawn(run);
        }
        run();
    });
    let mut ev = Evidence::default();
    for (slot, (file, path)) in results.into_iter().zip(&jobs) {
        let one = match slot.into_inner() {
            Ok(Some(one)) => one,
            // A reader that panicked (a bug): the file is named, its evidence is missing.
            _ => failed_read(path, file),
        };
        ev.merge(one);
    }
    cap_clients(&mut ev.responses.clients);
    ev
}

/// The evidence of a file whose reading failed inside the agent.
fn failed_read(path: &Path, file: &LogFile) -> Evidence {
    let mut ev = Evidence::default();
    ev.files.push(FileSummary {
        path: path.to_path_buf(),
        source: file.source,
        error: Some("the file could not be read (internal error)".into()),
        ..Default::default()
    });
    ev
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn big_files_build_fewer_events_per_chunk_small_ones_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let sized = |name: &str, len: u64| {
            let p = dir.path().join(name);
            std::fs::File::create(&p).unwrap().set_len(len).unwrap(); // sparse
            keep_per_rule_chunk(&origin_host::live::LiveHost, &p)
        };
        assert_eq!(sized("small.log", 10 << 20), KEEP_PER_RULE_CHUNK);
        // 48 chunks build about the 1,000 per rule that are kept in the end.
        assert_eq!(sized("big.log", 96 << 20), 21);
        assert_eq!(sized("huge.log", 4 << 30), MIN_KEEP_PER_RULE_CHUNK);
        // A compressed file's size says little: the default.
        assert_eq!(sized("old.log.2.gz", 96 << 20), KEEP_PER_RULE_CHUNK);
        assert_eq!(
            keep_per_rule_chunk(&origin_host::live::LiveHost, &dir.path().join("gone.log")),
            KEEP_PER_RULE_CHUNK
        );
    }

    #[test]
    fn chunker_aligns_on_entries_and_caps_giant_lines() {
        let mut text = Vec::new();
        for i in 0..200_000 {
            text.extend_from_slice(
                format!("2026/11/24 07:45:17 [error] 1#1: *{i} FastCGI sent in stderr: \"x\nStack trace:\n#0 {{main}}\" while reading upstream\n").as_bytes(),
            );
        }
        let mut c = Chunker::new(Box::new(std::io::Cursor::new(text.clone())));
        c.source = Some(LogSource::NginxError);
        let mut total = 0;
        let mut n = 0;
        while let Some(chunk) = c.next_chunk() {
            let chunk = chunk.bytes();
            assert!(
                chunk.starts_with(b"2026/11/24"),
                "chunk {n} starts mid-entry"
            );
            assert!(chunk.len() <= CHUNK + 1);
            total += chunk.len();
            n += 1;
        }
        assert!(n > 3);
        assert_eq!(total, text.len());

        let mut giant = vec![b'x'; 3 * CHUNK];
        giant.extend_from_slice(b"\nshort\n");
        let mut c = Chunker::new(Box::new(std::io::Cursor::new(giant)));
        let mut chunks = Vec::new();
        while let Some(chunk) = c.next_chunk() {
            chunks.push(chunk.bytes().to_vec());
        }
        assert_eq!(c.truncated, 1);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].len(), LINE_CAP + 1);
        assert_eq!(chunks[1], b"short\n");
    }

    #[test]
    fn a_last_line_without_newline_gets_one_at_every_size_around_a_full_buffer() {
        // Short lines, then a last one without `\n`, the whole file one byte short of a full
        // buffer, exactly one, one over and two: every byte comes back once, with the newline
        // added, and the buffers given back keep the count right.
        for len in [CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK] {
            let mut text: Vec<u8> = (0..len)
                .map(|i| if i % 100 == 99 { b'\n' } else { b'a' })
                .collect();
            *text.last_mut().unwrap() = b'z';
            let mut c = Chunker::new(Box::new(std::io::Cursor::new(text.clone())));
            let mut all = Vec::new();
            while let Some(chunk) = c.next_chunk() {
                assert!(chunk.bytes().ends_with(b"\n"));
                all.extend_from_slice(chunk.bytes());
                c.recycle(chunk);
            }
            text.push(b'\n');
            assert_eq!(all, text, "{len}");
            assert_eq!(
                c.buffers,
                1 + c.pool.len(),
                "{len}: buf and the pool, nothing lost"
            );
        }
    }
}
