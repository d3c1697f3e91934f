//! Message sizes on the socket, checked before zbus buffers a message.
//!
//! zbus reads a message's 16-byte primary header and then allocates the whole
//! message at once, up to its own cap of 128 MiB (a private constant, with no
//! setting), before reading the rest: a client that announces a large body
//! makes the daemon allocate it, and a few such clients exhaust its memory.
//! [`Framed`] stands in front of zbus's read half of a socket connection: it
//! reads each message's primary header itself, closes the connection when the
//! message it announces is larger than the limit, and only then lets zbus read
//! the message. It also bounds what a client may send during the
//! authentication handshake, which zbus buffers until a line ends (scanning
//! all it has for the end at every read), and makes zbus's reading yield to
//! other tasks now and then, which it never does while data keeps coming.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use zbus::Message;
use zbus::connection::AuthMechanism;
use zbus::connection::socket::{BoxedSplit, ReadHalf, Split, WriteHalf};
use zbus::fdo::ConnectionCredentials;

use super::limits::Gate;

/// The size of a D-Bus primary header: endianness, type, flags, version, body
/// length, serial, and the length of the header fields array.
const PRIMARY_HEADER: usize = 16;

/// What a client may send before the handshake is over: its lines are a few
/// dozen bytes each, and the first message may come with the last of them.
const HANDSHAKE_BYTES: usize = 16 << 10;

/// The two halves of `stream` for zbus, reading through [`Framed`].
pub(crate) fn split(
    stream: tokio::net::UnixStream,
    uid: u32,
    message_bytes: u32,
    gate: Arc<Gate>,
) -> BoxedSplit {
    let (read, write) = stream.into_split();
    let read = Framed {
        inner: read,
        uid,
        message_bytes,
        handshake_bytes: 0,
        gate,
    };
    Split::new(
        Box::new(read) as Box<dyn ReadHalf>,
        Box::new(write) as Box<dyn WriteHalf>,
    )
}

/// The read half of a client's socket, refusing messages larger than
/// `message_bytes` before zbus allocates them.
#[derive(Debug)]
pub(crate) struct Framed {
    inner: tokio::net::unix::OwnedReadHalf,
    /// The client's uid, for the log.
    uid: u32,
    message_bytes: u32,
    /// What the handshake has read so far.
    handshake_bytes: usize,
    gate: Arc<Gate>,
}

impl Framed {
    /// Refuses the message whose primary header is `header` if it is too large.
    fn check(&self, header: &[u8; PRIMARY_HEADER]) -> zbus::Result<()> {
        let problem = match message_size(header) {
            Some(size) if size <= u64::from(self.message_bytes) => return Ok(()),
            Some(size) => format!(
                "it sent a message of {size} bytes, more than the limit of {} (max-message-bytes)",
                self.message_bytes
            ),
            None => format!("it sent no D-Bus message (its first byte is {})", header[0]),
        };
        if let Some(held_back) = self.gate.log.oversized.allow(self.uid) {
            tracing::warn!(
                uid = self.uid,
                held_back,
                "closed the connection of a client of uid {}: {problem}",
                self.uid
            );
        }
        Err(std::io::Error::new(std::io::ErrorKind::InvalidData, problem).into())
    }
}

/// The size of the message whose primary header is `header` (the header, its
/// fields, their padding to 8 bytes and the body, as zbus reads it), or `None`
/// if the endianness byte is neither `l` nor `B`.
fn message_size(header: &[u8; PRIMARY_HEADER]) -> Option<u64> {
    let word: fn([u8; 4]) -> u32 = match header[0] {
        b'l' => u32::from_le_bytes,
        b'B' => u32::from_be_bytes,
        _ => return None,
    };
    let at = |offset: usize| u64::from(word(header[offset..offset + 4].try_into().unwrap()));
    let (body, fields) = (at(4), at(12));
    Some((PRIMARY_HEADER as u64 + fields).next_multiple_of(8) + body)
}

