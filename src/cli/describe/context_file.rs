//! `describe --context FILE`: product context per image from a CSV or JSON Lines file, read and
//! matched to the run's images before any model work. Every problem (a malformed line, a row
//! naming an image not described, a second row for one image) names the file and the line.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::files::identity;
use crate::describe::ContextOptions;

/// One row: the image it names, as written, and its context.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextRow {
    /// 1-based, as editors count.
    pub line: usize,
    pub path: String,
    pub context: ContextOptions,
}

/// The file's rows, each matched to the images it names.
#[derive(Debug, Clone)]
pub struct ContextFile {
    pub file: PathBuf,
    pub rows: Vec<ContextRow>,
    /// For each image of the run (by index), the row that gives its context.
    pub of_image: Vec<Option<usize>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ContextFileError {
    #[error("cannot read --context {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "--context {}: the name must end in .csv, .jsonl or .ndjson, which says how to read it",
        file.display()
    )]
    Format { file: PathBuf },
    #[error("--context {} line {line}: {message}", file.display())]
    Line {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

impl ContextFile {
    /// Reads `file` and matches its rows to `images` (the run's files, in order). A row's path
    /// is relative to the file's folder, or absolute.
    pub fn read(file: &Path, images: &[PathBuf]) -> Result<Self, ContextFileError> {
        let text = std::fs::read_to_string(file).map_err(|source| ContextFileError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        let extension = file
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let rows = match extension.as_deref() {
            Some("csv") => csv_rows(&text),
            Some("jsonl" | "ndjson") => jsonl_rows(&text),
            _ => {
                return Err(ContextFileError::Format {
                    file: file.to_path_buf(),
                });
            }
        }
        .map_err(|(line, message)| ContextFileError::Line {
            file: file.to_path_buf(),
            line,
            message,
        })?;
        let of_image = match_images(file, &rows, images)?;
        Ok(Self {
            file: file.to_path_buf(),
            rows,
            of_image,
        })
    }
}

/// Which row names each image; every row must name one, and no image two rows.
fn match_images(
    file: &Path,
    rows: &[ContextRow],
    images: &[PathBuf],
) -> Result<Vec<Option<usize>>, ContextFileError> {
    let mut by_identity: HashMap<PathBuf, Vec<usize>> = HashMap::new();
    for (index, image) in images.iter().enumerate() {
        by_identity.entry(identity(image)).or_default().push(index);
    }
    let folder = file.parent().unwrap_or(Path::new(""));
    let mut of_image = vec![None; images.len()];
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    for (row_index, row) in rows.iter().enumerate() {
        let error = |message: String| ContextFileError::Line {
            file: file.to_path_buf(),
            line: row.line,
            message,
        };
        // `join` keeps an absolute path as it is.
        let named = identity(&folder.join(&row.path));
        if let Some(first) = seen.insert(named.clone(), row.line) {
            return Err(error(format!(
                "`{}` already has a row at line {first}; give each image one row",
                row.path
            )));
        }
        let indexes = by_identity.get(&named).ok_or_else(|| {
            let resolved = if Path::new(&row.path) == named {
                String::new()
            } else {
                format!(" ({})", named.display())
            };
            error(format!(
                "`{}`{resolved} is not among the images to describe; paths are relative to \
                 the context file's folder, or absolute",
                row.path,
            ))
        })?;
        for &index in indexes {
            of_image[index] = Some(row_index);
        }
    }
    Ok(of_image)
}

/// Columns with a meaning of their own; any other is an attribute.
const PATH_COLUMNS: [&str; 2] = ["path", "image"];
const KEYWORD_SEPARATOR: char = ';';

/// A CSV file: a header row naming `path` (or `image`), `title`, `brand`, `category`, `keywords`
/// (`;`-separated) and attribute columns. Empty cells are absent values.
fn csv_rows(text: &str) -> Result<Vec<ContextRow>, (usize, String)> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(text, &e))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut columns: HashMap<String, usize> = HashMap::new();
    for (index, name) in header.iter().enumerate() {
        if name.is_empty() {
            return Err((1, format!("column {} has no name", index + 1)));
        }
        let known = name.to_ascii_lowercase();
        let key = if is_reserved(&known) {
            known
        } else {
            name.clone()
        };
        if columns.insert(key, index).is_some() {
            return Err((1, format!("the column `{name}` is named twice")));
        }
    }
    let path_column = match PATH_COLUMNS.map(|c| columns.get(c).copied()) {
        [Some(index), None] | [None, Some(index)] => index,
        [Some(_), Some(_)] => {
            return Err((1, "name the image in `path` or `image`, not both".into()));
        }
        [None, None] => {
            return Err((
                1,
                "the header row has no `path` (or `image`) column naming each image".into(),
            ));
        }
    };
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(text, &e))?;
        let line = record.position().map_or(0, |p| line_at(text, p.byte()));
        let cell = |index: usize| {
            record
                .get(index)
                .filter(|value| !value.is_empty())
                .map(str::to_string)
        };
        let path = cell(path_column)
            .ok_or_else(|| (line, format!("the `{}` cell is empty", header[path_column])))?;
        let field = |name: &str| columns.get(name).and_then(|&index| cell(index));
        let mut context = ContextOptions {
            title: field("title"),
            brand: field("brand"),
            category: field("category"),
            attributes: Vec::new(),
            keywords: field("keywords")
                .map(|list| {
                    list.split(KEYWORD_SEPARATOR)
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        };
        for (index, name) in header.iter().enumerate() {
            if !is_reserved(&name.to_ascii_lowercase())
                && let Some(value) = cell(index)
            {
                context.attributes.push((name.clone(), value));
            }
        }
        rows.push(ContextRow {
            line,
            path,
            context,
        });
    }
    Ok(rows)
}

