//! Reassembling frames from bytes as they arrive (sans-IO): a 4-byte big-endian length, then that many
//! bytes. The length is checked against [`MAX_FRAME_LEN`] before anything is buffered beyond the header.

use crate::frame::MAX_FRAME_LEN;
use crate::Error;

/// Bytes received so far, and the frames they complete.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes. Refuses (and keeps nothing of) a frame announced larger than the limit.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.buf.extend_from_slice(bytes);
        if let Some(len) = self.announced() {
            if len > MAX_FRAME_LEN {
                self.buf.clear();
                return Err(Error::FrameTooLarge {
                    len,
                    max: MAX_FRAME_LEN,
                });
            }
        }
        // A peer may pipeline at most one frame ahead: the protocol is one message at a time.
        if self.buf.len() > 2 * (4 + MAX_FRAME_LEN) {
            let len = self.buf.len();
            self.buf.clear();
            return Err(Error::FrameTooLarge {
                len,
                max: MAX_FRAME_LEN,
            });
        }
        Ok(())
    }

    /// The next complete frame's payload, if one has arrived.
    pub fn next_payload(&mut self) -> Option<Vec<u8>> {
        let len = self.announced()?;
        if self.buf.len() < 4 + len {
            return None;
        }
        let payload = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Some(payload)
    }

    /// Whether bytes of an incomplete frame are buffered (an end of stream now is a truncated frame).
    pub fn is_mid_frame(&self) -> bool {
        !self.buf.is_empty()
    }

    fn announced(&self) -> Option<usize> {
        let header: [u8; 4] = self.buf.get(..4)?.try_into().ok()?;
        usize::try_from(u32::from_be_bytes(header)).ok()
    }
}
