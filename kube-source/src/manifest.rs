//! A directory of Kubernetes manifests as a source of objects: read, re-read on edits, and
//! report what changed (`meshd --manifests DIR`).
//!
//! [`ManifestDir`] does the work synchronously, one [`ManifestDir::refresh`] per poll;
//! [`watch`] runs it on a timer and sends each [`Update`] down a channel.
//!
//! The rules, in order:
//! 1. Files: every `*.yaml` / `*.yml` under DIR, recursively, in path order. Hidden entries
//!    (`.foo`, which covers `.#foo` locks, `.foo.swp` and Kubernetes' `..data` ConfigMap
//!    links) and backups (`foo~`) are ignored. Symlinks to files are followed, symlinks to
//!    directories are not (no cycles). DIR may also name a single file.
//! 2. Change detection: a file is read again when its size or mtime changed, or while its mtime
//!    is within [`RACY_WINDOW`] of the last read (an edit in the same clock tick keeps the
//!    mtime). What was read is hashed; the file is parsed again only if the hash changed and,
//!    after the first refresh, only once two reads in a row agree, so a half-written file is
//!    not taken for the new content; [`watch`] makes the second read [`SETTLE`] after the
//!    first. A later write changes the size or mtime, so a file taken too early is read again.
//! 3. Documents: a file splits on lines that are exactly `---` (spaces and a `# comment` may
//!    follow). Each document is parsed by [`parse_yaml_document`]; its error lines are offset
//!    to file lines, and its objects carry an [`Origin`]: the file and the document's first
//!    line with content.
//! 4. A bad document is reported and the rest of the file still applies. What it held stays
//!    as it was: a document that fails after its kind, namespace and name were read keeps the
//!    last good object with that key; if any document of a file cannot be read that far (a
//!    YAML syntax error, a missing name) or the file cannot be read at all, every object the
//!    file held before and does not define now is kept. Only objects that really disappeared
//!    from a file that parsed are deleted; a deleted file deletes its objects (a directory
//!    that cannot be read keeps its files' objects).
//! 5. The same key defined twice (across files or within one): the first in path order wins;
//!    the later one is an error naming both places. Each key's definitions are kept, so a
//!    refresh merges only the keys of the files it parsed again.
//! 6. An [`Update`] is produced only when something changed: `applied` holds new objects and
//!    changed ones (a move to another file or line counts as a change, so origins stay right),
//!    `deleted` the keys gone, `errors` the complete current list. New errors are logged at
//!    warn, skipped kinds at debug.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::hash::{DefaultHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::objects::{Object, ObjectKey};
use crate::parse::{Parsed, is_content_line, parse_yaml_document};

/// How long after a read a file's mtime cannot be trusted to reveal the next edit (git's
/// "racy" files): a file modified this recently is read and hashed on every refresh.
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// How long after a changed file is read it is read again to confirm the change (rule 2):
/// long enough for a writer to finish (editors and `kubectl` replace a file in one rename,
/// `cp` or `git` write it in a burst), short enough not to delay every edit by a poll.
pub const SETTLE: Duration = Duration::from_millis(5);

/// Updates [`watch`] may queue before the poller waits for the consumer.
const CHANNEL_CAPACITY: usize = 16;

/// Where an object was read: its file and the first line of its document (1-based); from a
/// cluster, the object's API path and line 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}", self.file.display(), self.line)
        }
    }
}

/// Something wrong in the manifests, located for an editor:
/// `examples/app.yaml:14: spec.ports[0].port: invalid type: string "http", expected u16`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{}", describe(.file, .line, .field, .message))]
pub struct ManifestError {
    pub file: PathBuf,
    /// 1-based line in the file; 0 when the error is about the whole file or directory.
    pub line: usize,
    /// The field at fault, like `spec.ports[0].port`.
    pub field: Option<String>,
    pub message: String,
}

