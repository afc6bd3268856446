//! A whole manifest file through `kube_source::ManifestDir`: UTF-8 and BOM handling, the split
//! on `---` lines, each document's parse, and the merge (duplicate keys, errors with file
//! lines). The splitter is private, so the file goes through a real (tmpfs) file: slower than
//! `manifest_document`, but the same code meshd runs.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("mesh-fuzz-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz temp dir");
        dir.join("objects.yaml")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = file();
    std::fs::write(path, data).expect("write the fuzz manifest");
    let mut dir = kube_source::ManifestDir::new(path.clone());
    let Some(update) = dir.refresh() else {
        return;
    };
    for e in &update.errors {
        let _ = e.to_string();
    }
    assert_eq!(update.applied.len(), dir.objects().len());
});
