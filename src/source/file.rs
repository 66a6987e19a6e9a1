//! The file source: a directory of multi-document YAML files (`*.yaml`, `*.yml`, recursively).
//!
//! The directory is watched, not the files, so editors that replace files and ConfigMap mounts
//! that swap a symlink are both seen. The source keeps what each file parsed to (resources and
//! diagnostics) and re-reads only what the watcher names: a file, or the files under a named
//! directory whose identity (device, inode, size, modification time) changed. Hidden entries
//! (`..data`, `.swp` files, the temporary files of atomic writes) are never read themselves, but
//! a change to a hidden directory or symlink (a ConfigMap's `..data` swap) re-checks every
//! file's identity, and a change to a hidden file a visible file resolves to re-reads that
//! file. The whole directory is re-read at start and when the watcher reports an error or lost
//! events. Each change is sent at once as the source's whole state (a resync); the push loop's
//! debounce decides when it is pushed, so there is no second debounce here.
//!
//! A file whose read has errors (it cannot be read, or a document does not parse or validate)
//! keeps the resources it held that the read did not yield, with a warning each: a file caught
//! half-written never withdraws a route or a policy. Only regular files are read, and they are
//! opened without blocking, so a FIFO in the directory is reported, not waited on. When the
//! directory itself goes (deleted, or another moved into its place), removals wait a moment for
//! the rest of their batch; a directory that is gone keeps the last good config, and the
//! directory the path names again is watched anew and read once it has been quiet.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, ModifyKind, RemoveKind};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{Event, SourceId};
use crate::model::resource::{ResourceKey, parse_yaml};
use crate::model::{Diagnostic, Resource};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("config directory {0}: {1}")]
    Directory(PathBuf, std::io::Error),
    #[error("watching {0}: {1}")]
    Watch(PathBuf, notify::Error),
}

/// Everything read from a directory: valid resources and the diagnostics of the rest.
#[derive(Debug, Default)]
pub struct Loaded {
    pub resources: Vec<Resource>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Whether a name is hidden (skipped when listing the directory).
fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

/// The YAML files under a directory, and what could not be listed.
#[derive(Debug, Default)]
pub struct Listing {
    /// Sorted.
    pub files: Vec<PathBuf>,
    /// An entry that cannot be resolved (a symlink loop, no permission), a subdirectory that
    /// cannot be read, a directory reached again through a symlink (not followed twice).
    pub problems: Vec<Diagnostic>,
}

/// Every YAML file under `dir`, sorted, following symlinks (ConfigMap mounts use them).
/// Hidden entries (`..data`, `.swp` files) are skipped. Only `dir` itself failing is an error;
/// the rest is listed with what went wrong.
pub fn yaml_files(dir: &Path) -> Result<Listing, std::io::Error> {
    list_yaml(dir, false)
}

fn listing_problem(path: &Path, message: String) -> Diagnostic {
    Diagnostic::error("", "", "", "", message).with_origin(path.display().to_string())
}

/// [`yaml_files`]; with `skip_dangling`, an entry that vanished or a symlink to nothing is
/// skipped in silence (a ConfigMap swap leaves removed keys dangling for a moment).
fn list_yaml(dir: &Path, skip_dangling: bool) -> Result<Listing, std::io::Error> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Listing::default();
    let root = std::fs::metadata(dir)?;
    // Directories by identity: one reached again through a symlink is not listed twice.
    let mut seen: BTreeSet<(u64, u64)> = BTreeSet::from([(root.dev(), root.ino())]);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if d == dir => return Err(e),
            Err(e) => {
                out.problems
                    .push(listing_problem(&d, format!("cannot read directory: {e}")));
                continue;
            }
        };
        for entry in entries {
            let entry = entry?;
            if is_hidden(&entry.file_name()) {
                continue;
            }
            let path = entry.path();
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && (skip_dangling || !is_yaml(&path)) =>
                {
                    continue;
                }
                Err(e) => {
                    out.problems
                        .push(listing_problem(&path, format!("cannot read: {e}")));
                    continue;
                }
            };
            if meta.is_dir() {
                if seen.insert((meta.dev(), meta.ino())) {
                    stack.push(path);
                } else {
                    out.problems.push(listing_problem(
                        &path,
                        "a symlink loop: this directory is listed already; not followed".into(),
                    ));
                }
            } else if is_yaml(&path) {
                // A FIFO, socket or device named `*.yaml` is listed too, and refused when read
                // (`load_file`), so that it is reported instead of skipped in silence.
                out.files.push(path);
            }
        }
    }
    out.files.sort();
    out.problems.sort_by_key(|d| d.origin.clone());
    Ok(out)
}

/// The text of a regular file. The file is opened without blocking and checked before it is
/// read: a FIFO named like a config file would otherwise block the reader until a writer came.
pub fn read_regular(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, socket or device is never read)",
        ));
    }
    let mut text = String::with_capacity(meta.len().min(1 << 20) as usize);
    file.read_to_string(&mut text)?;
    Ok(text)
}

/// Reads and validates one file's documents.
pub fn load_file(path: &Path, loaded: &mut Loaded) {
    let origin = path.display().to_string();
    let text = match read_regular(path) {
        Ok(t) => t,
        Err(e) => {
            loaded.diagnostics.push(
                Diagnostic::error("", "", "", "", format!("cannot read file: {e}"))
                    .with_origin(&origin),
            );
            return;
        }
    };
    for doc in parse_yaml(&text, &origin) {
        loaded.diagnostics.extend(doc.diagnostics);
        if let Some(r) = doc.resource {
            loaded.resources.push(r);
        }
    }
}