fn describe(file: &Path, line: &usize, field: &Option<String>, message: &str) -> String {
    let mut out = file.display().to_string();
    if *line > 0 {
        out.push_str(&format!(":{line}"));
    }
    out.push_str(": ");
    if let Some(field) = field {
        out.push_str(field);
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

/// What changed in the manifests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    /// New objects and changed ones (content or origin), in key order.
    pub applied: Vec<(Object, Origin)>,
    /// Objects gone, in key order.
    pub deleted: Vec<ObjectKey>,
    /// Every current error, not only new ones: a consumer shows this list and drops the last.
    pub errors: Vec<ManifestError>,
}

/// A manifest directory and what was last read from it.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// Directories (or DIR itself) that could not be listed on the last refresh.
    walk_errors: Vec<ManifestError>,
    /// The objects last reported, merged over all files.
    objects: BTreeMap<ObjectKey, (Object, Origin)>,
    /// Every definition of each key, as (file, position in the file's objects); the first is
    /// the one that counts (rule 5). Kept up to date file by file, so an edit to one file
    /// costs that file, not the directory.
    definitions: HashMap<ObjectKey, BTreeSet<(PathBuf, usize)>>,
    /// The keys defined more than once.
    duplicated: BTreeSet<ObjectKey>,
    /// The errors last reported.
    errors: Vec<ManifestError>,
    /// Set by the first refresh: later ones wait for changed files to settle (rule 2).
    started: bool,
}

/// What a refresh of one file found.
enum FileChange {
    None,
    /// Only its errors may have changed (it could not be read, and keeps its objects).
    Errors,
    /// It was parsed again; these are the keys it defined before.
    Parsed(Vec<ObjectKey>),
}

