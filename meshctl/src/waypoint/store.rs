//! The manifest directory as `meshctl waypoint` edits it: the same files meshd reads
//! (`kube_source::manifest_files`), split and parsed by the same code, edited document by
//! document so everything else in a file stays byte for byte.
//!
//! Rules, in order:
//! 1. The directory must exist. A file that cannot be read, or a document that cannot be read
//!    as far as its kind and name, or a Gateway or Namespace that does not parse, stops the
//!    command with the file and line: it might hold the object being edited. Errors in other
//!    kinds are meshd's to report.
//! 2. A document is replaced from its first line with content to its end, so comments above
//!    the object stay. A removed document takes the `---` after it (or, when it is the last,
//!    the one before it) with it; a file left with no content is removed.
//! 3. A file is written whole to a hidden temporary file beside it, then renamed over it:
//!    meshd's watcher never sees half a file (it skips hidden names).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kube_source::{Kind, Object, ObjectKey, Parsed, manifest_files, parse_yaml_document};

/// One object found in the directory.
#[derive(Debug)]
pub struct Found {
    pub object: Object,
    /// Index into [`Store::files`].
    pub file: usize,
    /// Index into that file's documents.
    pub doc: usize,
    /// The document's first line with content.
    pub line: usize,
    /// Whether the document holds other objects too (a `List`): it cannot be edited alone.
    pub shared: bool,
}

/// One document of a file, as byte offsets into the file's text.
#[derive(Debug, Clone, Copy)]
struct Doc {
    start: usize,
    /// Where its first line with content starts.
    content: usize,
    end: usize,
}

#[derive(Debug)]
pub struct File {
    pub path: PathBuf,
    text: String,
    docs: Vec<Doc>,
}

/// Every manifest file under the directory, and the objects they hold.
#[derive(Debug)]
pub struct Store {
    pub dir: PathBuf,
    pub files: Vec<File>,
    pub objects: Vec<Found>,
}

impl Store {
    /// Rule 1.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let meta = fs::metadata(dir).with_context(|| {
            format!(
                "manifest directory {} (set it with --manifests or MESH_MANIFESTS)",
                dir.display()
            )
        })?;
        if !meta.is_dir() {
            bail!("{} is not a directory (--manifests)", dir.display());
        }
        let (paths, unreadable) = manifest_files(dir);
        if let Some((path, e)) = unreadable.first() {
            bail!("cannot list {}: {e}", path.display());
        }
        let mut store = Store {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            objects: Vec::new(),
        };
        for path in paths {
            store.read(path)?;
        }
        Ok(store)
    }

    fn read(&mut self, path: PathBuf) -> anyhow::Result<()> {
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let file = self.files.len();
        let mut docs = Vec::new();
        let body = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let bom = text.len() - body.len();
        for (i, d) in kube_source::split_documents(body).into_iter().enumerate() {
            let skip = d.origin_line.saturating_sub(d.first_line);
            let content = d
                .text
                .split_inclusive('\n')
                .take(skip)
                .map(str::len)
                .sum::<usize>();
            let start = bom + d.start;
            docs.push(Doc {
                start,
                content: start + content,
                end: start + d.text.len(),
            });
            let outcomes = parse_yaml_document(d.text);
            let shared = outcomes.len() > 1;
            for outcome in outcomes {
                match outcome {
                    Ok(Parsed::Object(object)) => self.objects.push(Found {
                        object,
                        file,
                        doc: i,
                        line: d.origin_line,
                        shared,
                    }),
                    Ok(Parsed::Skipped { .. }) => {}
                    Err(e) if e.key.as_ref().is_some_and(|k| !edited_kind(k.kind)) => {}
                    Err(e) => {
                        let line = e
                            .line
                            .map_or(d.origin_line, |l| d.first_line + l.saturating_sub(1));
                        bail!(
                            "{}:{line}: {e} (fix or move the file: it may hold what this \
                             command edits)",
                            path.display()
                        );
                    }
                }
            }
        }
        self.files.push(File { path, text, docs });
        Ok(())
    }

    /// The object with `key`, if the directory holds it (the first, in path order, as meshd).
    pub fn find(&self, key: &ObjectKey) -> Option<&Found> {
        self.objects.iter().find(|f| f.object.key() == *key)
    }

    /// `FILE:LINE` of an object, the file relative to the directory.
    pub fn locate(&self, found: &Found) -> String {
        format!("{}:{}", self.relative(found.file), found.line)
    }

    /// A file's path relative to the directory.
    pub fn relative(&self, file: usize) -> String {
        let path = self.files.get(file).map_or(Path::new(""), |f| &f.path);
        path.strip_prefix(&self.dir)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// The text of an object's document from its first line with content.
    pub fn document(&self, found: &Found) -> &str {
        self.files
            .get(found.file)
            .and_then(|f| {
                let d = f.docs.get(found.doc)?;
                f.text.get(d.content..d.end)
            })
            .unwrap_or_default()
    }

    /// Rule 2: `found`'s document replaced by `yaml`; returns the file's new text.
    pub fn replaced(&self, found: &Found, yaml: &str) -> anyhow::Result<(PathBuf, String)> {
        let (file, doc) = self.editable(found)?;
        let text = &file.text;
        let mut out = String::with_capacity(text.len() + yaml.len());
        out.push_str(text.get(..doc.content).unwrap_or_default());
        out.push_str(yaml);
        if !yaml.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(text.get(doc.end..).unwrap_or_default());
        Ok((file.path.clone(), out))
    }

    /// Rule 2: `found`'s document removed; returns the file's new text (`None`: remove it).
    pub fn removed(&self, found: &Found) -> anyhow::Result<(PathBuf, Option<String>)> {
        let (file, doc) = self.editable(found)?;
        let text = &file.text;
        let (cut_from, cut_to) = match file.docs.get(found.doc + 1) {
            Some(next) => (doc.start, next.start),
            None => match found.doc.checked_sub(1).and_then(|i| file.docs.get(i)) {
                Some(prev) => (prev.end, text.len()),
                None => (doc.start, text.len()),
            },
        };
        let mut out = String::with_capacity(text.len());
        out.push_str(text.get(..cut_from).unwrap_or_default());
        out.push_str(text.get(cut_to..).unwrap_or_default());
        let empty = kube_source::split_documents(&out).is_empty();
        Ok((file.path.clone(), (!empty).then_some(out)))
    }

    fn editable(&self, found: &Found) -> anyhow::Result<(&File, Doc)> {
        let file = self.files.get(found.file).context("no such file")?;
        let doc = *file.docs.get(found.doc).context("no such document")?;
        if found.shared {
            bail!(
                "{} is one item of a List at {}: edit that file by hand",
                found.object.key(),
                self.locate(found)
            );
        }
        Ok((file, doc))
    }
}

/// The kinds these commands read and write (rule 1).
fn edited_kind(kind: Kind) -> bool {
    matches!(kind, Kind::Gateway | Kind::Namespace)
}

/// Rule 3: writes `text` to `path`, or removes it when `text` is `None`.
pub fn write(path: &Path, text: Option<&str>) -> anyhow::Result<()> {
    let Some(text) = text else {
        return fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()));
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.meshctl-tmp", name.to_string_lossy()));
    fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| {
        let _ = fs::remove_file(&tmp);
        format!("cannot replace {}", path.display())
    })
}