/// Reads every YAML file under `dir`. A resource defined twice keeps its first definition (the
/// files being read together: in path order); the other is reported, naming both files.
pub fn load_dir(dir: &Path) -> Result<Loaded, FileError> {
    let mut state = DirState::new(dir);
    state.read_all()?;
    let (resources, diagnostics) = state.merged();
    Ok(Loaded {
        resources: resources
            .into_iter()
            .map(|r| Arc::try_unwrap(r).unwrap_or_else(|r| (*r).clone()))
            .collect(),
        diagnostics,
    })
}

/// What a path resolved to when it was read: a different identity means different content.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Identity {
    /// The identity of the file `path` resolves to (following symlinks).
    fn of(path: &Path) -> Option<Identity> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Identity {
            device: m.dev(),
            inode: m.ino(),
            len: m.len(),
            modified: m.modified().ok(),
        })
    }
}

/// What one file parsed to.
#[derive(Debug)]
struct FileEntry {
    resources: Vec<Arc<Resource>>,
    diagnostics: Vec<Diagnostic>,
    identity: Option<Identity>,
    /// The canonical path of the file read (through any symlinks).
    target: Option<PathBuf>,
}

impl FileEntry {
    fn read(path: &Path) -> FileEntry {
        // The identity is taken before reading: a write racing the read changes it again, so
        // the next check reads the file again.
        let identity = Identity::of(path);
        let target = std::fs::canonicalize(path).ok();
        let mut loaded = Loaded::default();
        load_file(path, &mut loaded);
        FileEntry {
            resources: loaded.resources.into_iter().map(Arc::new).collect(),
            diagnostics: loaded.diagnostics,
            identity,
            target,
        }
    }

    /// Whether reading the file went wrong: it could not be read, or a document did not parse
    /// or validate.
    fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// After a read with errors, keeps the resources the file held before (`old`, including
    /// what it kept then) that the new read did not yield, each with a warning: a file being
    /// written, truncated or unreadable for a moment never withdraws what it defined. They go
    /// once the file reads without errors, or is deleted.
    fn keep_last_valid(&mut self, old: &FileEntry) {
        if !self.has_errors() {
            return;
        }
        let present: BTreeSet<ResourceKey> = self.resources.iter().map(|r| r.key()).collect();
        for r in &old.resources {
            if present.contains(&r.key()) {
                continue;
            }
            let origin = r.origin.clone().unwrap_or_default();
            self.diagnostics.push(
                Diagnostic::warning(
                    r.kind.as_str(),
                    &r.meta.namespace,
                    &r.meta.name,
                    "",
                    "kept the last valid version: its file has errors (reported with it); it is withdrawn once the file reads without errors, or is deleted",
                )
                .with_origin(&origin),
            );
            self.resources.push(r.clone());
        }
    }

    fn same_content(&self, other: &FileEntry) -> bool {
        self.diagnostics == other.diagnostics
            && self.resources.len() == other.resources.len()
            && self
                .resources
                .iter()
                .zip(&other.resources)
                .all(|(a, b)| a == b)
    }
}

/// The parsed files of a directory, by path, and when each file's definition of each resource
/// appeared: of a resource defined twice, the oldest definition wins, as istiod resolves
/// duplicates (a new file never takes a live resource over).
#[derive(Debug)]
struct DirState {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileEntry>,
    /// Per file, per resource it defines, the order in which the definition appeared (files
    /// read together count in path order).
    born: BTreeMap<PathBuf, BTreeMap<ResourceKey, u64>>,
    next_birth: u64,
    /// What could not be listed, by the directory whose listing found it.
    listing: BTreeMap<PathBuf, Vec<Diagnostic>>,
}

impl DirState {
    fn new(root: &Path) -> DirState {
        DirState {
            root: root.to_path_buf(),
            files: BTreeMap::new(),
            born: BTreeMap::new(),
            next_birth: 0,
            listing: BTreeMap::new(),
        }
    }

    /// Brings `born` in line with what `path` holds now: definitions gone are forgotten, new
    /// ones numbered after every existing one.
    fn note_births(&mut self, path: &Path) {
        let Some(entry) = self.files.get(path) else {
            self.born.remove(path);
            return;
        };
        let keys = self.born.entry(path.to_path_buf()).or_default();
        let now: BTreeSet<ResourceKey> = entry.resources.iter().map(|r| r.key()).collect();
        keys.retain(|k, _| now.contains(k));
        for key in now {
            keys.entry(key).or_insert_with(|| {
                self.next_birth += 1;
                self.next_birth
            });
        }
    }

    /// Reads every file again (a file with errors keeps what it held, see
    /// [`FileEntry::keep_last_valid`]).
    fn read_all(&mut self) -> Result<(), FileError> {
        let listing =
            yaml_files(&self.root).map_err(|e| FileError::Directory(self.root.clone(), e))?;
        self.listing = BTreeMap::from([(self.root.clone(), listing.problems)]);
        let mut old = std::mem::take(&mut self.files);
        self.files = listing
            .files
            .into_iter()
            .map(|p| {
                let mut entry = FileEntry::read(&p);
                if let Some(before) = old.remove(&p) {
                    entry.keep_last_valid(&before);
                }
                (p, entry)
            })
            .collect();
        let files = &self.files;
        self.born.retain(|p, _| files.contains_key(p));
        let paths: Vec<PathBuf> = self.files.keys().cloned().collect();
        for p in paths {
            self.note_births(&p);
        }
        Ok(())
    }