/// One file as last read.
#[derive(Debug)]
struct FileState {
    /// Size and mtime at the last read; `None` forces a read (after a failed one).
    stamp: Option<Stamp>,
    /// When the last read started.
    read_at: SystemTime,
    /// Hash of the content `objects` and `errors` came from.
    parsed: Option<u64>,
    /// Hash of content read once and not parsed yet: parsed if the next read agrees.
    pending: Option<u64>,
    /// What the file contributes: its objects in document order, then the ones kept (rule 4).
    objects: Vec<(Object, Origin)>,
    errors: Vec<ManifestError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl ManifestDir {
    /// Nothing is read until [`ManifestDir::refresh`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ManifestDir {
            dir: dir.into(),
            files: BTreeMap::new(),
            walk_errors: Vec::new(),
            objects: BTreeMap::new(),
            definitions: HashMap::new(),
            duplicated: BTreeSet::new(),
            errors: Vec::new(),
            started: false,
        }
    }

    /// Whether a changed file waits for a second read to agree (rule 2): the next refresh
    /// should come after [`SETTLE`], not a whole poll interval.
    pub fn settling(&self) -> bool {
        self.files.values().any(|f| f.pending.is_some())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current objects, merged over all files.
    pub fn objects(&self) -> &BTreeMap<ObjectKey, (Object, Origin)> {
        &self.objects
    }

    /// The current errors, in file and line order.
    pub fn errors(&self) -> &[ManifestError] {
        &self.errors
    }

    /// Everything as one update: all objects applied, with the current errors.
    pub fn snapshot(&self) -> Update {
        Update {
            applied: self.objects.values().cloned().collect(),
            deleted: Vec::new(),
            errors: self.errors.clone(),
        }
    }

    /// Reads what changed since the last refresh; `None` when nothing did. Blocking IO.
    pub fn refresh(&mut self) -> Option<Update> {
        let settle = std::mem::replace(&mut self.started, true);
        let walk = walk(&self.dir);
        let walk_errors: Vec<ManifestError> = walk
            .unreadable
            .iter()
            .map(|(dir, e)| ManifestError {
                file: dir.clone(),
                line: 0,
                field: None,
                message: format!("cannot read directory: {e}"),
            })
            .collect();
        let mut errors_changed = walk_errors != self.walk_errors;
        self.walk_errors = walk_errors;

        // Files whose objects may have changed, with the keys they defined before.
        let mut reparsed: Vec<(PathBuf, Vec<ObjectKey>)> = Vec::new();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|path| {
                !walk.files.contains(*path)
                    && !walk.unreadable.iter().any(|(d, _)| path.starts_with(d))
            })
            .cloned()
            .collect();
        for path in gone {
            if let Some(state) = self.files.remove(&path) {
                errors_changed |= !state.errors.is_empty();
                reparsed.push((path, state.objects.iter().map(|(o, _)| o.key()).collect()));
            }
        }
        for path in walk.files {
            let state = self
                .files
                .entry(path.clone())
                .or_insert_with(FileState::new);
            match state.refresh(&path, settle) {
                FileChange::None => {}
                FileChange::Errors => errors_changed = true,
                FileChange::Parsed(before) => {
                    errors_changed = true;
                    reparsed.push((path, before));
                }
            }
        }
        if reparsed.is_empty() && !errors_changed {
            return None;
        }
        self.merge(reparsed)
    }

    /// Rule 5 for the keys the `reparsed` files defined before or define now, then rule 6.
    fn merge(&mut self, reparsed: Vec<(PathBuf, Vec<ObjectKey>)>) -> Option<Update> {
        let mut affected: BTreeSet<ObjectKey> = BTreeSet::new();
        for (path, before) in reparsed {
            for key in before {
                if let Some(defs) = self.definitions.get_mut(&key) {
                    defs.retain(|(p, _)| *p != path);
                    if defs.is_empty() {
                        self.definitions.remove(&key);
                    }
                }
                affected.insert(key);
            }
            let Some(state) = self.files.get(&path) else {
                continue;
            };
            for (i, (object, _)) in state.objects.iter().enumerate() {
                let key = object.key();
                self.definitions
                    .entry(key.clone())
                    .or_default()
                    .insert((path.clone(), i));
                affected.insert(key);
            }
        }

        let mut applied: Vec<(Object, Origin)> = Vec::new();
        let mut deleted: Vec<ObjectKey> = Vec::new();
        for key in affected {
            let defs = self.definitions.get(&key);
            if defs.is_some_and(|d| d.len() > 1) {
                self.duplicated.insert(key.clone());
            } else {
                self.duplicated.remove(&key);
            }
            match defs
                .and_then(|d| d.first())
                .and_then(|d| self.definition(d))
            {
                Some((object, origin)) => {
                    let same = self
                        .objects
                        .get(&key)
                        .is_some_and(|(o, or)| o == object && or == origin);
                    if !same {
                        applied.push((object.clone(), origin.clone()));
                    }
                }
                None => {
                    if self.objects.contains_key(&key) {
                        deleted.push(key);
                    }
                }
            }
        }

        let mut errors = self.walk_errors.clone();
        for state in self.files.values() {
            errors.extend(state.errors.iter().cloned());
        }
        for key in &self.duplicated {
            let Some(defs) = self.definitions.get(key) else {
                continue;
            };
            let mut defs = defs.iter().filter_map(|d| self.definition(d));
            let Some((_, first)) = defs.next() else {
                continue;
            };
            for (_, origin) in defs {
                errors.push(ManifestError {
                    file: origin.file.clone(),
                    line: origin.line,
                    field: None,
                    message: format!(
                        "{key} is already defined at {first}; this definition is ignored"
                    ),
                });
            }
        }
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));

        // A set: a file of many bad documents has as many errors, and a list lookup per error
        // made each refresh quadratic in them.
        let known: HashSet<&ManifestError> = self.errors.iter().collect();
        for e in errors.iter().filter(|e| !known.contains(e)) {
            warn!("{e}");
        }
        if applied.is_empty() && deleted.is_empty() && errors == self.errors {
            return None;
        }
        debug!(
            dir = %self.dir.display(),
            applied = applied.len(),
            deleted = deleted.len(),
            errors = errors.len(),
            "manifests changed"
        );
        for key in &deleted {
            self.objects.remove(key);
        }
        for (object, origin) in &applied {
            self.objects
                .insert(object.key(), (object.clone(), origin.clone()));
        }
        self.errors = errors;
        Some(Update {
            applied,
            deleted,
            errors: self.errors.clone(),
        })
    }

    /// The object and origin a definition points at.
    fn definition(&self, (path, i): &(PathBuf, usize)) -> Option<(&Object, &Origin)> {
        let (object, origin) = self.files.get(path)?.objects.get(*i)?;
        Some((object, origin))
    }
}