#[async_trait::async_trait]
impl ReadHalf for Framed {
    /// zbus's own reading of a message, once its primary header has passed
    /// [`Framed::check`]. zbus calls this only after the handshake.
    async fn receive_message(
        &mut self,
        seq: u64,
        already_received_bytes: &mut Vec<u8>,
        already_received_fds: &mut Vec<OwnedFd>,
    ) -> zbus::Result<Message> {
        // zbus reads on while the socket has data, never waiting: a client
        // that sends without pause would keep a runtime thread from every
        // other task. Its share of the runtime's budget makes it yield.
        tokio::task::coop::consume_budget().await;
        // The header, whole, in front of what zbus has: it reads it from there.
        // Descriptors that come with it go after those received before, the
        // order zbus gives them to the message.
        while already_received_bytes.len() < PRIMARY_HEADER {
            let mut buf = [0; PRIMARY_HEADER];
            let want = PRIMARY_HEADER - already_received_bytes.len();
            let (read, fds) = self.inner.recvmsg(&mut buf[..want]).await?;
            already_received_fds.extend(fds);
            if read == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the client closed the connection",
                )
                .into());
            }
            already_received_bytes.extend_from_slice(&buf[..read]);
        }
        self.check(already_received_bytes[..PRIMARY_HEADER].try_into().unwrap())?;
        self.inner
            .receive_message(seq, already_received_bytes, already_received_fds)
            .await
    }

    /// Used by zbus for the handshake only (see `receive_message`).
    async fn recvmsg(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
        // As in `receive_message`: the handshake, too, would never yield, nor
        // its deadline fire, while the client keeps sending.
        tokio::task::coop::consume_budget().await;
        let room = HANDSHAKE_BYTES.saturating_sub(self.handshake_bytes);
        if room == 0 {
            if let Some(held_back) = self.gate.log.handshake.allow(self.uid) {
                tracing::warn!(
                    uid = self.uid,
                    held_back,
                    "closed the connection of a client of uid {}: it sent more than {HANDSHAKE_BYTES} bytes without finishing the handshake",
                    self.uid
                );
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the handshake is too long",
            ));
        }
        let len = buf.len().min(room);
        let (read, fds) = self.inner.recvmsg(&mut buf[..len]).await?;
        self.handshake_bytes += read;
        Ok((read, fds))
    }

    fn can_pass_unix_fd(&self) -> bool {
        self.inner.can_pass_unix_fd()
    }

    async fn peer_credentials(&mut self) -> std::io::Result<ConnectionCredentials> {
        self.inner.peer_credentials().await
    }

    fn auth_mechanism(&self) -> AuthMechanism {
        self.inner.auth_mechanism()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(endian: u8, body: u32, fields: u32) -> [u8; PRIMARY_HEADER] {
        let word = |n: u32| match endian {
            b'B' => n.to_be_bytes(),
            _ => n.to_le_bytes(),
        };
        let mut header = [0; PRIMARY_HEADER];
        header[0] = endian;
        header[1] = 1; // a method call
        header[3] = 1; // protocol version 1
        header[4..8].copy_from_slice(&word(body));
        header[8..12].copy_from_slice(&word(1));
        header[12..16].copy_from_slice(&word(fields));
        header
    }

    #[test]
    fn a_messages_size_is_its_header_fields_padding_and_body_in_either_byte_order() {
        assert_eq!(message_size(&header(b'l', 0, 0)), Some(16));
        // 16 + 5 = 21 bytes of header, padded to 24.
        assert_eq!(message_size(&header(b'l', 100, 5)), Some(124));
        assert_eq!(message_size(&header(b'B', 100, 5)), Some(124));
        // No overflow: 16 + 4294967295 is padded to 4294967312.
        assert_eq!(
            message_size(&header(b'l', u32::MAX, u32::MAX)),
            Some(4_294_967_312 + 4_294_967_295)
        );
        assert_eq!(message_size(&header(b'x', 0, 0)), None);
    }
}
