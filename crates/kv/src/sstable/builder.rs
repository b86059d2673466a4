//! Writing a table front to back.

use super::block::BlockBuilder;
use super::filter::BloomFilterBuilder;
use super::format::{
    write_block, BlockHandle, Footer, BLOCK_TRAILER_LEN, FOOTER_LEN, FORMAT_VERSION, MAX_BLOCK_SIZE,
};
use super::properties::Properties;
use crate::error::{Error, IoContext, Result};
use crate::fs::WritableFile;
use crate::key::{compare_internal, parse_internal_key, ValueKind};
use crate::options::{CompressionType, TableOptions};
use std::cmp::Ordering;

/// Largest key + value accepted, so that a block holding it stays under
/// [`MAX_BLOCK_SIZE`] once the block's current entries and headers are added.
pub const MAX_ENTRY_SIZE: usize = MAX_BLOCK_SIZE / 2 - 4096;

/// Streams sorted entries into a table file.
///
/// Memory is bounded by one data block, the index block and 8 bytes per distinct user key
/// for the bloom filter.
pub struct TableBuilder {
    file: Box<dyn WritableFile>,
    file_name: String,
    block_size: usize,
    compression: CompressionType,
    zstd_level: i32,
    min_saving_permille: u16,
    offset: u64,
    data_block: BlockBuilder,
    index_block: BlockBuilder,
    filter: Option<BloomFilterBuilder>,
    last_key: Vec<u8>,
    props: Properties,
    /// Set after a failed write: the file is in an unknown state.
    failed: bool,
    /// The format version written: [`FORMAT_VERSION`], or 1 in tests of old tables.
    version: u32,
}

impl std::fmt::Debug for TableBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableBuilder")
            .field("file_name", &self.file_name)
            .field("offset", &self.offset)
            .field("num_entries", &self.props.num_entries)
            .finish_non_exhaustive()
    }
}

impl TableBuilder {
    /// Starts a table in `file` (empty, freshly created), named `file_name` in errors.
    pub fn new(
        file: Box<dyn WritableFile>,
        file_name: impl Into<String>,
        opts: &TableOptions,
    ) -> TableBuilder {
        let offset = file.len();
        TableBuilder {
            file,
            file_name: file_name.into(),
            block_size: opts.block_size.clamp(1, MAX_BLOCK_SIZE / 2),
            compression: opts.compression,
            zstd_level: opts.zstd_level,
            min_saving_permille: opts.min_compression_saving_permille,
            offset,
            data_block: BlockBuilder::new(opts.block_restart_interval),
            index_block: BlockBuilder::new(1),
            filter: (opts.bloom_bits_per_key > 0)
                .then(|| BloomFilterBuilder::new(opts.bloom_bits_per_key)),
            last_key: Vec::new(),
            props: Properties {
                compression: opts.compression,
                ..Properties::default()
            },
            failed: false,
            version: FORMAT_VERSION,
        }
    }

    /// Writes a table of format version 1 (legacy bloom filter), as older builds did:
    /// for tests that old tables still read.
    #[cfg(test)]
    pub fn write_format_v1(&mut self) {
        self.version = 1;
    }

    fn check_ok(&self) -> Result<()> {
        if self.failed {
            return Err(Error::InvalidArgument(format!(
                "table builder for {} failed earlier",
                self.file_name
            )));
        }
        Ok(())
    }