impl FileState {
    fn new() -> Self {
        FileState {
            stamp: None,
            read_at: SystemTime::UNIX_EPOCH,
            parsed: None,
            pending: None,
            objects: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Rule 2: reads and parses the file if it changed.
    fn refresh(&mut self, path: &Path, settle: bool) -> FileChange {
        let stamp = match fs::metadata(path) {
            Ok(m) => Stamp {
                len: m.len(),
                modified: m.modified().ok(),
            },
            Err(e) => return self.unreadable(path, &e),
        };
        let racy = stamp
            .modified
            .and_then(|m| m.checked_add(RACY_WINDOW))
            .is_none_or(|trusted_after| trusted_after > self.read_at);
        if self.pending.is_none() && self.stamp == Some(stamp) && !racy {
            return FileChange::None;
        }
        let read_at = SystemTime::now();
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => return self.unreadable(path, &e),
        };
        self.stamp = Some(stamp);
        self.read_at = read_at;
        let mut hasher = DefaultHasher::new();
        hasher.write(&bytes);
        let hash = hasher.finish();
        if self.parsed == Some(hash) {
            self.pending = None;
            return FileChange::None;
        }
        if settle && self.pending != Some(hash) {
            self.pending = Some(hash);
            return FileChange::None;
        }
        self.pending = None;
        self.parsed = Some(hash);
        FileChange::Parsed(self.apply(parse_file(path, &bytes)))
    }

    /// A file that cannot be read keeps its objects (rule 4) and is read again next time.
    fn unreadable(&mut self, path: &Path, e: &io::Error) -> FileChange {
        let errors = vec![ManifestError {
            file: path.to_path_buf(),
            line: 0,
            field: None,
            message: format!("cannot read: {e}"),
        }];
        self.stamp = None;
        self.parsed = None;
        self.pending = None;
        if errors == self.errors {
            return FileChange::None;
        }
        self.errors = errors;
        FileChange::Errors
    }

    /// Rule 4: the new objects, then the old ones the errors protect. Returns the keys the
    /// file defined before.
    fn apply(&mut self, parse: FileParse) -> Vec<ObjectKey> {
        let before: Vec<(Object, Origin)> = std::mem::take(&mut self.objects);
        let before_keys: Vec<ObjectKey> = before.iter().map(|(o, _)| o.key()).collect();
        let defined: BTreeSet<ObjectKey> = parse.objects.iter().map(|(o, _)| o.key()).collect();
        let kept: Vec<(Object, Origin)> = before
            .into_iter()
            .zip(&before_keys)
            .filter(|(_, key)| {
                !defined.contains(*key) && (parse.broken || parse.error_keys.contains(*key))
            })
            .map(|(o, _)| o)
            .collect();
        self.objects = parse.objects;
        self.objects.extend(kept);
        self.errors = parse.errors;
        before_keys
    }
}

/// One file's documents, parsed.
#[derive(Debug, Default)]
struct FileParse {
    objects: Vec<(Object, Origin)>,
    errors: Vec<ManifestError>,
    /// Keys of objects whose documents failed after the envelope was read.
    error_keys: BTreeSet<ObjectKey>,
    /// Some document could not be read as far as its key (or the file at all).
    broken: bool,
}

/// Rule 3.
fn parse_file(path: &Path, bytes: &[u8]) -> FileParse {
    let mut out = FileParse::default();
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let before = bytes.get(..e.valid_up_to()).unwrap_or_default();
            out.errors.push(ManifestError {
                file: path.to_path_buf(),
                line: before.iter().filter(|b| **b == b'\n').count() + 1,
                field: None,
                message: format!("not UTF-8: {e}"),
            });
            out.broken = true;
            return out;
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for doc in split_documents(text) {
        let origin = Origin {
            file: path.to_path_buf(),
            line: doc.origin_line,
        };
        for outcome in parse_yaml_document(doc.text) {
            match outcome {
                Ok(Parsed::Object(object)) => out.objects.push((object, origin.clone())),
                Ok(Parsed::Skipped {
                    api_version,
                    kind,
                    name,
                }) => debug!(
                    %origin, %api_version, %kind, %name,
                    "skipping a kind the mesh does not read"
                ),
                Err(e) => {
                    match e.key {
                        Some(key) => {
                            out.error_keys.insert(key);
                        }
                        None => out.broken = true,
                    }
                    out.errors.push(ManifestError {
                        file: path.to_path_buf(),
                        line: e
                            .line
                            .map_or(doc.origin_line, |l| doc.first_line + l.saturating_sub(1)),
                        field: e.field,
                        message: e.message,
                    });
                }
            }
        }
    }
    out
}

/// One document of a manifest file, as rule 3 splits it.
#[derive(Debug, PartialEq)]
pub struct Document<'a> {
    /// Its text: from the line after the `---` before it (or the file's start) up to the next
    /// `---` line (or the file's end).
    pub text: &'a str,
    /// Where `text` starts in the file, in bytes.
    pub start: usize,
    /// The file line of `text`'s first line (a parser's line 1).
    pub first_line: usize,
    /// The file line of its first line with content: the object's [`Origin`].
    pub origin_line: usize,
}