fn is_reserved(lower: &str) -> bool {
    PATH_COLUMNS.contains(&lower) || ["title", "brand", "category", "keywords"].contains(&lower)
}

/// The 1-based line of the record at a byte offset. The CSV reader counts lines without the
/// blank ones it skips, and may place a record at the blank lines before it; a record never
/// starts with a line break, so those are stepped over.
fn line_at(text: &str, byte: u64) -> usize {
    let bytes = text.as_bytes();
    let mut end = (byte as usize).min(bytes.len());
    while bytes.get(end).is_some_and(|b| matches!(b, b'\r' | b'\n')) {
        end += 1;
    }
    1 + bytes[..end].iter().filter(|&&b| b == b'\n').count()
}

/// A CSV error at the line it names (the first when it names none).
fn csv_error(text: &str, error: &csv::Error) -> (usize, String) {
    let line = error.position().map_or(1, |p| line_at(text, p.byte()));
    let message = match error.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} cells where the header row has {expected_len}"),
        _ => error.to_string(),
    };
    (line, message)
}

/// One JSON Lines row: the API's `context` object with the image's `path`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    #[serde(alias = "image")]
    path: String,
    title: Option<String>,
    brand: Option<String>,
    category: Option<String>,
    attributes: Option<BTreeMap<String, String>>,
    keywords: Option<Vec<String>>,
}

/// A JSON Lines file: an object per line; blank lines are skipped.
fn jsonl_rows(text: &str) -> Result<Vec<ContextRow>, (usize, String)> {
    let mut rows = Vec::new();
    for (index, text) in text.lines().enumerate() {
        let line = index + 1;
        if text.trim().is_empty() {
            continue;
        }
        let row: JsonRow = serde_json::from_str(text).map_err(|e| {
            (
                line,
                format!(
                    "not an object of path, title, brand, category, attributes and keywords: {e}"
                ),
            )
        })?;
        if row.path.trim().is_empty() {
            return Err((line, "`path` is empty".into()));
        }
        rows.push(ContextRow {
            line,
            path: row.path,
            context: ContextOptions {
                title: row.title,
                brand: row.brand,
                category: row.category,
                attributes: row.attributes.unwrap_or_default().into_iter().collect(),
                keywords: row.keywords.unwrap_or_default(),
            },
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(f: impl FnOnce(&mut ContextOptions)) -> ContextOptions {
        let mut context = ContextOptions::default();
        f(&mut context);
        context
    }

    #[test]
    fn csv_columns_become_context_fields_and_attributes() {
        let rows = csv_rows(
            "Image, Title,brand,category,keywords,Farbe,Material\n\
             a.png,Becher,Töpferei,,handgemacht; Geschenk ;,Weiß,\n\
             \n\
             b.png,,,,,,\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].line, rows[0].path.as_str()), (2, "a.png"));
        assert_eq!(
            rows[0].context,
            context(|c| {
                c.title = Some("Becher".into());
                c.brand = Some("Töpferei".into());
                c.keywords = vec!["handgemacht".into(), "Geschenk".into()];
                c.attributes = vec![("Farbe".into(), "Weiß".into())];
            })
        );
        assert_eq!(rows[1].line, 4);
        assert!(rows[1].context.is_empty());
    }

    #[test]
    fn malformed_csv_names_the_line() {
        let refused = [
            ("title\nx\n", 1, "no `path`"),
            ("path,image\na,b\n", 1, "not both"),
            ("path,title,Title\na,b,c\n", 1, "named twice"),
            ("path,,x\na,b,c\n", 1, "column 2 has no name"),
            (
                "path,title\na.png,x\nb.png\n",
                3,
                "1 cells where the header row has 2",
            ),
            ("path,title\na.png,x\n,y\n", 3, "`path` cell is empty"),
        ];
        for (text, line, message) in refused {
            let (at, error) = csv_rows(text).unwrap_err();
            assert_eq!(at, line, "{text:?}: {error}");
            assert!(error.contains(message), "{text:?}: {error}");
        }
    }

    #[test]
    fn jsonl_rows_are_the_api_s_context_with_a_path() {
        let rows = jsonl_rows(
            "{\"path\": \"a.png\", \"title\": \"Mug\", \"attributes\": {\"b\": \"2\", \"a\": \"1\"}, \"keywords\": [\"gift\"]}\n\n{\"image\": \"/x/b.png\"}\n",
        )
        .unwrap();
        assert_eq!(rows[0].line, 1);
        assert_eq!(
            rows[0].context,
            context(|c| {
                c.title = Some("Mug".into());
                c.attributes = vec![("a".into(), "1".into()), ("b".into(), "2".into())];
                c.keywords = vec!["gift".into()];
            })
        );
        assert_eq!((rows[1].line, rows[1].path.as_str()), (3, "/x/b.png"));
        for (text, line) in [
            (
                "{\"path\": \"a\"}\n{\"path\": \"b\", \"tone\": \"warm\"}",
                2,
            ),
            ("{\"path\": \"a\", \"attributes\": {\"n\": 1}}", 1),
            ("{\"title\": \"x\"}", 1),
            ("[1]", 1),
            ("{\"path\": \" \"}", 1),
        ] {
            assert_eq!(jsonl_rows(text).unwrap_err().0, line, "{text}");
        }
    }
}