    /// Reads one file again; whether what it holds changed.
    fn reread(&mut self, path: &Path) -> bool {
        let mut entry = FileEntry::read(path);
        if let Some(old) = self.files.get(path) {
            entry.keep_last_valid(old);
        }
        let changed = !self
            .files
            .get(path)
            .is_some_and(|old| old.same_content(&entry));
        self.files.insert(path.to_path_buf(), entry);
        self.note_births(path);
        changed
    }

    /// Forgets `path` and everything under it; whether anything was known there.
    fn forget(&mut self, path: &Path) -> bool {
        let gone: Vec<PathBuf> = self
            .files
            .range(path.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, _)| p.clone())
            .collect();
        for p in &gone {
            self.files.remove(p);
            self.born.remove(p);
        }
        !gone.is_empty()
    }

    /// Re-reads the files under `dir` whose identity changed, reads new ones and forgets
    /// those gone; whether anything changed. Paths in `fresh` were just read.
    fn check(&mut self, dir: &Path, fresh: &BTreeSet<PathBuf>) -> Result<bool, std::io::Error> {
        let Listing {
            files: listed,
            problems,
        } = list_yaml(dir, true)?;
        self.listing.insert(dir.to_path_buf(), problems);
        let listed_set: BTreeSet<&PathBuf> = listed.iter().collect();
        let gone: Vec<PathBuf> = self
            .files
            .range(dir.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(dir))
            .filter(|(p, _)| !listed_set.contains(p))
            .map(|(p, _)| p.clone())
            .collect();
        let mut changed = !gone.is_empty();
        for p in gone {
            self.files.remove(&p);
            self.born.remove(&p);
        }
        for p in listed {
            if fresh.contains(&p) {
                continue;
            }
            let stale = match self.files.get(&p) {
                Some(e) => e.identity.is_none() || e.identity != Identity::of(&p),
                None => true,
            };
            if stale {
                changed |= self.reread(&p);
            }
        }
        Ok(changed)
    }

    /// Every resource (a key defined more than once: its oldest definition, see `born`; within
    /// a file, the first) and every diagnostic, a duplicate's naming both files.
    fn merged(&self) -> (Vec<Arc<Resource>>, Vec<Diagnostic>) {
        let mut diagnostics: Vec<Diagnostic> = self
            .files
            .values()
            .flat_map(|f| f.diagnostics.iter().cloned())
            .collect();
        // A problem found by the listings of a directory and of its parent is said once.
        let listed: BTreeSet<&Diagnostic> = self.listing.values().flatten().collect();
        diagnostics.extend(listed.into_iter().cloned());
        let birth = |path: &PathBuf, key: &ResourceKey| {
            self.born
                .get(path)
                .and_then(|keys| keys.get(key))
                .copied()
                .unwrap_or(u64::MAX)
        };
        // The winning definition of each key: (birth, path, position in the file).
        let mut winners: BTreeMap<ResourceKey, (u64, &PathBuf, usize, &Arc<Resource>)> =
            BTreeMap::new();
        for (path, f) in &self.files {
            for (i, r) in f.resources.iter().enumerate() {
                let key = r.key();
                let rank = (birth(path, &key), path, i, r);
                match winners.get(&key) {
                    Some(w) if (w.0, w.1, w.2) <= (rank.0, rank.1, rank.2) => {}
                    _ => {
                        winners.insert(key, rank);
                    }
                }
            }
        }
        let mut resources = Vec::new();
        for (path, f) in &self.files {
            for (i, r) in f.resources.iter().enumerate() {
                let winner = &winners[&r.key()];
                if winner.1 == path && winner.2 == i {
                    resources.push(r.clone());
                    continue;
                }
                let origin = r.origin.clone().unwrap_or_default();
                let first = winner.3.origin.clone().unwrap_or_default();
                diagnostics.push(
                    r.diagnostic(
                        "metadata.name",
                        format!(
                            "duplicate resource, ignored: {first} defined it first and is used"
                        ),
                    )
                    .with_origin(&origin),
                );
            }
        }
        (resources, diagnostics)
    }
}

/// What one batch of watcher events asks for.
#[derive(Debug, Default)]
struct Plan {
    /// Read the whole directory again.
    all: bool,
    /// Check every file's identity.
    check_all: bool,
    /// Visible paths (files or directories) to read again.
    paths: BTreeSet<PathBuf>,
    /// Hidden paths that are (or were) files: visible files resolving to them are read again.
    hidden: BTreeSet<PathBuf>,
    /// Something was removed or renamed away: perhaps the whole directory is going.
    removal: bool,
}

