//! Names of the files in a database directory.
//!
//! ```text
//! 000007.log          a WAL segment (number 7)
//! 000012.sst          a table
//! MANIFEST-000005     a manifest log
//! CURRENT             names the live manifest
//! LOCK                held by the process that has the database open
//! *.tmp               being written; removed on open
//! ```

use std::path::{Path, PathBuf};

/// The kinds of files the engine keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A write-ahead log segment.
    Wal(u64),
    /// A sorted table.
    Table(u64),
    /// A manifest log.
    Manifest(u64),
    /// The pointer to the live manifest.
    Current,
    /// The process lock.
    Lock,
    /// A temporary file.
    Temp,
}

/// `dir/000007.log`
pub fn wal_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.log"))
}

/// `dir/000012.sst`
pub fn table_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.sst"))
}

/// `dir/MANIFEST-000005`
pub fn manifest_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("MANIFEST-{number:06}"))
}

/// `dir/CURRENT`
pub fn current_path(dir: &Path) -> PathBuf {
    dir.join("CURRENT")
}

/// `dir/LOCK`
pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join("LOCK")
}

/// `dir/<number>.tmp`
pub fn temp_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.tmp"))
}

/// Classifies a file name; `None` for files the engine does not own.
pub fn parse_file_name(name: &str) -> Option<FileType> {
    match name {
        "CURRENT" => return Some(FileType::Current),
        "LOCK" => return Some(FileType::Lock),
        _ => {}
    }
    if let Some(n) = name.strip_prefix("MANIFEST-") {
        return parse_number(n).map(FileType::Manifest);
    }
    let (stem, ext) = name.rsplit_once('.')?;
    let number = parse_number(stem)?;
    match ext {
        "log" => Some(FileType::Wal(number)),
        "sst" => Some(FileType::Table(number)),
        "tmp" => Some(FileType::Temp),
        _ => None,
    }
}

fn parse_number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        let d = Path::new("/db");
        let name = |p: PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            parse_file_name(&name(wal_path(d, 7))),
            Some(FileType::Wal(7))
        );
        assert_eq!(
            parse_file_name(&name(table_path(d, 1234567))),
            Some(FileType::Table(1234567))
        );
        assert_eq!(
            parse_file_name(&name(manifest_path(d, 5))),
            Some(FileType::Manifest(5))
        );
        assert_eq!(parse_file_name("CURRENT"), Some(FileType::Current));
        assert_eq!(parse_file_name("000003.tmp"), Some(FileType::Temp));
        assert_eq!(parse_file_name("notes.txt"), None);
        assert_eq!(parse_file_name("-1.log"), None);
    }
}
