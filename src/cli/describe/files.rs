//! The images of a `describe` run: folders walked into files, and each file read and prepared
//! for the model, its failure already an error record.

use std::path::{Path, PathBuf};

use super::record::Record;
use crate::model::preprocess::ImageLimits;
use crate::model::{Frontend, Prepared};

/// Extensions picked up when walking a folder; files named explicitly are always tried.
const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Expands folders (recursively, sorted, so runs are repeatable) into image files.
pub fn collect_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut files);
        } else {
            // Missing files are kept: they get an error record, not a silent skip.
            files.push(path.clone());
        }
    }
    files
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        files.push(dir.to_path_buf());
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, files);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            files.push(path);
        }
    }
}

/// Reads and prepares one file; the error is already a record.
pub fn prepare_file(
    path: &Path,
    frontend: &dyn Frontend,
    limits: &ImageLimits,
    max_bytes: u64,
) -> Result<Prepared, Box<Record>> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Record::failed(path, "file_unreadable", e.to_string()))?;
    if !meta.is_file() {
        return Err(Record::failed(
            path,
            "file_unreadable",
            "not a regular file".into(),
        ));
    }
    if meta.len() > max_bytes {
        return Err(Record::failed(
            path,
            "file_too_large",
            format!(
                "{} bytes, more than --max-image-bytes {max_bytes}",
                meta.len()
            ),
        ));
    }
    let bytes =
        std::fs::read(path).map_err(|e| Record::failed(path, "file_unreadable", e.to_string()))?;
    frontend
        .prepare(&bytes, limits)
        .map_err(|e| Record::failed(path, e.code(), e.to_string()))
}

/// The one form of a path that two spellings of the same file share (`./a.png`, `dir/../a.png`,
/// absolute): canonical where the file exists, else absolute, so that context rows find their
/// images.
pub fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}