impl Plan {
    fn add(&mut self, root: &Path, result: notify::Result<notify::Event>) {
        let event = match result {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, dir = %root.display(), "watch error; re-reading");
                self.all = true;
                return;
            }
        };
        if event.need_rescan() {
            tracing::warn!(dir = %root.display(), "watch events lost; re-reading");
            self.all = true;
            return;
        }
        match event.kind {
            // A file written in place is complete when it is closed.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => return,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)) => self.removal = true,
            _ => {}
        }
        for path in event.paths {
            let Ok(relative) = path.strip_prefix(root) else {
                self.all = true;
                continue;
            };
            if relative.as_os_str().is_empty() {
                // The directory itself (its attributes, or it moved): read it again.
                self.all = true;
                continue;
            }
            if !relative.iter().any(is_hidden) {
                self.paths.insert(path);
                continue;
            }
            let link_or_dir = std::fs::symlink_metadata(&path)
                .is_ok_and(|m| m.is_dir() || m.file_type().is_symlink());
            if link_or_dir || event.kind == EventKind::Remove(RemoveKind::Folder) {
                self.check_all = true;
            } else {
                self.hidden.insert(path);
            }
        }
    }
}

/// The canonical form of a path that may be gone: its parent's canonical form and its name.
fn canonical(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok().or_else(|| {
        let parent = std::fs::canonicalize(path.parent()?).ok()?;
        Some(parent.join(path.file_name()?))
    })
}

impl DirState {
    /// Applies a batch's plan; whether anything the source holds changed, and directories
    /// created meanwhile (to check again shortly: files written into a new directory before
    /// its watch was added raise no event).
    fn apply(&mut self, plan: Plan) -> (bool, Vec<PathBuf>) {
        if plan.all {
            let before = self.merged();
            if let Err(e) = self.read_all() {
                tracing::error!(error = %e, "re-reading the config directory failed; keeping the last good config");
                return (false, Vec::new());
            }
            return (self.merged() != before, Vec::new());
        }
        let mut changed = false;
        let mut fresh = BTreeSet::new();
        let mut new_dirs = Vec::new();
        for path in &plan.paths {
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => {
                    match self.check(path, &fresh) {
                        Ok(c) => changed |= c,
                        Err(e) => {
                            tracing::warn!(error = %e, dir = %path.display(), "reading a config subdirectory")
                        }
                    }
                    new_dirs.push(path.clone());
                }
                Ok(_) if is_yaml(path) => {
                    changed |= self.reread(path);
                    fresh.insert(path.clone());
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    changed |= self.forget(path);
                }
                Err(_) if is_yaml(path) => {
                    changed |= self.reread(path);
                    fresh.insert(path.clone());
                }
                Err(_) => {}
            }
        }
        if !plan.check_all && !plan.hidden.is_empty() {
            let hidden: BTreeSet<PathBuf> =
                plan.hidden.iter().filter_map(|p| canonical(p)).collect();
            let affected: Vec<PathBuf> = self
                .files
                .iter()
                .filter(|(p, e)| {
                    !fresh.contains(*p)
                        && e.target
                            .as_ref()
                            .is_some_and(|t| hidden.iter().any(|h| t.starts_with(h)))
                })
                .map(|(p, _)| p.clone())
                .collect();
            for p in affected {
                if std::fs::metadata(&p).is_ok() {
                    changed |= self.reread(&p);
                } else {
                    changed |= self.forget(&p);
                }
                fresh.insert(p);
            }
        }
        if plan.check_all {
            let root = self.root.clone();
            match self.check(&root, &fresh) {
                Ok(c) => changed |= c,
                Err(e) => {
                    tracing::error!(error = %e, "re-reading the config directory failed; keeping the last good config")
                }
            }
        }
        (changed, new_dirs)
    }

    fn event(&self) -> Event {
        let (resources, diagnostics) = self.merged();
        Event::Resync {
            source: SourceId::File,
            resources,
            diagnostics,
        }
    }
}

fn log_diagnostics<'a>(diagnostics: impl Iterator<Item = &'a Diagnostic>) {
    for d in diagnostics {
        if d.is_error() {
            tracing::warn!(diagnostic = %d, "configuration rejected");
        } else {
            tracing::info!(diagnostic = %d, "configuration warning");
        }
    }
}

/// How long after a directory appears it is checked again (see [`DirState::apply`]).
const NEW_DIRECTORY_RECHECK: Duration = Duration::from_millis(100);
/// How long removals wait for the rest of their batch: files removed one by one may be the
/// whole directory going (`rm -r`, a checkout), which must not be read as an emptied config.
const REMOVAL_GRACE: Duration = Duration::from_millis(300);
/// How often a directory that is gone is looked for, and how long it must be quiet after it is
/// back before it is read.
const MISSING_POLL: Duration = Duration::from_millis(250);
/// How often the thread checks whether its source was dropped.
const STOP_POLL: Duration = Duration::from_secs(1);

/// The identity (device, inode) of the directory `root` names now.
fn dir_identity(root: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(root)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// The directory watch of a source, and which directory it watches.
struct DirWatch {
    watcher: notify::RecommendedWatcher,
    root: PathBuf,
    watched: Option<(u64, u64)>,
}

impl DirWatch {
    fn start(
        root: &Path,
        raw: std_mpsc::Sender<notify::Result<notify::Event>>,
    ) -> Result<DirWatch, FileError> {
        let mut watcher = notify::recommended_watcher(raw)
            .map_err(|e| FileError::Watch(root.to_path_buf(), e))?;
        watcher
            .watch(root, RecursiveMode::Recursive)
            .map_err(|e| FileError::Watch(root.to_path_buf(), e))?;
        Ok(DirWatch {
            watcher,
            root: root.to_path_buf(),
            watched: dir_identity(root),
        })
    }

    /// Whether the path now names another directory than the one watched (or none).
    fn moved(&self) -> bool {
        dir_identity(&self.root) != self.watched
    }

    /// Watches the directory the path names now; `false` if there is none (yet).
    fn rewatch(&mut self) -> bool {
        let _ = self.watcher.unwatch(&self.root);
        let Some(id) = dir_identity(&self.root) else {
            return false;
        };
        match self.watcher.watch(&self.root, RecursiveMode::Recursive) {
            Ok(()) => {
                self.watched = Some(id);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.root.display(), "watching the config directory again failed; retrying");
                false
            }
        }
    }
}