    /// Appends an entry. REQUIRES: `ikey` is a valid internal key larger (by
    /// [`compare_internal`]) than every key added before; otherwise
    /// [`Error::InvalidArgument`].
    pub fn add(&mut self, ikey: &[u8], value: &[u8]) -> Result<()> {
        self.check_ok()?;
        let parsed = parse_internal_key(ikey).ok_or_else(|| {
            Error::InvalidArgument(format!("{}: not an internal key", self.file_name))
        })?;
        if self.props.num_entries > 0 && compare_internal(&self.last_key, ikey) != Ordering::Less {
            return Err(Error::InvalidArgument(format!(
                "{}: keys added out of order",
                self.file_name
            )));
        }
        // A block must stay readable: readers reject blocks over MAX_BLOCK_SIZE.
        if ikey.len().saturating_add(value.len()) > MAX_ENTRY_SIZE {
            return Err(Error::InvalidArgument(format!(
                "{}: entry of {} bytes exceeds the limit of {MAX_ENTRY_SIZE}",
                self.file_name,
                ikey.len().saturating_add(value.len())
            )));
        }
        if let Some(f) = &mut self.filter {
            f.add(parsed.user_key);
        }
        let p = &mut self.props;
        if p.num_entries == 0 {
            p.smallest_key = ikey.to_vec();
            p.smallest_seq = parsed.seq;
            p.largest_seq = parsed.seq;
        }
        p.num_entries += 1;
        if parsed.kind == ValueKind::Deletion {
            p.num_deletions += 1;
        }
        p.raw_key_bytes += ikey.len() as u64;
        p.raw_value_bytes += value.len() as u64;
        p.smallest_seq = p.smallest_seq.min(parsed.seq);
        p.largest_seq = p.largest_seq.max(parsed.seq);
        self.last_key.clear();
        self.last_key.extend_from_slice(ikey);

        self.data_block.add(ikey, value);
        if self.data_block.estimated_size() >= self.block_size {
            self.flush_data_block()?;
        }
        Ok(())
    }

    fn write(&mut self, raw: &[u8], compression: CompressionType) -> Result<BlockHandle> {
        let r = write_block(
            self.file.as_mut(),
            &self.file_name,
            &mut self.offset,
            raw,
            compression,
            self.zstd_level,
            self.min_saving_permille,
        );
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn flush_data_block(&mut self) -> Result<()> {
        if self.data_block.is_empty() {
            return Ok(());
        }
        let raw = self.data_block.finish();
        let handle = self.write(&raw, self.compression)?;
        self.props.num_data_blocks += 1;
        self.props.data_bytes += handle.size + BLOCK_TRAILER_LEN as u64;
        let mut v = Vec::with_capacity(20);
        handle.encode_to(&mut v);
        self.index_block.add(&self.last_key, &v);
        Ok(())
    }

    /// Bytes the file would have if finished now (approximately).
    pub fn estimated_file_size(&self) -> u64 {
        let filter = self.filter.as_ref().map_or(0, |f| f.estimated_size());
        self.offset
            + (self.data_block.estimated_size()
                + self.index_block.estimated_size()
                + filter
                + 256
                + FOOTER_LEN) as u64
    }

    /// Entries added so far.
    pub fn num_entries(&self) -> u64 {
        self.props.num_entries
    }

    /// The name given at creation.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// Writes the filter, index and properties blocks and the footer, syncs the file and
    /// returns the table's properties (with `file_size` set).
    pub fn finish(mut self) -> Result<Properties> {
        self.check_ok()?;
        self.flush_data_block()?;
        let filter_handle = match self.filter.take() {
            Some(mut f) => {
                let raw = if self.version == 1 {
                    f.finish_legacy()
                } else {
                    f.finish()
                };
                let h = self.write(&raw, CompressionType::None)?;
                self.props.filter_bytes = h.size + BLOCK_TRAILER_LEN as u64;
                h
            }
            None => BlockHandle::EMPTY,
        };
        let raw = self.index_block.finish();
        let index_handle = self.write(&raw, self.compression)?;
        self.props.index_bytes = index_handle.size + BLOCK_TRAILER_LEN as u64;
        self.props.largest_key = std::mem::take(&mut self.last_key);
        let raw = self.props.encode();
        let props_handle = self.write(&raw, CompressionType::None)?;
        let footer = Footer {
            filter: filter_handle,
            index: index_handle,
            properties: props_handle,
        };
        let name = &self.file_name;
        self.file
            .append(&footer.encode_version(self.version))
            .context(|| format!("writing footer of {name}"))?;
        self.offset += FOOTER_LEN as u64;
        self.file.sync().context(|| format!("syncing {name}"))?;
        self.props.file_size = self.offset;
        tracing::debug!(
            file = %self.file_name,
            entries = self.props.num_entries,
            bytes = self.offset,
            "table finished"
        );
        Ok(self.props)
    }
}
