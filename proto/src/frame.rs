//! Frames: a 4-byte big-endian length, then that many bytes of postcard. The length is checked against a
//! limit before the payload is read, so a peer cannot make us allocate more than `max` bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Error;

/// Default upper bound on a frame's payload: evidence (report + three certificates + claims) fits easily.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Encodes `msg` as one frame.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, Error> {
    let payload = postcard::to_stdvec(msg).map_err(|_| Error::Malformed { what: "outgoing" })?;
    if payload.len() > MAX_FRAME_LEN {
        return Err(Error::FrameTooLarge {
            len: payload.len(),
            max: MAX_FRAME_LEN,
        });
    }
    let len = u32::try_from(payload.len()).map_err(|_| Error::FrameTooLarge {
        len: payload.len(),
        max: MAX_FRAME_LEN,
    })?;
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes one payload (without its length prefix) as `T`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(payload: &[u8], what: &'static str) -> Result<T, Error> {
    let (msg, rest) = postcard::take_from_bytes(payload).map_err(|_| Error::Malformed { what })?;
    if !rest.is_empty() {
        return Err(Error::Malformed { what });
    }
    Ok(msg)
}

/// Writes one frame and flushes.
pub async fn write<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, msg: &T) -> Result<(), Error> {
    w.write_all(&encode(msg)?).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame of at most [`MAX_FRAME_LEN`] bytes and decodes it as `T`.
pub async fn read<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    what: &'static str,
) -> Result<T, Error> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.map_err(eof)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_LEN {
        return Err(Error::FrameTooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(eof)?;
    decode(&payload, what)
}

fn eof(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::UnexpectedEof
    } else {
        Error::Io(e)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let msg = (7u32, vec![1u8, 2, 3], String::from("x"));
        let bytes = encode(&msg).unwrap();
        let got: (u32, Vec<u8>, String) = read(&mut bytes.as_slice(), "t").await.unwrap();
        assert_eq!(got, msg);
        // Truncated anywhere: EOF, not a panic or a hang.
        for cut in 0..bytes.len() {
            let r: Result<(u32, Vec<u8>, String), _> = read(&mut &bytes[..cut], "t").await;
            assert!(matches!(r, Err(Error::UnexpectedEof)), "cut {cut}");
        }
        // A huge announced length is refused before allocation.
        let huge = (u32::MAX).to_be_bytes();
        let r: Result<u8, _> = read(&mut huge.as_slice(), "t").await;
        assert!(matches!(r, Err(Error::FrameTooLarge { .. })));
        // Trailing garbage inside a frame is malformed.
        let mut framed = vec![0, 0, 0, 2, 5, 9];
        let r: Result<u8, _> = read(&mut framed.as_slice(), "t").await;
        assert!(matches!(r, Err(Error::Malformed { .. })));
        framed[3] = 1;
        let r: Result<u8, _> = read(&mut &framed[..5], "t").await;
        assert_eq!(r.unwrap(), 5);
    }
}