/// Applies watcher events as they come, sending the new state after each batch that changed
/// it. A directory that goes away (deleted, or replaced by another) keeps the last good config
/// while it is gone; the directory the path names again is watched and read once it has been
/// quiet. Runs until the source is dropped or the consumer is gone.
fn follow(
    mut state: DirState,
    mut watch: DirWatch,
    raw: std_mpsc::Receiver<notify::Result<notify::Event>>,
    events: mpsc::Sender<Event>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let (_, mut last_diagnostics) = state.merged();
    let mut rechecks: Vec<(Instant, PathBuf)> = Vec::new();
    // Since when the directory has been gone.
    let mut missing: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) || events.is_closed() {
            return;
        }
        let wait = if missing.is_some() {
            MISSING_POLL
        } else {
            rechecks
                .iter()
                .map(|(t, _)| t.saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(STOP_POLL)
                .min(STOP_POLL)
        };
        let first = match raw.recv_timeout(wait) {
            Ok(e) => Some(e),
            Err(std_mpsc::RecvTimeoutError::Timeout) => None,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut plan = Plan::default();
        for result in first
            .into_iter()
            .chain(std::iter::from_fn(|| raw.try_recv().ok()))
        {
            plan.add(&state.root, result);
        }
        if plan.removal && missing.is_none() {
            // Let the rest of a directory's removal arrive before deciding what it was.
            std::thread::sleep(REMOVAL_GRACE);
            for result in std::iter::from_fn(|| raw.try_recv().ok()) {
                plan.add(&state.root, result);
            }
        }
        if missing.is_none() && (plan.all || plan.removal) && watch.moved() {
            if watch.rewatch() {
                tracing::warn!(dir = %state.root.display(), "the config directory was replaced; reading the new one");
                plan = Plan {
                    all: true,
                    ..Plan::default()
                };
            } else {
                tracing::error!(dir = %state.root.display(), "the config directory is gone; keeping the last good config until it is back");
                missing = Some(Instant::now());
                continue;
            }
        }
        if let Some(since) = missing {
            // Back, and quiet for a moment (a checkout or copy writes many files): read it all.
            if dir_identity(&state.root).is_none() || !watch.rewatch() {
                continue;
            }
            std::thread::sleep(MISSING_POLL);
            while raw.try_recv().is_ok() {}
            tracing::warn!(dir = %state.root.display(), gone_for = ?since.elapsed(), "the config directory is back; reading it");
            missing = None;
            plan = Plan {
                all: true,
                ..Plan::default()
            };
        }
        let now = Instant::now();
        rechecks.retain(|(due, dir)| {
            if *due <= now {
                plan.paths.insert(dir.clone());
                false
            } else {
                true
            }
        });
        let (changed, new_dirs) = state.apply(plan);
        let recheck_at = Instant::now() + NEW_DIRECTORY_RECHECK;
        for dir in new_dirs {
            if !rechecks.iter().any(|(_, d)| *d == dir) {
                rechecks.push((recheck_at, dir));
            }
        }
        if !changed {
            continue;
        }
        let event = state.event();
        if let Event::Resync { diagnostics, .. } = &event {
            let known: BTreeSet<&Diagnostic> = last_diagnostics.iter().collect();
            log_diagnostics(diagnostics.iter().filter(|d| !known.contains(d)));
            last_diagnostics = diagnostics.clone();
        }
        if events.blocking_send(event).is_err() {
            tracing::debug!("config consumer is gone");
            return;
        }
    }
}

