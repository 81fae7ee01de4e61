//! Packet I/O over one leg: buffered reads cut into whole TDS packets
//! ([MS-TDS] 2.2.3), and writes of one packet at a time.
//!
//! Reads go through a fixed buffer of [`READ_CHUNK`] bytes into the codec's
//! [`PacketReader`], so a connection holds at most one packet plus one chunk
//! however large a result is, and a packet header never costs a read of its
//! own. Each packet is written with one `write_all` and a flush: under TLS it
//! then becomes one record, never more than the packet size in force (some
//! servers expect one record per TDS packet, TDS-NOTES §3.1).

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::relay::error::{Leg, RelayError};
use crate::tds::packet::{status, Packet, PacketHeader, PacketReader, HEADER_LEN};

/// Bytes read from a socket at once. 16 KiB holds a typical 4 KiB or 8 KiB
/// packet whole and matches a full TLS record (RFC 8446 5.1).
pub const READ_CHUNK: usize = 16 * 1024;

/// Reads whole packets from one leg.
pub struct PacketRead<R> {
    inner: R,
    packets: PacketReader,
    chunk: Box<[u8]>,
    leg: Leg,
}

impl<R: AsyncRead + Unpin> PacketRead<R> {
    pub fn new(inner: R, leg: Leg) -> Self {
        PacketRead {
            inner,
            packets: PacketReader::new(),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            leg,
        }
    }

    /// The next whole packet; `Ok(None)` when the peer closed cleanly
    /// between packets. Cancel safe: bytes read are kept for the next call.
    pub async fn next(&mut self) -> Result<Option<Packet>, RelayError> {
        loop {
            let packet = self
                .packets
                .next_packet()
                .map_err(RelayError::decode(self.leg))?;
            if packet.is_some() {
                return Ok(packet);
            }
            if !self.fill().await? {
                return self.at_eof();
            }
        }
    }

    /// A reader that first returns packets from `pending`, bytes read from
    /// `inner` earlier by another reader.
    pub fn with_pending(inner: R, pending: &[u8], leg: Leg) -> Self {
        let mut reader = PacketRead::new(inner, leg);
        reader.packets.feed(pending);
        reader
    }

    /// Like [`next`](Self::next), but a close is an error naming `during`.
    pub async fn expect(&mut self, during: &'static str) -> Result<Packet, RelayError> {
        self.next().await?.ok_or(RelayError::Closed {
            leg: self.leg,
            during,
        })
    }

    /// Reads one chunk; false at end of stream.
    async fn fill(&mut self) -> Result<bool, RelayError> {
        let n = self
            .inner
            .read(&mut self.chunk)
            .await
            .map_err(RelayError::io(self.leg, "reading"))?;
        self.packets.feed(&self.chunk[..n]);
        Ok(n > 0)
    }

    fn at_eof(&self) -> Result<Option<Packet>, RelayError> {
        if self.packets.buffered() == 0 {
            return Ok(None);
        }
        Err(RelayError::Closed {
            leg: self.leg,
            during: "in the middle of a packet",
        })
    }

    /// Bytes read but not yet returned as packets.
    pub fn buffered(&self) -> usize {
        self.packets.buffered()
    }

    /// Bytes read but not yet returned, without consuming them.
    pub fn peek_pending(&self) -> &[u8] {
        self.packets.pending()
    }

