//! The inotify side of one watch: one inotify instance, a watch per directory of the tree
//! (new subdirectories are added as they appear, moved-away ones dropped), and the
//! translation of raw inotify events into reported [`Change`]s.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use sandpit_protocol::container::WatchEventType;
use sandpit_protocol::time;

use super::coalesce::Change;
use super::filter::Filter;

/// What a watch observes (the normalised request; equal options share one watch).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Options {
    pub path: PathBuf,
    pub recursive: bool,
    /// Sorted, without duplicates.
    pub events: Vec<WatchEventType>,
    pub filter: Filter,
}

/// Why a watch ends on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The watched path went away (deleted, moved, unmounted).
    Stopped(String),
    /// The kernel's event queue overflowed: events were lost.
    Overflow,
}

/// The directories being watched and how to report their changes.
#[derive(Debug)]
pub struct Tree {
    options: Options,
    root_wd: WatchDescriptor,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    mask: AddWatchFlags,
    /// Rename cookies of the agent's own write temp files moving into place.
    own_renames: HashSet<u32>,
}

/// Most rename cookies remembered (a rename whose second half never came is forgotten).
const MAX_OWN_RENAMES: usize = 1024;

/// The agent's file API writes `<dir>/.sandpit-write-<hex>.tmp` and renames it over the
/// target: the temp file is not reported, its rename onto the target is reported as `modify`
/// (what a plain write of the file would have shown).
fn is_own_temp(name: &OsStr) -> bool {
    let name = name.as_bytes();
    name.starts_with(b".sandpit-write-") && name.ends_with(b".tmp")
}