/// A running directory watch; dropping it stops watching.
pub struct FileSource {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for FileSource {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl FileSource {
    /// Reads `dir` once (the returned event), then watches it and sends the source's new state
    /// after every change, as soon as it is read.
    pub fn start(
        dir: &Path,
        events: mpsc::Sender<Event>,
    ) -> Result<(FileSource, Event), FileError> {
        let dir = dir.to_path_buf();
        let (raw_tx, raw_rx) = std_mpsc::channel();
        // Watch first, then read: a change made while reading is read again afterwards.
        let watch = DirWatch::start(&dir, raw_tx)?;
        let mut state = DirState::new(&dir);
        state.read_all()?;
        let initial = state.event();
        if let Event::Resync { diagnostics, .. } = &initial {
            log_diagnostics(diagnostics.iter());
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("config-files".into())
            .spawn(move || follow(state, watch, raw_rx, events, flag))
            .map_err(|e| FileError::Directory(dir.clone(), e))?;
        Ok((FileSource { stop }, initial))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("bowline-file-{name}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("create scratch dir");
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn service_entry(name: &str, host: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  hosts: [{host}]\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  resolution: DNS\n"
        )
    }

    /// Writes under a hidden name, then renames into place.
    fn write_atomic(path: &Path, content: &str) {
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        std::fs::write(&tmp, content).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }

    /// The ServiceEntries' (name, first host) pairs of a resync.
    fn hosts(event: &Event) -> Vec<(String, String)> {
        let Event::Resync { resources, .. } = event else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = resources
            .iter()
            .filter_map(|r| match &r.spec {
                crate::model::Spec::ServiceEntry(se) => Some((
                    r.meta.name.clone(),
                    se.hosts.first().cloned().unwrap_or_default(),
                )),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// Waits for a resync that satisfies `done` (a file written in place may be read while
    /// half written: the source sends that state too, then the complete one).
    async fn wait_for(rx: &mut mpsc::Receiver<Event>, done: impl Fn(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut last = None;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) if done(&e) => return e,
                Ok(Some(e)) => last = Some(e),
                Ok(None) => panic!("source stopped; last seen {last:?}"),
                Err(_) => panic!("no such resync; last seen {last:?}"),
            }
        }
    }

    /// Waits for a resync whose ServiceEntries are `want`.
    async fn expect(rx: &mut mpsc::Receiver<Event>, want: &[(&str, &str)]) -> Event {
        let want = pairs(want);
        wait_for(rx, |e| hosts(e) == want).await
    }

    fn mentions(event: &Event, text: &str) -> bool {
        let Event::Resync { diagnostics, .. } = event else {
            return false;
        };
        diagnostics.iter().any(|d| d.to_string().contains(text))
    }

    #[tokio::test]
    async fn changes_are_read_per_file() {
        let dir = Scratch::new("changes");
        let root = dir.0.clone();
        std::fs::write(root.join("a.yaml"), service_entry("a", "a.example.com")).expect("write");
        std::fs::write(root.join("notes.txt"), "not config").expect("write");
        let (tx, mut rx) = mpsc::channel(64);
        let (_source, initial) = FileSource::start(&root, tx).expect("start");
        assert_eq!(hosts(&initial), pairs(&[("a", "a.example.com")]));

        // An atomic write (hidden temporary file, then a rename).
        write_atomic(&root.join("b.yaml"), &service_entry("b", "b.example.com"));
        expect(&mut rx, &[("a", "a.example.com"), ("b", "b.example.com")]).await;

        // An in-place rewrite.
        std::fs::write(root.join("a.yaml"), service_entry("a", "a2.example.com")).expect("write");
        expect(&mut rx, &[("a", "a2.example.com"), ("b", "b.example.com")]).await;

        // A new subdirectory, a file renamed into it.
        std::fs::create_dir(root.join("sub")).expect("mkdir");
        write_atomic(
            &root.join("sub/c.yml"),
            &service_entry("c", "c.example.com"),
        );
        expect(
            &mut rx,
            &[
                ("a", "a2.example.com"),
                ("b", "b.example.com"),
                ("c", "c.example.com"),
            ],
        )
        .await;

        // A broken file: reported, the rest kept.
        std::fs::write(root.join("broken.yaml"), "kind: [").expect("write");
        let event = wait_for(&mut rx, |e| mentions(e, "broken.yaml")).await;
        assert_eq!(
            hosts(&event),
            pairs(&[
                ("a", "a2.example.com"),
                ("b", "b.example.com"),
                ("c", "c.example.com"),
            ])
        );

        // A duplicate in a new file: the live definition wins, the new one is reported.
        std::fs::write(root.join("z.yaml"), service_entry("a", "dup.example.com")).expect("write");
        let event = wait_for(&mut rx, |e| mentions(e, "duplicate")).await;
        assert_eq!(
            hosts(&event),
            pairs(&[
                ("a", "a2.example.com"),
                ("b", "b.example.com"),
                ("c", "c.example.com"),
            ])
        );

        // Deletes: a file, then a whole subdirectory.
        std::fs::remove_file(root.join("z.yaml")).expect("remove");
        std::fs::remove_file(root.join("b.yaml")).expect("remove");
        expect(&mut rx, &[("a", "a2.example.com"), ("c", "c.example.com")]).await;
        std::fs::remove_dir_all(root.join("sub")).expect("remove dir");
        expect(&mut rx, &[("a", "a2.example.com")]).await;
    }

    /// A ConfigMap volume: `..data` points at a timestamped directory and the visible files are
    /// symlinks through it; an update writes a new directory and swaps `..data`.
    #[tokio::test]
    async fn config_map_symlink_swap() {
        use std::os::unix::fs::symlink;
        let dir = Scratch::new("configmap");
        let root = dir.0.clone();
        std::fs::create_dir(root.join("..2024_01")).expect("mkdir");
        std::fs::write(
            root.join("..2024_01/a.yaml"),
            service_entry("a", "a.example.com"),
        )
        .expect("write");
        std::fs::write(
            root.join("..2024_01/b.yaml"),
            service_entry("b", "b.example.com"),
        )
        .expect("write");
        symlink("..2024_01", root.join("..data")).expect("symlink");
        symlink("..data/a.yaml", root.join("a.yaml")).expect("symlink");
        symlink("..data/b.yaml", root.join("b.yaml")).expect("symlink");
        let (tx, mut rx) = mpsc::channel(64);
        let (_source, initial) = FileSource::start(&root, tx).expect("start");
        assert_eq!(
            hosts(&initial),
            pairs(&[("a", "a.example.com"), ("b", "b.example.com")])
        );

        // The kubelet's update: a new directory (a changed, b removed), `..data` swapped by a
        // rename, the removed key's symlink deleted, the old directory deleted.
        std::fs::create_dir(root.join("..2024_02")).expect("mkdir");
        std::fs::write(
            root.join("..2024_02/a.yaml"),
            service_entry("a", "a2.example.com"),
        )
        .expect("write");
        symlink("..2024_02", root.join("..data_tmp")).expect("symlink");
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
        std::fs::remove_file(root.join("b.yaml")).expect("remove");
        std::fs::remove_dir_all(root.join("..2024_01")).expect("remove old");
        expect(&mut rx, &[("a", "a2.example.com")]).await;

        // A file edited behind a visible symlink (not the ConfigMap way, but seen).
        std::fs::write(
            root.join("..2024_02/a.yaml"),
            service_entry("a", "a3.example.com"),
        )
        .expect("write");
        expect(&mut rx, &[("a", "a3.example.com")]).await;
    }

    #[test]
    fn load_dir_reports_duplicates_in_path_order() {
        let dir = Scratch::new("load");
        let root = dir.0.clone();
        std::fs::create_dir(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("b.yaml"), service_entry("x", "first.example.com"))
            .expect("write");
        std::fs::write(
            root.join("sub/a.yaml"),
            service_entry("x", "second.example.com"),
        )
        .expect("write");
        std::fs::write(
            root.join(".hidden.yaml"),
            service_entry("h", "h.example.com"),
        )
        .expect("write");
        let loaded = load_dir(&root).expect("load");
        assert_eq!(loaded.resources.len(), 1);
        let crate::model::Spec::ServiceEntry(se) = &loaded.resources[0].spec else {
            panic!("not a ServiceEntry");
        };
        assert_eq!(se.hosts, vec!["first.example.com".to_string()]);
        assert_eq!(loaded.diagnostics.len(), 1, "{:?}", loaded.diagnostics);
        assert!(loaded.diagnostics[0].to_string().contains("duplicate"));
    }

    /// The hosts of the ServiceEntries a state holds, by name.
    fn held(state: &DirState) -> Vec<(String, String)> {
        let (resources, _) = state.merged();
        let mut out: Vec<(String, String)> = resources
            .iter()
            .filter_map(|r| match &r.spec {
                crate::model::Spec::ServiceEntry(se) => {
                    Some((r.meta.name.clone(), se.hosts.join(",")))
                }
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_file_with_errors_keeps_its_last_valid_resources() {
        let dir = Scratch::new("keep");
        let root = dir.0.clone();
        let file = root.join("a.yaml");
        let both = format!(
            "{}---\n{}",
            service_entry("a", "a.example.com"),
            service_entry("b", "b.example.com")
        );
        std::fs::write(&file, &both).expect("write");
        let mut state = DirState::new(&root);
        state.read_all().expect("read");
        assert_eq!(
            held(&state),
            pairs(&[("a", "a.example.com"), ("b", "b.example.com")])
        );

        // Saved half-way, `a` changed and `b` cut off mid-document: the YAML does not parse,
        // so everything the file held stays as it was, each with a warning beside the error.
        let cut = &both[..both.len() - 30];
        std::fs::write(&file, cut.replace("a.example.com", "a2.example.com")).expect("write");
        state.reread(&file);
        assert_eq!(
            held(&state),
            pairs(&[("a", "a.example.com"), ("b", "b.example.com")])
        );
        let (_, diagnostics) = state.merged();
        assert!(
            diagnostics.iter().any(Diagnostic::is_error),
            "{diagnostics:?}"
        );
        for name in ["a", "b"] {
            assert!(
                diagnostics.iter().any(|d| !d.is_error()
                    && d.name == name
                    && d.message.contains("kept the last valid")),
                "{name}: {diagnostics:?}"
            );
        }

        // `a` changed and `b` invalid: `a` is the new one, `b` the last valid one.
        let invalid_b =
            service_entry("b", "b.example.com").replace("hosts: [b.example.com]", "hosts: []");
        std::fs::write(
            &file,
            format!("{}---\n{invalid_b}", service_entry("a", "a2.example.com")),
        )
        .expect("write");
        assert!(state.reread(&file));
        assert_eq!(
            held(&state),
            pairs(&[("a", "a2.example.com"), ("b", "b.example.com")])
        );

        // Not YAML at all: everything it held stays. A resync keeps it too.
        std::fs::write(&file, "kind: [").expect("write");
        state.reread(&file);
        state.read_all().expect("read");
        assert_eq!(
            held(&state),
            pairs(&[("a", "a2.example.com"), ("b", "b.example.com")])
        );

        // Read without errors: only what it defines now.
        std::fs::write(&file, service_entry("a", "a3.example.com")).expect("write");
        assert!(state.reread(&file));
        assert_eq!(held(&state), pairs(&[("a", "a3.example.com")]));
        assert!(state.merged().1.is_empty());

        // Deleted: gone, errors or not.
        std::fs::write(&file, "kind: [").expect("write");
        state.reread(&file);
        std::fs::remove_file(&file).expect("remove");
        assert!(state.forget(&file));
        assert!(held(&state).is_empty());
    }

    #[test]
    fn a_fifo_named_like_config_is_reported_and_never_read() {
        let dir = Scratch::new("fifo");
        let root = dir.0.clone();
        std::fs::write(root.join("a.yaml"), service_entry("a", "a.example.com")).expect("write");
        let status = std::process::Command::new("mkfifo")
            .arg(root.join("x.yaml"))
            .status()
            .expect("mkfifo");
        assert!(status.success());
        // A read that blocks on the FIFO would never return: bound the wait.
        let (tx, rx) = std::sync::mpsc::channel();
        let r = root.clone();
        std::thread::spawn(move || {
            let _ = tx.send(load_dir(&r).map(|l| {
                let diagnostics: Vec<String> =
                    l.diagnostics.iter().map(|d| d.to_string()).collect();
                (l.resources.len(), diagnostics)
            }));
        });
        let (count, diagnostics) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the directory is read without waiting on the FIFO")
            .expect("load");
        assert_eq!(count, 1);
        assert!(
            diagnostics
                .iter()
                .any(|d| d.contains("x.yaml") && d.contains("not a regular file")),
            "{diagnostics:?}"
        );
    }

    /// The config directory deleted (files first, as `rm -r` does) and made again: the last
    /// good config is kept while it is gone, and the new directory is watched and read.
    #[tokio::test]
    async fn a_directory_deleted_and_recreated_keeps_then_reloads() {
        let scratch = Scratch::new("recreate");
        let root = scratch.0.join("config");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::write(root.join("a.yaml"), service_entry("a", "a.example.com")).expect("write");
        std::fs::write(root.join("b.yaml"), service_entry("b", "b.example.com")).expect("write");
        let (tx, mut rx) = mpsc::channel(64);
        let (_source, initial) = FileSource::start(&root, tx).expect("start");
        assert_eq!(hosts(&initial).len(), 2);

        std::fs::remove_dir_all(&root).expect("remove");
        // Nothing is sent while it is gone (an emptied config would withdraw every route).
        let quiet = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert!(
            quiet.is_err(),
            "sent while the directory is gone: {quiet:?}"
        );

        std::fs::create_dir(&root).expect("mkdir again");
        std::fs::write(root.join("c.yaml"), service_entry("c", "c.example.com")).expect("write");
        expect(&mut rx, &[("c", "c.example.com")]).await;
        // And it is watched: a later edit is read.
        std::fs::write(root.join("d.yaml"), service_entry("d", "d.example.com")).expect("write");
        expect(&mut rx, &[("c", "c.example.com"), ("d", "d.example.com")]).await;

        // Replaced by another directory in one rename: the new one is read and watched.
        let next = scratch.0.join("next");
        std::fs::create_dir(&next).expect("mkdir");
        std::fs::write(next.join("e.yaml"), service_entry("e", "e.example.com")).expect("write");
        std::fs::rename(&root, scratch.0.join("old")).expect("move away");
        std::fs::rename(&next, &root).expect("move in");
        expect(&mut rx, &[("e", "e.example.com")]).await;
        std::fs::write(root.join("f.yaml"), service_entry("f", "f.example.com")).expect("write");
        expect(&mut rx, &[("e", "e.example.com"), ("f", "f.example.com")]).await;
    }

    /// A resource defined in two files: the definition that was there first wins, whatever the
    /// file names, and the duplicate names both files; when the first goes, the other is used.
    #[test]
    fn the_oldest_definition_of_a_resource_wins() {
        let dir = Scratch::new("oldest");
        let root = dir.0.clone();
        let live = root.join("b.yaml");
        std::fs::write(&live, service_entry("x", "live.example.com")).expect("write");
        let mut state = DirState::new(&root);
        state.read_all().expect("read");

        // A new file, first in path order, defines the same ServiceEntry.
        let newcomer = root.join("a.yaml");
        std::fs::write(&newcomer, service_entry("x", "new.example.com")).expect("write");
        state.reread(&newcomer);
        assert_eq!(held(&state), pairs(&[("x", "live.example.com")]));
        let (_, diagnostics) = state.merged();
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        let text = diagnostics[0].to_string();
        assert!(
            text.starts_with(&newcomer.display().to_string()) && text.contains("b.yaml"),
            "the newcomer is blamed, naming the live file: {text}"
        );
        // Still so after the live file is edited, and after a resync.
        std::fs::write(&live, service_entry("x", "live2.example.com")).expect("write");
        state.reread(&live);
        state.read_all().expect("read");
        assert_eq!(held(&state), pairs(&[("x", "live2.example.com")]));

        // The live definition goes: the other one is used.
        std::fs::remove_file(&live).expect("remove");
        state.forget(&live);
        assert_eq!(held(&state), pairs(&[("x", "new.example.com")]));
        assert!(state.merged().1.is_empty());
    }

    /// Symlink loops (a file linked to itself, a directory linked to its parent) are reported
    /// once each and never stop the rest from loading.
    #[test]
    fn symlink_loops_are_reported_not_fatal() {
        use std::os::unix::fs::symlink;
        let dir = Scratch::new("loops");
        let root = dir.0.clone();
        std::fs::write(root.join("a.yaml"), service_entry("a", "a.example.com")).expect("write");
        symlink("self.yaml", root.join("self.yaml")).expect("symlink");
        symlink(&root, root.join("back")).expect("symlink");
        let loaded = load_dir(&root).expect("the directory loads");
        assert_eq!(loaded.resources.len(), 1);
        let text: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text.iter()
                .any(|t| t.contains("self.yaml") && t.contains("cannot read"))
        );
        assert!(
            text.iter()
                .any(|t| t.contains("back") && t.contains("symlink loop"))
        );
    }
}
