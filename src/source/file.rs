//! The file source: a directory of multi-document YAML files (`*.yaml`, `*.yml`, recursively),
//! re-read whole when anything under it changes.
//!
//! The directory is watched, not the files, so editors that replace files and ConfigMap mounts
//! that swap a symlink are both seen. Changes are debounced; each re-read is a full resync.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
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

/// Every YAML file under `dir`, sorted, following symlinks (ConfigMap mounts use them).
/// Hidden entries (`..data`, `.swp` files) are skipped.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let meta = std::fs::metadata(&path)?;
            if meta.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml") | Some("yml")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads and validates one file's documents.
pub fn load_file(path: &Path, loaded: &mut Loaded) {
    let origin = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
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

/// Reads every YAML file under `dir`. A resource defined twice keeps its first definition (in
/// path order); the second is reported.
pub fn load_dir(dir: &Path) -> Result<Loaded, FileError> {
    let files = yaml_files(dir).map_err(|e| FileError::Directory(dir.to_path_buf(), e))?;
    let mut loaded = Loaded::default();
    for file in files {
        load_file(&file, &mut loaded);
    }
    let mut seen: std::collections::BTreeMap<ResourceKey, String> = Default::default();
    let mut unique = Vec::with_capacity(loaded.resources.len());
    for r in std::mem::take(&mut loaded.resources) {
        let origin = r.origin.clone().unwrap_or_default();
        if let Some(first) = seen.get(&r.key()) {
            loaded.diagnostics.push(
                r.diagnostic(
                    "metadata.name",
                    format!("duplicate resource; already defined in {first}"),
                )
                .with_origin(&origin),
            );
            continue;
        }
        seen.insert(r.key(), origin);
        unique.push(r);
    }
    loaded.resources = unique;
    Ok(loaded)
}

fn resync(dir: &Path) -> Result<Event, FileError> {
    let loaded = load_dir(dir)?;
    for d in &loaded.diagnostics {
        if d.is_error() {
            tracing::warn!(diagnostic = %d, "configuration rejected");
        } else {
            tracing::info!(diagnostic = %d, "configuration warning");
        }
    }
    Ok(Event::Resync {
        source: SourceId::File,
        resources: loaded.resources,
        diagnostics: loaded.diagnostics,
    })
}

/// A running directory watch; dropping it stops watching.
pub struct FileSource {
    _debouncer: notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
}

impl FileSource {
    /// Reads `dir` once (the returned event), then watches it and sends a resync after every
    /// burst of changes (quiet for `debounce`).
    pub fn start(
        dir: &Path,
        debounce: Duration,
        events: mpsc::Sender<Event>,
    ) -> Result<(FileSource, Event), FileError> {
        let dir = dir.to_path_buf();
        let initial = resync(&dir)?;
        let watched = dir.clone();
        let mut debouncer = new_debouncer(debounce, None, move |result: DebounceEventResult| {
            match result {
                Ok(events_seen) if events_seen.iter().all(|e| e.kind.is_access()) => return,
                Ok(_) => {}
                Err(errors) => {
                    for e in errors {
                        tracing::warn!(error = %e, dir = %watched.display(), "watch error; re-reading");
                    }
                }
            }
            match resync(&watched) {
                Ok(event) => {
                    // The debouncer calls back on its own thread, so blocking here is fine and
                    // keeps events in order.
                    if events.blocking_send(event).is_err() {
                        tracing::debug!("config consumer is gone");
                    }
                }
                Err(e) => tracing::error!(error = %e, "re-reading the config directory failed; keeping the last good config"),
            }
        })
        .map_err(|e| FileError::Watch(dir.clone(), e))?;
        debouncer
            .watch(&dir, RecursiveMode::Recursive)
            .map_err(|e| FileError::Watch(dir.clone(), e))?;
        Ok((
            FileSource {
                _debouncer: debouncer,
            },
            initial,
        ))
    }
}
