//! The snapshot file: a self-describing, checksummed dump of the state
//! machine at one applied log id. Raft ships it to lagging or empty nodes;
//! operators keep it as a backup.
//!
//! Layout: `SNAPSHOT_MAGIC`, then frames `tag u8 ‖ key_len u32 ‖ key ‖
//! value_len u32 ‖ value` (big-endian lengths), then `TAG_END` and the
//! SHA-256 of every byte before it. The first frame is the meta.

use std::io::{self, BufReader, BufWriter, Read, Write};

use sha2::{Digest, Sha256};

use crate::db::{decode, encode, StoreError};
use crate::types::{LogId, StoredMembership};

pub const SNAPSHOT_MAGIC: &[u8; 20] = b"spendcap-snapshot-1\n";

pub(crate) const TAG_META: u8 = 1;
pub(crate) const TAG_STATE: u8 = 2;
pub(crate) const TAG_HISTORY: u8 = 3;
const TAG_END: u8 = 0xff;

/// Longest key a frame may carry.
const FRAME_KEY_BYTES_MAX: usize = 64 << 10;
/// Longest value a frame may carry.
const FRAME_VALUE_BYTES_MAX: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a spendcap snapshot (bad magic)")]
    Magic,
    #[error("snapshot checksum mismatch: the file is damaged or truncated")]
    Checksum,
    #[error("snapshot frame is malformed: {0}")]
    Frame(String),
    #[error("io: {0}")]
    Io(#[from] io::Error),
}

impl From<SnapshotError> for StoreError {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::Io(io) => StoreError::Io(io),
            other => StoreError::Corrupt(other.to_string()),
        }
    }
}

/// What the meta frame holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotHeader {
    pub snapshot_id: String,
    pub last_log_id: Option<LogId>,
    pub membership: StoredMembership,
}

/// Writes frames while hashing them.
pub(crate) struct SnapshotWriter<W: Write> {
    out: BufWriter<W>,
    hash: Sha256,
}

impl<W: Write> SnapshotWriter<W> {
    pub(crate) fn new(inner: W, header: &SnapshotHeader) -> io::Result<Self> {
        let mut w = SnapshotWriter {
            out: BufWriter::with_capacity(1 << 20, inner),
            hash: Sha256::new(),
        };
        w.raw(SNAPSHOT_MAGIC)?;
        w.frame(TAG_META, b"meta", &encode(header))?;
        Ok(w)
    }

    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hash.update(bytes);
        self.out.write_all(bytes)
    }

    pub(crate) fn frame(&mut self, tag: u8, key: &[u8], value: &[u8]) -> io::Result<()> {
        if key.len() > FRAME_KEY_BYTES_MAX || value.len() > FRAME_VALUE_BYTES_MAX {
            return Err(io::Error::other("record too large for a snapshot frame"));
        }
        self.raw(&[tag])?;
        self.raw(&(key.len() as u32).to_be_bytes())?;
        self.raw(key)?;
        self.raw(&(value.len() as u32).to_be_bytes())?;
        self.raw(value)
    }

    /// Writes the end marker and checksum; returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.raw(&[TAG_END])?;
        let sum: [u8; 32] = self.hash.clone().finalize().into();
        self.out.write_all(&sum)?;
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// One record read back from a snapshot.
pub(crate) struct Frame {
    pub tag: u8,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Reads frames while hashing them. Call [`SnapshotReader::verify`] on a
/// first pass before trusting any frame.
pub(crate) struct SnapshotReader<R: Read> {
    input: BufReader<R>,
    hash: Sha256,
    done: bool,
}

impl<R: Read> SnapshotReader<R> {
    pub(crate) fn new(inner: R) -> Result<(Self, SnapshotHeader), SnapshotError> {
        let mut r = SnapshotReader {
            input: BufReader::with_capacity(1 << 20, inner),
            hash: Sha256::new(),
            done: false,
        };
        let mut magic = [0u8; 20];
        r.exact(&mut magic).map_err(|_| SnapshotError::Magic)?;
        if &magic != SNAPSHOT_MAGIC {
            return Err(SnapshotError::Magic);
        }
        let meta = r
            .next_frame()?
            .ok_or_else(|| SnapshotError::Frame("no meta frame".into()))?;
        if meta.tag != TAG_META {
            return Err(SnapshotError::Frame("first frame is not the meta".into()));
        }
        let header = decode("snapshot meta", &meta.value).map_err(|e| SnapshotError::Frame(e.to_string()))?;
        Ok((r, header))
    }

    fn exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.input.read_exact(buf)?;
        self.hash.update(&*buf);
        Ok(())
    }

    fn len(&mut self, max: usize) -> Result<usize, SnapshotError> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        let n = u32::from_be_bytes(b) as usize;
        if n > max {
            return Err(SnapshotError::Frame(format!("length {n} exceeds {max}")));
        }
        Ok(n)
    }

    /// The next frame, or `None` at a verified end.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, SnapshotError> {
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.exact(&mut tag)?;
        if tag[0] == TAG_END {
            let expected: [u8; 32] = self.hash.clone().finalize().into();
            let mut found = [0u8; 32];
            self.input.read_exact(&mut found)?;
            if expected != found {
                return Err(SnapshotError::Checksum);
            }
            let mut trailing = [0u8; 1];
            if self.input.read(&mut trailing)? != 0 {
                return Err(SnapshotError::Frame("bytes after the checksum".into()));
            }
            self.done = true;
            return Ok(None);
        }
        let key_len = self.len(FRAME_KEY_BYTES_MAX)?;
        let mut key = vec![0u8; key_len];
        self.exact(&mut key)?;
        let value_len = self.len(FRAME_VALUE_BYTES_MAX)?;
        let mut value = vec![0u8; value_len];
        self.exact(&mut value)?;
        Ok(Some(Frame {
            tag: tag[0],
            key,
            value,
        }))
    }

    /// Reads to the end, checking the checksum.
    pub(crate) fn verify(mut self) -> Result<(), SnapshotError> {
        while self.next_frame()?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SnapshotHeader {
        SnapshotHeader {
            snapshot_id: "1-2-3".into(),
            last_log_id: None,
            membership: StoredMembership::default(),
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = SnapshotWriter::new(Vec::new(), &header()).unwrap();
        w.frame(TAG_STATE, b"k1", b"v1").unwrap();
        w.frame(TAG_HISTORY, b"k2", &[7; 1000]).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trips() {
        let bytes = sample();
        let (mut r, h) = SnapshotReader::new(&bytes[..]).unwrap();
        assert_eq!(h, header());
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!(
            (f.tag, f.key.as_slice(), f.value.as_slice()),
            (TAG_STATE, &b"k1"[..], &b"v1"[..])
        );
        assert_eq!(r.next_frame().unwrap().unwrap().value.len(), 1000);
        assert!(r.next_frame().unwrap().is_none());
    }

    #[test]
    fn any_flipped_byte_is_caught() {
        let good = sample();
        for i in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            let result = SnapshotReader::new(&bad[..]).and_then(|(r, _)| r.verify());
            assert!(result.is_err(), "flip at byte {i} went unnoticed");
        }
        let truncated = &good[..good.len() - 1];
        assert!(SnapshotReader::new(truncated).and_then(|(r, _)| r.verify()).is_err());
        let mut extended = good.clone();
        extended.push(0);
        assert!(SnapshotReader::new(&extended[..])
            .and_then(|(r, _)| r.verify())
            .is_err());
    }
}