    /// The stream and any bytes read past the last packet returned, for a
    /// leg whose transport changes (TLS starts or stops).
    pub fn into_parts(mut self) -> (R, Bytes) {
        let rest = self.packets.take_pending();
        (self.inner, rest)
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// Reads the packets of one whole message, at most `max_len` bytes of them.
pub async fn read_message_packets<R: AsyncRead + Unpin>(
    reader: &mut PacketRead<R>,
    max_len: usize,
) -> Result<Vec<Packet>, RelayError> {
    let mut packets = Vec::new();
    let mut total = 0;
    loop {
        let packet = reader.expect("in the middle of a message").await?;
        total += packet.raw.len();
        if total > max_len {
            return Err(RelayError::Decode {
                leg: reader.leg,
                source: crate::tds::DecodeError::TooLarge {
                    structure: "message",
                    length: total,
                    limit: max_len,
                },
            });
        }
        let eom = packet.header.is_eom();
        packets.push(packet);
        if eom {
            return Ok(packets);
        }
    }
}

/// Writes packets to one leg.
pub struct PacketWrite<W> {
    inner: W,
    leg: Leg,
}

impl<W: AsyncWrite + Unpin> PacketWrite<W> {
    pub fn new(inner: W, leg: Leg) -> Self {
        PacketWrite { inner, leg }
    }

    /// Writes one packet (or several concatenated ones written together by
    /// the caller on purpose) and flushes.
    pub async fn send(&mut self, raw: &[u8]) -> Result<(), RelayError> {
        self.inner
            .write_all(raw)
            .await
            .map_err(RelayError::io(self.leg, "writing"))?;
        self.inner
            .flush()
            .await
            .map_err(RelayError::io(self.leg, "flushing"))
    }

    /// Writes each packet of an encoded message separately.
    pub async fn send_packets(&mut self, packets: &[u8]) -> Result<(), RelayError> {
        for raw in PacketIter(packets) {
            self.send(raw).await?;
        }
        Ok(())
    }

    /// Shuts the write side down, ignoring errors: used when closing.
    pub async fn close(&mut self) {
        let _ = self.inner.shutdown().await;
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

/// Iterates over the packets of a buffer of whole packets written by us.
struct PacketIter<'a>(&'a [u8]);

impl<'a> Iterator for PacketIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let len = self.0.get(2..4).map(|b| u16::from_be_bytes([b[0], b[1]]))?;
        let len = usize::from(len).clamp(HEADER_LEN, self.0.len());
        let (packet, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(packet)
    }
}

/// Cuts a packet larger than `max_len` into packets of at most `max_len`
/// bytes with the same type. EOM and IGNORE stay on the last piece, the
/// reset bits on the first. Packets that fit are returned as they came.
pub fn fit_packet(packet: &Packet, max_len: usize) -> Vec<Bytes> {
    if packet.raw.len() <= max_len || max_len <= HEADER_LEN {
        return vec![packet.raw.clone()];
    }
    let payload = packet.payload();
    let chunks: Vec<&[u8]> = payload.chunks(max_len - HEADER_LEN).collect();
    let last = chunks.len() - 1;
    let mut out = Vec::with_capacity(chunks.len());
    for (index, chunk) in chunks.into_iter().enumerate() {
        let header = piece_header(&packet.header, index, index == last, chunk.len());
        let mut raw = BytesMut::with_capacity(HEADER_LEN + chunk.len());
        header.encode(&mut raw);
        raw.extend_from_slice(chunk);
        out.push(raw.freeze());
    }
    out
}

fn piece_header(original: &PacketHeader, index: usize, last: bool, len: usize) -> PacketHeader {
    let mut status_bits = original.status;
    if !last {
        status_bits &= !(status::EOM | status::IGNORE);
    }
    if index > 0 {
        status_bits &= !status::RESET_MASK;
    }
    PacketHeader {
        status: status_bits,
        length: (HEADER_LEN + len) as u16,
        packet_id: original.packet_id.wrapping_add(index as u8),
        ..*original
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::packet::{encode_message, PacketType};

    fn packet(payload_len: usize, status_bits: u8) -> Packet {
        let mut out = BytesMut::new();
        encode_message(
            PacketType::SqlBatch,
            status_bits & status::RESET_MASK,
            &vec![7u8; payload_len],
            32767,
            &mut out,
        )
        .unwrap();
        let raw = out.freeze();
        Packet {
            header: PacketHeader::decode(&raw).unwrap(),
            raw,
        }
    }

    #[tokio::test]
    async fn reads_packets_split_anywhere() {
        let one = packet(100, 0).raw;
        let stream = [one.clone(), one.clone()].concat();
        let (client, mut server) = tokio::io::duplex(8);
        let writer = tokio::spawn(async move {
            server.write_all(&stream).await.unwrap();
        });
        let mut reader = PacketRead::new(client, Leg::Client);
        assert_eq!(reader.next().await.unwrap().unwrap().raw, one);
        assert_eq!(reader.next().await.unwrap().unwrap().raw, one);
        writer.await.unwrap();
        assert!(reader.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn close_mid_packet_is_an_error() {
        let one = packet(100, 0).raw;
        let (client, mut server) = tokio::io::duplex(1024);
        server.write_all(&one[..50]).await.unwrap();
        drop(server);
        let mut reader = PacketRead::new(client, Leg::Server);
        let err = reader.next().await.unwrap_err();
        assert!(matches!(err, RelayError::Closed { leg: Leg::Server, .. }), "{err}");
    }

    #[test]
    fn fit_packet_splits_and_keeps_flags() {
        let big = packet(10_000, status::RESETCONNECTION);
        let pieces = fit_packet(&big, 4096);
        assert_eq!(pieces.len(), 3);
        let headers: Vec<_> = pieces
            .iter()
            .map(|p| PacketHeader::decode(p).unwrap())
            .collect();
        assert_eq!(headers[0].reset_flags(), status::RESETCONNECTION);
        assert!(!headers[0].is_eom() && !headers[1].is_eom() && headers[2].is_eom());
        assert_eq!(headers[1].reset_flags(), 0);
        let joined: Vec<u8> = pieces.iter().flat_map(|p| p[HEADER_LEN..].to_vec()).collect();
        assert_eq!(joined, big.payload());
        assert!(pieces.iter().all(|p| p.len() <= 4096));
    }

    #[test]
    fn fit_packet_keeps_small_packets() {
        let small = packet(100, 0);
        assert_eq!(fit_packet(&small, 4096), vec![small.raw.clone()]);
    }

    #[test]
    fn packet_iter_walks_concatenated_packets() {
        let a = packet(10, 0).raw;
        let b = packet(20, 0).raw;
        let joined = [a.clone(), b.clone()].concat();
        let parts: Vec<&[u8]> = PacketIter(&joined).collect();
        assert_eq!(parts, vec![&a[..], &b[..]]);
    }
}