impl Tree {
    /// Creates the inotify instance and watches the root (and, when recursive, every directory
    /// below it that the filter does not exclude). The watches are live when this returns.
    pub fn open(options: Options) -> Result<(Inotify, Tree), Errno> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let mut mask = AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF;
        for event in &options.events {
            mask |= flag(*event);
        }
        if options.events.contains(&WatchEventType::Modify) {
            // File API writes arrive as renames (see `is_own_temp`).
            mask |= AddWatchFlags::IN_MOVED_FROM | AddWatchFlags::IN_MOVED_TO;
        }
        if options.recursive {
            // Needed to follow the tree even when these events are not reported.
            mask |= AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_MOVED_FROM;
        }
        let root_wd = inotify.add_watch(&options.path, mask)?;
        let mut tree = Tree {
            root_wd,
            dirs: HashMap::from([(root_wd, options.path.clone())]),
            mask,
            options,
            own_renames: HashSet::new(),
        };
        if tree.options.recursive && tree.options.path.is_dir() {
            let root = tree.options.path.clone();
            tree.add_tree(&inotify, &root, None)?;
        }
        Ok((inotify, tree))
    }

    /// Number of kernel watches held.
    pub fn watch_count(&self) -> usize {
        self.dirs.len()
    }

    /// Handles one raw event: appends what is reported to `out`, keeps the tree in step, and
    /// says whether the watch has ended.
    pub fn handle(
        &mut self,
        inotify: &Inotify,
        event: InotifyEvent,
        out: &mut Vec<Change>,
    ) -> Option<End> {
        let mask = event.mask;
        if mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            return Some(End::Overflow);
        }
        let is_root = event.wd == self.root_wd;
        if mask.contains(AddWatchFlags::IN_IGNORED) {
            self.dirs.remove(&event.wd);
            return is_root.then(|| End::Stopped("Watched path was deleted".into()));
        }
        if is_root && mask.contains(AddWatchFlags::IN_UNMOUNT) {
            return Some(End::Stopped("Watched file system was unmounted".into()));
        }
        if is_root && mask.contains(AddWatchFlags::IN_DELETE_SELF) {
            return Some(End::Stopped("Watched path was deleted".into()));
        }
        if is_root && mask.contains(AddWatchFlags::IN_MOVE_SELF) {
            return Some(End::Stopped("Watched path was moved".into()));
        }
        let dir = self.dirs.get(&event.wd)?;
        let mut kind = kind(mask)?;
        if event.name.as_deref().is_some_and(is_own_temp) {
            if kind == WatchEventType::MoveFrom {
                if self.own_renames.len() >= MAX_OWN_RENAMES {
                    self.own_renames.clear();
                }
                self.own_renames.insert(event.cookie);
            }
            return None;
        }
        if kind == WatchEventType::MoveTo && self.own_renames.remove(&event.cookie) {
            kind = WatchEventType::Modify;
        }
        let path = match &event.name {
            Some(name) => dir.join(name),
            None => dir.clone(),
        };
        let is_directory = mask.contains(AddWatchFlags::IN_ISDIR);
        let rel = self.rel(&path);
        if self.options.events.contains(&kind) && self.options.filter.reports(&rel) {
            out.push(change(kind, &path, is_directory));
        }
        if is_directory && self.options.recursive {
            match kind {
                WatchEventType::Create | WatchEventType::MoveTo
                    if self.options.filter.descends(&rel) =>
                {
                    // Entries created before the new watch existed would go unseen: report
                    // them (only for a fresh directory; a moved-in tree is not news inside).
                    let catch_up = (kind == WatchEventType::Create).then_some(&mut *out);
                    if let Err(err) = self.add_tree(inotify, &path, catch_up) {
                        tracing::warn!(%err, "could not watch a new directory");
                    }
                }
                WatchEventType::MoveFrom => self.forget(inotify, &path),
                _ => {}
            }
        }
        None
    }

    /// Watches `dir` and the directories below it; with `catch_up`, reports what already
    /// exists below `dir` as created.
    fn add_tree(
        &mut self,
        inotify: &Inotify,
        dir: &Path,
        mut catch_up: Option<&mut Vec<Change>>,
    ) -> Result<(), Errno> {
        let root = self.options.path.clone();
        let filter = self.options.filter.clone();
        let walk = walkdir::WalkDir::new(dir)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| {
                e.depth() == 0
                    || !e.file_type().is_dir()
                    || filter.descends(&relative(&root, e.path()))
            });
        let report_creates = self.options.events.contains(&WatchEventType::Create);
        for entry in walk.flatten() {
            let is_dir = entry.file_type().is_dir();
            if let Some(out) = catch_up.as_deref_mut()
                && entry.depth() > 0
                && report_creates
                && filter.reports(&relative(&root, entry.path()))
            {
                out.push(change(WatchEventType::Create, entry.path(), is_dir));
            }
            if !is_dir {
                continue;
            }
            let flags = self.mask | AddWatchFlags::IN_ONLYDIR | AddWatchFlags::IN_DONT_FOLLOW;
            match inotify.add_watch(entry.path(), flags) {
                Ok(wd) => {
                    self.dirs.insert(wd, entry.path().to_path_buf());
                }
                // Out of watches: the caller decides (fails a new watch, logs later).
                Err(Errno::ENOSPC) => return Err(Errno::ENOSPC),
                // Gone or unreadable meanwhile: nothing to watch there.
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Drops the watches of `dir` and below (moved out of the tree, or about to be re-added
    /// under its new name).
    fn forget(&mut self, inotify: &Inotify, dir: &Path) {
        let gone: Vec<WatchDescriptor> = self
            .dirs
            .iter()
            .filter(|(wd, p)| **wd != self.root_wd && p.starts_with(dir))
            .map(|(wd, _)| *wd)
            .collect();
        for wd in gone {
            self.dirs.remove(&wd);
            let _ = inotify.rm_watch(wd);
        }
    }

    fn rel(&self, path: &Path) -> String {
        relative(&self.options.path, path)
    }
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn change(kind: WatchEventType, path: &Path, is_directory: bool) -> Change {
    Change {
        event_type: kind,
        path: path.to_string_lossy().into_owned(),
        is_directory,
        timestamp: time::now(),
    }
}

fn flag(kind: WatchEventType) -> AddWatchFlags {
    match kind {
        WatchEventType::Create => AddWatchFlags::IN_CREATE,
        WatchEventType::Modify => AddWatchFlags::IN_MODIFY,
        WatchEventType::Delete => AddWatchFlags::IN_DELETE,
        WatchEventType::MoveFrom => AddWatchFlags::IN_MOVED_FROM,
        WatchEventType::MoveTo => AddWatchFlags::IN_MOVED_TO,
        WatchEventType::Attrib => AddWatchFlags::IN_ATTRIB,
    }
}

fn kind(mask: AddWatchFlags) -> Option<WatchEventType> {
    [
        WatchEventType::Create,
        WatchEventType::Modify,
        WatchEventType::Delete,
        WatchEventType::MoveFrom,
        WatchEventType::MoveTo,
        WatchEventType::Attrib,
    ]
    .into_iter()
    .find(|k| mask.contains(flag(*k)))
}