/// Rule 3: splits a file's text on `---` lines; documents with no content (blank lines,
/// comments) are dropped. Each document parses with [`parse_yaml_document`].
pub fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let (mut start, mut offset) = (0, 0);
    let mut first_line = 1;
    let mut origin_line = None;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let number = i + 1;
        if is_separator(line) {
            if let Some(origin_line) = origin_line {
                docs.push(Document {
                    text: &text[start..offset],
                    start,
                    first_line,
                    origin_line,
                });
            }
            start = offset + line.len();
            first_line = number + 1;
            origin_line = None;
        } else if origin_line.is_none() && is_content_line(line) {
            origin_line = Some(number);
        }
        offset += line.len();
    }
    if let Some(origin_line) = origin_line {
        docs.push(Document {
            text: &text[start..],
            start,
            first_line,
            origin_line,
        });
    }
    docs
}

/// `---`, optionally followed by spaces and a comment.
fn is_separator(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("---") else {
        return false;
    };
    let rest = rest.trim_end();
    rest.is_empty() || (rest.starts_with([' ', '\t']) && rest.trim_start().starts_with('#'))
}

/// The manifest files found under a directory, and the directories that could not be listed.
#[derive(Debug, Default)]
struct Walk {
    files: BTreeSet<PathBuf>,
    unreadable: Vec<(PathBuf, io::Error)>,
}

/// Rule 1: the manifest files under `root` (or `root` itself when it is a file), in path
/// order, and the directories that could not be listed with why.
pub fn manifest_files(root: &Path) -> (Vec<PathBuf>, Vec<(PathBuf, io::Error)>) {
    let w = walk(root);
    (w.files.into_iter().collect(), w.unreadable)
}

/// Rule 1.
fn walk(root: &Path) -> Walk {
    let mut walk = Walk::default();
    match fs::metadata(root) {
        Ok(m) if m.is_file() => {
            walk.files.insert(root.to_path_buf());
        }
        Ok(_) => walk.dir(root),
        Err(e) => walk.unreadable.push((root.to_path_buf(), e)),
    }
    walk
}

impl Walk {
    fn dir(&mut self, dir: &Path) {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => return self.unreadable.push((dir.to_path_buf(), e)),
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => return self.unreadable.push((dir.to_path_buf(), e)),
            };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => self.dir(&path),
                Ok(t) if is_manifest_name(&name) && (t.is_file() || path.is_file()) => {
                    self.files.insert(path);
                }
                _ => {}
            }
        }
    }
}

/// `*.yaml` / `*.yml`, not an editor's backup or swap file (hidden names are skipped before).
fn is_manifest_name(name: &str) -> bool {
    let temp = name.ends_with('~') || name.ends_with(".swp") || name.starts_with(".#");
    !temp && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Watches `dir`: reads it once, then re-reads it every `poll` (at least 1 ms) on a task of the
/// current tokio runtime, sending an [`Update`] whenever something changed.
///
/// Returns everything read at first as one update (with its errors), and the receiver. The
/// poller waits while the channel is full (updates are deltas and are never dropped) and
/// stops when the receiver is dropped. Fails only when `dir` does not exist or cannot be
/// read at the start (a wrong `--manifests` should stop the program); later read errors
/// arrive as [`ManifestError`]s.
pub async fn watch(dir: PathBuf, poll: Duration) -> io::Result<(Update, mpsc::Receiver<Update>)> {
    tokio::fs::metadata(&dir).await?;
    let (source, initial) = tokio::task::spawn_blocking(move || {
        let mut source = ManifestDir::new(dir);
        source.refresh();
        let initial = source.snapshot();
        (source, initial)
    })
    .await
    .map_err(io::Error::other)?;
    if let Some(e) = source.walk_errors.iter().find(|e| e.file == source.dir) {
        return Err(io::Error::other(e.to_string()));
    }
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    tokio::spawn(poll_loop(source, poll.max(Duration::from_millis(1)), tx));
    Ok((initial, rx))
}

/// The watch task. `tx` carries updates to the one consumer; its bounded capacity is the
/// backpressure that pauses polling, and its closing is the signal to stop.
async fn poll_loop(mut source: ManifestDir, poll: Duration, tx: mpsc::Sender<Update>) {
    let mut wait = poll;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tx.closed() => return,
        }
        let refreshed = tokio::task::spawn_blocking(move || {
            let update = source.refresh();
            (source, update)
        })
        .await;
        let update;
        (source, update) = match refreshed {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "manifest poller stopped");
                return;
            }
        };
        // A changed file is confirmed by a second read soon after, not a poll later.
        wait = if source.settling() {
            SETTLE.min(poll)
        } else {
            poll
        };
        let Some(update) = update else { continue };
        if tx.send(update).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
